//! The register form of a vector instruction (legacy SSE, VEX and EVEX): its ModRM memory
//! operand rewritten to a scratch vector (or general-purpose) register.

use super::cpu_supports;
use super::gpr_form::RegisterForm;
use super::layout::layout;
use crate::emulate::EmulationError;
use crate::machine::gpr_index;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// The register form of a vector instruction (see [`vector_register_form`]).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::vector_register_form;
///
/// // cvtsi2sd xmm0, qword ptr [8] (f2 48 0f 2a 04 25 08 00 00 00): the register form of the
/// // memory operand is a general-purpose register.
/// let bytes = [0xF2, 0x48, 0x0F, 0x2A, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let v = vector_register_form(&instr, &bytes, &offsets).unwrap();
/// assert!(v.scratch_gpr);
/// assert_ne!(v.form.scratch, 4); // never rsp
/// ```
#[derive(Clone, Copy, Debug)]
pub struct VectorForm {
    /// The rewritten instruction; `form.scratch` is the register standing for the memory
    /// operand.
    pub form: RegisterForm,
    /// Whether the scratch register is a general-purpose register (`cvtsi2sd xmm, r/m64`: the
    /// register form of a GPR-or-memory operand) rather than an xmm/ymm register.
    pub scratch_gpr: bool,
    /// Whether the form is EVEX-encoded (it needs the AVX-512 trampoline).
    pub evex: bool,
    /// Whether the instruction never signals underflow (see [`never_underflows`]): it then
    /// runs with the guest's underflow mask, which decides whether FTZ flushes its tiny
    /// results.
    pub never_underflows: bool,
}

/// Instructions that can return a tiny result but never signal underflow (their "SIMD
/// Floating-Point Exceptions" in the Intel SDM Vol. 2 list no UE): `vreduce*` (x − round(x) of
/// a tiny x is x), `vrndscale*`, `vgetmant*`, `vgetexp*`, `vfixupimm*`, `vrange*`. Whether FTZ
/// flushes such a result depends on MXCSR.UM (seen on AMD Zen 4: flushed with underflow
/// masked, kept with it unmasked), so they run with the guest's UM rather than all exceptions
/// masked; they cannot raise #XM for underflow, so that run is safe.
///
/// # Examples
///
/// ```
/// use iced_x86::Mnemonic;
/// use of_core::emulate::hostexec::never_underflows;
///
/// assert!(never_underflows(Mnemonic::Vreducepd));
/// assert!(!never_underflows(Mnemonic::Vaddps)); // a tiny sum signals underflow
/// ```
pub fn never_underflows(mn: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        mn,
        M::Vreduceps
            | M::Vreducepd
            | M::Vreducess
            | M::Vreducesd
            | M::Vreduceph
            | M::Vreducesh
            | M::Vrndscaleps
            | M::Vrndscalepd
            | M::Vrndscaless
            | M::Vrndscalesd
            | M::Vrndscaleph
            | M::Vrndscalesh
            | M::Vgetmantps
            | M::Vgetmantpd
            | M::Vgetmantss
            | M::Vgetmantsd
            | M::Vgetmantph
            | M::Vgetmantsh
            | M::Vgetexpps
            | M::Vgetexppd
            | M::Vgetexpss
            | M::Vgetexpsd
            | M::Vgetexpph
            | M::Vgetexpsh
            | M::Vfixupimmps
            | M::Vfixupimmpd
            | M::Vfixupimmss
            | M::Vfixupimmsd
            | M::Vrangeps
            | M::Vrangepd
            | M::Vrangess
            | M::Vrangesd
    )
}

