//! cmpxchg, cmpxchg8b and cmpxchg16b: states that compare equal (the caller decides how
//! often; the rest are random, and compare unequal). A few rounds settle a destination or
//! addressing register that aliases rax or rdx.

use super::addressing::Operand;
use crate::case::Ctx;
use crate::case::state::{image_value, set_low};

/// cmpxchg: the accumulator equals the operand.
pub(super) fn equal(
    ctx: &Ctx,
    regs: &mut [u64; 16],
    rflags: u64,
    len: usize,
    op: &Operand,
    size: u64,
) {
    for _ in 0..3 {
        let v = image_value(ctx, regs, rflags, len, op.off, size);
        set_low(&mut regs[0], size, v);
        op.place(ctx, regs);
    }
}

/// cmpxchg8b/16b (`size` 8 or 16): edx:eax (rdx:rax) equals the operand.
pub(super) fn equal_pair(
    ctx: &Ctx,
    regs: &mut [u64; 16],
    rflags: u64,
    len: usize,
    op: &Operand,
    size: u64,
) {
    let half = size / 2;
    for _ in 0..3 {
        let lo = image_value(ctx, regs, rflags, len, op.off, half);
        let hi = image_value(ctx, regs, rflags, len, op.off + half, half);
        set_low(&mut regs[0], half, lo);
        set_low(&mut regs[2], half, hi);
        op.place(ctx, regs);
    }
}
