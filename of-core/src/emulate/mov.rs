//! Data movement: mov (all forms, moffs included), movzx, movsx, movsxd, movbe, xlat.
//!
//! No flags change (Intel SDM Vol. 2B, MOV: "Flags Affected: None").

use super::EmulationError;
use super::operands::{self, MapWrites};
use crate::machine::Machine;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// Sign-extends the low `size` bytes of `v`.
///
/// # Examples
///
/// ```
/// use of_core::emulate::mov::sign_extend;
///
/// assert_eq!(sign_extend(0x80, 1), 0xFFFF_FFFF_FFFF_FF80);
/// assert_eq!(sign_extend(0x7FFF, 2), 0x7FFF);
/// assert_eq!(sign_extend(0xFFFF_FFFE, 4), (-2i64) as u64);
/// assert_eq!(sign_extend(0x1234_5678, 8), 0x1234_5678);
/// ```
pub fn sign_extend(v: u64, size: u64) -> u64 {
    match size {
        1 => v as u8 as i8 as i64 as u64,
        2 => v as u16 as i16 as i64 as u64,
        4 => v as u32 as i32 as i64 as u64,
        _ => v,
    }
}

/// Reverses the low `size` bytes of `v` (MOVBE).
///
/// # Examples
///
/// ```
/// use of_core::emulate::mov::swap_bytes;
///
/// assert_eq!(swap_bytes(0x1122, 2), 0x2211);
/// assert_eq!(swap_bytes(0x1122_3344, 4), 0x4433_2211);
/// assert_eq!(swap_bytes(0x0102_0304_0506_0708, 8), 0x0807_0605_0403_0201);
/// ```
pub fn swap_bytes(v: u64, size: u64) -> u64 {
    v.swap_bytes() >> (64 - 8 * size)
}

/// Executes a data-movement instruction.
///
/// # Errors
/// [`EmulationError::Exception`] when ordinary memory is not accessible.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::{mov, operands::MapWrites};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[1] = 0x80; // rcx: cl = 0x80
/// // movsx rax, byte ptr [8] (48 0f be 04 25 08 00 00 00): cl sign-extended into rax.
/// let (instr, _) = decode(&[0x48, 0x0F, 0xBE, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00], 0).unwrap();
/// let mut w = MapWrites::default();
/// mov::execute(&mut m, &instr, &mut w).unwrap();
/// assert_eq!(m.gpr[0], 0xFFFF_FFFF_FFFF_FF80);
/// // movbe dword ptr [0x10], eax (0f 38 f1 04 25 10 00 00 00): a byte-swapped store into edx.
/// m.gpr[0] = 0x1122_3344;
/// let (instr, _) = decode(&[0x0F, 0x38, 0xF1, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00], 0).unwrap();
/// mov::execute(&mut m, &instr, &mut w).unwrap();
/// assert_eq!(m.gpr[2], 0); // held back ...
/// w.apply(&mut m);
/// assert_eq!(m.gpr[2], 0x4433_2211); // ... until applied
/// assert_eq!(m.rflags, 0x202); // no flags change
/// ```
pub fn execute<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let bad = EmulationError::Unsupported("operand form is not emulated");
    let mem_op = operands::memory_operand(instr).ok_or(bad)?;
    let ea = operands::effective_address(m, instr, mem_op).ok_or(bad)?;
    let size = operands::memory_size(instr);
    if instr.mnemonic() == Mnemonic::Xlatb {
        // AL <- [rbx + zero-extended AL] (Intel SDM Vol. 2B, XLAT).
        let v = operands::load_value(m, ea, 1)?;
        return operands::write_register(m, Register::AL, v);
    }
    if mem_op == 0 {
        // Store: the source is a register or an immediate.
        let v = operands::read_plain(m, instr, 1).ok_or(bad)?;
        let v = if instr.mnemonic() == Mnemonic::Movbe {
            swap_bytes(v, size)
        } else {
            v
        };
        operands::store_value(m, w, ea, size, v)
    } else {
        if instr.op0_kind() != OpKind::Register {
            return Err(bad);
        }
        let dst = instr.op0_register();
        let v = operands::load_value(m, ea, size)?;
        let v = match instr.mnemonic() {
            Mnemonic::Movsx | Mnemonic::Movsxd => sign_extend(v, size),
            Mnemonic::Movbe => swap_bytes(v, size),
            _ => v,
        };
        operands::write_register(m, dst, v)
    }
}
