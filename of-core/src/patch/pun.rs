//! Jumps for sites shorter than a `jmp rel32` (2 to 4 bytes: the base-register device accesses
//! a C compiler emits for a pointer-based driver, `mov byte ptr [rdi], al`): *instruction
//! punning*, as E9Patch does (Duck, Gao and Roychoudhury, "Binary Rewriting without Control
//! Flow Recovery", PLDI 2020).
//!
//! The site's own bytes become `jmp rel32` — optionally after `k` ignored `2e` prefixes — whose
//! last bytes *are* the bytes of the instruction(s) that follow, left unchanged:
//!
//! ```text
//! site (3 bytes)  next instruction
//! 0f b6 07        a8 20 74 f9 ...        movzx eax, byte ptr [rdi]; test al, 0x20; je …
//! e9 xx xx        a8 20 74 f9 ...        jmp <rel32 = 0x20a8xxxx>   (k = 0)
//! 2e e9 xx        a8 20 74 f9 ...        jmp <rel32 = 0x7420a8xx>   (k = 1)
//! ```
//!
//! The free low bytes of the rel32 (`len - 1 - k` of them) choose the target within a window of
//! 256^(len-1-k) bytes whose place the following bytes fix; a *trampoline* — a jump on to the
//! site's call-out stub, 5 or 14 bytes, so many fit in one window — is placed there (in pages
//! mapped with `MAP_FIXED_NOREPLACE`, never replacing anything). (Placing the whole stub there
//! instead saved no measurable time and filled windows: fewer short sites got patched.) No byte outside the site changes, so every other instruction boundary
//! — a jump target the patcher cannot know about, or where another thread stands — still holds
//! the code it held. The price:
//!
//! - **Pinned bytes.** The following bytes a pun borrows must never change while the site is
//!   patched: the patcher refuses to patch a site whose bytes another pun borrows (it keeps the
//!   fault path), and a program that rewrites code in place must rewrite whole functions (as
//!   JIT compilers do: unmapping or replacing the site's bytes too unpatches it).
//! - **Address space.** A trampoline page may lie anywhere within ±2 GiB of the site; the
//!   windows that would take room the heap (`brk`) or the main thread's stack may grow into
//!   are skipped.
//! - A site whose windows are all taken or unmappable keeps the fault path.

use super::poke::{self, Writer};
use alloc::vec::Vec;

/// The prefix a pun may put before `e9` (a CS segment override: ignored by a near jump in
/// 64-bit mode, Intel SDM Vol. 2A §2.1.1; `66` is not, it truncates rip on AMD CPUs).
const PREFIX: u8 = 0x2E;

/// One way to pun a site: `prefixes` × `2e`, `e9`, then the low `free` bytes of the rel32
/// chosen by the patcher; the target lies in `lo .. lo + 256^free`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Number of `2e` prefixes before the `e9`.
    pub prefixes: usize,
    /// Number of rel32 bytes inside the site (the patcher's choice).
    pub free: usize,
    /// The lowest target.
    pub lo: u64,
}

impl Window {
    /// Bytes in the window: 256^free.
    pub fn span(&self) -> u64 {
        1 << (8 * self.free)
    }

    /// The jump's length in bytes (prefixes, `e9`, rel32).
    pub fn jump_len(&self) -> usize {
        self.prefixes + 5
    }

    /// The bytes written over a site of `site_len` bytes at `rip` for a jump to `target`
    /// (which must lie in the window).
    pub fn bytes(&self, rip: u64, site_len: usize, target: u64) -> Vec<u8> {
        let rel = target.wrapping_sub(rip + self.jump_len() as u64) as u32;
        let mut b = alloc::vec![PREFIX; self.prefixes];
        b.push(0xE9);
        b.extend_from_slice(&rel.to_le_bytes()[..self.free]);
        debug_assert_eq!(b.len(), site_len);
        b
    }
}

