//! Compile-fail suite for `#[of::mapped]` and the typed views (trybuild): each case's expected
//! diagnostic is in `tests/ui/<case>.stderr`. The pass cases (`tests/ui/pass`) are built and
//! run; their presence also makes trybuild *build* (not just check) the compile-fail cases, so
//! post-monomorphisation errors such as an out-of-range `RegU64::<0x800>` are seen.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
