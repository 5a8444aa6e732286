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

pub mod evex;

use super::operands::{self, MapWrites};
use super::{EmulationError, Exception, hostexec};
use crate::machine::Machine;
use iced_x86::ConstantOffsets;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// How a vector data-movement instruction moves bytes.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::vector::{Move, classify};
///
/// let class = |bytes: &[u8]| classify(&decode(bytes, 0).unwrap().0);
/// // movups xmm0, xmmword ptr [0x100] (0f 10 04 25 00 01 00 00)
/// assert_eq!(class(&[0x0F, 0x10, 0x04, 0x25, 0x00, 0x01, 0x00, 0x00]), Some(Move::Full { aligned: false }));
/// // movq xmm0, qword ptr [8] (f3 0f 7e 04 25 08 00 00 00)
/// assert_eq!(class(&[0xF3, 0x0F, 0x7E, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00]), Some(Move::Scalar));
/// // stmxcsr dword ptr [0x10] (0f ae 1c 25 10 00 00 00)
/// assert_eq!(class(&[0x0F, 0xAE, 0x1C, 0x25, 0x10, 0x00, 0x00, 0x00]), Some(Move::StoreMxcsr));
/// // addps is arithmetic, not data movement.
/// assert_eq!(class(&[0x0F, 0x58, 0x04, 0x25, 0x00, 0x01, 0x00, 0x00]), None);
/// ```
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
    /// insertps/vinsertps with a 32-bit memory source: the element goes to the index in
    /// imm8 bits 5:4 (the source-select bits 7:6 apply to register sources only), then the
    /// elements set in imm8 bits 3:0 are zeroed.
    InsertPs,
    /// vmaskmovps/vmaskmovpd/vpmaskmovd/vpmaskmovq: elements whose mask (the VEX.vvvv register)
    /// has its sign bit set are loaded (others zeroed) or stored (others left alone).
    Masked {
        /// Element size in bytes (4 or 8).
        elem: usize,
    },
    /// ldmxcsr/vldmxcsr: MXCSR from memory (#GP if a reserved bit is set).
    LoadMxcsr,
    /// stmxcsr/vstmxcsr: MXCSR to memory.
    StoreMxcsr,
}

/// The data-movement class of `instr`, if it is a vector move this module emulates.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::vector::{Move, classify};
///
/// // vmovdqa ymm0, ymmword ptr [0x100] (c5 fd 6f 04 25 00 01 00 00)
/// let (i, _) = decode(&[0xC5, 0xFD, 0x6F, 0x04, 0x25, 0x00, 0x01, 0x00, 0x00], 0).unwrap();
/// assert_eq!(classify(&i), Some(Move::Full { aligned: true }));
/// // mov rax, qword ptr [8] (48 8b 04 25 08 00 00 00) is not a vector move.
/// let (i, _) = decode(&[0x48, 0x8B, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00], 0).unwrap();
/// assert_eq!(classify(&i), None);
/// ```
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
        M::Movd
        | M::Movq
        | M::Movss
        | M::Vmovd
        | M::Vmovq
        | M::Vmovss
        | M::Vmovsd
        | M::Movntss
        | M::Movntsd => Move::Scalar,
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
        | M::Vpextrq
        | M::Extractps
        | M::Vextractps => Move::Extract,
        M::Insertps | M::Vinsertps => Move::InsertPs,
        M::Vmaskmovps | M::Vpmaskmovd => Move::Masked { elem: 4 },
        M::Vmaskmovpd | M::Vpmaskmovq => Move::Masked { elem: 8 },
        M::Ldmxcsr | M::Vldmxcsr => Move::LoadMxcsr,
        M::Stmxcsr | M::Vstmxcsr => Move::StoreMxcsr,
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

/// Whether the instruction is VEX- or EVEX-encoded (their xmm writes zero the register above
/// bit 128, up to bit 511).
fn is_vex(instr: &Instruction) -> bool {
    matches!(
        instr.code().encoding(),
        iced_x86::EncodingKind::VEX | iced_x86::EncodingKind::EVEX
    )
}

/// Bits 0..128 of vector register `n` (0..32).
fn xmm_of<M: Machine + ?Sized>(m: &M, n: usize) -> u128 {
    if n < 16 {
        return m.xmm(n);
    }
    let z = crate::machine::read_zmm(m, n);
    let mut b = [0u8; 16];
    b.copy_from_slice(&z[..16]);
    u128::from_le_bytes(b)
}

