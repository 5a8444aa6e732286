//! Trapped regions (SPEC §7): ranges of addresses with no access rights whose every access is
//! decoded and served by a device instead of memory — user-space MMIO on the page-0 engine.
//!
//! A region is registered with a device ([`Device`]: C-ABI read and write functions and a
//! context pointer). When an instruction faults on a region, the handler emulates it as it does
//! a map access; its reads and writes of region bytes become device calls, one per operand
//! access, of the operand's size at its offset (an access straddling two device registers is
//! one access). Either the device runs in the handler ([`Mode::InHandler`]: it must be
//! async-signal-safe), or the faulting thread waits (futex) while the region's server thread
//! runs it ([`Mode::Server`], [`serve`]): then device code may allocate, lock and print.
//!
//! Order: every instruction that touches a region holds the *bus* — one lock for all regions —
//! from its first device access to the end of the run-ahead after it, so a read-modify-write
//! (`lock`ed or not) is one read then one write with no other access in between, and accesses
//! from several threads are served one instruction at a time, each thread's in program order.
//! Device code must not itself access a region (its thread would wait for the bus its caller
//! holds). The bus is biased to the thread that uses it ([`bus`]).

pub mod bus;

pub(crate) use bus::Bus;
pub use bus::{REVOCATION_LIMIT, bias, serving, set_revocation_limit};

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Most regions registered at once.
pub const MAX_REGIONS: usize = 64;
/// Largest device access in bytes (an EVEX.512 operand).
pub const MAX_ACCESS: usize = 64;

/// A device: `read(ctx, offset, size, out)` fills `out[..size]`; `write(ctx, offset, size,
/// data)` takes `data[..size]`. `size` is 1, 2, 4, 8, 16, 32 or 64 (or an element size of a
/// string instruction); `offset` is the access's first byte, from the region's start.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Device {
    /// Serves a read.
    pub read:
        unsafe extern "C" fn(ctx: *mut core::ffi::c_void, offset: u64, size: u32, out: *mut u8),
    /// Serves a write.
    pub write:
        unsafe extern "C" fn(ctx: *mut core::ffi::c_void, offset: u64, size: u32, data: *const u8),
    /// Passed to both.
    pub ctx: *mut core::ffi::c_void,
}

/// Where device code runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In the fault handler itself: fast, but the device must be async-signal-safe (no
    /// allocation, no locks, no `std` I/O, no panics).
    InHandler,
    /// On the region's server thread (running [`serve`]), while the faulting thread waits.
    Server,
}

/// One request from a handler to a server thread.
struct Mailbox {
    /// Bumped by the handler when a request is ready (futex word of the server).
    request: AtomicU32,
    /// Bumped by the server when the answer is ready (futex word of the handler).
    answer: AtomicU32,
    write: AtomicBool,
    offset: AtomicU64,
    size: AtomicU32,
    data: UnsafeCell<[u8; MAX_ACCESS]>,
    stop: AtomicBool,
    /// The server is (about to be) asleep on `request`: a handler must wake it.
    server_sleeping: AtomicBool,
    /// The handler is (about to be) asleep on `answer`: the server must wake it.
    client_sleeping: AtomicBool,
}

/// Pauses a handler spins for its answer before it sleeps (about 30–60 µs), and a server for
/// the next request after serving one (twice that): a thread woken from sleep takes tens of
/// microseconds to run on an idle machine, a spinning one answers in well under one. Both
/// sleep at once on a machine with one CPU.
const CLIENT_SPINS: u32 = 1 << 11;
const SERVER_SPINS: u32 = 1 << 12;

/// Whether spinning can help: more than one CPU online (read once, at registration).
static SPIN: AtomicBool = AtomicBool::new(false);

struct Slot {
    /// 0: free; else the region's first address.
    start: AtomicU64,
    len: AtomicU64,
    device: UnsafeCell<Option<Device>>,
    server: AtomicBool,
    mailbox: Mailbox,
}

