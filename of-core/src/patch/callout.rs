//! Generated code for sites that touch a trapped region ([`crate::region`]): the *call-out*.
//!
//! A page-0 site is patched into code that runs the same instruction on a stack copy of the
//! registers ([`super::plan`]); a region site cannot be (its bytes live in a device), so its
//! jump leads to a stub that saves the whole user-visible state, calls the engine in ordinary
//! code (no fault, no signal frame) to emulate the instruction against that state — its device
//! accesses become direct calls of the device's functions on this thread, under the bus — and
//! restores the state, updated:
//!
//! ```text
//! stub:     lea  rsp, [rsp - 128]        ; below the red zone
//!           push qword ptr [rip + rec]   ; the site's Record (becomes the continuation slot)
//!           jmp  qword ptr [rip + entry] ; the shared entry for this CPU's vector state
//! fallback: <the original instruction>   ; run when the engine declines (it faults as before)
//!           jmp  <the next instruction>
//! rec:      dq   &Record
//! entry:    dq   entry_sse | entry_avx | entry_avx512f | entry_avx512bw
//!
//! entry:    pushfq; cld; push r15 … push rax      ; the Frame (rsp's slot is a placeholder)
//!           save xmm/ymm/zmm 0..16 or 0..32, k0..8, MXCSR (64-byte aligned area)
//!           call callout(frame, area, kind)       ; emulates; sets the continuation slot
//!           restore them (MXCSR only if changed); flags from Frame.rflags (std, add, sahf)
//!           pop rax … r15; skip the rflags slot
//!           ret 128                               ; to the continuation, rsp back in place
//! ```
//!
//! Everything the System V ABI lets a called function change is saved: the general-purpose
//! registers, rflags (DF is cleared for the call, as the ABI requires, and restored), every
//! vector register and opmask the CPU has, and MXCSR. Costs measured on an AMD EPYC with
//! AVX-512 (`examples/region_bench.rs`): `xsave`/`xrstor` ~170 ns, so explicit moves (the 32
//! zmm registers ~35 ns a call, the largest part of a patched access); `ldmxcsr` ~15 ns, so
//! MXCSR is reloaded only when the call changed it; `popfq` is microcoded, so the status flags
//! come back with `sahf` and an `add` for OF (CPUs without LAHF/SAHF in 64-bit mode keep the
//! fault path). Not saved: the x87 register stack (device code that uses x87 while the
//! interrupted code has x87 values live would disturb them) — see the README.
//!
//! Plain moves (`mov`/`movzx`/`movsx` between a register or immediate and a region, the usual
//! device-register access; [`plain_move`]) skip the engine's classification and ownership
//! checks: once the effective address is in a region, the engine's `mov` alone runs.
//!
//! The instruction is emulated with no fault address: if at this execution it touches neither
//! a region nor the map (its pointer now points at ordinary memory), or the engine declines or
//! would raise an exception, the state is left as it was and the stub runs the original
//! instruction, which then takes the fault path (or simply runs, on ordinary memory).

use crate::machine::{Machine, MemoryFault};
use alloc::vec::Vec;
use iced_x86::{Code, ConstantOffsets, Encoder, Instruction, MemoryOperand, Mnemonic, Register};

/// The general-purpose registers and rflags as the entry pushed them, and the slot the stub
/// pushed (the [`Record`] on entry, the continuation on return).
#[repr(C)]
pub struct Frame {
    /// rax … r15 in encoding order; `gpr[4]` (rsp) is a placeholder on entry.
    pub gpr: [u64; 16],
    /// rflags of the interrupted code.
    pub rflags: u64,
    /// The site's [`Record`] on entry; where to continue on return.
    pub slot: u64,
}

/// The interrupted code's vector state, saved by the entry (64-byte aligned).
#[repr(C, align(64))]
pub struct VectorArea {
    /// zmm0..32 (or their low 16/32 bytes: xmm, ymm), 64 bytes each.
    pub z: [[u8; 64]; 32],
    /// k0..8 (16 bits each without AVX512BW).
    pub k: [u64; 8],
    /// MXCSR.
    pub mxcsr: u32,
    _pad: [u32; 15],
}

const _: () = assert!(core::mem::size_of::<Frame>() == 18 * 8);
const _: () = assert!(core::mem::offset_of!(VectorArea, k) == 2048);
const _: () = assert!(core::mem::offset_of!(VectorArea, mxcsr) == 2112);
/// Bytes reserved below the Frame for the area (alignment slack included).
const AREA: usize = core::mem::size_of::<VectorArea>() + 64;

