//! Per-thread alternate signal stacks (wasmtime's model: mmap'd, with a guard page below, sized
//! for the handler plus the kernel's signal frame).
//!
//! The handler is installed with `SA_ONSTACK`, so it runs on the thread's alternate stack when
//! one is installed, and on the thread's own stack otherwise. [`ensure`] gives the calling
//! thread a stack of at least [`MIN_SIZE`] bytes when it has none or a smaller one (Rust's std
//! installs 8 KiB-class stacks on its threads; plain pthreads have none). The facade calls it
//! from `map_registers()` and frees the stack when the thread exits.

/// The smallest alternate stack `of` accepts, in bytes: the kernel's signal frame (up to ~3 KiB
/// with AVX-512 state) plus the handler's frames, with a wide margin.
///
/// # Examples
///
/// ```
/// use of_core::signal::altstack::MIN_SIZE;
///
/// // Larger than the kernel's own minimum signal stack size.
/// assert!(MIN_SIZE >= libc::MINSIGSTKSZ);
/// ```
pub const MIN_SIZE: usize = 64 * 1024;
const GUARD: usize = 4096;

/// An alternate stack installed by [`ensure`]; [`AltStack::release`] uninstalls and unmaps it.
///
/// # Examples
///
/// ```
/// use of_core::signal::altstack;
///
/// std::thread::spawn(|| {
///     let stack = altstack::ensure();
///     // ... the thread runs, its faults are handled on the alternate stack ...
///     if let Some(stack) = stack {
///         stack.release(); // before the thread exits
///     }
/// })
/// .join()
/// .unwrap();
/// ```
#[derive(Debug)]
pub struct AltStack {
    base: *mut libc::c_void,
    len: usize,
    previous: libc::stack_t,
}

/// Makes sure the calling thread has an alternate signal stack of at least [`MIN_SIZE`] bytes.
/// Returns the stack it installed, or `None` if the thread's current one is large enough, is in
/// use (we are running on it), or mapping failed (the handler then runs on the thread's stack).
///
/// # Examples
///
/// ```
/// use of_core::signal::altstack::{MIN_SIZE, ensure};
///
/// fn current() -> libc::stack_t {
///     // SAFETY: sigaltstack with a null new stack only reads the current one.
///     let mut st: libc::stack_t = unsafe { core::mem::zeroed() };
///     assert_eq!(unsafe { libc::sigaltstack(core::ptr::null(), &mut st) }, 0);
///     st
/// }
///
/// let ours = ensure();
/// let st = current();
/// assert_eq!(st.ss_flags & libc::SS_DISABLE, 0);
/// assert!(st.ss_size >= MIN_SIZE);
/// // The thread now has a large enough stack: nothing more to install.
/// assert!(ensure().is_none());
/// if let Some(s) = ours {
///     s.release();
///     // The previous stack (std's smaller one, or none) is back.
///     let st = current();
///     assert!(st.ss_flags & libc::SS_DISABLE != 0 || st.ss_size < MIN_SIZE);
/// }
/// ```
pub fn ensure() -> Option<AltStack> {
    // SAFETY: sigaltstack with a null new stack only reads the current one.
    let mut cur: libc::stack_t = unsafe { core::mem::zeroed() };
    if unsafe { libc::sigaltstack(core::ptr::null(), &mut cur) } != 0 {
        return None;
    }
    if cur.ss_flags & libc::SS_ONSTACK != 0 {
        return None;
    }
    if cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_size >= MIN_SIZE {
        return None;
    }
    let len = GUARD + MIN_SIZE;
    // SAFETY: a fresh anonymous mapping; the guard page is then made inaccessible.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: base..base+GUARD lies inside the mapping we just made.
    unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) };
    let st = libc::stack_t {
        // SAFETY: GUARD < len.
        ss_sp: unsafe { base.cast::<u8>().add(GUARD) }.cast(),
        ss_flags: 0,
        ss_size: MIN_SIZE,
    };
    // SAFETY: the stack memory stays mapped until `release`.
    if unsafe { libc::sigaltstack(&st, core::ptr::null_mut()) } != 0 {
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(base, len) };
        return None;
    }
    Some(AltStack {
        base,
        len,
        previous: cur,
    })
}

impl AltStack {
    /// Restores the thread's previous alternate stack (if ours is still the current one) and
    /// unmaps ours. Must be called on the thread that installed it.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::signal::altstack::ensure;
    ///
    /// // SAFETY (both calls): sigaltstack with a null new stack only reads the current one.
    /// let mut before: libc::stack_t = unsafe { core::mem::zeroed() };
    /// unsafe { libc::sigaltstack(core::ptr::null(), &mut before) };
    /// if let Some(s) = ensure() {
    ///     s.release();
    ///     let mut after: libc::stack_t = unsafe { core::mem::zeroed() };
    ///     unsafe { libc::sigaltstack(core::ptr::null(), &mut after) };
    ///     assert_eq!(after.ss_flags & libc::SS_DISABLE, before.ss_flags & libc::SS_DISABLE);
    ///     if before.ss_flags & libc::SS_DISABLE == 0 {
    ///         assert_eq!((after.ss_sp, after.ss_size), (before.ss_sp, before.ss_size));
    ///     }
    /// }
    /// ```
    pub fn release(self) {
        // SAFETY: reading the current alternate stack.
        let mut cur: libc::stack_t = unsafe { core::mem::zeroed() };
        unsafe { libc::sigaltstack(core::ptr::null(), &mut cur) };
        // SAFETY: GUARD < len.
        let ours = unsafe { self.base.cast::<u8>().add(GUARD) }.cast::<libc::c_void>();
        if cur.ss_sp == ours {
            if cur.ss_flags & libc::SS_ONSTACK != 0 {
                return; // still running on it: leak rather than pull it away
            }
            let mut prev = self.previous;
            if prev.ss_flags & libc::SS_DISABLE != 0 {
                prev = libc::stack_t {
                    ss_sp: core::ptr::null_mut(),
                    ss_flags: libc::SS_DISABLE,
                    ss_size: 0,
                };
            }
            // SAFETY: the previous stack is either disabled or still owned by whoever set it.
            unsafe { libc::sigaltstack(&prev, core::ptr::null_mut()) };
            // SAFETY: nothing refers to our stack any more.
            unsafe { libc::munmap(self.base, self.len) };
        }
    }
}
