//! # of — memory-mapped registers for amd64
//!
//! After [`map_registers`], page 0 of the process (addresses `0..4096`, which Linux never maps)
//! behaves as a byte-addressable image of the *calling thread's* registers. An instruction such
//! as `add qword ptr [0x8], 1` faults; `of`'s SIGSEGV handler decodes it with iced-x86, performs
//! the addition on rcx in the signal's `ucontext`, and resumes after it.
//!
//! | offset | bytes | register |
//! |---|---|---|
//! | 0x00..0x80 | 8 each | rax rcx rdx rbx rsp rbp rsi rdi r8 … r15 |
//! | 0x80 | 8 | rip (reads: next instruction; writes: jump) |
//! | 0x88 | 8 | rflags (writes change CF PF AF ZF SF DF OF only) |
//! | 0x90, 0x98 | 8 | fs base, gs base (read only) |
//! | 0x100..0x200 | 16 each | xmm0 … xmm15 |
//! | 0x200 | 4 | mxcsr |
//!
//! From Rust, use the [`Registers`] token's typed fields (each access is exactly one page-0
//! instruction emitted with `asm!`), or `#[of::mapped]` for plain field syntax. From C and
//! assembly, link `libof.a` and call `map_registers()` (see `include/of.h`).
//!
//! With `#[of::mapped]`, plain field syntax; consecutive register statements become one `asm!`
//! block, one page-0 instruction each:
//!
//! ```
//! #[of::mapped]
//! fn demo(r: &mut of::Registers) -> u64 {
//!     r.r8 = 40;
//!     r.r8 += 2;
//!     let v = r.r8;
//!     v
//! }
//! let mut r = of::map_registers().unwrap();
//! assert_eq!(demo(&mut r), 42);
//! ```
//!
//! ```
//! let mut r = of::map_registers().unwrap();
//! r.rax.store(41);
//! r.rax += 1;
//! assert_eq!(r.rax.load(), 42);
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// Target guard. On any target but x86_64 Linux the build stops in `of-core` first, with its one
// `compile_error!` (cargo then never starts this crate, so nothing below is compiled there); the
// same error here says it at the facade too.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!(
    "`of` supports only x86_64 Linux (target_arch = \"x86_64\", target_os = \"linux\", \
     e.g. --target x86_64-unknown-linux-gnu): it emulates x86-64 instructions that fault on page 0 \
     from a Linux SIGSEGV handler"
);

pub mod reg;
pub mod region;
pub mod registers;
mod token;
pub mod vector;

/// The emulator core (decode, ownership, emulation), usable without faults.
pub use of_core as engine;
pub use of_core::GeneralRegisters;
/// `#[of::mapped]`: plain field syntax on a [`Registers`] binding inside a function, each
/// register statement one page-0 instruction, consecutive ones fused into one `asm!` block.
///
/// ```
/// #[of::mapped]
/// fn swap_halves(r: &mut of::Registers, x: u64) -> (u64, u32) {
///     r.r8 = x; //        mov qword ptr [0x40], r11
///     r.r8d ^= 0xFFFF; // xor dword ptr [0x40], r10d   (4-byte view: high half kept)
///     r.r8 <<= 4; //      shl qword ptr [0x40], 4      (literal count: an immediate)
///     let v = r.r8; //    mov r9, qword ptr [0x40]
///     let lo = r.r8d; //  mov esi, dword ptr [0x40]    (all five in ONE asm! block)
///     (v, lo)
/// }
/// let mut r = of::map_registers().unwrap();
/// let (v, lo) = swap_halves(&mut r, 0x1234_5678_9ABC_DEF0);
/// assert_eq!(v, (0x1234_5678_9ABC_DEF0 ^ 0xFFFF) << 4);
/// assert_eq!(lo, v as u32);
/// ```
///
/// Writes that move control or touch registers inline asm cannot declare clobbered must be
/// `unsafe`; a block that writes rip does not return:
///
/// ```no_run
/// #[of::mapped]
/// fn jump(r: &mut of::Registers, f: extern "C" fn(u64) -> !) -> ! {
///     // SAFETY: `f` never returns and runs on this stack as if called (rsp moves down by the
///     // return-address slot).
///     unsafe {
///         r.rdi = 7;
///         r.rsp -= 8;
///         r.rip = f as usize as u64;
///     }
/// }
/// ```
///
/// The full rules (which bindings, when a block is split, what is an error) are in
/// `docs/rust-api.md` and the `of-macros` crate documentation; `tests/ui` holds one case per
/// compile error.
pub use of_macros::mapped;

