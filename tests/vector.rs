//! Vector instructions on map bytes (issue 5): xmm slots, SSE/AVX loads and stores of any width
//! on GPR bytes, arithmetic with a map source compared with the same instruction on memory.

use std::arch::asm;

#[test]
fn xmm_slots_round_trip_through_reg_u128() {
    let r = of::map_registers().unwrap();
    r.xmm7.store(0x0011_2233_4455_6677_8899_AABB_CCDD_EEFF);
    assert_eq!(r.xmm7.load(), 0x0011_2233_4455_6677_8899_AABB_CCDD_EEFF);
    // The slot is xmm7 itself: read it natively in the same block as a map store.
    let mut native = [0u8; 16];
    let v = 0x1234_5678_9ABC_DEF0_0FED_CBA9_8765_4321u128.to_le_bytes();
    // SAFETY: xmm7 written through the map, then read natively; both declared.
    unsafe {
        asm!(
            "movdqu xmm0, [{v}]",
            "movdqu xmmword ptr [0x170], xmm0", // xmm7 = value, through the map
            "movdqu [{out}], xmm7",
            v = in(reg) v.as_ptr(), out = in(reg) native.as_mut_ptr(),
            out("xmm0") _, out("xmm7") _,
        );
    }
    assert_eq!(native, v);
}

#[test]
fn movdqu_load_joins_two_registers_and_store_splits() {
    of::map_registers().unwrap();
    let (lo, hi): (u64, u64) = (0x1111_2222_3333_4444, 0x5555_6666_7777_8888);
    let mut got = [0u8; 16];
    let (mut r8, mut r9) = (0u64, 0u64);
    // SAFETY: the registers named are declared; the map accesses cover r8..r11 and rax/rcx.
    unsafe {
        asm!(
            "movdqu xmm3, xmmword ptr [0x00]", // xmm3 = rax:rcx
            "movdqu [{g}], xmm3",
            "movdqu xmmword ptr [0x40], xmm3", // r8 = rax, r9 = rcx
            g = in(reg) got.as_mut_ptr(),
            inout("rax") lo => _, inout("rcx") hi => _,
            out("r8") r8, out("r9") r9, out("xmm3") _,
        );
    }
    assert_eq!(got[..8], lo.to_le_bytes());
    assert_eq!(got[8..], hi.to_le_bytes());
    assert_eq!((r8, r9), (lo, hi));
}

#[test]
fn vmovdqu_ymm_loads_four_registers() {
    of::map_registers().unwrap();
    let vals = [
        0x0101_0101_0101_0101u64,
        0x0202_0202_0202_0202,
        0x0303_0303_0303_0303,
        0x0404_0404_0404_0404,
    ];
    let mut got = [0u64; 4];
    // SAFETY: as above; ymm0 declared.
    unsafe {
        asm!(
            "vmovdqu ymm0, ymmword ptr [0x40]", // r8..r11
            "vmovdqu [{g}], ymm0",
            "vzeroupper",
            g = in(reg) got.as_mut_ptr(),
            in("r8") vals[0], in("r9") vals[1], in("r10") vals[2], in("r11") vals[3],
            out("xmm0") _,
        );
    }
    assert_eq!(got, vals);
}

#[test]
fn misaligned_movdqa_raises_gp_like_the_cpu() {
    if std::env::var_os("OF_VECTOR_CHILD").is_some() {
        of::map_registers().unwrap();
        // SAFETY: deliberately faults (#GP).
        unsafe { asm!("movdqa xmm0, xmmword ptr [0x08]", out("xmm0") _) };
        std::process::exit(0);
    }
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "misaligned_movdqa_raises_gp_like_the_cpu",
            "--nocapture",
        ])
        .env("OF_VECTOR_CHILD", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
}

/// `op xmm1, [mem]` on an ordinary buffer vs on map bytes holding the same values.
fn arith(
    name: &str,
    native: unsafe fn(*const u8, &mut [u8; 16]),
    mapped: unsafe fn(u64, u64, &mut [u8; 16]),
) {
    of::map_registers().unwrap();
    let mut seed = 0x9E37_79B9u64;
    for _ in 0..200 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (a, b) = (seed, seed.rotate_left(17) ^ 0xFFFF_0000_FFFF_0000);
        // Legacy-SSE memory operands must be 16-byte aligned (they are, at 0x40, in the map).
        #[repr(align(16))]
        struct Aligned([u8; 16]);
        let mut buf = Aligned([0u8; 16]);
        buf.0[..8].copy_from_slice(&a.to_le_bytes());
        buf.0[8..].copy_from_slice(&b.to_le_bytes());
        let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
        // SAFETY: the helpers only read `buf` / the map slots of r8 and r9 they are given.
        unsafe {
            native(buf.0.as_ptr(), &mut x);
            mapped(a, b, &mut y);
        }
        assert_eq!(x, y, "{name}: {a:#x} {b:#x}");
    }
}