/// The 256 bits of ymm register `n` as two halves (low, high).
fn ymm<M: Machine + ?Sized>(m: &M, n: usize) -> [u128; 2] {
    [m.xmm(n), m.ymm_high(n)]
}

/// Writes an xmm destination: bits 0..128 = `low`; bits 128..512 are zeroed for VEX encodings
/// and kept for legacy SSE (Intel SDM Vol. 1 §14.1.3, §15.5).
fn set_xmm_dest<M: Machine + ?Sized>(m: &mut M, n: usize, low: u128, vex: bool) {
    if n >= 16 {
        // xmm16..xmm31 exist only with EVEX, which zeroes the rest of the zmm register.
        let mut z = [0u8; 64];
        z[..16].copy_from_slice(&low.to_le_bytes());
        crate::machine::write_zmm(m, n, &z);
        return;
    }
    m.set_xmm(n, low);
    if vex && m.ymm_high(n) != 0 {
        m.set_ymm_high(n, 0);
    }
    if vex {
        clear_above_256(m, n);
    }
}

/// A VEX write of a ymm (or xmm) destination zeroes bits 256..512 of the zmm register on
/// processors with AVX-512 (Intel SDM Vol. 1 §15.5).
fn clear_above_256<M: Machine + ?Sized>(m: &mut M, n: usize) {
    if m.zmm_hi256(n) != [0; 32] {
        m.set_zmm_hi256(n, [0; 32]);
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
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::vector::{self, classify};
/// use of_core::emulate::{EmulationError, Exception, operands::MapWrites};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[1] = 0x1122_3344_5566_7788; // rcx, map bytes 8..16
/// m.xmm[0] = u128::MAX;
/// let mut w = MapWrites::default();
/// // movq xmm0, qword ptr [8] (f3 0f 7e 04 25 08 00 00 00): loads rcx, zeroes bits 64..128.
/// let (i, _) = decode(&[0xF3, 0x0F, 0x7E, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00], 0).unwrap();
/// vector::execute(&mut m, &i, classify(&i).unwrap(), &mut w).unwrap();
/// assert_eq!(m.xmm[0], 0x1122_3344_5566_7788);
/// // movdqa xmm1, xmmword ptr [0x108] (66 0f 6f 0c 25 08 01 00 00): not 16-byte aligned.
/// let (i, _) = decode(&[0x66, 0x0F, 0x6F, 0x0C, 0x25, 0x08, 0x01, 0x00, 0x00], 0).unwrap();
/// assert_eq!(
///     vector::execute(&mut m, &i, classify(&i).unwrap(), &mut w),
///     Err(EmulationError::Exception(Exception::GeneralProtection))
/// );
/// ```
pub fn execute<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    mv: Move,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    match mv {
        Move::LoadMxcsr => return execute_mxcsr(m, instr, true, w),
        Move::StoreMxcsr => return execute_mxcsr(m, instr, false, w),
        _ => {}
    }
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
                    clear_above_256(m, n);
                } else {
                    set_xmm_dest(m, n, lo, vex);
                }
                Ok(())
            }
        }
        Move::Scalar => {
            if store {
                let v = xmm_of(m, n).to_le_bytes();
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
                let v = xmm_of(m, n);
                let part = if high { (v >> 64) as u64 } else { v as u64 };
                operands::store_value(m, w, ea, 8, part)
            } else {
                let v = u128::from(operands::load_value(m, ea, 8)?);
                let base = match (vex, src2) {
                    (true, Some(s)) => xmm_of(m, s),
                    _ => xmm_of(m, n),
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
            clear_above_256(m, n);
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
                (true, Some(s)) => xmm_of(m, s),
                _ => xmm_of(m, n),
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
            let v = (xmm_of(m, n) >> (8 * size * index)).to_le_bytes();
            operands::store(m, w, ea, &v[..size])
        }
        Move::Insert128 => {
            let v = load_u128(m, ea, 16)?;
            let s = src2.ok_or(bad)?;
            let mut y = ymm(m, s);
            y[(instr.immediate8() & 1) as usize] = v;
            m.set_xmm(n, y[0]);
            m.set_ymm_high(n, y[1]);
            clear_above_256(m, n);
            Ok(())
        }
        Move::Extract128 => {
            let y = ymm(m, n);
            let v = y[(instr.immediate8() & 1) as usize].to_le_bytes();
            operands::store(m, w, ea, &v)
        }
        Move::InsertPs => {
            let imm = instr.immediate8();
            let e = u128::from(operands::load_value(m, ea, 4)?);
            let base = match (vex, src2) {
                (true, Some(s)) => xmm_of(m, s),
                _ => xmm_of(m, n),
            };
            let shift = 32 * u32::from((imm >> 4) & 3);
            let mut v = (base & !(u128::from(u32::MAX) << shift)) | (e << shift);
            for i in 0..4 {
                if imm & (1 << i) != 0 {
                    v &= !(u128::from(u32::MAX) << (32 * i));
                }
            }
            set_xmm_dest(m, n, v, vex);
            Ok(())
        }
        Move::Masked { elem } => {
            let len = if wide { 32 } else { 16 };
            // The mask is the VEX.vvvv register: operand 1 in both directions.
            let mask_reg = vec_number(instr.op1_register()).ok_or(bad)?;
            let mask = ymm_bytes(m, mask_reg);
            let selected = |i: usize| mask[i * elem + elem - 1] & 0x80 != 0;
            if store {
                let src = vec_number(instr.op2_register()).ok_or(bad)?;
                let data = ymm_bytes(m, src);
                // Unselected elements keep their bytes: read them first, write the whole range.
                let mut out = [0u8; 32];
                operands::load(m, ea, &mut out[..len])?;
                for i in 0..len / elem {
                    if selected(i) {
                        out[i * elem..(i + 1) * elem]
                            .copy_from_slice(&data[i * elem..(i + 1) * elem]);
                    }
                }
                operands::store(m, w, ea, &out[..len])
            } else {
                let mut mem = [0u8; 32];
                operands::load(m, ea, &mut mem[..len])?;
                let mut out = [0u8; 32];
                for i in 0..len / elem {
                    if selected(i) {
                        out[i * elem..(i + 1) * elem]
                            .copy_from_slice(&mem[i * elem..(i + 1) * elem]);
                    }
                }
                let (lo, hi) = split(&out);
                m.set_xmm(n, lo);
                if m.ymm_high(n) != hi {
                    m.set_ymm_high(n, hi);
                }
                clear_above_256(m, n);
                Ok(())
            }
        }
        Move::LoadMxcsr | Move::StoreMxcsr => unreachable!("handled before operand decoding"),
    }
}

