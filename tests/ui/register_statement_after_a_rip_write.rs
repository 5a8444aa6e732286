#[of::mapped]
fn f(r: &mut of::Registers, target: u64) {
    // SAFETY: (compile-fail case, never run)
    unsafe {
        r.rip = target;
        r.r8 = 1;
    }
}
fn main() {}
