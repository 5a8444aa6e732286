//! Writing live code: through `/proc/self/mem` as debuggers do (`pwrite` with the kernel's
//! forced access: no page is ever writable and executable), else with `mprotect` for the length
//! of one patch; and serialising every core that runs a thread of the process
//! (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`, membarrier(2)).

use core::sync::atomic::{AtomicI32, Ordering};

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE` (include/uapi/linux/membarrier.h).
const CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_long = 1 << 5;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE`.
const CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_long = 1 << 6;

static MEM_FD: AtomicI32 = AtomicI32::new(-1);
static MEM_PID: AtomicI32 = AtomicI32::new(0);

/// Registers the process for core-serialising membarriers. Returns whether the kernel supports
/// them (Linux 4.16 and later on x86-64).
///
/// # Examples
///
/// ```
/// // Registration is idempotent.
/// let ok = of_core::patch::poke::register_sync_core();
/// assert_eq!(of_core::patch::poke::register_sync_core(), ok);
/// ```
pub fn register_sync_core() -> bool {
    // SAFETY: membarrier takes a command, flags and a CPU id; it touches no user memory.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
            0,
            0,
        ) == 0
    }
}

/// Makes every core running a thread of this process execute a core-serialising instruction
/// before it returns to user space, so none runs stale instruction bytes (Intel SDM Vol. 3A
/// §9.1.3, cross-modifying code). Async-signal-safe (one system call).
///
/// # Examples
///
/// ```
/// if of_core::patch::poke::register_sync_core() {
///     assert!(of_core::patch::poke::sync_core());
/// }
/// ```
pub fn sync_core() -> bool {
    // SAFETY: as in `register_sync_core`.
    unsafe { libc::syscall(libc::SYS_membarrier, CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) == 0 }
}

/// Opens `/proc/self/mem` for writing code, once per process (a descriptor inherited across
/// `fork` names the parent, so a child opens its own). Returns whether it is open.
///
/// # Examples
///
/// ```
/// let _ = of_core::patch::poke::open_mem();
/// ```
pub fn open_mem() -> bool {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if MEM_PID.load(Ordering::Acquire) == pid && MEM_FD.load(Ordering::Acquire) >= 0 {
        return true;
    }
    // SAFETY: open with a NUL-terminated path; the descriptor is ours.
    let fd = unsafe { libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let old = MEM_FD.swap(fd, Ordering::AcqRel);
    MEM_PID.store(pid, Ordering::Release);
    if old >= 0 {
        // SAFETY: the previous descriptor (the parent's, inherited) is ours to close.
        unsafe { libc::close(old) };
    }
    true
}

/// Writes `bytes` at `addr` through `/proc/self/mem`. Returns whether all were written.
fn write_mem(addr: u64, bytes: &[u8]) -> bool {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let fd = MEM_FD.load(Ordering::Acquire);
    if fd < 0 || MEM_PID.load(Ordering::Acquire) != pid {
        return false;
    }
    // SAFETY: pwrite from a buffer we own to the descriptor; the kernel checks the target
    // range (FOLL_FORCE lets it write read-only private mappings, copy-on-write).
    let n = unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), addr as libc::off_t) };
    n == bytes.len() as isize
}

/// How code is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// `/proc/self/mem`.
    ProcMem,
    /// `mprotect(PROT_READ | PROT_WRITE | PROT_EXEC)` for the duration of the write, then the
    /// mapping's own protection `prot` again.
    Mprotect {
        /// The protection to restore.
        prot: i32,
    },
}

/// Chooses how to write code at `addr..addr + len` whose mapping has protection `prot`:
/// `/proc/self/mem` if it is open and works (checked by writing the current bytes back), else
/// `mprotect` if the system allows making the pages writable and executable (then restored at
/// once); `None` if neither works.
///
/// # Examples
///
/// ```
/// use of_core::patch::poke::{Writer, writer};
///
/// // A private writable page: either way works here.
/// let page = vec![0u8; 64];
/// let prot = libc::PROT_READ | libc::PROT_WRITE;
/// assert!(writer(page.as_ptr() as u64, 16, prot).is_some());
/// ```
pub fn writer(addr: u64, len: usize, prot: i32) -> Option<Writer> {
    let mut cur = [0u8; 16];
    let n = len.min(16);
    if crate::signal::context::read_memory(addr, &mut cur[..n]).is_err() {
        return None;
    }
    if open_mem() && write_mem(addr, &cur[..n]) {
        return Some(Writer::ProcMem);
    }
    let w = Writer::Mprotect { prot };
    if protect(
        addr,
        len,
        libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
    ) && protect(addr, len, prot)
    {
        Some(w)
    } else {
        None
    }
}

fn protect(addr: u64, len: usize, prot: i32) -> bool {
    let start = addr & !0xFFF;
    let end = (addr + len as u64 + 0xFFF) & !0xFFF;
    // SAFETY: changes the protection of pages of a mapping the caller found in
    // /proc/self/maps; they stay mapped.
    unsafe { libc::mprotect(start as *mut libc::c_void, (end - start) as usize, prot) == 0 }
}

/// Writes `bytes` at `addr` with `w`. Returns whether it was written.
///
/// # Examples
///
/// ```
/// use of_core::patch::poke::{write, writer};
///
/// let mut page = vec![0u8; 64];
/// let at = page.as_mut_ptr() as u64;
/// let w = writer(at, 4, libc::PROT_READ | libc::PROT_WRITE).unwrap();
/// assert!(write(w, at, &[1, 2, 3, 4]));
/// assert_eq!(std::hint::black_box(&page)[..4], [1, 2, 3, 4]);
/// ```
pub fn write(w: Writer, addr: u64, bytes: &[u8]) -> bool {
    match w {
        Writer::ProcMem => write_mem(addr, bytes),
        Writer::Mprotect { prot } => {
            if !protect(
                addr,
                bytes.len(),
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            ) {
                return false;
            }
            // SAFETY: the pages are mapped and now writable; the caller owns the protocol that
            // makes concurrent execution of these bytes safe.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len());
            }
            protect(addr, bytes.len(), prot)
        }
    }
}
