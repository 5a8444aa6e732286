//! The patcher thread and its queue. Handlers push site indices (lock-free, async-signal-safe:
//! atomics and a futex wake); the thread, which blocks every signal so it never takes one meant
//! for the program, plans, generates and pokes each site in ordinary code.

use super::plan::{plan, trampoline};
use super::pool::Pool;
use super::pun::Puns;
use super::{COLD, PATCHED, PATCHING, QUEUED, REFUSED, TABLE, pack, rip_of, state_of};
use super::{PATCHED_N, REFUSED_N, STALE_N, maps, orig_bytes, patch_word, poke};
use super::{callout, liveness};
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

const QUEUE_LEN: u32 = 64;
/// Site index + 1 per queued entry (0: not written yet).
static QUEUE: [AtomicU32; QUEUE_LEN as usize] = [const { AtomicU32::new(0) }; QUEUE_LEN as usize];
static HEAD: AtomicU32 = AtomicU32::new(0);
static TAIL: AtomicU32 = AtomicU32::new(0);
/// Futex words: bumped on every push, and on every site handled.
static WORK: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
/// The process the thread runs in (threads do not survive `fork`).
static PID: AtomicI32 = AtomicI32::new(0);

fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Whether the patcher thread runs in this process.
pub fn alive_here() -> bool {
    PID.load(Ordering::Acquire) == getpid()
}

/// Starts the patcher thread in this process if it is not running. Returns whether it runs.
pub fn start() -> bool {
    let pid = getpid();
    if PID.load(Ordering::Acquire) == pid {
        return true;
    }
    // SAFETY: plain pthread calls with attributes and a thread handle we own; the thread runs
    // `run`, which never returns.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut t: libc::pthread_t = core::mem::zeroed();
        let ok = libc::pthread_create(&mut t, &attr, run, core::ptr::null_mut()) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if !ok {
            return false;
        }
    }
    PID.store(pid, Ordering::Release);
    true
}

/// Queues site `index`. Returns false when the queue is full. Async-signal-safe.
pub fn push(index: u32) -> bool {
    loop {
        let t = TAIL.load(Ordering::Acquire);
        if t.wrapping_sub(HEAD.load(Ordering::Acquire)) >= QUEUE_LEN {
            return false;
        }
        if TAIL
            .compare_exchange(t, t.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            QUEUE[(t % QUEUE_LEN) as usize].store(index + 1, Ordering::Release);
            WORK.fetch_add(1, Ordering::Release);
            crate::futex::wake_all(&WORK);
            return true;
        }
    }
}

/// Waits until the sites queued so far are handled (outside signal handlers).
pub fn flush() {
    if !alive_here() {
        return;
    }
    let target = TAIL.load(Ordering::Acquire);
    loop {
        let done = DONE.load(Ordering::Acquire);
        if HEAD.load(Ordering::Acquire).wrapping_sub(target) as i32 >= 0 {
            return;
        }
        crate::futex::wait(&DONE, done);
    }
}

extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: blocking every signal of this thread; the set is ours.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, core::ptr::null_mut());
    }
    let mut pool = Pool::default();
    let mut puns = Puns::default();
    loop {
        let seen = WORK.load(Ordering::Acquire);
        let h = HEAD.load(Ordering::Acquire);
        let v = if h != TAIL.load(Ordering::Acquire) {
            QUEUE[(h % QUEUE_LEN) as usize].swap(0, Ordering::AcqRel)
        } else {
            0
        };
        if v == 0 {
            crate::futex::wait(&WORK, seen);
            continue;
        }
        process(&mut pool, &mut puns, (v - 1) as usize, 0);
        HEAD.store(h.wrapping_add(1), Ordering::Release);
        DONE.fetch_add(1, Ordering::Release);
        crate::futex::wake_all(&DONE);
    }
}