/// Which vector state an entry saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Saved {
    /// xmm0..16.
    Sse = 0,
    /// ymm0..16.
    Avx = 1,
    /// zmm0..32 and k0..8 (16-bit).
    Avx512F = 2,
    /// zmm0..32 and k0..8 (64-bit).
    Avx512Bw = 3,
}

/// Whether `instr` is a plain move between a general-purpose register (or an immediate) and
/// memory — `mov`, `movzx`, `movsx`, `movsxd`, the usual device-register access — which the
/// call-out does with the engine's `mov` alone when its operand lies in a region, without
/// classifying it or checking ownership again.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::patch::callout::plain_move;
///
/// // movzx eax, byte ptr [0x4000_0005]
/// let (i, _) = decode(&[0x0F, 0xB6, 0x04, 0x25, 0x05, 0x00, 0x00, 0x40], 0).unwrap();
/// assert!(plain_move(&i));
/// // add dword ptr [0x4000_0000], 1: the whole engine's
/// let (i, _) = decode(&[0x83, 0x04, 0x25, 0x00, 0x00, 0x00, 0x40, 0x01], 0).unwrap();
/// assert!(!plain_move(&i));
/// ```
pub fn plain_move(instr: &Instruction) -> bool {
    use iced_x86::OpKind;
    let Some(mem) = crate::emulate::operands::memory_operand(instr) else {
        return false;
    };
    let other = 1 - mem.min(1);
    matches!(
        instr.mnemonic(),
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd
    ) && instr.op_count() == 2
        && matches!(instr.memory_size().size(), 1 | 2 | 4 | 8)
        && match instr.op_kind(other) {
            OpKind::Register => instr.op_register(other).is_gpr(),
            // mov m, imm (a load's other operand is always its register).
            _ => mem == 0,
        }
}

/// What the stub of one site hands the engine (leaked: a patched site is never unpatched).
pub struct Record {
    /// The site's instruction, decoded at its address.
    pub instr: Instruction,
    /// Its bytes.
    pub bytes: [u8; 16],
    /// Its field offsets (for the engine's host execution).
    pub offsets: ConstantOffsets,
    /// The stub's fallback: the original instruction, then a jump to the next one.
    pub fallback: core::sync::atomic::AtomicU64,
    /// Whether it is a [`plain_move`].
    pub plain_move: bool,
}

/// The vector state this CPU has: what XCR0 itself enables, not what `OF_CPU_HIDE` makes
/// `of` emulate (what device code may change is what the hardware has).
pub fn saved_state() -> Saved {
    let xcr0 = crate::cpu::hardware_xcr0();
    // XCR0 bits 1, 2: SSE and AVX state; 5, 6, 7: opmask, ZMM_Hi256, Hi16_ZMM (only settable
    // on a CPU with AVX512F).
    if xcr0 & 0xE6 == 0xE6 {
        // CPUID.(EAX=7,ECX=0):EBX bit 30, AVX512BW: 64-bit opmasks (leaf 7 exists on any CPU
        // with AVX-512).
        if (core::arch::x86_64::__cpuid_count(7, 0).ebx >> 30) & 1 == 1 {
            Saved::Avx512Bw
        } else {
            Saved::Avx512F
        }
    } else if xcr0 & 0b110 == 0b110 {
        Saved::Avx
    } else {
        Saved::Sse
    }
}

macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, $kind:expr, [$($save:literal),*], [$($restore:literal),*]) => {
        $(#[$doc])*
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            core::arch::naked_asm!(
                // On entry (from a stub): [rsp] = &Record, above it the 128 bytes of red zone
                // the stub stepped over, then the interrupted code's stack.
                "pushfq",               // Frame.rflags
                "cld",                  // the ABI's DF = 0 for the call (restored by popfq)
                "push r15",             // Frame.gpr[15] … gpr[0]
                "push r14",
                "push r13",
                "push r12",
                "push r11",
                "push r10",
                "push r9",
                "push r8",
                "push rdi",
                "push rsi",
                "push rbp",
                "push rsp",             // a placeholder: the callout computes rsp
                "push rbx",
                "push rdx",
                "push rcx",
                "push rax",             // rsp = the Frame
                "mov rbx, rsp",         // rbx (saved above, callee-saved) = the Frame
                "sub rsp, {area}",      // room for the VectorArea …
                "and rsp, -64",         // … 64-byte aligned: rsp = the VectorArea
                $($save,)*              // the vector registers (and opmasks) into it
                "stmxcsr [rsp + 2112]", // VectorArea.mxcsr
                "mov rdi, rbx",         // callout(frame,
                "mov rsi, rsp",         //         area,
                "mov edx, {kind}",      //         kind): rsp is 64-byte aligned, as calls need
                "call {callout}",
                $($restore,)*           // the vector registers back (perhaps changed)
                "stmxcsr [rsp + 2116]", // MXCSR now: reloaded only if the call changed it
                "mov eax, [rsp + 2116]", // (ldmxcsr is slow; rax is restored below)
                "cmp eax, [rsp + 2112]",
                "je 2f",
                "ldmxcsr [rsp + 2112]",
                "2:",
                "mov rsp, rbx",         // rsp = the Frame
                // rflags from Frame.rflags without popfq (microcoded, slow): DF by std, OF by
                // an add, SF ZF AF PF CF by sahf; no other flag changes here.
                "mov rax, [rsp + 128]", // rax = the new rflags (rax itself is popped below)
                "bt eax, 10",           // CF = DF
                "jnc 3f",
                "std",
                "3:",
                "mov ecx, eax",
                "shr ecx, 11",
                "and ecx, 1",           // cl = OF
                "add cl, 0x7f",         // OF = (cl == 1): 0x80 overflows, 0x7f does not
                "mov ah, al",           // ah = SF ZF AF PF CF (bits 7 6 4 2 0)
                "sahf",                 // … into the flags; OF and DF stay
                "pop rax",
                "pop rcx",
                "pop rdx",
                "pop rbx",
                "lea rsp, [rsp + 8]",   // skip the rsp placeholder (lea: no flags)
                "pop rbp",
                "pop rsi",
                "pop rdi",
                "pop r8",
                "pop r9",
                "pop r10",
                "pop r11",
                "pop r12",
                "pop r13",
                "pop r14",
                "pop r15",
                "lea rsp, [rsp + 8]",   // Frame.rflags, restored above (lea: no flags)
                "ret 128",              // to Frame.slot, then rsp += 128: the original rsp
                area = const AREA,
                kind = const $kind as u32,
                callout = sym callout,
            )
        }
    };
}