/// The windows of a site of `site_len` (2..=4) bytes at `rip` followed by `following` (the
/// next 4 bytes, which stay), fewest prefixes (largest window) first.
///
/// # Examples
///
/// ```
/// use of_core::patch::pun::windows;
///
/// // A 3-byte site at 0x1000 followed by a8 20 74 f9: with no prefix the rel32 is
/// // 0x20a8_xxxx, so the targets are 0x1000 + 5 + 0x20a8_0000 .. + 0x1_0000.
/// let w = windows(0x1000, 3, [0xA8, 0x20, 0x74, 0xF9]);
/// assert_eq!(w[0].lo, 0x1005 + 0x20A8_0000);
/// assert_eq!(w[0].span(), 0x1_0000);
/// // With one 2e prefix: rel32 0x7420_a8xx from 0x1006.
/// assert_eq!(w[1].lo, 0x1006 + 0x7420_A800);
/// assert_eq!(w.len(), 3);
/// ```
pub fn windows(rip: u64, site_len: usize, following: [u8; 4]) -> Vec<Window> {
    let mut out = Vec::new();
    if !(2..=4).contains(&site_len) {
        return out;
    }
    for prefixes in 0..site_len {
        let free = site_len - 1 - prefixes;
        let mut rel = [0u8; 4];
        rel[free..].copy_from_slice(&following[..4 - free]);
        let rel = i64::from(i32::from_le_bytes(rel));
        let lo = (rip + prefixes as u64 + 5).wrapping_add(rel as u64);
        out.push(Window { prefixes, free, lo });
    }
    out
}

/// A trampoline's code at `at`: a jump to `stub` (`jmp rel32`, or `jmp qword ptr [rip]` and
/// the address when the stub is more than 2 GiB away).
///
/// # Examples
///
/// ```
/// use of_core::patch::pun::trampoline;
///
/// assert_eq!(trampoline(0x1000, 0x2000), [0xE9, 0xFB, 0x0F, 0x00, 0x00]);
/// assert_eq!(trampoline(0x1000, 0x1_0000_1000).len(), 14);
/// ```
pub fn trampoline(at: u64, stub: u64) -> Vec<u8> {
    let rel = stub.wrapping_sub(at + 5) as i64;
    if rel == i64::from(rel as i32) {
        let mut b = alloc::vec![0xE9];
        b.extend_from_slice(&(rel as i32).to_le_bytes());
        b
    } else {
        let mut b = alloc::vec![0xFF, 0x25, 0, 0, 0, 0];
        b.extend_from_slice(&stub.to_le_bytes());
        b
    }
}

/// Pages of trampolines placed at pun targets.
struct Page {
    base: u64,
    len: u64,
    /// Occupied byte ranges.
    used: Vec<(u64, u64)>,
    /// Sealed (written once without `/proc/self/mem`): nothing more goes there.
    sealed: bool,
}

/// Bytes a pun borrows from the instructions after its site.
#[derive(Clone, Copy)]
struct Pin {
    /// The site that borrows them, and what the patch wrote there.
    site: u64,
    written: [u8; 4],
    written_len: usize,
    /// The borrowed range.
    start: u64,
    end: u64,
}

/// Stub pages and pinned bytes (the patcher thread's).
#[derive(Default)]
pub struct Puns {
    pages: Vec<Page>,
    pins: Vec<Pin>,
}

/// Ranges no trampoline page may take: from the program break up 1 GiB (the heap grows there)
/// and the main thread's stack with the room it may grow into below it — its `RLIMIT_STACK`
/// (1 GiB if unlimited) and the kernel's 1 MiB guard gap, plus 16 MiB. (Without address-space
/// randomisation the shared objects sit just below that: a wider margin would leave their
/// short sites no window.)
fn kept_free() -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    // SAFETY: brk(0) changes nothing and returns the current break.
    let brk = unsafe { libc::syscall(libc::SYS_brk, 0) } as u64;
    if brk != 0 {
        out.push((brk, brk.saturating_add(1 << 30)));
    }
    if let Some(s) = super::maps::named(b"[stack]") {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the limit to `lim`.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut lim) } == 0;
        let grow = if ok && lim.rlim_cur != libc::RLIM_INFINITY {
            lim.rlim_cur.min(1 << 30)
        } else {
            1 << 30
        };
        out.push((s.end.saturating_sub(grow + (17 << 20)), s.end));
    }
    out
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

impl Puns {
    /// Whether writing `rip .. rip + len` would change bytes a pun borrows. Pins whose site no
    /// longer holds its patch (its code was replaced) are dropped first.
    pub fn pinned(&mut self, rip: u64, len: u64) -> bool {
        self.pins.retain(|p| {
            let mut now = [0u8; 4];
            crate::signal::context::read_memory(p.site, &mut now[..p.written_len]).is_ok()
                && now[..p.written_len] == p.written[..p.written_len]
        });
        self.pins
            .iter()
            .any(|p| overlaps((p.start, p.end), (rip, rip + len)))
    }

