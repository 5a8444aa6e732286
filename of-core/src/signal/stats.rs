//! Counters of the fault path (lock-free, async-signal-safe: relaxed atomics), and the report
//! `OF_STATS=1` prints at exit.
//!
//! Counted: every SIGSEGV/SIGBUS the handler sees, the instructions emulated (by a fault and by
//! run-ahead), the faults passed on to the handler installed before, the exceptions raised as
//! the CPU would (#DE, #GP, #XM, #PF), the refusals by reason, the decoded-instruction cache's
//! hits and misses, and the busiest fault sites (a table of [`SITES`] rips with their counts).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Rips the site table tracks (direct-mapped; a site that collides replaces a less busy one).
pub const SITES: usize = 512;
/// Distinct refusal reasons counted.
pub const REASONS: usize = 32;
/// Busiest sites and reasons a [`Stats`] carries.
pub const TOP: usize = 8;

pub(crate) static FAULTS: AtomicU64 = AtomicU64::new(0);
pub(crate) static FAULTS_EMULATED: AtomicU64 = AtomicU64::new(0);
pub(crate) static RUNAHEAD_INSTRUCTIONS: AtomicU64 = AtomicU64::new(0);
pub(crate) static PASSED_ON: AtomicU64 = AtomicU64::new(0);
pub(crate) static EXCEPTIONS: AtomicU64 = AtomicU64::new(0);
pub(crate) static ICACHE_HITS: AtomicU64 = AtomicU64::new(0);
pub(crate) static ICACHE_MISSES: AtomicU64 = AtomicU64::new(0);

/// Refusal reasons: the `&'static str`'s address and length, and its count.
static REASON_PTR: [AtomicUsize; REASONS] = [const { AtomicUsize::new(0) }; REASONS];
static REASON_LEN: [AtomicUsize; REASONS] = [const { AtomicUsize::new(0) }; REASONS];
static REASON_COUNT: [AtomicU64; REASONS] = [const { AtomicU64::new(0) }; REASONS];

/// Fault sites: rip and count, and the instruction's first 15 bytes (for the report).
static SITE_RIP: [AtomicU64; SITES] = [const { AtomicU64::new(0) }; SITES];
static SITE_COUNT: [AtomicU64; SITES] = [const { AtomicU64::new(0) }; SITES];
static SITE_BYTES: [[AtomicU64; 2]; SITES] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; SITES];

