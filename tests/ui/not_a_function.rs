#[of::mapped]
struct S;
fn main() {}
