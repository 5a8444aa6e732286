//! jmp and call through the memory operand: the target is the value the operand holds. A
//! landing address in the arena is put there; for `66 FF /2` and `66 FF /4` on a CPU that honours
//! 0x66 (AMD), a 16-bit target, often in page 0.

use super::addressing::Operand;
use crate::case::Ctx;
use crate::case::branch16::target16;
use crate::case::state::{force_image, image_value};
use crate::rng::Rng;
use iced_x86::Mnemonic;

/// The landing address of a jmp or call (`None` for other forms and for the 16-bit targets,
/// chosen by [`target16_in_operand`] once the state is known).
pub(super) fn landing(ctx: &Ctx, mnemonic: Mnemonic, amd16: bool, rng: &mut Rng) -> Option<u64> {
    if matches!(mnemonic, Mnemonic::Jmp | Mnemonic::Call) && !amd16 {
        Some(rng.pick(&ctx.targets))
    } else {
        None
    }
}

/// Puts landing address `t` in the operand's `size` bytes; `false` if they cannot all be set
/// (bytes of the rip, rflags or fs/gs slots) or setting them moves the operand or rsp.
pub(super) fn place_landing(
    ctx: &Ctx,
    regs: &mut [u64; 16],
    rflags: u64,
    len: usize,
    op: &Operand,
    size: u64,
    t: u64,
) -> bool {
    if !force_image(
        ctx,
        regs,
        rflags,
        len,
        op.off,
        &t.to_le_bytes()[..size as usize],
    ) {
        return false;
    }
    op.place(ctx, regs);
    image_value(ctx, regs, rflags, len, op.off, size) == t && regs[4] == ctx.stack
}

/// A 16-bit target: put in the operand's bytes when they are GPR bytes the addressing does not
/// need, else what the image holds there. Returns the target.
pub(super) fn target16_in_operand(
    ctx: &Ctx,
    regs: &mut [u64; 16],
    rflags: u64,
    len: usize,
    op: &Operand,
    rng: &mut Rng,
) -> u64 {
    let off = op.off;
    let want = target16(rng);
    let mut r = *regs;
    if force_image(ctx, &mut r, rflags, len, off, &want.to_le_bytes()[..2]) {
        op.place(ctx, &mut r);
        if op.address(ctx, &r) == off && r[4] == ctx.stack {
            *regs = r;
        }
    }
    image_value(ctx, regs, rflags, len, off, 2)
}
