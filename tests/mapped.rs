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

// ---------------------------------------------------------------------------------------------
// Differential: the same instruction run natively on a real register (the CPU is the oracle)
// and through the map by a `#[of::mapped]` statement, from random inputs.

/// Arithmetic flags: CF PF AF ZF SF OF.
const ARITH: u64 = 0x8D5;
/// Flags a shift by 1..=63 defines: CF PF ZF SF (OF only for 1, AF undefined).
const SHIFT: u64 = 0xC5;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Mostly random, sometimes an edge value.
    fn value(&mut self) -> u64 {
        const EDGES: [u64; 8] = [
            0,
            1,
            u64::MAX,
            0x8000_0000_0000_0000,
            0x7FFF_FFFF,
            0x80,
            0xFF,
            0xFFFF,
        ];
        let x = self.next();
        if x.is_multiple_of(4) {
            EDGES[(x >> 8) as usize % EDGES.len()]
        } else {
            self.next()
        }
    }
}

macro_rules! native {
    ($insn:literal, $a:expr, $b:expr) => {{
        let mut a: u64 = $a;
        let flags: u64;
        // SAFETY: register-only arithmetic, then pushfq/pop on the stack (no `nostack`).
        unsafe {
            core::arch::asm!(
                concat!($insn, "\n", "pushfq\n", "pop {f}"),
                a = inout(reg) a,
                b = in(reg) $b,
                f = out(reg) flags,
            );
        }
        (a, flags)
    }};
}

#[of::mapped]
fn add64(r: &mut of::Registers, a: u64, b: u64) -> (u64, u64) {
    r.r8 = a;
    r.r8 += b;
    let v = r.r8;
    let f = r.rflags;
    (v, f)
}

#[of::mapped]
fn sub32(r: &mut of::Registers, a: u64, b: u32) -> (u64, u64) {
    r.r9 = a;
    r.r9d -= b;
    let v = r.r9;
    let f = r.rflags;
    (v, f)
}

#[of::mapped]
fn xor16_and8(r: &mut of::Registers, a: u64, b: u16, c: u8) -> (u64, u64) {
    r.rsi = a;
    r.si ^= b;
    r.sil &= c;
    let v = r.rsi;
    let f = r.rflags;
    (v, f)
}

#[of::mapped]
fn or_high_byte(r: &mut of::Registers, a: u64, b: u8) -> (u64, u64) {
    r.rdx = a;
    r.dh |= b;
    let v = r.rdx;
    let f = r.rflags;
    (v, f)
}

#[test]
fn compound_assignments_match_the_cpu_value_and_flags() {
    let mut r = of::map_registers().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let (a, b) = (rng.value(), rng.value());

        let (v, f) = add64(&mut r, a, b);
        let (nv, nf) = native!("add {a}, {b}", a, b);
        assert_eq!((v, f & ARITH), (nv, nf & ARITH), "add {a:#x}, {b:#x}");

        let (v, f) = sub32(&mut r, a, b as u32);
        let (nv, nf) = native!("sub {a:e}, {b:e}", a, b);
        // `sub r9d, …` on a real register zeroes the high half; through the map a 4-byte
        // write leaves it (SPEC §2: map semantics), so compare the low half and keep a's high.
        assert_eq!(
            v,
            (a & !0xFFFF_FFFF) | (nv & 0xFFFF_FFFF),
            "sub32 {a:#x}, {b:#x}"
        );
        assert_eq!(f & ARITH, nf & ARITH, "sub32 flags {a:#x}, {b:#x}");

        let c = rng.value() as u8;
        let (v, f) = xor16_and8(&mut r, a, b as u16, c);
        let (x, _) = native!("xor {a:x}, {b:x}", a, b & 0xFFFF);
        let (nv, nf) = native!("and {a:l}, {b:l}", x, u64::from(c));
        assert_eq!(
            (v, f & ARITH & !0x10),
            (nv, nf & ARITH & !0x10),
            "xor/and {a:#x} {b:#x} {c:#x}"
        );

        let (v, f) = or_high_byte(&mut r, a, b as u8);
        let (nv, nf) = {
            let mut x = a;
            let flags: u64;
            // SAFETY: register-only `or` on dh, then pushfq/pop.
            unsafe {
                core::arch::asm!("or dh, al", "pushfq", "pop {f}", inout("rdx") x,
                    in("al") b as u8, f = out(reg) flags);
            }
            (x, flags)
        };
        assert_eq!(
            (v, f & ARITH & !0x10),
            (nv, nf & ARITH & !0x10),
            "or dh {a:#x} {b:#x}"
        );
    }
}

