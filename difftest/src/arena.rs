//! Where instructions run: a per-thread arena at a fixed low address holding the native register
//! image, the code under test, a private stack, and the entry/exit trampolines.
//!
//! Layout (offsets from the arena base `A`, mapped read/write/execute with
//! `MAP_FIXED_NOREPLACE` below 2 GiB so that a sign-extended disp32 reaches every byte):
//!
//! | offset | what |
//! |---|---|
//! | 0x0000 | the native register image ([`Arena::native_base`]): 0xA0 bytes laid out as the map |
//! | 0x1000 | the exit code (saves every register and the flags, returns to the host) |
//! | 0x1100..0x3000 | the landing zone, filled with `int3`; the instruction under test sits at [`CODE`] |
//! | 0x3000 | the [`Block`] shared by the entry trampoline, the exit code and the signal catcher |
//! | 0x4000..0x7F000 | a private stack; [`Arena::stack_top`] is the rsp the instruction sees |
//!
//! The arena base is 1 MiB aligned, so the native image's address `NB` has zero low 20 bits:
//! 8- and 16-bit writes to a register holding `NB + offset` (pop sp, leave with 0x66) keep the
//! relation "native = map + NB".
//!
//! A run: `of_difftest_enter` (global asm) saves the host's callee-saved registers and rsp,
//! loads the flags and every guest register (rsp included) from the block and jumps to a
//! one-instruction prologue that loads rdi; the instruction under test runs; at its landing
//! address a `jmp` leads to the exit code, which stores every register with rip-relative moves
//! (no register is free), switches back to the host stack, stores the flags and jumps to
//! `of_difftest_leave` (global asm), which restores the host registers and returns. A landing
//! anywhere else hits `int3`; the SIGTRAP catcher (also for SIGILL and SIGFPE) records the
//! registers and the address and resumes at the same exit, so a wrong jump is a reported
//! mismatch rather than a dead test process.
//!
//! The catcher also takes SIGSEGV, for one kind of fault only: an instruction fetch from an
//! unmapped address during a run (`si_addr` = rip), which is how a control transfer to an
//! address outside the arena ends — AMD's 16-bit near branches land in the low 64 KiB. It is
//! recorded like a trap at that address, after the instruction retired. Every other SIGSEGV is
//! passed on to the action installed before the catcher (`of`'s handler, when `of` was installed
//! first; normally the catcher comes first and `of` chains the faults it does not own to it).

use crate::model::{DF, IMAGE_LEN, RFLAGS_FIXED, STATUS};
use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Register};
use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// First arena address tried; arenas are [`ARENA_STRIDE`] apart, one per thread.
const ARENA_FIRST: u64 = 0x1000_0000;
const ARENA_STRIDE: u64 = 0x10_0000;
const ARENA_SIZE: usize = 0x8_0000;
const IMAGE: u64 = 0x0000;
const EXIT: u64 = 0x1000;
/// The landing zone: where landing stubs may go.
const ZONE: std::ops::Range<u64> = 0x1100..0x3000;
/// Offset of the instruction under test (its prologue is the 7 bytes before it).
pub const CODE: u64 = 0x2000;
const PROLOGUE: u64 = 7;
const BLOCK: u64 = 0x3000;
const STACK_TOP: u64 = 0x7_F000;
/// Bytes of ordinary memory around the stack top that are compared after each run.
pub const MEMORY_LEN: usize = 256;
/// Length of a landing stub (`jmp rel32`).
pub const STUB_LEN: u64 = 5;

/// The state block (layout shared with the assembly below; see the offsets there).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Block {
    /// Guest registers in (encoding order, rsp included).
    pub gpr_in: [u64; 16],
    /// Guest rflags in (status flags, DF, IF and bit 1).
    pub flags_in: u64,
    /// Address of the prologue before the instruction under test.
    pub entry: u64,
    /// The host rsp to return to (written by the entry trampoline).
    pub host_rsp: u64,
    /// Address of `of_difftest_leave`.
    pub leave: u64,
    /// Guest registers out.
    pub gpr_out: [u64; 16],
    /// Guest rflags out.
    pub flags_out: u64,
    /// 0 after a normal exit, else the signal that was caught (SIGTRAP, SIGILL, SIGFPE, or
    /// SIGSEGV for an instruction fetch from an unmapped address).
    pub signal: u64,
    /// For a caught signal: the address of the instruction that raised it (for SIGSEGV, the
    /// address whose fetch faulted).
    pub trap_rip: u64,
}

