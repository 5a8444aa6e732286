// `Plain` views have safe stores, so they may not cover rbx/rsp/rbp/rip/rflags.
fn main() {
    let sp = of::RegU64::<0x20>::new();
    sp.store(0);
}