entry!(
    /// The entry on CPUs with SSE state only.
    entry_sse, Saved::Sse, ["movdqa [rsp + 0], xmm0", "movdqa [rsp + 64], xmm1", "movdqa [rsp + 128], xmm2", "movdqa [rsp + 192], xmm3", "movdqa [rsp + 256], xmm4", "movdqa [rsp + 320], xmm5", "movdqa [rsp + 384], xmm6", "movdqa [rsp + 448], xmm7", "movdqa [rsp + 512], xmm8", "movdqa [rsp + 576], xmm9", "movdqa [rsp + 640], xmm10", "movdqa [rsp + 704], xmm11", "movdqa [rsp + 768], xmm12", "movdqa [rsp + 832], xmm13", "movdqa [rsp + 896], xmm14", "movdqa [rsp + 960], xmm15"], ["movdqa xmm0, [rsp + 0]", "movdqa xmm1, [rsp + 64]", "movdqa xmm2, [rsp + 128]", "movdqa xmm3, [rsp + 192]", "movdqa xmm4, [rsp + 256]", "movdqa xmm5, [rsp + 320]", "movdqa xmm6, [rsp + 384]", "movdqa xmm7, [rsp + 448]", "movdqa xmm8, [rsp + 512]", "movdqa xmm9, [rsp + 576]", "movdqa xmm10, [rsp + 640]", "movdqa xmm11, [rsp + 704]", "movdqa xmm12, [rsp + 768]", "movdqa xmm13, [rsp + 832]", "movdqa xmm14, [rsp + 896]", "movdqa xmm15, [rsp + 960]"]
);
entry!(
    /// The entry on CPUs with AVX (ymm) state.
    entry_avx, Saved::Avx, ["vmovdqa [rsp + 0], ymm0", "vmovdqa [rsp + 64], ymm1", "vmovdqa [rsp + 128], ymm2", "vmovdqa [rsp + 192], ymm3", "vmovdqa [rsp + 256], ymm4", "vmovdqa [rsp + 320], ymm5", "vmovdqa [rsp + 384], ymm6", "vmovdqa [rsp + 448], ymm7", "vmovdqa [rsp + 512], ymm8", "vmovdqa [rsp + 576], ymm9", "vmovdqa [rsp + 640], ymm10", "vmovdqa [rsp + 704], ymm11", "vmovdqa [rsp + 768], ymm12", "vmovdqa [rsp + 832], ymm13", "vmovdqa [rsp + 896], ymm14", "vmovdqa [rsp + 960], ymm15"], ["vmovdqa ymm0, [rsp + 0]", "vmovdqa ymm1, [rsp + 64]", "vmovdqa ymm2, [rsp + 128]", "vmovdqa ymm3, [rsp + 192]", "vmovdqa ymm4, [rsp + 256]", "vmovdqa ymm5, [rsp + 320]", "vmovdqa ymm6, [rsp + 384]", "vmovdqa ymm7, [rsp + 448]", "vmovdqa ymm8, [rsp + 512]", "vmovdqa ymm9, [rsp + 576]", "vmovdqa ymm10, [rsp + 640]", "vmovdqa ymm11, [rsp + 704]", "vmovdqa ymm12, [rsp + 768]", "vmovdqa ymm13, [rsp + 832]", "vmovdqa ymm14, [rsp + 896]", "vmovdqa ymm15, [rsp + 960]"]
);
entry!(
    /// The entry on CPUs with AVX-512 state, 16-bit opmasks (no AVX512BW).
    entry_avx512f, Saved::Avx512F, ["vmovdqa64 [rsp + 0], zmm0", "vmovdqa64 [rsp + 64], zmm1", "vmovdqa64 [rsp + 128], zmm2", "vmovdqa64 [rsp + 192], zmm3", "vmovdqa64 [rsp + 256], zmm4", "vmovdqa64 [rsp + 320], zmm5", "vmovdqa64 [rsp + 384], zmm6", "vmovdqa64 [rsp + 448], zmm7", "vmovdqa64 [rsp + 512], zmm8", "vmovdqa64 [rsp + 576], zmm9", "vmovdqa64 [rsp + 640], zmm10", "vmovdqa64 [rsp + 704], zmm11", "vmovdqa64 [rsp + 768], zmm12", "vmovdqa64 [rsp + 832], zmm13", "vmovdqa64 [rsp + 896], zmm14", "vmovdqa64 [rsp + 960], zmm15", "vmovdqa64 [rsp + 1024], zmm16", "vmovdqa64 [rsp + 1088], zmm17", "vmovdqa64 [rsp + 1152], zmm18", "vmovdqa64 [rsp + 1216], zmm19", "vmovdqa64 [rsp + 1280], zmm20", "vmovdqa64 [rsp + 1344], zmm21", "vmovdqa64 [rsp + 1408], zmm22", "vmovdqa64 [rsp + 1472], zmm23", "vmovdqa64 [rsp + 1536], zmm24", "vmovdqa64 [rsp + 1600], zmm25", "vmovdqa64 [rsp + 1664], zmm26", "vmovdqa64 [rsp + 1728], zmm27", "vmovdqa64 [rsp + 1792], zmm28", "vmovdqa64 [rsp + 1856], zmm29", "vmovdqa64 [rsp + 1920], zmm30", "vmovdqa64 [rsp + 1984], zmm31", "kmovw [rsp + 2048], k0", "kmovw [rsp + 2056], k1", "kmovw [rsp + 2064], k2", "kmovw [rsp + 2072], k3", "kmovw [rsp + 2080], k4", "kmovw [rsp + 2088], k5", "kmovw [rsp + 2096], k6", "kmovw [rsp + 2104], k7"], ["vmovdqa64 zmm0, [rsp + 0]", "vmovdqa64 zmm1, [rsp + 64]", "vmovdqa64 zmm2, [rsp + 128]", "vmovdqa64 zmm3, [rsp + 192]", "vmovdqa64 zmm4, [rsp + 256]", "vmovdqa64 zmm5, [rsp + 320]", "vmovdqa64 zmm6, [rsp + 384]", "vmovdqa64 zmm7, [rsp + 448]", "vmovdqa64 zmm8, [rsp + 512]", "vmovdqa64 zmm9, [rsp + 576]", "vmovdqa64 zmm10, [rsp + 640]", "vmovdqa64 zmm11, [rsp + 704]", "vmovdqa64 zmm12, [rsp + 768]", "vmovdqa64 zmm13, [rsp + 832]", "vmovdqa64 zmm14, [rsp + 896]", "vmovdqa64 zmm15, [rsp + 960]", "vmovdqa64 zmm16, [rsp + 1024]", "vmovdqa64 zmm17, [rsp + 1088]", "vmovdqa64 zmm18, [rsp + 1152]", "vmovdqa64 zmm19, [rsp + 1216]", "vmovdqa64 zmm20, [rsp + 1280]", "vmovdqa64 zmm21, [rsp + 1344]", "vmovdqa64 zmm22, [rsp + 1408]", "vmovdqa64 zmm23, [rsp + 1472]", "vmovdqa64 zmm24, [rsp + 1536]", "vmovdqa64 zmm25, [rsp + 1600]", "vmovdqa64 zmm26, [rsp + 1664]", "vmovdqa64 zmm27, [rsp + 1728]", "vmovdqa64 zmm28, [rsp + 1792]", "vmovdqa64 zmm29, [rsp + 1856]", "vmovdqa64 zmm30, [rsp + 1920]", "vmovdqa64 zmm31, [rsp + 1984]", "kmovw k0, [rsp + 2048]", "kmovw k1, [rsp + 2056]", "kmovw k2, [rsp + 2064]", "kmovw k3, [rsp + 2072]", "kmovw k4, [rsp + 2080]", "kmovw k5, [rsp + 2088]", "kmovw k6, [rsp + 2096]", "kmovw k7, [rsp + 2104]"]
);
entry!(
    /// The entry on CPUs with AVX-512 state and 64-bit opmasks (AVX512BW).
    entry_avx512bw, Saved::Avx512Bw, ["vmovdqa64 [rsp + 0], zmm0", "vmovdqa64 [rsp + 64], zmm1", "vmovdqa64 [rsp + 128], zmm2", "vmovdqa64 [rsp + 192], zmm3", "vmovdqa64 [rsp + 256], zmm4", "vmovdqa64 [rsp + 320], zmm5", "vmovdqa64 [rsp + 384], zmm6", "vmovdqa64 [rsp + 448], zmm7", "vmovdqa64 [rsp + 512], zmm8", "vmovdqa64 [rsp + 576], zmm9", "vmovdqa64 [rsp + 640], zmm10", "vmovdqa64 [rsp + 704], zmm11", "vmovdqa64 [rsp + 768], zmm12", "vmovdqa64 [rsp + 832], zmm13", "vmovdqa64 [rsp + 896], zmm14", "vmovdqa64 [rsp + 960], zmm15", "vmovdqa64 [rsp + 1024], zmm16", "vmovdqa64 [rsp + 1088], zmm17", "vmovdqa64 [rsp + 1152], zmm18", "vmovdqa64 [rsp + 1216], zmm19", "vmovdqa64 [rsp + 1280], zmm20", "vmovdqa64 [rsp + 1344], zmm21", "vmovdqa64 [rsp + 1408], zmm22", "vmovdqa64 [rsp + 1472], zmm23", "vmovdqa64 [rsp + 1536], zmm24", "vmovdqa64 [rsp + 1600], zmm25", "vmovdqa64 [rsp + 1664], zmm26", "vmovdqa64 [rsp + 1728], zmm27", "vmovdqa64 [rsp + 1792], zmm28", "vmovdqa64 [rsp + 1856], zmm29", "vmovdqa64 [rsp + 1920], zmm30", "vmovdqa64 [rsp + 1984], zmm31", "kmovq [rsp + 2048], k0", "kmovq [rsp + 2056], k1", "kmovq [rsp + 2064], k2", "kmovq [rsp + 2072], k3", "kmovq [rsp + 2080], k4", "kmovq [rsp + 2088], k5", "kmovq [rsp + 2096], k6", "kmovq [rsp + 2104], k7"], ["vmovdqa64 zmm0, [rsp + 0]", "vmovdqa64 zmm1, [rsp + 64]", "vmovdqa64 zmm2, [rsp + 128]", "vmovdqa64 zmm3, [rsp + 192]", "vmovdqa64 zmm4, [rsp + 256]", "vmovdqa64 zmm5, [rsp + 320]", "vmovdqa64 zmm6, [rsp + 384]", "vmovdqa64 zmm7, [rsp + 448]", "vmovdqa64 zmm8, [rsp + 512]", "vmovdqa64 zmm9, [rsp + 576]", "vmovdqa64 zmm10, [rsp + 640]", "vmovdqa64 zmm11, [rsp + 704]", "vmovdqa64 zmm12, [rsp + 768]", "vmovdqa64 zmm13, [rsp + 832]", "vmovdqa64 zmm14, [rsp + 896]", "vmovdqa64 zmm15, [rsp + 960]", "vmovdqa64 zmm16, [rsp + 1024]", "vmovdqa64 zmm17, [rsp + 1088]", "vmovdqa64 zmm18, [rsp + 1152]", "vmovdqa64 zmm19, [rsp + 1216]", "vmovdqa64 zmm20, [rsp + 1280]", "vmovdqa64 zmm21, [rsp + 1344]", "vmovdqa64 zmm22, [rsp + 1408]", "vmovdqa64 zmm23, [rsp + 1472]", "vmovdqa64 zmm24, [rsp + 1536]", "vmovdqa64 zmm25, [rsp + 1600]", "vmovdqa64 zmm26, [rsp + 1664]", "vmovdqa64 zmm27, [rsp + 1728]", "vmovdqa64 zmm28, [rsp + 1792]", "vmovdqa64 zmm29, [rsp + 1856]", "vmovdqa64 zmm30, [rsp + 1920]", "vmovdqa64 zmm31, [rsp + 1984]", "kmovq k0, [rsp + 2048]", "kmovq k1, [rsp + 2056]", "kmovq k2, [rsp + 2064]", "kmovq k3, [rsp + 2072]", "kmovq k4, [rsp + 2080]", "kmovq k5, [rsp + 2088]", "kmovq k6, [rsp + 2096]", "kmovq k7, [rsp + 2104]"]
);

