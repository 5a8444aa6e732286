//! Site patching (SPEC §6): a page-0 instruction that keeps faulting at the same address is
//! rewritten in place into a jump to generated code that does the same thing to the real
//! registers, without a fault (lazy binary rewriting, as lazypoline does for system calls).
//!
//! The data flow:
//!
//! 1. **count** — the fault handler, after emulating a fault, counts it in a lock-free table
//!    of sites keyed by rip ([`on_emulated_fault`]; async-signal-safe, no allocation). At the
//!    threshold ([`set_threshold`], default 2) a site whose instruction [`plan::plan`] accepts is
//!    queued for the patcher thread, and the handler returns as usual.
//! 2. **plan and generate** — the patcher thread (started by [`enable`], ordinary code, so it
//!    may allocate and use iced-x86's encoder) re-reads the site, checks the bytes are still the
//!    ones that faulted (code unmapped and replaced at the same address is never patched from a
//!    stale record), checks the mapping is private and executable (`/proc/self/maps`; shared
//!    code is never written), and encodes the generated code ([`plan::trampoline`]) into memory
//!    within ±2 GiB of the site ([`pool`]).
//! 3. **poke** — the site is rewritten with the cross-modifying-code protocol of Linux's
//!    `text_poke_bp` ([`poke`]): `int3` on the first byte, serialise every core of the process
//!    (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`), the jump's tail, serialise,
//!    the first byte (`e9`), serialise. A thread that reaches the site meanwhile takes the
//!    `int3`; [`trap`]'s SIGTRAP handler emulates the original instruction for it. Code is
//!    written through `/proc/self/mem` as debuggers do (no page is ever writable and executable),
//!    or, if that is refused, with `mprotect` for the length of the patch only; if that is
//!    refused too (W^X policies, seccomp), the site keeps the fault path, silently.
//!
//! A site whose patch is gone (its code rewritten) faults again and is learnt again. `fork`
//! keeps patched sites working in both processes (the code and the generated code are private
//! memory, copied); the child patches new sites after it calls [`enable`] again (the patcher
//! thread does not survive `fork`). Turning patching off stops new patches; sites already
//! patched stay patched (they are exact).

pub mod callout;
pub mod liveness;
pub mod maps;
pub mod plan;
pub mod poke;
pub mod pool;
pub mod pun;
pub mod trap;
mod worker;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use iced_x86::Instruction;

/// Number of sites the table tracks (hashed by rip, probing [`PROBE`] slots; a queued or
/// patched site keeps its slot for good).
pub const SITES: usize = 4096;
/// Slots a site may occupy, from its hash on.
pub const PROBE: usize = 8;

const COLD: u64 = 0; // counting faults
const QUEUED: u64 = 1; // waiting for the patcher thread
const PATCHING: u64 = 2; // being rewritten: an int3 may be at the site
const PATCHED: u64 = 3;
const REFUSED: u64 = 4; // not patchable (form, mapping or the system said no)

/// A site: `ctl` packs rip (bits 16..64), state (bits 13..16) and fault count (bits 0..13);
/// `orig` holds the instruction bytes that faulted (written before the state becomes QUEUED).
struct Site {
    ctl: AtomicU64,
    orig: [AtomicU64; 2],
    /// The bytes the patch writes at the site, once chosen ([`patch_word`]).
    jump: AtomicU64,
    /// Whether the faults counted touched a trapped region (the site gets a call-out).
    region: AtomicBool,
    /// Where a copy of the site's original instruction runs natively and jumps back (in its
    /// call-out stub; 0: none), for a thread that meets the `int3` of the patch while the
    /// instruction touches ordinary memory.
    original_copy: AtomicU64,
}

/// Packs the bytes a patch writes at its site (the first 5 at most: a `jmp rel32`, or a whole
/// shorter site's pun) into a [`Site::jump`] word: bytes in bits 0..40, their count in bits
/// 40..44 (0: none chosen).
fn patch_word(bytes: &[u8]) -> u64 {
    let n = bytes.len().min(5);
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b) | (n as u64) << 40
}

/// Whether `now` (the bytes at a site) begins with the patch packed in `word`.
fn is_patch(word: u64, now: &[u8]) -> bool {
    let n = ((word >> 40) & 0xF) as usize;
    n != 0 && now.len() >= n && now[..n] == word.to_le_bytes()[..n]
}

