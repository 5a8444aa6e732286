//! SSE/AVX data movement between vector registers and map bytes, with memory semantics
//! (Intel SDM Vol. 2, each instruction's "Operation"; register forms of several of these are
//! different instructions, so they are never run as register forms).
//!
//! Rules kept exactly:
//! - legacy-SSE loads into an xmm register leave bits 128..256 of the ymm register unchanged;
//!   VEX.128 loads zero them (Intel SDM Vol. 1 §14.1.3);
//! - `movd`/`movq`/`movss`/`movsd` loads zero the rest of the xmm register;
//! - `movlps`/`movhps`/`movlpd`/`movhpd` loads replace one half (legacy) or merge with the
//!   second source (VEX);
//! - aligned moves (`movdqa`, `movaps`, `movapd`, `movnt*`) raise #GP on a misaligned address
//!   (16 bytes for xmm, 32 for ymm).

use super::operands::{self, MapWrites};
use super::{EmulationError, Exception, hostexec};
use crate::machine::Machine;
use iced_x86::ConstantOffsets;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// How a vector data-movement instruction moves bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// Whole register ⇄ memory (16 or 32 bytes), `aligned` if it requires alignment.
    Full {
        /// Whether a misaligned address raises #GP.
        aligned: bool,
    },
    /// Scalar load zero-extended into the xmm register, or store of the low bytes.
    Scalar,
    /// Low 64 bits replaced (load) / stored.
    Low64,
    /// High 64 bits replaced (load) / stored.
    High64,
    /// Memory element replicated across the destination.
    Broadcast,
    /// movddup: the 64-bit element into both halves of the xmm register.
    Duplicate64,
    /// pinsr*/vpinsr*: one element inserted at the immediate's index.
    Insert,
    /// pextr*/vpextr*: one element stored from the immediate's index.
    Extract,
    /// vinsertf128/vinserti128: a 128-bit half inserted.
    Insert128,
    /// vextractf128/vextracti128: a 128-bit half stored.
    Extract128,
}

/// The data-movement class of `instr`, if it is a vector move this module emulates.
pub fn classify(instr: &Instruction) -> Option<Move> {
    use Mnemonic as M;
    Some(match instr.mnemonic() {
        M::Movdqu
        | M::Movups
        | M::Movupd
        | M::Lddqu
        | M::Vmovdqu
        | M::Vmovups
        | M::Vmovupd
        | M::Vlddqu => Move::Full { aligned: false },
        M::Movdqa
        | M::Movaps
        | M::Movapd
        | M::Movntdq
        | M::Movntps
        | M::Movntpd
        | M::Movntdqa
        | M::Vmovdqa
        | M::Vmovaps
        | M::Vmovapd
        | M::Vmovntdq
        | M::Vmovntps
        | M::Vmovntpd
        | M::Vmovntdqa => Move::Full { aligned: true },
        M::Movd | M::Movq | M::Movss | M::Vmovd | M::Vmovq | M::Vmovss | M::Vmovsd => Move::Scalar,
        M::Movsd if !instr.is_string_instruction() => Move::Scalar,
        M::Movlps | M::Movlpd | M::Vmovlps | M::Vmovlpd => Move::Low64,
        M::Movhps | M::Movhpd | M::Vmovhps | M::Vmovhpd => Move::High64,
        M::Vbroadcastss
        | M::Vbroadcastsd
        | M::Vbroadcastf128
        | M::Vbroadcasti128
        | M::Vpbroadcastb
        | M::Vpbroadcastw
        | M::Vpbroadcastd
        | M::Vpbroadcastq => Move::Broadcast,
        M::Movddup => Move::Duplicate64,
        M::Vmovddup if !is_ymm(instr.op0_register()) => Move::Duplicate64,
        M::Pinsrb
        | M::Pinsrw
        | M::Pinsrd
        | M::Pinsrq
        | M::Vpinsrb
        | M::Vpinsrw
        | M::Vpinsrd
        | M::Vpinsrq => Move::Insert,
        M::Pextrb
        | M::Pextrw
        | M::Pextrd
        | M::Pextrq
        | M::Vpextrb
        | M::Vpextrw
        | M::Vpextrd
        | M::Vpextrq => Move::Extract,
        M::Vinsertf128 | M::Vinserti128 => Move::Insert128,
        M::Vextractf128 | M::Vextracti128 => Move::Extract128,
        _ => return None,
    })
}

fn is_ymm(r: Register) -> bool {
    r.is_ymm()
}

/// Vector register number (0..16) of an xmm or ymm register.
fn vec_number(r: Register) -> Option<usize> {
    if r.is_xmm() {
        Some((r as u32 - Register::XMM0 as u32) as usize)
    } else if r.is_ymm() {
        Some((r as u32 - Register::YMM0 as u32) as usize)
    } else {
        None
    }
}

