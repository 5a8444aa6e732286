//! Benchmark: the cost of a page-0 access compared with the bare SIGSEGV round trip.
//!
//! `cargo run --release --example bench` prints, from one run:
//! - the floor: a fault on page 0 handled by a minimal SA_SIGINFO handler that only skips the
//!   instruction (rip += 8); and the same handler delivered as `of`'s is (SA_ONSTACK onto the
//!   thread's alternate stack, every signal blocked), to show what the delivery itself costs;
//! - an isolated load and an isolated `add` through `of` (each followed by an ordinary memory
//!   store, so run-ahead stops after the one map instruction);
//! - a straight-line burst of 16 map instructions;
//! - a loop of 10^6 `add qword ptr [0x40], 1` (with `dec`/`jnz`), against the cost of one fault
//!   per access;
//! - a breakdown of the handler's own work measured without faults (decode, emulate on an
//!   in-memory register file);
//! - an `add` in a loop whose iterations also store to ordinary memory (run-ahead cannot reach
//!   the next map access);
//! - with site patching on (SPEC §6), at sites of their own once patched: an isolated load and
//!   add (with an ordinary store after each), the same add on the register, a burst of 16 and
//!   the 10^6 loop.
//!
//! Set `OF_RUNAHEAD=0` to measure with run-ahead off. Timing is wall-clock (`Instant`), so run
//! on a quiet machine and compare ratios from the same run.

use std::arch::asm;
use std::hint::black_box;
use std::time::Instant;

/// Minimal handler: skip the 8-byte faulting instruction.
extern "C" fn skip(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
    let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
    uc.uc_mcontext.gregs[libc::REG_RIP as usize] += 8;
}

fn set_action(handler: usize, flags: libc::c_int, full_mask: bool) {
    // SAFETY: a zeroed sigaction with a handler and an empty or full mask is valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        if full_mask {
            libc::sigfillset(&mut sa.sa_mask);
        } else {
            libc::sigemptyset(&mut sa.sa_mask);
        }
        libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
    }
}

fn per_iter(n: u64, f: impl Fn(u64)) -> f64 {
    f(n / 10); // warm up
    let t = Instant::now();
    f(n);
    t.elapsed().as_nanos() as f64 / n as f64
}