/// The entry for `saved`.
fn entry_of(saved: Saved) -> u64 {
    match saved {
        Saved::Sse => entry_sse as *const () as usize as u64,
        Saved::Avx => entry_avx as *const () as usize as u64,
        Saved::Avx512F => entry_avx512f as *const () as usize as u64,
        Saved::Avx512Bw => entry_avx512bw as *const () as usize as u64,
    }
}

/// The state of the interrupted code, as the entry saved it, seen by the engine.
struct FrameMachine<'a> {
    f: &'a mut Frame,
    v: &'a mut VectorArea,
    saved: Saved,
    rip: u64,
}

impl Machine for FrameMachine<'_> {
    fn gpr(&self, n: usize) -> u64 {
        self.f.gpr[n & 15]
    }
    fn set_gpr(&mut self, n: usize, value: u64) {
        self.f.gpr[n & 15] = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, value: u64) {
        self.rip = value;
    }
    fn rflags(&self) -> u64 {
        self.f.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.f.rflags = value;
    }
    fn fs_base(&self) -> u64 {
        crate::signal::context::segment_base(crate::signal::context::ARCH_GET_FS)
    }
    fn gs_base(&self) -> u64 {
        crate::signal::context::segment_base(crate::signal::context::ARCH_GET_GS)
    }
    fn xmm(&self, n: usize) -> u128 {
        u128::from_le_bytes(self.v.z[n & 15][..16].try_into().unwrap_or([0; 16]))
    }
    fn set_xmm(&mut self, n: usize, value: u128) {
        self.v.z[n & 15][..16].copy_from_slice(&value.to_le_bytes());
    }
    fn ymm_high(&self, n: usize) -> u128 {
        if self.saved == Saved::Sse {
            return 0;
        }
        u128::from_le_bytes(self.v.z[n & 15][16..32].try_into().unwrap_or([0; 16]))
    }
    fn set_ymm_high(&mut self, n: usize, value: u128) {
        if self.saved != Saved::Sse {
            self.v.z[n & 15][16..32].copy_from_slice(&value.to_le_bytes());
        }
    }
    fn zmm_hi256(&self, n: usize) -> [u8; 32] {
        if matches!(self.saved, Saved::Sse | Saved::Avx) {
            return [0; 32];
        }
        self.v.z[n & 15][32..].try_into().unwrap_or([0; 32])
    }
    fn set_zmm_hi256(&mut self, n: usize, value: [u8; 32]) {
        if !matches!(self.saved, Saved::Sse | Saved::Avx) {
            self.v.z[n & 15][32..].copy_from_slice(&value);
        }
    }
    fn hi16_zmm(&self, n: usize) -> [u8; 64] {
        if matches!(self.saved, Saved::Sse | Saved::Avx) {
            return [0; 64];
        }
        self.v.z[16 + (n & 15)]
    }
    fn set_hi16_zmm(&mut self, n: usize, value: [u8; 64]) {
        if !matches!(self.saved, Saved::Sse | Saved::Avx) {
            self.v.z[16 + (n & 15)] = value;
        }
    }
    fn opmask(&self, n: usize) -> u64 {
        match self.saved {
            Saved::Avx512Bw => self.v.k[n & 7],
            Saved::Avx512F => self.v.k[n & 7] & 0xFFFF,
            _ => 0,
        }
    }
    fn set_opmask(&mut self, n: usize, value: u64) {
        match self.saved {
            Saved::Avx512Bw => self.v.k[n & 7] = value,
            Saved::Avx512F => self.v.k[n & 7] = value & 0xFFFF,
            _ => {}
        }
    }
    fn mxcsr(&self) -> u32 {
        self.v.mxcsr
    }
    fn set_mxcsr(&mut self, value: u32) {
        self.v.mxcsr = value & crate::cpu::mxcsr_mask();
    }
    fn trapped(&self, addr: u64, len: u64) -> bool {
        crate::region::find(addr, len).is_some()
    }
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        if let Some((i, off)) = crate::region::find(addr, buf.len() as u64) {
            crate::region::read_direct(i, off, buf);
            return Ok(());
        }
        crate::signal::context::read_memory(addr, buf)
    }
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
        if let Some((i, off)) = crate::region::find(addr, data.len() as u64) {
            crate::region::write_direct(i, off, data);
            return Ok(());
        }
        crate::signal::context::write_memory(addr, data)
    }
}

