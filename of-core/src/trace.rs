//! Tracing (`OF_TRACE`): one line per emulated instruction — thread id, rip, bytes, the
//! instruction as iced-x86 formats it, the registers and flags it changed (old → new), and
//! whether a fault or run-ahead emulated it — written with write(2) from the handler
//! (async-signal-safe: formatted into a fixed buffer, no allocation).
//!
//! `OF_TRACE=1` in the environment at installation traces to standard error; `OF_TRACE=FILE`
//! appends to FILE, opened at installation; [`set_fd`] turns it on or off at run time. The
//! registers compared are the general-purpose ones, rip (shown when it is not the next
//! instruction: a jump), rflags, xmm0..xmm15 and MXCSR.
//!
//! ```text
//! of: trace tid 4242 fault 0x55d0c0a01234 [48 83 04 25 40 00 00 00 01] `add qword ptr [0x40], 1`: r8 0x5 -> 0x6, rflags 0x202 -> 0x206
//! ```

use crate::diag::Line;
use crate::machine::Machine;
use core::sync::atomic::{AtomicI32, Ordering};
use iced_x86::Instruction;

static FD: AtomicI32 = AtomicI32::new(-1);

/// Sets where trace lines go: `Some(fd)` (2: standard error) or `None` (off).
///
/// # Examples
///
/// ```
/// of_core::trace::set_fd(Some(2));
/// assert_eq!(of_core::trace::fd(), Some(2));
/// of_core::trace::set_fd(None);
/// assert_eq!(of_core::trace::fd(), None);
/// ```
pub fn set_fd(fd: Option<i32>) {
    FD.store(fd.unwrap_or(-1), Ordering::Release);
}

/// Where trace lines go, if tracing is on.
///
/// # Examples
///
/// ```
/// let _ = of_core::trace::fd();
/// ```
pub fn fd() -> Option<i32> {
    let fd = FD.load(Ordering::Acquire);
    (fd >= 0).then_some(fd)
}

