//! Handler stacks: a small pool of 64 KiB stacks (each with a guard page) that the handler
//! switches to, so its depth never depends on the alternate stack of the thread it interrupts
//! (Rust's std gives threads ~8 KiB ones; plain pthreads have none).
//!
//! Mapped once at installation; claimed with an atomic bitmap (lock-free). When all are in use
//! (more than [`COUNT`] handlers running at once) the handler runs on the stack it was given.

use core::arch::asm;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Usable bytes per stack.
pub const SIZE: usize = 64 * 1024;
const GUARD: usize = 4096;
/// Number of stacks.
pub const COUNT: usize = 32;

static BASE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static FREE: AtomicU64 = AtomicU64::new(0);

/// Maps the pool (idempotent; at installation, never from the handler).
///
/// # Examples
///
/// ```
/// use of_core::signal::stacks::{SIZE, init, run_on_pool_stack};
///
/// extern "C" fn where_am_i(out: *mut u8) {
///     let local = 0u8;
///     // SAFETY: `out` points to the caller's u64.
///     unsafe { *out.cast::<u64>() = &local as *const u8 as u64 };
/// }
///
/// init();
/// init(); // idempotent
/// let mut there = 0u64;
/// let here = &there as *const u64 as u64;
/// // SAFETY: `where_am_i` writes through its argument, a live u64, and does not unwind.
/// unsafe { run_on_pool_stack(where_am_i, (&mut there as *mut u64).cast()) };
/// // It ran on a pool stack, far from this one.
/// assert!(here.abs_diff(there) > SIZE as u64);
/// ```
pub fn init() {
    if !BASE.load(Ordering::Acquire).is_null() {
        return;
    }
    let len = COUNT * (GUARD + SIZE);
    // SAFETY: a fresh anonymous mapping; guard pages are then made inaccessible.
    unsafe {
        let p = libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return;
        }
        for i in 0..COUNT {
            libc::mprotect(
                p.cast::<u8>().add(i * (GUARD + SIZE)).cast(),
                GUARD,
                libc::PROT_NONE,
            );
        }
        if BASE
            .compare_exchange(
                core::ptr::null_mut(),
                p.cast(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            libc::munmap(p, len);
        }
    }
}

/// Runs `f(arg)` on a pool stack if one is free, else on the current stack.
///
/// # Safety
/// `f` must be safe to call with `arg` and must not unwind.
///
/// # Examples
///
/// Without [`init`] there is no pool, and `f` runs on the current stack:
///
/// ```
/// use of_core::signal::stacks::run_on_pool_stack;
///
/// extern "C" fn depth(out: *mut u8) {
///     let local = 0u8;
///     // SAFETY: `out` points to the caller's u64.
///     unsafe { *out.cast::<u64>() = &local as *const u8 as u64 };
/// }
///
/// let mut there = 0u64;
/// let here = &there as *const u64 as u64;
/// // SAFETY: `depth` writes through its argument, a live u64, and does not unwind.
/// unsafe { run_on_pool_stack(depth, (&mut there as *mut u64).cast()) };
/// assert!(here.abs_diff(there) < 4096);
/// ```
pub unsafe fn run_on_pool_stack(f: unsafe extern "C" fn(*mut u8), arg: *mut u8) {
    let base = BASE.load(Ordering::Acquire);
    let mut claimed = None;
    if !base.is_null() {
        let mut cur = FREE.load(Ordering::Relaxed);
        while cur != u64::MAX >> (64 - COUNT) {
            let bit = (!cur).trailing_zeros() as usize;
            if bit >= COUNT {
                break;
            }
            match FREE.compare_exchange_weak(
                cur,
                cur | (1 << bit),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    claimed = Some(bit);
                    break;
                }
                Err(now) => cur = now,
            }
        }
    }
    match claimed {
        Some(i) => {
            // SAFETY: stack i spans base + i*(GUARD+SIZE) + GUARD .. + SIZE; its top is 16-byte
            // aligned (page aligned), as a call site requires.
            let top = unsafe { base.add(i * (GUARD + SIZE) + GUARD + SIZE) };
            // SAFETY: we own stack i until the bit is released; `f` returns normally.
            unsafe {
                asm!(
                    "mov r12, rsp",  // r12 (callee-saved) = the stack we were called on
                    "mov rsp, {top}", // switch to the pool stack
                    "call {f}",      // f(arg) with rdi = arg
                    "mov rsp, r12",  // back to the original stack
                    top = in(reg) top,
                    f = in(reg) f,
                    in("rdi") arg,
                    out("r12") _,
                    clobber_abi("C"),
                );
            }
            FREE.fetch_and(!(1u64 << i), Ordering::Release);
        }
        // SAFETY: forwarded to the caller.
        None => unsafe { f(arg) },
    }
}
