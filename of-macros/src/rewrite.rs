//! Rewriting a function body: every block's register statements go to [`Group`]s (fused
//! `asm!` blocks); other uses of a register field become view calls (`r.rax` in an expression
//! is `r.rax.load()`, `r.xmm1 = v;` is `r.xmm1.store(v);`) or errors (`&r.rax`, an assignment
//! inside an expression).

use crate::diag;
use crate::group::Group;
use crate::map::is_field;
use crate::parse::{Access, Bindings, Target};
use quote::quote;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{BinOp, Block, Expr, Stmt, Token};

/// Rewrites a function body: fuses register statements and turns other register reads into
/// `.load()`. Errors are collected (one per block at most) and reported together.
pub(crate) struct Rewriter<'a> {
    bindings: &'a Bindings,
    in_unsafe: bool,
    errors: Option<syn::Error>,
}

impl<'a> Rewriter<'a> {
    /// A rewriter for a function whose `Registers` bindings are `bindings`.
    pub(crate) fn new(bindings: &'a Bindings) -> Self {
        Rewriter {
            bindings,
            in_unsafe: false,
            errors: None,
        }
    }

    /// The errors found while rewriting, combined into one.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.errors.map_or(Ok(()), Err)
    }

    fn error(&mut self, e: syn::Error) {
        match &mut self.errors {
            Some(x) => x.combine(e),
            None => self.errors = Some(e),
        }
    }

    /// Adds `a` to `group`: its right-hand side is rewritten first (after the group is emitted,
    /// if the right-hand side must see the group's effects).
    fn push(&mut self, group: &mut Group, out: &mut Vec<Stmt>, mut a: Access) -> syn::Result<()> {
        if let Access::Write { value, .. } | Access::Rmw { value, .. } = &mut a {
            if group.must_split_before(value, self.bindings.idents())? {
                group.flush(out)?;
            }
            self.visit_expr_mut(value);
        }
        group.push(a, out)
    }

    fn rewrite_stmts(&mut self, stmts: Vec<Stmt>) -> syn::Result<Vec<Stmt>> {
        let mut out: Vec<Stmt> = vec![];
        let mut group = Group::default();
        let mut ended = false;
        for mut stmt in stmts {
            if ended && !matches!(stmt, Stmt::Item(_)) {
                return Err(diag::after_rip_block(&stmt));
            }
            // `unsafe { register statements only }` joins the current group.
            if let Stmt::Expr(Expr::Unsafe(u), _) = &stmt
                && !u.block.stmts.is_empty()
                && u.block
                    .stmts
                    .iter()
                    .all(|s| self.bindings.access(s, true).map_or(true, |a| a.is_some()))
            {
                for s in &u.block.stmts {
                    let a = self.bindings.access(s, true)?.expect("checked above");
                    ended |= a.jumps();
                    self.push(&mut group, &mut out, a)?;
                }
                continue;
            }
            if let Some(a) = self.bindings.access(&stmt, self.in_unsafe)? {
                ended |= a.jumps();
                self.push(&mut group, &mut out, a)?;
                continue;
            }
            group.flush(&mut out)?;
            // `r.xmm1 = v;` is a `store`.
            if let Stmt::Expr(Expr::Assign(a), semi) = &mut stmt
                && let Some(Target::Xmm(f, _)) = self.bindings.target(&a.left)?
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
        group.flush(&mut out)?;
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
            && args.iter().any(|a| self.bindings.mentioned_in(a))
        {
            for a in args.iter_mut() {
                self.visit_expr_mut(a);
            }
            m.tokens = quote!(#args);
        }
    }

    fn visit_expr_mut(&mut self, e: &mut Expr) {
        match e {
            Expr::Field(_) => match self.bindings.target(e) {
                Ok(Some(Target::View(f, ..) | Target::Xmm(f, _))) => {
                    let f = f.clone();
                    *e = syn::parse_quote_spanned!(f.span()=> #f.load());
                }
                Ok(None) => syn::visit_mut::visit_expr_mut(self, e),
                Err(err) => self.error(err),
            },
            Expr::MethodCall(m) => {
                // `r.rax.load()`: the receiver is the view itself.
                if let Some((_, _, name)) = self.bindings.binding_field(&m.receiver) {
                    if !is_field(&name.to_string())
                        && let Some(err) = diag::unknown_register(name)
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
            Expr::Reference(r) if self.bindings.is_register_field(&r.expr) => {
                let name = self
                    .bindings
                    .binding_field(&r.expr)
                    .map(|f| f.2.to_string())
                    .unwrap_or_default();
                self.error(diag::reference(r, &r.expr, &name));
            }
            Expr::Assign(a) if self.bindings.is_register_field(&a.left) => {
                self.error(diag::assignment_in_expression(a));
            }
            Expr::Binary(b)
                if self.bindings.is_register_field(&b.left)
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
                let no_memory_form = matches!(
                    b.op,
                    BinOp::MulAssign(_) | BinOp::DivAssign(_) | BinOp::RemAssign(_)
                );
                self.error(diag::compound_in_expression(b, no_memory_form));
            }
            _ => syn::visit_mut::visit_expr_mut(self, e),
        }
    }
}