/// The fault path's counters since installation: faults taken, instructions emulated (by a
/// fault and by run-ahead), faults passed on to the handler installed before, exceptions
/// raised, refusals by reason, the decoded-instruction cache's hits and misses, the busiest
/// fault sites (rip, count, instruction bytes) and site patching's counters. `OF_STATS=1` in the
/// environment prints them at exit; from C, `of_stats()`.
///
/// # Examples
///
/// ```
/// let r = of::map_registers().unwrap();
/// let before = of::stats();
/// r.r12.store(1); // one map access, one fault
/// let after = of::stats();
/// assert!(after.faults_emulated > before.faults_emulated);
/// let busiest = after.sites[0];
/// assert!(busiest.count >= 1 && busiest.rip != 0);
/// ```
pub fn stats() -> Stats {
    of_core::signal::stats()
}

pub use of_core::signal::{Refusal, Site, Stats};
pub use reg::{Plain, RegU8, RegU16, RegU32, RegU64, Special};
pub use token::Registers;
pub use vector::RegU128;

use std::cell::RefCell;

/// Why [`map_registers`] could not install the handler. `Display` says what failed and the
/// OS error (e.g. `of: cannot map registers: sigaction(11) failed with errno 22`).
///
/// ```
/// fn start() -> Result<u64, of::Error> {
///     let r = of::map_registers()?; // `?` works: `of::Error` is a std::error::Error
///     Ok(r.rsp.load())
/// }
/// assert!(start().unwrap() > 0x1000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error(of_core::InstallError);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "of: cannot map registers: {}", self.0)
    }
}

impl std::error::Error for Error {}

thread_local! {
    /// The alternate signal stack `map_registers` gave this thread, released at thread exit.
    static ALTSTACK: RefCell<Option<AltStackGuard>> = const { RefCell::new(None) };
}

struct AltStackGuard(Option<of_core::signal::altstack::AltStack>);

impl Drop for AltStackGuard {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.release();
        }
    }
}

/// Installs `of`'s SIGSEGV/SIGBUS handler (once per process; later calls only return a new
/// token) and returns the calling thread's [`Registers`].
///
/// Thread-safe: any thread may call it, any number of times, concurrently. The first call in a
/// thread also gives that thread an alternate signal stack of at least 64 KiB (with a guard page)
/// if it has none or a smaller one, released when the thread exits; threads that never call it
/// still have their page-0 accesses emulated, on their own alternate stack if they have one.
///
/// Faults that are not register accesses go to the handler that was installed before (SPEC §4).
///
/// # Errors
/// [`Error`] if sigaction(2) fails or the kernel refuses the small writable+executable mapping
/// used to run register forms of instructions.
///
/// # Example
/// ```
/// let mut r = of::map_registers()?;
/// let sp = r.rsp.load(); // mov reg, qword ptr [0x20]
/// let local = 0u8;
/// assert!(sp.abs_diff(&local as *const u8 as u64) < 4096); // a local of this frame
/// r.r12.store(40); // mov qword ptr [0x60], reg
/// r.r12 += 2; // add qword ptr [0x60], r11
/// assert_eq!(r.r12.load(), 42);
/// # Ok::<(), of::Error>(())
/// ```
pub fn map_registers() -> Result<Registers, Error> {
    of_core::install().map_err(Error)?;
    ALTSTACK.with(|a| {
        let mut a = a.borrow_mut();
        if a.is_none() {
            *a = Some(AltStackGuard(of_core::signal::altstack::ensure()));
        }
    });
    Ok(Registers::new())
}

