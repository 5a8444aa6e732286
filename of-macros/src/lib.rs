//! Procedural macros for `of`: `#[of::mapped]`.
//!
//! Inside a function marked `#[of::mapped]`, statements on a `Registers` binding use plain
//! field syntax and become page-0 instructions:
//!
//! | statement | instruction |
//! |---|---|
//! | `r.rdi = e;` | `mov qword ptr [0x38], <reg holding e>` |
//! | `r.eax += e;` (`-= &= \|= ^=`) | `add dword ptr [0x0], <reg>` … |
//! | `r.r8 <<= e;` (`>>=`) | `shl qword ptr [0x40], cl` |
//! | `let x = r.rsp;` | `mov <reg>, qword ptr [0x20]` |
//!
//! Consecutive register statements (also inside an `unsafe { … }` block) are emitted as ONE
//! `asm!` block, in source order, one page-0 instruction per statement, so no compiler-generated
//! code runs between them. Right-hand sides are evaluated before the block into registers that
//! the block does not write through the map; registers written through the map are declared
//! clobbered. Writes to rbx, rbp, rsp (and their narrower views), rip and rflags must be inside
//! `unsafe`: Rust's inline asm cannot declare rbx/rbp/rsp clobbered, a rip write is a jump (the
//! block then does not return) and an rflags write may set DF.
//!
//! The binding is recognised by type or origin: a parameter whose type names `Registers`
//! (`r: of::Registers`, `r: &mut Registers`), or a `let` whose initialiser calls
//! `map_registers`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{BinOp, Block, Expr, ExprField, FnArg, Ident, ItemFn, Local, Member, Pat, Stmt};

/// A register view: map offset, size in bytes, and whether writes need `unsafe`.
#[derive(Clone, Copy)]
struct View {
    off: u32,
    size: u32,
    special: bool,
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

fn all_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = Vec::new();
    for t in [GPR64, GPR32, GPR16, GPR8] {
        v.extend(t);
    }
    v.extend(["ah", "ch", "dh", "bh", "rip", "rflags"]);
    v
}

fn view(name: &str) -> Option<View> {
    let special = |i: usize| matches!(i, 3..=5);
    for (table, size) in [(GPR64, 8), (GPR32, 4), (GPR16, 2), (GPR8, 1)] {
        if let Some(i) = table.iter().position(|n| *n == name) {
            return Some(View {
                off: 8 * i as u32,
                size,
                special: special(i),
            });
        }
    }
    match name {
        "ah" | "ch" | "dh" | "bh" => {
            let i = ["ah", "ch", "dh", "bh"].iter().position(|n| *n == name)? as u32;
            Some(View {
                off: 8 * i + 1,
                size: 1,
                special: i == 3,
            })
        }
        "rip" => Some(View {
            off: 0x80,
            size: 8,
            special: true,
        }),
        "rflags" => Some(View {
            off: 0x88,
            size: 8,
            special: true,
        }),
        _ => None,
    }
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

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

fn nearest(name: &str) -> &'static str {
    all_names()
        .into_iter()
        .min_by_key(|n| levenshtein(name, n))
        .unwrap_or("rax")
}

/// Operand registers the macro may pin values to, in preference order (encoding numbers).
const POOL: [usize; 13] = [11, 10, 9, 8, 12, 13, 14, 15, 6, 7, 2, 1, 0];

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

fn ty(size: u32) -> TokenStream2 {
    match size {
        8 => quote!(u64),
        4 => quote!(u32),
        2 => quote!(u16),
        _ => quote!(u8),
    }
}

enum Access {
    Write {
        view: View,
        value: Expr,
    },
    Rmw {
        view: View,
        op: &'static str,
        value: Expr,
        span: Span,
    },
    Read {
        view: View,
        pat: Pat,
    },
}

struct Ctx {
    bindings: Vec<Ident>,
}

