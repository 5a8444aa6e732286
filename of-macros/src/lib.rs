//! Procedural macros for `of`: `#[of::mapped]`.
//!
//! Inside a function marked `#[of::mapped]`, statements on a `Registers` binding use plain
//! field syntax and become page-0 instructions:
//!
//! | statement | instruction |
//! |---|---|
//! | `r.rdi = e;` | `mov qword ptr [0x38], <reg holding e>` |
//! | `r.eax += e;` (`-= &= \|= ^=`) | `add dword ptr [0x0], <reg holding e>` … |
//! | `r.r8 <<= 3;` (`>>=`, literal count) | `shl qword ptr [0x40], 3` |
//! | `r.r8 <<= n;` (`>>=`, run-time count) | `shl qword ptr [0x40], cl` |
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
//! the statements before it), when a run-time shift count (in cl) meets a write to rcx or a
//! second run-time count, when a read would share a block ending in a jump, and when the 13
//! operand registers run out.
//!
//! # Safety rules
//! Writes to rbx, rbp, rsp (and their narrower views), rip, rflags and mxcsr must be inside
//! `unsafe`: Rust's inline asm cannot declare rbx/rbp/rsp clobbered, a rip write is a jump, an
//! rflags write may set DF and an mxcsr write changes floating-point behaviour under compiled
//! code. fs/gs base are read only. Shifting a view that covers rcx by a run-time count is an
//! error (the count lives in cl); a literal count is an immediate and works on any view.
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

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{
    BinOp, Block, Expr, ExprField, FnArg, Ident, ItemFn, Lit, Local, Member, Pat, Stmt, Token,
};

/// Who may write a view.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Only registers inline asm can declare clobbered: writes are safe.
    Plain,
    /// rbx/rsp/rbp bytes, rip, rflags, mxcsr: writes need `unsafe`.
    Special,
    /// fs/gs base: no writes.
    ReadOnly,
}

/// A register view the macro fuses: map offset, size in bytes, access class.
#[derive(Clone, Copy)]
struct View {
    off: u32,
    size: u32,
    class: Class,
}

const GPR64: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
const GPR32: [&str; 16] = [
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "r8d", "r9d", "r10d", "r11d", "r12d",
    "r13d", "r14d", "r15d",
];
const GPR16: [&str; 16] = [
    "ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8w", "r9w", "r10w", "r11w", "r12w", "r13w",
    "r14w", "r15w",
];
const GPR8: [&str; 16] = [
    "al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil", "r8b", "r9b", "r10b", "r11b", "r12b",
    "r13b", "r14b", "r15b",
];
const XMM: [&str; 16] = [
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
    "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
];

/// Every field of `Registers`.
fn all_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = Vec::new();
    for t in [GPR64, GPR32, GPR16, GPR8, XMM] {
        v.extend(t);
    }
    v.extend([
        "ah", "ch", "dh", "bh", "rip", "rflags", "mxcsr", "fs_base", "gs_base",
    ]);
    v
}

/// The fused view called `name`, if any (xmm fields are known but not fused).
fn view(name: &str) -> Option<View> {
    let class = |i: usize| {
        if matches!(i, 3..=5) {
            Class::Special
        } else {
            Class::Plain
        }
    };
    for (table, size) in [(GPR64, 8), (GPR32, 4), (GPR16, 2), (GPR8, 1)] {
        if let Some(i) = table.iter().position(|n| *n == name) {
            return Some(View {
                off: 8 * i as u32,
                size,
                class: class(i),
            });
        }
    }
    let (off, size, class) = match name {
        "ah" => (0x01, 1, Class::Plain),
        "ch" => (0x09, 1, Class::Plain),
        "dh" => (0x11, 1, Class::Plain),
        "bh" => (0x19, 1, Class::Special),
        "rip" => (0x80, 8, Class::Special),
        "rflags" => (0x88, 8, Class::Special),
        "fs_base" => (0x90, 8, Class::ReadOnly),
        "gs_base" => (0x98, 8, Class::ReadOnly),
        "mxcsr" => (0x200, 4, Class::Special),
        _ => return None,
    };
    Some(View { off, size, class })
}

fn is_xmm(name: &str) -> bool {
    XMM.contains(&name)
}

