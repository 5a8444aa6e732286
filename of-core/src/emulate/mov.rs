//! Data movement: mov (all forms, moffs included), movzx, movsx, movsxd, movbe, xlat.
//!
//! No flags change (Intel SDM Vol. 2B, MOV: "Flags Affected: None").

use super::EmulationError;
use super::operands::{self, MapWrites};
use crate::machine::Machine;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// Sign-extends the low `size` bytes of `v`.
pub fn sign_extend(v: u64, size: u64) -> u64 {
    match size {
        1 => v as u8 as i8 as i64 as u64,
        2 => v as u16 as i16 as i64 as u64,
        4 => v as u32 as i32 as i64 as u64,
        _ => v,
    }
}

/// Reverses the low `size` bytes of `v` (MOVBE).
pub fn swap_bytes(v: u64, size: u64) -> u64 {
    v.swap_bytes() >> (64 - 8 * size)
}

/// Executes a data-movement instruction.
///
/// # Errors
/// [`EmulationError::Exception`] when ordinary memory is not accessible.
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
