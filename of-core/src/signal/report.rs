//! What the handler says and raises when it does not emulate: the one-line diagnostics of
//! SPEC §4, and exceptions delivered the way the CPU would have delivered them.

use crate::diag::Line;
use crate::emulate::{Exception, NotOurs};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use iced_x86::{Formatter, FormatterOutput, FormatterTextKind, Instruction, IntelFormatter};

struct FormatterCell(UnsafeCell<Option<IntelFormatter>>);
// SAFETY: access is serialised by FORMATTER_BUSY (a try-lock that never waits).
unsafe impl Sync for FormatterCell {}

static FORMATTER: FormatterCell = FormatterCell(UnsafeCell::new(None));
static FORMATTER_BUSY: AtomicBool = AtomicBool::new(false);

/// Creates the Intel-syntax formatter and warms iced-x86's lazily built tables, so that the
/// handler never allocates. Called once at installation, before the handler is published.
pub fn prepare() {
    if FORMATTER_BUSY.swap(true, Ordering::Acquire) {
        return;
    }
    // SAFETY: FORMATTER_BUSY is held.
    let f = unsafe { &mut *FORMATTER.0.get() };
    if f.is_none() {
        let mut fmt = IntelFormatter::new();
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
fn push_disassembly(line: &mut Line, instr: &Instruction) {
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
