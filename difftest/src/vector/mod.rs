//! Differential engine for the vector instructions on the map (issue 5): the host CPU is the
//! oracle. `tests/vector_diff.rs` in the root crate runs it (fast subset in `cargo test`, the
//! full sweep behind `--ignored`); the `coverage` binary runs it for the coverage table.
//!
//! Forms: every iced-x86 `Code` of a legacy-SSE or VEX instruction with a memory operand that
//! this CPU implements and that `of` classifies as vector data movement or vector host execution
//! (see `forms`); the test fails if any SSE/AVX form with a memory operand is refused, except
//! the refusals listed in `EXPECTED_REFUSALS`.
//!
//! Each case draws a random state — all sixteen ymm registers (random bits and special floating
//! point values: zeros, infinities, NaNs, denormals, extremes), the GPRs, the status flags and DF,
//! MXCSR (rounding, FTZ, DAZ, AMD's misaligned-SSE bit, sticky flags, sometimes unmasked
//! exceptions) — random operand registers and imm8, and a map offset (aligned or not, straddling
//! registers, any mapped bytes a load may read and any writable bytes a store may write), then:
//!
//! 1. runs the instruction natively with its memory operand on an ordinary buffer holding the
//!    register image (same layout as the map): the expected result is the CPU's final registers
//!    with the bytes the instruction stored into the image applied last (SPEC §2);
//! 2. emulates it with `of_core::emulate` on an `of_core::RegisterFile` (no fault);
//! 3. for some cases, runs it through the map (real fault, `of`'s handler, the ymm upper halves
//!    from the signal frame's XSAVE area).
//!
//! Compared: ymm0..ymm15 (256 bits each), the 16 GPRs, the status flags and DF, MXCSR, and the
//! exception raised (#GP as SIGSEGV/SI_KERNEL, #XM as SIGFPE with the kernel's FPE_FLT* code).

mod arena;

use arena::{Arena, setup};
use iced_x86::{
    Code, EncodingKind, InstructionInfoFactory, MemorySize, Mnemonic, OpAccess,
    OpCodeOperandKind as K, OpKind, Register,
};
use of_core::emulate::table::{Kind, classify};

/// The status flags and DF.
const FLAGS: u64 = 0x8D5 | 0x400;
/// The rflags bits a write to the rflags slot changes.
const RFLAGS_WRITABLE: u64 = 0xCD5;
const SI_KERNEL: u64 = 0x80;

/// Forms refused on purpose (with the reason `of` prints).
const EXPECTED_REFUSALS: &[Mnemonic] = &[];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, k: u64) -> bool {
        self.below(k) == 0
    }
}

const F32: &[u32] = &[
    0,
    0x8000_0000,
    0x3F80_0000,
    0xBF80_0000,
    0x7F80_0000,
    0xFF80_0000,
    0x7FC0_0000,
    0xFFC0_0000,
    0x7FA0_0000,
    0x0000_0001,
    0x807F_FFFF,
    0x0080_0000,
    0x7F7F_FFFF,
    0x4B80_0000,
    0x4F00_0000,
    0xCF00_0000,
    0x5F00_0000,
    0x3FC0_0000,
    0x0040_0000,
    0x3EAA_AAAB,
];
const F64: &[u64] = &[
    0,
    0x8000_0000_0000_0000,
    0x3FF0_0000_0000_0000,
    0xBFF0_0000_0000_0000,
    0x7FF0_0000_0000_0000,
    0xFFF0_0000_0000_0000,
    0x7FF8_0000_0000_0000,
    0x7FF4_0000_0000_0000,
    0x0000_0000_0000_0001,
    0x000F_FFFF_FFFF_FFFF,
    0x0010_0000_0000_0000,
    0x7FEF_FFFF_FFFF_FFFF,
    0x43E0_0000_0000_0000,
    0xC1E0_0000_0000_0000,
    0x41E0_0000_0000_0000,
    0x3FF8_0000_0000_0000,
    0x3810_0000_0000_0000,
    0x47F0_0000_0000_0000,
];

