#[of::mapped]
fn f(r: &mut of::Registers) {
    r.rxa = 1;
}
fn main() {}