impl Ctx {
    /// `binding.field` with a known binding: the register name and its span.
    fn register_field<'a>(&self, e: &'a Expr) -> Option<(&'a ExprField, String)> {
        let Expr::Field(f) = e else { return None };
        let Expr::Path(p) = &*f.base else { return None };
        let id = p.path.get_ident()?;
        if !self.bindings.iter().any(|b| b == id) {
            return None;
        }
        let Member::Named(name) = &f.member else {
            return None;
        };
        Some((f, name.to_string()))
    }

    fn view_of(&self, f: &ExprField, name: &str) -> syn::Result<View> {
        view(name).ok_or_else(|| {
            syn::Error::new_spanned(
                &f.member,
                format!(
                    "`{name}` is not a register of the map; did you mean `{}`?",
                    nearest(name)
                ),
            )
        })
    }

    /// Classifies one statement; `Ok(None)` if it is not a register statement.
    fn access(&self, stmt: &Stmt, in_unsafe: bool) -> syn::Result<Option<Access>> {
        let check_write = |f: &ExprField, name: &str, v: View| -> syn::Result<()> {
            if v.special && !in_unsafe {
                return Err(syn::Error::new_spanned(
                    f,
                    format!(
                        "writing `{name}` through the map needs `unsafe {{ … }}`: {}",
                        if v.off >= 0x80 {
                            "a rip write is a jump and an rflags write may set DF"
                        } else {
                            "rbx, rbp and rsp cannot be declared clobbered by inline asm"
                        }
                    ),
                ));
            }
            if v.off >= 0x90 {
                return Err(syn::Error::new_spanned(f, "fs/gs base are read only"));
            }
            Ok(())
        };
        match stmt {
            Stmt::Expr(Expr::Assign(a), Some(_)) => {
                let Some((f, name)) = self.register_field(&a.left) else {
                    return Ok(None);
                };
                let v = self.view_of(f, &name)?;
                check_write(f, &name, v)?;
                Ok(Some(Access::Write {
                    view: v,
                    value: (*a.right).clone(),
                }))
            }
            Stmt::Expr(Expr::Binary(b), Some(_)) => {
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
                let Some((f, name)) = self.register_field(&b.left) else {
                    return Ok(None);
                };
                let v = self.view_of(f, &name)?;
                check_write(f, &name, v)?;
                if (op == "shl" || op == "shr") && covered(v).contains(&1) {
                    return Err(syn::Error::new_spanned(
                        b,
                        format!(
                            "`{name}` covers rcx, which holds the shift count: shift it in a local and assign"
                        ),
                    ));
                }
                Ok(Some(Access::Rmw {
                    view: v,
                    op,
                    value: (*b.right).clone(),
                    span: b.span(),
                }))
            }
            Stmt::Local(Local {
                pat,
                init: Some(init),
                ..
            }) => {
                let Some((f, name)) = self.register_field(&init.expr) else {
                    return Ok(None);
                };
                let v = self.view_of(f, &name)?;
                Ok(Some(Access::Read {
                    view: v,
                    pat: pat.clone(),
                }))
            }
            _ => Ok(None),
        }
    }
}

/// Finds `&r.reg` anywhere in the function and unknown register names in other positions.
struct RefCheck<'a> {
    ctx: &'a Ctx,
    err: Option<syn::Error>,
}

impl<'ast> Visit<'ast> for RefCheck<'_> {
    fn visit_expr_reference(&mut self, r: &'ast syn::ExprReference) {
        if let Some((_, name)) = self.ctx.register_field(&r.expr)
            && view(&name).is_some()
            && self.err.is_none()
        {
            self.err = Some(syn::Error::new_spanned(
                r,
                format!(
                    "`{name}` is a register, not memory: it has no address to borrow; read it into a local first (`let v = …{name};`)"
                ),
            ));
        }
        syn::visit::visit_expr_reference(self, r);
    }
}

