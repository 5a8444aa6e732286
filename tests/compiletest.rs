//! Compile-fail suite for `#[of::mapped]` and the typed views (trybuild): each case's expected
//! diagnostic is in `tests/ui/<case>.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
