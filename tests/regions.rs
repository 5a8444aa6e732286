//! Trapped regions (issue 15, SPEC §7): instructions on a region served by a device.
//!
//! The differential test runs random instruction forms — every integer form `difftest`
//! selects that has an explicit memory operand (arithmetic, logic, moves, shifts, bit tests,
//! xchg/xadd/cmpxchg with and without `lock`, set/cmov, mul/imul …), string instructions with
//! and without `rep` in both directions, and vector loads and stores — twice from the same
//! random state: once on an ordinary buffer, once on a region whose device is plain memory
//! holding the same bytes. Registers, status flags and DF, and the memory (the buffer vs the
//! device's bytes) must agree. Also: threads hammering one region with `lock add`.

use iced_x86::{Code, Instruction, Register};
use of::region::Region;
use std::sync::atomic::{AtomicU64, Ordering};

mod region_harness;

/// The tests of this file one at a time (one counts faults process-wide).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

use region_harness::*;

/// Runs `instr` once on `buf` (r15 = its address) and once on the region (r15 = its address)
/// from the same state; returns whether it ran (the moffs moves have no base register to
/// point at either), or the differences.
fn compare(
    instr: &Instruction,
    r: &mut Rng,
    buf: &mut [u8; LEN],
    region: &Region,
) -> Result<bool, String> {
    let bytes0: Vec<u8> = (0..LEN).map(|_| r.next() as u8).collect();
    let state = random_block(r, 0);
    let Some(h) = Fixed::new(|site| encode(instr, site)) else {
        return Ok(false);
    };
    buf.copy_from_slice(&bytes0);
    region.with_device(|d: &mut Memory| d.bytes.copy_from_slice(&bytes0));
    let mut native_in = state;
    native_in.gpr[15] = buf.as_mut_ptr() as u64;
    let mut region_in = state;
    region_in.gpr[15] = region.as_ptr() as u64;
    let want = h.call(&native_in);
    let got = h.call(&region_in);
    let dev = region.with_device(|d: &mut Memory| d.bytes);
    let diffs = differences(&want, &got, buf, &dev);
    if diffs.is_empty() {
        Ok(true)
    } else {
        Err(format!("`{instr}`: {}", diffs.join(", ")))
    }
}

#[test]
fn instruction_forms_on_a_region_match_ordinary_memory() {
    let _serial = serial();
    of::map_registers().unwrap();
    let region = Region::new(LEN, memory()).unwrap();
    let mut buf = Box::new([0u8; LEN]);
    let mut r = Rng(0x5EED_0015);
    let mut failures = Vec::new();
    let mut cases = 0;
    let forms: Vec<Instruction> = integer_forms().into_iter().chain(vector_forms()).collect();
    assert!(forms.len() > 300, "only {} forms", forms.len());
    for f in &forms {
        for _ in 0..8 {
            let mut i = *f;
            let size = i.memory_size().size().max(1) as u64;
            let mut disp = r.below(LEN as u64 - size + 1) as i64;
            if size == 16 && i.code().encoding() == iced_x86::EncodingKind::Legacy {
                disp &= !15; // legacy SSE: #GP when misaligned, on both sides
            }
            i.set_memory_base(Register::R15);
            i.set_memory_index(Register::None);
            i.set_memory_displacement64(disp as u64);
            // iced-x86's sizes with 64-bit addressing: 1 = disp8, 8 = disp32.
            i.set_memory_displ_size(if disp < 128 { 1 } else { 8 });
            i.set_segment_prefix(Register::None);
            if r.below(4) == 0 && i.op_code().can_use_lock_prefix() {
                i.set_has_lock_prefix(true);
            }
            if std::env::var_os("OF_REGIONS_TRACE").is_some() {
                eprintln!("{i}");
            }
            match compare(&i, &mut r, &mut buf, &region) {
                Ok(ran) => cases += u64::from(ran),
                Err(e) => {
                    cases += 1;
                    failures.push(e);
                }
            }
        }
    }
    let (reads, writes) = region.with_device(|d: &mut Memory| (d.reads, d.writes));
    eprintln!(
        "regions: {} forms, {cases} cases, {} mismatches; the device served {reads} reads and {writes} writes",
        forms.len(),
        failures.len()
    );
    for f in failures.iter().take(20) {
        eprintln!("  {f}");
    }
    assert!(failures.is_empty());
    assert!(reads > 0 && writes > 0);
}