/// Calls [`map_registers`] before `main` runs, from an `.init_array` entry of the binary that
/// invokes it, so that page 0 is the register map from the first line of `main` (and in every
/// constructor that runs after this one).
///
/// Use it once, at the top level of a **binary** crate:
///
/// ```
/// of::auto_map!();
///
/// fn main() {
///     // No `map_registers()` call: the handler was installed before `main`.
///     // SAFETY: not needed for a load; a `Special` view's stores are the unsafe part.
///     let sp = of::RegU64::<0x20, of::Special>::new_special().load();
///     assert!(sp > 0x1000);
/// }
/// ```
///
/// The cargo feature `auto-map` does the same from inside `of` (for a binary that would rather
/// say it in `Cargo.toml`). A **library** should do neither: it would map page 0 in every
/// program that links it, whether or not that program wants it; let the program call
/// [`map_registers`] (the advice of `of` 0.1's README, whose `.init_array` snippet this
/// replaces: that one did not compile, and a static in an unused module of a library can be
/// dropped by the linker).
///
/// The entry runs with the arguments glibc passes to `.init_array` functions, which it
/// ignores; if installation fails it prints why and aborts (there is no `main` yet to return an
/// error to). Registers of threads started later are mapped too (the handler is per process);
/// [`map_registers`] in such a thread only adds a large enough alternate signal stack, which
/// the handler does not need (it runs on its own stacks).
#[macro_export]
macro_rules! auto_map {
    () => {
        const _: () = {
            extern "C" fn of_auto_map_init() {
                $crate::__auto_map();
            }
            // `#[used]` keeps the entry even though nothing refers to it; the section makes the
            // dynamic loader (or libc's static start-up code) call it before `main`.
            #[used]
            #[unsafe(link_section = ".init_array")]
            static OF_AUTO_MAP: extern "C" fn() = of_auto_map_init;
        };
    };
}

#[cfg(feature = "auto-map")]
auto_map!();

/// The body of [`auto_map!`]'s `.init_array` entry (not part of the API).
#[doc(hidden)]
pub fn __auto_map() {
    if let Err(e) = map_registers() {
        eprintln!("{e}");
        std::process::abort();
    }
}

/// A snapshot of the calling thread's register file, read through the map (see [`snapshot`]).
///
/// ```
/// let s = of::snapshot()?;
/// let t = of::snapshot()?;
/// // fs base (the thread pointer) does not change within a thread; rip is where each was taken.
/// assert_eq!(s.fs_base, t.fs_base);
/// assert_eq!(s.mxcsr & 0x1f80, 0x1f80); // all SSE exceptions masked, as Linux starts threads
/// # Ok::<(), of::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// rax … r15, in encoding order, as they were at the snapshot's load instructions.
    pub gpr: GeneralRegisters,
    /// The rip slot: the address after the instruction that read it.
    pub rip: u64,
    /// The rflags slot.
    pub rflags: u64,
    /// fs base.
    pub fs_base: u64,
    /// gs base.
    pub gs_base: u64,
    /// xmm0 … xmm15 (the low 128 bits of ymm0 … ymm15), read through the map's xmm slots.
    pub xmm: [u128; 16],
    /// MXCSR.
    pub mxcsr: u32,
}

