//! Procedural macros for `of`.
use proc_macro::TokenStream;

/// Placeholder until the macro lands.
#[proc_macro_attribute]
pub fn mapped(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
