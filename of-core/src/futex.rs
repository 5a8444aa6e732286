//! Futex wait and wake on a 32-bit word of this process (futex(2), `FUTEX_PRIVATE_FLAG`): the
//! blocking primitive of the patcher thread's queue and of trapped regions' servers and bus.
//! Both calls are system calls only, so they are async-signal-safe.

use core::sync::atomic::AtomicU32;

/// Sleeps while `word` holds `seen`: returns when woken, when the value differs, or on a
/// signal (callers re-check their condition).
pub(crate) fn wait(word: &AtomicU32, seen: u32) {
    // SAFETY: FUTEX_WAIT on a word of ours; the null timeout means no timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            seen,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes up to `n` threads sleeping on `word`.
pub(crate) fn wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE on a word of ours.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

/// Wakes every thread sleeping on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    wake(word, i32::MAX);
}