/// Emulates a region site's instruction for its stub (called by the entries only).
///
/// # Safety
/// `frame` and `area` are the entry's, `frame.slot` a leaked [`Record`].
unsafe extern "C" fn callout(frame: *mut Frame, area: *mut VectorArea, kind: u32) {
    // SAFETY: the entry passes its Frame and VectorArea, which it owns until we return.
    let (f, v) = unsafe { (&mut *frame, &mut *area) };
    // SAFETY: the stub pushed its Record, leaked by the patcher.
    let rec = unsafe { &*(f.slot as *const Record) };
    let saved = match kind {
        0 => Saved::Sse,
        1 => Saved::Avx,
        2 => Saved::Avx512F,
        _ => Saved::Avx512Bw,
    };
    // The interrupted rsp: above the Frame, the 128 bytes the stub stepped over.
    let rsp = frame as u64 + core::mem::size_of::<Frame>() as u64 + 128;
    f.gpr[4] = rsp;
    let len = rec.instr.len();
    let before = (f.gpr, f.rflags);
    let mut m = FrameMachine {
        f,
        v,
        saved,
        rip: rec.instr.ip(),
    };
    let r = if rec.plain_move && fast_move(&mut m, rec) {
        Ok(())
    } else {
        let _bus = crate::region::Bus::take(&rec.bytes[..len]);
        crate::emulate::emulate(&mut m, &rec.instr, &rec.bytes[..len], &rec.offsets, None)
    };
    let next = m.rip;
    // rsp cannot be changed from here (the entry does not pop it): a form that would change
    // it (a page-0 store into rsp's slot, say) takes the fault path instead.
    if r.is_ok() && f.gpr[4] == rsp {
        f.slot = next;
    } else {
        (f.gpr, f.rflags) = before;
        f.slot = rec.fallback.load(core::sync::atomic::Ordering::Relaxed);
    }
}