/// The 32 bytes of ymm register `n`.
fn ymm_bytes<M: Machine + ?Sized>(m: &M, n: usize) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&m.xmm(n).to_le_bytes());
    b[16..].copy_from_slice(&m.ymm_high(n).to_le_bytes());
    b
}

/// 32 bytes as (bits 0..128, bits 128..256).
fn split(b: &[u8; 32]) -> (u128, u128) {
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    lo.copy_from_slice(&b[..16]);
    hi.copy_from_slice(&b[16..]);
    (u128::from_le_bytes(lo), u128::from_le_bytes(hi))
}

/// ldmxcsr/stmxcsr on map bytes.
fn execute_mxcsr<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    load: bool,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let bad = EmulationError::Unsupported("vector operand form is not emulated");
    let mem = operands::memory_operand(instr).ok_or(bad)?;
    let ea = operands::effective_address(m, instr, mem).ok_or(bad)?;
    if load {
        let v = operands::load_value(m, ea, 4)? as u32;
        if v & !crate::cpu::mxcsr_mask() != 0 {
            return Err(EmulationError::Exception(Exception::GeneralProtection));
        }
        m.set_mxcsr(v);
        Ok(())
    } else {
        operands::store_value(m, w, ea, 4, u64::from(m.mxcsr()))
    }
}

