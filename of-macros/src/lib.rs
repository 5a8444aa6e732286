//! Procedural macros for `of`: `#[of::mapped]`.
//!
//! Inside a function marked `#[of::mapped]`, statements on a `Registers` binding use plain
//! field syntax and become page-0 instructions:
//!
//! | statement | instruction |
//! |---|---|
//! | `r.rdi = e;` | `mov qword ptr [0x38], <reg holding e>` |
//! | `r.eax += e;` (`-= &= \|= ^=`) | `add dword ptr [0x0], <reg holding e>` … |
//! | `r.r8 <<= 3;` (`>>=`, integer literal below 256) | `shl qword ptr [0x40], 3` |
//! | `r.r8 <<= n;` (`>>=`, any other count) | `xchg rcx, <reg holding n>; shl qword ptr [0x40], cl; xchg rcx, <reg>` |
//! | `let x = r.rsp;` | `mov <reg>, qword ptr [0x20]` |
//! | `unsafe { r.rip = f as u64 }` | `mov qword ptr [0x80], <reg>` (a jump) |
//!
//! # Fusion
//! Consecutive register statements of one block (also those inside an `unsafe { … }` block that
//! holds nothing else) are emitted as ONE `asm!` block, in source order, one page-0 instruction
//! per statement, so no compiler-generated code runs between them. Right-hand sides are
//! evaluated before the block into operands pinned to explicit registers that the block does
//! not write through the map; every register the block writes through the map is declared
//! clobbered (`lateout("rax") _`). A block that ends with a rip write is `options(noreturn)`.
//!
//! A group is split (a new `asm!` block starts) where fusion would change the meaning:
//! before a statement whose right-hand side mentions the binding (it must see the effects of
//! the statements before it), when a read would share a block ending in a jump, and when the
//! 13 operand registers run out. A run-time shift count never splits a block: it waits in an
//! operand register and is swapped into rcx for its shift alone (`xchg`, which changes no
//! flag), so a block may write and read rcx and shift by several run-time counts.
//!
//! # Shift counts
//! A count may be of any primitive integer type (`u8` … `u128`, `i8` … `i128`, `usize`,
//! `isize`) or a reference to one, as for `<<=` on a `u64`. An integer literal below 256, of
//! any suffix, is the instruction's immediate; any other count is evaluated before the block
//! and the low byte of its two's-complement value (`n as u8`) is swapped into cl for the shift. Either way the CPU
//! masks the count to 6 bits for an 8-byte view and to 5 bits for a narrower one (Intel SDM
//! vol. 2B, SAL/SAR/SHL/SHR), so an 8-byte view is shifted by `n.rem_euclid(64)` and the others
//! by `n.rem_euclid(32)`, whatever the type and value of `n`: `-1` shifts by 63 (31), a `u128`
//! counts by its low bits, a byte shifted by 8 to 31 (a word by 16 to 31) loses every bit, and
//! nothing panics, in debug or release (Rust's `<<` panics in debug for a negative count or
//! one at least the bit width). The typed views' `<<=`/`>>=` do the same (`of::reg`, "Shift
//! counts"). A literal of 256 or more does not fit the immediate and is an error, as is a count
//! that is not an integer.
//!
//! ```
//! #[of::mapped]
//! fn shr(r: &mut of::Registers, x: u64, n: u8) -> u64 {
//!     r.r10 = x;
//!     r.r10 >>= n; // xchg rcx, <reg>; shr qword ptr [0x50], cl; xchg rcx, <reg>   (cl = n)
//!     let v = r.r10;
//!     v
//! }
//!
//! #[of::mapped]
//! fn shl_low_byte(r: &mut of::Registers, x: u64, n: i64) -> u64 {
//!     r.r10 = x;
//!     r.r10b <<= n; // shl byte ptr [0x50], cl, between the xchgs   (cl = n as u8, masked to 5 bits)
//!     let v = r.r10;
//!     v
//! }
//!
//! let mut r = of::map_registers().unwrap();
//! assert_eq!(shr(&mut r, 0xF00, 8), 0xF);
//! assert_eq!(shr(&mut r, 0xF00, 72), 0xF); // 72 mod 64 = 8
//! assert_eq!(shl_low_byte(&mut r, 0x1_81, -31), 0x1_02); // -31 mod 32 = 1
//! assert_eq!(shl_low_byte(&mut r, 0x1_81, 8), 0x1_00); // a byte shifted by 8: all bits out
//! ```
//!
//! ```compile_fail,E0277
//! #[of::mapped]
//! fn f(r: &mut of::Registers, x: f64) {
//!     r.r10 >>= x; // error: a shift count is a primitive integer (…), not `f64`
//! }
//! ```
//!
//! # Safety rules
//! Writes to rbx, rbp, rsp (and their narrower views), rip, rflags and mxcsr must be inside
//! `unsafe`: Rust's inline asm cannot declare rbx/rbp/rsp clobbered, a rip write is a jump, an
//! rflags write may set DF and an mxcsr write changes floating-point behaviour under compiled
//! code. fs/gs base are read only. Shifting a view that covers rcx by a run-time count is an
//! error (the count is in cl during the shift); a literal count is an immediate and works on
//! any view.
//!
//! ```
//! #[of::mapped]
//! fn stack_and_flags(r: &of::Registers) -> (u64, u64) {
//!     let sp = r.rsp; //    mov <reg>, qword ptr [0x20]   (reads need no `unsafe`)
//!     let fl = r.rflags; // mov <reg>, qword ptr [0x88]
//!     (sp, fl)
//! }
//! let r = of::map_registers().unwrap();
//! let (sp, fl) = stack_and_flags(&r);
//! let local = 0u8;
//! assert!(sp.abs_diff(&local as *const u8 as u64) < 1 << 16); // this thread's stack
//! assert_eq!(fl & 2, 2); // bit 1 of rflags always reads 1 (Intel SDM vol. 1, 3.4.3)
//! ```
//!
//! ```compile_fail
//! #[of::mapped]
//! fn f(r: &mut of::Registers) {
//!     r.rsp -= 8; // error: a write to rsp must be inside `unsafe`
//! }
//! ```
//!
//! # Which bindings
//! A binding is a parameter whose type names `Registers` (`r: of::Registers`,
//! `r: &mut Registers`), or a `let` whose type names `Registers` or whose initialiser calls
//! `map_registers`. Only `binding.field` is recognised (not `(*r).rax` or `self.regs.rax`).
//!
//! Other uses of a register field in expressions (`foo(r.rax)`, `r.rcx + 1`, arguments of
//! `println!`-like macros) become `r.rax.load()`: one instruction each, not fused. A method
//! call on a field is a call on the view (`r.rax.load()`, `r.rax.store(v)`); parenthesise the
//! field to call an integer method on its value: `(r.rsp).abs_diff(x)`. `xmm0` …
//! `xmm15` are not fused: `r.xmm1 = v;` becomes `r.xmm1.store(v);`. `&r.rax` is an error: a
//! register has no address. A field name within two edits of a register name (`r.rxa`) is
//! reported as a typo with the nearest names; other names are left alone (the binding may be
//! shadowed, e.g. by a closure parameter, and rustc reports a field that truly is missing).
//!
//! A register written through the map keeps its value only until the end of its `asm!` block
//! (the block declared it clobbered): read it back in the same block (`let v = r.r8;` right
//! after). Reading it in a Rust expression right after writing it is therefore an error.