    /// Chooses a pun for the site of `site_len` bytes at `rip` and places its code there
    /// (`code(at)` encodes it for address `at`: a [`trampoline`] to the call-out stub): the
    /// first window (fewest prefixes first) whose jump stays inside the mapping ending at
    /// `mapping_end` and whose target has room for the code in a page of ours or pages that
    /// can be mapped there. Returns the bytes to write over the site; `None` when no window
    /// works.
    pub fn choose(
        &mut self,
        rip: u64,
        site_len: usize,
        mapping_end: u64,
        code: &dyn Fn(u64) -> Option<Vec<u8>>,
        writer: Writer,
    ) -> Option<Vec<u8>> {
        let mut following = [0u8; 4];
        crate::signal::context::read_memory(rip + site_len as u64, &mut following).ok()?;
        let free = kept_free();
        for w in windows(rip, site_len, following) {
            // (Borrowing bytes another pun borrows, or bytes of a patched site, is fine: they
            // are final. A site whose bytes are borrowed is never patched: see `pinned`.)
            let end = rip + w.jump_len() as u64;
            if end > mapping_end {
                continue;
            }
            let Some(target) = self.place(w, code, &free, writer) else {
                continue;
            };
            let bytes = w.bytes(rip, site_len, target);
            // Check the pun with the decoder: a jmp rel32 to the target, ending where the
            // borrowed bytes end.
            let mut code = bytes.clone();
            code.extend_from_slice(&following);
            let (j, _) = crate::decode::decode(&code, rip).ok()?;
            if j.code() != iced_x86::Code::Jmp_rel32_64
                || j.near_branch_target() != target
                || j.len() != w.jump_len()
            {
                continue;
            }
            let mut written = [0u8; 4];
            written[..site_len].copy_from_slice(&bytes);
            self.pins.push(Pin {
                site: rip,
                written,
                written_len: site_len,
                start: rip + site_len as u64,
                end,
            });
            return Some(bytes);
        }
        None
    }

    /// Forgets the pin of `site` (its patch was not written after all).
    pub fn unpin(&mut self, site: u64) {
        self.pins.retain(|p| p.site != site);
    }

    /// Finds room in window `w` for `code` (encoded by it for its address), writes it there,
    /// and returns its address.
    fn place(
        &mut self,
        w: Window,
        code: &dyn Fn(u64) -> Option<Vec<u8>>,
        free: &[(u64, u64)],
        writer: Writer,
    ) -> Option<u64> {
        let (lo, hi) = (w.lo, w.lo.checked_add(w.span())?);
        // In a page of ours first: at the window's start or after a piece already there.
        for p in self.pages.iter_mut().filter(|p| !p.sealed) {
            if !overlaps((p.base, p.base + p.len), (lo, hi)) {
                continue;
            }
            let starts = core::iter::once(lo.max(p.base)).chain(p.used.iter().map(|u| u.1));
            for t in starts.filter(|&t| t >= lo && t < hi) {
                let Some(c) = code(t) else { continue };
                let range = (t, t + c.len() as u64);
                if range.1 <= p.base + p.len
                    && !p.used.iter().any(|&u| overlaps(u, range))
                    && poke::write(Writer::ProcMem, t, &c)
                {
                    p.used.push(range);
                    return Some(t);
                }
            }
        }
        // Else new pages, as many as the code covers from the target on.
        let first = lo & !0xFFF;
        for base in (first..hi).step_by(4096).take(64) {
            let t = lo.max(base);
            let c = code(t)?;
            let len = (t + c.len() as u64 - base).div_ceil(4096) * 4096;
            if base < 1 << 20
                || (base + len) >> 47 != 0
                || free.iter().any(|&f| overlaps(f, (base, base + len)))
            {
                continue;
            }
            let proc_mem = writer == Writer::ProcMem;
            let prot = if proc_mem {
                libc::PROT_READ | libc::PROT_EXEC
            } else {
                libc::PROT_READ | libc::PROT_WRITE
            };
            if !super::pool::map_fixed(base, len, prot) {
                continue;
            }
            let written = if proc_mem {
                poke::write(Writer::ProcMem, t, &c)
            } else {
                // SAFETY: a fresh read+write mapping of ours; sealed read+execute after.
                unsafe {
                    core::ptr::copy_nonoverlapping(c.as_ptr(), t as *mut u8, c.len());
                    libc::mprotect(
                        base as *mut libc::c_void,
                        len as usize,
                        libc::PROT_READ | libc::PROT_EXEC,
                    ) == 0
                }
            };
            if !written || !super::pool::record(base, len) {
                // SAFETY: the mapping we just made, which nothing uses.
                unsafe { libc::munmap(base as *mut libc::c_void, len as usize) };
                continue;
            }
            self.pages.push(Page {
                base,
                len,
                used: alloc::vec![(t, t + c.len() as u64)],
                sealed: !proc_mem,
            });
            return Some(t);
        }
        None
    }
}