/// Whether `instr` is SSE/AVX arithmetic whose memory operand may be replaced by a register:
/// it names an xmm/ymm register or is an SSE/AVX instruction on general-purpose registers
/// (`cvttsd2si rax, [m]`), names no other kind of register (MMX, x87, mask), and is not a
/// gather (VSIB). A memory *destination* (operand 0) is allowed: the register form then writes
/// the scratch register and its low bytes are stored (`vcvtps2ph [m], ymm, imm8`).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::vector::host_candidate;
///
/// let cand = |bytes: &[u8]| host_candidate(&decode(bytes, 0).unwrap().0);
/// // addps xmm0, xmmword ptr [0x100] (0f 58 04 25 00 01 00 00)
/// assert!(cand(&[0x0F, 0x58, 0x04, 0x25, 0x00, 0x01, 0x00, 0x00]));
/// // cvttsd2si rax, qword ptr [0x100] (f2 48 0f 2c 04 25 00 01 00 00): SSE on a GPR
/// assert!(cand(&[0xF2, 0x48, 0x0F, 0x2C, 0x04, 0x25, 0x00, 0x01, 0x00, 0x00]));
/// // add qword ptr [8], 1 is not a vector instruction.
/// assert!(!cand(&[0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01]));
/// ```
pub fn host_candidate(instr: &Instruction) -> bool {
    use iced_x86::CpuidFeature as F;
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
    let simd = instr.code().cpuid_features().iter().any(|f| {
        matches!(
            f,
            F::SSE
                | F::SSE2
                | F::SSE3
                | F::SSSE3
                | F::SSE4_1
                | F::SSE4_2
                | F::AVX
                | F::AVX2
                | F::FMA
                | F::F16C
        )
    });
    let mem = operands::memory_operand(instr);
    (vector || simd)
        && mem.is_some()
        && instr.vsib().is_none()
        && operands::memory_size(instr) <= 32
}

/// Legacy-SSE instructions with a 16-byte memory operand that do not require alignment
/// (Intel SDM Vol. 1 §12.1.4 lists the string-compare instructions as exceptions).
///
/// The SHA extensions are listed with Exceptions Type 4 (aligned) by Intel, but AMD processors
/// do not check their alignment (found by the differential test on AMD EPYC): they are
/// accepted misaligned on AMD only.
fn unaligned_ok(instr: &Instruction) -> bool {
    use Mnemonic as M;
    match instr.mnemonic() {
        M::Pcmpestri
        | M::Pcmpestrm
        | M::Pcmpistri
        | M::Pcmpistrm
        | M::Pcmpestri64
        | M::Pcmpestrm64 => true,
        M::Sha1rnds4
        | M::Sha1nexte
        | M::Sha1msg1
        | M::Sha1msg2
        | M::Sha256rnds2
        | M::Sha256msg1
        | M::Sha256msg2 => crate::cpu::is_amd(),
        _ => false,
    }
}

/// MXCSR.UE (underflow flag) and UM (its mask).
const MXCSR_UE: u32 = 1 << 4;
const MXCSR_UM: u32 = 1 << 11;
/// MXCSR.DAZ.
const MXCSR_DAZ: u32 = 1 << 6;

/// vcvtps2ph with underflow unmasked: whether an element's result is tiny (a half-precision
/// denormal or zero from a nonzero finite source). vcvtps2ph ignores FTZ (Intel SDM Vol. 2,
/// VCVTPS2PH), so the FTZ run of [`hostexec::execute_vector`] cannot find tiny exact results;
/// the converted halves (`result`) and the single-precision sources tell.
fn half_underflow<M: Machine + ?Sized>(
    m: &M,
    instr: &Instruction,
    guest_mxcsr: u32,
    result: &[u8],
    selected: u64,
) -> bool {
    if instr.mnemonic() != Mnemonic::Vcvtps2ph || guest_mxcsr & MXCSR_UM != 0 {
        return false;
    }
    let r = instr.op1_register();
    if !(r.is_xmm() || r.is_ymm() || r.is_zmm()) {
        return false;
    }
    let src = crate::machine::read_zmm(m, r.number());
    (0..result.len() / 2).any(|i| {
        let mut f = [0u8; 4];
        f.copy_from_slice(&src[4 * i..4 * i + 4]);
        let mag = u32::from_le_bytes(f) & 0x7FFF_FFFF;
        let zero = mag == 0 || (mag < 0x0080_0000 && guest_mxcsr & MXCSR_DAZ != 0);
        let h = u16::from_le_bytes([result[2 * i], result[2 * i + 1]]);
        selected >> i & 1 == 1 && !zero && mag < 0x7F80_0000 && h & 0x7C00 == 0
    })
}

/// MXCSR.MM (bit 17, AMD "misaligned SSE mode", AMD APM Vol. 1 §4.4.3): when set, legacy-SSE
/// instructions accept misaligned 16-byte operands. Only settable where MXCSR_MASK has it.
const MXCSR_MM: u32 = 1 << 17;

