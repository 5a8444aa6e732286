//! What the handler says and raises when it does not emulate: the one-line diagnostics of
//! SPEC §4, and exceptions delivered the way the CPU would have delivered them.

use crate::diag::Line;
use crate::emulate::{Exception, NotOurs};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use iced_x86::{Formatter, FormatterOutput, FormatterTextKind, Instruction, MasmFormatter};

struct FormatterCell(UnsafeCell<Option<MasmFormatter>>);
// SAFETY: access is serialised by FORMATTER_BUSY (a try-lock that never waits).
unsafe impl Sync for FormatterCell {}

static FORMATTER: FormatterCell = FormatterCell(UnsafeCell::new(None));
static FORMATTER_BUSY: AtomicBool = AtomicBool::new(false);

/// Creates the formatter and warms iced-x86's lazily built tables, so that the handler never
/// allocates. Called once at installation, before the handler is published.
///
/// The syntax is iced-x86's MASM flavour: Intel operand order and `ptr` sizes, without the
/// implicit operands XED-style output names, so the line says `fld qword ptr [8]` as in SPEC
/// §4 (not `fld st,qword ptr [8]`).
///
/// # Examples
///
/// (`capture`, hidden, runs a closure with standard error redirected to a pipe and returns
/// what it wrote.)
///
/// ```
/// # /// Runs `f` with standard error redirected to a pipe and returns what it wrote.
/// # fn capture(f: impl FnOnce()) -> String {
/// #     let mut fds = [0; 2];
/// #     // SAFETY: pipe/dup/dup2/read/close on descriptors this function owns; the text is
/// #     // shorter than a pipe's buffer.
/// #     unsafe {
/// #         assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
/// #         let saved = libc::dup(2);
/// #         libc::dup2(fds[1], 2);
/// #         f();
/// #         libc::dup2(saved, 2);
/// #         libc::close(saved);
/// #         libc::close(fds[1]);
/// #         let mut buf = [0u8; 2048];
/// #         let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
/// #         libc::close(fds[0]);
/// #         String::from_utf8(buf[..n.max(0) as usize].to_vec()).unwrap()
/// #     }
/// # }
/// use of_core::decode::decode;
/// use of_core::signal::report::{cannot_emulate, prepare};
///
/// // fld qword ptr [8] (dd 04 25 08 00 00 00)
/// let bytes = [0xDD, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (instr, _) = decode(&bytes, 0x1000).unwrap();
/// // Without the formatter, the instruction's text is left out rather than allocated for.
/// let before = capture(|| cannot_emulate(&instr, &bytes, "why"));
/// assert!(before.contains("`(instruction)`"), "{before}");
/// prepare();
/// let after = capture(|| cannot_emulate(&instr, &bytes, "why"));
/// assert!(after.contains("`fld qword ptr [8]`"), "{after}");
/// ```
pub fn prepare() {
    if FORMATTER_BUSY.swap(true, Ordering::Acquire) {
        return;
    }
    // SAFETY: FORMATTER_BUSY is held.
    let f = unsafe { &mut *FORMATTER.0.get() };
    if f.is_none() {
        let mut fmt = MasmFormatter::new();
        fmt.options_mut().set_space_after_operand_separator(true);
        fmt.options_mut().set_hex_prefix("0x");
        fmt.options_mut().set_hex_suffix("");
        fmt.options_mut().set_uppercase_hex(false);
        fmt.options_mut()
            .set_memory_size_options(iced_x86::MemorySizeOptions::Always);
        // Decode and format one instruction of each common shape to build the tables.
        for bytes in [
            &b"\x48\x01\x04\x25\x08\x00\x00\x00"[..],
            b"\xdd\x04\x25\x08\x00\x00\x00",
            b"\xc5\xfe\x6f\x04\x25\x00\x00\x00\x00",
        ] {
            if let Ok((i, _)) = crate::decode::decode(bytes, 0x1000) {
                let mut line = Line::default();
                fmt.format(&i, &mut LineOutput(&mut line));
            }
        }
        *f = Some(fmt);
    }
    FORMATTER_BUSY.store(false, Ordering::Release);
}

struct LineOutput<'a>(&'a mut Line);