/// String instructions with and without `rep`, in both directions, between the region and
/// ordinary memory.
#[test]
fn string_instructions_on_a_region_match_ordinary_memory() {
    let _serial = serial();
    of::map_registers().unwrap();
    let region = Region::new(LEN, memory()).unwrap();
    let mut buf = Box::new([0u8; LEN]);
    let mut other = Box::new([0u8; LEN]);
    let mut r = Rng(0x57A1_0015);
    let codes = [
        Code::Movsb_m8_m8,
        Code::Movsw_m16_m16,
        Code::Movsd_m32_m32,
        Code::Movsq_m64_m64,
        Code::Stosb_m8_AL,
        Code::Stosq_m64_RAX,
        Code::Lodsb_AL_m8,
        Code::Lodsq_RAX_m64,
        Code::Cmpsb_m8_m8,
        Code::Cmpsd_m32_m32,
        Code::Scasb_AL_m8,
        Code::Scasq_RAX_m64,
    ];
    let mut failures = Vec::new();
    let mut cases = 0;
    for &c in &codes {
        for k in 0..24 {
            let rep = match k % 3 {
                0 => iced_x86::RepPrefixKind::None,
                1 => iced_x86::RepPrefixKind::Repe,
                _ => iced_x86::RepPrefixKind::Repne,
            };
            let none = Register::None;
            let i = match c {
                Code::Movsb_m8_m8 => Instruction::with_movsb(64, none, rep),
                Code::Movsw_m16_m16 => Instruction::with_movsw(64, none, rep),
                Code::Movsd_m32_m32 => Instruction::with_movsd(64, none, rep),
                Code::Movsq_m64_m64 => Instruction::with_movsq(64, none, rep),
                Code::Stosb_m8_AL => Instruction::with_stosb(64, rep),
                Code::Stosq_m64_RAX => Instruction::with_stosq(64, rep),
                Code::Lodsb_AL_m8 => Instruction::with_lodsb(64, none, rep),
                Code::Lodsq_RAX_m64 => Instruction::with_lodsq(64, none, rep),
                Code::Cmpsb_m8_m8 => Instruction::with_cmpsb(64, none, rep),
                Code::Cmpsd_m32_m32 => Instruction::with_cmpsd(64, none, rep),
                Code::Scasb_AL_m8 => Instruction::with_scasb(64, rep),
                _ => Instruction::with_scasq(64, rep),
            }
            .unwrap();
            let Some(h) = Fixed::new(|site| encode(&i, site)) else {
                continue;
            };
            let bytes0: Vec<u8> = (0..LEN).map(|_| r.next() as u8).collect();
            let bytes1: Vec<u8> = (0..LEN).map(|_| r.next() as u8).collect();
            buf.copy_from_slice(&bytes0);
            other.copy_from_slice(&bytes1);
            region.with_device(|d: &mut Memory| d.bytes.copy_from_slice(&bytes0));
            let mut state = random_block(&mut r, 0);
            let down = r.below(2) == 1;
            if down {
                state.flags |= 0x400;
            } else {
                state.flags &= !0x400;
            }
            let count = r.below(12);
            state.gpr[1] = count; // rcx
            // rsi and rdi: one in the region (or buffer), one in `other`, 96 bytes in.
            let region_is_source = r.below(2) == 0;
            let (mut native_in, mut region_in) = (state, state);
            let other_at = other.as_mut_ptr() as u64 + 96;
            let (src_n, dst_n, src_r, dst_r) = if region_is_source {
                (
                    buf.as_mut_ptr() as u64 + 96,
                    other_at,
                    region.as_ptr() as u64 + 96,
                    other_at,
                )
            } else {
                (
                    other_at,
                    buf.as_mut_ptr() as u64 + 96,
                    other_at,
                    region.as_ptr() as u64 + 96,
                )
            };
            native_in.gpr[6] = src_n;
            native_in.gpr[7] = dst_n;
            region_in.gpr[6] = src_r;
            region_in.gpr[7] = dst_r;
            // The ordinary side must start equal in both runs.
            let want = h.call(&native_in);
            let other_after_native: Vec<u8> = other.to_vec();
            other.copy_from_slice(&bytes1);
            let got = h.call(&region_in);
            cases += 1;
            let mut diffs = Vec::new();
            for g in [0usize, 1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14] {
                if want.gpr[g] != got.gpr[g] {
                    diffs.push(format!("gpr{g} {:#x} vs {:#x}", want.gpr[g], got.gpr[g]));
                }
            }
            // rsi/rdi moved by the same amounts.
            for g in [6usize, 7] {
                let dn = want.gpr[g].wrapping_sub(native_in.gpr[g]);
                let dr = got.gpr[g].wrapping_sub(region_in.gpr[g]);
                if dn != dr {
                    diffs.push(format!("gpr{g} moved {dn:#x} vs {dr:#x}"));
                }
            }
            if want.flags & FLAGS != got.flags & FLAGS {
                diffs.push(format!(
                    "flags {:#x} vs {:#x}",
                    want.flags & FLAGS,
                    got.flags & FLAGS
                ));
            }
            let dev = region.with_device(|d: &mut Memory| d.bytes);
            if dev[..] != buf[..] {
                diffs.push(String::from("region bytes differ"));
            }
            if other[..] != other_after_native[..] {
                diffs.push(String::from("ordinary bytes differ"));
            }
            if !diffs.is_empty() {
                failures.push(format!(
                    "`{i}` rcx {count} df {down} region {}: {}",
                    if region_is_source {
                        "source"
                    } else {
                        "destination"
                    },
                    diffs.join(", ")
                ));
            }
        }
    }
    eprintln!(
        "regions, strings: {cases} cases, {} mismatches",
        failures.len()
    );
    for f in failures.iter().take(20) {
        eprintln!("  {f}");
    }
    assert!(failures.is_empty());
}