/// Does a [`plain_move`] whose operand lies entirely in one region, the device called
/// directly, with the engine's pieces for the rest (effective address, store source, sign
/// extension, register write). False, with nothing done, when the operand is elsewhere: then
/// the whole engine decides.
fn fast_move(m: &mut FrameMachine, rec: &Record) -> bool {
    use crate::emulate::{mov, operands};
    let instr = &rec.instr;
    let Some(op) = operands::memory_operand(instr) else {
        return false;
    };
    let Some(ea) = operands::effective_address(m, instr, op) else {
        return false;
    };
    let size = operands::memory_size(instr);
    let Some((index, offset)) = crate::region::find(ea, size) else {
        return false;
    };
    let n = size as usize;
    if op == 0 {
        // A store: the source is a general-purpose register or an immediate.
        let Some(v) = operands::read_plain(m, instr, 1) else {
            return false;
        };
        let _bus = crate::region::Bus::take(&rec.bytes[..instr.len()]);
        crate::region::write_direct(index, offset, &v.to_le_bytes()[..n]);
    } else {
        let mut b = [0u8; 8];
        {
            let _bus = crate::region::Bus::take(&rec.bytes[..instr.len()]);
            crate::region::read_direct(index, offset, &mut b[..n]);
        }
        let raw = u64::from_le_bytes(b);
        let v = match instr.mnemonic() {
            Mnemonic::Movsx | Mnemonic::Movsxd => mov::sign_extend(raw, size),
            _ => raw,
        };
        // A general-purpose destination ([`plain_move`]): the write cannot fail.
        crate::machine::write_reg(m, instr.op0_register(), v);
    }
    m.rip = instr.next_ip();
    true
}

/// Whether a region site's instruction gets a call-out; otherwise why not.
///
/// # Errors
/// A short reason: a control transfer, a stack or string form, an instruction naming rsp, or
/// one that may raise an exception after its device access (`div`). (A site shorter than a
/// `jmp rel32` is reached through a pun, [`super::pun`].)
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::patch::callout::plan;
///
/// let p = |bytes: &[u8]| plan(&decode(bytes, 0).unwrap().0);
/// // movzx eax, byte ptr [0x4000_0005]: an absolute device register.
/// assert!(p(&[0x0F, 0xB6, 0x04, 0x25, 0x05, 0x00, 0x00, 0x40]).is_ok());
/// // mov byte ptr [rdi], al: a pointer-based device register (two bytes: punned).
/// assert!(p(&[0x88, 0x07]).is_ok());
/// // push qword ptr [rdi]: a stack form.
/// assert!(p(&[0xFF, 0x37]).is_err());
/// ```
pub fn plan(instr: &Instruction) -> Result<(), &'static str> {
    use crate::emulate::table::{Kind, classify};
    use Mnemonic as M;
    // CPUID.80000001H:ECX.LAHF-SAHF: the entries restore the status flags with sahf.
    if crate::cpu::get().ext1_ecx & 1 == 0 {
        return Err("no LAHF/SAHF in 64-bit mode on this CPU");
    }
    if !matches!(classify(instr), Kind::Host { .. } | Kind::Move) {
        return Err("not a plain register or vector access (stack, string, branch or refused)");
    }
    if matches!(
        instr.mnemonic(),
        M::Div | M::Idiv | M::Lar | M::Lsl | M::Verr | M::Verw | M::Xlatb
    ) {
        return Err("may raise an exception after its device access");
    }
    if instr.is_stack_instruction() || instr.is_string_instruction() {
        return Err("a stack or string form");
    }
    let mut info = iced_x86::InstructionInfoFactory::new();
    if info.info(instr).used_registers().iter().any(|u| {
        matches!(u.register().full_register(), Register::RSP | Register::RIP)
            && u.register() != Register::RIP
    }) {
        return Err("names the stack pointer");
    }
    if instr.memory_base() == Register::RSP || instr.memory_index() == Register::RSP {
        return Err("names the stack pointer");
    }
    Ok(())
}

