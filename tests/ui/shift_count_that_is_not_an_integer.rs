#[of::mapped]
fn f(r: &mut of::Registers, x: f64) {
    r.r10 >>= x;
}

fn main() {
    let mut r8 = of::RegU64::<0x40>::new();
    r8 <<= 2.0f32;
}