const _: () = assert!(std::mem::offset_of!(Block, flags_in) == 0x80);
const _: () = assert!(std::mem::offset_of!(Block, entry) == 0x88);
const _: () = assert!(std::mem::offset_of!(Block, host_rsp) == 0x90);
const _: () = assert!(std::mem::offset_of!(Block, leave) == 0x98);
const _: () = assert!(std::mem::offset_of!(Block, gpr_out) == 0xA0);
const _: () = assert!(std::mem::offset_of!(Block, flags_out) == 0x120);

std::arch::global_asm!(
    ".text",
    ".p2align 4",
    ".globl of_difftest_enter",
    "of_difftest_enter:", // sysv64: rdi = &mut Block
    "    push rbp",       // save the host's callee-saved registers
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov [rdi + 0x90], rsp", // Block.host_rsp: where the exit path comes back to
    "    push qword ptr [rdi + 0x80]", // Block.flags_in (status flags, DF, IF, bit 1) ...
    "    popfq",                 // ... become the guest's flags
    "    mov rax, [rdi + 0x00]", // guest rax
    "    mov rcx, [rdi + 0x08]", // guest rcx
    "    mov rdx, [rdi + 0x10]", // guest rdx
    "    mov rbx, [rdi + 0x18]", // guest rbx
    "    mov rbp, [rdi + 0x28]", // guest rbp
    "    mov rsi, [rdi + 0x30]", // guest rsi
    "    mov r8, [rdi + 0x40]",  // guest r8
    "    mov r9, [rdi + 0x48]",  // guest r9
    "    mov r10, [rdi + 0x50]", // guest r10
    "    mov r11, [rdi + 0x58]", // guest r11
    "    mov r12, [rdi + 0x60]", // guest r12
    "    mov r13, [rdi + 0x68]", // guest r13
    "    mov r14, [rdi + 0x70]", // guest r14
    "    mov r15, [rdi + 0x78]", // guest r15
    "    mov rsp, [rdi + 0x20]", // guest rsp (private stack, or a map offset)
    "    jmp qword ptr [rdi + 0x88]", // Block.entry: `mov rdi, [rip + gpr_in.rdi]`, then the instruction
    ".p2align 4",
    ".globl of_difftest_leave",
    "of_difftest_leave:", // reached by `jmp` with rsp = Block.host_rsp
    "    cld",            // the ABI wants DF clear
    "    pop r15",        // restore the host's callee-saved registers
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret", // back to Arena::run
);

unsafe extern "sysv64" {
    /// Runs the code at `block.entry` with the guest state of `block` (see the module docs).
    fn of_difftest_enter(block: *mut Block);
    /// The exit trampoline's tail (a code address, never called from Rust).
    fn of_difftest_leave();
}

thread_local! {
    /// The block of the run in progress on this thread, for the signal catcher.
    static CURRENT: Cell<*mut Block> = const { Cell::new(std::ptr::null_mut()) };
}

/// The SIGSEGV action installed before the catcher.
static PREVIOUS_SEGV: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();

/// Whether a SIGSEGV is an instruction fetch from an unmapped (or non-executable) address made
/// by a run in progress on this thread.
///
/// # Safety
/// `info` and `ctx` are the kernel's arguments for the current SIGSEGV.
unsafe fn is_fetch_fault(info: *mut libc::siginfo_t, ctx: *mut libc::c_void) -> bool {
    if CURRENT.with(|c| c.get()).is_null() {
        return false;
    }
    // SAFETY: valid siginfo and ucontext from the kernel (or from `of`, chaining).
    unsafe {
        let code = (*info).si_code;
        let rip = (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize];
        // SEGV_MAPERR (1) or SEGV_ACCERR (2): a page fault, not #GP (SI_KERNEL) or a kill.
        (code == 1 || code == 2) && (*info).si_addr() as u64 == rip as u64
    }
}

