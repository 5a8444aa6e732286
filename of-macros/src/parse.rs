//! Parsing: which identifiers are `Registers` bindings, which statements are register
//! statements (and what each one does), and what an expression's tokens mention.

use crate::diag;
use crate::map::{Class, View, covered, is_field, is_xmm, rust_type, view};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{BinOp, Expr, ExprField, FnArg, Ident, ItemFn, Lit, Local, Member, Pat, Stmt};

/// The bindings of the function: parameters and `let`s of type `Registers`, and `let`s
/// initialised by `map_registers`.
pub(crate) fn bindings(f: &ItemFn) -> Vec<Ident> {
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

/// One register statement.
#[derive(Clone)]
pub(crate) enum Access {
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
    /// The view the statement accesses.
    pub(crate) fn view(&self) -> View {
        match self {
            Access::Write { view, .. } | Access::Rmw { view, .. } | Access::Read { view, .. } => {
                *view
            }
        }
    }
    /// The register field's span (where errors about the statement point).
    pub(crate) fn span(&self) -> Span {
        match self {
            Access::Write { span, .. } | Access::Rmw { span, .. } | Access::Read { span, .. } => {
                *span
            }
        }
    }
    /// The `Registers` binding the statement goes through.
    pub(crate) fn binding(&self) -> &Ident {
        match self {
            Access::Write { binding, .. }
            | Access::Rmw { binding, .. }
            | Access::Read { binding, .. } => binding,
        }
    }
    /// Whether the statement writes its view.
    pub(crate) fn writes(&self) -> bool {
        !matches!(self, Access::Read { .. })
    }
    /// Whether the statement writes rip (a jump).
    pub(crate) fn jumps(&self) -> bool {
        matches!(self, Access::Write { view, .. } if view.off == 0x80)
    }
    /// Whether the statement is a shift by a count known only at run time (in cl).
    pub(crate) fn runtime_shift(&self) -> bool {
        matches!(
            self,
            Access::Rmw {
                op: "shl" | "shr",
                imm: None,
                ..
            }
        )
    }
    /// Whether the statement needs an operand register of the pool (a value to store or
    /// combine, a run-time shift count, or a register to read into); a shift by a literal
    /// needs none (an immediate).
    pub(crate) fn needs_operand_register(&self) -> bool {
        match self {
            Access::Write { .. } | Access::Read { .. } => true,
            // A run-time shift count waits in one too (swapped into rcx for the shift).
            Access::Rmw { imm, .. } => imm.is_none(),
        }
    }
}

/// What a statement's left-hand side or initialiser names.
pub(crate) enum Target<'a> {
    /// A fused register view.
    View(&'a ExprField, Ident, String, View),
    /// An xmm field (`load`/`store` only).
    Xmm(&'a ExprField, String),
}

/// The recognised `Registers` bindings of the function, and the questions asked about them.
pub(crate) struct Bindings {
    idents: Vec<Ident>,
}

impl Bindings {
    /// The bindings of `f` (see [`bindings`]).
    pub(crate) fn of(f: &ItemFn) -> Self {
        Bindings {
            idents: bindings(f),
        }
    }

    /// The binding identifiers.
    pub(crate) fn idents(&self) -> &[Ident] {
        &self.idents
    }

    /// `binding.field` with a recognised binding: the field (named member) and the binding.
    pub(crate) fn binding_field<'a>(
        &self,
        e: &'a Expr,
    ) -> Option<(&'a ExprField, Ident, &'a Ident)> {
        let Expr::Field(f) = e else { return None };
        let Expr::Path(p) = &*f.base else { return None };
        let id = p.path.get_ident()?;
        if !self.idents.iter().any(|b| b == id) {
            return None;
        }
        let Member::Named(name) = &f.member else {
            return None;
        };
        Some((f, id.clone(), name))
    }

    /// Whether `e` is `binding.field` for a field of `Registers`.
    pub(crate) fn is_register_field(&self, e: &Expr) -> bool {
        self.binding_field(e)
            .is_some_and(|(_, _, name)| is_field(&name.to_string()))
    }

    /// Classifies `e` as a register target; `Ok(None)` if it is not `binding.field`.
    pub(crate) fn target<'a>(&self, e: &'a Expr) -> syn::Result<Option<Target<'a>>> {
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
        match diag::unknown_register(name) {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Classifies one statement; `Ok(None)` if it is not a fused register statement.
    /// `in_unsafe` says whether it is inside `unsafe`.
    pub(crate) fn access(&self, stmt: &Stmt, in_unsafe: bool) -> syn::Result<Option<Access>> {
        match stmt {
            Stmt::Expr(Expr::Assign(a), _) => {
                let Some(Target::View(f, binding, name, v)) = self.target(&a.left)? else {
                    return Ok(None);
                };
                check_write(f, &name, v, in_unsafe)?;
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
                let (f, binding, name, v) = match self.target(&b.left)? {
                    None => return Ok(None),
                    Some(Target::Xmm(f, name)) => return Err(diag::xmm_compound(b, f, &name)),
                    Some(Target::View(f, binding, name, v)) => (f, binding, name, v),
                };
                check_write(f, &name, v, in_unsafe)?;
                let mut imm = None;
                if op == "shl" || op == "shr" {
                    if let Expr::Lit(l) = &*b.right
                        && let Lit::Int(i) = &l.lit
                    {
                        let n: u64 = i.base10_parse()?;
                        if n > 255 {
                            return Err(diag::shift_count_too_large(&b.right));
                        }
                        imm = Some(n as u8);
                    } else if covered(v).contains(&crate::map::RCX) {
                        return Err(diag::run_time_shift_of_rcx(b, f, &name));
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
                    let view_ty = rust_type(v.size);
                    let integer = [
                        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64",
                        "i128", "isize",
                    ];
                    let d = declared.to_string();
                    if integer.contains(&d.as_str()) && d != view_ty {
                        return Err(diag::read_width_mismatch(
                            &pt.ty, &d, f, &name, v.size, view_ty,
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
    pub(crate) fn mentioned_in(&self, e: &Expr) -> bool {
        scan_tokens(&quote!(#e), &self.idents).mentions_binding
    }
}

/// Checks that the write to `name` (the field `f`, view `v`) is allowed here.
fn check_write(f: &ExprField, name: &str, v: View, in_unsafe: bool) -> syn::Result<()> {
    match v.class {
        Class::ReadOnly => Err(diag::read_only(f, name)),
        Class::Special if !in_unsafe => Err(diag::needs_unsafe(f, name)),
        _ => Ok(()),
    }
}

/// What an expression's tokens (macro arguments included) mention.
pub(crate) struct Scan {
    /// Every identifier.
    pub(crate) idents: Vec<Ident>,
    /// `binding.field` occurrences: the field identifier and its name.
    pub(crate) fields: Vec<(Ident, String)>,
    /// Whether a binding appears at all.
    pub(crate) mentions_binding: bool,
}

/// Scans `ts` (and every group in it) for identifiers and `binding.field` pairs.
pub(crate) fn scan_tokens(ts: &TokenStream, bindings: &[Ident]) -> Scan {
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
pub(crate) fn pat_idents(p: &Pat) -> Vec<Ident> {
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
