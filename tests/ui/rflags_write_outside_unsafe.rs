#[of::mapped]
fn f(r: &mut of::Registers) {
    r.rflags |= 0x400;
}
fn main() {}