/// Executes SSE/AVX arithmetic on a map operand through its register form on the host: a
/// source operand is loaded into the scratch register first; a destination operand (operand 0)
/// receives the scratch register's low bytes afterwards.
///
/// # Errors
/// #GP for a misaligned legacy-SSE 16-byte operand; #XM for an unmasked SIMD floating-point
/// exception (MXCSR's flags are then updated, as the CPU does); [`EmulationError::Unsupported`]
/// if no register form exists.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::{operands::MapWrites, vector};
/// use of_core::RegisterFile;
///
/// if !of_core::emulate::hostexec::vector_supported() {
///     return;
/// }
/// let mut m = RegisterFile::default();
/// m.gpr[1] = 1; // rcx = 1, map bytes 8..16
/// // cvtsi2sd xmm0, qword ptr [8] (f2 48 0f 2a 04 25 08 00 00 00): xmm0[0..64] = 1.0
/// let bytes = [0xF2, 0x48, 0x0F, 0x2A, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (i, offsets) = decode(&bytes, 0).unwrap();
/// let mut w = MapWrites::default();
/// vector::execute_host(&mut m, &i, &bytes, &offsets, &mut w).unwrap();
/// assert_eq!(m.xmm[0] as u64, 1.0f64.to_bits());
/// ```
pub fn execute_host<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    raw: &[u8],
    offsets: &ConstantOffsets,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let bad = EmulationError::Unsupported("vector operand form is not emulated");
    let mem = operands::memory_operand(instr).ok_or(bad)?;
    let ea = operands::effective_address(m, instr, mem).ok_or(bad)?;
    let size = operands::memory_size(instr) as usize;
    if size == 0 || size > 32 {
        return Err(bad);
    }
    if !is_vex(instr)
        && size == 16
        && ea % 16 != 0
        && !unaligned_ok(instr)
        && m.mxcsr() & MXCSR_MM == 0
    {
        return Err(EmulationError::Exception(Exception::GeneralProtection));
    }
    let form = hostexec::vector_register_form(instr, raw, offsets)?;
    let mut operand = [0u8; 64];
    if mem != 0 {
        operands::load(m, ea, &mut operand[..size])?;
    }
    let guest_mxcsr = m.mxcsr();
    let outcome = hostexec::execute_vector(m, &form, &mut operand)?;
    finish_host(m, instr, guest_mxcsr, outcome, &operand[..size], u64::MAX)?;
    if mem == 0 {
        operands::store(m, w, ea, &operand[..size])?;
    }
    Ok(())
}

/// The end of a vector host execution (legacy SSE, VEX and EVEX alike): turns an unmasked
/// SIMD floating-point exception into #XM with MXCSR updated, including tiny results of
/// `vcvtps2ph` under elements `selected` (bit `i`: element `i`) that the masked host run cannot
/// see. `result` is the memory operand's new bytes for a form that stores.
fn finish_host<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    guest_mxcsr: u32,
    outcome: hostexec::VectorOutcome,
    result: &[u8],
    selected: u64,
) -> Result<(), EmulationError> {
    let tiny = half_underflow(m, instr, guest_mxcsr, result, selected);
    use hostexec::VectorOutcome as O;
    let outcome = match outcome {
        O::Done if tiny => O::Unmasked {
            mxcsr: m.mxcsr() | MXCSR_UE,
            before_computation: false,
        },
        O::Unmasked {
            mxcsr,
            before_computation: false,
        } if tiny => O::Unmasked {
            mxcsr: mxcsr | MXCSR_UE,
            before_computation: false,
        },
        o => o,
    };
    match outcome {
        O::Done => Ok(()),
        O::Unmasked { mxcsr, .. } => {
            if matches!(
                instr.mnemonic(),
                Mnemonic::Dpps | Mnemonic::Dppd | Mnemonic::Vdpps | Mnemonic::Vdppd
            ) {
                // A dot product is a multiply step, then add steps; the CPU stops at the first
                // step that raises an unmasked exception and reports that step's flags, which
                // a run with every exception masked cannot tell apart.
                return Err(EmulationError::Unsupported(
                    "dpps/dppd raising an unmasked SIMD floating-point exception is not emulated",
                ));
            }
            m.set_mxcsr(mxcsr);
            Err(EmulationError::Exception(Exception::SimdFloatingPoint {
                flags: mxcsr & 0x3F & !(mxcsr >> 7),
            }))
        }
    }
}