/// Whether the instruction is VEX-encoded (VEX.128 loads zero the upper ymm half).
fn is_vex(instr: &Instruction) -> bool {
    instr.code().encoding() == iced_x86::EncodingKind::VEX
}

/// The 256 bits of ymm register `n` as two halves (low, high).
fn ymm<M: Machine + ?Sized>(m: &M, n: usize) -> [u128; 2] {
    [m.xmm(n), m.ymm_high(n)]
}

/// Writes an xmm destination: bits 0..128 = `low`; bits 128..256 are zeroed for VEX encodings
/// and kept for legacy SSE.
fn set_xmm_dest<M: Machine + ?Sized>(m: &mut M, n: usize, low: u128, vex: bool) {
    m.set_xmm(n, low);
    if vex && m.ymm_high(n) != 0 {
        m.set_ymm_high(n, 0);
    }
}

fn replicate(element: u128, size: usize, total: usize) -> [u128; 2] {
    let mut bytes = [0u8; 32];
    let e = element.to_le_bytes();
    for i in 0..total {
        bytes[i] = e[i % size];
    }
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    lo.copy_from_slice(&bytes[..16]);
    hi.copy_from_slice(&bytes[16..]);
    [u128::from_le_bytes(lo), u128::from_le_bytes(hi)]
}

fn load_u128<M: Machine + ?Sized>(m: &mut M, ea: u64, size: usize) -> Result<u128, EmulationError> {
    let mut b = [0u8; 16];
    operands::load(m, ea, &mut b[..size.min(16)])?;
    Ok(u128::from_le_bytes(b))
}

/// Executes a vector data-movement instruction of class `mv`.
///
/// # Errors
/// [`Exception::GeneralProtection`] for a misaligned aligned move; page faults on ordinary
/// memory; [`EmulationError::Unsupported`] for operand shapes not handled.
pub fn execute<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    mv: Move,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let bad = EmulationError::Unsupported("vector operand form is not emulated");
    let mem = operands::memory_operand(instr).ok_or(bad)?;
    let ea = operands::effective_address(m, instr, mem).ok_or(bad)?;
    let size = operands::memory_size(instr) as usize;
    let vex = is_vex(instr);
    let store = mem == 0;
    // The vector register operand (destination of a load, source of a store).
    let vreg = (0..instr.op_count())
        .filter(|&i| instr.op_kind(i) == OpKind::Register)
        .map(|i| instr.op_register(i))
        .find(|r| r.is_xmm() || r.is_ymm())
        .ok_or(bad)?;
    let n = vec_number(vreg).ok_or(bad)?;
    let wide = is_ymm(vreg);
    // For 3-operand VEX loads the second operand supplies the other bits.
    let src2 = if instr.op_count() >= 3 && instr.op_kind(1) == OpKind::Register {
        vec_number(instr.op1_register())
    } else {
        None
    };
    match mv {
        Move::Full { aligned } => {
            let len = if wide { 32 } else { 16 };
            if aligned && ea % len as u64 != 0 {
                return Err(EmulationError::Exception(Exception::GeneralProtection));
            }
            if store {
                let v = ymm(m, n);
                let mut b = [0u8; 32];
                b[..16].copy_from_slice(&v[0].to_le_bytes());
                b[16..].copy_from_slice(&v[1].to_le_bytes());
                operands::store(m, w, ea, &b[..len])
            } else {
                let lo = load_u128(m, ea, 16)?;
                if wide {
                    let hi = load_u128(m, ea + 16, 16)?;
                    m.set_xmm(n, lo);
                    m.set_ymm_high(n, hi);
                } else {
                    set_xmm_dest(m, n, lo, vex);
                }
                Ok(())
            }
        }
        Move::Scalar => {
            if store {
                let v = m.xmm(n).to_le_bytes();
                operands::store(m, w, ea, &v[..size])
            } else {
                let v = load_u128(m, ea, size)?;
                set_xmm_dest(m, n, v, vex);
                Ok(())
            }
        }
        Move::Low64 | Move::High64 => {
            let high = mv == Move::High64;
            if store {
                let v = m.xmm(n);
                let part = if high { (v >> 64) as u64 } else { v as u64 };
                operands::store_value(m, w, ea, 8, part)
            } else {
                let v = u128::from(operands::load_value(m, ea, 8)?);
                let base = match (vex, src2) {
                    (true, Some(s)) => m.xmm(s),
                    _ => m.xmm(n),
                };
                let merged = if high {
                    (base & u128::from(u64::MAX)) | (v << 64)
                } else {
                    (base & !u128::from(u64::MAX)) | v
                };
                set_xmm_dest(m, n, merged, vex);
                Ok(())
            }
        }
        Move::Broadcast => {
            let e = load_u128(m, ea, size)?;
            let total = if wide { 32 } else { 16 };
            let v = replicate(e, size, total);
            m.set_xmm(n, v[0]);
            m.set_ymm_high(n, if wide { v[1] } else { 0 });
            Ok(())
        }
        Move::Duplicate64 => {
            let e = u128::from(operands::load_value(m, ea, 8)?);
            set_xmm_dest(m, n, e | (e << 64), vex);
            Ok(())
        }
        Move::Insert => {
            let index = (instr.immediate8() as usize) & (16 / size - 1);
            let e = u128::from(operands::load_value(m, ea, size as u64)?);
            let base = match (vex, src2) {
                (true, Some(s)) => m.xmm(s),
                _ => m.xmm(n),
            };
            let shift = 8 * size * index;
            let mask = if size == 16 {
                u128::MAX
            } else {
                ((1u128 << (8 * size)) - 1) << shift
            };
            set_xmm_dest(m, n, (base & !mask) | ((e << shift) & mask), vex);
            Ok(())
        }
        Move::Extract => {
            let index = (instr.immediate8() as usize) & (16 / size - 1);
            let v = (m.xmm(n) >> (8 * size * index)).to_le_bytes();
            operands::store(m, w, ea, &v[..size])
        }
        Move::Insert128 => {
            let v = load_u128(m, ea, 16)?;
            let s = src2.ok_or(bad)?;
            let mut y = ymm(m, s);
            y[(instr.immediate8() & 1) as usize] = v;
            m.set_xmm(n, y[0]);
            m.set_ymm_high(n, y[1]);
            Ok(())
        }
        Move::Extract128 => {
            let y = ymm(m, n);
            let v = y[(instr.immediate8() & 1) as usize].to_le_bytes();
            operands::store(m, w, ea, &v)
        }
    }
}