macro_rules! arith_case {
    ($test:ident, $insn:literal) => {
        #[test]
        fn $test() {
            unsafe fn native(p: *const u8, out: &mut [u8; 16]) {
                // SAFETY: reads 16 bytes at p; xmm1 declared.
                unsafe {
                    asm!("pcmpeqd xmm1, xmm1", concat!($insn, " xmmword ptr [{p}]"), "movdqu [{o}], xmm1",
                        p = in(reg) p, o = in(reg) out.as_mut_ptr(), out("xmm1") _)
                }
            }
            unsafe fn mapped(a: u64, b: u64, out: &mut [u8; 16]) {
                // SAFETY: the operand is r8:r9 through the map (16-byte aligned at 0x40).
                unsafe {
                    asm!("pcmpeqd xmm1, xmm1", concat!($insn, " xmmword ptr [0x40]"), "movdqu [{o}], xmm1",
                        o = in(reg) out.as_mut_ptr(), in("r8") a, in("r9") b, out("xmm1") _)
                }
            }
            arith(stringify!($test), native, mapped);
        }
    };
}

arith_case!(paddd_with_a_map_source, "paddd xmm1,");
arith_case!(pxor_with_a_map_source, "pxor xmm1,");
arith_case!(pcmpeqb_with_a_map_source, "pcmpeqb xmm1,");
arith_case!(pshufb_with_a_map_source, "pshufb xmm1,");
arith_case!(addps_with_a_map_source, "addps xmm1,");
arith_case!(vpaddq_with_a_map_source, "vpaddq xmm1, xmm1,");

#[test]
fn snapshot_reads_xmm_and_mxcsr_through_the_map() {
    of::map_registers().unwrap();
    // The xmm values a snapshot sees are whatever compiled code left in the registers (the
    // xmm slots themselves are checked by the differential test); MXCSR and the segment bases
    // are stable and compared with native reads.
    let s = of::snapshot().unwrap();
    let mut native_mxcsr = 0u32;
    // SAFETY: stmxcsr writes 4 bytes to the local.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut native_mxcsr) };
    assert_eq!(s.mxcsr, native_mxcsr);
    let (mut fs, mut gs) = (0u64, 0u64);
    // SAFETY: arch_prctl ARCH_GET_FS/GS writes one u64.
    unsafe {
        libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64);
        libc::syscall(libc::SYS_arch_prctl, 0x1004, &mut gs as *mut u64);
    }
    assert_eq!((s.fs_base, s.gs_base), (fs, gs));
}

#[test]
fn registers_expose_mxcsr_and_read_only_segment_bases() {
    let r = of::map_registers().unwrap();
    let mut native = 0u32;
    // SAFETY: stmxcsr writes 4 bytes to the local.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut native) };
    assert_eq!(r.mxcsr.load(), native);
    let mut fs = 0u64;
    // SAFETY: arch_prctl ARCH_GET_FS writes one u64.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64) };
    assert_eq!(r.fs_base.load(), fs);
    assert_eq!(r.gs_base.load(), {
        let mut gs = 0u64;
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1004, &mut gs as *mut u64) };
        gs
    });
}

#[test]
fn ldmxcsr_and_stmxcsr_on_map_bytes() {
    of::map_registers().unwrap();
    let (mut before, mut after, mut stored) = (0u32, 0u32, 0u64);
    // SAFETY: MXCSR is changed (rounding toward zero) and restored inside the block; r8 is
    // declared.
    unsafe {
        asm!(
            "stmxcsr [{b}]",
            "mov r8d, 0x7f80",             // default masks, rounding toward zero
            "ldmxcsr dword ptr [0x40]",    // MXCSR = r8d, through the map
            "stmxcsr [{a}]",
            "stmxcsr dword ptr [0x48]",    // r9's low half = MXCSR, through the map
            "ldmxcsr [{b}]",
            b = in(reg) &mut before, a = in(reg) &mut after,
            out("r8") _, inout("r9") u64::MAX => stored,
        );
    }
    assert_eq!(after, 0x7f80);
    // A 4-byte store to the map keeps the high half of r9.
    assert_eq!(stored, 0xFFFF_FFFF_0000_7F80);
    assert_ne!(before, after);
}

#[test]
fn ymm_upper_halves_round_trip_through_the_signal_frame() {
    of::map_registers().unwrap();
    let src: [u64; 4] = [1, 2, 3, 4];
    let mut out = [0u64; 4];
    // SAFETY: ymm5 and the GPRs used are declared; the map store writes r12..r15.
    unsafe {
        asm!(
            "vmovdqu ymm5, [{s}]",
            "vmovdqu ymmword ptr [0x60], ymm5",    // r12..r15 = the four qwords (upper half from XSAVE)
            "vpxor xmm5, xmm5, xmm5",              // VEX.128: zeroes all of ymm5
            "vmovdqu ymm5, ymmword ptr [0x60]",    // back, upper half into the frame's XSAVE area
            "vmovdqu [{o}], ymm5",
            "vzeroupper",
            s = in(reg) src.as_ptr(), o = in(reg) out.as_mut_ptr(),
            out("r12") _, out("r13") _, out("r14") _, out("r15") _, out("xmm5") _,
        );
    }
    assert_eq!(out, src);
}
