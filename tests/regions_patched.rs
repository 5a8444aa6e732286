//! Site patching on trapped regions (issue 15, SPEC §6 and §7): a region site that keeps
//! faulting is rewritten into a jump to a call-out stub, which emulates the instruction in
//! ordinary code and calls the device directly — no fault.
//!
//! The differential test places each instruction form (the integer and vector forms of
//! tests/regions.rs, with a 32-bit displacement so every instance is long enough for the
//! jump) at a fixed address and runs it from several random states, each time once on an
//! ordinary buffer and once on a region whose device is plain memory: the first two region
//! runs fault (and make the site a candidate), the later ones go through the call-out once the
//! patcher has rewritten the site; the buffer runs then go through the stub's fallback (the
//! original instruction, on ordinary memory). Registers, status flags, xmm registers and the
//! memory must agree every time, in both device modes (server thread and in handler).

mod region_harness;

use iced_x86::{Instruction, Register};
use of::region::Region;
use region_harness::*;

/// Random states per form: two to learn the site, the rest through the patch.
const STATES: usize = 5;

#[test]
fn patched_region_sites_match_ordinary_memory() {
    differential(false);
}

/// The same forms with the base register short encodings use: no REX base, a disp8 or no
/// displacement (`mov eax, dword ptr [rdi + 8]`, 3 bytes): the 2- to 4-byte sites are reached
/// through a pun (a jump whose rel32 borrows the next instruction's bytes, `patch::pun`).
#[test]
fn short_patched_region_sites_match_ordinary_memory() {
    differential(true);
}

/// A general-purpose register `i` does not name, for its base (the short encodings' registers
/// first).
fn free_base(i: &Instruction) -> Option<Register> {
    let mut info = iced_x86::InstructionInfoFactory::new();
    let used: Vec<Register> = info
        .info(i)
        .used_registers()
        .iter()
        .map(|u| u.register().full_register())
        .collect();
    [
        Register::RDI,
        Register::RSI,
        Register::RBX,
        Register::RDX,
        Register::RCX,
        Register::RBP,
        Register::RAX,
        Register::R15,
    ]
    .into_iter()
    .find(|r| !used.contains(r))
}

