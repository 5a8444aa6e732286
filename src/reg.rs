//! Typed views of the register map: `RegU64<OFF>` is the 8 bytes at page-0 offset `OFF`.
//!
//! Every operation is exactly one instruction with an absolute page-0 memory operand, emitted
//! with `asm!` (so it is the same in debug and release, and never a Rust dereference of a low
//! pointer, which would be undefined behaviour). The instruction faults and `of`'s handler
//! emulates it against the calling thread's registers.
//!
//! Map semantics, not register semantics: a store of `RegU32<0>` (eax) changes bytes 0..4 of the
//! map, the low half of rax, and leaves the high half alone (unlike `mov eax, …`).
//!
//! # Access classes
//! The second parameter says whether stores are safe:
//! - [`Plain`]: the bytes cover only registers that inline asm can declare clobbered (rax, rcx,
//!   rdx, rsi, rdi, r8–r15). Stores and compound assignments are safe: every such register is
//!   declared clobbered.
//! - [`Special`]: the bytes touch rbx, rsp, rbp (which Rust's inline asm cannot declare
//!   clobbered), rip (a write is a jump) or rflags (a write can set DF, which compiled code
//!   assumes clear). Stores are `unsafe`.
//!
//! Offsets are checked at compile time: a view whose bytes leave the map (or a `Plain` view
//! that touches a special register, or a store to the read-only fs/gs base) does not compile.
//!
//! # Shift counts
//! `<<=` and `>>=` (and [`RegU64::shl_unchecked`] …) take a count of any primitive integer type
//! (see [`ShiftCount`]) and are one `shl`/`shr [OFF], cl`. The count is what the instruction
//! sees: the low byte of its two's-complement value in cl ([`ShiftCount::low_byte`]), which the
//! CPU masks to 6 bits for an 8-byte view and to 5 bits for the narrower ones (Intel SDM vol.
//! 2B, SAL/SAR/SHL/SHR). So an 8-byte view shifts by `count.rem_euclid(64)` and the others by
//! `count.rem_euclid(32)`, whatever the count's type and value (`-1` is 63 or 31, a `u128`
//! counts by its low bits): never a panic, in debug or release, where Rust's `<<` on integers
//! panics in debug for a count that is negative or at least the bit width. Unlike `wrapping_shl`
//! on a `u8` or `u16`, a 1- or 2-byte view shifted by a masked count at least its width loses
//! every bit:
//!
//! ```
//! of::map_registers().unwrap();
//! let mut r8 = of::RegU64::<0x40>::new();
//! r8.store(1);
//! r8 <<= 65u8; // 65 mod 64 = 1
//! assert_eq!(r8.load(), 2);
//! r8 <<= -1i32; // -1 is 0xff…ff: its low byte 0xff masked to 63
//! assert_eq!(r8.load(), 0);
//! r8.store(1 << 40);
//! r8 >>= (1u128 << 100) + 8; // only the low bits count: 8
//! assert_eq!(r8.load(), 1 << 32);
//!
//! let mut r9b = of::RegU8::<0x48>::new();
//! r9b.store(0x81);
//! r9b <<= 33usize; // 33 mod 32 = 1 (Rust's `0x81u8 << 33` would panic in debug)
//! assert_eq!(r9b.load(), 0x02);
//! r9b <<= 8i16; // a byte shifted by 8: every bit is shifted out
//! assert_eq!(r9b.load(), 0);
//! ```

use core::marker::PhantomData;

/// Stores are safe (see the [module docs](self)); the default access class.
///
/// ```
/// of::map_registers().unwrap();
/// let r8: of::RegU64<0x40, of::Plain> = of::RegU64::new(); // same as RegU64::<0x40>
/// r8.store(7); // safe: r8 is declared clobbered
/// ```
///
/// A `Plain` view of a special register does not build:
///
/// ```compile_fail,E0080
/// let rsp = of::RegU64::<0x20, of::Plain>::new();
/// # let _ = rsp.load();
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Plain;
/// Stores are `unsafe` (see the [module docs](self)).
///
/// ```
/// of::map_registers().unwrap();
/// let rbp = of::RegU64::<0x28, of::Special>::new_special();
/// let local = 0u8;
/// // Reads are safe: rbp is this frame's frame pointer or a callee-saved value, either way
/// // some 8-byte value; rsp is always near a local.
/// let _ = rbp.load();
/// let rsp = of::RegU64::<0x20, of::Special>::new_special().load();
/// assert!(rsp.abs_diff(&local as *const u8 as u64) < 1 << 16);
/// ```
///
/// Stores to a `Special` view need `unsafe`:
///
/// ```compile_fail,E0133
/// let rsp = of::RegU64::<0x20, of::Special>::new_special();
/// rsp.store(0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Special;

