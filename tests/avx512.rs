//! AVX-512 on the map through real faults (issue 12): EVEX loads and stores with opmasks and
//! fault suppression, zmm16..31 and k0..7 read and written through the signal frame's XSAVE
//! state, VEX vs legacy-SSE writes above bit 256, and run-ahead over EVEX instructions. Each
//! test prints why it is skipped on a CPU without AVX-512 (the differential sweep in
//! `tests/vector_diff.rs` covers every form; these are the readable cases).

use std::arch::asm;

/// Whether `of` emulates AVX512F/BW/VL here (the CPU has them, the OS enabled them, and
/// `OF_CPU_HIDE` does not hide them).
fn avx512() -> bool {
    use iced_x86::CpuidFeature as F;
    let cpu = of::engine::cpu::get();
    let ok = cpu.has(F::AVX512F) && cpu.has(F::AVX512BW) && cpu.has(F::AVX512VL);
    if !ok {
        eprintln!("skipped: this CPU lacks AVX512F/BW/VL (or OF_CPU_HIDE hides them)");
    }
    ok
}

#[test]
fn vmovdqu64_zmm16_loads_eight_registers_through_the_xsave_state() {
    if !avx512() {
        return;
    }
    of::map_registers().unwrap();
    let vals: [u64; 8] = core::array::from_fn(|i| 0x0101_0101_0101_0101 * (i as u64 + 1));
    let mut got = [0u64; 8];
    // SAFETY: zmm16 and the GPRs named are declared; the map access covers r8..r15, read only.
    unsafe {
        asm!(
            "vmovdqu64 zmm16, zmmword ptr [0x40]", // zmm16 = r8..r15, through the map
            "vmovdqu64 [{g}], zmm16",
            g = in(reg) got.as_mut_ptr(),
            in("r8") vals[0], in("r9") vals[1], in("r10") vals[2], in("r11") vals[3],
            in("r12") vals[4], in("r13") vals[5], in("r14") vals[6], in("r15") vals[7],
            out("zmm16") _,
        );
    }
    assert_eq!(got, vals);
}

#[test]
fn masked_store_writes_only_the_selected_registers_and_skips_holes() {
    if !avx512() {
        return;
    }
    of::map_registers().unwrap();
    let src: [u64; 8] = core::array::from_fn(|i| 0xA000 + i as u64);
    let (mut r8, mut r9, mut r10) = (1u64, 2u64, 3u64);
    // k1 = 0b101: qwords 0 and 2 of a store at 0x40 (r8 and r10); r9 is not written.
    // SAFETY: the registers named are declared; the masked store touches r8 and r10 only.
    unsafe {
        asm!(
            "vmovdqu64 zmm17, [{s}]",
            "mov eax, 5", // k1 = 0b101
            "kmovw k1, eax",
            "vmovdqu64 zmmword ptr [0x40]{{k1}}, zmm17",
            s = in(reg) src.as_ptr(),
            inout("r8") r8, inout("r9") r9, inout("r10") r10,
            out("eax") _, out("k1") _, out("zmm17") _,
        );
    }
    assert_eq!((r8, r9, r10), (0xA000, 2, 0xA002));
    // A 64-byte load at 0x80 covers rip, rflags, fs, gs and then bytes 0xa0..0xc0 that are not
    // registers: with k1 selecting the first two qwords only (rip and rflags), the unselected
    // elements are not accessed (fault suppression) and the fault is ours.
    let mut out = [0u64; 8];
    let next: u64;
    // SAFETY: as above; zmm18 and k1 declared; reads only.
    unsafe {
        asm!(
            "mov eax, 3", // k1 = 0b11
            "kmovw k1, eax",
            "vmovdqu64 zmm18{{k1}}{{z}}, zmmword ptr [0x80]",
            "2:",
            "lea {n}, [rip + 2b]",
            "vmovdqu64 [{o}], zmm18",
            o = in(reg) out.as_mut_ptr(), n = out(reg) next,
            out("eax") _, out("k1") _, out("zmm18") _,
        );
    }
    assert_eq!(out[0], next, "the rip slot reads the next instruction");
    assert_eq!(out[1] & 0x202, 0x202, "rflags: bit 1 and IF");
    assert_eq!(out[2..], [0; 6], "zeroing-masked elements");
}