/// A random 64-bit chunk: random bits, two special f32, one special f64, or a small integer.
fn chunk(r: &mut Rng) -> u64 {
    match r.below(5) {
        0 | 1 => r.next(),
        2 => {
            let a = F32[r.below(F32.len() as u64) as usize];
            let b = F32[r.below(F32.len() as u64) as usize];
            u64::from(a) | (u64::from(b) << 32)
        }
        3 => F64[r.below(F64.len() as u64) as usize],
        _ => r.below(300).wrapping_sub(100),
    }
}

/// The input state of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    gpr: [u64; 16],
    flags: u64,
    mxcsr: u32,
    ymm: [[u8; 32]; 16],
}

fn mxcsr_mask() -> u32 {
    of_core::cpu::mxcsr_mask()
}

fn random_state(r: &mut Rng, rsp: u64) -> State {
    let mut s = State {
        gpr: [0; 16],
        flags: (r.next() & FLAGS) | 0x202,
        mxcsr: 0x1F80,
        ymm: [[0; 32]; 16],
    };
    for (i, g) in s.gpr.iter_mut().enumerate() {
        *g = if i == 4 { rsp } else { chunk(r) };
    }
    for y in s.ymm.iter_mut() {
        for c in 0..4 {
            y[8 * c..8 * c + 8].copy_from_slice(&chunk(r).to_le_bytes());
        }
    }
    let mut m = (r.below(4) as u32) << 13; // rounding control
    if r.chance(4) {
        m |= 1 << 15; // FTZ
    }
    if r.chance(4) {
        m |= 1 << 6; // DAZ
    }
    if r.chance(2) {
        m |= r.next() as u32 & 0x3F; // sticky flags
    }
    if r.chance(5) {
        m |= (r.next() as u32 & 0x3F) << 7; // some exceptions unmasked
    } else {
        m |= 0x1F80;
    }
    if r.chance(4) {
        m |= 1 << 17; // AMD misaligned-SSE mode
    }
    s.mxcsr = m & mxcsr_mask();
    s
}

fn fs_gs() -> (u64, u64) {
    let (mut fs, mut gs) = (0u64, 0u64);
    // SAFETY: arch_prctl ARCH_GET_FS/GS writes one u64 to the pointer.
    unsafe {
        libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64);
        libc::syscall(libc::SYS_arch_prctl, 0x1004, &mut gs as *mut u64);
    }
    (fs, gs)
}

/// The map image of `s` as the instruction at `rip` (next instruction `next`) sees it.
fn image(s: &State, next: u64) -> [u8; 0x204] {
    let mut img = [0u8; 0x204];
    for i in 0..16 {
        img[8 * i..8 * i + 8].copy_from_slice(&s.gpr[i].to_le_bytes());
    }
    img[0x80..0x88].copy_from_slice(&next.to_le_bytes());
    img[0x88..0x90].copy_from_slice(&s.flags.to_le_bytes());
    let (fs, gs) = fs_gs();
    img[0x90..0x98].copy_from_slice(&fs.to_le_bytes());
    img[0x98..0xA0].copy_from_slice(&gs.to_le_bytes());
    for i in 0..16 {
        img[0x100 + 16 * i..0x110 + 16 * i].copy_from_slice(&s.ymm[i][..16]);
    }
    img[0x200..0x204].copy_from_slice(&s.mxcsr.to_le_bytes());
    img
}

/// What a run produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    state: State,
    /// 0, or the signal and its si_code.
    signal: (u64, u64),
}

/// A form under test.
struct Form {
    code: Code,
    mem_op: u32,
    access: OpAccess,
}

fn is_mem_kind(k: K) -> bool {
    matches!(
        k,
        K::mem | K::r32_or_mem | K::r64_or_mem | K::xmm_or_mem | K::ymm_or_mem
    )
}