/// Passes a SIGSEGV that is not a fetch fault of a run to the action installed before the
/// catcher, as if the catcher were not there (the default action: restored, so the fault
/// re-occurs and kills the process).
///
/// # Safety
/// The handler's own arguments.
unsafe fn forward_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS_SEGV.get().copied();
    let h = prev.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    // SAFETY: calling the previous handler with the kernel's arguments, with the signature its
    // flags declare; resetting a disposition and raising are async-signal-safe.
    unsafe {
        match prev {
            Some(p) if h != libc::SIG_DFL && h != libc::SIG_IGN => {
                if p.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(h);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
                    f(sig);
                }
            }
            _ => {
                libc::signal(sig, libc::SIG_DFL);
                if (*info).si_code <= 0 {
                    libc::raise(sig);
                }
            }
        }
    }
}

/// SIGTRAP/SIGILL/SIGFPE during a run, and SIGSEGV for a fetch fault during a run: record where
/// and with which registers, then leave through the normal exit. Outside a run: the default
/// action (SIGSEGV: the previous action).
extern "C" fn catcher(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel's (or `of`'s, chaining) arguments for this signal.
    if sig == libc::SIGSEGV && !unsafe { is_fetch_fault(info, ctx) } {
        // SAFETY: our own arguments, passed on unchanged.
        unsafe { forward_segv(sig, info, ctx) };
        return;
    }
    let block = CURRENT.with(|c| c.get());
    if block.is_null() {
        // SAFETY: resetting a disposition and re-raising are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    // SAFETY: the kernel passes a valid ucontext; `block` points into this thread's live arena
    // (CURRENT is set only while `of_difftest_enter` runs).
    unsafe {
        let uc = &mut *ctx.cast::<libc::ucontext_t>();
        let g = &mut uc.uc_mcontext.gregs;
        let b = &mut *block;
        for (n, r) in GREGS.iter().enumerate() {
            b.gpr_out[n] = g[*r as usize] as u64;
        }
        b.flags_out = g[libc::REG_EFL as usize] as u64;
        b.signal = sig as u64;
        let rip = g[libc::REG_RIP as usize] as u64;
        // int3 reports the address after itself; a fetch fault the address it fetched from.
        b.trap_rip = if sig == libc::SIGTRAP { rip - 1 } else { rip };
        g[libc::REG_RSP as usize] = b.host_rsp as i64;
        g[libc::REG_RIP as usize] = b.leave as i64;
        g[libc::REG_EFL as usize] &= !(DF as i64);
    }
}

/// `gregs` index of each general-purpose register in encoding order.
const GREGS: [libc::c_int; 16] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_RSP,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
    libc::REG_R8,
    libc::REG_R9,
    libc::REG_R10,
    libc::REG_R11,
    libc::REG_R12,
    libc::REG_R13,
    libc::REG_R14,
    libc::REG_R15,
];

fn install_catcher() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGTRAP, libc::SIGILL, libc::SIGFPE, libc::SIGSEGV] {
            // SAFETY: a zeroed sigaction is valid; we fill handler, flags and mask. For SIGSEGV
            // the previous action is kept for `forward_segv` (set before the catcher can run
            // for a SIGSEGV: nothing faults between the two calls).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = catcher as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut prev: libc::sigaction = std::mem::zeroed();
                if sig == libc::SIGSEGV {
                    // As `of`'s handler (which the catcher may forward to): nothing interrupts.
                    libc::sigfillset(&mut sa.sa_mask);
                    assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut prev), 0);
                    PREVIOUS_SEGV.get_or_init(|| prev);
                }
                assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
            }
        }
    });
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Registers at the end (encoding order).
    pub gpr: [u64; 16],
    /// rflags at the end.
    pub rflags: u64,
    /// 0, or the signal caught (then `gpr`/`rflags` are those at the signal). SIGSEGV is
    /// always a fetch fault at `landed`: the code before it retired.
    pub signal: i32,
    /// Where control went: the landing stub's address after a normal exit, the faulting or
    /// trapping instruction's address after a signal (for SIGSEGV the address whose fetch
    /// faulted, i.e. the landing address of the control transfer that went there).
    pub landed: u64,
}

