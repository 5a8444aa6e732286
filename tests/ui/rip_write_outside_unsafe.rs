#[of::mapped]
fn f(r: &mut of::Registers) {
    r.rip = 0;
}
fn main() {}
