//! Diagnostics: every compile error the macro reports, each spanned at the user's tokens it is
//! about (`syn::Error::new_spanned`), with the fix it suggests; and the nearest-name search
//! behind "did you mean …?".
//!
//! The messages are the catalogue of `docs/rust-api.md` and the expected output of
//! `tests/ui/*.stderr`: change them only together.

use crate::map::{GPR64, all_names};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::{Expr, ExprField, Ident};

/// `r.rax` as written (for messages), without the spaces `quote` puts around the dot.
fn compact(t: &impl ToTokens) -> String {
    quote!(#t).to_string().replace(' ', "")
}

/// Optimal-string-alignment distance (a swap of two neighbours counts as one edit).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The register names closest to `name` (at most four, in map order), as "`a`, `b` or `c`".
fn nearest(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let names = all_names();
    let best = names.iter().map(|n| distance(&lower, n)).min().unwrap_or(0);
    let close: Vec<String> = names
        .iter()
        .filter(|n| distance(&lower, n) == best)
        .take(4)
        .map(|n| format!("`{n}`"))
        .collect();
    match close.as_slice() {
        [] => "`rax`".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// `binding.name` where `name` is not a field of `Registers` but within two edits of one (a
/// typo); `None` for names far from every register (the binding may be shadowed by something
/// else, and rustc reports a genuinely missing field itself).
pub(crate) fn unknown_register(name: &Ident) -> Option<syn::Error> {
    let s = name.to_string().to_ascii_lowercase();
    let closest = all_names().iter().map(|n| distance(&s, n)).min()?;
    (closest <= 2).then(|| {
        syn::Error::new_spanned(
            name,
            format!(
                "`{name}` is not a register of the map; did you mean {}?",
                nearest(&name.to_string())
            ),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The attribute and the item it is on.

/// `#[of::mapped(…)]`.
pub(crate) fn arguments(attr: TokenStream) -> syn::Error {
    syn::Error::new_spanned(attr, "#[of::mapped] takes no arguments")
}

/// The attribute on a closure.
pub(crate) fn closure(item: &TokenStream) -> syn::Error {
    syn::Error::new_spanned(
        item,
        "#[of::mapped] cannot be used on a closure: move the body into a `fn` taking \
         `r: &mut of::Registers` and put the attribute on that fn",
    )
}

/// The attribute on an item that is not a function.
pub(crate) fn not_a_function(item: &TokenStream) -> syn::Error {
    syn::Error::new_spanned(
        item,
        "#[of::mapped] applies to functions (`fn name(r: &mut of::Registers) { ... }`), \
         not to this item",
    )
}

/// The attribute on an `async fn` (spanned at `async`).
pub(crate) fn async_fn(asyncness: &syn::token::Async) -> syn::Error {
    syn::Error::new_spanned(
        asyncness,
        "#[of::mapped] cannot be used on an async fn: an await point between register \
         statements would let other tasks run on this thread's registers; use a plain `fn` \
         and call it from the async code",
    )
}

// ---------------------------------------------------------------------------------------------
// Register statements.

/// A write to fs/gs base.
pub(crate) fn read_only(f: &ExprField, name: &str) -> syn::Error {
    syn::Error::new_spanned(
        f,
        format!(
            "`{name}` is read only through the map: change it with arch_prctl(2); \
             reading it (`let v = {};`) is fine",
            compact(f)
        ),
    )
}

/// A write to rbx/rsp/rbp (or a narrower view), rip, rflags or mxcsr outside `unsafe`.
pub(crate) fn needs_unsafe(f: &ExprField, name: &str) -> syn::Error {
    let why = match name {
        "rip" => "a rip write is a jump: control never comes back to the next statement",
        "rflags" => "an rflags write can set DF, which compiled code assumes clear",
        "mxcsr" => "an mxcsr write changes rounding and exception masks under compiled code",
        _ => {
            "Rust's inline asm cannot declare rbx, rbp or rsp clobbered, so compiled \
             code would keep using the old value"
        }
    };
    syn::Error::new_spanned(
        f,
        format!(
            "writing `{name}` through the map needs `unsafe {{ … }}`: {why}; wrap \
             the statement in `unsafe {{ … }}` with a `// SAFETY:` comment saying \
             why the code that runs next expects the new value"
        ),
    )
}

/// `r.xmm1 += v;` (spanned at the whole statement expression `b`).
pub(crate) fn xmm_compound(b: &syn::ExprBinary, f: &ExprField, name: &str) -> syn::Error {
    syn::Error::new_spanned(
        b,
        format!(
            "`{name}` supports reads and `=` only (one `movdqu` each); \
             compute in a local and assign: `{} = v;`",
            compact(f)
        ),
    )
}

/// A literal shift count that is not one byte.
pub(crate) fn shift_count_too_large(count: &Expr) -> syn::Error {
    syn::Error::new_spanned(
        count,
        "a shift count is one byte (the CPU masks it to 5 bits, 6 for \
         64-bit views): use a count below 256",
    )
}

/// A run-time shift of a view that covers rcx (the count lives in cl).
pub(crate) fn run_time_shift_of_rcx(b: &syn::ExprBinary, f: &ExprField, name: &str) -> syn::Error {
    syn::Error::new_spanned(
        b,
        format!(
            "`{name}` covers rcx, and a run-time shift count must be in cl: \
             shift by a literal (`{} <<= 3;`) or shift a local and assign it",
            compact(f)
        ),
    )
}

/// `let v: T = r.reg;` with an integer `T` other than the view's type `view_ty`; suggests a
/// lossless `T::from` where it exists, `try_from` otherwise.
pub(crate) fn read_width_mismatch(
    declared_ty: &syn::Type,
    declared: &str,
    f: &ExprField,
    name: &str,
    size: u32,
    view_ty: &str,
) -> syn::Error {
    let widening = declared.starts_with('u')
        && declared != "usize"
        && declared[1..]
            .parse::<u32>()
            .is_ok_and(|bits| bits > 8 * size);
    let convert = if widening {
        format!("`{declared}::from({})`", compact(f))
    } else {
        format!("`{declared}::try_from({}).unwrap()`", compact(f))
    };
    syn::Error::new_spanned(
        declared_ty,
        format!(
            "`{name}` is {} byte{} wide, so reading it gives a `{view_ty}`, \
             not a `{declared}`: declare `{view_ty}`, or convert after the read: \
             {convert}",
            size,
            if size == 1 { "" } else { "s" },
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Fused blocks.

/// A right-hand side reading (at `field`) register `gpr`, which the statements just before
/// wrote through the map.
pub(crate) fn written_then_read(field: &Ident, name: &str, gpr: usize) -> syn::Error {
    syn::Error::new(
        field.span(),
        format!(
            "`{}` was written through the map by the register statements just \
             before; this expression is evaluated after their asm block, when \
             compiled code may already have reused {} — read it as a statement \
             first (`let v = r.{name};`, fused into the block) and use `v`",
            name, GPR64[gpr]
        ),
    )
}

/// A statement after a block that ends with a rip write.
pub(crate) fn after_rip_block(stmt: &syn::Stmt) -> syn::Error {
    syn::Error::new_spanned(
        stmt,
        "unreachable: the register block before this writes rip, so control never \
         comes back",
    )
}
/// A register statement after a rip write in the same block.
pub(crate) fn after_rip_statement(span: Span) -> syn::Error {
    syn::Error::new(
        span,
        "unreachable: the register statement before this writes rip, so control never comes back",
    )
}

/// A read in a block that ends with a rip write.
pub(crate) fn read_in_jumping_block(span: Span) -> syn::Error {
    syn::Error::new(
        span,
        "a block that ends by writing rip never returns, so a value read in it could not be used",
    )
}

/// A statement that reads a register the block before it wrote, where `#[of::mapped]` had to
/// end that block (the user sees no boundary there).
pub(crate) fn read_across_a_forced_split(span: Span) -> syn::Error {
    syn::Error::new(
        span,
        "the register statements before this need more than one asm block (more values than \
         operand registers, or a read next to a rip write), and this register was written in \
         the previous one: compiled code between the blocks may reuse it — read it before the \
         split, or use fewer values per group",
    )
}

/// More operands than registers to pin them to.
pub(crate) fn out_of_registers(span: Span) -> syn::Error {
    syn::Error::new(span, "more values than free operand registers in one block")
}

// ---------------------------------------------------------------------------------------------
// Register fields inside expressions.

/// `&r.rax` (spanned at the whole reference `r`; `field` is `r.rax`, `name` is `rax`).
pub(crate) fn reference(r: &syn::ExprReference, field: &Expr, name: &str) -> syn::Error {
    syn::Error::new_spanned(
        r,
        format!(
            "`{name}` is a register, not memory: it has no address to borrow; read it \
             into a local first (`let v = {};`) or use the view's methods \
             (`{}.load()`)",
            compact(field),
            compact(field)
        ),
    )
}

/// `(r.rax = v)` inside an expression.
pub(crate) fn assignment_in_expression(a: &syn::ExprAssign) -> syn::Error {
    syn::Error::new_spanned(
        a,
        "a register assignment must be a statement of its own (`r.rax = v;`) so \
         that it becomes one page-0 instruction",
    )
}

/// `r.rax *= k` (and `/=`, `%=`) anywhere, or another compound assignment to a register
/// inside an expression.
pub(crate) fn compound_in_expression(b: &syn::ExprBinary, no_memory_form: bool) -> syn::Error {
    let msg = if no_memory_form {
        "`*=`, `/=` and `%=` have no one-instruction memory form: compute in a local \
         (`let v = r.rax * k;`) and assign it (`r.rax = v;`)"
    } else {
        "a compound register assignment must be a statement of its own \
         (`r.rax += v;`) so that it becomes one page-0 instruction"
    };
    syn::Error::new_spanned(b, msg)
}