/// Threads hammering one region with `lock add`: the total is exact.
#[test]
fn threads_hammering_a_region_with_lock_add_get_exact_totals() {
    let _serial = serial();
    of::map_registers().unwrap();
    let region = std::sync::Arc::new(Region::new(64, memory()).unwrap());
    const THREADS: u64 = 8;
    const EACH: u64 = 2_000;
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let region = region.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let p = region.as_ptr() as u64;
                for _ in 0..EACH {
                    // SAFETY: an 8-byte locked add inside the region (offsets 8 and 16).
                    unsafe {
                        std::arch::asm!(
                            "lock add qword ptr [{p} + 8], 1",
                            "lock xadd qword ptr [{p} + 16], {one}",
                            p = in(reg) p,
                            one = inout(reg) 1u64 => _,
                        )
                    };
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (a, b) = region.with_device(|d: &mut Memory| {
        (
            u64::from_le_bytes(d.bytes[8..16].try_into().unwrap()),
            u64::from_le_bytes(d.bytes[16..24].try_into().unwrap()),
        )
    });
    assert_eq!((a, b), (THREADS * EACH, THREADS * EACH));
}

/// A device that panics: the process aborts with the panic's message and the instruction
/// being served (run in a child process: this test's binary, re-executed).
#[test]
fn a_device_panic_aborts_with_the_message_and_the_instruction() {
    let _serial = serial();
    use std::os::unix::process::ExitStatusExt;
    const CHILD: &str = "OF_REGIONS_PANIC_CHILD";
    if std::env::var_os(CHILD).is_some() {
        struct Burning;
        impl of::region::Device for Burning {
            fn read(&mut self, _: u64, _: &mut [u8]) {
                panic!("the device is on fire");
            }
            fn write(&mut self, _: u64, _: &[u8]) {}
        }
        let r = Region::new(8, Burning).unwrap();
        // SAFETY: a 4-byte read inside the region (whose device panics: the process ends).
        unsafe {
            std::arch::asm!("mov eax, dword ptr [rdx + 4]", in("rdx") r.as_ptr(), out("eax") _);
        }
        unreachable!("the read returned");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_device_panic_aborts_with_the_message_and_the_instruction",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(
        stderr.contains(
            "of: a device panicked while serving `mov eax, dword ptr [rdx+4]` (8b 42 04): the device is on fire"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("the read returned"), "{stderr}");
}

/// 256- and 512-bit accesses (AVX, AVX-512 with an opmask and a broadcast) on a region and on
/// ordinary memory: the same register results and the same bytes. Forms the CPU lacks are
/// skipped.
#[test]
fn wide_vector_accesses_on_a_region_match_ordinary_memory() {
    let _serial = serial();
    of::map_registers().unwrap();
    let avx = std::arch::is_x86_feature_detected!("avx");
    let avx512 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw");
    if !avx {
        eprintln!("no AVX on this CPU: nothing to test");
        return;
    }
    let region = Region::new(LEN, memory()).unwrap();
    let mut buf = Box::new([0u8; LEN]);
    let mut r = Rng(0x0256_0512);
    let kinds: &[&str] = if avx512 {
        &[
            "ymm load",
            "ymm store",
            "zmm load",
            "zmm masked store",
            "zmm broadcast add",
            "zmm masked load",
        ]
    } else {
        &["ymm load", "ymm store"]
    };
    let mut cases = 0;
    /// Runs `kind` with `base` as the memory operand's base: loads `input` into the source
    /// register, writes the destination register to the returned array.
    fn snippet(kind: &str, base: *mut u8, offset: usize, input: &[u8; 64], mask: u64) -> [u8; 64] {
        let mut out = [0u8; 64];
        let p = base.wrapping_add(offset);
        let (i, o) = (input.as_ptr(), out.as_mut_ptr());
        // SAFETY: each form reads or writes at most 64 bytes at `p` (inside the region or the
        // buffer: offsets are chosen so) and `input`/`out`, and clobbers only what it names.
        unsafe {
            match kind {
                "ymm load" => std::arch::asm!(
                    "vmovdqu ymm0, [{p}]", "vmovdqu [{o}], ymm0",
                    p = in(reg) p, o = in(reg) o, out("ymm0") _),
                "ymm store" => std::arch::asm!(
                    "vmovdqu ymm1, [{i}]", "vmovdqu [{p}], ymm1",
                    p = in(reg) p, i = in(reg) i, out("ymm1") _),
                "zmm load" => std::arch::asm!(
                    "vmovdqu64 zmm0, [{p}]", "vmovdqu64 [{o}], zmm0",
                    p = in(reg) p, o = in(reg) o, out("zmm0") _),
                "zmm masked store" => std::arch::asm!(
                    "kmovq k1, {m}", "vmovdqu64 zmm1, [{i}]", "vmovdqu8 [{p}]{{k1}}, zmm1",
                    p = in(reg) p, i = in(reg) i, m = in(reg) mask, out("zmm1") _, out("k1") _),
                "zmm broadcast add" => std::arch::asm!(
                    "vmovdqu64 zmm1, [{i}]", "vpaddd zmm0, zmm1, dword ptr [{p}]{{1to16}}",
                    "vmovdqu64 [{o}], zmm0",
                    p = in(reg) p, i = in(reg) i, o = in(reg) o, out("zmm0") _, out("zmm1") _),
                _ => std::arch::asm!(
                    "kmovq k1, {m}", "vmovdqu64 zmm0, [{i}]", "vmovdqu16 zmm0{{k1}}{{z}}, [{p}]",
                    "vmovdqu64 [{o}], zmm0",
                    p = in(reg) p, i = in(reg) i, o = in(reg) o, m = in(reg) mask,
                    out("zmm0") _, out("k1") _),
            }
        }
        out
    }
    for kind in kinds {
        for _ in 0..64 {
            let bytes0: Vec<u8> = (0..LEN).map(|_| r.next() as u8).collect();
            let mut input = [0u8; 64];
            for b in input.iter_mut() {
                *b = r.next() as u8;
            }
            let mask = r.next();
            let offset = r.below((LEN - 64) as u64) as usize;
            buf.copy_from_slice(&bytes0);
            region.with_device(|d: &mut Memory| d.bytes.copy_from_slice(&bytes0));
            let want = snippet(kind, buf.as_mut_ptr(), offset, &input, mask);
            let got = snippet(kind, region.as_ptr(), offset, &input, mask);
            let dev = region.with_device(|d: &mut Memory| d.bytes);
            assert_eq!(want, got, "{kind} at {offset}: registers differ");
            assert_eq!(&dev[..], &buf[..], "{kind} at {offset}: memory differs");
            cases += 1;
        }
    }
    eprintln!(
        "regions, wide vectors: {} forms, {cases} cases, 0 mismatches",
        kinds.len()
    );
}

/// Run-ahead continues through consecutive region accesses: four accesses, one fault.
#[test]
fn run_ahead_continues_through_consecutive_region_accesses() {
    let _serial = serial();
    of::map_registers().unwrap();
    // SAFETY: `Memory` only copies bytes and counts: async-signal-safe.
    let region = unsafe { Region::new_in_handler(LEN, memory()) }.unwrap();
    let p = region.as_ptr();
    let before = of::stats();
    let got: u64;
    // SAFETY: four accesses inside the region (offsets 0..24).
    unsafe {
        std::arch::asm!(
            // Within one 64-byte line, so never across a page boundary (run-ahead reads only
            // the page(s) the CPU fetched the faulting instruction from).
            ".p2align 6",
            "mov qword ptr [{p}], 5",
            "add qword ptr [{p}], 2",
            "mov {t}, qword ptr [{p}]",
            "mov qword ptr [{p} + 16], {t}",
            p = in(reg) p,
            t = out(reg) got,
        );
    }
    let after = of::stats();
    assert_eq!(got, 7);
    assert_eq!(region.with_device(|d: &mut Memory| d.bytes[16]), 7);
    let faults = after.faults_emulated - before.faults_emulated;
    let ahead = after.runahead_instructions - before.runahead_instructions;
    assert_eq!((faults, ahead), (1, 3), "faults and run-ahead instructions");
}