/// The general-purpose registers (encoding numbers) whose bytes `v` covers.
fn covered(v: View) -> Vec<usize> {
    if v.off >= 0x80 {
        return vec![];
    }
    (v.off / 8..=(v.off + v.size - 1) / 8)
        .map(|n| n as usize)
        .collect()
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

/// Operand registers the macro may pin values to, in preference order (encoding numbers):
/// r11 and r10 (no function arguments), the other caller-saved registers, then the
/// callee-saved r12–r15 (using them costs a push/pop in the function), rcx last (shift counts).
const POOL: [usize; 13] = [11, 10, 9, 8, 6, 7, 2, 0, 12, 13, 14, 15, 1];

fn reg_name(n: usize, size: u32) -> &'static str {
    match size {
        8 => GPR64[n],
        4 => GPR32[n],
        2 => GPR16[n],
        _ => GPR8[n],
    }
}

fn ptr(size: u32) -> &'static str {
    match size {
        8 => "qword",
        4 => "dword",
        2 => "word",
        _ => "byte",
    }
}

/// The Rust type of a view of `size` bytes, spanned so that a type mismatch points at the
/// register field ("expected due to this").
fn ty(size: u32, span: Span) -> TokenStream2 {
    match size {
        8 => quote_spanned!(span=> u64),
        4 => quote_spanned!(span=> u32),
        2 => quote_spanned!(span=> u16),
        _ => quote_spanned!(span=> u8),
    }
}

/// One register statement.
#[derive(Clone)]
enum Access {
    /// `b.reg = value;`
    Write {
        binding: Ident,
        view: View,
        value: Expr,
        span: Span,
    },
    /// `b.reg op= value;`; `imm` is a literal shift count.
    Rmw {
        binding: Ident,
        view: View,
        op: &'static str,
        value: Expr,
        imm: Option<u8>,
        span: Span,
    },
    /// `let pat = b.reg;`
    Read {
        binding: Ident,
        view: View,
        pat: Pat,
        span: Span,
    },
}

impl Access {
    fn view(&self) -> View {
        match self {
            Access::Write { view, .. } | Access::Rmw { view, .. } | Access::Read { view, .. } => {
                *view
            }
        }
    }
    fn span(&self) -> Span {
        match self {
            Access::Write { span, .. } | Access::Rmw { span, .. } | Access::Read { span, .. } => {
                *span
            }
        }
    }
    fn binding(&self) -> &Ident {
        match self {
            Access::Write { binding, .. }
            | Access::Rmw { binding, .. }
            | Access::Read { binding, .. } => binding,
        }
    }
    fn writes(&self) -> bool {
        !matches!(self, Access::Read { .. })
    }
    fn jumps(&self) -> bool {
        matches!(self, Access::Write { view, .. } if view.off == 0x80)
    }
    fn runtime_shift(&self) -> bool {
        matches!(
            self,
            Access::Rmw {
                op: "shl" | "shr",
                imm: None,
                ..
            }
        )
    }
}

/// The recognised `Registers` bindings of the function.
struct Ctx {
    bindings: Vec<Ident>,
}

