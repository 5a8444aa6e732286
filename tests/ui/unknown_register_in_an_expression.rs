#[of::mapped]
fn f(r: &mut of::Registers) -> u64 {
    r.rsx + 1
}
fn main() {}