/// The register form of a vector instruction: ModRM.rm names a scratch register, number `n`,
/// that the instruction does not use as a vector or general-purpose register (`n` is never 4:
/// rsp). The rewrite is verified by decoding it: the result must be the same mnemonic with the
/// memory operand replaced by register `n` — xmm/ymm `n`, or GPR `n` for operands whose
/// register form is a GPR — so forms whose register encoding means another instruction (movlps
/// and movhlps, for example) are refused.
///
/// # Errors
/// [`EmulationError::Unsupported`] when no such form exists.
///
/// # Examples
///
/// ```
/// use iced_x86::{Mnemonic, Register};
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::vector_register_form;
///
/// // addps xmm1, xmmword ptr [0x100] (0f 58 0c 25 00 01 00 00)
/// let bytes = [0x0F, 0x58, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let v = vector_register_form(&instr, &bytes, &offsets).unwrap();
/// assert!(!v.scratch_gpr);
/// let (form, _) = decode(v.form.bytes(), 0).unwrap();
/// assert_eq!(form.mnemonic(), Mnemonic::Addps);
/// assert_eq!(form.op0_register(), Register::XMM1);
/// assert_eq!(form.op1_register(), Register::XMM0 + v.form.scratch as u32);
/// assert!(v.form.scratch != 0 && v.form.scratch != 1);
/// ```
pub fn vector_register_form(
    instr: &Instruction,
    raw: &[u8],
    offsets: &iced_x86::ConstantOffsets,
) -> Result<VectorForm, EmulationError> {
    let unsupported =
        EmulationError::Unsupported("vector instruction cannot be executed in register form");
    if !cpu_supports(instr) {
        return Err(EmulationError::Unsupported(
            "the host CPU does not implement this instruction",
        ));
    }
    let raw = raw.get(..instr.len()).ok_or(unsupported)?;
    let lay = layout(raw).ok_or(unsupported)?;
    if offsets.has_displacement()
        && (offsets.displacement_offset() + offsets.displacement_size() != lay.operand_end)
    {
        return Err(unsupported);
    }
    if offsets.has_immediate() && offsets.immediate_offset() != lay.operand_end {
        return Err(unsupported);
    }
    let mem_op = (0..instr.op_count())
        .find(|&i| instr.op_kind(i) == OpKind::Memory)
        .ok_or(unsupported)?;
    // xmm0 is an implicit operand of the variable blends and sha256rnds2; rsp (4) is never a
    // scratch register; rax/rcx/rdx are implicit in the string compares.
    let mut used = (1u16 << 4) | (1 << 0);
    for i in 0..instr.op_count() {
        if instr.op_kind(i) == OpKind::Register {
            let r = instr.op_register(i);
            if r.is_xmm() {
                used |= 1 << ((r as u32 - Register::XMM0 as u32) & 15);
            } else if r.is_ymm() {
                used |= 1 << ((r as u32 - Register::YMM0 as u32) & 15);
            } else if r.is_gpr() && r.full_register() != Register::RSP {
                if let Some((n, _)) = gpr_index(r) {
                    used |= 1 << n;
                }
            } else {
                return Err(unsupported);
            }
        }
    }
    if matches!(
        instr.mnemonic(),
        Mnemonic::Pcmpestri
            | Mnemonic::Pcmpestri64
            | Mnemonic::Pcmpestrm
            | Mnemonic::Pcmpestrm64
            | Mnemonic::Pcmpistri
            | Mnemonic::Pcmpistrm
            | Mnemonic::Vpcmpestri
            | Mnemonic::Vpcmpestri64
            | Mnemonic::Vpcmpestrm
            | Mnemonic::Vpcmpestrm64
            | Mnemonic::Vpcmpistri
            | Mnemonic::Vpcmpistrm
    ) {
        used |= 0b111;
    }
    let can_extend = lay.rex.is_some() || matches!(lay.vex, Some((_, 3)));
    let limit = if can_extend { 16 } else { 8 };
    let scratch = (0..limit)
        .find(|&n| used & (1 << n) == 0)
        .ok_or(unsupported)?;
    let b_ext = (scratch >> 3) as u8;
    let mut out = [0u8; 16];
    let mut n = 0;
    for (j, &b) in raw[..lay.prefix_end].iter().enumerate() {
        let keep = match b {
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x67 | 0xF0 => false,
            0x40..=0x4F => Some(j) == lay.rex,
            _ => true,
        };
        if keep {
            out[n] = if Some(j) == lay.rex {
                (b & !0x03) | b_ext
            } else {
                b
            };
            n += 1;
        }
    }
    let mut j = lay.prefix_end;
    if let Some((p, len)) = lay.vex {
        out[n..n + len].copy_from_slice(&raw[p..p + len]);
        if len == 3 {
            // VEX.X = 0 and VEX.B for the scratch register (both stored inverted).
            out[n + 1] = (raw[p + 1] | 0x40) & !0x20 | ((!b_ext & 1) << 5);
        } else if b_ext != 0 {
            return Err(unsupported);
        }
        n += len;
        j = p + len;
    }
    while j < lay.modrm {
        out[n] = raw[j];
        n += 1;
        j += 1;
    }
    out[n] = 0xC0 | (raw[lay.modrm] & 0x38) | (scratch as u8 & 7);
    n += 1;
    for &b in &raw[lay.operand_end..] {
        out[n] = b;
        n += 1;
    }
    // Verify the rewrite means what we think.
    let check =
        iced_x86::Decoder::with_ip(64, &out[..n], 0, iced_x86::DecoderOptions::NONE).decode();
    if check.is_invalid()
        || check.mnemonic() != instr.mnemonic()
        || check.op_count() != instr.op_count()
        || check.len() != n
    {
        return Err(unsupported);
    }
    let mut scratch_gpr = false;
    for i in 0..instr.op_count() {
        if i == mem_op {
            let r = check.op_register(i);
            let num = if r.is_xmm() {
                r as u32 - Register::XMM0 as u32
            } else if r.is_ymm() {
                r as u32 - Register::YMM0 as u32
            } else if let (true, Some((g, _))) = (r.is_gpr32() || r.is_gpr64(), gpr_index(r)) {
                scratch_gpr = true;
                g as u32
            } else {
                return Err(unsupported);
            };
            if check.op_kind(i) != OpKind::Register || num as usize != scratch {
                return Err(unsupported);
            }
        } else if check.op_kind(i) != instr.op_kind(i)
            || (instr.op_kind(i) == OpKind::Register
                && check.op_register(i) != instr.op_register(i))
        {
            return Err(unsupported);
        }
    }
    Ok(finish(out, n, scratch, scratch_gpr, false, instr))
}