static TABLE: [Site; SITES] = [const {
    Site {
        ctl: AtomicU64::new(0),
        orig: [AtomicU64::new(0), AtomicU64::new(0)],
        jump: AtomicU64::new(0),
        region: AtomicBool::new(false),
        original_copy: AtomicU64::new(0),
    }
}; SITES];

const fn pack(rip: u64, state: u64, count: u64) -> u64 {
    (rip << 16) | (state << 13) | (count & 0x1FFF)
}
const fn rip_of(ctl: u64) -> u64 {
    ctl >> 16
}
const fn state_of(ctl: u64) -> u64 {
    (ctl >> 13) & 7
}
const fn count_of(ctl: u64) -> u64 {
    ctl & 0x1FFF
}

fn index(rip: u64) -> usize {
    // Fibonacci hashing: instruction addresses are not uniformly spread in the low bits.
    (rip.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize % SITES
}

/// The slot that holds `rip`, if one does: one queued, being patched or patched first (two
/// threads counting a new site at once may each have claimed a slot for it).
fn holding(rip: u64) -> Option<usize> {
    let mut first = None;
    for i in (0..PROBE).map(|i| (index(rip) + i) % SITES) {
        let ctl = TABLE[i].ctl.load(Ordering::Acquire);
        if rip_of(ctl) == rip {
            if matches!(state_of(ctl), QUEUED | PATCHING | PATCHED) {
                return Some(i);
            }
            first = first.or(Some(i));
        }
    }
    first
}

/// The slot for counting `rip`: the one that holds it, else the first that is merely counting
/// another site or holds a refused one (which `rip` may take over), else its hash's.
fn slot_for(rip: u64) -> usize {
    holding(rip).unwrap_or_else(|| {
        (0..PROBE)
            .map(|i| (index(rip) + i) % SITES)
            .find(|&i| {
                matches!(
                    state_of(TABLE[i].ctl.load(Ordering::Acquire)),
                    COLD | REFUSED
                )
            })
            .unwrap_or(index(rip))
    })
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static THRESHOLD: AtomicU32 = AtomicU32::new(2);
static INT3_PAUSE_US: AtomicU32 = AtomicU32::new(0);

/// Makes the patcher thread wait `us` microseconds while the `int3` of a patch is in place (a
/// test aid: it widens the window in which other threads take the trap and get the original
/// instruction emulated). 0, the default, means no wait.
///
/// # Examples
///
/// ```
/// of_core::patch::set_int3_pause(0);
/// ```
pub fn set_int3_pause(us: u32) {
    INT3_PAUSE_US.store(us, Ordering::Relaxed);
}

/// Counters of the patching machinery.
///
/// # Examples
///
/// ```
/// let s = of_core::patch::stats();
/// assert!(s.patched <= s.queued);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sites queued for the patcher thread.
    pub queued: u64,
    /// Sites rewritten into a jump to generated code.
    pub patched: u64,
    /// Sites left on the fault path: the form is not patched, the mapping is shared or not
    /// executable, or the system refused to write code.
    pub refused: u64,
    /// Sites whose bytes had changed by the time the patcher looked (learnt again).
    pub stale: u64,
    /// Executions of a site that met the `int3` of a patch in progress (emulated).
    pub trapped: u64,
}

static QUEUED_N: AtomicU64 = AtomicU64::new(0);
static PATCHED_N: AtomicU64 = AtomicU64::new(0);
static REFUSED_N: AtomicU64 = AtomicU64::new(0);
static STALE_N: AtomicU64 = AtomicU64::new(0);
static TRAPPED_N: AtomicU64 = AtomicU64::new(0);

/// The counters so far.
///
/// # Examples
///
/// ```
/// let before = of_core::patch::stats();
/// assert!(of_core::patch::stats().queued >= before.queued);
/// ```
pub fn stats() -> Stats {
    Stats {
        queued: QUEUED_N.load(Ordering::Relaxed),
        patched: PATCHED_N.load(Ordering::Relaxed),
        refused: REFUSED_N.load(Ordering::Relaxed),
        stale: STALE_N.load(Ordering::Relaxed),
        trapped: TRAPPED_N.load(Ordering::Relaxed),
    }
}

/// Whether patching is on.
///
/// # Examples
///
/// ```
/// // Off unless OF_PATCH=1 was set at installation or `enable` was called.
/// let _ = of_core::patch::enabled();
/// ```
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns patching on: registers the process for core-serialising membarriers, opens
/// `/proc/self/mem`, installs the SIGTRAP handler for patches in progress and starts the
/// patcher thread (idempotent; call it outside signal handlers). Returns whether patching is
/// on: `false` when the kernel lacks `MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE`, or the
/// thread or the handler cannot be created — then every site keeps the fault path.
///
/// # Examples
///
/// ```
/// if of_core::patch::enable() {
///     assert!(of_core::patch::enabled());
///     of_core::patch::disable();
/// }
/// assert!(!of_core::patch::enabled());
/// ```
pub fn enable() -> bool {
    callout::read_save_all();
    if !poke::register_sync_core() {
        return false;
    }
    poke::open_mem();
    if !trap::install() || !worker::start() {
        return false;
    }
    EVER.store(true, Ordering::Release);
    ENABLED.store(true, Ordering::Release);
    true
}

/// Stops patching new sites; sites already patched stay patched.
///
/// # Examples
///
/// ```
/// of_core::patch::disable();
/// assert!(!of_core::patch::enabled());
/// ```
pub fn disable() {
    ENABLED.store(false, Ordering::Release);
}

/// Sets how many faults at one address make it a candidate (at least 1; default 2).
///
/// # Examples
///
/// ```
/// of_core::patch::set_threshold(0); // treated as 1
/// assert_eq!(of_core::patch::threshold(), 1);
/// of_core::patch::set_threshold(2);
/// ```
pub fn set_threshold(n: u32) {
    THRESHOLD.store(n.clamp(1, 0x1FFF), Ordering::Relaxed);
}

/// The current threshold.
///
/// # Examples
///
/// ```
/// assert!(of_core::patch::threshold() >= 1);
/// ```
pub fn threshold() -> u32 {
    THRESHOLD.load(Ordering::Relaxed)
}

/// Waits until every site queued so far has been handled by the patcher thread (for tests and
/// benchmarks, outside signal handlers). Returns at once when patching is off.
///
/// # Examples
///
/// ```
/// of_core::patch::flush();
/// ```
pub fn flush() {
    worker::flush();
}

/// Records `b` as the bytes of site `s`'s original instruction (before its state says so).
fn set_orig_bytes(s: &Site, b: &[u8; 16]) {
    let (lo, hi) = b.split_at(8);
    s.orig[0].store(
        u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])),
        Ordering::Release,
    );
    s.orig[1].store(
        u64::from_le_bytes(hi.try_into().unwrap_or([0; 8])),
        Ordering::Release,
    );
}