/// The floor, measured with the minimal handler temporarily in place of whatever is installed
/// (restored afterwards). `as_of`: delivered the way `of`'s handler is (SA_ONSTACK onto this
/// thread's alternate stack, every signal blocked while it runs) instead of on the thread's
/// stack with an empty mask.
fn floor(n: u64, as_of: bool) -> f64 {
    // SAFETY: saving the current action into a zeroed sigaction.
    let mut saved: libc::sigaction = unsafe { std::mem::zeroed() };
    unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut saved) };
    let flags = libc::SA_SIGINFO | if as_of { libc::SA_ONSTACK } else { 0 };
    set_action(skip as *const () as usize, flags, as_of);
    let ns = per_iter(n, |n| {
        for _ in 0..n {
            // SAFETY: the load faults (page 0 outside the map) and `skip` resumes after it.
            unsafe {
                asm!(
                    ".byte 0x48, 0x8b, 0x04, 0x25, 0x00, 0x08, 0x00, 0x00", // mov rax, [0x800]
                    out("rax") _,
                    options(nostack),
                )
            };
        }
    });
    // SAFETY: restoring the saved action.
    unsafe { libc::sigaction(libc::SIGSEGV, &saved, std::ptr::null_mut()) };
    ns
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: u64 = std::env::var("OF_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let _r = of::map_registers().expect("map registers");
    let runahead = of::engine::signal::runahead_enabled();
    // The fault-path lines first, with site patching off (even if OF_PATCH=1 asked for it);
    // the patched lines at the end use sites of their own.
    let patch_wanted = of::engine::signal::patching_enabled();
    of::engine::signal::set_patching(false);

    let mut sink = 0u64;
    if std::env::var_os("OF_BENCH_ONLY_ADD").is_some() {
        // Profiling aid: only the isolated add, for `perf record`.
        for _ in 0..n {
            // SAFETY: as in the isolated add below.
            unsafe {
                asm!("add qword ptr [0x40], 1", "mov qword ptr [{s}], 0", s = in(reg) &raw const sink, out("r8") _, options(nostack))
            };
        }
        return;
    }
    let load = |n: u64| {
        for _ in 0..n {
            // SAFETY: one map load, then an ordinary store to a local (ends run-ahead).
            unsafe {
                asm!(
                    "mov {v}, qword ptr [0x40]",
                    "mov qword ptr [{s}], {v}",
                    v = out(reg) _,
                    s = in(reg) &raw const sink,
                    options(nostack),
                )
            };
        }
    };
    let add = |n: u64| {
        for _ in 0..n {
            // SAFETY: r8 += 1 through the map (r8 declared clobbered), then an ordinary store.
            unsafe {
                asm!(
                    "add qword ptr [0x40], 1",
                    "mov qword ptr [{s}], 0",
                    s = in(reg) &raw const sink,
                    out("r8") _,
                    options(nostack),
                )
            };
        }
    };
    // A loop with an ordinary memory access between page-0 instructions and a backward branch:
    // after the fault, the next instructions are `dec` and the store, then the branch back.
    let looped = |n: u64| {
        // SAFETY: r8 += 1 through the map per iteration; r12 counts down; a store to `sink`.
        unsafe {
            asm!(
                "2:",
                "add qword ptr [0x40], 1",
                "dec r12",
                "mov qword ptr [{s}], r12",
                "jnz 2b",
                s = in(reg) &raw const sink,
                inout("r12") n => _,
                out("r8") _,
                options(nostack),
            )
        };
    };
    // Interleaved rounds, medians: the floor and the isolated accesses see the same noise.
    let (mut floors, mut loads, mut adds, mut floors_as_of) = (vec![], vec![], vec![], vec![]);
    let mut loopeds = vec![];
    for _ in 0..7 {
        floors.push(floor(n / 4, false));
        floors_as_of.push(floor(n / 4, true));
        loads.push(per_iter(n / 4, load));
        adds.push(per_iter(n / 4, add));
        loopeds.push(per_iter(n / 4, looped));
    }
    let (floor_ns, load_ns, add_ns) = (median(floors), median(loads), median(adds));
    let floor_as_of_ns = median(floors_as_of);
    let looped_ns = median(loopeds);
    let burst_ns = per_iter(n / 4, |n| {
        for _ in 0..n {
            // SAFETY: 16 map instructions on r8..r11 (declared clobbered), then a store.
            unsafe {
                asm!(
                    "mov qword ptr [0x40], 1",
                    "add qword ptr [0x40], 2",
                    "mov qword ptr [0x48], 3",
                    "add qword ptr [0x48], 4",
                    "xor qword ptr [0x50], 5",
                    "or qword ptr [0x50], 6",
                    "sub qword ptr [0x58], 7",
                    "and qword ptr [0x58], 8",
                    "mov r9, qword ptr [0x40]",
                    "add r10, qword ptr [0x48]",
                    "inc qword ptr [0x40]",
                    "dec qword ptr [0x48]",
                    "shl qword ptr [0x50], 3",
                    "cmp qword ptr [0x58], 9",
                    "mov dword ptr [0x44], 0",
                    "add byte ptr [0x41], 1",
                    "mov qword ptr [{s}], 0",
                    s = in(reg) &raw const sink,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                    options(nostack),
                )
            };
        }
    }) / 16.0;
    let loops: u64 = 1_000_000;
    let t = Instant::now();
    let mut result: u64;
    // SAFETY: a loop of map increments of r8; r12 counts down; both declared.
    unsafe {
        asm!(
            "xor r8, r8",
            "2:",
            "add qword ptr [0x40], 1", // r8 += 1 through the map
            "dec r12",
            "jnz 2b",
            inout("r12") loops => _,
            out("r8") result,
            options(nostack),
        )
    };
    let loop_ns = t.elapsed().as_nanos() as f64;
    assert_eq!(result, loops, "loop result");
    sink = black_box(sink);
    let _ = sink;

    // Breakdown without faults: decode, and emulate on an in-memory register file.
    let bytes = [0x48u8, 0x83, 0x04, 0x25, 0x40, 0x00, 0x00, 0x00, 0x01]; // add qword [0x40], 1
    let decode_ns = per_iter(n, |n| {
        for _ in 0..n {
            black_box(of::engine::decode::decode(black_box(&bytes), 0x40_0000).unwrap());
        }
    });
    let (instr, offsets) = of::engine::decode::decode(&bytes, 0x40_0000).unwrap();
    let m = of::engine::RegisterFile::default();
    let ownership_ns = per_iter(n, |n| {
        for _ in 0..n {
            let kind = of::engine::emulate::table::classify(black_box(&instr));
            let acc = of::engine::emulate::operands::accesses(&m, &instr, kind);
            black_box(of::engine::emulate::check_ownership(acc.as_slice(), Some(0x40)).is_ok());
        }
    });
    let execute_ns = per_iter(n, |n| {
        let mut m2 = m.clone();
        let kind = of::engine::emulate::table::classify(&instr);
        for _ in 0..n {
            m2.rip = 0x40_0000;
            of::engine::emulate::execute(&mut m2, black_box(&instr), &bytes, &offsets, kind)
                .unwrap();
        }
        black_box(&m2);
    });
    let emulate_ns = per_iter(n, |n| {
        let mut m2 = m.clone();
        for _ in 0..n {
            m2.rip = 0x40_0000;
            of::engine::emulate(&mut m2, black_box(&instr), &bytes, &offsets, Some(0x40)).unwrap();
        }
        black_box(&m2);
    });

    println!(
        "of benchmark (7 interleaved rounds of {} iterations for floor/load/add, medians; run-ahead {})",
        n / 4,
        if runahead { "on" } else { "off" }
    );
    println!("  floor: bare SIGSEGV round trip     {floor_ns:9.1} ns        1.00x floor");
    println!(
        "  floor, of's delivery (SA_ONSTACK)   {floor_as_of_ns:9.1} ns  {:9.2}x floor",
        floor_as_of_ns / floor_ns
    );
    println!(
        "  isolated load through of           {load_ns:9.1} ns  {:9.2}x floor",
        load_ns / floor_ns
    );
    println!(
        "  isolated add through of            {add_ns:9.1} ns  {:9.2}x floor",
        add_ns / floor_ns
    );
    println!(
        "  isolated add in a loop (+ store)   {looped_ns:9.1} ns  {:9.2}x floor",
        looped_ns / floor_ns
    );
    println!(
        "  burst of 16, per map instruction   {burst_ns:9.1} ns  {:9.3}x floor",
        burst_ns / floor_ns
    );
    println!(
        "  10^6 loop, per increment           {:9.1} ns  {:9.3}x floor; {:.1}x faster than one fault per access",
        loop_ns / loops as f64,
        loop_ns / loops as f64 / floor_ns,
        add_ns * loops as f64 / loop_ns
    );
    println!(
        "  handler work without the fault, for `add qword ptr [0x40], 1`: decode {decode_ns:.1} ns (cached in the handler), ownership (classify + accesses + check) {ownership_ns:.1} ns, execute + write back {execute_ns:.1} ns, whole emulate {emulate_ns:.1} ns"
    );
    println!(
        "  so of's own emulation work is {:.1}% of the floor; the remaining {:.0} ns of an isolated add are cache misses of the handler's code and data after the kernel's signal delivery (which itself costs the same for of's handler: second floor line), the run-ahead look at the next instruction and the handler-stack switch",
        100.0 * (decode_ns + emulate_ns) / floor_ns,
        (add_ns - floor_ns - emulate_ns).max(0.0)
    );
    patched(n, floor_ns, &raw const sink);
    if !patch_wanted {
        of::engine::signal::set_patching(false);
    }
}