/// Reads the whole map (0x00..0xA0, the xmm slots and mxcsr) of the calling thread into a
/// [`Snapshot`], in one `asm!` block that changes no register it reads: each 8-byte slot is
/// copied memory-to-memory by `push qword ptr [slot]` (which changes only rsp; the rsp slot is
/// pushed first, so it reads the rsp at block entry), then popped into the result; mxcsr last,
/// with a 4-byte load. So every general register, rflags and xmm register is the value it had
/// when the block began (the result pointer's register holds that pointer), and the rip slot
/// is the address after the `push qword ptr [0x80]`. Each push is one fault (52 in all, about
/// 0.2 ms); the pushes use 416 bytes below the stack pointer.
///
/// # Errors
/// As [`map_registers`], which it calls first.
///
/// # Example
/// ```
/// let s = of::snapshot()?;
/// let local = 0u8;
/// let rsp = s.gpr.get_reg_of_index(4); // encoding order: rax rcx rdx rbx rsp …
/// assert!(rsp.abs_diff(&local as *const u8 as u64) < 1 << 16);
/// assert_eq!(s.rflags & 2, 2); // bit 1 of rflags always reads 1
/// assert_ne!(s.fs_base, 0); // thread-local storage lives there
/// # Ok::<(), of::Error>(())
/// ```
pub fn snapshot() -> Result<Snapshot, Error> {
    let _ = map_registers()?;
    let mut out = [0u64; 53];
    // SAFETY: the pushes read map slots and write below the stack pointer (the block is not
    // `nostack`, so that space is ours); the pops restore rsp and write `out`, 53 u64s long,
    // at offsets 0..416; the mxcsr load changes only rcx, declared clobbered. Flags are
    // untouched (push, pop and mov do not write them).
    unsafe {
        core::arch::asm!(
            "push qword ptr [0x20]",          // rsp at block entry (read before it moves)
            "push qword ptr [0x1f8]",
            "push qword ptr [0x1f0]",
            "push qword ptr [0x1e8]",
            "push qword ptr [0x1e0]",
            "push qword ptr [0x1d8]",
            "push qword ptr [0x1d0]",
            "push qword ptr [0x1c8]",
            "push qword ptr [0x1c0]",
            "push qword ptr [0x1b8]",
            "push qword ptr [0x1b0]",
            "push qword ptr [0x1a8]",
            "push qword ptr [0x1a0]",
            "push qword ptr [0x198]",
            "push qword ptr [0x190]",
            "push qword ptr [0x188]",
            "push qword ptr [0x180]",
            "push qword ptr [0x178]",
            "push qword ptr [0x170]",
            "push qword ptr [0x168]",
            "push qword ptr [0x160]",
            "push qword ptr [0x158]",
            "push qword ptr [0x150]",
            "push qword ptr [0x148]",
            "push qword ptr [0x140]",
            "push qword ptr [0x138]",
            "push qword ptr [0x130]",
            "push qword ptr [0x128]",
            "push qword ptr [0x120]",
            "push qword ptr [0x118]",
            "push qword ptr [0x110]",
            "push qword ptr [0x108]",
            "push qword ptr [0x100]",
            "push qword ptr [0x98]",
            "push qword ptr [0x90]",
            "push qword ptr [0x88]",
            "push qword ptr [0x80]",
            "push qword ptr [0x78]",
            "push qword ptr [0x70]",
            "push qword ptr [0x68]",
            "push qword ptr [0x60]",
            "push qword ptr [0x58]",
            "push qword ptr [0x50]",
            "push qword ptr [0x48]",
            "push qword ptr [0x40]",
            "push qword ptr [0x38]",
            "push qword ptr [0x30]",
            "push qword ptr [0x28]",
            "push qword ptr [0x18]",
            "push qword ptr [0x10]",
            "push qword ptr [0x8]",
            "push qword ptr [0x0]",
            "pop qword ptr [{p} + 0]",       // the last push: the rax slot
            "pop qword ptr [{p} + 8]",
            "pop qword ptr [{p} + 16]",
            "pop qword ptr [{p} + 24]",
            "pop qword ptr [{p} + 40]",
            "pop qword ptr [{p} + 48]",
            "pop qword ptr [{p} + 56]",
            "pop qword ptr [{p} + 64]",
            "pop qword ptr [{p} + 72]",
            "pop qword ptr [{p} + 80]",
            "pop qword ptr [{p} + 88]",
            "pop qword ptr [{p} + 96]",
            "pop qword ptr [{p} + 104]",
            "pop qword ptr [{p} + 112]",
            "pop qword ptr [{p} + 120]",
            "pop qword ptr [{p} + 128]",
            "pop qword ptr [{p} + 136]",
            "pop qword ptr [{p} + 144]",
            "pop qword ptr [{p} + 152]",
            "pop qword ptr [{p} + 160]",
            "pop qword ptr [{p} + 168]",
            "pop qword ptr [{p} + 176]",
            "pop qword ptr [{p} + 184]",
            "pop qword ptr [{p} + 192]",
            "pop qword ptr [{p} + 200]",
            "pop qword ptr [{p} + 208]",
            "pop qword ptr [{p} + 216]",
            "pop qword ptr [{p} + 224]",
            "pop qword ptr [{p} + 232]",
            "pop qword ptr [{p} + 240]",
            "pop qword ptr [{p} + 248]",
            "pop qword ptr [{p} + 256]",
            "pop qword ptr [{p} + 264]",
            "pop qword ptr [{p} + 272]",
            "pop qword ptr [{p} + 280]",
            "pop qword ptr [{p} + 288]",
            "pop qword ptr [{p} + 296]",
            "pop qword ptr [{p} + 304]",
            "pop qword ptr [{p} + 312]",
            "pop qword ptr [{p} + 320]",
            "pop qword ptr [{p} + 328]",
            "pop qword ptr [{p} + 336]",
            "pop qword ptr [{p} + 344]",
            "pop qword ptr [{p} + 352]",
            "pop qword ptr [{p} + 360]",
            "pop qword ptr [{p} + 368]",
            "pop qword ptr [{p} + 376]",
            "pop qword ptr [{p} + 384]",
            "pop qword ptr [{p} + 392]",
            "pop qword ptr [{p} + 400]",
            "pop qword ptr [{p} + 408]",
            "pop qword ptr [{p} + 32]",
            "mov ecx, dword ptr [0x200]",     // mxcsr: general registers are already copied
            "mov dword ptr [{p} + 416], ecx",
            p = in(reg) out.as_mut_ptr(),
            out("rcx") _,
            options(preserves_flags),
        );
    }
    let mut g = [0u64; 16];
    g.copy_from_slice(&out[..16]);
    Ok(Snapshot {
        gpr: GeneralRegisters::from_array(g),
        rip: out[16],
        rflags: out[17],
        fs_base: out[18],
        gs_base: out[19],
        xmm: core::array::from_fn(|i| {
            u128::from(out[20 + 2 * i]) | (u128::from(out[21 + 2 * i]) << 64)
        }),
        mxcsr: out[52] as u32,
    })
}