fn differential(short: bool) {
    if !patching_on() {
        return;
    }
    let forms: Vec<Instruction> = integer_forms().into_iter().chain(vector_forms()).collect();
    let mut r = Rng(0xCA11_0015);
    let mut failures = Vec::new();
    let (mut cases, mut without_fault, mut sites_patched) = (0u64, 0u64, 0u64);
    let (mut short_sites, mut short_patched) = (0u64, 0u64);
    let patched_before = of::engine::patch::stats().patched;
    for in_handler in [false, true] {
        let region = if in_handler {
            // SAFETY: `Memory` only copies bytes and counts: async-signal-safe.
            unsafe { Region::new_in_handler(LEN, memory()) }.unwrap()
        } else {
            Region::new(LEN, memory()).unwrap()
        };
        let mut buf = Box::new([0u8; LEN]);
        for f in &forms {
            let mut i = *f;
            let size = i.memory_size().size().max(1) as u64;
            let mut disp = r.below(LEN as u64 - size + 1);
            if size == 16 && i.code().encoding() == iced_x86::EncodingKind::Legacy {
                disp &= !15; // legacy SSE: #GP when misaligned, on both sides
            }
            let base = if short {
                let Some(b) = free_base(&i) else { continue };
                disp %= 128;
                if size == 16 && i.code().encoding() == iced_x86::EncodingKind::Legacy {
                    disp &= !15;
                }
                i.set_memory_displ_size(if disp == 0 { 0 } else { 1 });
                b
            } else {
                i.set_memory_displ_size(8); // iced-x86: 8 is a disp32 with 64-bit addressing
                Register::R15
            };
            i.set_memory_base(base);
            i.set_memory_index(Register::None);
            i.set_memory_displacement64(disp);
            i.set_segment_prefix(Register::None);
            if r.below(4) == 0 && i.op_code().can_use_lock_prefix() {
                i.set_has_lock_prefix(true);
            }
            // The moffs moves (a0..a3) have no base register: not in this test.
            let Some(h) = Fixed::new(|site| encode(&i, site)) else {
                continue;
            };
            let site_len = encode(&i, h.site()).map_or(0, |b| b.len());
            let base_slot = base.number();
            let mut form_patched = false;
            for k in 0..STATES {
                if k == 2 {
                    // Two faults so far: let the patcher handle the site.
                    of::engine::patch::flush();
                }
                let bytes0: Vec<u8> = (0..LEN).map(|_| r.next() as u8).collect();
                let mut state = random_block(&mut r, 0);
                if r.below(4) == 0 {
                    state.flags |= 0x400; // DF: the call-out clears it for its call, then restores it
                }
                buf.copy_from_slice(&bytes0);
                region.with_device(|d: &mut Memory| d.bytes.copy_from_slice(&bytes0));
                let mut native_in = state;
                native_in.gpr[base_slot] = buf.as_mut_ptr() as u64;
                let mut region_in = state;
                region_in.gpr[base_slot] = region.as_ptr() as u64;
                let want = h.call(&native_in);
                let faults = of::stats().faults;
                let got = h.call(&region_in);
                if of::stats().faults == faults {
                    without_fault += 1;
                    form_patched = true;
                }
                cases += 1;
                let dev = region.with_device(|d: &mut Memory| d.bytes);
                // The base register holds each side's own address, unchanged: compared with
                // the input, the rest with each other.
                let mut same_base = got;
                same_base.gpr[base_slot] = want.gpr[base_slot];
                let mut diffs = differences(&want, &same_base, &buf, &dev);
                for (side, input, output) in
                    [("native", &native_in, &want), ("region", &region_in, &got)]
                {
                    if output.gpr[base_slot] != input.gpr[base_slot] {
                        diffs.push(format!("the {side} base register changed"));
                    }
                }
                if !diffs.is_empty() {
                    failures.push(format!(
                        "`{i}` ({}, run {k}): {}",
                        if in_handler { "in handler" } else { "server" },
                        diffs.join(", ")
                    ));
                }
            }
            sites_patched += u64::from(form_patched);
            if site_len < 5 {
                short_sites += 1;
                short_patched += u64::from(form_patched);
            }
        }
    }
    let patched = of::engine::patch::stats().patched - patched_before;
    eprintln!(
        "regions, patched{}: {} forms x 2 device modes, {cases} cases, {without_fault} region \
         runs without a fault (through the call-out) at {sites_patched} sites, of which \
         {short_patched} of {short_sites} sites shorter than 5 bytes; {patched} sites patched; \
         {} mismatches",
        if short { " (short encodings)" } else { "" },
        forms.len(),
        failures.len()
    );
    for f in failures.iter().take(20) {
        eprintln!("  {f}");
    }
    assert!(failures.is_empty());
    // Most forms are patchable (the call-out refuses only a few, such as forms naming rsp):
    // the later runs of at least half of the sites took no fault.
    assert!(
        sites_patched * 2 >= 2 * forms.len() as u64,
        "only {sites_patched} of {} sites ran without a fault",
        2 * forms.len()
    );
    if short {
        // Hundreds of 2- to 4-byte sites, and most of them punned.
        assert!(short_sites >= 100, "only {short_sites} short sites");
        assert!(
            short_patched * 4 >= short_sites * 3,
            "only {short_patched} of {short_sites} short sites ran without a fault"
        );
    }
}

/// A device whose code clobbers vector state (xmm/ymm/zmm registers, opmasks, MXCSR's flags)
/// as any device code may (glibc's string functions do): the call-out must hand the
/// interrupted code its own state back.
struct Clobbering {
    value: u32,
}