/// The register form of an EVEX-encoded instruction (Intel SDM Vol. 2A §2.7): ModRM.rm names
/// a scratch register that no operand of the instruction names — zmm/ymm/xmm 0..31 for a
/// vector-or-memory operand (EVEX.B and EVEX.X extend rm), a general-purpose register for a
/// GPR-or-memory operand (`vcvtsi2sd xmm, xmm, r/m64`) — and EVEX.b is cleared, since with a
/// register operand it selects embedded rounding instead of broadcast (the caller replicates a
/// broadcast element across the scratch register instead). The opmask, zeroing bit and vector
/// length are kept, so masking happens exactly as in the original. Segment overrides and 0x67
/// are dropped. The rewrite is verified by decoding it.
///
/// # Errors
/// [`EmulationError::Unsupported`] for memory-only operands (`vmovntdq`, `vbroadcastf32x4`,
/// gathers), forms the host CPU lacks, and rewrites that do not decode to the same instruction.
///
/// # Examples
///
/// ```
/// use iced_x86::{Mnemonic, Register};
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::evex_register_form;
///
/// // vpaddd zmm1{k2}{z}, zmm0, dword bcst [0x100] (62 f1 7d da fe 0c 25 00 01 00 00)
/// let bytes = [0x62, 0xF1, 0x7D, 0xDA, 0xFE, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// assert!(instr.is_broadcast());
/// if of_core::cpu::get().supports(&instr) {
///     let v = evex_register_form(&instr, &bytes, &offsets).unwrap();
///     let (form, _) = decode(v.form.bytes(), 0).unwrap();
///     assert_eq!(form.mnemonic(), Mnemonic::Vpaddd);
///     assert_eq!(form.op2_register(), Register::ZMM0 + v.form.scratch as u32);
///     assert_eq!((form.op_mask(), form.zeroing_masking()), (Register::K2, true));
///     assert!(!form.is_broadcast() && v.evex && !v.scratch_gpr);
///     assert!(v.form.scratch > 1);
/// }
/// ```
pub fn evex_register_form(
    instr: &Instruction,
    raw: &[u8],
    offsets: &iced_x86::ConstantOffsets,
) -> Result<VectorForm, EmulationError> {
    use iced_x86::OpCodeOperandKind as K;
    let unsupported =
        EmulationError::Unsupported("vector instruction cannot be executed in register form");
    if !cpu_supports(instr) {
        return Err(EmulationError::Unsupported(
            "the host CPU does not implement this instruction",
        ));
    }
    let raw = raw.get(..instr.len()).ok_or(unsupported)?;
    // Only segment overrides and 0x67 may precede EVEX (66/F2/F3/REX there are #UD).
    let p = raw
        .iter()
        .position(|b| !matches!(b, 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x67))
        .ok_or(unsupported)?;
    if raw.get(p) != Some(&0x62) || raw.len() < p + 6 {
        return Err(unsupported);
    }
    let (p0, p1, p2) = (raw[p + 1], raw[p + 2], raw[p + 3]);
    let modrm_at = p + 5; // 62, P0, P1, P2, opcode (EVEX has one opcode byte: P0.mmm is the map)
    let modrm = raw[modrm_at];
    let (md, rm) = (modrm >> 6, modrm & 7);
    if md == 3 {
        return Err(unsupported);
    }
    let has_sib = rm == 4;
    let base = if has_sib {
        *raw.get(modrm_at + 1).ok_or(unsupported)? & 7
    } else {
        rm
    };
    let disp = match md {
        0 if rm == 5 || (has_sib && base == 5) => 4,
        0 => 0,
        1 => 1, // disp8*N
        _ => 4,
    };
    let operand_end = modrm_at + 1 + usize::from(has_sib) + disp;
    if offsets.has_displacement()
        && offsets.displacement_offset() + offsets.displacement_size() != operand_end
    {
        return Err(unsupported);
    }
    if offsets.has_immediate() && offsets.immediate_offset() != operand_end {
        return Err(unsupported);
    }
    let mem_op = (0..instr.op_count())
        .find(|&i| instr.op_kind(i) == OpKind::Memory)
        .ok_or(unsupported)?;
    let gpr_operand = match instr.code().op_code().op_kind(mem_op) {
        K::xmm_or_mem | K::ymm_or_mem | K::zmm_or_mem => false,
        K::r32_or_mem | K::r64_or_mem => true,
        _ => return Err(unsupported), // memory only: no register form
    };
    let (mut used_vec, mut used_gpr) = (0u32, 1u16 << 4);
    for i in 0..instr.op_count() {
        if instr.op_kind(i) != OpKind::Register {
            continue;
        }
        let r = instr.op_register(i);
        if r.is_xmm() || r.is_ymm() || r.is_zmm() {
            used_vec |= 1 << (r.number() & 31);
        } else if r.is_gpr() {
            used_gpr |= 1 << (r.number() & 15);
        } else if !r.is_k() {
            return Err(unsupported);
        }
    }
    let scratch = if gpr_operand {
        (0..16).find(|&n| used_gpr & (1 << n) == 0)
    } else {
        (0..32).find(|&n| used_vec & (1 << n) == 0)
    }
    .ok_or(unsupported)?;
    let s = scratch as u8;
    let mut out = [0u8; 16];
    let mut n = 0;
    out[n] = 0x62;
    // P0: R X B R' 0 mmm, R/X/B/R' stored inverted. rm = X:B:rm for a vector register; X is
    // ignored (kept 1) for a general-purpose one.
    let x_bar = if gpr_operand { 1 } else { !(s >> 4) & 1 };
    out[n + 1] = (p0 & 0x9F) | (x_bar << 6) | ((!(s >> 3) & 1) << 5);
    out[n + 2] = p1;
    // P2: z L'L b V' aaa; b cleared (register form: no broadcast, no embedded rounding).
    out[n + 3] = p2 & !0x10;
    out[n + 4] = raw[p + 4];
    out[n + 5] = 0xC0 | (modrm & 0x38) | (s & 7);
    n += 6;
    for &b in &raw[operand_end..] {
        out[n] = b;
        n += 1;
    }
    let check =
        iced_x86::Decoder::with_ip(64, &out[..n], 0, iced_x86::DecoderOptions::NONE).decode();
    if check.is_invalid()
        || check.mnemonic() != instr.mnemonic()
        || check.op_count() != instr.op_count()
        || check.len() != n
        || check.op_mask() != instr.op_mask()
        || check.zeroing_masking() != instr.zeroing_masking()
        || check.is_broadcast()
        || check.suppress_all_exceptions()
        || check.rounding_control() != iced_x86::RoundingControl::None
        || check.immediate8() != instr.immediate8()
    {
        return Err(unsupported);
    }
    for i in 0..instr.op_count() {
        if i == mem_op {
            let r = check.op_register(i);
            let ok = check.op_kind(i) == OpKind::Register
                && r.number() == scratch
                && (if gpr_operand {
                    r.is_gpr32() || r.is_gpr64()
                } else {
                    r.is_xmm() || r.is_ymm() || r.is_zmm()
                });
            if !ok {
                return Err(unsupported);
            }
        } else if check.op_kind(i) != instr.op_kind(i)
            || (instr.op_kind(i) == OpKind::Register
                && check.op_register(i) != instr.op_register(i))
        {
            return Err(unsupported);
        }
    }
    Ok(finish(out, n, scratch, gpr_operand, true, instr))
}

/// The [`VectorForm`] of the `n` encoded bytes in `out`, with the `ret` that ends it.
fn finish(
    mut out: [u8; 16],
    n: usize,
    scratch: usize,
    scratch_gpr: bool,
    evex: bool,
    instr: &Instruction,
) -> VectorForm {
    out[n] = 0xC3;
    VectorForm {
        form: RegisterForm {
            bytes: out,
            len: n + 1,
            scratch,
            rsp_alias: None,
        },
        scratch_gpr,
        evex,
        never_underflows: never_underflows(instr.mnemonic()),
    }
}