#![warn(missing_docs)]

// The layout follows the stages of the expansion:
// - `expand`: the entry point's work: what the attribute is on, then the body's rewrite;
// - `parse`: the `Registers` bindings, and which statements are register statements;
// - `rewrite`: the walk over the body, statement by statement and expression by expression;
// - `group`: which consecutive register statements fuse into one `asm!` block;
// - `emit`: one group as `let`s, one `asm!` block and `let`s;
// - `diag`: every error message, with its suggestion;
// - `map`: the register map (names, offsets, widths, access classes, operand registers).
mod diag;
mod emit;
mod expand;
mod group;
mod map;
mod parse;
mod rewrite;

use proc_macro::TokenStream;

/// Lets a function use plain field syntax on a `Registers` binding; see the crate docs of
/// `of_macros` for the rules. Use it as `#[of::mapped]` (the `of` crate re-exports it).
///
/// ```
/// #[of::mapped]
/// fn demo(r: &mut of::Registers, x: u64) -> (u64, u16) {
///     r.r8 = x; //     mov qword ptr [0x40], <reg holding x>
///     r.r8 += 2; //    add qword ptr [0x40], 2 (through a register)
///     r.r8w ^= 1; //   xor word ptr [0x40], <reg>: the low 2 bytes only
///     let v = r.r8; // mov <reg>, qword ptr [0x40]  (all four in one asm! block)
///     let w = r.r8w;
///     (v, w)
/// }
/// let mut r = of::map_registers().unwrap();
/// let (v, w) = demo(&mut r, 40);
/// assert_eq!(v, (40 + 2) ^ 1);
/// assert_eq!(w, v as u16);
/// ```
///
/// Misuse is a compile error that points at the offending tokens, e.g. a width mismatch:
///
/// ```compile_fail,E0308
/// #[of::mapped]
/// fn f(r: &mut of::Registers) {
///     r.eax = 1u64; // eax is 4 bytes: use `r.rax` or a u32 value
/// }
/// ```
#[proc_macro_attribute]
pub fn mapped(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::mapped(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