fn orig_bytes(s: &Site) -> [u8; 16] {
    let lo = s.orig[0].load(Ordering::Acquire).to_le_bytes();
    let hi = s.orig[1].load(Ordering::Acquire).to_le_bytes();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&lo);
    b[8..].copy_from_slice(&hi);
    b
}

/// Called by the fault handler after it emulated the faulting instruction `instr` (bytes
/// `bytes`) at `rip`, which touched a trapped region if `region`: counts the fault and queues
/// the site at the threshold (a region site gets a [`callout`], a page-0 site the code of
/// [`plan`]). Faults inside generated code (a call-out's fallback) are not counted.
/// Async-signal-safe: atomics only.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
///
/// // Without `enable` nothing is counted.
/// let bytes = [0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01];
/// let (instr, _) = decode(&bytes, 0x40_0000).unwrap();
/// let before = of_core::patch::stats();
/// if !of_core::patch::enabled() {
///     of_core::patch::on_emulated_fault(0x40_0000, &bytes, &instr, false);
///     assert_eq!(of_core::patch::stats(), before);
/// }
/// ```
pub fn on_emulated_fault(rip: u64, bytes: &[u8], instr: &Instruction, region: bool) {
    if !enabled() || rip >> 48 != 0 || !worker::alive_here() || pool::in_generated_code(rip) {
        return;
    }
    let slot = slot_for(rip);
    let s = &TABLE[slot];
    let mut now = [0u8; 16];
    let n = bytes.len().min(16).min(instr.len());
    now[..n].copy_from_slice(&bytes[..n]);
    let same_bytes = |s: &Site| orig_bytes(s)[..n] == now[..n];
    loop {
        let ctl = s.ctl.load(Ordering::Acquire);
        let state = state_of(ctl);
        let next = if rip_of(ctl) != rip {
            // Another site holds the slot: take it over only while it is merely being counted
            // (or was refused); a queued or patched site keeps it.
            match state {
                COLD | REFUSED => pack(rip, COLD, 1),
                _ => return,
            }
        } else {
            match state {
                COLD => pack(rip, COLD, count_of(ctl) + 1),
                // The site faults although it was patched: either its code changed (the bytes
                // there are no longer our jump), or this thread fetched the original
                // instruction just before the jump was written (they still are).
                PATCHED if still_jumps(s, rip) => return,
                PATCHED => pack(rip, COLD, 1),
                REFUSED if !same_bytes(s) => pack(rip, COLD, 1),
                _ => return, // queued, being patched, or refused for good
            }
        };
        if state_of(next) == COLD && count_of(next) >= u64::from(threshold()) {
            // Record the bytes first, then claim the site for the patcher.
            set_orig_bytes(s, &now);
            s.region.store(region, Ordering::Release);
            let queued = pack(rip, QUEUED, count_of(next));
            if s.ctl
                .compare_exchange(ctl, queued, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                if worker::push(slot as u32) {
                    QUEUED_N.fetch_add(1, Ordering::Relaxed);
                } else {
                    // The queue is full: count again later.
                    s.ctl.store(pack(rip, COLD, 0), Ordering::Release);
                }
                return;
            }
        } else if s
            .ctl
            .compare_exchange(ctl, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // Remember whether the site touched a region (the patcher patches a short site's
            // successors first when they are region sites: `worker`).
            if rip_of(ctl) != rip || region {
                s.region.store(region, Ordering::Release);
            }
            return;
        }
    }
}