impl Clobbering {
    fn clobber() {
        // SAFETY: only registers the asm names as clobbered are written.
        unsafe {
            std::arch::asm!(
                "pcmpeqd xmm0, xmm0",
                "pcmpeqd xmm7, xmm7",
                "pcmpeqd xmm15, xmm15",
                "stmxcsr [rsp - 8]",
                "or dword ptr [rsp - 8], 0x3f", // every exception flag
                "ldmxcsr [rsp - 8]",
                out("xmm0") _, out("xmm7") _, out("xmm15") _,
            );
            if std::arch::is_x86_feature_detected!("avx2") {
                std::arch::asm!(
                    "vpcmpeqd ymm1, ymm1, ymm1",
                    "vpcmpeqd ymm9, ymm9, ymm9",
                    out("ymm1") _, out("ymm9") _,
                );
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                std::arch::asm!(
                    "vpternlogd zmm2, zmm2, zmm2, 0xff",
                    "vpternlogd zmm17, zmm17, zmm17, 0xff",
                    "vpternlogd zmm31, zmm31, zmm31, 0xff",
                    "kxnorw k1, k1, k1",
                    "kxnorw k7, k7, k7",
                    out("zmm2") _, out("zmm17") _, out("zmm31") _, out("k1") _, out("k7") _,
                );
            }
        }
    }
}

impl of::region::Device for Clobbering {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        Self::clobber();
        let b = self.value.to_le_bytes();
        for (k, d) in data.iter_mut().enumerate() {
            *d = b[k % 4];
        }
    }
    fn write(&mut self, _: u64, data: &[u8]) {
        Self::clobber();
        let mut b = [0u8; 4];
        b[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
        self.value = u32::from_le_bytes(b);
    }
}

/// The vector state the probe loads and stores around the region access: zmm0..32 (64 bytes
/// each; only what the CPU has is used), k0..8, MXCSR.
#[repr(C, align(64))]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct VectorState {
    z: [[u64; 8]; 32],
    k: [u64; 8],
    mxcsr: u32,
    pad: [u32; 15],
}