impl FormatterOutput for LineOutput<'_> {
    fn write(&mut self, text: &str, _kind: FormatterTextKind) {
        self.0.push_str(text);
    }
}

/// Appends the Intel-syntax text of `instr`, or `(busy)` if another thread is formatting.
pub(crate) fn push_disassembly(line: &mut Line, instr: &Instruction) {
    if FORMATTER_BUSY.swap(true, Ordering::Acquire) {
        line.push_str("(instruction)");
        return;
    }
    // SAFETY: FORMATTER_BUSY is held.
    match unsafe { &mut *FORMATTER.0.get() } {
        Some(f) => f.format(instr, &mut LineOutput(line)),
        None => line.push_str("(instruction)"),
    }
    FORMATTER_BUSY.store(false, Ordering::Release);
}

/// Prints ``of: cannot emulate `INSTR` (BYTES) at RIP: REASON``.
///
/// # Examples
///
/// (`capture`, hidden, runs a closure with standard error redirected to a pipe and returns
/// what it wrote.)
///
/// ```
/// # /// Runs `f` with standard error redirected to a pipe and returns what it wrote.
/// # fn capture(f: impl FnOnce()) -> String {
/// #     let mut fds = [0; 2];
/// #     // SAFETY: pipe/dup/dup2/read/close on descriptors this function owns; the text is
/// #     // shorter than a pipe's buffer.
/// #     unsafe {
/// #         assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
/// #         let saved = libc::dup(2);
/// #         libc::dup2(fds[1], 2);
/// #         f();
/// #         libc::dup2(saved, 2);
/// #         libc::close(saved);
/// #         libc::close(fds[1]);
/// #         let mut buf = [0u8; 2048];
/// #         let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
/// #         libc::close(fds[0]);
/// #         String::from_utf8(buf[..n.max(0) as usize].to_vec()).unwrap()
/// #     }
/// # }
/// use of_core::decode::decode;
/// use of_core::signal::report::{cannot_emulate, prepare};
///
/// prepare();
/// // fld qword ptr [8] (dd 04 25 08 00 00 00), the example line of SPEC §4.
/// let bytes = [0xDD, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (instr, _) = decode(&bytes, 0x55d0_c0a0_1234).unwrap();
/// let line = capture(|| cannot_emulate(&instr, &bytes, "x87 memory operands are not mapped"));
/// assert_eq!(
///     line,
///     "of: cannot emulate `fld qword ptr [8]` (dd 04 25 08 00 00 00) at 0x55d0c0a01234: \
///      x87 memory operands are not mapped\n"
/// );
/// ```
pub fn cannot_emulate(instr: &Instruction, bytes: &[u8], reason: &str) {
    let mut line = Line::default();
    line.push_str("of: cannot emulate `");
    push_disassembly(&mut line, instr);
    line.push_str("` (");
    line.push_bytes(&bytes[..instr.len().min(bytes.len())]);
    line.push_str(") at ");
    line.push_hex(instr.ip());
    line.push_str(": ");
    line.push_str(reason);
    line.emit();
}

