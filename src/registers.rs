//! Source compatibility with `of` 0.1: `of::registers::{RAX, …, R15, RIP, RFLAGS}`.
//!
//! `of` 0.1 offered 64-bit register handles with safe `load`, `store`, arithmetic and
//! `_assign` methods, usable after `unsafe { of::map_registers(); }`:
//!
//! ```
//! # #![allow(deprecated, unused_unsafe, unused_must_use)]
//! use of::registers::*;
//! unsafe { of::map_registers(); }
//! R12.store(40);
//! R12.add_assign(2);
//! assert_eq!(R12.load(), 42);
//! assert_eq!(R12.sub(2), 40); // `add`, `sub`, `bit*` compute without writing
//! assert!(RSP.load() > 0x1000);
//! ```
//!
//! `tests/compat-0.1` is of 0.1's hello_world (which also moves RSP and jumps through RIP),
//! built unchanged as a dependent crate and run in debug and release by `tests/compat.rs`.
//!
//! They keep working, but are deprecated: writing rsp, rbp, rbx or rip from safe code cannot be
//! sound in general, and each method is one instruction only as long as nothing the compiler
//! generates runs between calls. New code should use the [`crate::Registers`] token (whose
//! dangerous stores are `unsafe`) or `#[of::mapped]` (which fuses consecutive accesses into one
//! `asm!` block).

#![allow(deprecated)]

/// A 64-bit register of the map, as `of` 0.1 named it.
///
/// ```
/// # #![allow(deprecated, unused_unsafe)]
/// use of::registers::R13;
/// unsafe { of::map_registers(); }
/// R13.store(7);
/// R13.bitor_assign(8);
/// assert_eq!(R13.load(), 15);
/// ```
#[deprecated(note = "use the `of::Registers` token from `of::map_registers()` or `#[of::mapped]`")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegU64 {
    offset: usize,
}

macro_rules! legacy {
    ($($name:ident = $off:literal),* $(,)?) => {
        $(
            #[doc = concat!("The map slot at offset ", stringify!($off), " (`of` 0.1 name).")]
            ///
            /// ```
            /// # #![allow(deprecated, unused_unsafe)]
            /// unsafe { of::map_registers(); }
            #[doc = concat!("let value: u64 = of::registers::", stringify!($name), ".load(); // mov reg, qword ptr [", stringify!($off), "]")]
            /// # let _ = value;
            /// ```
            #[deprecated(note = "use the `of::Registers` token from `of::map_registers()` or `#[of::mapped]`")]
            pub const $name: RegU64 = RegU64 { offset: $off };
        )*
    };
}

legacy!(
    RAX = 0x00,
    RCX = 0x08,
    RDX = 0x10,
    RBX = 0x18,
    RSP = 0x20,
    RBP = 0x28,
    RSI = 0x30,
    RDI = 0x38,
    R8 = 0x40,
    R9 = 0x48,
    R10 = 0x50,
    R11 = 0x58,
    R12 = 0x60,
    R13 = 0x68,
    R14 = 0x70,
    R15 = 0x78,
    RIP = 0x80,
    RFLAGS = 0x88,
);

/// One read-modify-write or store instruction `op qword ptr [offset], <pinned>`.
///
/// The value is pinned to r11 (r10 for R11's own slot, so an `add` to R11 never reads its
/// source from the bytes it changes). In 0.1 each method is a separate call, so compiled code
/// runs between them and must load the next value into *some* register: with `in(reg)` the
/// register allocator may pick one that an earlier call just set through the map (rdi, say, for
/// `RDI.store(1); RSI.store(1234);`), silently overwriting it. r10 and r11 carry no function
/// arguments, so the argument registers a 0.1 program sets before a jump through RIP survive
/// the instructions that materialise the later values.
macro_rules! dispatch {
    ($self:ident, $op:literal, $v:expr) => {{
        let value: u64 = $v;
        macro_rules! one {
            ($o:literal) => {
                // SAFETY (of 0.1 contract): one instruction on the map; every register inline
                // asm may name is declared clobbered. Writes to rbx/rsp/rbp/rip are the caller's
                // responsibility, as in of 0.1.
                unsafe {
                    core::arch::asm!(
                        concat!($op, " qword ptr [", stringify!($o), "], r11"),
                        inlateout("r11") value => _,
                        lateout("rax") _, lateout("rcx") _, lateout("rdx") _, lateout("rsi") _,
                        lateout("rdi") _, lateout("r8") _, lateout("r9") _, lateout("r10") _,
                        lateout("r12") _, lateout("r13") _, lateout("r14") _, lateout("r15") _,
                        options(nostack),
                    )
                }
            };
        }
        match $self.offset {
            0x00 => one!(0x00), 0x08 => one!(0x08), 0x10 => one!(0x10), 0x18 => one!(0x18),
            0x20 => one!(0x20), 0x28 => one!(0x28), 0x30 => one!(0x30), 0x38 => one!(0x38),
            0x40 => one!(0x40), 0x48 => one!(0x48), 0x50 => one!(0x50),
            0x58 => {
                // SAFETY: as above, with the value in r10 (the slot is r11's).
                unsafe {
                    core::arch::asm!(
                        concat!($op, " qword ptr [0x58], r10"),
                        inlateout("r10") value => _,
                        lateout("rax") _, lateout("rcx") _, lateout("rdx") _, lateout("rsi") _,
                        lateout("rdi") _, lateout("r8") _, lateout("r9") _, lateout("r11") _,
                        lateout("r12") _, lateout("r13") _, lateout("r14") _, lateout("r15") _,
                        options(nostack),
                    )
                }
            }
            0x60 => one!(0x60), 0x68 => one!(0x68), 0x70 => one!(0x70), 0x78 => one!(0x78),
            0x80 => one!(0x80), _ => one!(0x88),
        }
    }};
}