/// Bytes of a stub before its fallback: `lea rsp, [rsp - 128]` (5), `push [rip + rec]` (6),
/// `jmp [rip + entry]` (6).
const HEAD: u64 = 17;

/// Encodes the stub of the module docs for `instr` at `at`, with `record` and the entry for
/// `saved`.
///
/// # Errors
/// When iced-x86 cannot encode a piece (the fallback's rip-relative operand out of reach).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::patch::callout::{Saved, stub};
///
/// let bytes = [0x0F, 0xB6, 0x04, 0x25, 0x05, 0x00, 0x00, 0x40]; // movzx eax, byte ptr [0x4000_0005]
/// let (i, _) = decode(&bytes, 0x40_0000).unwrap();
/// let code = stub(&i, 0x1234_5678, Saved::Sse, 0x50_0000).unwrap();
/// let mut d = iced_x86::Decoder::with_ip(64, &code, 0x50_0000, iced_x86::DecoderOptions::NONE);
/// let seq: Vec<String> = d.iter().take(5).map(|i| i.to_string()).collect();
/// assert_eq!(seq[0], "lea rsp,[rsp-80h]");
/// assert!(seq[1].starts_with("push qword ptr"));
/// assert!(seq[2].starts_with("jmp qword ptr"));
/// assert_eq!(seq[3], "movzx eax,byte ptr [40000005h]");
/// assert_eq!(seq[4], "jmp near ptr 0000000000400008h");
/// ```
pub fn stub(
    instr: &Instruction,
    record: u64,
    saved: Saved,
    at: u64,
) -> Result<Vec<u8>, &'static str> {
    let bad = "cannot encode the call-out stub";
    // The tail first, to learn where the data goes.
    let mut tail = Encoder::new(64);
    let mut ip = at + HEAD;
    ip += tail.encode(instr, ip).map_err(|_| bad)? as u64;
    let jmp = Instruction::with_branch(Code::Jmp_rel32_64, instr.next_ip()).map_err(|_| bad)?;
    ip += tail.encode(&jmp, ip).map_err(|_| bad)? as u64;
    let data = at + (ip - at).div_ceil(8) * 8;
    let mut head = Encoder::new(64);
    let mut hip = at;
    for i in [
        Instruction::with2(
            Code::Lea_r64_m,
            Register::RSP,
            MemoryOperand::with_base_displ(Register::RSP, -128),
        ),
        Instruction::with1(
            Code::Push_rm64,
            MemoryOperand::with_base_displ(Register::RIP, data as i64),
        ),
        Instruction::with1(
            Code::Jmp_rm64,
            MemoryOperand::with_base_displ(Register::RIP, data as i64 + 8),
        ),
    ] {
        hip += head.encode(&i.map_err(|_| bad)?, hip).map_err(|_| bad)? as u64;
    }
    if hip != at + HEAD {
        return Err(bad);
    }
    let mut code = head.take_buffer();
    code.extend_from_slice(&tail.take_buffer());
    code.resize((data - at) as usize, 0xCC);
    code.extend_from_slice(&record.to_le_bytes());
    code.extend_from_slice(&entry_of(saved).to_le_bytes());
    Ok(code)
}

/// A leaked [`Record`] for `instr` (bytes `bytes`) and its address.
pub fn record(instr: &Instruction, bytes: &[u8; 16], offsets: ConstantOffsets) -> &'static Record {
    alloc::boxed::Box::leak(alloc::boxed::Box::new(Record {
        instr: *instr,
        bytes: *bytes,
        offsets,
        fallback: core::sync::atomic::AtomicU64::new(0),
        plain_move: plain_move(instr),
    }))
}

/// The offset of a stub's fallback from its start.
pub const FALLBACK: u64 = HEAD;
