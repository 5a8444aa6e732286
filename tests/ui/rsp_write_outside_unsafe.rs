#[of::mapped]
fn f(r: &mut of::Registers) {
    r.rsp -= 8;
}
fn main() {}