#[test]
fn opmask_results_come_back_through_the_frame() {
    if !avx512() {
        return;
    }
    of::map_registers().unwrap();
    let k: u64;
    // vpcmpeqb k2, zmm19, [0x40]: which bytes of r8..r15 equal zmm19's bytes (all 0x11 here).
    // SAFETY: the registers named are declared; the map access reads r8..r15.
    unsafe {
        asm!(
            "vpbroadcastb zmm19, {b:e}",
            "vpcmpeqb k2, zmm19, zmmword ptr [0x40]",
            "kmovq {k}, k2",
            b = in(reg) 0x11u32, k = out(reg) k,
            in("r8") 0x1111_0000_0000_1111u64, in("r9") 0u64, in("r10") 0x11u64,
            in("r11") 0u64, in("r12") 0u64, in("r13") 0u64, in("r14") 0u64,
            in("r15") 0x1100_0000_0000_0000u64,
            out("zmm19") _, out("k2") _,
        );
    }
    assert_eq!(k, 0b1100_0011 | (1 << 16) | (1 << 63));
}

#[test]
fn vex_writes_zero_bits_256_to_511_and_legacy_sse_writes_keep_them() {
    if !avx512() {
        return;
    }
    of::map_registers().unwrap();
    let ones = [0xFFu8; 64];
    let mut legacy = [0u8; 64];
    let mut vex128 = [0u8; 64];
    let mut vex256 = [0u8; 64];
    // zmm1 = all ones, then each kind of write with a map source (xmm0's slot, 0x100).
    // SAFETY: zmm0/zmm1 are declared; the map accesses read xmm0's slot.
    unsafe {
        asm!(
            "vmovdqu64 zmm1, [{ones}]",
            "movdqu xmm1, xmmword ptr [0x100]", // legacy SSE: bits 128..512 kept
            "vmovdqu64 [{a}], zmm1",
            "vmovdqu64 zmm1, [{ones}]",
            "vpaddd xmm1, xmm1, xmmword ptr [0x100]", // VEX.128: bits 128..512 zeroed
            "vmovdqu64 [{b}], zmm1",
            "vmovdqu64 zmm1, [{ones}]",
            "vpaddd ymm1, ymm1, ymmword ptr [0x100]", // VEX.256: bits 256..512 zeroed
            "vmovdqu64 [{c}], zmm1",
            ones = in(reg) ones.as_ptr(), a = in(reg) legacy.as_mut_ptr(),
            b = in(reg) vex128.as_mut_ptr(), c = in(reg) vex256.as_mut_ptr(),
            out("zmm0") _, out("zmm1") _,
        );
    }
    assert_eq!(legacy[16..], [0xFF; 48]);
    assert_eq!(vex128[16..], [0; 48]);
    assert_eq!(vex256[32..], [0; 32]);
}

/// A child process: copies 0x90 map bytes with glibc's own memcpy and prints how many faults
/// the handler took and how many instructions run-ahead emulated.
fn memcpy_child() {
    of::map_registers().unwrap();
    // Call glibc's memcpy through a pointer the compiler cannot see through, so the copy is
    // glibc's (its ifunc picks the variant for this CPU and GLIBC_TUNABLES).
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"memcpy".as_ptr()) };
    assert!(!sym.is_null());
    // SAFETY: memcpy's C signature.
    let memcpy: extern "C" fn(*mut u8, *const u8, usize) -> *mut u8 =
        unsafe { std::mem::transmute(std::hint::black_box(sym)) };
    let mut buf = [0u8; 0x90];
    let before = of::engine::signal::stats();
    memcpy(
        buf.as_mut_ptr(),
        std::hint::black_box(0usize) as *const u8,
        0x90,
    );
    let after = of::engine::signal::stats();
    println!(
        "faults {} runahead {}",
        after.faults_emulated - before.faults_emulated,
        after.runahead_instructions - before.runahead_instructions
    );
}

fn memcpy_faults(tunables: Option<&str>) -> (u64, u64) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "glibc_memcpy_of_0x90_map_bytes_faults_no_more_with_evex",
        "--exact",
        "--nocapture",
    ])
    .env("OF_AVX512_CHILD", "memcpy");
    if let Some(t) = tunables {
        cmd.env("GLIBC_TUNABLES", t);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("faults "))
        .unwrap_or_else(|| panic!("no figures in {text}"));
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (f[0], f[1])
}

#[test]
fn glibc_memcpy_of_0x90_map_bytes_faults_no_more_with_evex() {
    if std::env::var("OF_AVX512_CHILD").as_deref() == Ok("memcpy") {
        memcpy_child();
        return;
    }
    if !avx512() || !of::engine::cpu::get().has(iced_x86::CpuidFeature::AVX2) {
        return;
    }
    let evex = memcpy_faults(None);
    let avx2 = memcpy_faults(Some(
        "glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD",
    ));
    println!(
        "glibc memcpy(buf, 0, 0x90): default (EVEX) variant {} faults + {} run-ahead instructions; AVX2 variant {} faults + {} run-ahead instructions",
        evex.0, evex.1, avx2.0, avx2.1
    );
    assert!(evex.0 >= 1 && avx2.0 >= 1);
    assert!(evex.0 <= avx2.0, "EVEX {evex:?} vs AVX2 {avx2:?}");
}
