#[of::mapped]
fn f(r: &mut of::Registers) {
    r.eax = 1u64;
}
fn main() {}
