//! The SIGSEGV/SIGBUS handler: from the signal to a decision (emulate, chain, report).
//!
//! [`install`] puts [`handler`] in place for SIGSEGV and SIGBUS with
//! `SA_SIGINFO | SA_ONSTACK` and every signal blocked while it runs (so another signal's
//! handler cannot interrupt an emulation half-way; a page-0 access *inside* another signal's
//! handler still works, since that handler does not block SIGSEGV). The previous actions are
//! saved for [`chain::chain`].
//!
//! A fault is a register access (SPEC §4) only if: the signal is SIGSEGV with `si_code`
//! SEGV_MAPERR/SEGV_ACCERR or SIGBUS with BUS_ADRERR (never SI_USER, SI_TKILL or SI_KERNEL, which
//! is how #GP arrives); `si_addr` is in page 0; `rip` is not in page 0; and the decoded
//! instruction's accesses cover `si_addr` and lie in mapped bytes. Anything else is chained.

pub mod altstack;
pub mod chain;
pub mod context;
pub mod report;
pub mod stacks;
pub mod stats;

pub use stats::{Refusal, Site, Stats, stats};

use crate::decode::MAX_INSTRUCTION_LEN;
use crate::emulate::{self, EmulationError};
use crate::map::PAGE_SIZE;
use context::SignalContext;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use report::codes;

/// Why [`install`] failed.
///
/// # Examples
///
/// ```
/// use of_core::signal::{InstallError, install};
///
/// match install() {
///     Ok(()) => {}
///     Err(e @ InstallError::Sigaction { .. }) => panic!("{e}"),
///     Err(InstallError::ExecutableMemory) => panic!("no W+X memory: arithmetic needs it"),
/// }
/// let e = InstallError::Sigaction { signal: libc::SIGSEGV, errno: libc::EINVAL };
/// assert_eq!(e.to_string(), format!("sigaction({}) failed with errno {}", libc::SIGSEGV, libc::EINVAL));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// sigaction(2) failed for this signal, with this errno.
    Sigaction {
        /// The signal.
        signal: i32,
        /// errno.
        errno: i32,
    },
    /// The kernel refused a writable and executable mapping for host execution (mmap(2)).
    ExecutableMemory,
}

impl core::fmt::Display for InstallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InstallError::Sigaction { signal, errno } => {
                write!(f, "sigaction({signal}) failed with errno {errno}")
            }
            InstallError::ExecutableMemory => {
                f.write_str("mmap refused writable+executable memory for host execution")
            }
        }
    }
}

/// 0: not installed, 1: being installed, 2: installed, 3: failed.
static STATE: AtomicU8 = AtomicU8::new(0);
static mut INSTALL_ERROR: Option<InstallError> = None;

