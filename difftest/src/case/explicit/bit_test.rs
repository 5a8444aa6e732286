//! bt, bts, btr and btc with a register bit offset: the offset moves the access by whole
//! operands (Intel SDM Vol. 2A, BT, "bit base"), so it is chosen to land inside the map.

use super::addressing::Operand;
use crate::case::state::set_low;
use crate::case::{Ctx, full, limit};
use crate::rng::Rng;
use iced_x86::Register;

/// Picks the operand the access lands on, inside the map (the writable part if the form
/// `writes`), then a bit offset in `bit_reg` that selects it; re-places the base register.
/// Returns the map offset the access lands on, or `None` if `bit_reg` is not a GPR.
pub(super) fn register_offset(
    ctx: &Ctx,
    regs: &mut [u64; 16],
    op: &Operand,
    size: u64,
    writes: bool,
    bit_reg: Register,
    rng: &mut Rng,
) -> Option<u64> {
    let off = op.off;
    let lim = limit(writes);
    let lo = -((off / size) as i64);
    let hi = ((lim - size - off) / size) as i64;
    let k = lo + rng.below((hi - lo + 1) as u64) as i64;
    let bits = 8 * size as i64;
    let bit = k * bits + rng.below(bits as u64) as i64;
    let r = full(bit_reg)?;
    set_low(&mut regs[r], size, bit as u64);
    let at = off.wrapping_add((k * size as i64) as u64);
    op.place(ctx, regs);
    Some(at)
}
