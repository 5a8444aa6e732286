//! Integer arithmetic, logic, shifts, bit operations, exchanges, conditional moves and sets:
//! every instruction whose register form means the same as its memory form runs through
//! [`super::hostexec`], so results and flags are the host CPU's.
//!
//! The memory operand is read from the map (at the bit-string displacement for bt* with a
//! register offset), the register form runs with it in a scratch register, and the scratch
//! register's new value goes back to the map when the instruction writes its memory operand.
//! Divisions are checked first: #DE is raised as an exception value instead of executing.

use super::operands::{self, MapWrites};
use super::{EmulationError, Exception, fastop, hostexec};
use crate::machine::Machine;
use crate::machine::read_reg;
use iced_x86::{ConstantOffsets, Instruction, Mnemonic};

/// Whether `div`/`idiv` of rdx:rax (per operand size) by `divisor` raises #DE (Intel SDM Vol. 2A,
/// DIV/IDIV: divisor 0, or a quotient that does not fit the destination).
pub fn divide_error(signed: bool, size: u64, rax: u64, rdx: u64, divisor: u64) -> bool {
    let bits = 8 * size as u32;
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let divisor = divisor & mask;
    if divisor == 0 {
        return true;
    }
    // Dividend: ax for byte division, otherwise rdx:rax truncated to 2*size.
    let dividend: u128 = if size == 1 {
        u128::from(rax & 0xFFFF)
    } else {
        (u128::from(rdx & mask) << bits) | u128::from(rax & mask)
    };
    if signed {
        let dbits = 2 * bits;
        let dividend = ((dividend << (128 - dbits)) as i128) >> (128 - dbits);
        let divisor = ((u128::from(divisor) << (128 - bits)) as i128) >> (128 - bits);
        match dividend.checked_div(divisor) {
            None => true,
            Some(q) => {
                let min = -(1i128 << (bits - 1));
                let max = (1i128 << (bits - 1)) - 1;
                q < min || q > max
            }
        }
    } else {
        dividend / u128::from(divisor) > u128::from(mask)
    }
}

/// Executes an instruction through its register form; `displacement` moves the access (bt*).
///
/// # Errors
/// [`Exception::DivideError`]; [`EmulationError::Unsupported`] if the encoding cannot be
/// rewritten.
pub fn execute<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    raw: &[u8],
    offsets: &ConstantOffsets,
    writes: bool,
    displacement: u64,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let bad = EmulationError::Unsupported("operand form is not emulated");
    let op = operands::memory_operand(instr).ok_or(bad)?;
    let size = operands::memory_size(instr);
    if size > 8 {
        return Err(bad);
    }
    let ea = operands::effective_address(m, instr, op)
        .ok_or(bad)?
        .wrapping_add(displacement);
    let value = operands::load_value(m, ea, size)?;
    if matches!(instr.mnemonic(), Mnemonic::Div | Mnemonic::Idiv)
        && divide_error(
            instr.mnemonic() == Mnemonic::Idiv,
            size,
            m.gpr(0),
            m.gpr(2),
            value,
        )
    {
        return Err(EmulationError::Exception(Exception::DivideError));
    }
    if let Some(fop) = fastop::Op::of(instr.mnemonic()) {
        // Fast path: the host's own instruction on registers, no code rewrite.
        if op == 0 {
            let b = if fop.binary() {
                operands::read_plain(m, instr, 1).ok_or(bad)?
            } else {
                0
            };
            let (r, f) = fastop::compute(fop, size, value, b, m.rflags());
            m.set_rflags(f);
            if writes && fop.writes() {
                operands::store_value(m, w, ea, size, r)?;
            }
        } else {
            let dst = instr.op0_register();
            let a = read_reg(m, dst).ok_or(bad)?;
            let (r, f) = fastop::compute(fop, size, a, value, m.rflags());
            m.set_rflags(f);
            if fop.writes() {
                operands::write_register(m, dst, r)?;
            }
        }
        return Ok(());
    }
    let form = hostexec::register_form(instr, raw, offsets)?;
    let result = hostexec::execute(m, &form, value)?;
    if writes {
        operands::store_value(m, w, ea, size, result)?;
    }
    Ok(())
}

/// The status flags of `cmp a, b` at operand size `size` (1, 2, 4 or 8 bytes), computed by the
/// host's own `cmp` ("fastop"), merged into `rflags`.
pub fn cmp_flags(rflags: u64, a: u64, b: u64, size: u64) -> u64 {
    let out: u64;
    // SAFETY: register-only arithmetic; pushfq/pop use the stack, which inline asm may use
    // (no `nostack`), and leave rsp as it was.
    unsafe {
        match size {
            1 => {
                core::arch::asm!("cmp {a:l}, {b:l}", "pushfq", "pop {f}", a = in(reg) a, b = in(reg) b, f = out(reg) out)
            }
            2 => {
                core::arch::asm!("cmp {a:x}, {b:x}", "pushfq", "pop {f}", a = in(reg) a, b = in(reg) b, f = out(reg) out)
            }
            4 => {
                core::arch::asm!("cmp {a:e}, {b:e}", "pushfq", "pop {f}", a = in(reg) a, b = in(reg) b, f = out(reg) out)
            }
            _ => {
                core::arch::asm!("cmp {a}, {b}", "pushfq", "pop {f}", a = in(reg) a, b = in(reg) b, f = out(reg) out)
            }
        }
    }
    (rflags & !crate::map::STATUS_FLAGS) | (out & crate::map::STATUS_FLAGS)
}
