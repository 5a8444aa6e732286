//! The attribute's expansion: checks what it is applied to, finds the `Registers` bindings and
//! rewrites the body.

use crate::diag;
use crate::parse::Bindings;
use crate::rewrite::Rewriter;
use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;
use syn::visit_mut::VisitMut;

/// `#[of::mapped]` with arguments `attr` on `item`: the rewritten function, or every error
/// found (combined, each spanned at the tokens it is about).
pub(crate) fn mapped(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(diag::arguments(attr));
    }
    let mut f: ItemFn = syn::parse2(item.clone()).map_err(|_| {
        if syn::parse2::<syn::ExprClosure>(item.clone()).is_ok() {
            diag::closure(&item)
        } else {
            diag::not_a_function(&item)
        }
    })?;
    if let Some(a) = &f.sig.asyncness {
        return Err(diag::async_fn(a));
    }
    let bindings = Bindings::of(&f);
    let mut rw = Rewriter::new(&bindings);
    rw.visit_block_mut(&mut f.block);
    rw.finish()?;
    Ok(quote!(#f))
}
