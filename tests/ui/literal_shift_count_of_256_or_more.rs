#[of::mapped]
fn f(r: &mut of::Registers) {
    r.r10 <<= 256u16;
}
fn main() {}