#[test]
fn the_call_out_preserves_vector_state_the_device_clobbers() {
    use iced_x86::code_asm::*;
    if !patching_on() {
        return;
    }
    let avx = std::arch::is_x86_feature_detected!("avx");
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    let avx512bw = std::arch::is_x86_feature_detected!("avx512bw");
    // SAFETY: `Clobbering` touches only registers and its own field: async-signal-safe.
    let region = unsafe { Region::new_in_handler(16, Clobbering { value: 0x1234_5678 }) }.unwrap();
    // probe(state_in = rdi, state_out = rsi, region = rdx): load the state, `mov eax, dword ptr
    // [rdx + 4]` (a disp32 form: long enough to patch), store the state.
    let zs = [
        zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13,
        zmm14, zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26,
        zmm27, zmm28, zmm29, zmm30, zmm31,
    ];
    let ys = [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13,
        ymm14, ymm15,
    ];
    let xs = [
        xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
        xmm14, xmm15,
    ];
    let ks = [k0, k1, k2, k3, k4, k5, k6, k7];
    let mut a = CodeAssembler::new(64).unwrap();
    let load_store = |a: &mut CodeAssembler, base: AsmRegister64, store: bool| {
        for i in 0..32 {
            let m = zmmword_ptr(base + 64 * i as i32);
            if avx512 {
                if store {
                    a.vmovdqu64(m, zs[i])
                } else {
                    a.vmovdqu64(zs[i], m)
                }
                .unwrap();
            } else if avx && i < 16 {
                let m = ymmword_ptr(base + 64 * i as i32);
                if store {
                    a.vmovdqu(m, ys[i])
                } else {
                    a.vmovdqu(ys[i], m)
                }
                .unwrap();
            } else if i < 16 {
                let m = xmmword_ptr(base + 64 * i as i32);
                if store {
                    a.movdqu(m, xs[i])
                } else {
                    a.movdqu(xs[i], m)
                }
                .unwrap();
            }
        }
        if avx512 {
            for (i, k) in ks.iter().enumerate() {
                let m = qword_ptr(base + 2048 + 8 * i as i32);
                if avx512bw {
                    if store {
                        a.kmovq(m, *k)
                    } else {
                        a.kmovq(*k, m)
                    }
                    .unwrap();
                } else {
                    let m = word_ptr(base + 2048 + 8 * i as i32);
                    if store {
                        a.kmovw(m, *k)
                    } else {
                        a.kmovw(*k, m)
                    }
                    .unwrap();
                }
            }
        }
        let m = dword_ptr(base + 2112);
        if store { a.stmxcsr(m) } else { a.ldmxcsr(m) }.unwrap();
    };
    load_store(&mut a, rdi, false);
    disp32_load(&mut a);
    load_store(&mut a, rsi, true);
    a.ret().unwrap();
    let page = place(&mut a);
    // SAFETY: the page holds `probe` as assembled above.
    let probe: extern "sysv64" fn(*const VectorState, *mut VectorState, *mut u8) -> u32 =
        unsafe { std::mem::transmute(page) };
    // Zeroes what this CPU does not have: lanes beyond its vector width, zmm16..32 without
    // AVX-512.
    let keep_lanes = |s: &mut VectorState| {
        for (i, z) in s.z.iter_mut().enumerate() {
            let lanes = match (avx512, avx, i < 16) {
                (true, _, _) => 8,
                (false, true, true) => 4,
                (false, false, true) => 2,
                (false, _, false) => 0,
            };
            for q in z.iter_mut().skip(lanes) {
                *q = 0;
            }
        }
    };
    let mut r = Rng(0x7EC7_0015);
    let mut faults_after_patch = None;
    for run in 0..6 {
        if run == 2 {
            of::engine::patch::flush();
            faults_after_patch = Some(of::stats().faults);
        }
        let mut input = VectorState {
            z: [[0; 8]; 32],
            k: [0; 8],
            mxcsr: 0x1F80,
            pad: [0; 15],
        };
        for z in input.z.iter_mut() {
            for q in z.iter_mut() {
                *q = r.next();
            }
        }
        for k in input.k.iter_mut() {
            *k = if avx512bw {
                r.next()
            } else {
                r.next() & 0xFFFF
            };
        }
        input.mxcsr = 0x1F80 | ((r.next() as u32) & 0x6000); // rounding control
        // What the CPU keeps of it: lanes and registers this CPU has.
        let mut want = input;
        keep_lanes(&mut want);
        if !avx512 {
            want.k = [0; 8];
        }
        let mut out = want;
        let loaded = probe(&input, &mut out, region.as_ptr());
        assert_eq!(loaded, 0x1234_5678);
        keep_lanes(&mut out);
        assert_eq!(
            out, want,
            "run {run}: the vector state changed across the region access"
        );
    }
    let faults = of::stats().faults - faults_after_patch.unwrap();
    eprintln!(
        "call-out vector state: 6 runs, {faults} faults after patching (avx {avx}, avx512 {avx512})"
    );
    assert_eq!(faults, 0, "the site was not patched");
}