impl RegU64 {
    /// The value (`mov reg, [offset]`).
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::RSP;
    /// unsafe { of::map_registers(); }
    /// let local = 0u8;
    /// assert!(RSP.load().abs_diff(&local as *const u8 as u64) < 1 << 16);
    /// ```
    #[inline(always)]
    pub fn load(&self) -> u64 {
        let v: u64;
        macro_rules! one {
            ($o:literal) => {
                // SAFETY: a load from the map changes no state.
                unsafe {
                    core::arch::asm!(
                        concat!("mov {v}, qword ptr [", stringify!($o), "]"),
                        v = lateout(reg) v,
                        options(nostack, preserves_flags, readonly),
                    )
                }
            };
        }
        match self.offset {
            0x00 => one!(0x00),
            0x08 => one!(0x08),
            0x10 => one!(0x10),
            0x18 => one!(0x18),
            0x20 => one!(0x20),
            0x28 => one!(0x28),
            0x30 => one!(0x30),
            0x38 => one!(0x38),
            0x40 => one!(0x40),
            0x48 => one!(0x48),
            0x50 => one!(0x50),
            0x58 => one!(0x58),
            0x60 => one!(0x60),
            0x68 => one!(0x68),
            0x70 => one!(0x70),
            0x78 => one!(0x78),
            0x80 => one!(0x80),
            _ => one!(0x88),
        }
        v
    }
    /// Writes the register (`mov [offset], reg`).
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(42);
    /// assert_eq!(R12.load(), 42);
    /// ```
    #[inline(always)]
    pub fn store(&self, value: u64) {
        dispatch!(self, "mov", value)
    }
    /// `load() + value` (wrapping), without writing.
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(40);
    /// assert_eq!(R12.add(2), 42);
    /// assert_eq!(R12.load(), 40);
    /// ```
    pub fn add(&self, value: u64) -> u64 {
        self.load().wrapping_add(value)
    }
    /// `load() - value` (wrapping), without writing.
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(0);
    /// assert_eq!(R12.sub(1), u64::MAX);
    /// ```
    pub fn sub(&self, value: u64) -> u64 {
        self.load().wrapping_sub(value)
    }
    /// `load() & value`, without writing.
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(0b1100);
    /// assert_eq!(R12.bitand(0b1010), 0b1000);
    /// ```
    pub fn bitand(&self, value: u64) -> u64 {
        self.load() & value
    }
    /// `load() | value`, without writing.
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(0b1100);
    /// assert_eq!(R12.bitor(0b1010), 0b1110);
    /// ```
    pub fn bitor(&self, value: u64) -> u64 {
        self.load() | value
    }
    /// `load() ^ value`, without writing.
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(0b1100);
    /// assert_eq!(R12.bitxor(0b1010), 0b0110);
    /// ```
    pub fn bitxor(&self, value: u64) -> u64 {
        self.load() ^ value
    }
    /// Adds in place (`add [offset], reg`).
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(40);
    /// R12.add_assign(2);
    /// assert_eq!(R12.load(), 42);
    /// ```
    #[inline(always)]
    pub fn add_assign(&self, value: u64) {
        dispatch!(self, "add", value)
    }
    /// Subtracts in place (`sub [offset], reg`).
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(44);
    /// R12.sub_assign(2);
    /// assert_eq!(R12.load(), 42);
    /// ```
    #[inline(always)]
    pub fn sub_assign(&self, value: u64) {
        dispatch!(self, "sub", value)
    }
    /// Bitwise and in place (`and [offset], reg`).
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(0b1100);
    /// R12.bitand_assign(0b1010);
    /// assert_eq!(R12.load(), 0b1000);
    /// ```
    #[inline(always)]
    pub fn bitand_assign(&self, value: u64) {
        dispatch!(self, "and", value)
    }
    /// Bitwise or in place (`or [offset], reg`).
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(0b1100);
    /// R12.bitor_assign(0b1010);
    /// assert_eq!(R12.load(), 0b1110);
    /// ```
    #[inline(always)]
    pub fn bitor_assign(&self, value: u64) {
        dispatch!(self, "or", value)
    }
    /// Bitwise xor in place (`xor [offset], reg`).
    ///
    /// ```
    /// # #![allow(deprecated, unused_unsafe)]
    /// use of::registers::R12;
    /// unsafe { of::map_registers(); }
    /// R12.store(0b1100);
    /// R12.bitxor_assign(0b1010);
    /// assert_eq!(R12.load(), 0b0110);
    /// ```
    #[inline(always)]
    pub fn bitxor_assign(&self, value: u64) {
        dispatch!(self, "xor", value)
    }
}
