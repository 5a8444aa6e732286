#[of::mapped]
fn f(r: &mut of::Registers) {
    r.fs_base = 0;
}
fn main() {}
