//! The bus: one lock for every trapped region, held by an instruction from its first device
//! access to the end of the run-ahead after it ([`super`] module docs: order).
//!
//! **The lock** is a futex word as in Drepper's "Futexes Are Tricky" (mutex 2): 0 free, 1
//! held, 2 held with possible waiters; an uncontended take and release are one atomic each.
//! On x86 an atomic read-modify-write is a full barrier: it waits for every store before it to
//! drain, and a patched site's call-out has just pushed the interrupted code's registers — the
//! take and release cost ~13 ns of a ~40 ns patched access.
//!
//! **Bias.** So the bus is *biased* to the first thread that takes it (as a JVM biases a
//! monitor): that thread takes and releases it with plain stores to its own flag, while any
//! other thread that takes the lock first *revokes* the bias — clears it, runs
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (membarrier(2): every running thread of the
//! process executes a full barrier), then waits for the biased thread's flag to clear. The
//! biased thread's "store flag, load bias" needs no fence of its own: either the barrier comes
//! after its store, and the revoker sees the flag, or before its load, and it sees the
//! revocation (the asymmetric Dekker pattern liburcu uses). A revocation costs a system call
//! and interrupts other cores, so after [`REVOCATION_LIMIT`] of them the bus stays unbiased
//! (a program whose threads share regions pays that a few times, then the plain lock).
//! Without `membarrier`, the bus is never biased.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, compiler_fence};

/// The lock: 0 free, 1 held, 2 held with (possible) waiters.
static LOCK: AtomicU32 = AtomicU32::new(0);
/// The thread holding [`LOCK`] ([`this_thread`]; 0: none), for re-entrance: set as soon as
/// the lock is taken, cleared just before it is released.
static LOCK_HOLDER: AtomicU64 = AtomicU64::new(0);
/// The bias slot whose thread the lock holder is waiting for ([`revoke`]), or [`NONE`].
static REVOKING: AtomicUsize = AtomicUsize::new(NONE);

/// Threads that have held the bias, each with its own flag (a slot is never reused by another
/// thread: a late store by a revoked thread only ever touches its own flag).
const BIAS_SLOTS: usize = 32;
/// How many revocations before biasing stops for good, by default.
pub const REVOCATION_LIMIT: u32 = 16;
static LIMIT: AtomicU32 = AtomicU32::new(REVOCATION_LIMIT);

/// Sets how many revocations may happen before biasing stops (a test aid: a stress test of
/// the biased path raises it; the default is [`REVOCATION_LIMIT`]).
///
/// # Examples
///
/// ```
/// of_core::region::set_revocation_limit(of_core::region::REVOCATION_LIMIT);
/// ```
pub fn set_revocation_limit(n: u32) {
    LIMIT.store(n, Ordering::Relaxed);
}
/// No bias.
const NONE: usize = usize::MAX;

/// The slot of the thread the bus is biased to, or [`NONE`].
static BIASED: AtomicUsize = AtomicUsize::new(NONE);
/// Per slot: its thread, and 1 while that thread holds the bus through its bias.
static SLOT_THREAD: [AtomicU64; BIAS_SLOTS] = [const { AtomicU64::new(0) }; BIAS_SLOTS];
static INSIDE: [AtomicU32; BIAS_SLOTS] = [const { AtomicU32::new(0) }; BIAS_SLOTS];
static REVOCATIONS: AtomicU32 = AtomicU32::new(0);
/// Whether `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` is registered.
static CAN_BIAS: AtomicBool = AtomicBool::new(false);

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (include/uapi/linux/membarrier.h).
const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`.
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Registers the process for private expedited membarriers (once, from ordinary code: region
/// registration calls it), which biasing needs.
pub(super) fn prepare() {
    if CAN_BIAS.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: membarrier takes a command, flags and a CPU id; it touches no user memory.
    let ok =
        unsafe { libc::syscall(libc::SYS_membarrier, CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) } == 0;
    CAN_BIAS.store(ok, Ordering::Release);
}

/// The calling thread's identity without a system call: its thread pointer (`pthread_self`,
/// which reads `fs:0` on x86-64 glibc and musl).
pub(super) fn this_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions and only reads the thread pointer.
    unsafe { libc::pthread_self() as u64 }
}

/// How the bus was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// This thread already held it: the outer holder releases.
    Reentrant,
    /// Through this thread's bias (its slot).
    Biased(usize),
    /// Through the lock.
    Locked,
}

/// Takes the bus (waits in the kernel while another thread holds the lock). Async-signal-safe.
///
/// Re-entrance (a signal handler of the thread that holds the bus, or device code, touching a
/// region again) is recognised on every path: the lock's holder; a biased thread with its flag
/// up (set before it checks the bias, so a handler that interrupts the check also sees it); a
/// thread whose bias was revoked while it was inside (the revoker waits for it).
pub(super) fn lock() -> Held {
    let me = this_thread();
    if LOCK_HOLDER.load(Ordering::Relaxed) == me {
        // Perhaps interrupting our own revocation of another thread's bias: that thread may
        // still be inside; wait for it as the outer take does.
        let r = REVOKING.load(Ordering::Relaxed);
        if r != NONE {
            wait_out(r);
        }
        return Held::Reentrant;
    }
    let b = BIASED.load(Ordering::Relaxed);
    if b != NONE && SLOT_THREAD[b].load(Ordering::Relaxed) == me {
        if INSIDE[b].load(Ordering::Relaxed) != 0 {
            return Held::Reentrant;
        }
        INSIDE[b].store(1, Ordering::Relaxed);
        // No fence: a revoker's membarrier stands in for one (module docs). The compiler must
        // not move the load above the store.
        compiler_fence(Ordering::SeqCst);
        if BIASED.load(Ordering::Acquire) == b {
            return Held::Biased(b);
        }
        INSIDE[b].store(0, Ordering::Release);
    } else if REVOCATIONS.load(Ordering::Relaxed) != 0
        && (0..BIAS_SLOTS).any(|s| {
            SLOT_THREAD[s].load(Ordering::Relaxed) == me && INSIDE[s].load(Ordering::Relaxed) != 0
        })
    {
        // Revoked while inside: the revoker waits for us.
        return Held::Reentrant;
    }
    if LOCK
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // Contended: mark the lock as having waiters and sleep until it is free.
        while LOCK.swap(2, Ordering::Acquire) != 0 {
            crate::futex::wait(&LOCK, 2);
        }
    }
    LOCK_HOLDER.store(me, Ordering::Relaxed);
    let b = BIASED.load(Ordering::Acquire);
    if b != NONE && SLOT_THREAD[b].load(Ordering::Relaxed) != me {
        revoke(b);
    } else if b == NONE
        && CAN_BIAS.load(Ordering::Relaxed)
        && REVOCATIONS.load(Ordering::Relaxed) < LIMIT.load(Ordering::Relaxed)
    {
        grant(me);
    }
    Held::Locked
}

/// Releases the bus taken as `held`.
pub(super) fn unlock(held: Held) {
    match held {
        Held::Reentrant => {}
        Held::Biased(b) => INSIDE[b].store(0, Ordering::Release),
        Held::Locked => {
            LOCK_HOLDER.store(0, Ordering::Relaxed);
            if LOCK.swap(0, Ordering::Release) == 2 {
                crate::futex::wake(&LOCK, 1);
            }
        }
    }
}

/// Biases the bus to `me` (the lock holder): its next takes skip the lock.
fn grant(me: u64) {
    let slot = SLOT_THREAD
        .iter()
        .position(|t| t.load(Ordering::Relaxed) == me)
        .or_else(|| {
            SLOT_THREAD.iter().position(|t| {
                t.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
        });
    if let Some(s) = slot {
        BIASED.store(s, Ordering::Release);
    }
}

/// Takes the bias away from slot `b`'s thread (the lock holder calls it) and waits until that
/// thread is out of the bus.
fn revoke(b: usize) {
    REVOKING.store(b, Ordering::Relaxed);
    BIASED.store(NONE, Ordering::SeqCst);
    // SAFETY: membarrier with a command registered by `prepare` (the bias is only granted
    // after a successful registration); it touches no user memory.
    unsafe { libc::syscall(libc::SYS_membarrier, CMD_PRIVATE_EXPEDITED, 0, 0) };
    wait_out(b);
    REVOKING.store(NONE, Ordering::Relaxed);
    REVOCATIONS.fetch_add(1, Ordering::Relaxed);
}

/// Waits until slot `b`'s thread is out of the bus (its flag down).
fn wait_out(b: usize) {
    let mut spins = 0u32;
    while INSIDE[b].load(Ordering::Acquire) != 0 {
        spins += 1;
        if spins < 1000 {
            core::hint::spin_loop();
        } else {
            // SAFETY: sched_yield has no preconditions (the holder may be descheduled, or
            // waiting for its device on the server thread).
            unsafe { libc::sched_yield() };
        }
    }
}

/// The bus, held for the device accesses of one instruction (and the run-ahead after it):
/// released when dropped.
pub(crate) struct Bus {
    held: Held,
}

impl Bus {
    /// Takes the bus (waits in the kernel while another thread holds it; re-entrant) and
    /// records `instruction`, the bytes of the instruction being emulated, for a device
    /// panic's message. Async-signal-safe.
    pub(crate) fn take(instruction: &[u8]) -> Bus {
        let held = lock();
        set_instruction(instruction);
        Bus { held }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        unlock(self.held);
    }
}

/// Bias statistics: (revocations so far, whether the bus is biased now).
///
/// # Examples
///
/// ```
/// let (revocations, biased) = of_core::region::bias();
/// println!("{revocations} revocations; biased now: {biased}");
/// ```
pub fn bias() -> (u32, bool) {
    (
        REVOCATIONS.load(Ordering::Relaxed),
        BIASED.load(Ordering::Relaxed) != NONE,
    )
}

/// The instruction the bus holder is emulating (for a device panic's message): where its bytes
/// are and how many, written by the bus holder only (two stores: copying the bytes here cost
/// a store-forwarding stall per access). The bytes outlive the holding: a handler's own copy on
/// its stack, or a patched site's leaked record.
static SERVING_AT: AtomicUsize = AtomicUsize::new(0);
static SERVING_LEN: AtomicUsize = AtomicUsize::new(0);

/// Records the instruction the bus holder is emulating (the caller holds the bus and keeps
/// `bytes` alive while it does).
fn set_instruction(bytes: &[u8]) {
    SERVING_LEN.store(bytes.len().min(16), Ordering::Relaxed);
    SERVING_AT.store(bytes.as_ptr() as usize, Ordering::Relaxed);
}

/// The bytes of the instruction whose device access a server is serving (for a device panic's
/// message; call it from device code).
///
/// # Examples
///
/// ```
/// let _ = of_core::region::serving();
/// ```
pub fn serving() -> [u8; 16] {
    let mut b = [0u8; 16];
    let at = SERVING_AT.load(Ordering::Relaxed);
    if at != 0 {
        let n = SERVING_LEN.load(Ordering::Relaxed).min(16);
        // SAFETY: the bus holder keeps its bytes alive while it waits for its answer, which
        // is when device code (the only caller) runs.
        b[..n].copy_from_slice(unsafe { core::slice::from_raw_parts(at as *const u8, n) });
    }
    b
}
