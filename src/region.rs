//! Trapped regions (SPEC §7): memory whose every access is served by a device you write.
//!
//! A [`Region`] reserves `len` bytes with no access rights; every instruction that touches
//! them faults, and `of` emulates it exactly as it emulates page-0 accesses (scalar at any size
//! and alignment, read-modify-write, `lock`ed, strings with `rep`, SSE/AVX/AVX-512, with the
//! CPU's own results and flags), except that the bytes come from and go to your [`Device`]:
//!
//! ```
//! use of::region::{Device, Region};
//!
//! /// A register file of 8 bytes that counts the writes it receives.
//! #[derive(Default)]
//! struct Counter {
//!     value: [u8; 8],
//!     writes: usize,
//! }
//!
//! impl Device for Counter {
//!     fn read(&mut self, offset: u64, data: &mut [u8]) {
//!         let o = offset as usize;
//!         data.copy_from_slice(&self.value[o..o + data.len()]);
//!     }
//!     fn write(&mut self, offset: u64, data: &[u8]) {
//!         let o = offset as usize;
//!         self.value[o..o + data.len()].copy_from_slice(data);
//!         self.writes += 1;
//!     }
//! }
//!
//! let region = Region::new(8, Counter::default()).unwrap();
//! let p = region.as_ptr() as *mut u64;
//! // SAFETY: the region is 8 bytes and served by the device; volatile, as for any MMIO.
//! unsafe {
//!     p.write_volatile(40);
//!     // `add qword ptr [p], 2`: one read, one write.
//!     std::arch::asm!("add qword ptr [{p}], 2", p = in(reg) p);
//!     assert_eq!(p.read_volatile(), 42);
//! }
//! assert_eq!(region.with_device(|d: &mut Counter| d.writes), 2);
//! ```
//!
//! - **Accesses**: one device call per operand access, of the operand's size (1, 2, 4, 8, 16,
//!   32 or 64 bytes; a string instruction's element size) at its offset from the region's start.
//!   An access that straddles two of the device's registers is still one access, of its size at
//!   its offset: the device decides what that means. A read-modify-write instruction is one read
//!   then one write; a masked AVX-512 access touches only the selected elements (one access per
//!   run of selected elements). An access that is not entirely inside the region is not the
//!   region's (it faults as it would have).
//! - **Order**: every instruction that touches a region holds one lock (the *bus*) for all its
//!   accesses, so a `lock`ed (or any) read-modify-write is never interleaved with other
//!   accesses to any region, threads are served one instruction at a time, and each thread's
//!   accesses come in program order. Run-ahead continues through consecutive region accesses.
//! - **Device code** runs on the region's server thread while the faulting thread waits in the
//!   handler (futex): it may allocate, lock, print and panic. A panic aborts the process with
//!   the panic message and the faulting instruction (it cannot unwind through the signal
//!   frame). Device code must not access a region itself (it would wait for the bus). A device
//!   that is async-signal-safe can run in the handler instead ([`Region::new_in_handler`]),
//!   which saves the two thread switches.
//! - **Lifetime**: dropping the region waits until no instruction is using it, stops its
//!   server, and unmaps it.

use of_core::region::{self, Mode};
use std::any::Any;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

/// A simulated device behind a [`Region`].
pub trait Device: Send + 'static {
    /// Serves a read of `data.len()` bytes at `offset` (bytes from the region's start): fill
    /// `data`. `data.len()` is the access's size: 1, 2, 4, 8, 16, 32 or 64 (or a string
    /// element's size), and `offset + data.len()` is at most the region's length.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Serves a write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// What the C-ABI device functions get as their context.
pub(crate) struct Host {
    device: Mutex<Box<dyn Any + Send>>,
    call_read: fn(&mut (dyn Any + Send), u64, &mut [u8]),
    call_write: fn(&mut (dyn Any + Send), u64, &[u8]),
}

fn read_as<D: Device>(d: &mut (dyn Any + Send), offset: u64, data: &mut [u8]) {
    if let Some(d) = d.downcast_mut::<D>() {
        d.read(offset, data);
    }
}

fn write_as<D: Device>(d: &mut (dyn Any + Send), offset: u64, data: &[u8]) {
    if let Some(d) = d.downcast_mut::<D>() {
        d.write(offset, data);
    }
}

/// Aborts with the panic's message and the instruction being served.
fn die(payload: Box<dyn Any + Send>) -> ! {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| String::from("(a panic without a message)"));
    let bytes = region::serving();
    let text = match of_core::decode::decode(&bytes, 0) {
        Ok((i, _)) => {
            let mut line = of_core::diag::Line::default();
            line.push_byte(b'`');
            line.push_instruction(&i);
            line.push_str("` (");
            line.push_bytes(&bytes[..i.len()]);
            line.push_byte(b')');
            String::from_utf8_lossy(line.as_bytes()).into_owned()
        }
        Err(_) => String::from("(undecodable)"),
    };
    eprintln!("of: a device panicked while serving {text}: {msg}");
    std::process::abort();
}

