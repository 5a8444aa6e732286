// Forms `#[of::mapped]` accepts, built and run by trybuild: nested blocks, literal shifts of
// views that cover rcx, reads in expressions and macro arguments, xmm stores and loads,
// `let x: T = r.reg;`, the widening suggested by tests/ui/read_width_mismatch.stderr.
#[of::mapped]
fn forms(r: &mut of::Registers, n: u64) -> (u64, u64, u128) {
    let mut acc = 0;
    for i in 0..n {
        r.r8 = i;
        r.r8 <<= 2;
        if i % 2 == 0 {
            r.r8 += 1;
        }
        let v: u64 = r.r8;
        acc += v;
    }
    r.rcx = 3;
    r.rcx <<= 4;
    let c = r.rcx;
    // Reads in expressions and macro arguments: `.load()`, one instruction each.
    let here = 0u8;
    let here = &here as *const u8 as u64;
    // `r.rsp.m()` calls the view's method; `(r.rsp).m()` calls the integer's.
    assert!((r.rsp).abs_diff(here) < 4096, "rsp {:#x}", r.rsp);
    r.xmm9 = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10;
    let x = r.xmm9;
    (acc, c, x)
}

#[of::mapped]
fn widening(r: &mut of::Registers) -> (u64, u64) {
    r.r9 = u64::MAX;
    r.r9d = 5;
    let whole = r.r9;
    let low = u64::from(r.r9d);
    (whole, low)
}

struct Named {
    name: &'static str,
}

#[of::mapped]
fn shadowed_binding(r: &mut of::Registers) -> usize {
    // A closure parameter that shadows the binding: its fields, far from every register
    // name, are left alone.
    let len = |r: &Named| r.name.len();
    r.r8 = 1;
    len(&Named { name: "four" })
}

fn main() {
    let mut r = of::map_registers().unwrap();
    let (acc, c, x) = forms(&mut r, 5);
    assert_eq!(acc, (0..5u64).map(|i| (i << 2) + u64::from(i % 2 == 0)).sum::<u64>());
    assert_eq!(c, 3 << 4);
    assert_eq!(x, 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
    // A 4-byte store keeps the high half (map semantics, not `mov r9d, …`).
    assert_eq!(widening(&mut r).0, 0xFFFF_FFFF_0000_0005);
    assert_eq!(shadowed_binding(&mut r), 4);
}