/// The C ABI (`include/of.h`).
pub mod ffi {
    /// `int map_registers(void)`: installs the handler (idempotent, thread-safe) and gives the
    /// calling thread a large enough alternate signal stack. Returns 0 on success, -1 on failure
    /// (after printing why to stderr).
    ///
    /// From C: `#include "of.h"`, link `target/release/libof.a` (see `docs/c-and-asm.md`). From
    /// Rust it is an ordinary function:
    ///
    /// ```
    /// assert_eq!(of::ffi::c_map_registers(), 0);
    /// assert_eq!(of::ffi::c_map_registers(), 0); // idempotent
    /// let r12 = of::RegU64::<0x60>::new();
    /// r12.store(5);
    /// assert_eq!(r12.load(), 5);
    /// ```
    #[unsafe(export_name = "map_registers")]
    pub extern "C" fn c_map_registers() -> core::ffi::c_int {
        match crate::map_registers() {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("{e}");
                -1
            }
        }
    }

    /// `int of_map_registers(void)`: the same, under a prefixed name.
    ///
    /// ```
    /// assert_eq!(of::ffi::of_map_registers(), 0);
    /// ```
    #[unsafe(no_mangle)]
    pub extern "C" fn of_map_registers() -> core::ffi::c_int {
        c_map_registers()
    }

    /// `int of_set_patching(int on)`: turns site patching (SPEC §6) on (`on` non-zero) or off,
    /// as `OF_PATCH=1` does at installation; returns 1 if patching is on afterwards, else 0 (it
    /// cannot be turned on where the kernel lacks core-serialising membarriers). Off by default.
    /// Call it after `map_registers()`, outside signal handlers.
    ///
    /// ```
    /// assert_eq!(of::ffi::of_map_registers(), 0);
    /// let on = of::ffi::of_set_patching(1);
    /// assert_eq!(on == 1, of::engine::signal::patching_enabled());
    /// assert_eq!(of::ffi::of_set_patching(0), 0);
    /// ```
    #[unsafe(no_mangle)]
    pub extern "C" fn of_set_patching(on: core::ffi::c_int) -> core::ffi::c_int {
        core::ffi::c_int::from(of_core::signal::set_patching(on != 0))
    }

    /// `void of_set_trace_fd(int fd)`: traces every emulated instruction to file descriptor
    /// `fd` (2: standard error), one line each, or stops tracing (`fd` < 0); `OF_TRACE=1` or
    /// `OF_TRACE=FILE` in the environment does it at installation (see `of::engine::trace`).
    ///
    /// ```
    /// of::ffi::of_set_trace_fd(2);
    /// assert_eq!(of::engine::trace::fd(), Some(2));
    /// of::ffi::of_set_trace_fd(-1);
    /// assert_eq!(of::engine::trace::fd(), None);
    /// ```
    #[unsafe(no_mangle)]
    pub extern "C" fn of_set_trace_fd(fd: core::ffi::c_int) {
        of_core::trace::set_fd((fd >= 0).then_some(fd));
    }

    /// A fault site in [`OfStats`] (`struct of_site` in `of.h`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct OfSite {
        /// The faulting instruction's address (0: unused entry).
        pub rip: u64,
        /// Faults there.
        pub count: u64,
    }

    /// The counters of [`crate::stats`] for C (`struct of_stats` in `of.h`; every field a
    /// `uint64_t`, then 8 sites, busiest first).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct OfStats {
        /// SIGSEGV/SIGBUS signals the handler saw.
        pub faults: u64,
        /// Faults whose instruction was emulated.
        pub faults_emulated: u64,
        /// Further instructions emulated by run-ahead.
        pub runahead_instructions: u64,
        /// Faults passed on to the previous handler.
        pub passed_on: u64,
        /// Exceptions raised as the CPU would have.
        pub exceptions: u64,
        /// Map accesses refused (every reason).
        pub refused: u64,
        /// Decoded-instruction cache hits.
        pub icache_hits: u64,
        /// Decoded-instruction cache misses.
        pub icache_misses: u64,
        /// Sites patched.
        pub patched: u64,
        /// Sites refused by site patching.
        pub patch_refused: u64,
        /// The busiest fault sites.
        pub sites: [OfSite; 8],
    }

    const _: () = assert!(core::mem::size_of::<OfStats>() == 10 * 8 + 8 * 16);

    /// `void of_stats(struct of_stats *out)`: fills `*out` with the counters (see
    /// [`crate::stats`]). `out` must point to a `struct of_stats`; a null pointer is ignored.
    ///
    /// ```
    /// let r = of::map_registers().unwrap();
    /// r.r13.store(7);
    /// let mut s = of::ffi::OfStats::default();
    /// // SAFETY: a valid pointer to a struct of ours.
    /// unsafe { of::ffi::of_stats(&mut s) };
    /// assert!(s.faults_emulated >= 1 && s.sites[0].count >= 1);
    /// ```
    ///
    /// # Safety
    /// `out` is null or valid for writing one `struct of_stats`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn of_stats(out: *mut OfStats) {
        let s = crate::stats();
        let mut c = OfStats {
            faults: s.faults,
            faults_emulated: s.faults_emulated,
            runahead_instructions: s.runahead_instructions,
            passed_on: s.passed_on,
            exceptions: s.exceptions,
            refused: s.refused,
            icache_hits: s.icache_hits,
            icache_misses: s.icache_misses,
            patched: s.patch.patched,
            patch_refused: s.patch.refused,
            sites: [OfSite::default(); 8],
        };
        for (c, s) in c.sites.iter_mut().zip(s.sites.iter()) {
            *c = OfSite {
                rip: s.rip,
                count: s.count,
            };
        }
        // SAFETY: the caller passes null or a pointer valid for one struct of_stats.
        if let Some(out) = unsafe { out.as_mut() } {
            *out = c;
        }
    }

    /// A device for C (`struct of_device` in `of.h`): `read(ctx, offset, size, out)` fills
    /// `out[0..size]`, `write(ctx, offset, size, data)` takes `data[0..size]`; `offset` is in
    /// bytes from the region's start, `size` 1, 2, 4, 8, 16, 32 or 64 (see [`crate::region`]).
    pub type OfDevice = of_core::region::Device;

    /// `of_region_create`'s `flags`: the device runs in the fault handler (it must be
    /// async-signal-safe); without it, on a server thread of the region's own.
    pub const OF_REGION_IN_HANDLER: core::ffi::c_int = 1;

    /// `struct of_region *of_region_create(void *addr, size_t len, const struct of_device
    /// *device, int flags)`: a trapped region of `len` bytes at `addr` (page-aligned and free;
    /// NULL: where the kernel chooses) served by `device` (copied), on a server thread unless
    /// `flags` has [`OF_REGION_IN_HANDLER`]. Returns the region (its first byte:
    /// [`of_region_base`]), or NULL with `errno` set (EINVAL for a misaligned address or a
    /// null device, EEXIST when `addr` is taken, ENOMEM when 64 regions exist, or the
    /// kernel's).
    ///
    /// ```
    /// use core::ffi::c_void;
    /// unsafe extern "C" fn read(ctx: *mut c_void, off: u64, size: u32, out: *mut u8) {
    ///     // SAFETY: `out` holds `size` bytes; each byte reads as its offset plus ctx's value.
    ///     unsafe {
    ///         for i in 0..size as usize {
    ///             *out.add(i) = (off as u8 + i as u8).wrapping_add(*(ctx as *const u8));
    ///         }
    ///     }
    /// }
    /// unsafe extern "C" fn write(ctx: *mut c_void, _: u64, _: u32, data: *const u8) {
    ///     // SAFETY: ctx is the byte below, data holds at least one byte.
    ///     unsafe { *(ctx as *mut u8) = *data };
    /// }
    /// let mut base_value = 0u8;
    /// let dev = of::ffi::OfDevice { read, write, ctx: (&raw mut base_value).cast() };
    /// // SAFETY: the callbacks are safe to call from any thread while the region lives.
    /// let r = unsafe { of::ffi::of_region_create(core::ptr::null_mut(), 16, &dev, 0) };
    /// assert!(!r.is_null());
    /// // SAFETY: r is a live region of 16 bytes.
    /// unsafe {
    ///     let p = of::ffi::of_region_base(r) as *mut u8;
    ///     assert_eq!(p.add(3).read_volatile(), 3);
    ///     p.write_volatile(100);
    ///     assert_eq!((p.add(2) as *const u16).read_volatile(), u16::from_le_bytes([102, 103]));
    ///     of::ffi::of_region_destroy(r);
    /// }
    /// ```
    ///
    /// # Safety
    /// `device` is null or points to a `struct of_device` whose callbacks may be called with
    /// its `ctx` from any thread (the region's server thread, or any thread in its fault
    /// handler with [`OF_REGION_IN_HANDLER`]: then async-signal-safe) until
    /// [`of_region_destroy`] returns. Callbacks must not access a region themselves.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn of_region_create(
        addr: *mut core::ffi::c_void,
        len: usize,
        device: *const OfDevice,
        flags: core::ffi::c_int,
    ) -> *mut crate::region::Region {
        let set_errno = |e: i32| {
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() = e };
        };
        // SAFETY: the caller passes null or a valid device.
        let Some(device) = (unsafe { device.as_ref() }) else {
            set_errno(libc::EINVAL);
            return core::ptr::null_mut();
        };
        let mut b = crate::region::Region::builder(len);
        if !addr.is_null() {
            b = b.at(addr as usize);
        }
        if flags & OF_REGION_IN_HANDLER != 0 {
            // SAFETY: the caller's promise (async-signal-safe callbacks).
            b = unsafe { b.in_handler() };
        }
        // SAFETY: the caller's contract (callbacks callable from any thread while the region
        // lives; async-signal-safe with OF_REGION_IN_HANDLER).
        match unsafe { crate::region::Region::create_raw(b, *device, None) } {
            Ok(r) => Box::into_raw(Box::new(r)),
            Err(e) => {
                set_errno(e.raw_os_error().unwrap_or(match e.kind() {
                    std::io::ErrorKind::InvalidInput => libc::EINVAL,
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AlreadyExists => {
                        libc::EEXIST
                    }
                    _ => libc::ENOMEM,
                }));
                core::ptr::null_mut()
            }
        }
    }

    /// `void *of_region_base(const struct of_region *region)`: the region's first byte.
    ///
    /// See [`of_region_create`].
    ///
    /// # Safety
    /// `region` comes from [`of_region_create`] and is not destroyed.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn of_region_base(
        region: *const crate::region::Region,
    ) -> *mut core::ffi::c_void {
        // SAFETY: the caller's contract.
        unsafe { (*region).as_ptr().cast() }
    }

    /// `void of_region_destroy(struct of_region *region)`: waits until no instruction uses the
    /// region, stops its server thread and unmaps it (NULL is ignored).
    ///
    /// See [`of_region_create`].
    ///
    /// # Safety
    /// `region` is null or comes from [`of_region_create`] and is not destroyed yet.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn of_region_destroy(region: *mut crate::region::Region) {
        if !region.is_null() {
            // SAFETY: the caller's contract: ours, from Box::into_raw.
            drop(unsafe { Box::from_raw(region) });
        }
    }
}