/// Installs the handler for SIGSEGV and SIGBUS, once per process. Thread-safe and idempotent:
/// concurrent callers wait for the first to finish and get its result.
///
/// # Errors
/// [`InstallError`] if sigaction(2) or the executable-memory mapping fails.
///
/// # Examples
///
/// After installation an access to the map is emulated on the interrupted thread's registers.
/// `add qword ptr [8], 1` adds 1 to rcx (bytes 8..16 of the map):
///
/// ```
/// use of_core::signal;
///
/// signal::install().unwrap();
/// signal::install().unwrap(); // idempotent
/// let mut rcx: u64 = 41;
/// // SAFETY: with the handler installed, the page-0 access is emulated: it changes only rcx
/// // (declared inout) and the status flags (no preserves_flags).
/// unsafe { core::arch::asm!("add qword ptr [8], 1", inout("rcx") rcx, options(nostack)) };
/// assert_eq!(rcx, 42);
///
/// // A read of the rip slot gives the address of the next instruction.
/// let (rip, next): (u64, u64);
/// // SAFETY: as above; the lea computes the address of label 2, after the mov.
/// unsafe {
///     core::arch::asm!(
///         "mov {r}, qword ptr [0x80]",
///         "2:",
///         "lea {n}, [rip + 2b]",
///         r = out(reg) rip,
///         n = out(reg) next,
///         options(nostack),
///     )
/// };
/// assert_eq!(rip, next);
/// ```
pub fn install() -> Result<(), InstallError> {
    loop {
        match STATE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(2) => return Ok(()),
            // SAFETY: INSTALL_ERROR is written before STATE becomes 3 (Release) and never again.
            Err(3) => {
                return Err(unsafe { *core::ptr::addr_of!(INSTALL_ERROR) }
                    .unwrap_or(InstallError::ExecutableMemory));
            }
            Err(_) => {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }
    let r = install_now();
    if let Err(e) = r {
        // SAFETY: only the thread that won the race (STATE == 1) writes, before publishing 3.
        unsafe { *core::ptr::addr_of_mut!(INSTALL_ERROR) = Some(e) };
        STATE.store(3, Ordering::Release);
    } else {
        STATE.store(2, Ordering::Release);
    }
    r
}

/// Whether the handler is installed.
///
/// # Examples
///
/// ```
/// use of_core::signal::{install, installed};
///
/// assert!(!installed()); // each doctest is a fresh process
/// install().unwrap();
/// assert!(installed());
/// ```
pub fn installed() -> bool {
    STATE.load(Ordering::Acquire) == 2
}

fn install_now() -> Result<(), InstallError> {
    // SAFETY: getenv is called before the handler is installed, not from a signal handler.
    let env = unsafe { libc::getenv(c"OF_RUNAHEAD".as_ptr()) };
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    if !env.is_null() && unsafe { *env } == b'0' as libc::c_char {
        set_runahead(false);
    }
    // SAFETY: as above.
    let patch = unsafe { libc::getenv(c"OF_PATCH".as_ptr()) };
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    let patch = !patch.is_null() && unsafe { *patch } == b'1' as libc::c_char;
    if !emulate::hostexec::init() {
        return Err(InstallError::ExecutableMemory);
    }
    report::prepare();
    stacks::init();
    // CPU features and the XSAVE layout, read now so the handler finds them ready.
    let _ = crate::cpu::get();
    report::find_si_addr_offset();
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a zeroed sigaction is valid; we fill handler, flags and mask, and the
        // previous action is stored in its slot before STATE publishes the handler's readiness
        // (the handler itself reads the slot only when chaining).
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigfillset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, chain::PREVIOUS.slot(sig)) != 0 {
                return Err(InstallError::Sigaction {
                    signal: sig,
                    errno: *libc::__errno_location(),
                });
            }
        }
    }
    if patch {
        // Off silently where the system cannot do it (the fault path works regardless).
        set_patching(true);
    }
    crate::trace::from_env();
    // SAFETY: as above.
    let print_stats = unsafe { libc::getenv(c"OF_STATS".as_ptr()) };
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    if !print_stats.is_null() && unsafe { *print_stats } == b'1' as libc::c_char {
        stats::print_at_exit();
    }
    Ok(())
}

/// What the handler decided.
enum Outcome {
    /// A page-0 access that is not a register access: pass it on, and say so in one line if
    /// the process is going to die of it (see [`handler`]).
    ChainWithNote(Note),
    /// Emulated (or an exception was raised): return to the thread.
    Resume,
    /// Not ours: pass to the previous action.
    Chain,
}

/// What to say about a page-0 fault that is not a register access.
struct Note {
    instr: Option<iced_x86::Instruction>,
    addr: u64,
    rip: u64,
    why: Option<emulate::NotOurs>,
    /// The fault is an instruction fetch from page 0.
    fetch: bool,
}

impl Note {
    fn print(&self) {
        if self.fetch {
            report::execute_in_page0(self.rip);
        } else {
            report::outside_map(self.instr.as_ref(), self.addr, self.rip, self.why);
        }
    }
}