mod sealed {
    /// Implemented only by [`super::ShiftCount`]'s types: the set of count types is closed.
    pub trait Sealed {}
}

/// A shift count: every primitive integer type (`u8` … `u128`, `i8` … `i128`, `usize`,
/// `isize`) and references to them, as for Rust's `<<` on integers. See the
/// [module docs](self#shift-counts) for what the instruction does with a count that does not
/// fit its operand.
///
/// ```
/// use of::reg::ShiftCount;
/// assert_eq!(9u8.low_byte(), 9);
/// assert_eq!(0x1_02u16.low_byte(), 0x02);
/// assert_eq!((-1i32).low_byte(), 0xff); // masked to 63 (8-byte views) or 31 by the CPU
/// assert_eq!((u128::MAX - 0xff + 3).low_byte(), 3);
/// assert_eq!((&7usize).low_byte(), 7);
/// ```
///
/// Anything else is not a count:
///
/// ```compile_fail,E0277
/// of::map_registers().unwrap();
/// let mut r8 = of::RegU64::<0x40>::new();
/// r8 <<= 1.0;
/// ```
#[diagnostic::on_unimplemented(
    message = "a shift count is a primitive integer (u8 … u128, i8 … i128, usize, isize), not `{Self}`",
    label = "not an integer"
)]
pub trait ShiftCount: Copy + sealed::Sealed {
    /// The byte the shift instruction reads from cl: the low 8 bits of the count's
    /// two's-complement value (`self as u8`).
    fn low_byte(self) -> u8;
}

macro_rules! shift_count {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl ShiftCount for $t {
            #[inline(always)]
            fn low_byte(self) -> u8 {
                self as u8
            }
        }
    )*};
}
shift_count!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

impl<T: ShiftCount> sealed::Sealed for &T {}
impl<T: ShiftCount> ShiftCount for &T {
    #[inline(always)]
    fn low_byte(self) -> u8 {
        (*self).low_byte()
    }
}

/// Whether `off..off + size` lies inside mapped bytes of the map (SPEC §2).
///
/// ```
/// assert!(of::reg::in_map(0x78, 8)); // r15
/// assert!(!of::reg::in_map(0x9c, 8)); // runs past gs base
/// assert!(of::reg::in_map(0x200, 4)); // mxcsr
/// ```
pub const fn in_map(off: usize, size: usize) -> bool {
    let end = off + size;
    (end <= 0xA0) || (off >= 0x100 && end <= 0x204)
}

/// Whether `off..off + size` touches rbx, rsp, rbp (0x18..0x30) or rip/rflags/fs/gs
/// (0x80..0xA0).
///
/// ```
/// use of::reg::touches_special;
/// assert!(touches_special(0x20, 8)); // rsp
/// assert!(touches_special(0x14, 8)); // the high half of rdx and the low half of rbx
/// assert!(!touches_special(0x30, 8)); // rsi
/// assert!(touches_special(0x88, 1)); // the low byte of rflags
/// ```
pub const fn touches_special(off: usize, size: usize) -> bool {
    let end = off + size;
    (off < 0x30 && end > 0x18) || (off < 0xA0 && end > 0x80)
}

/// Whether `off..off + size` touches the read-only fs/gs bases (0x90..0xA0).
///
/// ```
/// use of::reg::touches_read_only;
/// assert!(touches_read_only(0x98, 8)); // gs base
/// assert!(touches_read_only(0x8c, 8)); // the high half of rflags and the low half of fs base
/// assert!(!touches_read_only(0x88, 8)); // rflags
/// ```
pub const fn touches_read_only(off: usize, size: usize) -> bool {
    let end = off + size;
    off < 0xA0 && end > 0x90
}