#[of::mapped]
fn shl_run_time(r: &mut of::Registers, a: u64, n: u32) -> (u64, u64) {
    r.r10 = a;
    r.r10 <<= n;
    let v = r.r10;
    let f = r.rflags;
    (v, f)
}

#[of::mapped]
fn shr32_run_time(r: &mut of::Registers, a: u64, n: u32) -> (u64, u64) {
    r.rdi = a;
    r.edi >>= n;
    let v = r.rdi;
    let f = r.rflags;
    (v, f)
}

#[of::mapped]
fn shifts_of_rcx_by_literals(r: &mut of::Registers, a: u64) -> (u64, u64) {
    r.rcx = a;
    r.rcx <<= 7;
    r.cl >>= 3;
    let v = r.rcx;
    let f = r.rflags;
    (v, f)
}

#[test]
fn shifts_match_the_cpu_including_count_masking() {
    let mut r = of::map_registers().unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..200 {
        let a = rng.value();
        let n = (rng.next() % 80) as u32 + 1; // counts above 63 are masked by the CPU
        let (v, f) = shl_run_time(&mut r, a, n);
        let (nv, nf) = {
            let mut x = a;
            let flags: u64;
            // SAFETY: register-only shift, then pushfq/pop.
            unsafe {
                core::arch::asm!("shl {x}, cl", "pushfq", "pop {f}", x = inout(reg) x,
                    in("rcx") u64::from(n), f = out(reg) flags);
            }
            (x, flags)
        };
        assert_eq!(v, nv, "shl {a:#x}, {n}");
        if !n.is_multiple_of(64) {
            assert_eq!(f & SHIFT, nf & SHIFT, "shl flags {a:#x}, {n}");
        }

        let (v, f) = shr32_run_time(&mut r, a, n);
        let (nv, nf) = {
            let mut x = a;
            let flags: u64;
            // SAFETY: register-only shift, then pushfq/pop.
            unsafe {
                core::arch::asm!("shr {x:e}, cl", "pushfq", "pop {f}", x = inout(reg) x,
                    in("rcx") u64::from(n), f = out(reg) flags);
            }
            (x, flags)
        };
        assert_eq!(
            v,
            (a & !0xFFFF_FFFF) | (nv & 0xFFFF_FFFF),
            "shr32 {a:#x}, {n}"
        );
        if !n.is_multiple_of(32) {
            assert_eq!(f & SHIFT, nf & SHIFT, "shr32 flags {a:#x}, {n}");
        }

        let (v, f) = shifts_of_rcx_by_literals(&mut r, a);
        let (nv, nf) = {
            let mut x = a;
            let flags: u64;
            // SAFETY: register-only shifts, then pushfq/pop.
            unsafe {
                core::arch::asm!("shl {x}, 7", "shr {x:l}, 3", "pushfq", "pop {f}",
                    x = inout(reg_abcd) x, f = out(reg) flags);
            }
            (x, flags)
        };
        assert_eq!((v, f & SHIFT), (nv, nf & SHIFT), "rcx shifts {a:#x}");
    }
}

/// A shift of `a` by cl = `cl` run natively on a real register: value and flags.
macro_rules! native_shift {
    ($insn:literal, $a:expr, $cl:expr) => {{
        let mut x: u64 = $a;
        let flags: u64;
        // SAFETY: register-only shift, then pushfq/pop.
        unsafe {
            core::arch::asm!(concat!($insn, "\n", "pushfq\n", "pop {f}"), x = inout(reg) x,
                in("rcx") u64::from($cl), f = out(reg) flags);
        }
        (x, flags)
    }};
}

