//! div and idiv: mostly states whose quotient fits (the caller decides how often); the rest
//! raise #DE (SIGFPE on both sides).

use crate::case::state::set_low;

/// Makes the dividend's upper half (ah, or dx/edx/rdx) the sign or zero extension of its lower
/// half, so that the quotient of any non-zero divisor fits.
pub(super) fn quotient_fits(regs: &mut [u64; 16], size: u64, signed: bool) {
    if size == 1 {
        let al = regs[0] & 0xFF;
        let ah = if signed && al & 0x80 != 0 { 0xFF } else { 0 };
        regs[0] = (regs[0] & !0xFF00) | (ah << 8);
    } else {
        let bits = 8 * size;
        let a = regs[0]
            & if bits == 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            };
        let neg = signed && (a >> (bits - 1)) & 1 == 1;
        set_low(&mut regs[2], size, if neg { u64::MAX } else { 0 });
    }
}