/// What a statement's left-hand side or initialiser names.
enum Target<'a> {
    /// A fused register view.
    View(&'a ExprField, Ident, String, View),
    /// An xmm field (`load`/`store` only).
    Xmm(&'a ExprField, String),
}

impl Ctx {
    /// `binding.field` with a recognised binding: the field (named member) and the binding.
    fn binding_field<'a>(&self, e: &'a Expr) -> Option<(&'a ExprField, Ident, &'a Ident)> {
        let Expr::Field(f) = e else { return None };
        let Expr::Path(p) = &*f.base else { return None };
        let id = p.path.get_ident()?;
        if !self.bindings.iter().any(|b| b == id) {
            return None;
        }
        let Member::Named(name) = &f.member else {
            return None;
        };
        Some((f, id.clone(), name))
    }

    /// An error for `binding.name` when `name` is not a field of `Registers` but close to one
    /// (a typo); `None` for names far from every register (the binding may be shadowed by
    /// something else, and rustc reports a genuinely missing field itself).
    fn unknown(name: &Ident) -> Option<syn::Error> {
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

    /// Whether `e` is `binding.field` for a field of `Registers`.
    fn is_register_field(&self, e: &Expr) -> bool {
        self.binding_field(e).is_some_and(|(_, _, name)| {
            let s = name.to_string();
            view(&s).is_some() || is_xmm(&s)
        })
    }

    /// Classifies `e` as a register target; `Ok(None)` if it is not `binding.field`.
    fn target<'a>(&self, e: &'a Expr) -> syn::Result<Option<Target<'a>>> {
        let Some((f, binding, name)) = self.binding_field(e) else {
            return Ok(None);
        };
        let s = name.to_string();
        if let Some(v) = view(&s) {
            return Ok(Some(Target::View(f, binding, s, v)));
        }
        if is_xmm(&s) {
            return Ok(Some(Target::Xmm(f, s)));
        }
        match Self::unknown(name) {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Checks that the write to `name` is allowed here.
    fn check_write(f: &ExprField, name: &str, v: View, in_unsafe: bool) -> syn::Result<()> {
        match v.class {
            Class::ReadOnly => Err(syn::Error::new_spanned(
                f,
                format!(
                    "`{name}` is read only through the map: change it with arch_prctl(2); \
                     reading it (`let v = {};`) is fine",
                    quote_compact_field(f)
                ),
            )),
            Class::Special if !in_unsafe => {
                let why = match name {
                    "rip" => {
                        "a rip write is a jump: control never comes back to the next statement"
                    }
                    "rflags" => "an rflags write can set DF, which compiled code assumes clear",
                    "mxcsr" => {
                        "an mxcsr write changes rounding and exception masks under compiled code"
                    }
                    _ => {
                        "Rust's inline asm cannot declare rbx, rbp or rsp clobbered, so compiled \
                         code would keep using the old value"
                    }
                };
                Err(syn::Error::new_spanned(
                    f,
                    format!(
                        "writing `{name}` through the map needs `unsafe {{ … }}`: {why}; wrap \
                         the statement in `unsafe {{ … }}` with a `// SAFETY:` comment saying \
                         why the code that runs next expects the new value"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Classifies one statement; `Ok(None)` if it is not a fused register statement.
    fn access(&self, stmt: &Stmt, in_unsafe: bool) -> syn::Result<Option<Access>> {
        match stmt {
            Stmt::Expr(Expr::Assign(a), _) => {
                let Some(Target::View(f, binding, name, v)) = self.target(&a.left)? else {
                    return Ok(None);
                };
                Self::check_write(f, &name, v, in_unsafe)?;
                Ok(Some(Access::Write {
                    binding,
                    view: v,
                    value: (*a.right).clone(),
                    span: f.member.span(),
                }))
            }
            Stmt::Expr(Expr::Binary(b), _) => {
                let op = match b.op {
                    BinOp::AddAssign(_) => "add",
                    BinOp::SubAssign(_) => "sub",
                    BinOp::BitAndAssign(_) => "and",
                    BinOp::BitOrAssign(_) => "or",
                    BinOp::BitXorAssign(_) => "xor",
                    BinOp::ShlAssign(_) => "shl",
                    BinOp::ShrAssign(_) => "shr",
                    _ => return Ok(None),
                };
                let f = match self.target(&b.left)? {
                    None => return Ok(None),
                    Some(Target::Xmm(f, name)) => {
                        return Err(syn::Error::new_spanned(
                            b,
                            format!(
                                "`{name}` supports reads and `=` only (one `movdqu` each); \
                                 compute in a local and assign: `{} = v;`",
                                quote_compact_field(f)
                            ),
                        ));
                    }
                    Some(Target::View(f, binding, name, v)) => (f, binding, name, v),
                };
                let (f, binding, name, v) = f;
                Self::check_write(f, &name, v, in_unsafe)?;
                let mut imm = None;
                if op == "shl" || op == "shr" {
                    if let Expr::Lit(l) = &*b.right
                        && let Lit::Int(i) = &l.lit
                    {
                        let n: u64 = i.base10_parse()?;
                        if n > 255 {
                            return Err(syn::Error::new_spanned(
                                &b.right,
                                "a shift count is one byte (the CPU masks it to 5 bits, 6 for \
                                 64-bit views): use a count below 256",
                            ));
                        }
                        imm = Some(n as u8);
                    } else if covered(v).contains(&1) {
                        return Err(syn::Error::new_spanned(
                            b,
                            format!(
                                "`{name}` covers rcx, and a run-time shift count must be in cl: \
                                 shift by a literal (`{} <<= 3;`) or shift a local and assign it",
                                quote_compact_field(f)
                            ),
                        ));
                    }
                }
                Ok(Some(Access::Rmw {
                    binding,
                    view: v,
                    op,
                    value: (*b.right).clone(),
                    imm,
                    span: f.member.span(),
                }))
            }
            Stmt::Local(Local {
                pat,
                init: Some(init),
                ..
            }) if init.diverge.is_none() => {
                let Some(Target::View(f, binding, name, v)) = self.target(&init.expr)? else {
                    return Ok(None);
                };
                if let Pat::Type(pt) = pat
                    && let syn::Type::Path(tp) = &*pt.ty
                    && let Some(declared) = tp.path.get_ident()
                {
                    let view_ty = ty(v.size, Span::call_site()).to_string();
                    let integer = [
                        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64",
                        "i128", "isize",
                    ];
                    let d = declared.to_string();
                    if integer.contains(&d.as_str()) && *declared != view_ty {
                        let widening = d.starts_with('u')
                            && d != "usize"
                            && d[1..].parse::<u32>().is_ok_and(|bits| bits > 8 * v.size);
                        let convert = if widening {
                            format!("`{d}::from({})`", quote_compact_field(f))
                        } else {
                            format!("`{d}::try_from({}).unwrap()`", quote_compact_field(f))
                        };
                        return Err(syn::Error::new_spanned(
                            &pt.ty,
                            format!(
                                "`{name}` is {} byte{} wide, so reading it gives a `{view_ty}`, \
                                 not a `{d}`: declare `{view_ty}`, or convert after the read: \
                                 {convert}",
                                v.size,
                                if v.size == 1 { "" } else { "s" },
                            ),
                        ));
                    }
                }
                Ok(Some(Access::Read {
                    binding,
                    view: v,
                    pat: pat.clone(),
                    span: f.member.span(),
                }))
            }
            _ => Ok(None),
        }
    }

    /// Whether `e` mentions a binding at all (macro arguments included).
    fn mentions_binding(&self, e: &Expr) -> bool {
        scan_tokens(&quote!(#e), &self.bindings).mentions_binding
    }
}

/// What an expression's tokens (macro arguments included) mention.
struct Scan {
    /// Every identifier.
    idents: Vec<Ident>,
    /// `binding.field` occurrences: the field identifier and its name.
    fields: Vec<(Ident, String)>,
    /// Whether a binding appears at all.
    mentions_binding: bool,
}

fn scan_tokens(ts: &TokenStream2, bindings: &[Ident]) -> Scan {
    use proc_macro2::TokenTree;
    let mut scan = Scan {
        idents: vec![],
        fields: vec![],
        mentions_binding: false,
    };
    let mut stack = vec![ts.clone()];
    while let Some(ts) = stack.pop() {
        let tts: Vec<TokenTree> = ts.into_iter().collect();
        for (i, tt) in tts.iter().enumerate() {
            match tt {
                TokenTree::Ident(id) => {
                    scan.idents.push(id.clone());
                    if bindings.contains(id) {
                        scan.mentions_binding = true;
                        if let (Some(TokenTree::Punct(p)), Some(TokenTree::Ident(field))) =
                            (tts.get(i + 1), tts.get(i + 2))
                            && p.as_char() == '.'
                        {
                            scan.fields.push((field.clone(), field.to_string()));
                        }
                    }
                }
                TokenTree::Group(g) => stack.push(g.stream()),
                _ => {}
            }
        }
    }
    scan
}

/// The identifiers a pattern binds.
fn pat_idents(p: &Pat) -> Vec<Ident> {
    struct Ids(Vec<Ident>);
    impl<'ast> Visit<'ast> for Ids {
        fn visit_pat_ident(&mut self, i: &'ast syn::PatIdent) {
            self.0.push(i.ident.clone());
            syn::visit::visit_pat_ident(self, i);
        }
    }
    let mut ids = Ids(vec![]);
    ids.visit_pat(p);
    ids.0
}

/// The `asm!` block (plus the `let`s before and after it) for one group, or why the group
/// cannot be one block.
fn plan(accesses: &[Access]) -> syn::Result<TokenStream2> {
    let span = accesses.first().map_or(Span::call_site(), Access::span);
    let mut written: Vec<usize> = vec![];
    let mut touched: Vec<usize> = vec![];
    let mut jumps = false;
    let mut shifts = 0;
    for a in accesses {
        touched.extend(covered(a.view()));
        if a.writes() {
            written.extend(covered(a.view()));
        }
        jumps |= a.jumps();
        shifts += usize::from(a.runtime_shift());
    }
    if shifts > 1 {
        return Err(syn::Error::new(
            span,
            "one run-time shift count per block (cl holds it)",
        ));
    }
    if shifts == 1 && written.contains(&1) {
        return Err(syn::Error::new(
            span,
            "a block that shifts by a run-time count (in cl) cannot also write rcx through the map",
        ));
    }
    if jumps && accesses.iter().any(|a| !a.writes()) {
        return Err(syn::Error::new(
            span,
            "a block that ends by writing rip never returns, so a value read in it could not be used",
        ));
    }
    if let Some(i) = accesses.iter().position(Access::jumps)
        && i + 1 != accesses.len()
    {
        return Err(syn::Error::new(
            accesses[i + 1].span(),
            "unreachable: the register statement before this writes rip, so control never comes back",
        ));
    }
    // Operand registers: never one the block writes through the map (its value would change
    // under the instructions that follow), never rcx when cl holds a count; registers the block
    // only reads through the map come last.
    let mut free: Vec<usize> = POOL
        .iter()
        .copied()
        .filter(|n| !(written.contains(n) || (shifts == 1 && *n == 1)))
        .collect();
    free.sort_by_key(|n| touched.contains(n));
    free.reverse(); // pop() takes the preferred register
    let mut pre = vec![];
    let mut post = vec![];
    let mut template = String::new();
    let mut operands = vec![];
    let mut named: Vec<usize> = vec![];
    let out_of_registers =
        || syn::Error::new(span, "more values than free operand registers in one block");
    for (i, a) in accesses.iter().enumerate() {
        let v = format_ident!("__of_v{}", i);
        match a {
            Access::Write {
                view, value, span, ..
            } => {
                let t = ty(view.size, *span);
                let r = free.pop().ok_or_else(out_of_registers)?;
                pre.push(quote_spanned!(value.span()=> let #v: #t = #value;));
                let rn = GPR64[r];
                named.push(r);
                operands.push(quote!(in(#rn) #v as u64));
                template += &format!(
                    "mov {} ptr [{:#x}], {}\n",
                    ptr(view.size),
                    view.off,
                    reg_name(r, view.size)
                );
            }
            Access::Rmw {
                view,
                op,
                value,
                imm: Some(n),
                ..
            } => {
                // A literal count: an immediate operand; nothing to evaluate (the literal is
                // still type-checked as a count).
                pre.push(quote_spanned!(value.span()=> let _: u32 = #value;));
                template += &format!("{op} {} ptr [{:#x}], {n}\n", ptr(view.size), view.off);
            }
            Access::Rmw {
                view,
                op,
                value,
                imm: None,
                span,
                ..
            } => {
                if *op == "shl" || *op == "shr" {
                    pre.push(quote_spanned!(value.span()=> let #v: u32 = #value;));
                    named.push(1);
                    operands.push(quote!(in("rcx") #v as u64));
                    template += &format!("{op} {} ptr [{:#x}], cl\n", ptr(view.size), view.off);
                } else {
                    let t = ty(view.size, *span);
                    let r = free.pop().ok_or_else(out_of_registers)?;
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
                let r = free.pop().ok_or_else(out_of_registers)?;
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
            if !matches!(n, 3..=5) && !named.contains(&n) {
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
    Ok(quote! {
        #(#pre)*
        #(let _ = &#users;)*
        // SAFETY: `#[of::mapped]` register statements: each is one page-0 instruction that of's
        // handler emulates; every register the block writes through the map is declared
        // clobbered (rbx/rbp/rsp/rip/rflags/mxcsr writes were written inside `unsafe`).
        #[allow(unused_unsafe)]
        unsafe { #asm; }
        #(#post)*
    })
}

/// Rewrites a function body: fuses register statements and turns other register reads into
/// `.load()`.
struct Rewriter<'a> {
    ctx: &'a Ctx,
    in_unsafe: bool,
    errors: Option<syn::Error>,
}

impl Rewriter<'_> {
    fn error(&mut self, e: syn::Error) {
        match &mut self.errors {
            Some(x) => x.combine(e),
            None => self.errors = Some(e),
        }
    }

    fn flush(group: &mut Vec<Access>, out: &mut Vec<Stmt>) -> syn::Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        let ts = plan(group)?;
        group.clear();
        let b: Block = syn::parse2(quote!({ #ts }))?;
        out.extend(b.stmts);
        Ok(())
    }

    /// Adds `a` to the group, starting a new block first if it cannot join.
    fn push(
        &mut self,
        group: &mut Vec<Access>,
        out: &mut Vec<Stmt>,
        mut a: Access,
    ) -> syn::Result<()> {
        if let Access::Write { value, .. } | Access::Rmw { value, .. } = &mut a {
            let scan = scan_tokens(&quote!(#value), &self.ctx.bindings);
            // Reading, in a Rust expression, a register this group writes: the expression runs
            // after the group's asm block, when compiled code may already have reused it.
            let written: Vec<usize> = group
                .iter()
                .filter(|g| g.writes())
                .flat_map(|g| covered(g.view()))
                .collect();
            for (field, name) in &scan.fields {
                if let Some(v) = view(name)
                    && let Some(n) = covered(v).into_iter().find(|n| written.contains(n))
                {
                    return Err(syn::Error::new(
                        field.span(),
                        format!(
                            "`{}` was written through the map by the register statements just \
                             before; this expression is evaluated after their asm block, when \
                             compiled code may already have reused {} — read it as a statement \
                             first (`let v = r.{name};`, fused into the block) and use `v`",
                            name, GPR64[n]
                        ),
                    ));
                }
            }
            // A right-hand side that reads registers, or uses a value read by this group, is
            // evaluated after the statements before it: a new block starts.
            let bound = group.iter().flat_map(|g| match g {
                Access::Read { pat, .. } => pat_idents(pat),
                _ => vec![],
            });
            let uses_read = bound.into_iter().any(|i| scan.idents.contains(&i));
            if !scan.fields.is_empty() || scan.mentions_binding || uses_read {
                Self::flush(group, out)?;
            }
            self.visit_expr_mut(value);
        }
        group.push(a);
        if plan(group).is_err() {
            let a = group.pop().expect("just pushed");
            Self::flush(group, out)?;
            group.push(a);
            plan(group)?;
        }
        Ok(())
    }

    fn rewrite_stmts(&mut self, stmts: Vec<Stmt>) -> syn::Result<Vec<Stmt>> {
        let mut out: Vec<Stmt> = vec![];
        let mut group: Vec<Access> = vec![];
        let mut ended = false;
        for mut stmt in stmts {
            if ended && !matches!(stmt, Stmt::Item(_)) {
                return Err(syn::Error::new_spanned(
                    &stmt,
                    "unreachable: the register block before this writes rip, so control never \
                     comes back",
                ));
            }
            // `unsafe { register statements only }` joins the current group.
            if let Stmt::Expr(Expr::Unsafe(u), _) = &stmt
                && !u.block.stmts.is_empty()
                && u.block
                    .stmts
                    .iter()
                    .all(|s| self.ctx.access(s, true).map_or(true, |a| a.is_some()))
            {
                for s in &u.block.stmts {
                    let a = self.ctx.access(s, true)?.expect("checked above");
                    ended |= a.jumps();
                    self.push(&mut group, &mut out, a)?;
                }
                continue;
            }
            if let Some(a) = self.ctx.access(&stmt, self.in_unsafe)? {
                ended |= a.jumps();
                self.push(&mut group, &mut out, a)?;
                continue;
            }
            Self::flush(&mut group, &mut out)?;
            // `r.xmm1 = v;` is a `store`.
            if let Stmt::Expr(Expr::Assign(a), semi) = &mut stmt
                && let Some(Target::Xmm(f, _)) = self.ctx.target(&a.left)?
            {
                let f = f.clone();
                self.visit_expr_mut(&mut a.right);
                let right = &a.right;
                let e: Expr = syn::parse_quote_spanned!(f.span()=> #f.store(#right));
                stmt = Stmt::Expr(e, *semi);
                out.push(stmt);
                continue;
            }
            self.visit_stmt_mut(&mut stmt);
            out.push(stmt);
        }
        Self::flush(&mut group, &mut out)?;
        Ok(out)
    }
}

impl VisitMut for Rewriter<'_> {
    fn visit_block_mut(&mut self, b: &mut Block) {
        let stmts = std::mem::take(&mut b.stmts);
        match self.rewrite_stmts(stmts.clone()) {
            Ok(s) => b.stmts = s,
            Err(e) => {
                b.stmts = stmts;
                self.error(e);
            }
        }
    }

    fn visit_expr_unsafe_mut(&mut self, u: &mut syn::ExprUnsafe) {
        let old = std::mem::replace(&mut self.in_unsafe, true);
        syn::visit_mut::visit_expr_unsafe_mut(self, u);
        self.in_unsafe = old;
    }

    // Nested items are separate functions: not rewritten.
    fn visit_item_mut(&mut self, _: &mut syn::Item) {}

    fn visit_macro_mut(&mut self, m: &mut syn::Macro) {
        // `println!("{}", r.rax)` and the like: comma-separated expressions.
        let parser = Punctuated::<Expr, Token![,]>::parse_terminated;
        if let Ok(mut args) = m.parse_body_with(parser)
            && args.iter().any(|a| self.ctx.mentions_binding(a))
        {
            for a in args.iter_mut() {
                self.visit_expr_mut(a);
            }
            m.tokens = quote!(#args);
        }
    }

    fn visit_expr_mut(&mut self, e: &mut Expr) {
        match e {
            Expr::Field(_) => match self.ctx.target(e) {
                Ok(Some(Target::View(f, ..) | Target::Xmm(f, _))) => {
                    let f = f.clone();
                    *e = syn::parse_quote_spanned!(f.span()=> #f.load());
                }
                Ok(None) => syn::visit_mut::visit_expr_mut(self, e),
                Err(err) => self.error(err),
            },
            Expr::MethodCall(m) => {
                // `r.rax.load()`: the receiver is the view itself.
                if let Some((_, _, name)) = self.ctx.binding_field(&m.receiver) {
                    let s = name.to_string();
                    if view(&s).is_none()
                        && !is_xmm(&s)
                        && let Some(err) = Ctx::unknown(name)
                    {
                        self.error(err);
                    }
                    for a in m.args.iter_mut() {
                        self.visit_expr_mut(a);
                    }
                } else {
                    syn::visit_mut::visit_expr_mut(self, e);
                }
            }
            Expr::Reference(r) if self.ctx.is_register_field(&r.expr) => {
                let s = self.ctx.binding_field(&r.expr).map(|f| f.2.to_string());
                self.error(syn::Error::new_spanned(
                    &*r,
                    format!(
                        "`{}` is a register, not memory: it has no address to borrow; read it \
                         into a local first (`let v = {};`) or use the view's methods \
                         (`{}.load()`)",
                        s.unwrap_or_default(),
                        quote_compact(&r.expr),
                        quote_compact(&r.expr)
                    ),
                ));
            }
            Expr::Assign(a) if self.ctx.is_register_field(&a.left) => {
                self.error(syn::Error::new_spanned(
                    &*a,
                    "a register assignment must be a statement of its own (`r.rax = v;`) so \
                     that it becomes one page-0 instruction",
                ));
            }
            Expr::Binary(b)
                if self.ctx.is_register_field(&b.left)
                    && matches!(
                        b.op,
                        BinOp::AddAssign(_)
                            | BinOp::SubAssign(_)
                            | BinOp::MulAssign(_)
                            | BinOp::DivAssign(_)
                            | BinOp::RemAssign(_)
                            | BinOp::BitAndAssign(_)
                            | BinOp::BitOrAssign(_)
                            | BinOp::BitXorAssign(_)
                            | BinOp::ShlAssign(_)
                            | BinOp::ShrAssign(_)
                    ) =>
            {
                let msg = if matches!(
                    b.op,
                    BinOp::MulAssign(_) | BinOp::DivAssign(_) | BinOp::RemAssign(_)
                ) {
                    "`*=`, `/=` and `%=` have no one-instruction memory form: compute in a local \
                     (`let v = r.rax * k;`) and assign it (`r.rax = v;`)"
                } else {
                    "a compound register assignment must be a statement of its own \
                     (`r.rax += v;`) so that it becomes one page-0 instruction"
                };
                self.error(syn::Error::new_spanned(&*b, msg));
            }
            _ => syn::visit_mut::visit_expr_mut(self, e),
        }
    }
}

/// `r.rax` as written (for messages), without the spaces `quote` puts around the dot.
fn quote_compact(e: &Expr) -> String {
    quote!(#e).to_string().replace(' ', "")
}

fn quote_compact_field(f: &ExprField) -> String {
    quote!(#f).to_string().replace(' ', "")
}

/// The bindings of the function: parameters and `let`s of type `Registers`, and `let`s
/// initialised by `map_registers`.
fn bindings(f: &ItemFn) -> Vec<Ident> {
    let mut out = vec![];
    let names_registers = |t: &syn::Type| quote!(#t).to_string().contains("Registers");
    for input in &f.sig.inputs {
        if let FnArg::Typed(p) = input
            && names_registers(&p.ty)
            && let Pat::Ident(id) = &*p.pat
        {
            out.push(id.ident.clone());
        }
    }
    struct Lets<'a>(&'a mut Vec<Ident>);
    impl<'ast> Visit<'ast> for Lets<'_> {
        fn visit_local(&mut self, l: &'ast Local) {
            let init = l
                .init
                .as_ref()
                .map(|i| {
                    let e = &i.expr;
                    quote!(#e).to_string()
                })
                .unwrap_or_default();
            let typed =
                matches!(&l.pat, Pat::Type(t) if quote!(#t).to_string().contains("Registers"));
            if init.contains("map_registers") || typed {
                let id = match &l.pat {
                    Pat::Ident(i) => Some(i.ident.clone()),
                    Pat::Type(t) => match &*t.pat {
                        Pat::Ident(i) => Some(i.ident.clone()),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(id) = id {
                    self.0.push(id);
                }
            }
            syn::visit::visit_local(self, l);
        }
        fn visit_item(&mut self, _: &'ast syn::Item) {}
    }
    Lets(&mut out).visit_block(&f.block);
    out
}

fn mapped_impl(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    if !attr.is_empty() {
        return Err(syn::Error::new_spanned(
            attr,
            "#[of::mapped] takes no arguments",
        ));
    }
    let mut f: ItemFn = syn::parse2(item.clone()).map_err(|_| {
        if syn::parse2::<syn::ExprClosure>(item.clone()).is_ok() {
            syn::Error::new_spanned(
                &item,
                "#[of::mapped] cannot be used on a closure: move the body into a `fn` taking \
                 `r: &mut of::Registers` and put the attribute on that fn",
            )
        } else {
            syn::Error::new_spanned(
                &item,
                "#[of::mapped] applies to functions (`fn name(r: &mut of::Registers) { ... }`), \
                 not to this item",
            )
        }
    })?;
    if let Some(a) = &f.sig.asyncness {
        return Err(syn::Error::new_spanned(
            a,
            "#[of::mapped] cannot be used on an async fn: an await point between register \
             statements would let other tasks run on this thread's registers; use a plain `fn` \
             and call it from the async code",
        ));
    }
    let ctx = Ctx {
        bindings: bindings(&f),
    };
    let mut rw = Rewriter {
        ctx: &ctx,
        in_unsafe: false,
        errors: None,
    };
    rw.visit_block_mut(&mut f.block);
    if let Some(e) = rw.errors {
        return Err(e);
    }
    Ok(quote!(#f))
}

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
    match mapped_impl(attr.into(), item.into()) {
        Ok(ts) => ts.into(),
        Err(e) => e.into_compile_error().into(),
    }
}