/// Prints ``of: SIZE-byte access at ADDR by `INSTR` at RIP is outside the register map …``.
///
/// # Examples
///
/// (`capture`, hidden, runs a closure with standard error redirected to a pipe and returns
/// what it wrote.)
///
/// ```
/// # /// Runs `f` with standard error redirected to a pipe and returns what it wrote.
/// # fn capture(f: impl FnOnce()) -> String {
/// #     let mut fds = [0; 2];
/// #     // SAFETY: pipe/dup/dup2/read/close on descriptors this function owns; the text is
/// #     // shorter than a pipe's buffer.
/// #     unsafe {
/// #         assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
/// #         let saved = libc::dup(2);
/// #         libc::dup2(fds[1], 2);
/// #         f();
/// #         libc::dup2(saved, 2);
/// #         libc::close(saved);
/// #         libc::close(fds[1]);
/// #         let mut buf = [0u8; 2048];
/// #         let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
/// #         libc::close(fds[0]);
/// #         String::from_utf8(buf[..n.max(0) as usize].to_vec()).unwrap()
/// #     }
/// # }
/// use of_core::decode::decode;
/// use of_core::emulate::NotOurs;
/// use of_core::signal::report::{outside_map, prepare};
///
/// prepare();
/// // mov qword ptr [0xa0], rax (48 89 04 25 a0 00 00 00)
/// let bytes = [0x48, 0x89, 0x04, 0x25, 0xA0, 0x00, 0x00, 0x00];
/// let (instr, _) = decode(&bytes, 0x40_1000).unwrap();
/// let why = NotOurs::OutsideMap { addr: 0xA0, size: 8 };
/// let line = capture(|| outside_map(Some(&instr), 0xA0, 0x40_1000, Some(why)));
/// assert_eq!(
///     line,
///     "of: 8-byte access at 0xa0 is outside the register map \
///      (`mov qword ptr [0xa0], rax` at 0x401000); the map is 0x0..0xa0 and 0x100..0x204\n"
/// );
/// // Without a decoded instruction (the bytes could not be decoded).
/// let line = capture(|| outside_map(None, 0x800, 0x40_1000, None));
/// assert!(line.starts_with("of: access at 0x800 is outside the register map (instruction at 0x401000)"));
/// ```
pub fn outside_map(instr: Option<&Instruction>, fault_addr: u64, rip: u64, why: Option<NotOurs>) {
    let mut line = Line::default();
    line.push_str("of: ");
    match why {
        Some(NotOurs::OutsideMap { addr, size }) => {
            line.push_dec(size);
            line.push_str("-byte access at ");
            line.push_hex(addr);
            line.push_str(" is outside the register map");
        }
        Some(NotOurs::ReadOnly { addr, size }) => {
            line.push_dec(size);
            line.push_str("-byte write at ");
            line.push_hex(addr);
            line.push_str(" changes read-only map bytes (fs/gs base)");
        }
        _ => {
            line.push_str("access at ");
            line.push_hex(fault_addr);
            line.push_str(" is outside the register map");
        }
    }
    match instr {
        Some(i) => {
            line.push_str(" (`");
            push_disassembly(&mut line, i);
            line.push_str("` at ");
            line.push_hex(rip);
            line.push_str(")");
        }
        None => {
            line.push_str(" (instruction at ");
            line.push_hex(rip);
            line.push_str(")");
        }
    }
    line.push_str("; the map is 0x0..0xa0 and 0x100..0x204");
    line.emit();
}

/// `of: jump to <rip> in page 0 …` for execution faults in page 0 (a call through a null
/// function pointer).
///
/// # Examples
///
/// (`capture`, hidden, runs a closure with standard error redirected to a pipe and returns
/// what it wrote.)
///
/// ```
/// # /// Runs `f` with standard error redirected to a pipe and returns what it wrote.
/// # fn capture(f: impl FnOnce()) -> String {
/// #     let mut fds = [0; 2];
/// #     // SAFETY: pipe/dup/dup2/read/close on descriptors this function owns; the text is
/// #     // shorter than a pipe's buffer.
/// #     unsafe {
/// #         assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
/// #         let saved = libc::dup(2);
/// #         libc::dup2(fds[1], 2);
/// #         f();
/// #         libc::dup2(saved, 2);
/// #         libc::close(saved);
/// #         libc::close(fds[1]);
/// #         let mut buf = [0u8; 2048];
/// #         let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
/// #         libc::close(fds[0]);
/// #         String::from_utf8(buf[..n.max(0) as usize].to_vec()).unwrap()
/// #     }
/// # }
/// use of_core::signal::report::execute_in_page0;
///
/// let line = capture(|| execute_in_page0(0x10));
/// assert_eq!(
///     line,
///     "of: execution at 0x10 in page 0 is not a register access \
///      (a call through a null function pointer?)\n"
/// );
/// ```
pub fn execute_in_page0(rip: u64) {
    let mut line = Line::default();
    line.push_str("of: execution at ");
    line.push_hex(rip);
    line.push_str(" in page 0 is not a register access (a call through a null function pointer?)");
    line.emit();
}