/// Consecutive 2- and 3-byte device accesses, run by several threads while their sites are
/// patched: a pun borrows the bytes of the access after it, so the patcher patches that one
/// first (run-ahead counts it as a site) and the pun borrows its final bytes; every thread's
/// counter comes out exact. (The first access, followed by `add eax, 1` as `05 01 00 00 00`,
/// usually stays on the fault path: both its windows fall on mapped memory — this page, and
/// the mappings just above it.)
#[test]
fn consecutive_short_sites_on_many_threads() {
    use iced_x86::code_asm::*;
    if !patching_on() {
        return;
    }
    const THREADS: usize = 4;
    const ROUNDS: u64 = 3_000;
    let region = Region::new(LEN, memory()).unwrap();
    // f(rdi = this thread's 8 bytes of the region, rsi = rounds): [rdi] += 1 through
    // [rdi + 4], with the four accesses back to back.
    let mut a = CodeAssembler::new(64).unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.mov(eax, dword_ptr(rdi)).unwrap(); // 8b 07
    a.add(eax, 1).unwrap();
    a.mov(dword_ptr(rdi + 4), eax).unwrap(); // 89 47 04
    a.mov(ecx, dword_ptr(rdi + 4)).unwrap(); // 8b 4f 04: right after the store
    a.mov(dword_ptr(rdi), ecx).unwrap(); // 89 0f: right after the load
    a.dec(rsi).unwrap();
    a.jnz(top).unwrap();
    a.ret().unwrap();
    let page = place(&mut a);
    // SAFETY: the page holds the loop assembled above.
    let f: extern "sysv64" fn(*mut u8, u64) = unsafe { std::mem::transmute(page) };
    let faults = of::stats().faults;
    let patched = of::engine::patch::stats().patched;
    let base = region.as_ptr() as usize;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || f((base + 8 * t) as *mut u8, ROUNDS));
        }
    });
    of::engine::patch::flush();
    let bytes = region.with_device(|d: &mut Memory| d.bytes);
    for t in 0..THREADS {
        let word =
            |o: usize| u32::from_le_bytes(bytes[8 * t + o..8 * t + o + 4].try_into().unwrap());
        assert_eq!(
            (word(0), word(4)),
            (ROUNDS as u32, ROUNDS as u32),
            "thread {t}"
        );
    }
    let faults = of::stats().faults - faults;
    let patched = of::engine::patch::stats().patched - patched;

    eprintln!(
        "consecutive short sites: {THREADS} threads x {ROUNDS} rounds x 4 accesses, {faults} \
         faults, {patched} sites patched"
    );
    assert!(patched >= 2, "only {patched} of the 4 sites patched");
    assert!(
        faults < THREADS as u64 * ROUNDS * 4 / 2,
        "{faults} faults: the patches did not take"
    );
}

/// A device whose code overwrites every vector register and opmask the CPU has.
struct ClobberAll;

impl ClobberAll {
    fn clobber() {
        // SAFETY: only registers the asm names as clobbered are written.
        unsafe {
            std::arch::asm!(
                "pcmpeqd xmm0, xmm0", "pcmpeqd xmm1, xmm1", "pcmpeqd xmm2, xmm2",
                "pcmpeqd xmm3, xmm3", "pcmpeqd xmm4, xmm4", "pcmpeqd xmm5, xmm5",
                "pcmpeqd xmm6, xmm6", "pcmpeqd xmm7, xmm7", "pcmpeqd xmm8, xmm8",
                "pcmpeqd xmm9, xmm9", "pcmpeqd xmm10, xmm10", "pcmpeqd xmm11, xmm11",
                "pcmpeqd xmm12, xmm12", "pcmpeqd xmm13, xmm13", "pcmpeqd xmm14, xmm14",
                "pcmpeqd xmm15, xmm15",
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
                out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
                out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _,
                out("xmm14") _, out("xmm15") _,
            );
            if std::arch::is_x86_feature_detected!("avx2") {
                std::arch::asm!(
                    "vpcmpeqd ymm3, ymm3, ymm3", "vpcmpeqd ymm9, ymm9, ymm9",
                    out("ymm3") _, out("ymm9") _,
                );
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                std::arch::asm!(
                    "vpternlogd zmm2, zmm2, zmm2, 0xff", "vpternlogd zmm5, zmm5, zmm5, 0xff",
                    "vpternlogd zmm20, zmm20, zmm20, 0xff", "vpternlogd zmm31, zmm31, zmm31, 0xff",
                    "kxnorw k1, k1, k1", "kxnorw k2, k2, k2",
                    out("zmm2") _, out("zmm5") _, out("zmm20") _, out("zmm31") _,
                    out("k1") _, out("k2") _,
                );
            }
        }
    }
}