/// Counts a refusal for `reason`.
pub(crate) fn refused(reason: &'static str) {
    let (p, l) = (reason.as_ptr() as usize, reason.len());
    for i in 0..REASONS {
        let cur = REASON_PTR[i].load(Ordering::Acquire);
        if cur == p {
            REASON_COUNT[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        if cur == 0
            && REASON_PTR[i]
                .compare_exchange(0, p, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            REASON_LEN[i].store(l, Ordering::Release);
            REASON_COUNT[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        if REASON_PTR[i].load(Ordering::Acquire) == p {
            REASON_COUNT[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// Counts a fault at `rip` whose instruction bytes are `bytes`.
pub(crate) fn site(rip: u64, bytes: &[u8]) {
    let i = (rip.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize % SITES;
    let cur = SITE_RIP[i].load(Ordering::Relaxed);
    if cur == rip {
        SITE_COUNT[i].fetch_add(1, Ordering::Relaxed);
        return;
    }
    // Take the slot over when it is free or its site is no busier than one fault: a hot site
    // keeps its slot, a cold one gives way.
    if (cur == 0 || SITE_COUNT[i].load(Ordering::Relaxed) <= 1)
        && SITE_RIP[i]
            .compare_exchange(cur, rip, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        let mut b = [0u8; 16];
        let n = bytes.len().min(15);
        b[..n].copy_from_slice(&bytes[..n]);
        b[15] = n as u8;
        SITE_BYTES[i][0].store(
            u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])),
            Ordering::Relaxed,
        );
        SITE_BYTES[i][1].store(
            u64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8])),
            Ordering::Relaxed,
        );
        SITE_COUNT[i].store(1, Ordering::Relaxed);
    }
}

/// A refusal reason and how often it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusal {
    /// The reason (the text of the diagnostic line); empty in unused entries.
    pub reason: &'static str,
    /// How many faults were refused for it.
    pub count: u64,
}

/// A fault site and how many faults it took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Site {
    /// The faulting instruction's address (0 in unused entries).
    pub rip: u64,
    /// Faults there.
    pub count: u64,
    /// The instruction's bytes (`len` of them).
    pub bytes: [u8; 15],
    /// How many of `bytes` are the instruction's (at most 15).
    pub len: u8,
}

/// The counters since installation (process-wide, relaxed: exact once threads are quiet).
///
/// # Examples
///
/// ```
/// use of_core::signal::Stats;
///
/// let s = Stats::default();
/// assert_eq!((s.faults_emulated, s.runahead_instructions), (0, 0));
/// assert_eq!(s.sites[0].rip, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// SIGSEGV/SIGBUS signals the handler saw.
    pub faults: u64,
    /// Faults whose instruction was emulated.
    pub faults_emulated: u64,
    /// Further instructions emulated by run-ahead in those faults.
    pub runahead_instructions: u64,
    /// Faults passed on to the handler installed before (or to the default action).
    pub passed_on: u64,
    /// Exceptions raised as the CPU would have (#DE, #GP, #XM, #PF on ordinary memory).
    pub exceptions: u64,
    /// Map accesses refused (the §4 diagnostic, then SIGSEGV), all reasons.
    pub refused: u64,
    /// The refusal reasons, most frequent first.
    pub refusals: [Refusal; TOP],
    /// Decoded-instruction cache hits (a fault site decoded before, same bytes).
    pub icache_hits: u64,
    /// Decoded-instruction cache misses.
    pub icache_misses: u64,
    /// The busiest fault sites, busiest first.
    pub sites: [Site; TOP],
    /// Site patching's counters.
    pub patch: crate::patch::Stats,
}

/// The counters now.
///
/// # Examples
///
/// Two map instructions in a row cost one fault: the second is emulated by run-ahead.
///
/// ```
/// of_core::signal::install().unwrap();
/// let before = of_core::signal::stats();
/// let mut rcx: u64 = 1;
/// // SAFETY: two page-0 accesses that change only rcx and the flags.
/// unsafe {
///     core::arch::asm!(
///         "add qword ptr [8], 1",
///         "add qword ptr [8], 1",
///         inout("rcx") rcx,
///         options(nostack),
///     )
/// };
/// let after = of_core::signal::stats();
/// assert_eq!(rcx, 3);
/// assert!(after.faults_emulated > before.faults_emulated);
/// assert!(after.faults >= after.faults_emulated);
/// assert!(after.sites.iter().any(|s| s.count > 0)); // the site is counted
/// ```
pub fn stats() -> Stats {
    let mut s = Stats {
        faults: FAULTS.load(Ordering::Relaxed),
        faults_emulated: FAULTS_EMULATED.load(Ordering::Relaxed),
        runahead_instructions: RUNAHEAD_INSTRUCTIONS.load(Ordering::Relaxed),
        passed_on: PASSED_ON.load(Ordering::Relaxed),
        exceptions: EXCEPTIONS.load(Ordering::Relaxed),
        icache_hits: ICACHE_HITS.load(Ordering::Relaxed),
        icache_misses: ICACHE_MISSES.load(Ordering::Relaxed),
        patch: crate::patch::stats(),
        ..Stats::default()
    };
    for i in 0..REASONS {
        let p = REASON_PTR[i].load(Ordering::Acquire);
        let l = REASON_LEN[i].load(Ordering::Acquire);
        if p == 0 || l == 0 {
            continue;
        }
        // SAFETY: p and l are the address and length of a `&'static str` given to `refused`.
        let reason: &'static str = unsafe {
            core::str::from_utf8_unchecked(core::slice::from_raw_parts(p as *const u8, l))
        };
        let r = Refusal {
            reason,
            count: REASON_COUNT[i].load(Ordering::Relaxed),
        };
        s.refused += r.count;
        insert_top(&mut s.refusals, r, |r| r.count);
    }
    for i in 0..SITES {
        let rip = SITE_RIP[i].load(Ordering::Relaxed);
        if rip == 0 {
            continue;
        }
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&SITE_BYTES[i][0].load(Ordering::Relaxed).to_le_bytes());
        b[8..].copy_from_slice(&SITE_BYTES[i][1].load(Ordering::Relaxed).to_le_bytes());
        let mut bytes = [0u8; 15];
        bytes.copy_from_slice(&b[..15]);
        let site = Site {
            rip,
            count: SITE_COUNT[i].load(Ordering::Relaxed),
            bytes,
            len: b[15].min(15),
        };
        insert_top(&mut s.sites, site, |s| s.count);
    }
    s
}