/// A random instance of `code` with its memory operand at absolute `disp`.
fn instance(code: Code, r: &mut Rng, disp: u64) -> Option<iced_x86::Instruction> {
    let op = code.op_code();
    let mut instr = iced_x86::Instruction::default();
    instr.set_code(code);
    let gpr_free = |r: &mut Rng| loop {
        let n = r.below(16) as u32;
        if n != 4 {
            return n;
        }
    };
    let mut prev_imm = false;
    for i in 0..op.op_count() {
        let k = op.op_kind(i);
        let reg = match k {
            K::xmm_reg | K::xmm_rm | K::xmm_vvvv | K::xmm_is4 => {
                Some(Register::XMM0 as u32 + r.below(16) as u32)
            }
            K::ymm_reg | K::ymm_rm | K::ymm_vvvv | K::ymm_is4 => {
                Some(Register::YMM0 as u32 + r.below(16) as u32)
            }
            K::r32_reg | K::r32_rm | K::r32_vvvv => Some(Register::EAX as u32 + gpr_free(r)),
            K::r64_reg | K::r64_rm | K::r64_vvvv => Some(Register::RAX as u32 + gpr_free(r)),
            _ => None,
        };
        if let Some(n) = reg {
            // SAFETY-free: iced's Register values are contiguous within each class.
            let reg: Register = unsafe_register(n);
            instr.set_op_kind(i, OpKind::Register);
            instr.set_op_register(i, reg);
        } else if is_mem_kind(k) {
            instr.set_op_kind(i, OpKind::Memory);
            instr.set_memory_base(Register::None);
            instr.set_memory_index(Register::None);
            instr.set_memory_index_scale(1);
            instr.set_memory_displacement64(disp);
            instr.set_memory_displ_size(8);
        } else if k == K::imm8 {
            instr.set_op_kind(
                i,
                if prev_imm {
                    OpKind::Immediate8_2nd
                } else {
                    OpKind::Immediate8
                },
            );
            instr.set_immediate_u64(i, r.below(256));
            prev_imm = true;
            continue;
        } else {
            return None;
        }
        prev_imm = false;
    }
    Some(instr)
}

fn unsafe_register(n: u32) -> Register {
    Register::values()
        .nth(n as usize)
        .expect("register number in range")
}

fn supported_on_host(instr: &iced_x86::Instruction) -> bool {
    of_core::emulate::hostexec::cpu_supports(instr)
}

