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
///
/// # Examples
///
/// `cmpxchg16b xmmword ptr [0x40]` compares rdx:rax with the 16 map bytes at 0x40, which are r8
/// (low half) and r9 (high half):
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::{operands::MapWrites, wide};
/// use of_core::RegisterFile;
///
/// // cmpxchg16b xmmword ptr [0x40] (48 0f c7 0c 25 40 00 00 00)
/// let bytes = [0x48, 0x0F, 0xC7, 0x0C, 0x25, 0x40, 0x00, 0x00, 0x00];
/// let (instr, _) = decode(&bytes, 0).unwrap();
/// let zf = 1 << 6;
///
/// let mut m = RegisterFile::default();
/// m.gpr[0] = 1; // rax == r8
/// m.gpr[2] = 2; // rdx == r9
/// m.gpr[8] = 1;
/// m.gpr[9] = 2;
/// m.gpr[3] = 3; // rbx
/// m.gpr[1] = 4; // rcx
/// let mut w = MapWrites::default();
/// wide::execute(&mut m, &instr, &mut w).unwrap();
/// w.apply(&mut m);
/// assert_eq!((m.gpr[8], m.gpr[9]), (3, 4)); // equal: the operand gets rcx:rbx
/// assert_eq!(m.rflags & zf, zf);
///
/// m.gpr[0] = 0; // now rax != r8 (3)
/// wide::execute(&mut m, &instr, &mut w).unwrap();
/// w.apply(&mut m);
/// assert_eq!((m.gpr[0], m.gpr[2]), (3, 4)); // not equal: rdx:rax gets the operand
/// assert_eq!(m.rflags & zf, 0);
/// ```
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
