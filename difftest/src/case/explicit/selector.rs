//! lar, lsl, verr and verw: the operand is a segment selector; a selector of this process (user
//! code or data) half the time (the caller decides), so that the check succeeds.

use super::addressing::Operand;
use crate::case::Ctx;
use crate::case::state::force_image;
use crate::rng::Rng;

/// Puts one of this process's user selectors (0x2B, 0x33, 0x23) in the operand where its bytes
/// can be set.
pub(super) fn user_selector(
    ctx: &Ctx,
    regs: &mut [u64; 16],
    rflags: u64,
    len: usize,
    op: &Operand,
    rng: &mut Rng,
) {
    let sel: u64 = rng.pick(&[0x2B, 0x33, 0x23]);
    force_image(ctx, regs, rflags, len, op.off, &sel.to_le_bytes()[..2]);
    op.place(ctx, regs);
}