/// Offset of `si_addr` inside `siginfo_t`, found once through libc's own accessor so no layout
/// is copied by hand.
static SI_ADDR_OFFSET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Finds `SI_ADDR_OFFSET` (called at installation).
///
/// # Examples
///
/// Once the offset is known, a raised page fault carries its address in `si_addr`:
///
/// ```
/// use of_core::emulate::Exception;
/// use of_core::signal::report::{find_si_addr_offset, raise};
///
/// find_si_addr_offset();
/// // SAFETY: blocking SIGSEGV for this thread, then taking the queued (not faulted) signal with
/// // sigtimedwait; the ucontext is a zeroed value only used for its signal mask.
/// unsafe {
///     let mut set: libc::sigset_t = core::mem::zeroed();
///     libc::sigemptyset(&mut set);
///     libc::sigaddset(&mut set, libc::SIGSEGV);
///     libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
///     let mut uc: libc::ucontext_t = core::mem::zeroed();
///     raise(&mut uc, Exception::PageFault { addr: 0x1234_5000, write: true }, 0x40_1000);
///     let mut info: libc::siginfo_t = core::mem::zeroed();
///     let timeout = libc::timespec { tv_sec: 5, tv_nsec: 0 };
///     assert_eq!(libc::sigtimedwait(&set, &mut info, &timeout), libc::SIGSEGV);
///     assert_eq!(info.si_code, 1); // SEGV_MAPERR
///     assert_eq!(info.si_addr() as u64, 0x1234_5000);
/// }
/// ```
pub fn find_si_addr_offset() {
    let size = core::mem::size_of::<libc::siginfo_t>();
    let mut off = 8;
    while off + 8 <= size {
        // SAFETY: an all-zero siginfo_t is a valid value; we write 8 bytes inside it.
        let found = unsafe {
            let mut si: libc::siginfo_t = core::mem::zeroed();
            let p = (&mut si as *mut libc::siginfo_t).cast::<u8>().add(off);
            core::ptr::write_unaligned(p.cast::<u64>(), 0x5EED_0F0F_5EED_0F0F);
            si.si_addr() as u64 == 0x5EED_0F0F_5EED_0F0F
        };
        if found {
            SI_ADDR_OFFSET.store(off, Ordering::Relaxed);
            return;
        }
        off += 8;
    }
}

/// Queues `sig` with `si_code` and `si_addr` to the current thread (rt_tgsigqueueinfo(2)), to be
/// delivered as soon as the handler returns — the state then is exactly the state at the
/// faulting instruction, as for a hardware exception.
fn queue(sig: libc::c_int, code: libc::c_int, addr: u64) {
    // SAFETY: a zeroed siginfo_t is valid; fields are set through libc's public fields and the
    // si_addr offset found with libc's accessor; the syscall targets our own thread.
    unsafe {
        let mut si: libc::siginfo_t = core::mem::zeroed();
        si.si_signo = sig;
        si.si_code = code;
        let off = SI_ADDR_OFFSET.load(Ordering::Relaxed);
        if off != usize::MAX {
            let p = (&mut si as *mut libc::siginfo_t).cast::<u8>().add(off);
            core::ptr::write_unaligned(p.cast::<u64>(), addr);
        }
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            libc::gettid(),
            sig,
            &mut si as *mut libc::siginfo_t,
        );
    }
}

/// `si_code` values of linux/include/uapi/asm-generic/siginfo.h.
pub mod codes {
    /// SIGSEGV: address not mapped.
    pub const SEGV_MAPERR: libc::c_int = 1;
    /// SIGSEGV: invalid permissions for mapped object.
    pub const SEGV_ACCERR: libc::c_int = 2;
    /// SIGBUS: non-existent physical address.
    pub const BUS_ADRERR: libc::c_int = 2;
    /// SIGFPE: integer divide by zero (Linux reports every #DE with it).
    pub const FPE_INTDIV: libc::c_int = 1;

