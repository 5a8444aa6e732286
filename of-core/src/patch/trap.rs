//! The SIGTRAP handler for patches in progress: a thread that executes a site while its first
//! byte is the `int3` of the patch protocol gets the original instruction emulated, and goes on
//! after it; any other SIGTRAP (a breakpoint of the program's own) goes to the handler installed
//! before (or kills the process as it would have).

use crate::decode::decode;
use crate::signal::chain;
use crate::signal::context::SignalContext;
use core::sync::atomic::{AtomicBool, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the SIGTRAP handler (once; outside signal handlers), saving the previous action for
/// chaining. Returns whether it is installed.
///
/// # Examples
///
/// ```
/// assert!(of_core::patch::trap::install());
/// assert!(of_core::patch::trap::install()); // once
/// ```
pub fn install() -> bool {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return true;
    }
    // SAFETY: a zeroed sigaction is valid; the previous action goes to its slot before the
    // handler can read it (the handler only reads it to chain).
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigfillset(&mut sa.sa_mask);
        let ok = libc::sigaction(libc::SIGTRAP, &sa, chain::PREVIOUS.slot(libc::SIGTRAP)) == 0;
        if !ok {
            INSTALLED.store(false, Ordering::Release);
        }
        ok
    }
}

struct Args {
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
}

unsafe extern "C" fn handler(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    let mut args = Args { info, ctx };
    // SAFETY: `body` takes a pointer to `args`, which outlives the call, and does not unwind.
    unsafe { crate::signal::stacks::run_on_pool_stack(body, (&mut args as *mut Args).cast()) };
}

unsafe extern "C" fn body(args: *mut u8) {
    // SAFETY: the caller passes a valid Args.
    let Args { info, ctx } = unsafe { &*args.cast::<Args>() };
    let (info, ctx) = (*info, *ctx);
    // SAFETY: errno is thread-local; saving and restoring it keeps the interrupted code's value.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid ucontext for an SA_SIGINFO handler.
    let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
    if !emulate_site(uc) {
        let prev = chain::PREVIOUS.get(libc::SIGTRAP).sa_sigaction;
        if prev == libc::SIG_DFL {
            // A trap does not re-occur when the handler returns (rip is past the int3): send
            // it again with the default action, which ends the process as it would have.
            chain::reset_default(libc::SIGTRAP);
            // SAFETY: tgkill on our own thread; async-signal-safe system calls.
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid(),
                    libc::gettid(),
                    libc::SIGTRAP,
                )
            };
        } else if prev != libc::SIG_IGN {
            // SAFETY: our own arguments, passed on unchanged.
            unsafe { chain::chain(libc::SIGTRAP, info, ctx) };
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// If the trap is the `int3` of a patch in progress, emulates the site's original instruction
/// and returns true.
fn emulate_site(uc: &mut libc::ucontext_t) -> bool {
    use crate::machine::Machine;
    let mut m = SignalContext::new(uc);
    // int3 is a trap: rip is the byte after it.
    let site = m.rip().wrapping_sub(1);
    let Some((orig, copy)) = super::patching_at(site) else {
        return false;
    };
    let Ok((instr, offsets)) = decode(&orig, site) else {
        return false;
    };
    m.set_rip(site);
    let _bus = crate::signal::bus_for(&mut m, &instr, &orig[..instr.len()], false);
    let ok = crate::emulate::emulate(&mut m, &instr, &orig[..instr.len()], &offsets, None).is_ok();
    if ok {
        super::TRAPPED_N.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    if copy != 0 {
        // A region site whose instruction this time touches ordinary memory (a memcpy's load
        // with a pointer to ordinary memory, say), which the engine does not emulate: run the
        // copy of the original in its call-out stub, which jumps back after it (and faults
        // there as usual if it does touch a region).
        m.set_rip(copy);
        super::TRAPPED_N.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    m.set_rip(site + 1);
    false
}
