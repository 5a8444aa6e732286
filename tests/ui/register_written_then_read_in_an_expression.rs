#[of::mapped]
fn f(r: &mut of::Registers) {
    r.rdi = 5;
    r.rsi = r.rdi + 1;
}
fn main() {}
