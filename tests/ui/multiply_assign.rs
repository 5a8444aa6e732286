#[of::mapped]
fn f(r: &mut of::Registers) {
    r.rax *= 3;
}
fn main() {}