unsafe extern "C" fn host_read(ctx: *mut core::ffi::c_void, offset: u64, size: u32, out: *mut u8) {
    // SAFETY: ctx is the Host of a live Region (unregistered before it is freed); out holds
    // `size` bytes (of-core's mailbox or the handler's buffer).
    let (host, data) = unsafe {
        (
            &*ctx.cast::<Host>(),
            std::slice::from_raw_parts_mut(out, size as usize),
        )
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut d = host.device.lock().unwrap_or_else(|e| e.into_inner());
        (host.call_read)(&mut **d, offset, data);
    }));
    if let Err(p) = r {
        die(p);
    }
}

unsafe extern "C" fn host_write(
    ctx: *mut core::ffi::c_void,
    offset: u64,
    size: u32,
    data: *const u8,
) {
    // SAFETY: as in `host_read`.
    let (host, data) = unsafe {
        (
            &*ctx.cast::<Host>(),
            std::slice::from_raw_parts(data, size as usize),
        )
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut d = host.device.lock().unwrap_or_else(|e| e.into_inner());
        (host.call_write)(&mut **d, offset, data);
    }));
    if let Err(p) = r {
        die(p);
    }
}

/// A trapped region: `len` bytes with no access rights, served by a device.
///
/// Neither `Send` nor `Sync` matter for accesses (any thread may access the memory); the
/// handle itself is `Send` and `Sync`.
pub struct Region {
    base: *mut u8,
    len: usize,
    index: usize,
    host: Option<Box<Host>>,
    server: Option<std::thread::JoinHandle<()>>,
}

// SAFETY: the handle holds a mapping and a registration; all shared state is behind atomics in
// of-core or the device's Mutex.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` gives only the address, the length and `with_device` (locked).
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `len` bytes (rounded up to whole pages for the mapping; accesses past `len`
    /// are not the region's) served by `device` on a server thread of the region's own.
    ///
    /// # Errors
    /// When `of` cannot be installed, the kernel refuses the mapping, or 64 regions exist
    /// already (`of_core::region::MAX_REGIONS`).
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn new<D: Device>(len: usize, device: D) -> io::Result<Region> {
        Region::builder(len).build(device)
    }

    /// Like [`Region::new`], but the device runs in the fault handler itself: no thread
    /// switches, so an access costs about one fault.
    ///
    /// # Errors
    /// As [`Region::new`].
    ///
    /// # Safety
    /// The device's `read` and `write` must be async-signal-safe: no allocation, no locks
    /// (the device's own `Mutex` is taken uncontended: only the bus holder calls it), no `std`
    /// I/O, no panics.
    ///
    /// # Examples
    ///
    /// ```
    /// use of::region::{Device, Region};
    ///
    /// struct Zero;
    /// impl Device for Zero {
    ///     fn read(&mut self, _: u64, data: &mut [u8]) {
    ///         data.fill(0);
    ///     }
    ///     fn write(&mut self, _: u64, _: &[u8]) {}
    /// }
    /// // SAFETY: `Zero` only fills a buffer.
    /// let r = unsafe { Region::new_in_handler(16, Zero) }.unwrap();
    /// // SAFETY: a 4-byte read inside the region.
    /// assert_eq!(unsafe { (r.as_ptr() as *const u32).read_volatile() }, 0);
    /// ```
    pub unsafe fn new_in_handler<D: Device>(len: usize, device: D) -> io::Result<Region> {
        // SAFETY: the caller's promise.
        unsafe { Region::builder(len).in_handler() }.build(device)
    }

    /// A region of `len` bytes with options: a fixed address ([`Builder::at`]) or the device in
    /// the handler ([`Builder::in_handler`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use of::region::{Device, Region};
    /// # struct Nothing;
    /// # impl Device for Nothing {
    /// #     fn read(&mut self, _: u64, d: &mut [u8]) { d.fill(0) }
    /// #     fn write(&mut self, _: u64, _: &[u8]) {}
    /// # }
    /// // A device at a fixed address, as on a microcontroller: code may then name its registers
    /// // by absolute address (`mov al, byte ptr [0x4000_0005]`).
    /// let r = Region::builder(8).at(0x4000_0000).build(Nothing).unwrap();
    /// assert_eq!(r.as_ptr() as usize, 0x4000_0000);
    /// ```
    pub fn builder(len: usize) -> Builder {
        Builder {
            len,
            at: None,
            mode: Mode::Server,
        }
    }

    fn create<D: Device>(b: Builder, device: D) -> io::Result<Region> {
        let host = Box::new(Host {
            device: Mutex::new(Box::new(device)),
            call_read: read_as::<D>,
            call_write: write_as::<D>,
        });
        let dev = region::Device {
            read: host_read,
            write: host_write,
            ctx: (&*host as *const Host).cast_mut().cast(),
        };
        // SAFETY: the device functions take the Host, which lives as long as the Region.
        unsafe { Region::create_raw(b, dev, Some(host)) }
    }

    /// A region served by a C-ABI device as is (no `Mutex`, no panic catching: `of.h`'s
    /// `of_region_create`).
    ///
    /// # Safety
    /// `dev`'s functions are callable with its context from any thread (and async-signal-safe
    /// for an in-handler region) until the Region is dropped.
    pub(crate) unsafe fn create_raw(
        b: Builder,
        dev: region::Device,
        host: Option<Box<Host>>,
    ) -> io::Result<Region> {
        let Builder { len, at, mode } = b;
        crate::map_registers().map_err(|e| io::Error::other(e.to_string()))?;
        let len = len.max(1);
        let pages = len.div_ceil(4096) * 4096;
        if at.is_some_and(|a| a % 4096 != 0 || a < 4096) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let (hint, fixed) = match at {
            Some(a) => (a as *mut libc::c_void, libc::MAP_FIXED_NOREPLACE),
            None => (std::ptr::null_mut(), 0),
        };
        // SAFETY: an anonymous private mapping with no access rights, where the kernel chooses
        // or at `at` only if nothing is mapped there (MAP_FIXED_NOREPLACE never replaces).
        let base = unsafe {
            libc::mmap(
                hint,
                pages,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if at.is_some_and(|a| a != base as usize) {
            // A kernel older than 4.17 treats MAP_FIXED_NOREPLACE as a hint.
            // SAFETY: our mapping.
            unsafe { libc::munmap(base, pages) };
            return Err(io::Error::from(io::ErrorKind::AddrInUse));
        }
        // SAFETY: the caller's contract; `Drop` unregisters before the Host goes.
        let Some(index) = (unsafe { region::register(base as u64, len as u64, dev, mode) }) else {
            // SAFETY: our mapping.
            unsafe { libc::munmap(base, pages) };
            return Err(io::Error::other("too many trapped regions"));
        };
        let server = (mode == Mode::Server).then(|| {
            std::thread::Builder::new()
                .name(String::from("of-region"))
                .spawn(move || region::serve(index))
                .expect("spawn the region's server thread")
        });
        Ok(Region {
            base: base.cast(),
            len,
            index,
            host,
            server,
        })
    }

    /// The region's first byte.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base
    }

    /// The region's length in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// # use of::region::{Device, Region};
    /// # struct Nothing;
    /// # impl Device for Nothing {
    /// #     fn read(&mut self, _: u64, d: &mut [u8]) { d.fill(0) }
    /// #     fn write(&mut self, _: u64, _: &[u8]) {}
    /// # }
    /// let r = Region::new(100, Nothing).unwrap();
    /// assert_eq!(r.len(), 100);
    /// assert!(!r.is_empty());
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes (never: at least 1).
    ///
    /// # Examples
    ///
    /// See [`Region::len`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Runs `f` on the device (locked against accesses meanwhile). Returns `None` if the
    /// device is not a `D`.
    ///
    /// # Panics
    /// If `D` is not the device's type.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn with_device<D: Device, R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        let host = self.host.as_ref().expect("a region with a Rust device");
        let mut d = host.device.lock().unwrap_or_else(|e| e.into_inner());
        f(d.downcast_mut::<D>().expect("the device's type"))
    }
}