/// Every vector form with a memory operand: (tested forms, refused forms with the reason).
fn forms() -> (Vec<Form>, Vec<(Code, &'static str)>) {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    let mut r = Rng(1);
    let mut info = InstructionInfoFactory::new();
    for code in Code::values() {
        let op = code.op_code();
        if !op.is_instruction()
            || !op.mode64()
            || !matches!(code.encoding(), EncodingKind::Legacy | EncodingKind::VEX)
        {
            continue;
        }
        let kinds: Vec<K> = (0..op.op_count()).map(|i| op.op_kind(i)).collect();
        let Some(mem_op) = kinds.iter().position(|&k| is_mem_kind(k)) else {
            continue;
        };
        let vector_operand = kinds.iter().any(|k| {
            matches!(
                k,
                K::xmm_reg
                    | K::xmm_rm
                    | K::xmm_vvvv
                    | K::xmm_is4
                    | K::xmm_or_mem
                    | K::ymm_reg
                    | K::ymm_rm
                    | K::ymm_vvvv
                    | K::ymm_is4
                    | K::ymm_or_mem
            )
        });
        let Some(instr) = instance(code, &mut r, 0x40) else {
            continue;
        };
        if !supported_on_host(&instr) {
            continue;
        }
        let kind = classify(&instr);
        let simd_mxcsr = matches!(
            instr.mnemonic(),
            Mnemonic::Ldmxcsr | Mnemonic::Stmxcsr | Mnemonic::Vldmxcsr | Mnemonic::Vstmxcsr
        );
        match kind {
            Kind::Vector(_) | Kind::VectorHost => {}
            Kind::Unsupported(why) if vector_operand || simd_mxcsr => {
                refused.push((code, why));
                continue;
            }
            _ => continue, // scalar forms: the differential engine in difftest/ covers them
        }
        let used = info.info(&instr).used_memory().to_vec();
        let Some(access) = used.first().map(|m| m.access()) else {
            continue;
        };
        ok.push(Form {
            code,
            mem_op: mem_op as u32,
            access,
        });
    }
    (ok, refused)
}

fn mem_size(instr: &iced_x86::Instruction) -> u64 {
    let s = instr.memory_size();
    if s == MemorySize::Unknown {
        0
    } else {
        s.size() as u64
    }
}

/// A random offset for an operand of `size` bytes that `write`s or reads the map.
fn offset(r: &mut Rng, size: u64, write: bool) -> u64 {
    loop {
        let off = match r.below(3) {
            0 => r.below(0x204),
            1 => r.below(0x204) & !(size.max(1) - 1),
            _ => r.below(0x204) & !15,
        };
        let end = off + size;
        let ok = if write {
            // Writable bytes, never the rsp slot (the run needs its stack) or the rip slot (a
            // write is a jump).
            (end <= 0x20 || (off >= 0x28 && end <= 0x80) || (off >= 0x88 && end <= 0x90))
                || (off >= 0x100 && end <= 0x204)
        } else {
            end <= 0xA0 || (off >= 0x100 && end <= 0x204)
        };
        if ok {
            return off;
        }
    }
}

fn is_write(a: OpAccess) -> bool {
    matches!(
        a,
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

fn encode(instr: &iced_x86::Instruction, ip: u64) -> Vec<u8> {
    let mut e = iced_x86::Encoder::new(64);
    e.encode(instr, ip).expect("encodable");
    e.take_buffer()
}

fn load_block(a: &Arena, s: &State) {
    let b = a.block();
    b.gpr_in = s.gpr;
    b.flags_in = s.flags;
    b.mxcsr_in = u64::from(s.mxcsr);
    b.ymm_in = s.ymm;
}

fn outcome(a: &Arena) -> Outcome {
    let b = a.block();
    Outcome {
        state: State {
            gpr: b.gpr_out,
            flags: b.flags_out & FLAGS,
            mxcsr: b.mxcsr_out as u32,
            ymm: b.ymm_out,
        },
        signal: if b.signal == 0 {
            (0, 0)
        } else {
            (b.signal, b.si_code)
        },
    }
}

/// The kernel's si_code for #XM from MXCSR (arch/x86/kernel/fpu/core.c, fpu__exception_code).
fn xm_code(mxcsr: u32) -> u64 {
    let err = !(mxcsr >> 7) & mxcsr;
    if err & 0x01 != 0 {
        7 // FPE_FLTINV
    } else if err & 0x04 != 0 {
        3 // FPE_FLTDIV
    } else if err & 0x08 != 0 {
        4 // FPE_FLTOVF
    } else if err & 0x12 != 0 {
        5 // FPE_FLTUND
    } else if err & 0x20 != 0 {
        6 // FPE_FLTRES
    } else {
        0
    }
}

/// Native run: the expected outcome. `written` is the image range an unconditional store
/// writes (its bytes apply even when equal to the old image, since the instruction may also
/// have changed the register behind them, like MXCSR's flags); conditional stores (masked
/// moves, which change no register) apply the bytes that changed.
fn native(a: &Arena, s: &State, bytes: &[u8], written: Option<std::ops::Range<usize>>) -> Outcome {
    let next = a.code_addr() + bytes.len() as u64;
    let before = image(s, next);
    *a.image() = before;
    load_block(a, s);
    a.run(bytes);
    let after = *a.image();
    let mut o = outcome(a);
    // Stores into the image apply to the registers last: start from the image of the
    // registers as the instruction left them and overlay the bytes it stored.
    // An instruction that raised an exception stored nothing.
    let written = written.filter(|_| o.signal.0 == 0);
    let stored =
        |i: usize| before[i] != after[i] || written.as_ref().is_some_and(|w| w.contains(&i));
    let mut merged = image(&o.state, next);
    let mut any = [false; 0x204];
    for i in 0..0x204 {
        if stored(i) {
            merged[i] = after[i];
            any[i] = true;
        }
    }
    let hit = |r: std::ops::Range<usize>| r.into_iter().any(|i| any[i]);
    for i in 0..16 {
        if hit(8 * i..8 * i + 8) {
            let mut q = [0u8; 8];
            q.copy_from_slice(&merged[8 * i..8 * i + 8]);
            o.state.gpr[i] = u64::from_le_bytes(q);
        }
    }
    assert!(!hit(0x80..0x88), "a store to the rip slot");
    if hit(0x88..0x90) {
        let mut q = [0u8; 8];
        q.copy_from_slice(&merged[0x88..0x90]);
        let v = u64::from_le_bytes(q);
        o.state.flags = (o.state.flags & !RFLAGS_WRITABLE) | (v & RFLAGS_WRITABLE);
    }
    for i in 0..16 {
        let r = 0x100 + 16 * i..0x110 + 16 * i;
        if hit(r.clone()) {
            o.state.ymm[i][..16].copy_from_slice(&merged[r]);
        }
    }
    if hit(0x200..0x204) {
        let mut d = [0u8; 4];
        d.copy_from_slice(&merged[0x200..0x204]);
        o.state.mxcsr = u32::from_le_bytes(d) & mxcsr_mask();
    }
    o
}

/// Through `of_core::emulate` on a RegisterFile.
fn core_run(a: &Arena, s: &State, bytes: &[u8]) -> Result<Outcome, String> {
    let rip = a.code_addr();
    let (instr, offsets) = of_core::decode::decode(bytes, rip).map_err(|e| format!("{e:?}"))?;
    let (fs, gs) = fs_gs();
    let mut rf = of_core::RegisterFile {
        gpr: s.gpr,
        rip,
        rflags: s.flags,
        fs_base: fs,
        gs_base: gs,
        mxcsr: s.mxcsr,
        ..Default::default()
    };
    for i in 0..16 {
        let mut lo = [0u8; 16];
        let mut hi = [0u8; 16];
        lo.copy_from_slice(&s.ymm[i][..16]);
        hi.copy_from_slice(&s.ymm[i][16..]);
        rf.xmm[i] = u128::from_le_bytes(lo);
        rf.ymm_high[i] = u128::from_le_bytes(hi);
    }
    use of_core::emulate::{EmulationError as E, Exception as X};
    let signal = match of_core::emulate(&mut rf, &instr, bytes, &offsets, None) {
        Ok(()) => {
            if rf.rip != rip + bytes.len() as u64 {
                return Err(format!("rip {:#x} after the instruction", rf.rip));
            }
            (0, 0)
        }
        Err(E::Exception(X::GeneralProtection)) => (libc::SIGSEGV as u64, SI_KERNEL),
        Err(E::Exception(X::SimdFloatingPoint { flags })) => (
            libc::SIGFPE as u64,
            xm_code(flags | (0x1F80 & !(flags << 7))),
        ),
        Err(e) => return Err(format!("{e:?}")),
    };
    if signal.0 != 0 && rf.rip != rip {
        return Err(format!("rip {:#x} after an exception", rf.rip));
    }
    let mut st = State {
        gpr: rf.gpr,
        flags: rf.rflags & FLAGS,
        mxcsr: rf.mxcsr,
        ymm: [[0; 32]; 16],
    };
    for i in 0..16 {
        st.ymm[i][..16].copy_from_slice(&rf.xmm[i].to_le_bytes());
        st.ymm[i][16..].copy_from_slice(&rf.ymm_high[i].to_le_bytes());
    }
    Ok(Outcome { state: st, signal })
}

/// Through the map, with a real fault.
fn fault_run(a: &Arena, s: &State, bytes: &[u8]) -> Outcome {
    *a.image() = [0xEE; 0x204]; // nothing reads it
    load_block(a, s);
    a.run(bytes);
    outcome(a)
}

fn diff(want: &Outcome, got: &Outcome) -> String {
    let mut out = String::new();
    if want.signal != got.signal {
        out += &format!(" signal {:?} vs {:?};", want.signal, got.signal);
    }
    for i in 0..16 {
        if want.state.gpr[i] != got.state.gpr[i] {
            out += &format!(
                " gpr{i} {:#x} vs {:#x};",
                want.state.gpr[i], got.state.gpr[i]
            );
        }
        if want.state.ymm[i] != got.state.ymm[i] {
            out += &format!(
                " ymm{i} {:02x?} vs {:02x?};",
                want.state.ymm[i], got.state.ymm[i]
            );
        }
    }
    if want.state.flags != got.state.flags {
        out += &format!(" flags {:#x} vs {:#x};", want.state.flags, got.state.flags);
    }
    // Known limit (see `of_core::emulate::hostexec::execute_vector`): alongside an unmasked
    // overflow or underflow #XM the CPU sets PE only when the exponent-unbounded result is
    // inexact, which masked host runs cannot tell; only that bit is excused, only then.
    let unmasked_over_under = want.state.mxcsr & 0x18 & !(want.state.mxcsr >> 7);
    let pe = if want.signal.0 == libc::SIGFPE as u64
        && got.signal == want.signal
        && unmasked_over_under != 0
    {
        0x20
    } else {
        0
    };
    if want.state.mxcsr & !pe != got.state.mxcsr & !pe {
        out += &format!(" mxcsr {:#x} vs {:#x};", want.state.mxcsr, got.state.mxcsr);
    }
    out
}

/// How `of` executes a vector form (from `of_core::emulate::table::classify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Execution {
    /// Emulated in Rust as data movement (loads, stores, inserts, extracts, broadcasts).
    Move,
    /// Run on the host as the register form of the same instruction (arithmetic, conversions).
    Host,
}

/// Counts of one form.
#[derive(Clone, Debug)]
pub struct VectorFormStats {
    /// The encoding tested.
    pub code: Code,
    /// How `of` executes it.
    pub execution: Execution,
    /// Cases run through `of_core::emulate` (no fault).
    pub emulated: u64,
    /// Cases run through the map with a real fault.
    pub faulted: u64,
    /// Cases where the CPU raised an exception (#GP, #XM), compared like a result.
    pub exceptions: u64,
    /// Cases refused on purpose (dpps/dppd with an unmasked exception).
    pub refused_cases: u64,
    /// Cases that disagreed with the CPU.
    pub mismatches: u64,
}

/// Counts of a sweep.
#[derive(Default, Debug)]
pub struct Tally {
    /// Forms run.
    pub forms: usize,
    /// Cases through `of_core::emulate`.
    pub core_cases: usize,
    /// Cases through the map with a real fault.
    pub fault_cases: usize,
    /// Cases where the CPU raised an exception.
    pub exceptions: usize,
    /// Vector forms with a memory operand that `of` refuses (with the reason).
    pub refused: Vec<(Code, &'static str)>,
    /// Cases refused on purpose (dpps/dppd with an unmasked exception).
    pub refused_cases: usize,
    /// Descriptions of the disagreements (at most 3 per form).
    pub mismatches: Vec<String>,
    /// Per-form counts, in `Code` order.
    pub per_form: Vec<VectorFormStats>,
}

/// Runs every vector form (or those whose `Code` name contains `filter`, case-insensitive)
/// from `states` random states each; every `fault_every`-th state (0: none) also runs through
/// the map with a real fault.
///
/// Maps the registers and installs the arena's signal catcher beneath `of`'s handler on first
/// use: call it from a process that installs no other catcher (the integer engine's own).
///
/// # Panics
///
/// If the arena cannot be mapped or `of::map_registers` fails.
pub fn sweep(seed: u64, states: usize, fault_every: usize, filter: Option<&str>) -> Tally {
    setup();
    let a = Arena::get();
    let (forms, refused) = forms();
    let unexpected: Vec<_> = refused
        .iter()
        .filter(|(c, _)| !EXPECTED_REFUSALS.contains(&c.mnemonic()))
        .map(|(c, why)| format!("{c:?}: {why}"))
        .collect();
    if std::env::var_os("OF_VECTOR_LIST").is_some() {
        let mut moves = std::collections::BTreeSet::new();
        let mut host = std::collections::BTreeSet::new();
        for f in &forms {
            match execution(f.code) {
                Execution::Move => moves.insert(format!("{:?}", f.code.mnemonic())),
                Execution::Host => host.insert(format!("{:?}", f.code.mnemonic())),
            };
        }
        eprintln!(
            "data movement ({}): {}",
            moves.len(),
            Vec::from_iter(moves).join(" ")
        );
        eprintln!(
            "host execution ({}): {}",
            host.len(),
            Vec::from_iter(host).join(" ")
        );
    }
    let mut t = Tally::default();
    if filter.is_none() && !unexpected.is_empty() {
        t.mismatches.push(format!("refused: {unexpected:#?}"));
    }
    t.refused = refused;
    let mut r = Rng(seed | 1);
    for f in &forms {
        let name = format!("{:?}", f.code);
        if let Some(want) = filter
            && !name.to_lowercase().contains(&want.to_lowercase())
        {
            continue;
        }
        t.forms += 1;
        let mut st = VectorFormStats {
            code: f.code,
            execution: execution(f.code),
            emulated: 0,
            faulted: 0,
            exceptions: 0,
            refused_cases: 0,
            mismatches: 0,
        };
        for k in 0..states {
            let s = random_state(&mut r, a.stack_top());
            let seed_instr = r.next();
            let probe = instance(f.code, &mut Rng(seed_instr | 1), 0).unwrap();
            let off = offset(&mut r, mem_size(&probe), is_write(f.access));
            let mapped = instance(f.code, &mut Rng(seed_instr | 1), off).unwrap();
            let native_i =
                instance(f.code, &mut Rng(seed_instr | 1), a.native_base() + off).unwrap();
            let mb = encode(&mapped, a.code_addr());
            let nb = encode(&native_i, a.code_addr());
            assert_eq!(mb.len(), nb.len(), "{name}: encodings differ in length");
            let size = mem_size(&probe) as usize;
            let written = (f.access == OpAccess::Write).then(|| off as usize..off as usize + size);
            let want = native(&a, &s, &nb, written);
            if want.signal.0 != 0 {
                st.exceptions += 1;
            }
            st.emulated += 1;
            let what = |how: &str| {
                let text = iced_text(&mapped);
                format!("{name} `{text}` off {off:#x} mem_op {} {how}", f.mem_op)
            };
            let core = core_run(&a, &s, &mb);
            if let Err(e) = &core
                && e.contains("dpps/dppd raising")
                && want.signal.0 == libc::SIGFPE as u64
            {
                // Refused on purpose (see of_core::emulate::vector::execute_host); through the
                // map it would end the process with a diagnostic.
                st.refused_cases += 1;
                continue;
            }
            match core {
                Ok(got) if diff(&want, &got).is_empty() => {}
                Ok(got) => {
                    st.mismatches += 1;
                    t.mismatches
                        .push(format!("{} core:{} in {s:x?}", what(""), diff(&want, &got)));
                }
                Err(e) => {
                    st.mismatches += 1;
                    t.mismatches.push(format!("{} core: {e}", what("")));
                }
            }
            if fault_every != 0 && k % fault_every == 0 {
                st.faulted += 1;
                let got = fault_run(&a, &s, &mb);
                if !diff(&want, &got).is_empty() {
                    st.mismatches += 1;
                    t.mismatches
                        .push(format!("{} fault:{}", what(""), diff(&want, &got)));
                }
            }
            if st.mismatches >= 3 {
                break; // enough examples for this form
            }
        }
        t.core_cases += st.emulated as usize;
        t.fault_cases += st.faulted as usize;
        t.exceptions += st.exceptions as usize;
        t.refused_cases += st.refused_cases as usize;
        t.per_form.push(st);
    }
    t
}

/// How `of` executes `code` (a form [`sweep`] tests).
fn execution(code: Code) -> Execution {
    let probe = instance(code, &mut Rng(1), 0x40).expect("a tested form has an instance");
    match classify(&probe) {
        Kind::Vector(_) => Execution::Move,
        _ => Execution::Host,
    }
}

fn iced_text(i: &iced_x86::Instruction) -> String {
    use iced_x86::Formatter;
    let mut f = iced_x86::IntelFormatter::new();
    let mut s = String::new();
    f.format(i, &mut s);
    s
}

impl Tally {
    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "vector differential: {} forms ({} vector forms refused), {} emulate cases ({} refused: dpps/dppd with an unmasked exception), {} fault cases, {} raised exceptions, {} mismatches",
            self.forms,
            self.refused.len(),
            self.core_cases,
            self.refused_cases,
            self.fault_cases,
            self.exceptions,
            self.mismatches.len()
        )
    }
}

/// Prints the summary and up to 40 mismatches to stderr.
///
/// # Panics
///
/// If there was any mismatch or unexpected refusal.
pub fn report(t: &Tally) {
    eprintln!("{}", t.summary());
    for m in t.mismatches.iter().take(40) {
        eprintln!("  {m}");
    }
    assert!(t.mismatches.is_empty(), "{} mismatches", t.mismatches.len());
}