/// Patches first the region sites a pun at `rip` (a site of `len` bytes) may borrow bytes of —
/// the instructions that start in the 4 bytes after it, when they are region sites the fault
/// handler has counted — so the pun borrows their final bytes instead of pinning them
/// unpatched (E9Patch's *successor eviction*). `depth` bounds the chain.
fn patch_successors(pool: &mut Pool, puns: &mut Puns, rip: u64, len: usize, depth: u32) {
    if depth >= 4 {
        return;
    }
    let end = rip + len as u64 + 4;
    let mut at = rip + len as u64;
    while at < end {
        let mut bytes = [0u8; 16];
        if crate::signal::context::read_memory(at, &mut bytes).is_err() {
            return;
        }
        let Ok((next, _)) = crate::decode::decode(&bytes, at) else {
            return;
        };
        if let Some(slot) = super::holding(at) {
            let s = &TABLE[slot];
            let ctl = s.ctl.load(Ordering::Acquire);
            if s.region.load(Ordering::Acquire) && matches!(state_of(ctl), COLD | QUEUED) {
                let queued = pack(at, QUEUED, 0);
                if state_of(ctl) == COLD {
                    super::set_orig_bytes(s, &bytes);
                }
                let claimed = state_of(ctl) == QUEUED
                    || s.ctl
                        .compare_exchange(ctl, queued, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok();
                if claimed {
                    if state_of(ctl) == COLD {
                        super::QUEUED_N.fetch_add(1, Ordering::Relaxed);
                    }
                    process(pool, puns, slot, depth + 1);
                }
            }
        }
        at += next.len() as u64;
    }
}

/// The vector registers and opmasks a call-out for `instr` saves: those the site uses and those
/// the code after it may read ([`liveness`]; the ABI trusted at a `ret` only for an exported
/// function of a shared object), or all of them under `OF_PATCH_SAVE_ALL=1`.
fn vector_registers_to_save(instr: &iced_x86::Instruction) -> liveness::Regs {
    if callout::save_all() {
        return liveness::ALL;
    }
    // What it reads (everything, for xsave and friends), and every register it names, read or
    // written in part or whole.
    let (reads, _) = liveness::uses(instr);
    let mut info = iced_x86::InstructionInfoFactory::new();
    let named = info
        .info(instr)
        .used_registers()
        .iter()
        .fold(0, |m, u| m | liveness::bit(u.register()));
    let after = liveness::live_after(instr, liveness::abi_at_return(instr.ip()), |addr, buf| {
        // A patched site's own bytes are a jump: read its original instruction instead.
        if let Some(orig) = super::patched_original(addr) {
            *buf = orig;
            return 16;
        }
        (1..=16)
            .rev()
            .find(|&n| crate::signal::context::read_memory(addr, &mut buf[..n]).is_ok())
            .unwrap_or(0)
    });
    reads | named | after
}

/// Plans, generates and pokes one queued site (`depth`: how many short sites wait for this
/// one, [`patch_successors`]).
fn process(pool: &mut Pool, puns: &mut Puns, index: usize, depth: u32) {
    let s = &TABLE[index];
    let ctl = s.ctl.load(Ordering::Acquire);
    if state_of(ctl) != QUEUED {
        return;
    }
    let rip = rip_of(ctl);
    let set = |state: u64| {
        let _ = s.ctl.compare_exchange(
            ctl,
            pack(rip, state, 0),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    };
    let orig = orig_bytes(s);
    let Ok((instr, _)) = crate::decode::decode(&orig, rip) else {
        REFUSED_N.fetch_add(1, Ordering::Relaxed);
        return set(REFUSED);
    };
    let len = instr.len();
    // The bytes must still be the ones that faulted (the code may have been replaced).
    let mut now = [0u8; 16];
    if crate::signal::context::read_memory(rip, &mut now[..len]).is_err()
        || now[..len] != orig[..len]
    {
        STALE_N.fetch_add(1, Ordering::Relaxed);
        return set(COLD);
    }
    let refuse = || {
        REFUSED_N.fetch_add(1, Ordering::Relaxed);
        set(REFUSED);
    };
    let region = s.region.load(Ordering::Acquire);
    let p = if region {
        // A region site: the call-out (its bytes live in a device).
        if callout::plan(&instr).is_err() {
            return refuse();
        }
        None
    } else {
        let Ok(p) = plan(&instr) else {
            return refuse();
        };
        Some(p)
    };
    // Only private executable mappings are written (shared code never is).
    let Some(m) = maps::find(rip, len as u64) else {
        return refuse();
    };
    if !m.private || m.prot & libc::PROT_EXEC == 0 {
        return refuse();
    }
    // A site of 5 bytes or more gets a `jmp rel32` (its first 5 bytes); a shorter one (only
    // region sites: page-0 operands are absolute) a pun covering its own bytes ([`super::pun`]).
    let short = len < 5;
    let written = len.min(5);
    let Some(w) = poke::writer(rip, written, m.prot) else {
        return refuse();
    };
    // Bytes a pun borrows never change.
    if puns.pinned(rip, written as u64) {
        return refuse();
    }
    // The generated code, encoded for a given address: the page-0 code of `plan`, or a region
    // site's call-out stub (its copy of the original instruction noted for the SIGTRAP
    // handler).
    let original = core::cell::Cell::new(0);
    let code: alloc::boxed::Box<dyn Fn(u64) -> Option<alloc::vec::Vec<u8>>> = match p {
        Some(p) => alloc::boxed::Box::new(move |at| trampoline(&instr, &p, at).ok()),
        None => {
            let Ok((_, offsets)) = crate::decode::decode(&orig, rip) else {
                return refuse();
            };
            let saved = callout::saved_state();
            let regs = vector_registers_to_save(&instr);
            let rec = callout::record(&instr, &orig, offsets, saved, regs);
            let original = &original;
            alloc::boxed::Box::new(move |at| {
                let s = callout::stub(
                    &instr,
                    rec as *const callout::Record as u64,
                    saved,
                    regs,
                    at,
                )
                .ok()?;
                // The last encoding is the one placed.
                original.set(s.original);
                Some(s.code)
            })
        }
    };
    let Some(at) = pool.place(rip, &*code) else {
        return refuse();
    };
    let bytes = if short {
        // A trampoline to the code goes where the pun's jump lands.
        patch_successors(pool, puns, rip, len, depth);
        let tramp = |t: u64| Some(super::pun::trampoline(t, at));
        let Some(bytes) = puns.choose(rip, len, m.end, &tramp, w) else {
            return refuse();
        };
        bytes
    } else {
        let rel = at.wrapping_sub(rip + 5) as i64;
        if rel != i64::from(rel as i32) {
            return refuse();
        }
        let mut b = alloc::vec![0xE9];
        b.extend_from_slice(&(rel as i32).to_le_bytes());
        b
    };
    // (A page-0 operand is always the map's: the SIGTRAP handler always emulates it.)
    s.original_copy.store(original.get(), Ordering::Release);
    s.jump.store(patch_word(&bytes), Ordering::Release);
    let patching = pack(rip, PATCHING, 0);
    if s.ctl
        .compare_exchange(ctl, patching, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        puns.unpin(rip);
        return;
    }
    // Linux's text_poke_bp: int3 first, serialise, the tail, serialise, the first byte,
    // serialise. A thread reaching the site meanwhile takes the int3 (see `trap`).
    if !poke::write(w, rip, &[0xCC]) {
        puns.unpin(rip);
        REFUSED_N.fetch_add(1, Ordering::Relaxed);
        s.ctl.store(pack(rip, REFUSED, 0), Ordering::Release);
        return;
    }
    poke::sync_core();
    let pause = super::INT3_PAUSE_US.load(Ordering::Relaxed);
    if pause != 0 {
        // SAFETY: usleep has no preconditions (the test aid of `set_int3_pause`).
        unsafe { libc::usleep(pause) };
    }
    if !poke::write(w, rip + 1, &bytes[1..]) {
        // Put the first byte back; if even that fails the int3 stays and every execution of
        // the site is emulated by the trap handler (the state stays PATCHING).
        if poke::write(w, rip, &orig[..1]) {
            poke::sync_core();
            puns.unpin(rip);
            REFUSED_N.fetch_add(1, Ordering::Relaxed);
            s.ctl.store(pack(rip, REFUSED, 0), Ordering::Release);
        }
        return;
    }
    poke::sync_core();
    if !poke::write(w, rip, &bytes[..1]) {
        return;
    }
    poke::sync_core();
    s.ctl.store(pack(rip, PATCHED, 0), Ordering::Release);
    PATCHED_N.fetch_add(1, Ordering::Relaxed);
}
