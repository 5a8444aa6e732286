#[of::mapped]
fn f(r: &mut of::Registers) -> u64 {
    let v: u64 = r.eax;
    v
}
fn main() {}
