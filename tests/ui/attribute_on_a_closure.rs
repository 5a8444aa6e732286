fn main() {
    let f = #[of::mapped]
    |r: &mut of::Registers| r.rdi;
    let _ = f;
}