impl of::region::Device for ClobberAll {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        Self::clobber();
        data.fill(0x5A);
    }
    fn write(&mut self, _: u64, _: &[u8]) {
        Self::clobber();
    }
}

/// The call-out saves only the vector registers the code after a site may read
/// (`patch::liveness`): registers read after a branch, around a loop, after a partial
/// (legacy SSE) or merge-masked write, or by a called function, must all survive device
/// code that overwrites every register.
#[test]
fn vector_registers_live_after_a_site_survive_on_every_path() {
    use iced_x86::code_asm::*;
    if !patching_on() {
        return;
    }
    let avx = std::arch::is_x86_feature_detected!("avx2");
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    // SAFETY: `ClobberAll` touches only registers and `data`: async-signal-safe.
    let region = unsafe { Region::new_in_handler(16, ClobberAll) }.unwrap();
    // Each shape: f(input = rdi, output = rsi, region = rdx) loads registers from the input,
    // runs `mov eax, dword ptr [rdx + 4]` (disp32: the site), then code that stores the
    // register under test to the output on some path.
    type Shape = fn(&mut CodeAssembler);
    let mut shapes: Vec<(&str, usize, Shape)> = vec![
        ("xmm9 read after a conditional branch, both ways", 16, |a| {
            a.movdqu(xmm9, xmmword_ptr(rdi)).unwrap();
            disp32_load(a);
            let mut other = a.create_label();
            a.test(eax, eax).unwrap();
            a.jz(other).unwrap();
            a.movdqu(xmmword_ptr(rsi), xmm9).unwrap();
            a.ret().unwrap();
            a.set_label(&mut other).unwrap();
            a.movdqu(xmmword_ptr(rsi), xmm9).unwrap();
            a.ret().unwrap();
        }),
        (
            "xmm2 read by a called function (an argument register)",
            16,
            |a| {
                a.movdqu(xmm2, xmmword_ptr(rdi)).unwrap();
                disp32_load(a);
                let mut callee = a.create_label();
                a.call(callee).unwrap();
                a.ret().unwrap();
                a.set_label(&mut callee).unwrap();
                a.movdqu(xmmword_ptr(rsi), xmm2).unwrap();
                a.ret().unwrap();
            },
        ),
        ("xmm13 read at the top of a loop the site is in", 16, |a| {
            a.movdqu(xmm13, xmmword_ptr(rdi)).unwrap();
            a.mov(ecx, 3).unwrap();
            let mut top = a.create_label();
            a.set_label(&mut top).unwrap();
            a.movdqu(xmmword_ptr(rsi), xmm13).unwrap();
            disp32_load(a);
            a.dec(ecx).unwrap();
            a.jnz(top).unwrap();
            a.ret().unwrap();
        }),
    ];
    if avx {
        shapes.push(("ymm3 read after a legacy SSE write to xmm3", 32, |a| {
            a.vmovdqu(ymm3, ymmword_ptr(rdi)).unwrap();
            disp32_load(a);
            a.pxor(xmm4, xmm4).unwrap();
            a.movaps(xmm3, xmm4).unwrap(); // writes bits 127:0, keeps 255:128
            a.vmovdqu(ymmword_ptr(rsi), ymm3).unwrap();
            a.vzeroupper().unwrap();
            a.ret().unwrap();
        }));
    }
    if avx512 {
        shapes.push((
            "zmm5 read after a merge-masked write (k2 read too)",
            64,
            |a| {
                a.vmovdqu64(zmm5, zmmword_ptr(rdi)).unwrap();
                a.mov(eax, 0x0F).unwrap();
                a.kmovw(k2, eax).unwrap();
                disp32_load(a);
                a.vpxord(zmm6, zmm6, zmm6).unwrap();
                a.vmovdqa32(zmm5.k2(), zmm6).unwrap(); // dwords 0..4 from zmm6 (0), the rest kept
                a.vmovdqu64(zmmword_ptr(rsi), zmm5).unwrap();
                a.ret().unwrap();
            },
        ));
        shapes.push(("zmm20 read after a forward jump", 64, |a| {
            a.vmovdqu64(zmm20, zmmword_ptr(rdi)).unwrap();
            disp32_load(a);
            let mut later = a.create_label();
            a.jmp(later).unwrap();
            a.ud2().unwrap();
            a.set_label(&mut later).unwrap();
            a.vmovdqu64(zmmword_ptr(rsi), zmm20).unwrap();
            a.ret().unwrap();
        }));
    }
    let mut r = Rng(0x11BE_0015);
    for (what, width, shape) in shapes {
        let mut a = CodeAssembler::new(64).unwrap();
        shape(&mut a);
        let page = place(&mut a);
        // SAFETY: the page holds the shape assembled above.
        let f: extern "sysv64" fn(*mut u8, *mut u8, *mut u8) = unsafe { std::mem::transmute(page) };
        let mut faults_after = 0;
        for run in 0..6 {
            if run == 2 {
                of::engine::patch::flush();
                faults_after = of::stats().faults;
            }
            let mut input = [0u8; 64];
            input.iter_mut().for_each(|b| *b = r.next() as u8);
            let mut want = input;
            let mut output = [0u8; 64];
            f(input.as_mut_ptr(), output.as_mut_ptr(), region.as_ptr());
            if what.starts_with("ymm3") || what.starts_with("zmm5") {
                want[..16].copy_from_slice(&[0; 16]); // the part the partial write wrote
            }
            assert_eq!(
                output[..width],
                want[..width],
                "{what}, run {run}: the register changed across the region access"
            );
        }
        let faults = of::stats().faults - faults_after;
        eprintln!("liveness: {what}: 6 runs, {faults} faults after patching");
        assert_eq!(faults, 0, "{what}: the site was not patched");
    }
}