#[of::mapped]
fn shr64_by_u8(r: &mut of::Registers, a: u64, n: u8) -> (u64, u64) {
    r.r10 = a;
    r.r10 >>= n;
    let v = r.r10;
    let f = r.rflags;
    (v, f)
}

#[of::mapped]
fn shl32_by_i8(r: &mut of::Registers, a: u64, n: i8) -> (u64, u64) {
    r.r10 = a;
    r.r10d <<= n;
    let v = r.r10;
    let f = r.rflags;
    (v, f)
}

#[of::mapped]
fn shr16_by_i64(r: &mut of::Registers, a: u64, n: i64) -> (u64, u64) {
    r.r10 = a;
    r.r10w >>= n;
    let v = r.r10;
    let f = r.rflags;
    (v, f)
}

#[of::mapped]
fn shl8_by_u128(r: &mut of::Registers, a: u64, n: u128) -> (u64, u64) {
    r.r10 = a;
    r.r10b <<= n;
    let v = r.r10;
    let f = r.rflags;
    (v, f)
}

#[of::mapped]
fn shl64_by_isize(r: &mut of::Registers, a: u64, n: isize) -> (u64, u64) {
    r.r10 = a;
    r.r10 <<= n;
    let v = r.r10;
    let f = r.rflags;
    (v, f)
}

/// Counts of any integer type, in and out of range and negative: the instruction sees the low
/// byte of the count in cl and masks it to 6 bits (qword) or 5 (narrower), so the result is the
/// CPU's with cl = `count as u8`, and the count that acts is `count.rem_euclid(64 or 32)`.
#[test]
fn shift_counts_of_every_integer_type_are_masked_like_the_cpu() {
    let mut r = of::map_registers().unwrap();
    let mut rng = Rng(0x5851_F42D_4C95_7F2D);
    // Flags are compared where the SDM defines them: a masked count of 1..width (CF is
    // undefined for SHL/SHR by a count of at least the operand size).
    let flags_defined = |masked: u32, width: u32| masked != 0 && masked < width;
    let keep = |a: u64, v: u64, mask: u64| (a & !mask) | (v & mask);
    for i in 0..300 {
        let a = rng.value();
        let w = rng.next();
        // Small counts, counts just past every width, negative ones, huge ones.
        let n = match i % 4 {
            0 => (w % 70) as i128,
            1 => -((w % 70) as i128),
            2 => (w as i128) << 64 | (w % 300) as i128,
            _ => w as i64 as i128,
        };

        let (v, f) = shr64_by_u8(&mut r, a, n as u8);
        let (nv, nf) = native_shift!("shr {x}, cl", a, n as u8);
        assert_eq!(v, nv, "shr64 {a:#x}, {}", n as u8);
        assert_eq!(
            v,
            a >> (n as u8).rem_euclid(64),
            "shr64 {a:#x}, {}",
            n as u8
        );
        if flags_defined(u32::from(n as u8) & 63, 64) {
            assert_eq!(f & SHIFT, nf & SHIFT, "shr64 flags {a:#x}, {}", n as u8);
        }

        let (v, f) = shl32_by_i8(&mut r, a, n as i8);
        let (nv, nf) = native_shift!("shl {x:e}, cl", a, n as u8);
        assert_eq!(v, keep(a, nv, 0xFFFF_FFFF), "shl32 {a:#x}, {}", n as i8);
        let acting = (n as i8).rem_euclid(32) as u32;
        assert_eq!(v as u32, (a as u32) << acting, "shl32 {a:#x}, {}", n as i8);
        if flags_defined(acting, 32) {
            assert_eq!(f & SHIFT, nf & SHIFT, "shl32 flags {a:#x}, {}", n as i8);
        }

        let (v, f) = shr16_by_i64(&mut r, a, n as i64);
        let (nv, nf) = native_shift!("shr {x:x}, cl", a, n as u8);
        assert_eq!(v, keep(a, nv, 0xFFFF), "shr16 {a:#x}, {}", n as i64);
        let acting = (n as i64).rem_euclid(32) as u32;
        assert_eq!(v as u16, (a as u16).checked_shr(acting).unwrap_or(0));
        if flags_defined(acting, 16) {
            assert_eq!(f & SHIFT, nf & SHIFT, "shr16 flags {a:#x}, {}", n as i64);
        }

        let (v, f) = shl8_by_u128(&mut r, a, n as u128);
        let (nv, nf) = native_shift!("shl {x:l}, cl", a, n as u8);
        assert_eq!(v, keep(a, nv, 0xFF), "shl8 {a:#x}, {}", n as u128);
        let acting = (n as u128 % 32) as u32;
        assert_eq!(v as u8, (a as u8).checked_shl(acting).unwrap_or(0));
        if flags_defined(acting, 8) {
            assert_eq!(f & SHIFT, nf & SHIFT, "shl8 flags {a:#x}, {}", n as u128);
        }

        let (v, _) = shl64_by_isize(&mut r, a, n as isize);
        assert_eq!(
            v,
            a << (n as isize).rem_euclid(64),
            "shl64 {a:#x}, {}",
            n as isize
        );
    }
}

