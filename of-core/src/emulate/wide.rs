//! cmpxchg8b and cmpxchg16b (Intel SDM Vol. 2A, CMPXCHG8B/CMPXCHG16B).
//!
//! Only ZF changes. cmpxchg16b raises #GP(0) when its operand is not 16-byte aligned. On
//! success the destination gets ecx:ebx (rcx:rbx); otherwise edx:eax (rdx:rax) gets the
//! destination, and the destination is written back with its own value.

use super::operands::{self, MapWrites};
use super::{EmulationError, Exception};
use crate::machine::Machine;
use iced_x86::Mnemonic;

const ZF: u64 = 1 << 6;

/// Executes cmpxchg8b or cmpxchg16b.
///
/// # Errors
/// [`Exception::GeneralProtection`] for a misaligned cmpxchg16b; page faults on ordinary
/// memory.
pub fn execute<M: Machine + ?Sized>(
    m: &mut M,
    instr: &iced_x86::Instruction,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let bad = EmulationError::Unsupported("operand form is not emulated");
    let op = operands::memory_operand(instr).ok_or(bad)?;
    let ea = operands::effective_address(m, instr, op).ok_or(bad)?;
    let wide = instr.mnemonic() == Mnemonic::Cmpxchg16b;
    if wide && ea % 16 != 0 {
        return Err(EmulationError::Exception(Exception::GeneralProtection));
    }
    let half = if wide { 8 } else { 4 };
    let mask = if wide { u64::MAX } else { 0xFFFF_FFFF };
    let mut buf = [0u8; 16];
    operands::load(m, ea, &mut buf[..2 * half as usize])?;
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo[..half as usize].copy_from_slice(&buf[..half as usize]);
    hi[..half as usize].copy_from_slice(&buf[half as usize..2 * half as usize]);
    let (lo, hi) = (u64::from_le_bytes(lo), u64::from_le_bytes(hi));
    let (rax, rdx) = (m.gpr(0) & mask, m.gpr(2) & mask);
    let equal = lo == rax && hi == rdx;
    let (new_lo, new_hi) = if equal {
        (m.gpr(3) & mask, m.gpr(1) & mask)
    } else {
        (lo, hi)
    };
    let mut out = [0u8; 16];
    out[..half as usize].copy_from_slice(&new_lo.to_le_bytes()[..half as usize]);
    out[half as usize..2 * half as usize].copy_from_slice(&new_hi.to_le_bytes()[..half as usize]);
    operands::store(m, w, ea, &out[..2 * half as usize])?;
    if !equal {
        // 32-bit register writes zero-extend (Intel SDM Vol. 1 §3.4.1.1).
        m.set_gpr(0, lo);
        m.set_gpr(2, hi);
    }
    let f = m.rflags();
    m.set_rflags(if equal { f | ZF } else { f & !ZF });
    Ok(())
}