// SAFETY: `device` is written by `register` before `start` is published (Release) and read only
// after `start` is seen (Acquire); `data`/`instr` of the mailbox are written by the handler that
// holds the bus before it bumps `request`, and by the server before it bumps `answer`: one
// writer at a time, ordered by those counters.
unsafe impl Sync for Slot {}

static SLOTS: [Slot; MAX_REGIONS] = [const {
    Slot {
        start: AtomicU64::new(0),
        len: AtomicU64::new(0),
        device: UnsafeCell::new(None),
        server: AtomicBool::new(false),
        mailbox: Mailbox {
            request: AtomicU32::new(0),
            answer: AtomicU32::new(0),
            write: AtomicBool::new(false),
            offset: AtomicU64::new(0),
            size: AtomicU32::new(0),
            data: UnsafeCell::new([0; MAX_ACCESS]),
            stop: AtomicBool::new(false),
            server_sleeping: AtomicBool::new(false),
            client_sleeping: AtomicBool::new(false),
        },
    }
}; MAX_REGIONS];

/// Regions registered (a quick test for the handler).
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Registers the region `start..start + len` (already mapped with no access rights by the
/// caller) with `device`, served in `mode`. Returns the region's index (for [`serve`] and
/// [`unregister`]), or `None` when [`MAX_REGIONS`] are registered or the range overlaps one.
///
/// # Safety
/// `device`'s functions must be callable with its `ctx` from the handler (`Mode::InHandler`:
/// async-signal-safe) or from the server thread, until [`unregister`] returns.
///
/// # Examples
///
/// See `of::region::Region`, which maps the memory, wraps a Rust device and runs the server.
pub unsafe fn register(start: u64, len: u64, device: Device, mode: Mode) -> Option<usize> {
    if len == 0 || start == 0 || start.checked_add(len).is_none() {
        return None;
    }
    bus::prepare();
    // SAFETY: sysconf has no preconditions.
    SPIN.store(
        unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } > 1,
        Ordering::Relaxed,
    );
    if (0..MAX_REGIONS).any(|i| {
        let s = SLOTS[i].start.load(Ordering::Acquire);
        let l = SLOTS[i].len.load(Ordering::Acquire);
        s != 0 && start < s + l && s < start + len
    }) {
        return None;
    }
    for (i, slot) in SLOTS.iter().enumerate() {
        // Claim a free slot with a placeholder start (1), then fill it in.
        if slot
            .start
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: the slot is ours (claimed), and not visible to handlers (start == 1 is no
            // region: lookups need start <= addr < start + len with len set below).
            unsafe { *slot.device.get() = Some(device) };
            slot.server.store(mode == Mode::Server, Ordering::Relaxed);
            slot.mailbox.stop.store(false, Ordering::Relaxed);
            slot.mailbox.request.store(0, Ordering::Relaxed);
            slot.mailbox.answer.store(0, Ordering::Relaxed);
            slot.mailbox.server_sleeping.store(false, Ordering::Relaxed);
            slot.mailbox.client_sleeping.store(false, Ordering::Relaxed);
            slot.len.store(len, Ordering::Release);
            slot.start.store(start, Ordering::Release);
            COUNT.fetch_add(1, Ordering::AcqRel);
            return Some(i);
        }
    }
    None
}

/// Unregisters region `index` (its server, if any, returns from [`serve`]). Waits until no
/// handler is using the bus, so the device is no longer called when it returns.
///
/// # Examples
///
/// See `of::region::Region`'s `Drop`.
pub fn unregister(index: usize) {
    let Some(slot) = SLOTS.get(index) else {
        return;
    };
    // Take the bus so no instruction is half-way through this region.
    let held = bus::lock();
    slot.start.store(0, Ordering::Release);
    slot.len.store(0, Ordering::Release);
    COUNT.fetch_sub(1, Ordering::AcqRel);
    bus::unlock(held);
    slot.mailbox.stop.store(true, Ordering::Release);
    slot.mailbox.request.fetch_add(1, Ordering::AcqRel);
    crate::futex::wake_all(&slot.mailbox.request);
}