/// Whether patching was ever turned on in this process (then the fault handler checks
/// [`original_instruction`]).
static EVER: AtomicBool = AtomicBool::new(false);

/// For the fault handler: a thread may fault on a site's *original* instruction, fetched just
/// before the patcher rewrote its first bytes (an `int3`, or the jump); the bytes now at `rip`
/// then no longer say what faulted. If `rip` is a site being patched, or a patched site whose
/// bytes are still our `int3` or jump, `bytes` is replaced by the original instruction's and
/// true is returned. Async-signal-safe.
///
/// # Examples
///
/// ```
/// let mut bytes = [0x90u8; 16];
/// // Not a site of ours: unchanged.
/// assert!(!of_core::patch::original_instruction(0x40_0000, &mut bytes));
/// assert_eq!(bytes, [0x90; 16]);
/// ```
pub fn original_instruction(rip: u64, bytes: &mut [u8; 16]) -> bool {
    if !EVER.load(Ordering::Relaxed) {
        return false;
    }
    let Some(slot) = holding(rip) else {
        return false;
    };
    let s = &TABLE[slot];
    let ctl = s.ctl.load(Ordering::Acquire);
    if rip_of(ctl) != rip {
        return false;
    }
    let ours = match state_of(ctl) {
        PATCHING => true,
        PATCHED => bytes[0] == 0xCC || is_patch(s.jump.load(Ordering::Acquire), &bytes[..]),
        _ => false,
    };
    if ours {
        *bytes = orig_bytes(s);
    }
    ours
}

/// The original bytes of the site at `addr` if it is patched or being patched (its bytes now
/// are a jump or an `int3`), for the patcher's analyses.
fn patched_original(addr: u64) -> Option<[u8; 16]> {
    let s = &TABLE[holding(addr)?];
    matches!(state_of(s.ctl.load(Ordering::Acquire)), PATCHING | PATCHED).then(|| orig_bytes(s))
}

/// Whether the bytes at `rip` are still site `s`'s jump (or the int3 of its patch).
fn still_jumps(s: &Site, rip: u64) -> bool {
    let word = s.jump.load(Ordering::Acquire);
    let mut b = [0u8; 5];
    let n = (((word >> 40) & 0xF) as usize).clamp(1, 5);
    if crate::signal::context::read_memory(rip, &mut b[..n]).is_err() {
        return false;
    }
    b[0] == 0xCC || is_patch(word, &b[..n])
}

/// The original bytes of a site whose patch is in progress at `rip`, or just completed (a
/// thread that executed the `int3` may get to its handler after the jump is in place), and
/// where a copy of its instruction runs natively (0: nowhere), for the SIGTRAP handler.
fn patching_at(rip: u64) -> Option<([u8; 16], u64)> {
    let s = &TABLE[holding(rip)?];
    let ctl = s.ctl.load(Ordering::Acquire);
    (rip_of(ctl) == rip && matches!(state_of(ctl), PATCHING | PATCHED))
        .then(|| (orig_bytes(s), s.original_copy.load(Ordering::Acquire)))
}