    /// The SIGFPE si_code Linux gives a SIMD exception with these MXCSR flags
    /// (arch/x86/kernel/fpu/core.c, fpu__exception_code).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::signal::report::codes::simd_code;
    ///
    /// // Linux's FPE_* codes (uapi/asm-generic/siginfo.h); the first flag in this order wins:
    /// // IE (bit 0), ZE (bit 2), OE (bit 3), UE (bit 4) or DE (bit 1), then PE (bit 5).
    /// const FPE_FLTDIV: i32 = 3;
    /// const FPE_FLTOVF: i32 = 4;
    /// const FPE_FLTUND: i32 = 5;
    /// const FPE_FLTRES: i32 = 6;
    /// const FPE_FLTINV: i32 = 7;
    /// assert_eq!(simd_code(0x01 | 0x20), FPE_FLTINV);
    /// assert_eq!(simd_code(0x04), FPE_FLTDIV);
    /// assert_eq!(simd_code(0x08 | 0x20), FPE_FLTOVF);
    /// assert_eq!(simd_code(0x10), FPE_FLTUND);
    /// assert_eq!(simd_code(0x02), FPE_FLTUND);
    /// assert_eq!(simd_code(0x20), FPE_FLTRES);
    /// ```
    pub fn simd_code(flags: u32) -> libc::c_int {
        if flags & 0x01 != 0 {
            7 // FPE_FLTINV
        } else if flags & 0x04 != 0 {
            3 // FPE_FLTDIV
        } else if flags & 0x08 != 0 {
            4 // FPE_FLTOVF
        } else if flags & 0x12 != 0 {
            5 // FPE_FLTUND
        } else {
            6 // FPE_FLTRES
        }
    }
}

/// Raises `e` for the instruction at `rip` the way Linux delivers the hardware exception:
/// #DE as SIGFPE/FPE_INTDIV at `rip`, #GP as SIGSEGV/SI_KERNEL with si_addr 0, #PF as
/// SIGSEGV/SEGV_MAPERR at the address. The signal is unblocked in the interrupted context
/// (`uc_sigmask`), as the kernel's force_sig does, and an ignored SIGFPE is reset to default.
///
/// # Examples
///
/// A divide error becomes SIGFPE with FPE_INTDIV at the instruction, unblocked in the
/// interrupted context:
///
/// ```
/// use of_core::emulate::Exception;
/// use of_core::signal::report::{codes, find_si_addr_offset, raise};
///
/// find_si_addr_offset(); // done by `install`
/// // SAFETY: SIGFPE is blocked for this thread so the queued signal waits for sigtimedwait; the
/// // ucontext is a zeroed value standing for the interrupted thread's.
/// unsafe {
///     let mut set: libc::sigset_t = core::mem::zeroed();
///     libc::sigemptyset(&mut set);
///     libc::sigaddset(&mut set, libc::SIGFPE);
///     libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
///     let mut uc: libc::ucontext_t = core::mem::zeroed();
///     libc::sigaddset(&mut uc.uc_sigmask, libc::SIGFPE);
///     raise(&mut uc, Exception::DivideError, 0x40_1000);
///     assert_eq!(libc::sigismember(&uc.uc_sigmask, libc::SIGFPE), 0);
///     let mut info: libc::siginfo_t = core::mem::zeroed();
///     let timeout = libc::timespec { tv_sec: 5, tv_nsec: 0 };
///     assert_eq!(libc::sigtimedwait(&set, &mut info, &timeout), libc::SIGFPE);
///     assert_eq!(info.si_code, codes::FPE_INTDIV);
///     assert_eq!(info.si_addr() as u64, 0x40_1000);
/// }
/// ```
pub fn raise(uc: &mut libc::ucontext_t, e: Exception, rip: u64) {
    let (sig, code, addr) = match e {
        Exception::DivideError => (libc::SIGFPE, codes::FPE_INTDIV, rip),
        Exception::GeneralProtection => (libc::SIGSEGV, libc::SI_KERNEL, 0),
        Exception::PageFault { addr, .. } => (libc::SIGSEGV, codes::SEGV_MAPERR, addr),
        Exception::SimdFloatingPoint { flags } => (libc::SIGFPE, codes::simd_code(flags), rip),
    };
    // SAFETY: querying and changing signal dispositions and the saved mask are
    // async-signal-safe; uc_sigmask belongs to the interrupted context.
    unsafe {
        let mut old: libc::sigaction = core::mem::zeroed();
        libc::sigaction(sig, core::ptr::null(), &mut old);
        if old.sa_sigaction == libc::SIG_IGN {
            super::chain::reset_default(sig);
        }
        libc::sigdelset(&mut uc.uc_sigmask, sig);
    }
    queue(sig, code, addr);
}