/// One thread's arena (not `Send`: the signal catcher finds it through a thread-local).
pub struct Arena {
    base: u64,
    fs_base: u64,
    gs_base: u64,
    _not_send: std::marker::PhantomData<*mut ()>,
}

static NEXT_SLOT: AtomicU64 = AtomicU64::new(0);

fn arch_prctl_get(code: libc::c_int) -> u64 {
    let mut v: u64 = 0;
    // SAFETY: arch_prctl(ARCH_GET_FS/GS, &mut u64) writes one u64.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, code, &mut v as *mut u64) };
    assert_eq!(r, 0, "arch_prctl");
    v
}

impl Arena {
    /// Maps a new arena for the calling thread, installs the signal catcher and `of`'s handler
    /// (`of::map_registers`, which also gives the thread an alternate signal stack: a run may
    /// have rsp inside the map).
    pub fn new() -> Arena {
        install_catcher();
        of::map_registers().expect("of::map_registers");
        let base = loop {
            let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
            assert!(slot < 1024, "no free arena address below 2 GiB");
            let want = ARENA_FIRST + slot * ARENA_STRIDE;
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
            let p = unsafe {
                libc::mmap(
                    want as *mut libc::c_void,
                    ARENA_SIZE,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p as u64 == want {
                break want;
            }
            if p != libc::MAP_FAILED {
                // An old kernel that treats the flag as a hint: give it back and try further.
                // SAFETY: unmapping what we just mapped.
                unsafe { libc::munmap(p, ARENA_SIZE) };
            }
        };
        let a = Arena {
            base,
            fs_base: arch_prctl_get(0x1003),
            gs_base: arch_prctl_get(0x1004),
            _not_send: std::marker::PhantomData,
        };
        a.fill(ZONE.start, ZONE.end - ZONE.start, 0xCC);
        a.write_exit_code();
        a
    }

    /// Address of the native register image (the native run's "page 0").
    pub fn native_base(&self) -> u64 {
        self.base + IMAGE
    }

    /// Address of the instruction under test.
    pub fn code_address(&self) -> u64 {
        self.base + CODE
    }

    /// The rsp an instruction runs with when its stack is not in the map.
    pub fn stack_top(&self) -> u64 {
        self.base + STACK_TOP
    }

    /// The compared ordinary memory: [`MEMORY_LEN`] bytes centred on the stack top.
    pub fn memory_base(&self) -> u64 {
        self.stack_top() - MEMORY_LEN as u64 / 2
    }

    /// This thread's fs base.
    pub fn fs_base(&self) -> u64 {
        self.fs_base
    }

    /// This thread's gs base.
    pub fn gs_base(&self) -> u64 {
        self.gs_base
    }

    /// Whether a landing stub fits at `addr` without touching the instruction `code_len` bytes
    /// long (and its prologue).
    pub fn can_land(&self, addr: u64, code_len: usize) -> bool {
        let Some(rel) = addr.checked_sub(self.base) else {
            return false;
        };
        let code = CODE - PROLOGUE..CODE + code_len as u64;
        ZONE.contains(&rel)
            && rel + STUB_LEN <= ZONE.end
            && (rel + STUB_LEN <= code.start || rel >= code.end)
    }

    /// A few landing addresses for constructed control transfers (distinct from the code).
    pub fn landing_targets(&self) -> [u64; 4] {
        let b = self.base;
        [b + 0x1200, b + 0x1A33, b + 0x2800, b + 0x2E51]
    }

    fn fill(&self, off: u64, len: u64, byte: u8) {
        // SAFETY: off..off+len lies inside the arena mapping (callers pass arena offsets).
        unsafe { std::ptr::write_bytes((self.base + off) as *mut u8, byte, len as usize) };
    }

    fn put(&self, addr: u64, bytes: &[u8]) {
        debug_assert!(
            addr >= self.base && addr + bytes.len() as u64 <= self.base + ARENA_SIZE as u64
        );
        // SAFETY: the destination lies inside the arena mapping, which no Rust reference covers.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
    }

    fn block(&self) -> *mut Block {
        (self.base + BLOCK) as *mut Block
    }

    /// Copies `image` to the native image.
    pub fn set_image(&self, image: &[u8; IMAGE_LEN]) {
        self.put(self.native_base(), image);
    }

    /// The native image now.
    pub fn image(&self) -> [u8; IMAGE_LEN] {
        let mut out = [0u8; IMAGE_LEN];
        // SAFETY: the image lies inside the arena mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.native_base() as *const u8,
                out.as_mut_ptr(),
                IMAGE_LEN,
            )
        };
        out
    }