macro_rules! reg_type {
    ($name:ident, $ty:ty, $ptr:literal, $class:ident, $m:literal, $size:literal, $sfx:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// Neither `Send` nor `Sync`: a view belongs to the thread whose registers it names.
        ///
        /// ```
        /// of::map_registers().unwrap();
        #[doc = concat!("let r13 = of::", stringify!($name), "::<0x68>::new(); // low ", $size, " byte(s) of r13")]
        /// r13.store(40);
        #[doc = concat!("let mut v = r13;")]
        /// v += 2;
        /// assert_eq!(v.load(), 42);
        /// ```
        ///
        /// A view that leaves the map does not build:
        ///
        /// ```compile_fail,E0080
        #[doc = concat!("let v = of::", stringify!($name), "::<0x800>::new();")]
        /// let _ = v.load();
        /// ```
        #[derive(Clone, Copy, Debug)]
        pub struct $name<const OFF: usize, A = Plain> {
            _p: PhantomData<(A, *const ())>,
        }

        impl<const OFF: usize, A> $name<OFF, A> {
            /// Size of the view in bytes.
            ///
            /// ```
            #[doc = concat!("assert_eq!(of::", stringify!($name), "::<0x68>::SIZE, size_of::<", stringify!($ty), ">());")]
            /// ```
            pub const SIZE: usize = $size;
            /// The view's offset in the map, in bytes.
            ///
            /// ```
            #[doc = concat!("assert_eq!(of::", stringify!($name), "::<0x68>::OFFSET, 0x68);")]
            /// ```
            pub const OFFSET: usize = OFF;

            /// The offset of this view in page 0, in bytes.
            ///
            /// ```
            /// let r = of::map_registers().unwrap();
            #[doc = concat!("let v: of::", stringify!($name), "<0x68> = of::", stringify!($name), "::new();")]
            /// assert_eq!(v.offset(), 0x68); // r13
            /// assert_eq!(r.rsp.offset(), 0x20);
            /// ```
            pub const fn offset(&self) -> usize {
                OFF
            }

            /// Reads the view: one `mov` from `[OFF]`.
            ///
            /// ```
            /// of::map_registers().unwrap();
            /// // The low bytes of rsp, read through the map and compared with the whole of it.
            #[doc = concat!("let low = of::", stringify!($name), "::<0x20, of::Special>::new_special().load();")]
            /// let full = of::RegU64::<0x20, of::Special>::new_special().load();
            #[doc = concat!("assert_eq!(low, full as ", stringify!($ty), ");")]
            /// ```
            #[inline(always)]
            pub fn load(&self) -> $ty {
                let v: $ty;
                // SAFETY: a load from the map changes no state; `of`'s handler emulates it (or,
                // if `map_registers` was never called, the process dies with SIGSEGV).
                unsafe {
                    core::arch::asm!(
                        concat!("mov {v", $m, "}, ", $ptr, " ptr [{off}]"),
                        v = lateout($class) v,
                        off = const OFF,
                        options(nostack, preserves_flags, readonly),
                    );
                }
                v
            }

            /// Stores without checking the access class.
            ///
            /// # Safety
            /// Writing the covered registers must be sound at this point (see the module docs).
            ///
            /// ```
            /// of::map_registers().unwrap();
            #[doc = concat!("let r12 = of::", stringify!($name), "::<0x60, of::Special>::new_special();")]
            /// // SAFETY: the view is r12, which the store declares clobbered; any bytes may be
            /// // named `Special`, and then every store is the caller's responsibility.
            /// unsafe { r12.store_unchecked(9) };
            /// assert_eq!(r12.load(), 9);
            /// ```
            #[inline(always)]
            pub unsafe fn store_unchecked(&self, value: $ty) {
                const { assert!(!touches_read_only(OFF, $size), "fs/gs base are read only") };
                // SAFETY: the caller vouches for the registers the store changes; every register
                // inline asm may name is declared clobbered.
                unsafe {
                    core::arch::asm!(
                        concat!("mov ", $ptr, " ptr [{off}], {v", $m, "}"),
                        v = in($class) value,
                        off = const OFF,
                        lateout("rax") _, lateout("rcx") _, lateout("rdx") _, lateout("rsi") _,
                        lateout("rdi") _, lateout("r8") _, lateout("r9") _, lateout("r10") _,
                        lateout("r11") _, lateout("r12") _, lateout("r13") _, lateout("r14") _,
                        lateout("r15") _,
                        options(nostack),
                    );
                }
            }

            reg_type!(@rmw $name, $ty, $ptr, $class, $m, $size, $sfx, add_unchecked, "add", "12 + 10", "Adds `value` in place (`add`), wrapping.");
            reg_type!(@rmw $name, $ty, $ptr, $class, $m, $size, $sfx, sub_unchecked, "sub", "12 - 10", "Subtracts `value` in place (`sub`), wrapping.");
            reg_type!(@rmw $name, $ty, $ptr, $class, $m, $size, $sfx, and_unchecked, "and", "12 & 10", "Bitwise and in place (`and`).");
            reg_type!(@rmw $name, $ty, $ptr, $class, $m, $size, $sfx, or_unchecked, "or", "12 | 10", "Bitwise or in place (`or`).");
            reg_type!(@rmw $name, $ty, $ptr, $class, $m, $size, $sfx, xor_unchecked, "xor", "12 ^ 10", "Bitwise xor in place (`xor`).");
            reg_type!(@shift $name, $ty, $ptr, $size, shl_unchecked, "shl", "5", "5 << 3", "Shifts left in place by `count` (`shl …, cl`): any integer type, masked as the CPU masks it (see [Shift counts](self#shift-counts)).");
            reg_type!(@shift $name, $ty, $ptr, $size, shr_unchecked, "shr", "40", "40 >> 3", "Shifts right (logical) in place by `count` (`shr …, cl`): any integer type, masked as the CPU masks it (see [Shift counts](self#shift-counts)).");
        }

        impl<const OFF: usize> $name<OFF, Plain> {
            /// A view of the bytes at `OFF`; fails to compile if they leave the map or touch
            /// rbx/rsp/rbp/rip/rflags/fs/gs (use [`Special`] for those).
            ///
            /// ```
            /// of::map_registers().unwrap();
            #[doc = concat!("let rdi = of::", stringify!($name), "::<0x38>::new(); // (the low bytes of) rdi")]
            /// rdi.store(3);
            /// assert_eq!(rdi.load(), 3);
            /// ```
            pub const fn new() -> Self {
                const { assert!(in_map(OFF, $size), "the bytes OFF..OFF+size of this view leave the register map (0x00..0xa0, 0x100..0x204)") };
                const { assert!(!touches_special(OFF, $size), "these bytes touch rbx/rsp/rbp/rip/rflags/fs/gs: use the `Special` access class, whose stores are unsafe") };
                $name { _p: PhantomData }
            }

            /// Writes the view: one `mov` to `[OFF]`. The registers it changes are declared
            /// clobbered.
            ///
            /// Narrow views change only their own bytes (map semantics):
            ///
            /// ```
            /// of::map_registers().unwrap();
            /// let r14 = of::RegU64::<0x70>::new();
            #[doc = concat!("let low = of::", stringify!($name), "::<0x70>::new();")]
            /// r14.store(u64::MAX);
            /// low.store(0);
            /// // Only the view's own low bytes were cleared:
            #[doc = concat!("assert_eq!(r14.load(), !u64::from(", stringify!($ty), "::MAX));")]
            /// ```
            #[inline(always)]
            pub fn store(&self, value: $ty) {
                // SAFETY: Plain views only cover registers declared clobbered by the asm.
                unsafe { self.store_unchecked(value) }
            }
        }

        impl<const OFF: usize> Default for $name<OFF, Plain> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<const OFF: usize> $name<OFF, Special> {
            /// A view of the bytes at `OFF` whose stores are `unsafe`; fails to compile if the
            /// bytes leave the map.
            ///
            /// ```
            /// of::map_registers().unwrap();
            #[doc = concat!("let rflags = of::", stringify!($name), "::<0x88, of::Special>::new_special();")]
            /// assert_eq!(rflags.load() & 2, 2); // bit 1 of rflags always reads 1
            /// ```
            pub const fn new_special() -> Self {
                const { assert!(in_map(OFF, $size), "the bytes OFF..OFF+size of this view leave the register map (0x00..0xa0, 0x100..0x204)") };
                $name { _p: PhantomData }
            }

            /// Writes the view: one `mov` to `[OFF]`.
            ///
            /// # Safety
            /// The bytes touch rbx, rsp, rbp, rip or rflags. Changing rbx/rbp/rsp under compiled
            /// code, jumping through rip, or setting DF is only sound when the code that runs
            /// next expects it (for example: a jump to a function that never returns, on a
            /// stack it owns).
            ///
            /// ```
            /// of::map_registers().unwrap();
            #[doc = concat!("let v = of::", stringify!($name), "::<0x60, of::Special>::new_special(); // r12")]
            /// // SAFETY: r12 is declared clobbered by the store, so nothing relies on its old
            /// // value (a `Special` view of r12 is legal, merely more careful than needed).
            /// unsafe { v.store(5) };
            /// assert_eq!(v.load(), 5);
            /// ```
            ///
            /// The `green_threads` example switches stacks this way: it stores rsp and rip of a
            /// coroutine in one `#[of::mapped]` block.
            #[inline(always)]
            pub unsafe fn store(&self, value: $ty) {
                // SAFETY: forwarded to the caller.
                unsafe { self.store_unchecked(value) }
            }
        }

        reg_type!(@ops $name, $ty, add_unchecked, AddAssign, add_assign);
        reg_type!(@ops $name, $ty, sub_unchecked, SubAssign, sub_assign);
        reg_type!(@ops $name, $ty, and_unchecked, BitAndAssign, bitand_assign);
        reg_type!(@ops $name, $ty, or_unchecked, BitOrAssign, bitor_assign);
        reg_type!(@ops $name, $ty, xor_unchecked, BitXorAssign, bitxor_assign);

        impl<const OFF: usize, C: ShiftCount> core::ops::ShlAssign<C> for $name<OFF, Plain> {
            /// One `shl [OFF], cl`; the count is masked as the CPU masks it (see
            /// [Shift counts](self#shift-counts)).
            #[inline(always)]
            fn shl_assign(&mut self, count: C) {
                // SAFETY: Plain views only cover registers declared clobbered.
                unsafe { self.shl_unchecked(count) }
            }
        }
        impl<const OFF: usize, C: ShiftCount> core::ops::ShrAssign<C> for $name<OFF, Plain> {
            /// One `shr [OFF], cl`; the count is masked as the CPU masks it (see
            /// [Shift counts](self#shift-counts)).
            #[inline(always)]
            fn shr_assign(&mut self, count: C) {
                // SAFETY: Plain views only cover registers declared clobbered.
                unsafe { self.shr_unchecked(count) }
            }
        }
    };
    (@rmw $name:ident, $ty:ty, $ptr:literal, $class:ident, $m:literal, $size:literal, $sfx:literal, $fn:ident, $op:literal, $expect:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// One instruction: `
        #[doc = $op]
        /// [OFF], r11` (or `r10` when the view covers r11, so the source never aliases the
        /// destination bytes). Flags change as the CPU's instruction changes them.
        ///
        /// # Safety
        /// As for a store: the covered registers must be writable at this point.
        ///
        /// ```
        /// of::map_registers().unwrap();
        #[doc = concat!("let v = of::", stringify!($name), "::<0x68>::new(); // r13")]
        /// v.store(12);
        /// // SAFETY: a Plain view: r13 is declared clobbered (the compound operator is the
        /// // safe spelling of the same instruction).
        #[doc = concat!("unsafe { v.", stringify!($fn), "(10) };")]
        #[doc = concat!("assert_eq!(v.load(), ", $expect, ");")]
        /// ```
        #[inline(always)]
        pub unsafe fn $fn(&self, value: $ty) {
            const { assert!(!touches_read_only(OFF, $size), "fs/gs base are read only") };
            let covers_r11 = const { OFF < 0x60 && OFF + $size > 0x58 };
            if covers_r11 {
                // SAFETY: forwarded to the caller; every register asm may name is declared
                // clobbered, and the source register (r10) is not one the view covers.
                unsafe {
                    core::arch::asm!(
                        concat!($op, " ", $ptr, " ptr [{off}], r10", $sfx),
                        off = const OFF,
                        inlateout("r10") value as u64 => _,
                        lateout("rax") _, lateout("rcx") _, lateout("rdx") _, lateout("rsi") _,
                        lateout("rdi") _, lateout("r8") _, lateout("r9") _, lateout("r11") _,
                        lateout("r12") _, lateout("r13") _, lateout("r14") _, lateout("r15") _,
                        options(nostack),
                    );
                }
            } else {
                // SAFETY: as above, with r11 as the source register.
                unsafe {
                    core::arch::asm!(
                        concat!($op, " ", $ptr, " ptr [{off}], r11", $sfx),
                        off = const OFF,
                        inlateout("r11") value as u64 => _,
                        lateout("rax") _, lateout("rcx") _, lateout("rdx") _, lateout("rsi") _,
                        lateout("rdi") _, lateout("r8") _, lateout("r9") _, lateout("r10") _,
                        lateout("r12") _, lateout("r13") _, lateout("r14") _, lateout("r15") _,
                        options(nostack),
                    );
                }
            }
        }
    };
    (@shift $name:ident, $ty:ty, $ptr:literal, $size:literal, $fn:ident, $op:literal, $start:literal, $expect:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// Views that cover rcx cannot be shifted by a run-time count (the count lives in cl):
        /// that is a compile error.
        ///
        /// # Safety
        /// As for a store: the covered registers must be writable at this point.
        ///
        /// ```
        /// of::map_registers().unwrap();
        #[doc = concat!("let v = of::", stringify!($name), "::<0x68>::new(); // r13")]
        #[doc = concat!("v.store(", $start, ");")]
        /// // SAFETY: a Plain view: r13 is declared clobbered.
        #[doc = concat!("unsafe { v.", stringify!($fn), "(3) };")]
        #[doc = concat!("assert_eq!(v.load(), ", $expect, ");")]
        /// ```
        #[inline(always)]
        pub unsafe fn $fn<C: ShiftCount>(&self, count: C) {
            const { assert!(!touches_read_only(OFF, $size), "fs/gs base are read only") };
            const { assert!(!(OFF < 0x10 && OFF + $size > 0x08), "this view covers rcx, which holds the shift count: shift by a run-time count is not one instruction") };
            // SAFETY: forwarded to the caller; every register asm may name is declared clobbered.
            unsafe {
                core::arch::asm!(
                    concat!($op, " ", $ptr, " ptr [{off}], cl"),
                    off = const OFF,
                    inlateout("rcx") u64::from(count.low_byte()) => _,
                    lateout("rax") _, lateout("rdx") _, lateout("rsi") _,
                    lateout("rdi") _, lateout("r8") _, lateout("r9") _, lateout("r10") _,
                    lateout("r11") _, lateout("r12") _, lateout("r13") _, lateout("r14") _,
                    lateout("r15") _,
                    options(nostack),
                );
            }
        }
    };
    (@ops $name:ident, $ty:ty, $fn:ident, $tr:ident, $m:ident) => {
        impl<const OFF: usize> core::ops::$tr<$ty> for $name<OFF, Plain> {
            /// One read-modify-write instruction on `[OFF]`.
            #[inline(always)]
            fn $m(&mut self, value: $ty) {
                // SAFETY: Plain views only cover registers declared clobbered.
                unsafe { self.$fn(value) }
            }
        }
    };
}

reg_type!(
    RegU64,
    u64,
    "qword",
    reg,
    "",
    8,
    "",
    "An 8-byte view of the register map at byte offset `OFF`."
);
reg_type!(
    RegU32,
    u32,
    "dword",
    reg,
    ":e",
    4,
    "d",
    "A 4-byte view of the register map at byte offset `OFF`."
);
reg_type!(
    RegU16,
    u16,
    "word",
    reg,
    ":x",
    2,
    "w",
    "A 2-byte view of the register map at byte offset `OFF`."
);
reg_type!(
    RegU8,
    u8,
    "byte",
    reg_byte,
    "",
    1,
    "b",
    "A 1-byte view of the register map at byte offset `OFF`."
);