/// The region holding all of `addr..addr + len`, as (index, offset of `addr`).
///
/// # Examples
///
/// ```
/// assert_eq!(of_core::region::find(0x1234_5000, 8), None); // no region there
/// ```
pub fn find(addr: u64, len: u64) -> Option<(usize, u64)> {
    if COUNT.load(Ordering::Acquire) == 0 {
        return None;
    }
    SLOTS.iter().enumerate().find_map(|(i, s)| {
        let start = s.start.load(Ordering::Acquire);
        let l = s.len.load(Ordering::Acquire);
        (start > 1 && addr >= start && len <= l && addr - start <= l - len)
            .then(|| (i, addr - start))
    })
}

/// Whether any region is registered.
///
/// # Examples
///
/// ```
/// let _ = of_core::region::any();
/// ```
pub fn any() -> bool {
    COUNT.load(Ordering::Acquire) != 0
}

/// Whether any access of `instr` (of family `kind`) with the registers of `m` lies in a region
/// (false at once while no region exists).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::table::classify;
///
/// let m = of_core::RegisterFile::default();
/// let (i, _) = decode(&[0x8B, 0x07], 0).unwrap(); // mov eax, dword ptr [rdi]
/// assert!(!of_core::region::touched_by(&m, &i, classify(&i))); // rdi = 0: page 0
/// ```
pub fn touched_by<M: crate::machine::Machine + ?Sized>(
    m: &M,
    instr: &iced_x86::Instruction,
    kind: crate::emulate::table::Kind,
) -> bool {
    any()
        && crate::emulate::operands::accesses(m, instr, kind)
            .as_slice()
            .iter()
            .any(|a| find(a.addr, 1).is_some())
}

/// Whether `addr` lies in a region.
///
/// # Examples
///
/// ```
/// assert!(!of_core::region::contains(0x10));
/// ```
pub fn contains(addr: u64) -> bool {
    find(addr, 1).is_some()
}

/// Whether region `index`'s device runs in the handler (or on the thread that accesses it).
fn in_handler(index: usize) -> bool {
    SLOTS
        .get(index)
        .is_some_and(|s| !s.server.load(Ordering::Acquire))
}

/// Reads `buf.len()` bytes at `offset` of region `index` from its device (the caller holds the
/// bus). Async-signal-safe on the handler's side.
pub(crate) fn read(index: usize, offset: u64, buf: &mut [u8]) {
    if in_handler(index) {
        read_direct(index, offset, buf);
    } else if let Some(answer) = through_server(index, offset, buf.len(), None) {
        buf.copy_from_slice(&answer[..buf.len()]);
    }
}

/// Writes `data` at `offset` of region `index` through its device (the caller holds the bus).
pub(crate) fn write(index: usize, offset: u64, data: &[u8]) {
    if in_handler(index) {
        write_direct(index, offset, data);
    } else {
        through_server(index, offset, data.len(), Some(data));
    }
}

/// Reads through region `index`'s device on the calling thread, whatever its mode (an
/// in-handler region, a patched site's call-out in ordinary code, a server; the caller holds
/// the bus or is the server).
pub(crate) fn read_direct(index: usize, offset: u64, buf: &mut [u8]) {
    direct(index, offset, buf.as_mut_ptr(), buf.len(), false);
}

/// Writes through region `index`'s device on the calling thread (see [`read_direct`]).
pub(crate) fn write_direct(index: usize, offset: u64, data: &[u8]) {
    direct(index, offset, data.as_ptr().cast_mut(), data.len(), true);
}

fn direct(index: usize, offset: u64, buf: *mut u8, size: usize, write: bool) {
    let Some(slot) = SLOTS.get(index) else {
        return;
    };
    // SAFETY: published before `start` (see `Slot`).
    let Some(dev) = (unsafe { *slot.device.get() }) else {
        return;
    };
    // SAFETY: the device's contract (callable from any thread while registered); `buf` holds
    // `size` bytes (a write's are only read).
    unsafe {
        if write {
            (dev.write)(dev.ctx, offset, size as u32, buf);
        } else {
            (dev.read)(dev.ctx, offset, size as u32, buf);
        }
    }
}

