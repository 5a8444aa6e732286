//! Where vector instructions run natively and through the map: a per-thread arena at a fixed
//! low address (below 2 GiB, so a disp32 reaches it) holding the native register image, the
//! entry trampoline, the instruction under test followed by its exit code, the state block and
//! a private stack.
//!
//! | offset | what |
//! |---|---|
//! | 0x0000 | native register image, laid out as the map (0x204 bytes) |
//! | 0x1000 | entry: saves the host's callee-saved registers, rsp and MXCSR; loads the vector state (zmm0..31 and k0..7 where AVX-512 is enabled, else ymm0..15), MXCSR, rflags and every GPR (rsp = private stack) from the block; jumps to the instruction |
//! | 0x2000 | the instruction under test, then the exit code (stores every register with absolute addressing, restores the host) |
//! | 0x3000 | the [`Block`] (about 4.4 KiB: the vector state in and out) |
//! | 0x5000..0xF000 | private stack |
//!
//! A signal catcher (SIGSEGV, SIGBUS, SIGFPE, SIGILL) installed *before* `of`'s handler gets
//! every fault `of` does not own (#GP arrives as SIGSEGV/SI_KERNEL and is chained to it; #XM is a
//! SIGFPE): when the interrupted rip is in an arena it records the signal and resumes at that
//! arena's exit code, so a raised exception is a compared outcome, not a dead test process.

use iced_x86::code_asm::*;
use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

pub const ARENA_FIRST: u64 = 0x3000_0000;
pub const STRIDE: u64 = 0x10_0000;
const ARENAS: u64 = 64;
const LEN: usize = 0x1_0000;
pub const IMAGE: u64 = 0x0000;
const ENTRY: u64 = 0x1000;
pub const CODE: u64 = 0x2000;
const BLOCK: u64 = 0x3000;
const STACK_TOP: u64 = 0xF000;
const _: () = assert!(BLOCK as usize + std::mem::size_of::<Block>() <= 0x5000);
const MAGIC: u64 = 0x7665_6374_6f72_2121;

/// The state block shared by the entry and exit code and the catcher.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Block {
    pub gpr_in: [u64; 16],
    pub flags_in: u64,
    pub mxcsr_in: u64,
    pub zmm_in: [[u8; 64]; 32],
    pub k_in: [u64; 8],
    pub gpr_out: [u64; 16],
    pub flags_out: u64,
    pub mxcsr_out: u64,
    pub zmm_out: [[u8; 64]; 32],
    pub k_out: [u64; 8],
    host_rsp: u64,
    host_mxcsr: u64,
    exit: u64,
    pub signal: u64,
    pub si_code: u64,
    pub trap_rip: u64,
    pub si_addr: u64,
    magic: u64,
}

macro_rules! off {
    ($f:ident) => {
        std::mem::offset_of!(Block, $f) as u64
    };
}

const GPRS: [AsmRegister64; 16] = [
    rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
];
const YMMS: [AsmRegisterYmm; 16] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15,
];
const ZMMS: [AsmRegisterZmm; 32] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14,
    zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27,
    zmm28, zmm29, zmm30, zmm31,
];
const KS: [AsmRegisterK; 8] = [k0, k1, k2, k3, k4, k5, k6, k7];

/// Whether the arena loads and stores zmm0..31 and k0..7 (AVX-512 enabled), else ymm0..15.
pub fn avx512() -> bool {
    of_core::cpu::get().avx512()
}

/// Loads (or stores, `load == false`) the vector state between the registers and the block.
fn vector_state(a: &mut CodeAssembler, zmm: u64, k: u64, load: bool) {
    let c = of_core::cpu::get();
    if c.avx512() {
        for (i, z) in ZMMS.iter().enumerate() {
            let m = zmmword_ptr(zmm + 64 * i as u64);
            if load {
                a.vmovdqu64(*z, m).unwrap();
            } else {
                a.vmovdqu64(m, *z).unwrap();
            }
        }
        let bw = c.has(iced_x86::CpuidFeature::AVX512BW);
        for (i, r) in KS.iter().enumerate() {
            let at = k + 8 * i as u64;
            match (load, bw) {
                (true, true) => a.kmovq(*r, qword_ptr(at)).unwrap(),
                (true, false) => a.kmovw(*r, word_ptr(at)).unwrap(),
                (false, true) => a.kmovq(qword_ptr(at), *r).unwrap(),
                (false, false) => a.kmovw(word_ptr(at), *r).unwrap(),
            }
        }
    } else {
        for (i, y) in YMMS.iter().enumerate() {
            let m = ymmword_ptr(zmm + 64 * i as u64);
            if load {
                a.vmovdqu(*y, m).unwrap();
            } else {
                a.vmovdqu(m, *y).unwrap();
            }
        }
    }
}

/// One thread's arena.
pub struct Arena {
    base: u64,
}

static NEXT: AtomicU64 = AtomicU64::new(0);
static CATCHER: Once = Once::new();

thread_local! {
    static MINE: Cell<u64> = const { Cell::new(0) };
}

impl Arena {
    /// This thread's arena (mapped on first use).
    pub fn get() -> Arena {
        let base = MINE.with(|m| {
            if m.get() == 0 {
                m.set(Self::map());
            }
            m.get()
        });
        Arena { base }
    }

