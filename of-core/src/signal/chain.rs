//! The actions that were installed before ours, and passing a fault on to them as if `of` were
//! not installed (SPEC §4; the three cases of wasmtime's `signals.rs`).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;

/// Storage for the previous SIGSEGV, SIGBUS (and, with site patching, SIGTRAP) actions. Written once by the installing thread
/// before the handler is published (Release), read by handlers after (Acquire).
///
/// # Examples
///
/// ```
/// use of_core::signal::{chain::PREVIOUS, install};
///
/// // SAFETY: sigaction with a null new action only reads the current one.
/// let mut before: libc::sigaction = unsafe { core::mem::zeroed() };
/// unsafe { libc::sigaction(libc::SIGBUS, core::ptr::null(), &mut before) };
/// install().unwrap();
/// // What was installed before `of` (in a Rust program: std's stack-overflow handler).
/// assert_eq!(PREVIOUS.get(libc::SIGBUS).sa_sigaction, before.sa_sigaction);
/// ```
pub struct Previous {
    segv: UnsafeCell<MaybeUninit<libc::sigaction>>,
    bus: UnsafeCell<MaybeUninit<libc::sigaction>>,
    trap: UnsafeCell<MaybeUninit<libc::sigaction>>,
}

// SAFETY: written only by the one thread that wins the installation race, before the handler
// that reads it can run (the install state is published with Release ordering).
unsafe impl Sync for Previous {}

/// The previous actions.
///
/// # Examples
///
/// ```
/// use of_core::signal::chain::PREVIOUS;
///
/// // Before installation the slots hold SIG_DFL.
/// assert!(PREVIOUS.is_default(libc::SIGSEGV));
/// ```
pub static PREVIOUS: Previous = Previous {
    segv: UnsafeCell::new(MaybeUninit::zeroed()),
    bus: UnsafeCell::new(MaybeUninit::zeroed()),
    trap: UnsafeCell::new(MaybeUninit::zeroed()),
};

impl Previous {
    /// Pointer to the slot for `sig` (SIGSEGV, SIGBUS or SIGTRAP).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::signal::chain::PREVIOUS;
    ///
    /// let segv = PREVIOUS.slot(libc::SIGSEGV);
    /// let bus = PREVIOUS.slot(libc::SIGBUS);
    /// assert_ne!(segv, bus);
    /// // SAFETY: the slots are valid for reads (nothing is installing concurrently).
    /// assert_eq!(unsafe { (*bus).sa_sigaction }, PREVIOUS.get(libc::SIGBUS).sa_sigaction);
    /// ```
    pub fn slot(&self, sig: libc::c_int) -> *mut libc::sigaction {
        match sig {
            libc::SIGBUS => self.bus.get().cast(),
            libc::SIGTRAP => self.trap.get().cast(),
            _ => self.segv.get().cast(),
        }
    }

    /// A copy of the previous action for `sig`.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::signal::{chain::PREVIOUS, install};
    ///
    /// // SAFETY: sigaction with a null new action only reads the current one.
    /// let mut before: libc::sigaction = unsafe { core::mem::zeroed() };
    /// unsafe { libc::sigaction(libc::SIGSEGV, core::ptr::null(), &mut before) };
    /// install().unwrap();
    /// let prev = PREVIOUS.get(libc::SIGSEGV);
    /// assert_eq!((prev.sa_sigaction, prev.sa_flags), (before.sa_sigaction, before.sa_flags));
    /// ```
    pub fn get(&self, sig: libc::c_int) -> libc::sigaction {
        // SAFETY: the slot was zero-initialised (a valid sigaction: SIG_DFL, empty mask) and is
        // only written before installation completes.
        unsafe { *self.slot(sig) }
    }

    /// Whether the previous action for `sig` is the default action (or ignore, which the
    /// kernel also overrides for a real fault).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::signal::{chain::PREVIOUS, install};
    ///
    /// // SAFETY: sigaction with a null new action only reads the current one.
    /// let mut before: libc::sigaction = unsafe { core::mem::zeroed() };
    /// unsafe { libc::sigaction(libc::SIGSEGV, core::ptr::null(), &mut before) };
    /// install().unwrap();
    /// let default = before.sa_sigaction == libc::SIG_DFL || before.sa_sigaction == libc::SIG_IGN;
    /// assert_eq!(PREVIOUS.is_default(libc::SIGSEGV), default);
    /// ```
    pub fn is_default(&self, sig: libc::c_int) -> bool {
        let h = self.get(sig).sa_sigaction;
        h == libc::SIG_DFL || h == libc::SIG_IGN
    }
}