/// Inserts `v` into `top` (kept sorted by `key`, largest first) if it belongs there.
fn insert_top<T: Copy>(top: &mut [T; TOP], v: T, key: impl Fn(&T) -> u64) {
    let k = key(&v);
    if let Some(pos) = top.iter().position(|t| key(t) < k) {
        for j in (pos + 1..TOP).rev() {
            top[j] = top[j - 1];
        }
        top[pos] = v;
    }
}

/// Prints the counters, one line each, as `OF_STATS=1` does at exit (async-signal-safe:
/// write(2) of formatted lines, no allocation).
///
/// # Examples
///
/// ```
/// of_core::signal::stats::print(); // to stderr
/// ```
pub fn print() {
    use crate::diag::Line;
    let s = stats();
    let mut l = Line::default();
    l.push_str("of: statistics: ");
    l.push_dec(s.faults);
    l.push_str(" faults (");
    l.push_dec(s.faults_emulated);
    l.push_str(" emulated, ");
    l.push_dec(s.passed_on);
    l.push_str(" passed on, ");
    l.push_dec(s.exceptions);
    l.push_str(" exceptions raised, ");
    l.push_dec(s.refused);
    l.push_str(" refused); ");
    l.push_dec(s.runahead_instructions);
    l.push_str(" more instructions emulated by run-ahead; decoded-instruction cache ");
    l.push_dec(s.icache_hits);
    l.push_str(" hits, ");
    l.push_dec(s.icache_misses);
    l.push_str(" misses; site patching ");
    l.push_dec(s.patch.patched);
    l.push_str(" patched, ");
    l.push_dec(s.patch.refused);
    l.push_str(" refused");
    l.emit();
    for r in s.refusals.iter().filter(|r| r.count > 0) {
        let mut l = Line::default();
        l.push_str("of:   refused ");
        l.push_dec(r.count);
        l.push_str("x: ");
        l.push_str(r.reason);
        l.emit();
    }
    for site in s.sites.iter().filter(|s| s.count > 0) {
        let mut l = Line::default();
        l.push_str("of:   fault site ");
        l.push_hex(site.rip);
        l.push_str(": ");
        l.push_dec(site.count);
        l.push_str(" faults, `");
        match crate::decode::decode(&site.bytes[..site.len as usize], site.rip) {
            Ok((i, _)) => super::report::push_disassembly(&mut l, &i),
            Err(_) => l.push_str("(undecodable)"),
        }
        l.push_str("`");
        l.emit();
    }
}

extern "C" fn at_exit() {
    print();
}

static AT_EXIT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Registers [`print`] to run at exit (`OF_STATS=1` at installation).
pub(crate) fn print_at_exit() {
    if !AT_EXIT.swap(true, Ordering::AcqRel) {
        // SAFETY: atexit with a function that takes nothing and never unwinds.
        unsafe { libc::atexit(at_exit) };
    }
}

/// Prints the counters now if `OF_STATS=1` asked for them at exit: for a process about to die
/// of a refused instruction, which never reaches `exit`.
pub(crate) fn print_before_dying() {
    if AT_EXIT.load(Ordering::Acquire) {
        print();
    }
}