/// Hands one access of `size` bytes (a write of `data`, or a read) to region `index`'s server
/// thread and waits for its answer (the bytes read). None if there is no such region.
fn through_server(
    index: usize,
    offset: u64,
    size: usize,
    data: Option<&[u8]>,
) -> Option<[u8; MAX_ACCESS]> {
    let mb = &SLOTS.get(index)?.mailbox;
    let size = size.min(MAX_ACCESS);
    let mut buf = [0u8; MAX_ACCESS];
    if let Some(data) = data {
        buf[..size].copy_from_slice(&data[..size]);
    }
    // SAFETY: the bus holder is the only writer of the request (see `Slot`).
    unsafe { *mb.data.get() = buf };
    mb.write.store(data.is_some(), Ordering::Relaxed);
    mb.offset.store(offset, Ordering::Relaxed);
    mb.size.store(size as u32, Ordering::Relaxed);
    let seen = mb.answer.load(Ordering::Acquire);
    // SeqCst pairs with the server's `server_sleeping` store and `request` re-check (each side
    // stores, then loads what the other stored: neither sleeps through the other's bump).
    mb.request.fetch_add(1, Ordering::SeqCst);
    if mb.server_sleeping.load(Ordering::SeqCst) {
        crate::futex::wake_all(&mb.request);
    }
    let mut spins = if SPIN.load(Ordering::Relaxed) {
        CLIENT_SPINS
    } else {
        0
    };
    while mb.answer.load(Ordering::Acquire) == seen {
        if spins > 0 {
            spins -= 1;
            core::hint::spin_loop();
            continue;
        }
        mb.client_sleeping.store(true, Ordering::SeqCst);
        if mb.answer.load(Ordering::SeqCst) == seen {
            crate::futex::wait(&mb.answer, seen);
        }
        mb.client_sleeping.store(false, Ordering::Relaxed);
    }
    // SAFETY: the server wrote the answer before bumping `answer`.
    Some(unsafe { *mb.data.get() })
}

/// Serves region `index`'s requests on the calling thread until the region is unregistered:
/// the body of its server thread ([`Mode::Server`]). Device code runs here, so it may allocate,
/// lock and print; a device that may panic must catch it in its functions (of-core never
/// unwinds): `of::region` aborts with the message and the instruction ([`serving`]).
///
/// # Examples
///
/// See `of::region::Region`, which runs this on a thread of its own.
pub fn serve(index: usize) {
    let Some(slot) = SLOTS.get(index) else {
        return;
    };
    let mb = &slot.mailbox;
    // Requests are numbered from 0 at registration; `seen` is the last one served.
    let mut seen = 0;
    let mut spins = 0;
    loop {
        if mb.stop.load(Ordering::Acquire) {
            return;
        }
        let now = mb.request.load(Ordering::Acquire);
        if now == seen {
            if spins > 0 {
                spins -= 1;
                core::hint::spin_loop();
                continue;
            }
            // SeqCst: see `through_server`.
            mb.server_sleeping.store(true, Ordering::SeqCst);
            if mb.request.load(Ordering::SeqCst) == seen {
                crate::futex::wait(&mb.request, now);
            }
            mb.server_sleeping.store(false, Ordering::Relaxed);
            continue;
        }
        spins = if SPIN.load(Ordering::Relaxed) {
            SERVER_SPINS
        } else {
            0
        };
        seen = now;
        if mb.stop.load(Ordering::Acquire) {
            return;
        }
        let offset = mb.offset.load(Ordering::Relaxed);
        let size = mb.size.load(Ordering::Relaxed) as usize;
        // SAFETY: the handler wrote the request before bumping `request` and waits until we
        // bump `answer`: the buffer is ours meanwhile.
        let data = unsafe { &mut *mb.data.get() };
        direct(
            index,
            offset,
            data.as_mut_ptr(),
            size,
            mb.write.load(Ordering::Relaxed),
        );
        mb.answer.fetch_add(1, Ordering::SeqCst);
        if mb.client_sleeping.load(Ordering::SeqCst) {
            crate::futex::wake_all(&mb.answer);
        }
    }
}
