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

pub mod reg;
pub mod registers;
mod token;
pub mod vector;

/// The emulator core (decode, ownership, emulation), usable without faults.
pub use of_core as engine;
pub use of_core::GeneralRegisters;
pub use of_macros::mapped;
pub use reg::{Plain, RegU8, RegU16, RegU32, RegU64, Special};
pub use token::Registers;
pub use vector::RegU128;

use std::cell::RefCell;

/// Why [`map_registers`] could not install the handler.
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

/// A snapshot of the calling thread's whole scalar register file, read through the map.
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
}

/// Reads the whole scalar map (0x00..0xA0) of the calling thread, one 8-byte load per slot in
/// a single `asm!` block, into a [`Snapshot`]. Values are those at the moment each load ran
/// (the block's scratch register is rcx, so the rcx slot reads back the rax value just loaded).
///
/// # Errors
/// As [`map_registers`], which it calls first.
pub fn snapshot() -> Result<Snapshot, Error> {
    let _ = map_registers()?;
    let mut out = [0u64; 20];
    // SAFETY: loads from the map change no register but rax, which is declared clobbered; the
    // stores go to `out`, 20 u64s long.
    unsafe {
        core::arch::asm!(
            "mov rcx, qword ptr [0x00]",       // rcx = rax, read through the map
            "mov qword ptr [{p} + 0], rcx",
            "mov rcx, qword ptr [0x08]",
            "mov qword ptr [{p} + 8], rcx",
            "mov rcx, qword ptr [0x10]",
            "mov qword ptr [{p} + 16], rcx",
            "mov rcx, qword ptr [0x18]",
            "mov qword ptr [{p} + 24], rcx",
            "mov rcx, qword ptr [0x20]",
            "mov qword ptr [{p} + 32], rcx",
            "mov rcx, qword ptr [0x28]",
            "mov qword ptr [{p} + 40], rcx",
            "mov rcx, qword ptr [0x30]",
            "mov qword ptr [{p} + 48], rcx",
            "mov rcx, qword ptr [0x38]",
            "mov qword ptr [{p} + 56], rcx",
            "mov rcx, qword ptr [0x40]",
            "mov qword ptr [{p} + 64], rcx",
            "mov rcx, qword ptr [0x48]",
            "mov qword ptr [{p} + 72], rcx",
            "mov rcx, qword ptr [0x50]",
            "mov qword ptr [{p} + 80], rcx",
            "mov rcx, qword ptr [0x58]",
            "mov qword ptr [{p} + 88], rcx",
            "mov rcx, qword ptr [0x60]",
            "mov qword ptr [{p} + 96], rcx",
            "mov rcx, qword ptr [0x68]",
            "mov qword ptr [{p} + 104], rcx",
            "mov rcx, qword ptr [0x70]",
            "mov qword ptr [{p} + 112], rcx",
            "mov rcx, qword ptr [0x78]",
            "mov qword ptr [{p} + 120], rcx",
            "mov rcx, qword ptr [0x80]",
            "mov qword ptr [{p} + 128], rcx",
            "mov rcx, qword ptr [0x88]",
            "mov qword ptr [{p} + 136], rcx",
            "mov rcx, qword ptr [0x90]",
            "mov qword ptr [{p} + 144], rcx",
            "mov rcx, qword ptr [0x98]",
            "mov qword ptr [{p} + 152], rcx",
            p = in(reg) out.as_mut_ptr(),
            out("rcx") _,
            options(nostack, preserves_flags),
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
    })
}

/// The C ABI (`include/of.h`).
pub mod ffi {
    /// `int map_registers(void)`: installs the handler (idempotent, thread-safe) and gives the
    /// calling thread a large enough alternate signal stack. Returns 0 on success, -1 on failure
    /// (after printing why to stderr).
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
    #[unsafe(no_mangle)]
    pub extern "C" fn of_map_registers() -> core::ffi::c_int {
        c_map_registers()
    }
}
