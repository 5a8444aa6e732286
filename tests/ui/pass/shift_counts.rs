// Shift counts of every primitive integer type (and references to them), as for `<<` on a
// `u64`: in `#[of::mapped]` statements and on the typed views. The count the instruction uses is
// the low byte of the count's two's-complement value, masked to 6 bits for 8-byte operands and
// to 5 bits for narrower ones: `count.rem_euclid(64)` or `count.rem_euclid(32)`.

#[of::mapped]
fn shr_u8(r: &mut of::Registers, a: u64, n: u8) -> u64 {
    r.r10 = a;
    r.r10 >>= n; // the case of issue 13: "expected `u32`, found `u8`" before
    let v = r.r10;
    v
}

macro_rules! shl64 {
    ($($name:ident: $t:ty),*) => {$(
        #[of::mapped]
        fn $name(r: &mut of::Registers, a: u64, n: $t) -> u64 {
            r.r8 = a;
            r.r8 <<= n;
            let v = r.r8;
            v
        }
    )*};
}
shl64!(shl_u8: u8, shl_u16: u16, shl_u32: u32, shl_u64: u64, shl_u128: u128, shl_usize: usize,
       shl_i8: i8, shl_i16: i16, shl_i32: i32, shl_i64: i64, shl_i128: i128, shl_isize: isize,
       shl_ref: &u16);

// One run-time count per function: a second one would start a new `asm!` block, and a value
// written through the map does not survive to the next block.
#[of::mapped]
fn shr32(r: &mut of::Registers, a: u64, n: i64) -> u64 {
    r.r9 = a;
    r.r9d >>= n;
    let v = r.r9;
    v
}

#[of::mapped]
fn shl16(r: &mut of::Registers, a: u64, n: u128) -> u64 {
    r.r9 = a;
    r.r9w <<= n;
    let v = r.r9;
    v
}

#[of::mapped]
fn shr8_by_minus_one(r: &mut of::Registers, a: u64) -> u64 {
    r.r9 = a;
    r.r9b >>= -1; // a negative literal is a run-time count: low byte 0xff, masked to 31
    let v = r.r9;
    v
}

#[of::mapped]
fn literals(r: &mut of::Registers, a: u64) -> (u64, u8) {
    r.rcx = a;
    r.rcx <<= 4u8; // a literal of any integer type is an immediate (views covering rcx too)
    r.rcx >>= 1i64;
    r.rcx <<= 65usize; // masked by the CPU like a count in cl: 65 & 63 = 1
    let c = r.rcx;
    r.r11 = a;
    r.r11b <<= 9u128; // 9 & 31 = 9: every bit of a byte shifted out
    let b = r.r11b;
    (c, b)
}

fn main() {
    let mut r = of::map_registers().unwrap();
    assert_eq!(shr_u8(&mut r, 0xF0, 4), 0xF);

    let a = 0x0123_4567_89AB_CDEF_u64;
    assert_eq!(shl_u8(&mut r, a, 4), a << 4);
    assert_eq!(shl_u8(&mut r, a, 200), a << (200 % 64));
    assert_eq!(shl_u16(&mut r, a, 0x0103), a << 3); // only the low byte: 3
    assert_eq!(shl_u32(&mut r, a, 64), a); // 64 & 63 = 0
    assert_eq!(shl_u64(&mut r, a, u64::MAX), a << 63);
    assert_eq!(shl_u128(&mut r, a, (1 << 100) + 5), a << 5);
    assert_eq!(shl_usize(&mut r, a, 70), a << 6);
    assert_eq!(shl_i8(&mut r, a, -1), a << 63);
    assert_eq!(shl_i16(&mut r, a, -60), a << 4);
    assert_eq!(shl_i32(&mut r, a, 7), a << 7);
    assert_eq!(shl_i64(&mut r, a, i64::MIN + 2), a << 2);
    assert_eq!(shl_i128(&mut r, a, -64), a);
    assert_eq!(shl_isize(&mut r, a, -2), a << 62);
    assert_eq!(shl_ref(&mut r, a, &2), a << 2);
    let counts = [
        -300i64, -65, -33, -1, 0, 1, 31, 32, 33, 63, 64, 255, 256, 1000,
    ];
    for n in counts {
        assert_eq!(shl_i64(&mut r, a, n), a << n.rem_euclid(64), "count {n}");
    }

    // 4- and 2-byte views (map semantics: the other bytes of r9 are kept).
    let keep = |v: u64, mask: u64| (a & !mask) | (v & mask);
    let dword_shr4 = keep(u64::from(a as u32 >> 4), 0xFFFF_FFFF);
    assert_eq!(shr32(&mut r, a, 36), dword_shr4); // 36 & 31 = 4
    assert_eq!(shr32(&mut r, a, -28), dword_shr4); // -28 mod 32 = 4
    let word_shl3 = keep(u64::from((a as u16) << 3), 0xFFFF);
    assert_eq!(shl16(&mut r, a, (1 << 64) + 3), word_shl3); // the low byte: 3
    assert_eq!(shl16(&mut r, a, 17), keep(0, 0xFFFF)); // 17: a word loses every bit
    assert_eq!(shr8_by_minus_one(&mut r, a), keep(0, 0xFF));
    assert_eq!(shr8_by_minus_one(&mut r, a | 0xFF), keep(0, 0xFF));

    assert_eq!(literals(&mut r, a), (((a << 4) >> 1) << 1, 0));

    // The typed views: `<<=` and `>>=` take any integer type too.
    let mut r12 = r.r12;
    r12.store(1);
    r12 <<= 3u8;
    r12 <<= 2i128;
    r12 <<= 1usize;
    r12 <<= &1u64;
    r12 <<= 64 + 2; // an unsuffixed count is an i32, as on a `u64`; 66 & 63 = 2
    assert_eq!(r12.load(), 1 << 9);
    r12 >>= -60i32; // 4
    assert_eq!(r12.load(), 1 << 5);
    let mut r13b = r.r13b;
    r13b.store(0x81);
    r13b <<= 33u16; // 33 & 31 = 1
    assert_eq!(r13b.load(), 0x02);
    r13b <<= 8i8;
    assert_eq!(r13b.load(), 0);
}