fn rewrite_block(ctx: &Ctx, block: &mut Block, in_unsafe: bool) -> syn::Result<()> {
    let old = std::mem::take(&mut block.stmts);
    let mut out: Vec<Stmt> = vec![];
    let mut group: Vec<Access> = vec![];
    let mut users: Vec<Ident> = vec![];
    let mut group_span = Span::call_site();
    let flush = |group: &mut Vec<Access>,
                 users: &mut Vec<Ident>,
                 out: &mut Vec<Stmt>,
                 span: Span|
     -> syn::Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        let mut ts = emit_block(std::mem::take(group), span)?;
        users.sort();
        users.dedup();
        let us = std::mem::take(users);
        ts = quote!(#(let _ = &#us;)* #ts);
        let b: Block =
            syn::parse2(quote!({ #ts })).map_err(|e| syn::Error::new(span, e.to_string()))?;
        out.extend(b.stmts);
        Ok(())
    };
    let mut ended = false;
    for mut stmt in old {
        if ended {
            return Err(syn::Error::new_spanned(
                &stmt,
                "unreachable: the register block before this writes rip, so control never comes back",
            ));
        }
        // `unsafe { register statements }` joins the current group.
        if let Stmt::Expr(Expr::Unsafe(u), _) = &mut stmt {
            let all = !u.block.stmts.is_empty()
                && u.block
                    .stmts
                    .iter()
                    .all(|s| ctx.access(s, true).map(|a| a.is_some()).unwrap_or(true));
            if all {
                for s in &u.block.stmts {
                    if let Some(a) = ctx.access(s, true)? {
                        users.extend(binding_of(s));
                        if group.is_empty() {
                            group_span = s.span();
                        }
                        let jump = matches!(&a, Access::Write { view, .. } if view.off == 0x80);
                        group.push(a);
                        if jump {
                            ended = true;
                        }
                    }
                }
                continue;
            }
            rewrite_block(ctx, &mut u.block, true)?;
        }
        match ctx.access(&stmt, in_unsafe)? {
            Some(a) => {
                users.extend(binding_of(&stmt));
                if group.is_empty() {
                    group_span = stmt.span();
                }
                group.push(a);
            }
            None => {
                flush(&mut group, &mut users, &mut out, group_span)?;
                out.push(stmt);
            }
        }
    }
    flush(&mut group, &mut users, &mut out, group_span)?;
    block.stmts = out;
    Ok(())
}

/// The asm! block (plus the `let`s before and after it) for one group.
fn emit_block(accesses: Vec<Access>, span: Span) -> syn::Result<TokenStream2> {
    let mut written: Vec<usize> = vec![];
    let mut jumps = false;
    let mut shifts = false;
    for a in &accesses {
        match a {
            Access::Write { view, .. } | Access::Rmw { view, .. } => {
                written.extend(covered(*view));
                jumps |= view.off == 0x80;
            }
            Access::Read { .. } => {}
        }
        shifts |= matches!(
            a,
            Access::Rmw {
                op: "shl" | "shr",
                ..
            }
        );
    }
    if shifts && written.contains(&1) {
        return Err(syn::Error::new(
            span,
            "a block that shifts by a run-time count cannot also write rcx through the map",
        ));
    }
    let mut free: Vec<usize> = POOL
        .iter()
        .rev()
        .copied()
        .filter(|n| !(written.contains(n) || (shifts && *n == 1)))
        .collect();
    let mut pre = vec![];
    let mut post = vec![];
    let mut template = String::new();
    let mut operands = vec![];
    let mut count_used = false;
    let mut named: Vec<usize> = vec![];
    for (i, a) in accesses.into_iter().enumerate() {
        let v = format_ident!("__of_v{}", i);
        match a {
            Access::Write { view, value } => {
                let t = ty(view.size);
                let r = free.pop().ok_or_else(|| {
                    syn::Error::new(span, "too many register statements in one block")
                })?;
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
                span,
            } => {
                let t = ty(view.size);
                if op == "shl" || op == "shr" {
                    if count_used {
                        return Err(syn::Error::new(
                            span,
                            "one run-time shift per block: cl holds its count",
                        ));
                    }
                    count_used = true;
                    pre.push(quote_spanned!(value.span()=> let #v: u8 = #value;));
                    named.push(1);
                    operands.push(quote!(in("rcx") #v as u64));
                    template += &format!("{op} {} ptr [{:#x}], cl\n", ptr(view.size), view.off);
                } else {
                    let r = free.pop().ok_or_else(|| {
                        syn::Error::new(span, "too many register statements in one block")
                    })?;
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
            Access::Read { view, pat } => {
                let t = ty(view.size);
                let r = free.pop().ok_or_else(|| {
                    syn::Error::new(span, "too many register statements in one block")
                })?;
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
                post.push(quote_spanned!(pat.span()=> let #pat: #t = #raw as #t;));
            }
        }
    }
    // Registers written through the map that the operands do not already name: clobbered.
    written.sort_unstable();
    written.dedup();
    for n in written {
        if jumps || matches!(n, 3..=5) {
            // A block that jumps (noreturn) has no outputs; rbx/rbp/rsp cannot be declared
            // (those statements were inside `unsafe`).
            continue;
        }
        let rn = GPR64[n];
        if !named.contains(&n) {
            operands.push(quote!(lateout(#rn) _));
        }
    }
    let lit = syn::LitStr::new(&template, span);
    let options = if jumps {
        quote!(options(noreturn))
    } else {
        quote!()
    };
    let asm = quote_spanned!(span=> ::core::arch::asm!(#lit, #(#operands,)* #options));
    Ok(quote! {
        #(#pre)*
        // SAFETY: `#[of::mapped]` register statements: each is one page-0 instruction that of's
        // handler emulates; every register the block writes through the map is declared
        // clobbered (rbx/rbp/rsp/rip/rflags writes were written inside `unsafe` by the user).
        #[allow(unused_unsafe)]
        unsafe { #asm; }
        #(#post)*
    })
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
                "#[of::mapped] cannot be used on a closure: move the body into a `fn` taking `r: &mut of::Registers` and put the attribute on that fn",
            )
        } else {
            syn::Error::new_spanned(
                &item,
                "#[of::mapped] applies to functions (`fn name(...) { ... }`), not to this item",
            )
        }
    })?;
    if let Some(a) = &f.sig.asyncness {
        return Err(syn::Error::new_spanned(
            a,
            "#[of::mapped] cannot be used on an async fn: an await point between register statements would run other code on this thread's registers",
        ));
    }
    let mut ctx = Ctx { bindings: vec![] };
    for input in &f.sig.inputs {
        if let FnArg::Typed(p) = input {
            let t = p.ty.to_token_stream_string();
            if t.contains("Registers")
                && let Pat::Ident(id) = &*p.pat
            {
                ctx.bindings.push(id.ident.clone());
            }
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
    }
    Lets(&mut ctx.bindings).visit_block(&f.block);
    let mut check = RefCheck {
        ctx: &ctx,
        err: None,
    };
    check.visit_block(&f.block);
    if let Some(e) = check.err {
        return Err(e);
    }
    rewrite_block(&ctx, &mut f.block, false)?;
    Ok(quote!(#f))
}

trait TypeString {
    fn to_token_stream_string(&self) -> String;
}
impl TypeString for syn::Type {
    fn to_token_stream_string(&self) -> String {
        quote!(#self).to_string()
    }
}

/// Lets a function use plain field syntax on a `Registers` binding; see the crate docs
/// (this example runs as a doctest of the `of` crate, whose crate docs repeat it).
///
/// ```text
/// #[of::mapped]
/// fn demo(r: &mut of::Registers) -> u64 {
///     r.r8 = 40;
///     r.r8 += 2;
///     let v = r.r8;
///     v
/// }
/// let mut r = of::map_registers().unwrap();
/// assert_eq!(demo(&mut r), 42);
/// ```
#[proc_macro_attribute]
pub fn mapped(attr: TokenStream, item: TokenStream) -> TokenStream {
    match mapped_impl(attr.into(), item.into()) {
        Ok(ts) => ts.into(),
        Err(e) => e.into_compile_error().into(),
    }
}

/// The binding named by a register statement (kept "used" after the rewrite).
fn binding_of(stmt: &Stmt) -> Option<Ident> {
    let e = match stmt {
        Stmt::Expr(Expr::Assign(a), _) => &*a.left,
        Stmt::Expr(Expr::Binary(b), _) => &*b.left,
        Stmt::Local(Local { init: Some(i), .. }) => &*i.expr,
        _ => return None,
    };
    let Expr::Field(f) = e else { return None };
    let Expr::Path(p) = &*f.base else { return None };
    p.path.get_ident().cloned()
}