/// The SIGSEGV/SIGBUS handler.
///
/// # Safety
/// Called by the kernel with a valid siginfo and ucontext for `sig`.
///
/// # Examples
///
/// [`install`] registers it for SIGSEGV and SIGBUS with `SA_SIGINFO | SA_ONSTACK`:
///
/// ```
/// use of_core::signal::{handler, install};
///
/// install().unwrap();
/// for sig in [libc::SIGSEGV, libc::SIGBUS] {
///     // SAFETY: sigaction with a null new action only reads the current one.
///     let mut cur: libc::sigaction = unsafe { core::mem::zeroed() };
///     assert_eq!(unsafe { libc::sigaction(sig, core::ptr::null(), &mut cur) }, 0);
///     assert_eq!(cur.sa_sigaction, handler as *const () as usize);
///     assert_ne!(cur.sa_flags & libc::SA_SIGINFO, 0);
///     assert_ne!(cur.sa_flags & libc::SA_ONSTACK, 0);
/// }
/// ```
pub unsafe extern "C" fn handler(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    let mut args = Args { sig, info, ctx };
    // SAFETY: `body` takes a pointer to `args`, which outlives the call, and does not unwind
    // (it is extern "C": a panic aborts).
    unsafe { stacks::run_on_pool_stack(body, (&mut args as *mut Args).cast()) };
}

/// The handler's arguments, passed to [`body`] across the stack switch.
struct Args {
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
}

