//! `#[of::mapped]`: field syntax on a `Registers` binding becomes page-0 instructions.

#[of::mapped]
fn arithmetic(r: &mut of::Registers, x: u64) -> (u64, u32, u8) {
    r.r8 = x;
    r.r8 += 2;
    r.r8 <<= 3;
    r.r9d = 0xFFFF_0000;
    r.r9d ^= 0x00FF_00FF;
    r.r10b = 7;
    r.r10b -= 9;
    let a = r.r8;
    let b = r.r9d;
    let c = r.r10b;
    (a, b, c)
}

#[test]
fn statements_compute_like_the_cpu() {
    let mut r = of::map_registers().unwrap();
    let (a, b, c) = arithmetic(&mut r, 5);
    assert_eq!(a, (5 + 2) << 3);
    assert_eq!(b, 0xFFFF_0000 ^ 0x00FF_00FF);
    assert_eq!(c, 7u8.wrapping_sub(9));
}

#[of::mapped]
fn high_byte_and_straddle(r: &mut of::Registers) -> (u64, u8) {
    r.rax = 0x1122_3344_5566_7788;
    r.ah = 0xAB;
    let whole = r.rax;
    let ah = r.ah;
    (whole, ah)
}

#[test]
fn high_byte_views_are_byte_1() {
    let mut r = of::map_registers().unwrap();
    assert_eq!(
        high_byte_and_straddle(&mut r),
        (0x1122_3344_5566_AB88, 0xAB)
    );
}

#[of::mapped]
fn read_stack_pointer() -> u64 {
    let r = of::map_registers().unwrap();
    let sp = r.rsp;
    sp
}

#[test]
fn reads_through_a_let_binding() {
    let local = 0u8;
    let sp = read_stack_pointer();
    let here = &local as *const u8 as u64;
    assert!(sp < here && here - sp < 1 << 16, "{sp:#x} vs {here:#x}");
}
