//! The engine behind [`of`](https://docs.rs/of): page 0 of a Linux/x86-64 process as a
//! byte-addressable image of the interrupted thread's registers.
//!
//! The data flow follows the module layout:
//!
//! 1. [`signal`] — a SIGSEGV/SIGBUS arrives; the handler reads `si_code`, `si_addr` and the
//!    `ucontext` (through libc's types) and decides whether the fault can be ours at all.
//! 2. [`decode`] — at most 15 instruction bytes are fetched from `rip` (never reading unmapped
//!    bytes) and decoded with iced-x86.
//! 3. [`emulate::operands`] — every memory access the instruction makes (explicit ModRM operand,
//!    implicit stack or string access) is computed; the fault is ours only if one of them covers
//!    `si_addr` and every page-0 access lies in mapped bytes of the [`map`].
//! 4. [`emulate()`] — the instruction is executed against a [`Machine`]: data movement in Rust,
//!    arithmetic by running the *register form* of the same instruction on the host
//!    ([`emulate::hostexec`], KVM's "fastop" idea generalised) so results and every flag, the
//!    SDM's "undefined" ones included, are the host CPU's own.
//! 5. Write back — register results first, map bytes last (SPEC §2), then `rip` moves to the next
//!    instruction (or to the target of a control transfer) and the handler returns.
//!
//! The core is usable without faults: [`emulate::emulate`] is a function over any [`Machine`]
//! (see [`RegisterFile`] for an in-memory one), which is how the differential tests and a VMM's
//! MMIO path use it.
//!
//! Everything reachable from the signal handler is async-signal-safe: no allocation, no locks,
//! no panics that unwind (the handler is `extern "C"`, so a panic would abort, and the fault path
//! is written without panicking operations).
//!
//! # Examples
//!
//! Decode `add qword ptr [8], 1` and emulate it on an in-memory register file (map offset 8
//! is rcx):
//!
//! ```
//! use of_core::decode::decode;
//! use of_core::{RegisterFile, emulate};
//!
//! // 48 83 04 25 08 00 00 00 01 = add qword ptr [8], 1
//! let bytes = [0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01];
//! let mut m = RegisterFile { rip: 0x40_0000, ..RegisterFile::default() };
//! m.gpr[1] = 41; // rcx
//! let (instr, offsets) = decode(&bytes, m.rip).unwrap();
//! emulate(&mut m, &instr, &bytes, &offsets, Some(8)).unwrap();
//! assert_eq!(m.gpr[1], 42);
//! assert_eq!(m.rip, 0x40_0000 + 9);
//! ```
//!
//! The same instruction executed for real, once the fault handler is installed:
//!
//! ```
//! of_core::signal::install().unwrap();
//! let mut rcx: u64 = 41;
//! // SAFETY: the page-0 access is emulated by the handler; it changes only rcx and the
//! // status flags.
//! unsafe { core::arch::asm!("add qword ptr [8], 1", inout("rcx") rcx, options(nostack)) };
//! assert_eq!(rcx, 42);
//! ```
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// Target guard: the engine decodes x86-64 instructions, runs their register forms on the CPU
// and rewrites a Linux signal frame, so it exists for x86_64 Linux only. Elsewhere the crate is
// this one error: every module and re-export below carries the same `cfg` (a new one must too),
// so nothing else is compiled and no cascade of unrelated errors follows.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!(
    "`of` (of-core) supports only x86_64 Linux (target_arch = \"x86_64\", target_os = \"linux\", \
     e.g. --target x86_64-unknown-linux-gnu): it emulates x86-64 instructions that fault on page 0 \
     from a Linux SIGSEGV handler"
);

extern crate alloc;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod cpu;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod decode;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod diag;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod emulate;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod icache;
// futex(2) wait and wake, for the patcher thread and trapped regions.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod futex;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod machine;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod map;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod patch;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod region;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod regs;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod signal;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod trace;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use emulate::{EmulationError, Exception, emulate};
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use machine::{Machine, MemoryFault, RegisterFile};
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use regs::GeneralRegisters;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use signal::{InstallError, install};