/// The typed views' `<<=`/`>>=` take the same counts, masked the same way.
#[test]
fn view_shift_counts_of_every_integer_type() {
    let r = of::map_registers().unwrap();
    let (mut q, mut b) = (r.r12, r.r12b);
    for n in [
        -65i64,
        -64,
        -33,
        -1,
        0,
        1,
        7,
        8,
        31,
        32,
        63,
        64,
        65,
        255,
        256,
        1 << 40,
    ] {
        let a = 0x8123_4567_89AB_CDEF_u64;
        q.store(a);
        q <<= n;
        assert_eq!(q.load(), a << n.rem_euclid(64), "qword << {n}");
        q.store(a);
        q >>= n as i128;
        assert_eq!(q.load(), a >> n.rem_euclid(64), "qword >> {n}");
        q.store(a);
        b <<= n as u16;
        let acting = u32::from(n as u16 as u8) & 31;
        assert_eq!(
            q.load() as u8,
            (a as u8).checked_shl(acting).unwrap_or(0),
            "byte << {n}"
        );
        assert_eq!(
            q.load() >> 8,
            a >> 8,
            "byte << {n}: the other bytes are kept"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Operands, grouping and nesting.

#[of::mapped]
#[inline(never)]
fn pinned(r: &mut of::Registers, a: u64, b: u64, c: u64, d: u64) -> [u64; 4] {
    r.r11 = a;
    r.r10 = b;
    r.rdi = c;
    r.rax = d;
    let w = r.r11;
    let x = r.r10;
    let y = r.rdi;
    let z = r.rax;
    [w, x, y, z]
}

#[test]
fn operands_never_alias_registers_the_block_writes() {
    let mut r = of::map_registers().unwrap();
    let mut rng = Rng(7);
    for _ in 0..50 {
        let v = [rng.next(), rng.next(), rng.next(), rng.next()];
        assert_eq!(pinned(&mut r, v[0], v[1], v[2], v[3]), v);
    }
}

#[of::mapped]
fn shadowed(r: &mut of::Registers, a: u64) -> u64 {
    let v = 1u64;
    assert_eq!(v, 1);
    r.r8 = a;
    let v = r.r8;
    // Uses the `v` just read, so it starts a new block after the read's.
    r.r9 = v.wrapping_add(v);
    let w = r.r9;
    w
}

#[test]
fn a_right_hand_side_sees_the_value_read_just_before() {
    let mut r = of::map_registers().unwrap();
    assert_eq!(shadowed(&mut r, 21), 42);
    assert_eq!(shadowed(&mut r, u64::MAX), u64::MAX - 1);
}

#[of::mapped]
fn nested(r: &mut of::Registers, n: u64) -> u64 {
    let mut total = 0u64;
    for i in 0..n {
        if i % 3 == 0 {
            r.r12 = i;
            r.r12 <<= 1;
        } else {
            r.r12 = i;
            r.r12 += i;
        }
        let v = r.r12;
        total += v;
    }
    total
}

#[test]
fn statements_in_loops_and_branches_are_rewritten() {
    let mut r = of::map_registers().unwrap();
    assert_eq!(nested(&mut r, 100), (0..100u64).map(|i| 2 * i).sum::<u64>());
}

/// The code of `pinned`: its eight register statements are ONE asm block, so its page-0
/// instructions are consecutive, in source order, in debug and release alike.
#[test]
fn a_fused_block_is_consecutive_page_0_instructions_in_source_order() {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    let f = pinned as fn(&mut of::Registers, u64, u64, u64, u64) -> [u64; 4];
    let start = f as usize as u64;
    // SAFETY: reads the function's own code bytes; 512 bytes lie inside the text segment
    // (the test binary has far more code after any function).
    let code = unsafe { std::slice::from_raw_parts(start as *const u8, 512) };
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut seen = vec![];
    let mut index = 0;
    while decoder.can_decode() {
        let i = decoder.decode();
        if i.mnemonic() == Mnemonic::Ret {
            break;
        }
        let page0 = (0..i.op_count()).any(|k| i.op_kind(k) == OpKind::Memory)
            && i.memory_base() == Register::None
            && i.memory_index() == Register::None
            && i.memory_displacement64() < 0x1000;
        if page0 {
            seen.push((index, i.memory_displacement64(), i.mnemonic()));
        }
        index += 1;
    }
    let offsets: Vec<u64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(
        offsets,
        [0x58, 0x50, 0x38, 0x00, 0x58, 0x50, 0x38, 0x00],
        "{seen:x?}"
    );
    assert!(seen.iter().all(|s| s.2 == Mnemonic::Mov));
    assert!(
        seen.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "something between the page-0 instructions: {seen:x?}"
    );
}

/// A block that writes rcx, then shifts by a run-time count (which goes through cl), then
/// reads back both registers it wrote: every value must survive the count's trip through cl.
#[of::mapped]
fn write_rcx_then_shift(r: &mut of::Registers, x: u64, c: u64, n: u8) -> (u64, u64) {
    r.r10 = x;
    r.rcx = c;
    r.r10 >>= n;
    let v = r.r10;
    let k = r.rcx;
    (v, k)
}

/// Two run-time counts in a row, with values written before and read after.
#[of::mapped]
fn two_run_time_shifts(r: &mut of::Registers, x: u64, y: u32, n: u8, m: i64) -> (u64, u64) {
    r.r9 = x;
    r.r11d = y;
    r.r9 <<= n;
    r.r11d >>= m;
    let a = r.r9;
    let b = r.r11;
    (a, b)
}

#[test]
fn run_time_counts_keep_the_values_written_around_them() {
    let mut r = of::map_registers().unwrap();
    for (x, c, n) in [
        (0xF00u64, 5u64, 8u8),
        (u64::MAX, 0xDEAD_BEEF, 63),
        (0x1234, 7, 0),
    ] {
        assert_eq!(write_rcx_then_shift(&mut r, x, c, n), (x >> (n % 64), c));
    }
    for (x, y, n, m) in [(1u64, 0x8000_0000u32, 4u8, 31i64), (0xFF, 0xF0F0, 68, -28)] {
        let want = (x << (n % 64), u64::from(y >> m.rem_euclid(32)));
        assert_eq!(two_run_time_shifts(&mut r, x, y, n, m), want);
    }
}

/// Eight stores need more operand registers than one block has (the macro splits before the
/// seventh); a register written again after the split may be read back: only the values
/// written before it are lost (`read_across_a_forced_split` in tests/ui).
#[of::mapped]
fn rewritten_after_a_forced_split(r: &mut of::Registers, a: u64) -> (u64, u64) {
    r.rax = a;
    r.rdx = a;
    r.rsi = a;
    r.rdi = a;
    r.r8 = a;
    r.r9 = a;
    r.r10 = a;
    r.r11 = a;
    r.rax = 7;
    let v = r.rax;
    let w = r.r11;
    (v, w)
}

#[test]
fn a_register_written_again_after_a_forced_split_reads_back() {
    let mut r = of::map_registers().unwrap();
    assert_eq!(
        rewritten_after_a_forced_split(&mut r, u64::MAX),
        (7, u64::MAX)
    );
}
