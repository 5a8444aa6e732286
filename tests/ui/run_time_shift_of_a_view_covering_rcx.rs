#[of::mapped]
fn f(r: &mut of::Registers, n: u32) {
    r.ecx <<= n;
}
fn main() {}
