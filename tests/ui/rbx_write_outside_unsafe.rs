#[of::mapped]
fn f(r: &mut of::Registers) {
    r.rbx = 1;
}
fn main() {}
