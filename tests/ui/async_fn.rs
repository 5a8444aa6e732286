#[of::mapped]
async fn f(r: &mut of::Registers) {
    r.rax = 1;
}
fn main() {}