/// Options of a [`Region`] ([`Region::builder`]).
#[derive(Clone, Copy, Debug)]
pub struct Builder {
    len: usize,
    at: Option<usize>,
    mode: Mode,
}

impl Builder {
    /// Places the region at `addr` (page-aligned, not page 0), which must be free: nothing is
    /// ever unmapped to make room.
    ///
    /// # Examples
    ///
    /// See [`Region::builder`].
    pub fn at(mut self, addr: usize) -> Builder {
        self.at = Some(addr);
        self
    }

    /// Runs the device in the fault handler (see [`Region::new_in_handler`]).
    ///
    /// # Safety
    /// As [`Region::new_in_handler`]: the device must be async-signal-safe.
    ///
    /// # Examples
    ///
    /// See [`Region::new_in_handler`].
    pub unsafe fn in_handler(mut self) -> Builder {
        self.mode = Mode::InHandler;
        self
    }

    /// Creates the region with `device`.
    ///
    /// # Errors
    /// When `of` cannot be installed, the kernel refuses the mapping, the address is not
    /// page-aligned or is page 0 (`InvalidInput`), something is mapped there already
    /// (`AlreadyExists` or `AddrInUse`), or 64 regions exist already
    /// (`of_core::region::MAX_REGIONS`).
    ///
    /// # Examples
    ///
    /// See [`Region::builder`].
    pub fn build<D: Device>(self, device: D) -> io::Result<Region> {
        Region::create(self, device)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        region::unregister(self.index);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        self.host = None;
        let pages = self.len.div_ceil(4096) * 4096;
        // SAFETY: our mapping; no instruction uses it any more (unregister took the bus).
        unsafe { libc::munmap(self.base.cast(), pages) };
    }
}
