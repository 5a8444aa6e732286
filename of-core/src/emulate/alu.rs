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
///
/// # Examples
///
/// ```
/// use of_core::emulate::alu::divide_error;
///
/// // Division by zero, at any size.
/// assert!(divide_error(false, 8, 1, 0, 0));
/// // Unsigned 16-bit: dx:ax = 0x0001_0000 / 1 = 0x1_0000 does not fit 16 bits.
/// assert!(divide_error(false, 2, 0x0000, 0x0001, 1));
/// assert!(!divide_error(false, 2, 0x0000, 0x0001, 2)); // 0x8000 fits
/// // Byte division divides ax: 0x00FF / 1 = 0xFF fits 8 bits; 0x0100 / 1 does not.
/// assert!(!divide_error(false, 1, 0xFF, 0, 1));
/// assert!(divide_error(false, 1, 0x100, 0, 1));
/// // Signed 32-bit: -2^31 / -1 = 2^31 does not fit i32 (the classic case).
/// assert!(divide_error(true, 4, 0x8000_0000, 0xFFFF_FFFF, 0xFFFF_FFFF));
/// assert!(!divide_error(true, 4, 0x8000_0000, 0xFFFF_FFFF, 2)); // -2^30 fits
/// ```
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
///
/// # Examples
///
/// `xadd qword ptr [0], rax` exchanges and adds with rax in both roles: the register gets the old
/// destination, the destination gets the sum, and the map write is applied last (SPEC §2):
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::{alu, operands::MapWrites};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[0] = 5; // rax
/// // xadd qword ptr [0], rax (48 0f c1 04 25 00 00 00 00)
/// let bytes = [0x48, 0x0F, 0xC1, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let mut w = MapWrites::default();
/// alu::execute(&mut m, &instr, &bytes, &offsets, true, 0, &mut w).unwrap();
/// assert_eq!(m.gpr[0], 5); // rax = old destination (old rax) ...
/// w.apply(&mut m);
/// assert_eq!(m.gpr[0], 10); // ... then the destination, rax's bytes, = 5 + 5
/// ```
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
///
/// # Examples
///
/// ```
/// use of_core::emulate::alu::cmp_flags;
///
/// let (cf, zf, sf, of) = (1u64 << 0, 1 << 6, 1 << 7, 1 << 11);
/// // Equal operands: ZF.
/// assert_eq!(cmp_flags(0x202, 7, 7, 8) & (cf | zf | sf | of), zf);
/// // 8-bit 0x80 - 0x01 = 0x7F: -128 - 1 overflows (OF), no borrow (CF clear), positive result.
/// assert_eq!(cmp_flags(0x202, 0x80, 0x01, 1) & (cf | zf | sf | of), of);
/// // 32-bit 0 - 1: borrow and negative.
/// assert_eq!(cmp_flags(0x202, 0, 1, 4) & (cf | zf | sf | of), cf | sf);
/// // Bits other than the status flags are kept.
/// assert_eq!(cmp_flags(0x202 | 1 << 10, 7, 7, 8) & !0x8D5, 0x202 | 1 << 10);
/// ```
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