/// Reads `OF_TRACE` (at installation, outside signal handlers): `1` traces to standard error,
/// any other non-empty value is a file to append to (created if missing).
pub(crate) fn from_env() {
    // SAFETY: getenv with a NUL-terminated name, outside signal handlers.
    let v = unsafe { libc::getenv(c"OF_TRACE".as_ptr()) };
    if v.is_null() {
        return;
    }
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    let s = unsafe { core::ffi::CStr::from_ptr(v) };
    match s.to_bytes() {
        b"" | b"0" => {}
        b"1" => set_fd(Some(2)),
        _ => {
            // SAFETY: open with a NUL-terminated path; the descriptor stays open for the
            // process's life (it is where trace lines go).
            let fd = unsafe {
                libc::open(
                    v,
                    libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd >= 0 {
                set_fd(Some(fd));
            }
        }
    }
}

/// The registers a trace line compares.
///
/// # Examples
///
/// ```
/// use of_core::trace::Snap;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[8] = 5;
/// let s = Snap::of(&m);
/// assert_eq!((s.gpr[8], s.rflags, s.mxcsr), (5, 0x202, 0x1F80));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snap {
    /// General-purpose registers in encoding order.
    pub gpr: [u64; 16],
    /// rip.
    pub rip: u64,
    /// rflags.
    pub rflags: u64,
    /// MXCSR.
    pub mxcsr: u32,
    /// xmm0..xmm15.
    pub xmm: [u128; 16],
}

impl Snap {
    /// The registers of `m` now.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::trace::Snap;
    /// use of_core::RegisterFile;
    ///
    /// let m = RegisterFile { rip: 0x40_0000, ..RegisterFile::default() };
    /// assert_eq!(Snap::of(&m).rip, 0x40_0000);
    /// ```
    pub fn of<M: Machine + ?Sized>(m: &M) -> Snap {
        Snap {
            gpr: core::array::from_fn(|i| m.gpr(i)),
            rip: m.rip(),
            rflags: m.rflags(),
            mxcsr: m.mxcsr(),
            xmm: core::array::from_fn(|i| m.xmm(i)),
        }
    }
}

const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

fn push_change(l: &mut Line, first: &mut bool, name: &str, old: u64, new: u64) {
    if !*first {
        l.push_str(", ");
    }
    *first = false;
    l.push_str(name);
    l.push_byte(b' ');
    l.push_hex(old);
    l.push_str(" -> ");
    l.push_hex(new);
}

/// Formats the trace line of `instr` (its `bytes`, emulated by a fault or by run-ahead as
/// `how` says) with the changes from `before` to `after`, into `l`.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::diag::Line;
/// use of_core::trace::{Snap, format_line};
/// use of_core::{RegisterFile, emulate};
///
/// let bytes = [0x48, 0x83, 0x04, 0x25, 0x40, 0x00, 0x00, 0x00, 0x01]; // add qword ptr [0x40], 1
/// let mut m = RegisterFile { rip: 0x40_0000, ..RegisterFile::default() };
/// m.gpr[8] = 5;
/// let (instr, offsets) = decode(&bytes, m.rip).unwrap();
/// let before = Snap::of(&m);
/// emulate(&mut m, &instr, &bytes, &offsets, Some(0x40)).unwrap();
/// let mut l = Line::default();
/// format_line(&mut l, 7, "fault", &instr, &bytes, &before, &Snap::of(&m));
/// let text = String::from_utf8(l.as_bytes().to_vec()).unwrap();
/// assert!(text.starts_with("of: trace tid 7 fault 0x400000 [48 83 04 25 40 00 00 00 01]"), "{text}");
/// assert!(text.ends_with(": r8 0x5 -> 0x6, rflags 0x202 -> 0x206"), "{text}");
/// ```
pub fn format_line(
    l: &mut Line,
    tid: u64,
    how: &str,
    instr: &Instruction,
    bytes: &[u8],
    before: &Snap,
    after: &Snap,
) {
    l.push_str("of: trace tid ");
    l.push_dec(tid);
    l.push_byte(b' ');
    l.push_str(how);
    l.push_byte(b' ');
    l.push_hex(before.rip);
    l.push_str(" [");
    l.push_bytes(&bytes[..instr.len().min(bytes.len())]);
    l.push_str("] `");
    crate::signal::report::push_disassembly(l, instr);
    l.push_str("`:");
    let mut first = true;
    l.push_byte(b' ');
    for (name, (old, new)) in GPR_NAMES
        .iter()
        .zip(before.gpr.iter().zip(after.gpr.iter()))
    {
        if old != new {
            push_change(l, &mut first, name, *old, *new);
        }
    }
    if after.rip != instr.next_ip() {
        push_change(l, &mut first, "rip", before.rip, after.rip);
    }
    if before.rflags != after.rflags {
        push_change(l, &mut first, "rflags", before.rflags, after.rflags);
    }
    const XMM_NAMES: [&str; 16] = [
        "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
    ];
    for (i, name) in XMM_NAMES.iter().enumerate() {
        if before.xmm[i] != after.xmm[i] {
            if !first {
                l.push_str(", ");
            }
            first = false;
            // High and low quadwords, `0xhigh:0xlow`.
            l.push_str(name);
            l.push_byte(b' ');
            l.push_hex((before.xmm[i] >> 64) as u64);
            l.push_byte(b':');
            l.push_hex(before.xmm[i] as u64);
            l.push_str(" -> ");
            l.push_hex((after.xmm[i] >> 64) as u64);
            l.push_byte(b':');
            l.push_hex(after.xmm[i] as u64);
        }
    }
    if before.mxcsr != after.mxcsr {
        push_change(
            l,
            &mut first,
            "mxcsr",
            u64::from(before.mxcsr),
            u64::from(after.mxcsr),
        );
    }
    if first {
        l.push_str("no register changed");
    }
}

/// Writes the trace line of an emulated instruction, if tracing is on (async-signal-safe).
pub(crate) fn emit(how: &str, instr: &Instruction, bytes: &[u8], before: &Snap, after: &Snap) {
    let Some(fd) = fd() else {
        return;
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u64;
    let mut l = Line::default();
    format_line(&mut l, tid, how, instr, bytes, before, after);
    l.push_byte(b'\n');
    crate::diag::write_fd(fd, l.as_bytes());
}