/// Whether `instr` is SSE/AVX arithmetic with a memory *source* that may run in register form:
/// it names an xmm/ymm register, its memory operand is not operand 0, it is not a gather
/// (VSIB) and not x87/MMX.
pub fn host_candidate(instr: &Instruction) -> bool {
    let mut vector = false;
    for i in 0..instr.op_count() {
        if instr.op_kind(i) == OpKind::Register {
            let r = instr.op_register(i);
            if r.is_xmm() || r.is_ymm() {
                vector = true;
            } else if !r.is_gpr() {
                return false;
            }
        }
    }
    let mem = operands::memory_operand(instr);
    vector
        && matches!(mem, Some(i) if i > 0)
        && instr.vsib().is_none()
        && operands::memory_size(instr) <= 32
}

/// Legacy-SSE instructions with a 16-byte memory operand that do not require alignment
/// (Intel SDM Vol. 1 §12.1.4 lists the string-compare instructions as exceptions).
fn unaligned_ok(instr: &Instruction) -> bool {
    matches!(
        instr.mnemonic(),
        Mnemonic::Pcmpestri
            | Mnemonic::Pcmpestrm
            | Mnemonic::Pcmpistri
            | Mnemonic::Pcmpistrm
            | Mnemonic::Pcmpestri64
            | Mnemonic::Pcmpestrm64
    )
}

/// Executes SSE/AVX arithmetic with a map source through its register form on the host.
///
/// # Errors
/// #GP for a misaligned legacy-SSE 16-byte operand; #XM for an unmasked SIMD floating-point
/// exception; [`EmulationError::Unsupported`] if no register form exists.
pub fn execute_host<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    raw: &[u8],
    offsets: &ConstantOffsets,
) -> Result<(), EmulationError> {
    let bad = EmulationError::Unsupported("vector operand form is not emulated");
    let mem = operands::memory_operand(instr).ok_or(bad)?;
    let ea = operands::effective_address(m, instr, mem).ok_or(bad)?;
    let size = operands::memory_size(instr) as usize;
    if size == 0 || size > 32 {
        return Err(bad);
    }
    if !is_vex(instr) && size == 16 && ea % 16 != 0 && !unaligned_ok(instr) {
        return Err(EmulationError::Exception(Exception::GeneralProtection));
    }
    let mut operand = [0u8; 32];
    operands::load(m, ea, &mut operand[..size])?;
    let form = hostexec::vector_register_form(instr, raw, offsets)?;
    match hostexec::execute_vector(m, &form, &operand)? {
        hostexec::VectorOutcome::Done => Ok(()),
        hostexec::VectorOutcome::Unmasked(flags) => {
            Err(EmulationError::Exception(Exception::SimdFloatingPoint {
                flags,
            }))
        }
    }
}