/// The patched lines: sites of their own, warmed up until `of` patched them, then timed; and
/// the same instructions on a register for comparison.
fn patched(n: u64, floor_ns: f64, sink: *const u64) {
    if !of::engine::signal::set_patching(true) {
        println!("  site patching: unavailable on this kernel (no core-serialising membarrier)");
        return;
    }
    let sink = sink as u64;
    let load = |n: u64| {
        for _ in 0..n {
            // SAFETY: one map load (r8's slot), then an ordinary store to `sink`.
            unsafe {
                asm!(
                    "mov {v}, qword ptr [0x40]",
                    "mov qword ptr [{s}], {v}",
                    v = out(reg) _,
                    s = in(reg) sink,
                    options(nostack),
                )
            };
        }
    };
    let add = |n: u64| {
        for _ in 0..n {
            // SAFETY: r9 += 1 through the map (r9 declared), then an ordinary store.
            unsafe {
                asm!(
                    "add qword ptr [0x48], 1",
                    "mov qword ptr [{s}], 0",
                    s = in(reg) sink,
                    out("r9") _,
                    options(nostack),
                )
            };
        }
    };
    let add_register = |n: u64| {
        for _ in 0..n {
            // SAFETY: the same on the register itself.
            unsafe {
                asm!(
                    "add r9, 1",
                    "mov qword ptr [{s}], 0",
                    s = in(reg) sink,
                    out("r9") _,
                    options(nostack),
                )
            };
        }
    };
    let burst = |n: u64| {
        for _ in 0..n {
            // SAFETY: 16 map instructions on r8..r11 (declared clobbered), then a store.
            unsafe {
                asm!(
                    "mov qword ptr [0x40], 1",
                    "add qword ptr [0x40], 2",
                    "mov qword ptr [0x48], 3",
                    "add qword ptr [0x48], 4",
                    "xor qword ptr [0x50], 5",
                    "or qword ptr [0x50], 6",
                    "sub qword ptr [0x58], 7",
                    "and qword ptr [0x58], 8",
                    "mov r9, qword ptr [0x40]",
                    "add r10, qword ptr [0x48]",
                    "inc qword ptr [0x40]",
                    "dec qword ptr [0x48]",
                    "shl qword ptr [0x50], 3",
                    "cmp qword ptr [0x58], 9",
                    "mov dword ptr [0x44], 0",
                    "add byte ptr [0x41], 1",
                    "mov qword ptr [{s}], 0",
                    s = in(reg) sink,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                    options(nostack),
                )
            };
        }
    };
    let looped = |n: u64| {
        let mut result: u64;
        // SAFETY: a loop of map increments of r8; r12 counts down; both declared.
        unsafe {
            asm!(
                "xor r8, r8",
                "2:",
                "add qword ptr [0x40], 1",
                "dec r12",
                "jnz 2b",
                inout("r12") n => _,
                out("r8") result,
                options(nostack),
            )
        };
        assert_eq!(result, n, "loop result");
    };
    // Warm up with the timed loop lengths (the compiler may unroll a loop into several copies
    // of the instruction: each is a site of its own): each site faults until it is patched.
    let before = of::engine::patch::stats();
    for _ in 0..3 {
        load(n);
        add(n);
        add_register(n);
        burst(n);
        looped(1_000_000);
        of::engine::patch::flush();
    }
    let after = of::engine::patch::stats();
    let (mut loads, mut adds, mut regs) = (vec![], vec![], vec![]);
    for _ in 0..7 {
        loads.push(per_iter(n, load));
        adds.push(per_iter(n, add));
        regs.push(per_iter(n, add_register));
    }
    let (load_ns, add_ns, reg_ns) = (median(loads), median(adds), median(regs));
    let burst_ns = per_iter(n, burst) / 16.0;
    let loops: u64 = 1_000_000;
    let t = Instant::now();
    looped(loops);
    let loop_ns = t.elapsed().as_nanos() as f64 / loops as f64;
    println!(
        "site patching on ({} sites patched while warming up, {} refused):",
        after.patched - before.patched,
        after.refused - before.refused
    );
    println!(
        "  isolated load at a patched site    {load_ns:9.2} ns  {:9.4}x floor",
        load_ns / floor_ns
    );
    println!(
        "  isolated add at a patched site     {add_ns:9.2} ns  {:9.4}x floor; {:.1}x the same add on the register ({reg_ns:.2} ns)",
        add_ns / floor_ns,
        add_ns / reg_ns
    );
    println!(
        "  burst of 16, per map instruction   {burst_ns:9.2} ns  {:9.4}x floor",
        burst_ns / floor_ns
    );
    println!(
        "  10^6 loop, per increment           {loop_ns:9.2} ns  {:9.4}x floor",
        loop_ns / floor_ns
    );
}
