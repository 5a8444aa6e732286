#[of::mapped]
fn f(r: &mut of::Registers) {
    r.rbp += 16;
}
fn main() {}
