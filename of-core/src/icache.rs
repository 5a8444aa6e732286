//! A bounded, lock-free, signal-safe cache of decoded instructions keyed by rip.
//!
//! Each of [`ENTRIES`] direct-mapped entries is guarded by an atomic state word used as a
//! try-lock (empty / busy / valid): a reader or writer that finds the entry busy treats it as a
//! miss and never waits, so the cache is safe to use from signal handlers on any number of
//! threads. A hit is used only if the cached bytes equal the bytes now at rip (code can change:
//! JITs, breakpoints), so the cache can only save decoding, never change what is executed.

use crate::decode::{self, DecodeError, MAX_INSTRUCTION_LEN};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU32, Ordering};
use iced_x86::{ConstantOffsets, Instruction};

/// Number of entries.
///
/// # Examples
///
/// ```
/// use of_core::icache::ENTRIES;
///
/// assert!(ENTRIES.is_power_of_two());
/// ```
pub const ENTRIES: usize = 256;

const EMPTY: u32 = 0;
const BUSY: u32 = 1;
const VALID: u32 = 2;

#[derive(Clone, Copy)]
struct Entry {
    rip: u64,
    len: u8,
    bytes: u128,
    instr: Instruction,
    offsets: ConstantOffsets,
}

struct Slot {
    state: AtomicU32,
    entry: UnsafeCell<MaybeUninit<Entry>>,
}

// SAFETY: `entry` is only accessed by the thread that moved `state` to BUSY.
unsafe impl Sync for Slot {}

static CACHE: [Slot; ENTRIES] = [const {
    Slot {
        state: AtomicU32::new(EMPTY),
        entry: UnsafeCell::new(MaybeUninit::uninit()),
    }
}; ENTRIES];

fn index(rip: u64) -> usize {
    ((rip ^ (rip >> 8) ^ (rip >> 16)) as usize) % ENTRIES
}

/// Decodes the instruction in the first `n` (at most 15) of `bytes` (the bytes at `rip`),
/// using the cache when the cached bytes match.
///
/// # Errors
/// As [`decode::decode`].
///
/// # Examples
///
/// ```
/// use iced_x86::Mnemonic;
/// use of_core::icache;
///
/// // inc qword ptr [0] (48 ff 04 25 00 00 00 00), padded to 16 bytes.
/// let mut bytes = [0u8; 16];
/// bytes[..8].copy_from_slice(&[0x48, 0xFF, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00]);
/// let (a, _) = icache::decode(&bytes, 15, 0x40_1000).unwrap();
/// let (b, _) = icache::decode(&bytes, 15, 0x40_1000).unwrap(); // from the cache
/// assert_eq!(a, b);
/// assert_eq!(a.mnemonic(), Mnemonic::Inc);
///
/// // The code at the same rip changed to dec qword ptr [0] (48 ff 0c 25 ...): the cached entry
/// // does not match the bytes and is not used.
/// bytes[2] = 0x0C;
/// let (c, _) = icache::decode(&bytes, 15, 0x40_1000).unwrap();
/// assert_eq!(c.mnemonic(), Mnemonic::Dec);
///
/// // Fewer bytes than the instruction needs are still an error.
/// assert!(icache::decode(&bytes, 3, 0x40_1000).is_err());
/// ```
pub fn decode(
    bytes: &[u8; 16],
    n: usize,
    rip: u64,
) -> Result<(Instruction, ConstantOffsets), DecodeError> {
    let n = n.min(MAX_INSTRUCTION_LEN);
    let now = u128::from_le_bytes(*bytes);
    let slot = &CACHE[index(rip)];
    if slot
        .state
        .compare_exchange(VALID, BUSY, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        // SAFETY: we hold the entry (state BUSY), and it was VALID, so it is initialised.
        let e = unsafe { (*slot.entry.get()).assume_init_ref() };
        let len = e.len as usize;
        let hit = e.rip == rip && n >= len && (now ^ e.bytes) & ((1u128 << (8 * len)) - 1) == 0;
        let found = hit.then_some((e.instr, e.offsets));
        slot.state.store(VALID, Ordering::Release);
        if let Some(found) = found {
            crate::signal::stats::ICACHE_HITS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            return Ok(found);
        }
    }
    crate::signal::stats::ICACHE_MISSES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let (instr, offsets) = decode::decode(&bytes[..n], rip)?;
    let cur = slot.state.load(Ordering::Relaxed);
    if cur != BUSY
        && slot
            .state
            .compare_exchange(cur, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        let e = Entry {
            rip,
            len: instr.len() as u8,
            bytes: now,
            instr,
            offsets,
        };
        // SAFETY: we hold the entry (state BUSY).
        unsafe { (*slot.entry.get()).write(e) };
        slot.state.store(VALID, Ordering::Release);
    }
    Ok((instr, offsets))
}
