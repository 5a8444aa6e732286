//! Site patching (issue 14, SPEC §6): hot page-0 instructions rewritten into jumps to generated
//! code that does the same to the real registers, exactly and thread-safely.

use std::arch::asm;

fn enable() -> bool {
    of::map_registers().unwrap();
    let on = of::engine::signal::set_patching(true);
    if !on {
        eprintln!("skipped: this kernel refuses core-serialising membarriers (patching is off)");
    }
    on
}

/// Runs `add qword ptr [0x40], 1` (r8) from one site `n` times, each followed by a load from
/// ordinary memory (so run-ahead stops there and every execution faults until the site is
/// patched); returns r8 and the site's address.
#[inline(never)]
fn add_r8_loop(n: u64, start: u64) -> (u64, u64) {
    let mut r8 = start;
    let mut site: u64 = 0;
    let word = 7u64;
    for _ in 0..n {
        // SAFETY: the page-0 access changes r8 (declared) and the status flags; the other
        // instructions read `word` and write the declared outputs.
        unsafe {
            asm!(
                "lea {s}, [rip + 2f]",
                "2:",
                "add qword ptr [0x40], 1",
                "mov {t}, [{w}]",
                s = out(reg) site,
                t = out(reg) _,
                w = in(reg) &word,
                inout("r8") r8,
                options(nostack),
            )
        };
    }
    (r8, site)
}

#[test]
fn a_hot_site_is_patched_and_computes_the_same() {
    if !enable() {
        return;
    }
    let before = of::engine::patch::stats();
    let (r8, site) = add_r8_loop(10, 5);
    assert_eq!(r8, 15);
    of::engine::patch::flush();
    let after = of::engine::patch::stats();
    assert!(after.patched > before.patched, "{before:?} -> {after:?}");
    // SAFETY: the site is mapped code (it just ran).
    let first = unsafe { core::ptr::read_volatile(site as *const u8) };
    assert_eq!(first, 0xE9, "the site is a jmp rel32 now");
    let (r8, _) = add_r8_loop(1000, u64::MAX - 10);
    assert_eq!(r8, 1000u64.wrapping_sub(11));
}

/// One site run by many threads while it is patched: every increment lands, the threads that
/// meet the `int3` of the patch get the original instruction emulated.
#[test]
fn many_threads_run_a_site_while_it_is_patched() {
    if !enable() {
        return;
    }
    of::engine::patch::set_threshold(1);
    of::engine::patch::set_int3_pause(20_000); // 20 ms with the int3 in place
    let before = of::engine::patch::stats();
    let go = std::sync::Arc::new(std::sync::Barrier::new(128));
    let threads: Vec<_> = (0..128u64)
        .map(|t| {
            let go = go.clone();
            std::thread::spawn(move || {
                of::map_registers().unwrap();
                go.wait();
                let start = t << 32;
                let (r8, _) = shared_site_loop(2000, start);
                assert_eq!(r8, start + 2000, "thread {t}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    of::engine::patch::flush();
    of::engine::patch::set_int3_pause(0);
    of::engine::patch::set_threshold(2);
    let after = of::engine::patch::stats();
    eprintln!("128 threads x 2000 increments: {before:?} -> {after:?}");
    assert!(after.patched > before.patched);
}

/// Like `add_r8_loop`, at a site of its own.
#[inline(never)]
fn shared_site_loop(n: u64, start: u64) -> (u64, u64) {
    let mut r8 = start;
    let mut site: u64 = 0;
    let word = 7u64;
    for _ in 0..n {
        // SAFETY: as in `add_r8_loop`.
        unsafe {
            asm!(
                "lea {s}, [rip + 2f]",
                "2:",
                "add qword ptr [0x40], 1",
                "mov {t}, [{w}]",
                s = out(reg) site,
                t = out(reg) _,
                w = in(reg) &word,
                inout("r8") r8,
                options(nostack),
            )
        };
    }
    (r8, site)
}