/// The bus's bias (`region::bus`): threads take turns on one region through patched
/// call-outs and the fault path, each bias revoked and granted again thousands of times (the
/// limit raised), with a plain `add dword ptr [rdi], 1` — one device read then one write under
/// the bus — so a lost update would show as a wrong total.
#[test]
fn the_biased_bus_excludes_other_threads() {
    use iced_x86::code_asm::*;
    of::map_registers().unwrap();
    let patching = of::engine::signal::set_patching(true);
    of::engine::region::set_revocation_limit(u32::MAX);
    const THREADS: usize = 4;
    const ROUNDS: u64 = 20_000;
    let region = Region::new(LEN, memory()).unwrap();
    // SAFETY: `Memory` only copies bytes and counts: async-signal-safe.
    let in_handler = unsafe { Region::new_in_handler(LEN, memory()) }.unwrap();
    // f(rdi = counter, rsi = rounds): add dword ptr [rdi], 1 (3 bytes, punned) in a loop.
    let mut a = CodeAssembler::new(64).unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.add(dword_ptr(rdi), 1).unwrap();
    a.dec(rsi).unwrap();
    a.jnz(top).unwrap();
    a.ret().unwrap();
    let page = place(&mut a);
    // SAFETY: the page holds the loop assembled above.
    let f: extern "sysv64" fn(*mut u8, u64) = unsafe { std::mem::transmute(page) };
    let (revoked, _) = of::engine::region::bias();
    for r in [&region, &in_handler] {
        let base = r.as_ptr() as usize;
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(move || f(base as *mut u8, ROUNDS));
            }
        });
        let bytes = r.with_device(|d: &mut Memory| d.bytes);
        let total = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        assert_eq!(total as u64, THREADS as u64 * ROUNDS);
    }
    of::engine::region::set_revocation_limit(of::engine::region::REVOCATION_LIMIT);
    let (now, _) = of::engine::region::bias();
    eprintln!(
        "biased bus: {THREADS} threads x {ROUNDS} plain adds x 2 regions, exact; {} revocations, \
         patching {patching}",
        now - revoked
    );
}