    fn map() -> u64 {
        loop {
            let k = NEXT.fetch_add(1, Ordering::Relaxed);
            assert!(k < ARENAS, "out of arenas");
            let want = ARENA_FIRST + k * STRIDE;
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
            let p = unsafe {
                libc::mmap(
                    want as *mut libc::c_void,
                    LEN,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p as u64 != want {
                continue;
            }
            let a = Arena { base: want };
            a.write(ENTRY, &a.entry_code());
            a.block().magic = MAGIC;
            return want;
        }
    }

    pub fn native_base(&self) -> u64 {
        self.base + IMAGE
    }

    pub fn code_addr(&self) -> u64 {
        self.base + CODE
    }

    pub fn stack_top(&self) -> u64 {
        self.base + STACK_TOP
    }

    #[allow(clippy::mut_from_ref)]
    pub fn block(&self) -> &mut Block {
        // SAFETY: the block lies in this thread's arena, mapped read/write for the process's
        // lifetime; only this thread and its signal catcher (which runs while this thread is
        // stopped inside a run) touch it.
        unsafe { &mut *((self.base + BLOCK) as *mut Block) }
    }

    #[allow(clippy::mut_from_ref)]
    pub fn image(&self) -> &mut [u8; 0x204] {
        // SAFETY: as for the block.
        unsafe { &mut *((self.base + IMAGE) as *mut [u8; 0x204]) }
    }

    fn write(&self, at: u64, bytes: &[u8]) {
        assert!(at as usize + bytes.len() <= LEN);
        // SAFETY: inside the arena, which is ours.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.base + at) as *mut u8, bytes.len())
        };
    }

    fn entry_code(&self) -> Vec<u8> {
        let b = self.base + BLOCK;
        let mut a = CodeAssembler::new(64).unwrap();
        for r in [rbx, rbp, r12, r13, r14, r15] {
            a.push(r).unwrap();
        }
        a.mov(qword_ptr(b + off!(host_rsp)), rsp).unwrap();
        a.stmxcsr(dword_ptr(b + off!(host_mxcsr))).unwrap();
        vector_state(&mut a, b + off!(zmm_in), b + off!(k_in), true);
        a.ldmxcsr(dword_ptr(b + off!(mxcsr_in))).unwrap();
        a.mov(rsp, self.base + STACK_TOP).unwrap();
        a.push(qword_ptr(b + off!(flags_in))).unwrap();
        a.popfq().unwrap();
        for (i, r) in GPRS.iter().enumerate() {
            if i != 4 {
                a.mov(*r, qword_ptr(b + off!(gpr_in) + 8 * i as u64))
                    .unwrap();
            }
        }
        a.jmp(self.base + CODE).unwrap();
        a.assemble(self.base + ENTRY).unwrap()
    }

    fn exit_code(&self, at: u64) -> Vec<u8> {
        let b = self.base + BLOCK;
        let mut a = CodeAssembler::new(64).unwrap();
        for (i, r) in GPRS.iter().enumerate() {
            a.mov(qword_ptr(b + off!(gpr_out) + 8 * i as u64), *r)
                .unwrap();
        }
        a.pushfq().unwrap();
        a.pop(qword_ptr(b + off!(flags_out))).unwrap();
        a.stmxcsr(dword_ptr(b + off!(mxcsr_out))).unwrap();
        vector_state(&mut a, b + off!(zmm_out), b + off!(k_out), false);
        a.ldmxcsr(dword_ptr(b + off!(host_mxcsr))).unwrap();
        a.mov(rsp, qword_ptr(b + off!(host_rsp))).unwrap();
        a.cld().unwrap();
        a.vzeroupper().unwrap();
        for r in [r15, r14, r13, r12, rbp, rbx] {
            a.pop(r).unwrap();
        }
        a.ret().unwrap();
        a.assemble(at).unwrap()
    }

    /// Runs `instr` (encoded for address [`Arena::code_addr`]) from the block's input state.
    pub fn run(&self, instr: &[u8]) {
        self.write(CODE, instr);
        let exit_at = CODE + instr.len() as u64;
        let exit = self.exit_code(self.base + exit_at);
        self.write(exit_at, &exit);
        let blk = self.block();
        blk.exit = self.base + exit_at;
        blk.signal = 0;
        blk.si_code = 0;
        blk.trap_rip = 0;
        blk.si_addr = 0;
        blk.mxcsr_out = 0;
        // SAFETY: the entry code saves and restores every callee-saved register, rsp, MXCSR and
        // DF; everything else it clobbers is caller-saved in the System V ABI.
        let f: extern "sysv64" fn() = unsafe { std::mem::transmute(self.base + ENTRY) };
        f();
    }
}

extern "C" fn catcher(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel (or `of`, chaining) passes a valid siginfo and ucontext.
    unsafe {
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
        if (ARENA_FIRST..ARENA_FIRST + ARENAS * STRIDE).contains(&rip) {
            let base = ARENA_FIRST + (rip - ARENA_FIRST) / STRIDE * STRIDE;
            let blk = &mut *((base + BLOCK) as *mut Block);
            if blk.magic == MAGIC && blk.signal == 0 {
                blk.signal = sig as u64;
                blk.si_code = (*info).si_code as u64;
                blk.trap_rip = rip;
                blk.si_addr = (*info).si_addr() as u64;
                uc.uc_mcontext.gregs[libc::REG_RIP as usize] = blk.exit as i64;
                return;
            }
        }
        // Not a run of ours: die of it.
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Installs the catcher (before `of`'s handler, so `of` chains to it) and maps the registers.
pub fn setup() {
    CATCHER.call_once(|| {
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            // SAFETY: a plain sigaction with an SA_SIGINFO handler that only touches arena
            // memory and the context.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = catcher as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
            }
        }
    });
    of::map_registers().expect("map_registers");
}
