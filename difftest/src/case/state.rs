//! Register states and memory for the cases: random states, and setting the image bytes an
//! instruction reads (through the GPR bytes that back them).

use super::Ctx;
use crate::arena::MEMORY_LEN;
use crate::model::IMAGE_LEN;
use crate::rng::Rng;

/// A random state: random GPRs (rsp the private stack) and random input flags.
pub(super) fn random_state(rng: &mut Rng, ctx: &Ctx) -> ([u64; 16], u64) {
    let mut regs: [u64; 16] = std::array::from_fn(|_| rng.value());
    regs[4] = ctx.stack;
    (regs, rng.flags())
}

/// Random contents of the compared ordinary memory.
pub(super) fn random_memory(rng: &mut Rng) -> [u8; MEMORY_LEN] {
    let mut m = [0u8; MEMORY_LEN];
    for c in m.chunks_mut(8) {
        let v = rng.value().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    m
}

/// Makes the image bytes at `off` equal `bytes` by changing GPR bytes. Bytes in the rip, rflags,
/// fs and gs slots cannot change: returns `false` unless they already match.
pub fn force_image(
    ctx: &Ctx,
    regs: &mut [u64; 16],
    rflags: u64,
    len: usize,
    off: u64,
    bytes: &[u8],
) -> bool {
    let image = ctx.image(regs, rflags, len);
    for (i, &b) in bytes.iter().enumerate() {
        let a = off as usize + i;
        if a >= IMAGE_LEN {
            return false;
        }
        if a < 0x80 {
            let n = a / 8;
            let s = 8 * (a % 8);
            regs[n] = (regs[n] & !(0xFF << s)) | (u64::from(b) << s);
        } else if image[a] != b {
            return false;
        }
    }
    true
}

/// The `size`-byte little-endian value at `off` of the image of a state.
pub fn image_value(
    ctx: &Ctx,
    regs: &[u64; 16],
    rflags: u64,
    len: usize,
    off: u64,
    size: u64,
) -> u64 {
    let image = ctx.image(regs, rflags, len);
    let mut b = [0u8; 8];
    let n = size.min(8) as usize;
    b[..n].copy_from_slice(&image[off as usize..off as usize + n]);
    u64::from_le_bytes(b)
}

/// Sets the low `size` bytes of `reg` to those of `v`.
pub(super) fn set_low(reg: &mut u64, size: u64, v: u64) {
    let mask = if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    };
    *reg = (*reg & !mask) | (v & mask);
}
