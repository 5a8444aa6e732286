//! Running a vector register form on the host with the interrupted thread's vector state
//! (xmm/ymm/zmm, opmask registers, MXCSR) loaded, and writing the results back.

use super::vector_form::VectorForm;
use super::{DF, HostRegs, Slot, vector_supported};
use crate::emulate::EmulationError;
use crate::machine::{Machine, read_zmm, write_zmm};
use crate::map::STATUS_FLAGS;
use core::arch::asm;

/// MXCSR.UM, the underflow mask (bit 11).
const MXCSR_UM: u32 = 1 << 11;

/// Vector registers in and out of [`execute_vector`], in the layout its trampolines expect:
/// zmm0..zmm31 as 64 little-endian bytes each (on a host without AVX-512 only bytes 0..32 of
/// the first sixteen are loaded and stored: ymm0..ymm15), the opmask registers, MXCSR.
///
/// # Examples
///
/// The trampolines address the fields by offset:
///
/// ```
/// use of_core::emulate::hostexec::VectorRegs;
///
/// assert_eq!(core::mem::offset_of!(VectorRegs, zmm), 0);
/// assert_eq!(core::mem::offset_of!(VectorRegs, k), 32 * 64);
/// assert_eq!(core::mem::offset_of!(VectorRegs, mxcsr), 32 * 64 + 8 * 8);
/// assert_eq!(core::mem::offset_of!(VectorRegs, host_mxcsr), 32 * 64 + 8 * 8 + 4);
/// assert_eq!(core::mem::align_of::<VectorRegs>(), 64);
/// ```
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub struct VectorRegs {
    /// zmm0..zmm31, 64 little-endian bytes each.
    pub zmm: [[u8; 64]; 32],
    /// k0..k7.
    pub k: [u64; 8],
    /// MXCSR to run with (in) and after the instruction (out).
    pub mxcsr: u32,
    /// The host's MXCSR, saved and restored by the trampoline.
    pub host_mxcsr: u32,
}

const _: () = assert!(core::mem::offset_of!(VectorRegs, k) == 2048);
const _: () = assert!(core::mem::offset_of!(VectorRegs, mxcsr) == 2112);
const _: () = assert!(core::mem::offset_of!(VectorRegs, host_mxcsr) == 2116);

/// Which trampoline loads the vector state: the one for this CPU's widest enabled state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Width {
    /// ymm0..ymm15 (AVX).
    Avx,
    /// zmm0..zmm31 and k0..k7 with `kmovw` (AVX512F without AVX512BW: 16-bit opmasks).
    Avx512F,
    /// zmm0..zmm31 and k0..k7 with `kmovq` (AVX512BW: 64-bit opmasks).
    Avx512Bw,
}

fn width() -> Width {
    let c = crate::cpu::get();
    if !c.avx512() {
        Width::Avx
    } else if c.has(iced_x86::CpuidFeature::AVX512BW) {
        Width::Avx512Bw
    } else {
        Width::Avx512F
    }
}

/// Runs `regs.code` with the GPRs and flags of `regs` and the vector state of `v` loaded, and
/// stores them back, through the trampoline for `w`.
///
/// # Safety
/// As [`super::run`]; the host must support the state `w` names (AVX, or AVX-512 enabled by
/// the OS, and AVX512BW for [`Width::Avx512Bw`]).
unsafe fn run_vector(regs: &mut HostRegs, v: &mut VectorRegs, w: Width) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match w {
            Width::Avx => run_avx(regs, v),
            Width::Avx512F => run_avx512f(regs, v),
            Width::Avx512Bw => run_avx512bw(regs, v),
        }
    }
}