/// Whether the action now installed for `sig` is the default one.
///
/// # Examples
///
/// ```
/// use of_core::signal::chain::{current_is_default, reset_default};
///
/// extern "C" fn ignore(_: libc::c_int) {}
///
/// assert!(current_is_default(libc::SIGUSR1));
/// // SAFETY: installs a handler that does nothing, for a signal nothing sends.
/// unsafe { libc::signal(libc::SIGUSR1, ignore as *const () as libc::sighandler_t) };
/// assert!(!current_is_default(libc::SIGUSR1));
/// reset_default(libc::SIGUSR1);
/// assert!(current_is_default(libc::SIGUSR1));
/// ```
pub fn current_is_default(sig: libc::c_int) -> bool {
    // SAFETY: querying the current action into a zeroed sigaction; async-signal-safe.
    unsafe {
        let mut cur: libc::sigaction = core::mem::zeroed();
        libc::sigaction(sig, core::ptr::null(), &mut cur) == 0 && cur.sa_sigaction == libc::SIG_DFL
    }
}

/// Restores the default action for `sig`.
///
/// # Examples
///
/// ```
/// use of_core::signal::chain::{current_is_default, reset_default};
///
/// // SAFETY: ignoring a signal nothing sends.
/// unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
/// assert!(!current_is_default(libc::SIGUSR2));
/// reset_default(libc::SIGUSR2);
/// assert!(current_is_default(libc::SIGUSR2));
/// ```
pub fn reset_default(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction with SIG_DFL is valid; sigaction is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, core::ptr::null_mut());
    }
}

/// Passes a signal that is not ours to the action installed before `of`:
/// - an `SA_SIGINFO` handler gets the same signal number, siginfo and ucontext;
/// - a plain handler gets the signal number;
/// - `SIG_DFL` and `SIG_IGN`: the default action is restored, so a fault re-occurs when the
///   handler returns and kills the process with the right signal (and core dump); a signal that
///   was sent rather than raised by a fault (`si_code <= 0`: kill, tkill, sigqueue) is sent again
///   to this thread, to be delivered when the handler returns.
///
/// # Safety
/// `info` and `ctx` must be the handler's arguments for the current signal.
///
/// # Examples
///
/// Not run: it only makes sense inside a SIGSEGV/SIGBUS handler, with the kernel's arguments.
/// A handler of one's own that keeps some faults and passes the rest on:
///
/// ```no_run
/// use of_core::signal::chain;
///
/// extern "C" fn my_handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
///     let mine = false; // decide from `info` and `ctx`
///     if !mine {
///         // SAFETY: our handler's own arguments, passed on unchanged.
///         unsafe { chain::chain(sig, info, ctx) };
///     }
/// }
/// # let _ = my_handler;
/// ```
pub unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.get(sig);
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        reset_default(sig);
        // SAFETY: info points to the kernel-provided siginfo for this signal.
        let code = unsafe { (*info).si_code };
        if code <= 0 {
            // SAFETY: tgkill on our own thread; async-signal-safe system calls.
            unsafe {
                libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), sig);
            }
        }
    } else {
        if prev.sa_flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the previous handler was registered with SA_SIGINFO, so this is its type.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { core::mem::transmute(h) };
            f(sig, info, ctx);
        } else {
            // SAFETY: without SA_SIGINFO the handler takes only the signal number.
            let f: extern "C" fn(libc::c_int) = unsafe { core::mem::transmute(h) };
            f(sig);
        }
        // A handler that declines a *sent* signal by restoring the default action (Rust's std
        // handler does this for anything but a stack overflow) expects it to be delivered
        // again, which only happens by itself for faults: send it again.
        // SAFETY: info is the kernel-provided siginfo; tgkill on our own thread.
        if unsafe { (*info).si_code } <= 0 && current_is_default(sig) {
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), sig) };
        }
    }
}