/// The handler proper, on a pool stack.
///
/// # Safety
/// `args` points to the [`Args`] of the current signal.
unsafe extern "C" fn body(args: *mut u8) {
    // SAFETY: the caller passes a valid Args.
    let Args { sig, info, ctx } = unsafe { &*args.cast::<Args>() };
    let (sig, info, ctx) = (*sig, *info, *ctx);
    // SAFETY: errno is thread-local; saving and restoring it keeps the interrupted code's value.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes valid pointers for an SA_SIGINFO handler.
    let outcome = unsafe { handle(sig, &*info, &mut *ctx.cast::<libc::ucontext_t>()) };
    if !matches!(outcome, Outcome::Resume) {
        stats::PASSED_ON.fetch_add(1, Ordering::Relaxed);
    }
    if let Outcome::ChainWithNote(note) = outcome {
        // The line is for a fault that kills the process: print it first when the previous
        // action is the default one; when a previous handler declines the fault by restoring
        // the default action (as Rust's std handler does for faults that are not stack
        // overflows), print it after that handler returns, before the fault re-occurs.
        if chain::PREVIOUS.is_default(sig) {
            note.print();
            // SAFETY: our own arguments, passed on unchanged.
            unsafe { chain::chain(sig, info, ctx) };
        } else {
            // SAFETY: our own arguments, passed on unchanged.
            unsafe { chain::chain(sig, info, ctx) };
            if chain::current_is_default(sig) {
                note.print();
            }
        }
    } else if let Outcome::Chain = outcome {
        // SAFETY: our own arguments, passed on unchanged.
        unsafe { chain::chain(sig, info, ctx) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Copies the instruction bytes at `rip` into `buf` without reading unmapped memory: the bytes
/// up to the end of rip's page are readable (the CPU just fetched from it); bytes beyond are read
/// with process_vm_readv, which fails instead of faulting. Returns how many bytes were read.
fn fetch(rip: u64, buf: &mut [u8; 16]) -> usize {
    let in_page = (PAGE_SIZE - (rip & (PAGE_SIZE - 1))) as usize;
    if in_page >= 16 {
        // SAFETY: rip..rip+16 lies in rip's page, which is mapped (the faulting instruction was
        // fetched from it). One unaligned 16-byte load.
        *buf = unsafe { core::ptr::read_unaligned(rip as *const u128) }.to_le_bytes();
        return MAX_INSTRUCTION_LEN;
    }
    let direct = in_page.min(MAX_INSTRUCTION_LEN);
    for (i, b) in buf.iter_mut().enumerate().take(direct) {
        // SAFETY: rip's page is mapped (the faulting instruction was fetched from it) and
        // rip + i stays inside it.
        *b = unsafe { core::ptr::read_volatile((rip + i as u64) as *const u8) };
    }
    if direct == MAX_INSTRUCTION_LEN {
        return direct;
    }
    let rest = &mut buf[direct..MAX_INSTRUCTION_LEN];
    let mut n = rest.len();
    while n > 0 {
        if context::read_memory(rip + direct as u64, &mut rest[..n]).is_ok() {
            return direct + n;
        }
        n /= 2;
    }
    direct
}

/// The decision procedure of SPEC §4, then emulation.
fn handle(sig: libc::c_int, info: &libc::siginfo_t, uc: &mut libc::ucontext_t) -> Outcome {
    stats::FAULTS.fetch_add(1, Ordering::Relaxed);
    let code = info.si_code;
    let memory_fault = match sig {
        libc::SIGSEGV => code == codes::SEGV_MAPERR || code == codes::SEGV_ACCERR,
        libc::SIGBUS => code == codes::BUS_ADRERR,
        _ => false,
    };
    if !memory_fault {
        return Outcome::Chain;
    }
    // SAFETY: for SIGSEGV/SIGBUS raised by a memory access the kernel fills si_addr.
    let addr = unsafe { info.si_addr() } as u64;
    let in_region = addr >= PAGE_SIZE && crate::region::contains(addr);
    if addr >= PAGE_SIZE && !in_region {
        return Outcome::Chain;
    }
    let mut m = SignalContext::new(uc);
    let rip = crate::machine::Machine::rip(&m);
    if rip < PAGE_SIZE {
        return Outcome::ChainWithNote(Note {
            instr: None,
            addr,
            rip,
            why: None,
            fetch: true,
        });
    }
    let mut bytes = [0u8; 16];
    let mut len = fetch(rip, &mut bytes);
    let original = crate::patch::original_instruction(rip, &mut bytes);
    if original {
        // The CPU ran the site's original instruction, which is now being (or was just)
        // replaced by a jump: emulate what faulted.
        len = MAX_INSTRUCTION_LEN;
    }
    let Ok((instr, offsets)) = crate::icache::decode(&bytes, len, rip) else {
        return Outcome::ChainWithNote(Note {
            instr: None,
            addr,
            rip,
            why: None,
            fetch: false,
        });
    };
    // Trapped regions: an instruction that touches one holds the bus from its first device
    // access to the end of its run-ahead (released when `bus` drops).
    let bus = bus_for(&mut m, &instr, &bytes[..len], in_region);
    let region_site = bus.is_some();
    let before = crate::trace::fd().map(|_| crate::trace::Snap::of(&m));
    match emulate::emulate(&mut m, &instr, &bytes[..len], &offsets, Some(addr)) {
        Ok(()) => {
            if let Some(before) = &before {
                let after = crate::trace::Snap::of(&m);
                crate::trace::emit("fault", &instr, &bytes[..len], before, &after);
            }
            stats::FAULTS_EMULATED.fetch_add(1, Ordering::Relaxed);
            stats::site(rip, &bytes[..len]);
            if !original {
                crate::patch::on_emulated_fault(rip, &bytes[..len], &instr, region_site);
            }
            if runahead_enabled() && !unproductive::skip(rip) {
                let start = rip & !(PAGE_SIZE - 1);
                let end = (rip + instr.len() as u64 - 1) | (PAGE_SIZE - 1);
                let mut code = FetchedCode {
                    start,
                    end: end.wrapping_add(1),
                };
                // Look before emulating: run ahead only when that reaches another map access.
                let next = crate::machine::Machine::rip(&m);
                let n = if emulate::runahead::reaches_map(&m, &mut code, next) {
                    emulate::runahead::run(&mut m, &mut code, RUNAHEAD_MAX)
                } else {
                    0
                };
                unproductive::record(rip, n);
                if n > 0 {
                    stats::RUNAHEAD_INSTRUCTIONS.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            Outcome::Resume
        }
        Err(EmulationError::NotOurs(why)) => Outcome::ChainWithNote(Note {
            instr: Some(instr),
            addr,
            rip,
            why: Some(why),
            fetch: false,
        }),
        Err(EmulationError::Unsupported(reason)) => {
            stats::refused(reason);
            report::cannot_emulate(&instr, &bytes[..len], reason);
            stats::print_before_dying();
            // The instruction faults again on return and the default action kills the process
            // with SIGSEGV at that instruction (core dump included).
            chain::reset_default(libc::SIGSEGV);
            chain::reset_default(libc::SIGBUS);
            Outcome::Resume
        }
        Err(EmulationError::Exception(e)) => {
            stats::EXCEPTIONS.fetch_add(1, Ordering::Relaxed);
            report::raise(uc, e, rip);
            Outcome::Resume
        }
    }
}

/// Takes the regions' bus for `m` if `instr` touches a region (`known`: the fault address is
/// in one): then region accesses are served by their devices until the guard drops. The fault
/// handler holds it through the run-ahead; the SIGTRAP handler of a patch in progress for the
/// site's original instruction.
pub(crate) fn bus_for(
    m: &mut SignalContext,
    instr: &iced_x86::Instruction,
    bytes: &[u8],
    known: bool,
) -> Option<crate::region::Bus> {
    (known || touches_region(m, instr)).then(|| {
        m.set_bus(true);
        crate::region::Bus::take(bytes)
    })
}

/// Whether any access of `instr` lies in a trapped region (only looked at while regions exist).
fn touches_region(m: &SignalContext, instr: &iced_x86::Instruction) -> bool {
    crate::region::any() && crate::region::touched_by(m, instr, emulate::table::classify(instr))
}

/// Faulting instructions after which run-ahead recently found nothing to do (the next
/// instruction touches ordinary memory, say): the look costs a few percent of an isolated
/// access, so for the next [`unproductive::RETRY`] faults at such a rip it is skipped, then
/// tried again. Skipping is always correct — run-ahead only saves faults; the CPU then runs the
/// next instruction itself (and faults again if it does touch the map) — so the table is a
/// hint: one atomic word per slot, races between threads only cost a look or a fault.
mod unproductive {
    use core::sync::atomic::{AtomicU64, Ordering};

    /// Slots (direct-mapped by rip).
    const SLOTS: usize = 256;
    /// Faults skipped before run-ahead is tried again at the same rip.
    pub const RETRY: u64 = 15;

    /// Each slot holds `rip << 8 | faults left to skip`, or 0 (user-space rips are below 2^56
    /// even with 5-level paging, so the shift loses no bit).
    static HINTS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

    fn slot(rip: u64) -> &'static AtomicU64 {
        // Fibonacci hashing: instruction addresses are not uniformly spread in the low bits.
        &HINTS[(rip.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % SLOTS]
    }

    /// Whether to skip run-ahead after the instruction at `rip` (counts the skip down).
    pub fn skip(rip: u64) -> bool {
        let s = slot(rip);
        let e = s.load(Ordering::Relaxed);
        if e >> 8 == rip && e & 0xFF != 0 {
            s.store(e - 1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Records that run-ahead after `rip` emulated `n` instructions.
    pub fn record(rip: u64, n: usize) {
        let s = slot(rip);
        if n == 0 {
            s.store(rip << 8 | RETRY, Ordering::Relaxed);
        } else if s.load(Ordering::Relaxed) >> 8 == rip {
            s.store(0, Ordering::Relaxed);
        }
    }
}

/// Whether run-ahead is on (see [`crate::emulate::runahead`]); on unless `OF_RUNAHEAD=0` was
/// set when the handler was installed, or [`set_runahead`] turned it off.
static RUNAHEAD: AtomicBool = AtomicBool::new(true);

/// The most instructions one fault may run ahead.
///
/// # Examples
///
/// ```
/// use of_core::signal::RUNAHEAD_MAX;
///
/// // A bound, not a promise: run-ahead stops earlier at the first instruction it cannot do.
/// assert!(RUNAHEAD_MAX >= 1);
/// ```
pub const RUNAHEAD_MAX: usize = 4096;

/// Whether run-ahead emulation is on.
///
/// # Examples
///
/// ```
/// use of_core::signal::{runahead_enabled, set_runahead};
///
/// set_runahead(false);
/// assert!(!runahead_enabled());
/// set_runahead(true);
/// assert!(runahead_enabled());
/// ```
pub fn runahead_enabled() -> bool {
    RUNAHEAD.load(Ordering::Relaxed)
}

/// Turns run-ahead emulation on or off for the whole process (takes effect at the next fault).
///
/// # Examples
///
/// With run-ahead off, every map instruction faults on its own:
///
/// ```
/// use of_core::signal::{self, set_runahead, stats};
///
/// signal::install().unwrap();
/// set_runahead(false);
/// let before = stats();
/// let mut rcx: u64 = 0;
/// // SAFETY: both page-0 accesses are emulated and change only rcx and the status flags.
/// unsafe {
///     core::arch::asm!(
///         "add qword ptr [8], 1",
///         "add qword ptr [8], 1",
///         inout("rcx") rcx,
///         options(nostack),
///     )
/// };
/// assert_eq!(rcx, 2);
/// let after = stats();
/// assert_eq!(after.faults_emulated, before.faults_emulated + 2);
/// assert_eq!(after.runahead_instructions, before.runahead_instructions);
/// ```
pub fn set_runahead(on: bool) {
    RUNAHEAD.store(on, Ordering::Relaxed);
}

/// Turns site patching (SPEC §6, [`crate::patch`]) on or off. Also set by `OF_PATCH=1` in the
/// environment when the handler is installed. Off by default. Returns whether patching is on
/// afterwards (turning it on fails where the kernel lacks core-serialising membarriers).
///
/// # Examples
///
/// ```
/// use of_core::signal::{patching_enabled, set_patching};
///
/// if set_patching(true) {
///     assert!(patching_enabled());
/// }
/// assert!(!set_patching(false));
/// assert!(!patching_enabled());
/// ```
pub fn set_patching(on: bool) -> bool {
    if on {
        crate::patch::enable()
    } else {
        crate::patch::disable();
        false
    }
}

/// Whether site patching is on (see [`set_patching`]).
///
/// # Examples
///
/// ```
/// let _ = of_core::signal::patching_enabled();
/// ```
pub fn patching_enabled() -> bool {
    crate::patch::enabled()
}

/// Run-ahead's view of the interrupted thread's code: only the page(s) the faulting
/// instruction was fetched from, which the CPU has proven executable.
struct FetchedCode {
    start: u64,
    end: u64,
}

impl emulate::runahead::CodeSource for FetchedCode {
    fn fetch(&mut self, rip: u64, buf: &mut [u8; 16]) -> usize {
        if rip < self.start || rip >= self.end {
            return 0;
        }
        let n = ((self.end - rip) as usize).min(MAX_INSTRUCTION_LEN);
        if self.end - rip >= 16 {
            // SAFETY: rip..rip+16 lies in the page(s) the CPU fetched the faulting instruction
            // from. One unaligned 16-byte load (the bytes are re-validated by the caller).
            *buf = unsafe { core::ptr::read_unaligned(rip as *const u128) }.to_le_bytes();
            return n;
        }
        for (i, b) in buf.iter_mut().enumerate().take(n) {
            // SAFETY: rip + i lies in a page the CPU fetched the faulting instruction from.
            *b = unsafe { core::ptr::read_volatile((rip + i as u64) as *const u8) };
        }
        n
    }

    fn decode(
        &mut self,
        bytes: &[u8; 16],
        n: usize,
        rip: u64,
    ) -> Option<(iced_x86::Instruction, iced_x86::ConstantOffsets)> {
        crate::icache::decode(bytes, n, rip).ok()
    }

    fn tracing(&self) -> bool {
        crate::trace::fd().is_some()
    }

    fn traced(
        &mut self,
        instr: &iced_x86::Instruction,
        bytes: &[u8],
        before: &crate::trace::Snap,
        after: &crate::trace::Snap,
    ) {
        crate::trace::emit("run-ahead", instr, bytes, before, after);
    }

    fn counts_region_sites(&self) -> bool {
        crate::patch::enabled() && crate::region::any()
    }

    fn region_site(&mut self, instr: &iced_x86::Instruction, bytes: &[u8]) {
        crate::patch::on_emulated_fault(instr.ip(), bytes, instr, true);
    }

    fn signal_pending(&mut self) -> bool {
        let mut set: u64 = 0;
        // SAFETY: rt_sigpending writes the kernel's 8-byte signal set to `set`.
        let r = unsafe { libc::syscall(libc::SYS_rt_sigpending, &mut set as *mut u64, 8usize) };
        r != 0 || set != 0
    }
}