/// One trampoline: `$load` puts the guest's vector registers (at `rsi`, the [`VectorRegs`]) in
/// place, `$store` takes them back; around them the same sequence for every width.
macro_rules! trampoline {
    ($(#[$doc:meta])* $name:ident, [$($load:literal),*], [$($store:literal),*]) => {
        $(#[$doc])*
        unsafe fn $name(regs: &mut HostRegs, v: &mut VectorRegs) {
            // SAFETY: as in `super::run`; every vector and opmask register is caller-saved and
            // declared clobbered through clobber_abi("C") (code compiled without AVX-512 keeps
            // nothing in zmm16..31, k0..7 or bits 256..512 of zmm0..15), and the host's MXCSR
            // is restored before leaving.
            unsafe {
                asm!(
                    // rdi = &HostRegs, rsi = &VectorRegs.
                    "push rbp",                   // save host rbp
                    "push rbx",                   // save host rbx
                    "push rsi",                   // [rsp] = &VectorRegs, needed afterwards
                    "stmxcsr [rsi + 2116]",       // save the host's MXCSR
                    "ldmxcsr [rsi + 2112]",       // MXCSR = guest's (exceptions masked by the caller)
                    $($load,)*                    // the guest's vector registers (64-byte slots)
                    "push rdi",                   // [rsp] = &HostRegs
                    "push qword ptr [rdi + 136]", // [rsp] = code slot address
                    "push qword ptr [rdi + 128]", // guest status flags and DF
                    "popfq",                      // rflags = guest status flags and DF
                    "mov rax, [rdi + 0]",         // guest GPRs, as in `run`
                    "mov rcx, [rdi + 8]",
                    "mov rdx, [rdi + 16]",
                    "mov rbx, [rdi + 24]",
                    "mov rbp, [rdi + 40]",
                    "mov rsi, [rdi + 48]",
                    "mov r8, [rdi + 64]",
                    "mov r9, [rdi + 72]",
                    "mov r10, [rdi + 80]",
                    "mov r11, [rdi + 88]",
                    "mov r12, [rdi + 96]",
                    "mov r13, [rdi + 104]",
                    "mov r14, [rdi + 112]",
                    "mov r15, [rdi + 120]",
                    "mov rdi, [rdi + 56]",        // guest rdi last
                    "call qword ptr [rsp]",       // run `instruction; ret`
                    "pushfq",                     // [rsp] = flags, [rsp+8] = code, [rsp+16] = HostRegs
                    "xchg rdi, [rsp + 16]",       // rdi = &HostRegs, [rsp+16] = guest rdi out
                    "mov [rdi + 0], rax",         // store guest GPRs but rsp and rdi
                    "mov [rdi + 8], rcx",
                    "mov [rdi + 16], rdx",
                    "mov [rdi + 24], rbx",
                    "mov [rdi + 40], rbp",
                    "mov [rdi + 48], rsi",
                    "mov [rdi + 64], r8",
                    "mov [rdi + 72], r9",
                    "mov [rdi + 80], r10",
                    "mov [rdi + 88], r11",
                    "mov [rdi + 96], r12",
                    "mov [rdi + 104], r13",
                    "mov [rdi + 112], r14",
                    "mov [rdi + 120], r15",
                    "pop rax",                    // flags out
                    "mov [rdi + 128], rax",
                    "pop rax",                    // drop the code address
                    "pop rax",                    // guest rdi out
                    "mov [rdi + 56], rax",
                    "pop rsi",                    // rsi = &VectorRegs
                    $($store,)*                   // the guest's vector registers out
                    "stmxcsr [rsi + 2112]",       // guest MXCSR out (sticky exception flags)
                    "ldmxcsr [rsi + 2116]",       // restore the host's MXCSR
                    "vzeroupper",                 // leave no dirty upper state to SSE code
                    "cld",                        // the ABI requires DF clear
                    "pop rbx",                    // restore host rbx
                    "pop rbp",                    // restore host rbp
                    inout("rdi") regs as *mut HostRegs => _,
                    inout("rsi") v as *mut VectorRegs => _,
                    out("rax") _, out("rcx") _, out("rdx") _,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                    out("r12") _, out("r13") _, out("r14") _, out("r15") _,
                    clobber_abi("C"),
                );
            }
        }
    };
}

trampoline!(
    /// The AVX trampoline: ymm0..ymm15 (bytes 0..32 of `v.zmm[0..16]`) and MXCSR.
    ///
    /// # Safety
    /// As [`run_vector`] with AVX.
    run_avx, ["vmovdqu ymm0, [rsi + 0]", "vmovdqu ymm1, [rsi + 64]", "vmovdqu ymm2, [rsi + 128]", "vmovdqu ymm3, [rsi + 192]", "vmovdqu ymm4, [rsi + 256]", "vmovdqu ymm5, [rsi + 320]", "vmovdqu ymm6, [rsi + 384]", "vmovdqu ymm7, [rsi + 448]", "vmovdqu ymm8, [rsi + 512]", "vmovdqu ymm9, [rsi + 576]", "vmovdqu ymm10, [rsi + 640]", "vmovdqu ymm11, [rsi + 704]", "vmovdqu ymm12, [rsi + 768]", "vmovdqu ymm13, [rsi + 832]", "vmovdqu ymm14, [rsi + 896]", "vmovdqu ymm15, [rsi + 960]"], ["vmovdqu [rsi + 0], ymm0", "vmovdqu [rsi + 64], ymm1", "vmovdqu [rsi + 128], ymm2", "vmovdqu [rsi + 192], ymm3", "vmovdqu [rsi + 256], ymm4", "vmovdqu [rsi + 320], ymm5", "vmovdqu [rsi + 384], ymm6", "vmovdqu [rsi + 448], ymm7", "vmovdqu [rsi + 512], ymm8", "vmovdqu [rsi + 576], ymm9", "vmovdqu [rsi + 640], ymm10", "vmovdqu [rsi + 704], ymm11", "vmovdqu [rsi + 768], ymm12", "vmovdqu [rsi + 832], ymm13", "vmovdqu [rsi + 896], ymm14", "vmovdqu [rsi + 960], ymm15"]
);

trampoline!(
    /// The AVX-512 trampoline with 16-bit opmask moves (`kmovw`: AVX512F without AVX512BW).
    ///
    /// # Safety
    /// As [`run_vector`] with AVX-512 enabled.
    run_avx512f, ["vmovdqu64 zmm0, [rsi + 0]", "vmovdqu64 zmm1, [rsi + 64]", "vmovdqu64 zmm2, [rsi + 128]", "vmovdqu64 zmm3, [rsi + 192]", "vmovdqu64 zmm4, [rsi + 256]", "vmovdqu64 zmm5, [rsi + 320]", "vmovdqu64 zmm6, [rsi + 384]", "vmovdqu64 zmm7, [rsi + 448]", "vmovdqu64 zmm8, [rsi + 512]", "vmovdqu64 zmm9, [rsi + 576]", "vmovdqu64 zmm10, [rsi + 640]", "vmovdqu64 zmm11, [rsi + 704]", "vmovdqu64 zmm12, [rsi + 768]", "vmovdqu64 zmm13, [rsi + 832]", "vmovdqu64 zmm14, [rsi + 896]", "vmovdqu64 zmm15, [rsi + 960]", "vmovdqu64 zmm16, [rsi + 1024]", "vmovdqu64 zmm17, [rsi + 1088]", "vmovdqu64 zmm18, [rsi + 1152]", "vmovdqu64 zmm19, [rsi + 1216]", "vmovdqu64 zmm20, [rsi + 1280]", "vmovdqu64 zmm21, [rsi + 1344]", "vmovdqu64 zmm22, [rsi + 1408]", "vmovdqu64 zmm23, [rsi + 1472]", "vmovdqu64 zmm24, [rsi + 1536]", "vmovdqu64 zmm25, [rsi + 1600]", "vmovdqu64 zmm26, [rsi + 1664]", "vmovdqu64 zmm27, [rsi + 1728]", "vmovdqu64 zmm28, [rsi + 1792]", "vmovdqu64 zmm29, [rsi + 1856]", "vmovdqu64 zmm30, [rsi + 1920]", "vmovdqu64 zmm31, [rsi + 1984]", "kmovw k0, [rsi + 2048]", "kmovw k1, [rsi + 2056]", "kmovw k2, [rsi + 2064]", "kmovw k3, [rsi + 2072]", "kmovw k4, [rsi + 2080]", "kmovw k5, [rsi + 2088]", "kmovw k6, [rsi + 2096]", "kmovw k7, [rsi + 2104]"], ["vmovdqu64 [rsi + 0], zmm0", "vmovdqu64 [rsi + 64], zmm1", "vmovdqu64 [rsi + 128], zmm2", "vmovdqu64 [rsi + 192], zmm3", "vmovdqu64 [rsi + 256], zmm4", "vmovdqu64 [rsi + 320], zmm5", "vmovdqu64 [rsi + 384], zmm6", "vmovdqu64 [rsi + 448], zmm7", "vmovdqu64 [rsi + 512], zmm8", "vmovdqu64 [rsi + 576], zmm9", "vmovdqu64 [rsi + 640], zmm10", "vmovdqu64 [rsi + 704], zmm11", "vmovdqu64 [rsi + 768], zmm12", "vmovdqu64 [rsi + 832], zmm13", "vmovdqu64 [rsi + 896], zmm14", "vmovdqu64 [rsi + 960], zmm15", "vmovdqu64 [rsi + 1024], zmm16", "vmovdqu64 [rsi + 1088], zmm17", "vmovdqu64 [rsi + 1152], zmm18", "vmovdqu64 [rsi + 1216], zmm19", "vmovdqu64 [rsi + 1280], zmm20", "vmovdqu64 [rsi + 1344], zmm21", "vmovdqu64 [rsi + 1408], zmm22", "vmovdqu64 [rsi + 1472], zmm23", "vmovdqu64 [rsi + 1536], zmm24", "vmovdqu64 [rsi + 1600], zmm25", "vmovdqu64 [rsi + 1664], zmm26", "vmovdqu64 [rsi + 1728], zmm27", "vmovdqu64 [rsi + 1792], zmm28", "vmovdqu64 [rsi + 1856], zmm29", "vmovdqu64 [rsi + 1920], zmm30", "vmovdqu64 [rsi + 1984], zmm31", "kmovw [rsi + 2048], k0", "kmovw [rsi + 2056], k1", "kmovw [rsi + 2064], k2", "kmovw [rsi + 2072], k3", "kmovw [rsi + 2080], k4", "kmovw [rsi + 2088], k5", "kmovw [rsi + 2096], k6", "kmovw [rsi + 2104], k7"]
);

trampoline!(
    /// The AVX-512 trampoline with 64-bit opmask moves (`kmovq`: AVX512BW).
    ///
    /// # Safety
    /// As [`run_vector`] with AVX-512 enabled and AVX512BW.
    run_avx512bw, ["vmovdqu64 zmm0, [rsi + 0]", "vmovdqu64 zmm1, [rsi + 64]", "vmovdqu64 zmm2, [rsi + 128]", "vmovdqu64 zmm3, [rsi + 192]", "vmovdqu64 zmm4, [rsi + 256]", "vmovdqu64 zmm5, [rsi + 320]", "vmovdqu64 zmm6, [rsi + 384]", "vmovdqu64 zmm7, [rsi + 448]", "vmovdqu64 zmm8, [rsi + 512]", "vmovdqu64 zmm9, [rsi + 576]", "vmovdqu64 zmm10, [rsi + 640]", "vmovdqu64 zmm11, [rsi + 704]", "vmovdqu64 zmm12, [rsi + 768]", "vmovdqu64 zmm13, [rsi + 832]", "vmovdqu64 zmm14, [rsi + 896]", "vmovdqu64 zmm15, [rsi + 960]", "vmovdqu64 zmm16, [rsi + 1024]", "vmovdqu64 zmm17, [rsi + 1088]", "vmovdqu64 zmm18, [rsi + 1152]", "vmovdqu64 zmm19, [rsi + 1216]", "vmovdqu64 zmm20, [rsi + 1280]", "vmovdqu64 zmm21, [rsi + 1344]", "vmovdqu64 zmm22, [rsi + 1408]", "vmovdqu64 zmm23, [rsi + 1472]", "vmovdqu64 zmm24, [rsi + 1536]", "vmovdqu64 zmm25, [rsi + 1600]", "vmovdqu64 zmm26, [rsi + 1664]", "vmovdqu64 zmm27, [rsi + 1728]", "vmovdqu64 zmm28, [rsi + 1792]", "vmovdqu64 zmm29, [rsi + 1856]", "vmovdqu64 zmm30, [rsi + 1920]", "vmovdqu64 zmm31, [rsi + 1984]", "kmovq k0, [rsi + 2048]", "kmovq k1, [rsi + 2056]", "kmovq k2, [rsi + 2064]", "kmovq k3, [rsi + 2072]", "kmovq k4, [rsi + 2080]", "kmovq k5, [rsi + 2088]", "kmovq k6, [rsi + 2096]", "kmovq k7, [rsi + 2104]"], ["vmovdqu64 [rsi + 0], zmm0", "vmovdqu64 [rsi + 64], zmm1", "vmovdqu64 [rsi + 128], zmm2", "vmovdqu64 [rsi + 192], zmm3", "vmovdqu64 [rsi + 256], zmm4", "vmovdqu64 [rsi + 320], zmm5", "vmovdqu64 [rsi + 384], zmm6", "vmovdqu64 [rsi + 448], zmm7", "vmovdqu64 [rsi + 512], zmm8", "vmovdqu64 [rsi + 576], zmm9", "vmovdqu64 [rsi + 640], zmm10", "vmovdqu64 [rsi + 704], zmm11", "vmovdqu64 [rsi + 768], zmm12", "vmovdqu64 [rsi + 832], zmm13", "vmovdqu64 [rsi + 896], zmm14", "vmovdqu64 [rsi + 960], zmm15", "vmovdqu64 [rsi + 1024], zmm16", "vmovdqu64 [rsi + 1088], zmm17", "vmovdqu64 [rsi + 1152], zmm18", "vmovdqu64 [rsi + 1216], zmm19", "vmovdqu64 [rsi + 1280], zmm20", "vmovdqu64 [rsi + 1344], zmm21", "vmovdqu64 [rsi + 1408], zmm22", "vmovdqu64 [rsi + 1472], zmm23", "vmovdqu64 [rsi + 1536], zmm24", "vmovdqu64 [rsi + 1600], zmm25", "vmovdqu64 [rsi + 1664], zmm26", "vmovdqu64 [rsi + 1728], zmm27", "vmovdqu64 [rsi + 1792], zmm28", "vmovdqu64 [rsi + 1856], zmm29", "vmovdqu64 [rsi + 1920], zmm30", "vmovdqu64 [rsi + 1984], zmm31", "kmovq [rsi + 2048], k0", "kmovq [rsi + 2056], k1", "kmovq [rsi + 2064], k2", "kmovq [rsi + 2072], k3", "kmovq [rsi + 2080], k4", "kmovq [rsi + 2088], k5", "kmovq [rsi + 2096], k6", "kmovq [rsi + 2104], k7"]
);

/// What a vector host execution found.
///
/// # Examples
///
/// 1.0 / 0.0 with the zero-divide exception unmasked:
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::{
///     VectorOutcome, execute_vector, vector_register_form, vector_supported,
/// };
/// use of_core::RegisterFile;
///
/// if !vector_supported() {
///     return;
/// }
/// let mut m = RegisterFile::default();
/// m.xmm[0] = u128::from(1.0f32.to_bits());
/// m.mxcsr = 0x1F80 & !(1 << 9); // ZM (bit 9) clear: #XM on division by zero
/// // divss xmm0, dword ptr [0x110] (f3 0f 5e 04 25 10 01 00 00)
/// let bytes = [0xF3, 0x0F, 0x5E, 0x04, 0x25, 0x10, 0x01, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let v = vector_register_form(&instr, &bytes, &offsets).unwrap();
/// let mut operand = [0u8; 64]; // 0.0
/// let r = execute_vector(&mut m, &v, &mut operand).unwrap();
/// // ZE (bit 2) is a pre-computation exception; nothing was written.
/// assert_eq!(
///     r,
///     VectorOutcome::Unmasked { mxcsr: (0x1F80 & !(1 << 9)) | (1 << 2), before_computation: true }
/// );
/// assert_eq!(m.xmm[0], u128::from(1.0f32.to_bits()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorOutcome {
    /// Done; the Machine is updated.
    Done,
    /// The instruction raises a SIMD floating-point exception that the guest's MXCSR leaves
    /// unmasked (#XM); nothing was changed.
    Unmasked {
        /// MXCSR as the CPU leaves it when it raises #XM (the detected exception flags set).
        mxcsr: u32,
        /// Whether it is a pre-computation exception (IE, DE, ZE: Intel SDM Vol. 1 §11.5.1),
        /// detected before any result is computed.
        before_computation: bool,
    },
}

/// Runs a vector register form with `operand` (up to 64 bytes, zero-extended) in the scratch
/// vector register, and writes back GPRs, status flags, the vector registers (xmm/ymm, and
/// zmm0..zmm31 with k0..k7 where AVX-512 is enabled) and MXCSR flags. On return `operand`
/// holds the scratch register's final contents (the result of a form whose memory operand is
/// the destination).
///
/// Where AVX-512 is enabled every vector form runs with the whole zmm and opmask state loaded,
/// so VEX forms zero their destination's bits above the operation width up to bit 511 and
/// legacy-SSE forms keep them, as they do on the thread (Intel SDM Vol. 1 §15.5).
///
/// SIMD floating-point exceptions (Intel SDM Vol. 1 §11.5.1): the instruction runs with every
/// exception masked and the flags cleared, so the flags it detects are known. If one of them is
/// unmasked in the guest's MXCSR, the real instruction would have raised #XM without writing
/// its destination: then nothing changes and [`VectorOutcome::Unmasked`] carries the MXCSR the
/// CPU would leave (the detected flags set: the pre-computation ones IE DE ZE alone when one
/// of those is unmasked, else all). An unmasked underflow is also signalled for tiny *exact*
/// results, which a masked run does not flag: when the guest unmasks underflow, a second run
/// with FTZ set finds them. Known limit: alongside an unmasked overflow or underflow the CPU
/// sets PE only if the exponent-unbounded result is inexact, while masked runs always flag it
/// for those elements.
///
/// # Errors
/// [`EmulationError::Unsupported`] if no code slot is available or AVX is not enabled.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::{
///     VectorOutcome, execute_vector, vector_register_form, vector_supported,
/// };
/// use of_core::RegisterFile;
///
/// if !vector_supported() {
///     return;
/// }
/// let lanes = |v: [f32; 4]| -> u128 {
///     v.iter().enumerate().map(|(i, x)| u128::from(x.to_bits()) << (32 * i)).sum()
/// };
/// let mut m = RegisterFile::default();
/// m.xmm[1] = lanes([1.0, 2.0, 3.0, 4.0]);
/// // addps xmm1, xmmword ptr [0x100] (0f 58 0c 25 00 01 00 00)
/// let bytes = [0x0F, 0x58, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let v = vector_register_form(&instr, &bytes, &offsets).unwrap();
/// let mut operand = [0u8; 64];
/// operand[..16].copy_from_slice(&lanes([10.0, 20.0, 30.0, 40.0]).to_le_bytes());
/// assert_eq!(execute_vector(&mut m, &v, &mut operand), Ok(VectorOutcome::Done));
/// assert_eq!(m.xmm[1], lanes([11.0, 22.0, 33.0, 44.0])); // exact sums
/// assert_eq!(m.mxcsr & 0x3F, 0); // no exception flag
/// ```
pub fn execute_vector<M: Machine + ?Sized>(
    m: &mut M,
    vform: &VectorForm,
    operand: &mut [u8; 64],
) -> Result<VectorOutcome, EmulationError> {
    let form = &vform.form;
    if !vector_supported() {
        return Err(EmulationError::Unsupported(
            "vector host execution needs AVX",
        ));
    }
    let w = width();
    if vform.evex && w == Width::Avx {
        return Err(EmulationError::Unsupported(
            "the host CPU does not implement this instruction",
        ));
    }
    let nregs = if w == Width::Avx { 16 } else { 32 };
    let slot = Slot::claim().ok_or(EmulationError::Unsupported(
        "no executable memory for host execution",
    ))?;
    let bytes = form.bytes();
    // SAFETY: the slot is ours until `slot` drops and is SLOT_SIZE >= 17 bytes long.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), slot.ptr, bytes.len()) };
    let mut regs = HostRegs {
        gpr: [0; 16],
        rflags: (m.rflags() & (STATUS_FLAGS | DF)) | 2,
        code: slot.ptr as u64,
    };
    for (i, g) in regs.gpr.iter_mut().enumerate() {
        *g = m.gpr(i);
    }
    let guest_mxcsr = m.mxcsr();
    // Every exception masked (and the flags cleared, so the run's flags are its own), except
    // that an instruction that never signals underflow keeps the guest's underflow mask.
    let um = if vform.never_underflows {
        guest_mxcsr & MXCSR_UM
    } else {
        MXCSR_UM
    };
    let mut v = VectorRegs {
        zmm: [[0; 64]; 32],
        k: [0; 8],
        mxcsr: (guest_mxcsr & !0x3F & !MXCSR_UM) | (0x1F80 & !MXCSR_UM) | um,
        host_mxcsr: 0,
    };
    for (i, z) in v.zmm.iter_mut().enumerate().take(nregs) {
        *z = read_zmm(m, i);
    }
    if w != Width::Avx {
        for (i, k) in v.k.iter_mut().enumerate() {
            *k = m.opmask(i);
        }
    }
    if vform.scratch_gpr {
        let mut q = [0u8; 8];
        q.copy_from_slice(&operand[..8]);
        regs.gpr[form.scratch] = u64::from_le_bytes(q);
    } else {
        v.zmm[form.scratch] = *operand;
    }
    let enabled = !(guest_mxcsr >> 7) & 0x3F;
    // An unmasked underflow is signalled for every tiny result, a masked one only for tiny
    // inexact results (Intel SDM Vol. 1 §11.5.2.4). With FTZ set and underflow masked, every
    // tiny result sets UE: a second run in that mode finds what the unmasked run would.
    let tiny = if enabled & 0x10 != 0 && !vform.never_underflows {
        let mut regs2 = regs;
        let mut v2 = v;
        v2.mxcsr |= 1 << 15;
        // SAFETY: as below.
        unsafe { run_vector(&mut regs2, &mut v2, w) };
        v2.mxcsr & 0x10
    } else {
        0
    };
    // SAFETY: a verified register form of a whitelisted vector instruction followed by `ret`;
    // the state `w` names is enabled; all SIMD exceptions are masked while it runs.
    unsafe { run_vector(&mut regs, &mut v, w) };
    drop(slot);
    if vform.scratch_gpr {
        *operand = [0; 64];
        operand[..8].copy_from_slice(&regs.gpr[form.scratch].to_le_bytes());
    } else {
        *operand = v.zmm[form.scratch];
    }
    let raised = v.mxcsr & 0x3F;
    let pre = raised & 0x07; // IE DE ZE: detected before the computation
    let signalled = if pre & enabled != 0 {
        pre
    } else if (raised | tiny) & enabled != 0 {
        raised | tiny
    } else {
        0
    };
    if signalled != 0 {
        return Ok(VectorOutcome::Unmasked {
            mxcsr: guest_mxcsr | signalled,
            before_computation: signalled == pre,
        });
    }
    for i in 0..16 {
        if i == 4 || (vform.scratch_gpr && i == form.scratch) {
            continue;
        }
        if regs.gpr[i] != m.gpr(i) {
            m.set_gpr(i, regs.gpr[i]);
        }
    }
    let old = m.rflags();
    m.set_rflags((old & !STATUS_FLAGS) | (regs.rflags & STATUS_FLAGS));
    for (i, z) in v.zmm.iter().enumerate().take(nregs) {
        if i == form.scratch && !vform.scratch_gpr {
            continue;
        }
        write_zmm(m, i, z);
    }
    if w != Width::Avx {
        for (i, &k) in v.k.iter().enumerate() {
            // Without AVX512BW only the low 16 bits were loaded and stored (kmovw zero-extends).
            let k = if w == Width::Avx512F { k & 0xFFFF } else { k };
            if k != m.opmask(i) {
                m.set_opmask(i, k);
            }
        }
    }
    if raised & !guest_mxcsr != 0 {
        m.set_mxcsr(guest_mxcsr | raised);
    }
    Ok(VectorOutcome::Done)
}
