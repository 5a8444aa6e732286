#[of::mapped]
fn f(r: &mut of::Registers) {
    let p = &r.rax;
    let _ = p;
}
fn main() {}
