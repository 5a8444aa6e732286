//! Memory for generated code, within ±2 GiB of the sites (a `jmp rel32` reaches it and it
//! jumps back with one). Used by the patcher thread only.
//!
//! Chunks are mapped next to the code they serve with `MAP_FIXED_NOREPLACE` (never replacing
//! anything). With `/proc/self/mem` a chunk is mapped read+execute from the start and written
//! through it, so no page is ever writable and executable; without it each piece of generated
//! code gets its own page, written while read+write and then made read+execute, never changed
//! again (other threads may be running code in a sealed page).

use super::poke::{self, Writer};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Chunks recorded for [`in_generated_code`]: base (bits 12..64) | pages (bits 0..12).
static CHUNKS: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];
static NCHUNKS: AtomicUsize = AtomicUsize::new(0);

/// Records `base .. base + len` as generated code. Returns false when the record is full (the
/// caller then does not use the memory for code).
pub(super) fn record(base: u64, len: u64) -> bool {
    let i = NCHUNKS.load(Ordering::Acquire);
    let Some(slot) = CHUNKS.get(i) else {
        return false;
    };
    slot.store(base | (len >> 12), Ordering::Release);
    NCHUNKS.store(i + 1, Ordering::Release);
    true
}

/// Maps `len` bytes of anonymous private memory at exactly `addr` with `prot`, never replacing
/// a mapping (`MAP_FIXED_NOREPLACE`). Returns whether it did.
pub(super) fn map_fixed(addr: u64, len: u64, prot: i32) -> bool {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    if p as u64 == addr {
        return true;
    }
    // An old kernel treated the flag as a hint and placed it elsewhere.
    // SAFETY: the mapping we just made.
    unsafe { libc::munmap(p, len as usize) };
    false
}

/// Whether `addr` lies in memory holding generated code (async-signal-safe; for diagnostics
/// and profilers: a signal may interrupt a thread there).
///
/// # Examples
///
/// ```
/// assert!(!of_core::patch::pool::in_generated_code(0x40_0000));
/// ```
pub fn in_generated_code(addr: u64) -> bool {
    let n = NCHUNKS.load(Ordering::Acquire).min(CHUNKS.len());
    CHUNKS[..n].iter().any(|c| {
        let v = c.load(Ordering::Acquire);
        let (base, len) = (v & !0xFFF, (v & 0xFFF) << 12);
        v != 0 && addr.wrapping_sub(base) < len
    })
}

/// Bytes per chunk.
const CHUNK: u64 = 64 * 1024;
/// Furthest a chunk may be from a site (2 GiB minus room for the chunk and the code).
const REACH: u64 = (1 << 31) - 2 * CHUNK;

#[derive(Clone, Copy)]
struct Chunk {
    base: u64,
    len: u64,
    used: u64,
}

/// The chunks mapped so far.
#[derive(Default)]
pub struct Pool {
    chunks: Vec<Chunk>,
}

fn map_near(site: u64, len: u64, prot: i32) -> Option<u64> {
    // Try below, then above the site, 1 MiB apart, a few hundred times.
    let step = 1 << 20;
    for k in 1..512u64 {
        for hint in [
            (site & !(step - 1)).wrapping_sub(k * step),
            (site & !(step - 1)).wrapping_add(k * step),
        ] {
            if hint < 0x10_0000 || hint >> 47 != 0 || hint.abs_diff(site) > REACH {
                continue;
            }
            if map_fixed(hint, len, prot) {
                return Some(hint);
            }
        }
    }
    None
}

impl Pool {
    /// Places `code` within reach of `site` and returns its address, or `None` if no memory
    /// near the site can be mapped or written.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::patch::pool::Pool;
    ///
    /// let mut pool = Pool::default();
    /// let site = of_core::patch::pool::in_generated_code as usize as u64; // code of this process
    /// let at = pool.place(site, |_| Some(vec![0xC3])).unwrap(); // ret
    /// assert!(at.abs_diff(site) < 1 << 31);
    /// // SAFETY: `at` holds a `ret`.
    /// let f: extern "C" fn() = unsafe { core::mem::transmute(at as usize) };
    /// f();
    /// ```
    pub fn place(&mut self, site: u64, encode: impl Fn(u64) -> Option<Vec<u8>>) -> Option<u64> {
        let proc_mem = poke::open_mem();
        if proc_mem {
            // Encode once at the site's own address to learn the size (the position-dependent
            // bytes are rel32 jumps: the same length anywhere within reach).
            let len = encode(site)?.len() as u64;
            let fits = |c: &Chunk| c.used + len <= c.len && c.base.abs_diff(site) <= REACH;
            let i = match self.chunks.iter().position(fits) {
                Some(i) => i,
                None => {
                    let base = map_near(site, CHUNK, libc::PROT_READ | libc::PROT_EXEC)?;
                    if !record(base, CHUNK) {
                        // SAFETY: the mapping map_near just made, unused.
                        unsafe { libc::munmap(base as *mut libc::c_void, CHUNK as usize) };
                        return None;
                    }
                    self.chunks.push(Chunk {
                        base,
                        len: CHUNK,
                        used: 0,
                    });
                    self.chunks.len() - 1
                }
            };
            let c = &mut self.chunks[i];
            let at = c.base + c.used;
            let code = encode(at)?;
            if !poke::write(Writer::ProcMem, at, &code) {
                return None;
            }
            c.used += (code.len() as u64 + 15) & !15;
            Some(at)
        } else {
            let base = map_near(site, 4096, libc::PROT_READ | libc::PROT_WRITE)?;
            if !record(base, 4096) {
                // SAFETY: the mapping map_near just made, unused.
                unsafe { libc::munmap(base as *mut libc::c_void, 4096) };
                return None;
            }
            let code = encode(base)?;
            if code.len() > 4096 {
                return None;
            }
            // SAFETY: a fresh read+write page of ours.
            unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), base as *mut u8, code.len()) };
            // SAFETY: our page; from now on read+execute, never written again.
            let ok = unsafe {
                libc::mprotect(
                    base as *mut libc::c_void,
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                ) == 0
            };
            ok.then_some(base)
        }
    }
}