    /// Copies `bytes` to the compared ordinary memory.
    pub fn set_memory(&self, bytes: &[u8; MEMORY_LEN]) {
        self.put(self.memory_base(), bytes);
    }

    /// The compared ordinary memory now.
    pub fn memory(&self) -> [u8; MEMORY_LEN] {
        let mut out = [0u8; MEMORY_LEN];
        // SAFETY: the region lies inside the arena mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.memory_base() as *const u8,
                out.as_mut_ptr(),
                MEMORY_LEN,
            )
        };
        out
    }

    fn encode_at(&self, ip: u64, instr: &Instruction) -> Vec<u8> {
        let mut e = Encoder::new(64);
        e.encode(instr, ip).expect("encode trampoline code");
        e.take_buffer()
    }

    /// The exit code at `EXIT`: every register to `Block.gpr_out` with rip-relative moves, rsp
    /// back to the host stack, flags to `Block.flags_out`, then `jmp [Block.leave]`.
    fn write_exit_code(&self) {
        let b = self.base + BLOCK;
        let mut ip = self.base + EXIT;
        let mut emit = |instr: Instruction| {
            let bytes = self.encode_at(ip, &instr);
            self.put(ip, &bytes);
            ip += bytes.len() as u64;
        };
        let rip = |addr: u64| MemoryOperand::with_base_displ(Register::RIP, addr as i64);
        let regs = [
            Register::RAX,
            Register::RCX,
            Register::RDX,
            Register::RBX,
            Register::RSP,
            Register::RBP,
            Register::RSI,
            Register::RDI,
            Register::R8,
            Register::R9,
            Register::R10,
            Register::R11,
            Register::R12,
            Register::R13,
            Register::R14,
            Register::R15,
        ];
        for (n, r) in regs.iter().enumerate() {
            // mov [rip + gpr_out[n]], reg: stores leave the flags alone.
            emit(Instruction::with2(Code::Mov_rm64_r64, rip(b + 0xA0 + 8 * n as u64), *r).unwrap());
        }
        // mov rsp, [rip + host_rsp]: back on the host stack.
        emit(Instruction::with2(Code::Mov_r64_rm64, Register::RSP, rip(b + 0x90)).unwrap());
        // pushfq; pop [rip + flags_out]: the guest's flags, unchanged by the moves above.
        emit(Instruction::with(Code::Pushfq));
        emit(Instruction::with1(Code::Pop_rm64, rip(b + 0x120)).unwrap());
        // jmp [rip + leave]: restore the host registers and return.
        emit(Instruction::with1(Code::Jmp_rm64, rip(b + 0x98)).unwrap());
        assert!(ip <= self.base + ZONE.start);
        // The prologue before the instruction under test: mov rdi, [rip + gpr_in.rdi].
        let prologue = self.encode_at(
            self.base + CODE - PROLOGUE,
            &Instruction::with2(Code::Mov_r64_rm64, Register::RDI, rip(b + 0x38)).unwrap(),
        );
        assert_eq!(prologue.len() as u64, PROLOGUE);
        self.put(self.base + CODE - PROLOGUE, &prologue);
    }

    /// Runs `code` (one instruction, at most 15 bytes) at [`Arena::code_address`] with `gpr`
    /// (rsp included) and the status flags and DF of `rflags`; the landing stub is at
    /// `landing`, which must satisfy [`Arena::can_land`]. The image and memory are whatever
    /// [`Arena::set_image`] and [`Arena::set_memory`] left.
    pub fn run(&mut self, code: &[u8], landing: u64, gpr: [u64; 16], rflags: u64) -> Exit {
        self.run_with(Some(code), code.len(), landing, gpr, rflags, true)
    }

    /// Like [`Arena::run`], but leaves the instruction in place afterwards, so that `of` may
    /// patch the site before [`Arena::rerun`] runs it again.
    pub fn run_keep(&mut self, code: &[u8], landing: u64, gpr: [u64; 16], rflags: u64) -> Exit {
        self.run_with(Some(code), code.len(), landing, gpr, rflags, false)
    }

    /// Runs the instruction [`Arena::run_keep`] left in place (of `len` bytes), whatever it has
    /// become (a patched site is a jump to `of`'s generated code), then clears it.
    pub fn rerun(&mut self, len: usize, landing: u64, gpr: [u64; 16], rflags: u64) -> Exit {
        self.run_with(None, len, landing, gpr, rflags, true)
    }

    /// The byte at the start of the instruction zone (0xE9 once `of` patched the site there).
    pub fn first_code_byte(&self) -> u8 {
        // SAFETY: the code address lies inside the arena mapping.
        unsafe { core::ptr::read_volatile(self.code_address() as *const u8) }
    }

    fn run_with(
        &mut self,
        code: Option<&[u8]>,
        len: usize,
        landing: u64,
        gpr: [u64; 16],
        rflags: u64,
        clear: bool,
    ) -> Exit {
        assert!(len <= 15 && self.can_land(landing, len));
        let at = self.code_address();
        if let Some(code) = code {
            self.put(at, code);
        }
        let rel = (self.base + EXIT).wrapping_sub(landing + STUB_LEN) as u32;
        let mut stub = [0xE9u8, 0, 0, 0, 0];
        stub[1..].copy_from_slice(&rel.to_le_bytes());
        self.put(landing, &stub);
        let block = self.block();
        // SAFETY: the block lies inside the arena mapping; no reference to it is live.
        unsafe {
            let b = &mut *block;
            b.gpr_in = gpr;
            b.flags_in = (rflags & (STATUS | DF)) | RFLAGS_FIXED;
            b.entry = at - PROLOGUE;
            b.leave = of_difftest_leave as *const () as u64;
            b.signal = 0;
            b.trap_rip = 0;
        }
        CURRENT.with(|c| c.set(block));
        // SAFETY: the arena holds the prologue, the instruction, a stub to the exit code and
        // `int3` everywhere else in the zone; the entry trampoline preserves the host's
        // callee-saved registers and rsp and returns with DF clear, as the ABI requires. The
        // instruction's memory accesses go to the arena, to the map (emulated by `of`), or to
        // the compared memory next to the private stack — the case builder guarantees it.
        unsafe { of_difftest_enter(block) };
        CURRENT.with(|c| c.set(std::ptr::null_mut()));
        // SAFETY: as above; the run is over.
        let b = unsafe { *block };
        if clear {
            self.fill(CODE, len as u64, 0xCC);
        }
        self.fill(landing - self.base, STUB_LEN, 0xCC);
        Exit {
            gpr: b.gpr_out,
            rflags: b.flags_out,
            signal: b.signal as i32,
            landed: if b.signal == 0 { landing } else { b.trap_rip },
        }
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: unmapping our own arena; nothing refers to it after the last run.
        unsafe { libc::munmap(self.base as *mut libc::c_void, ARENA_SIZE) };
    }
}
