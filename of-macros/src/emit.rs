//! Emitting: one group of register statements becomes the `let`s that evaluate its right-hand
//! sides, one `asm!` block (one page-0 instruction per statement, in source order), and the
//! `let`s that bind the values it read.

use crate::group::Footprint;
use crate::map::{GPR64, ptr, reg_name, undeclarable};
use crate::parse::Access;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Pat};

/// The Rust type of a view of `size` bytes, spanned so that a type mismatch points at the
/// register field ("expected due to this").
fn ty(size: u32, span: Span) -> TokenStream {
    match size {
        8 => quote_spanned!(span=> u64),
        4 => quote_spanned!(span=> u32),
        2 => quote_spanned!(span=> u16),
        _ => quote_spanned!(span=> u8),
    }
}

/// `let v: u8 = <the byte of \`count\` that cl holds>;`, for a count of any primitive integer
/// type (or a reference to one), as `of::reg::ShiftCount` does for the typed views: the low 8
/// bits of the count's two's-complement value, which the CPU masks to 6 bits (8-byte operands)
/// or 5. The trait is declared in a block of its own, so the macro's output names nothing of
/// the `of` crate and the user's tokens (evaluated before, into `count`) cannot see it; an
/// error for a count of another type points at the count (`span`).
fn shift_count(v: &Ident, count: &Ident, span: Span) -> TokenStream {
    let call = quote_spanned!(span=> ShiftCount::low_byte(#count));
    quote! {
        let #v: u8 = {
            #[diagnostic::on_unimplemented(
                message = "a shift count is a primitive integer (u8 … u128, i8 … i128, usize, isize), not `{Self}`",
                label = "not an integer"
            )]
            trait ShiftCount: Copy {
                fn low_byte(self) -> u8;
            }
            impl ShiftCount for u8 { #[inline(always)] fn low_byte(self) -> u8 { self } }
            impl ShiftCount for u16 { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl ShiftCount for u32 { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl ShiftCount for u64 { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl ShiftCount for u128 { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl ShiftCount for usize { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl ShiftCount for i8 { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl ShiftCount for i16 { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl ShiftCount for i32 { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl ShiftCount for i64 { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl ShiftCount for i128 { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl ShiftCount for isize { #[inline(always)] fn low_byte(self) -> u8 { self as u8 } }
            impl<T: ShiftCount> ShiftCount for &T {
                #[inline(always)]
                fn low_byte(self) -> u8 { (*self).low_byte() }
            }
            #call
        };
    }
}

/// The `asm!` block (plus the `let`s before and after it) for `accesses`, which
/// [`crate::group::check`] accepted.
pub(crate) fn asm_block(accesses: &[Access]) -> TokenStream {
    let footprint = Footprint::of(accesses);
    let mut free = footprint.operand_registers();
    let Footprint {
        mut written,
        jumps,
        span,
        ..
    } = footprint;
    let mut pre = vec![];
    let mut post = vec![];
    let mut template = String::new();
    let mut operands = vec![];
    let mut named: Vec<usize> = vec![];
    let mut operand_register = || free.pop().expect("checked: enough operand registers");
    for (i, a) in accesses.iter().enumerate() {
        let v = format_ident!("__of_v{}", i);
        match a {
            Access::Rmw {
                view,
                op,
                value,
                imm: Some(n),
                ..
            } => {
                // A literal count: an immediate operand (the CPU masks it as it masks cl);
                // nothing to evaluate, but rustc still checks the literal's suffix and range.
                pre.push(quote_spanned!(value.span()=> let _ = #value;));
                template += &format!("{op} {} ptr [{:#x}], {n}\n", ptr(view.size), view.off);
            }
            Access::Write {
                view, value, span, ..
            }
            | Access::Rmw {
                view,
                value,
                imm: None,
                span,
                ..
            } => {
                // A store is `mov`; a read-modify-write its own operation.
                let op = match a {
                    Access::Rmw { op, .. } => *op,
                    _ => "mov",
                };
                if op == "shl" || op == "shr" {
                    // Spanned at the count, so that rustc's error for a count that is not an
                    // integer points at it.
                    let count = Ident::new(&format!("__of_c{i}"), value.span());
                    pre.push(quote_spanned!(value.span()=> let #count = #value;));
                    pre.push(shift_count(&v, &count, value.span()));
                    // The count waits in an operand register and is swapped into rcx for the
                    // shift alone (xchg changes no flag), so rcx keeps the value the block
                    // gives it through the map before and after, and each shift has its own
                    // count: no block has to split here (a split would lose what the block
                    // wrote before it).
                    let r = operand_register();
                    let rn = GPR64[r];
                    named.push(r);
                    operands.push(quote!(inout(#rn) #v as u64 => _));
                    template += &format!(
                        "xchg rcx, {rn}\n{op} {} ptr [{:#x}], cl\nxchg rcx, {rn}\n",
                        ptr(view.size),
                        view.off
                    );
                } else {
                    let t = ty(view.size, *span);
                    let r = operand_register();
                    pre.push(quote_spanned!(value.span()=> let #v: #t = #value;));
                    let rn = GPR64[r];
                    named.push(r);
                    operands.push(quote!(in(#rn) #v as u64));
                    template += &format!(
                        "{op} {} ptr [{:#x}], {}\n",
                        ptr(view.size),
                        view.off,
                        reg_name(r, view.size)
                    );
                }
            }
            Access::Read {
                view, pat, span, ..
            } => {
                let t = ty(view.size, *span);
                let r = operand_register();
                let rn = GPR64[r];
                let raw = format_ident!("__of_r{}", i);
                named.push(r);
                pre.push(quote!(let #raw: u64;));
                operands.push(quote!(lateout(#rn) #raw));
                template += &format!(
                    "mov {}, {} ptr [{:#x}]\n",
                    reg_name(r, view.size),
                    ptr(view.size),
                    view.off
                );
                let raw_at = syn::Ident::new(&raw.to_string(), *span);
                let value = quote_spanned!(*span=> #raw_at as #t);
                post.push(match pat {
                    // `let x: T = r.eax;`: the user's type meets the view's.
                    Pat::Type(_) => quote_spanned!(*span=> let #pat = #value;),
                    _ => quote_spanned!(*span=> let #pat: #t = #value;),
                });
            }
        }
    }
    // Registers written through the map that no operand names: clobbered. rbx/rbp/rsp cannot
    // be declared (their writes were made inside `unsafe` by the user); a block that jumps
    // (noreturn) has no outputs.
    written.sort_unstable();
    written.dedup();
    if !jumps {
        for n in written {
            if !undeclarable(n) && !named.contains(&n) {
                let rn = GPR64[n];
                operands.push(quote!(lateout(#rn) _));
            }
        }
    }
    let lit = syn::LitStr::new(&template, span);
    let options = if jumps {
        quote!(options(noreturn))
    } else {
        quote!()
    };
    let asm = quote_spanned!(span=> ::core::arch::asm!(#lit, #(#operands,)* #options));
    let mut users: Vec<&Ident> = accesses.iter().map(Access::binding).collect();
    users.sort();
    users.dedup();
    quote! {
        #(#pre)*
        #(let _ = &#users;)*
        // SAFETY: `#[of::mapped]` register statements: each is one page-0 instruction that of's
        // handler emulates; every register the block writes through the map is declared
        // clobbered (rbx/rbp/rsp/rip/rflags/mxcsr writes were written inside `unsafe`).
        #[allow(unused_unsafe)]
        unsafe { #asm; }
        #(#post)*
    }
}
