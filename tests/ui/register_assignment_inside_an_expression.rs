#[of::mapped]
fn f(r: &mut of::Registers) {
    let unit = (r.rdi = 1);
    let _ = unit;
}
fn main() {}
