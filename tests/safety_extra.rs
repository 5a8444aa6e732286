//! Complements `tests/safety.rs` (issue 4, SPEC §4): faults that are not ours reach the previous
//! handler with the interrupted context untouched (rax unchanged), concurrent first-time
//! installation from many threads, a profiling-timer storm whose handler itself uses the map
//! while run-ahead emulation is on, and alternate stacks per thread.
//! Cases that need a fresh process re-execute this test binary with `OF_SAFETY_EXTRA` set.

use std::arch::asm;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

/// Runs `scenario` in a child process (this binary, only test `test`).
fn child(test: &str, scenario: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("OF_SAFETY_EXTRA", scenario)
        .output()
        .expect("spawn child")
}

/// In the child: runs `f` if this process was started for `name`, then exits 0.
fn scenario(name: &str, f: impl FnOnce()) -> bool {
    if std::env::var("OF_SAFETY_EXTRA").as_deref() == Ok(name) {
        f();
        std::process::exit(0);
    }
    false
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const SENTINEL: u64 = 0x5EED_0F0F_1234_8765;

/// SA_SIGINFO handler installed before `map_registers()`: exits 40 when the fault it receives
/// left the interrupted rax at SENTINEL and arrived as #GP does (SI_KERNEL, si_addr 0), with
/// distinct codes for each way it can be wrong.
extern "C" fn check_rax(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: kernel-provided arguments of an SA_SIGINFO handler.
    let (addr, code) = unsafe { ((*info).si_addr() as u64, (*info).si_code) };
    // SAFETY: the ucontext of the faulting thread.
    let rax = unsafe {
        (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RAX as usize] as u64
    };
    let status = if sig != libc::SIGSEGV {
        41
    } else if code != libc::SI_KERNEL {
        42
    } else if addr != 0 {
        43
    } else if rax != SENTINEL {
        44
    } else {
        40
    };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(status) };
}

fn install_check_rax() {
    // SAFETY: a zeroed sigaction with a valid SA_SIGINFO handler and an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = check_rax as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()), 0);
    }
}

#[test]
fn gp_faults_reach_the_previous_handler_with_rax_unchanged() {
    const T: &str = "gp_faults_reach_the_previous_handler_with_rax_unchanged";
    if scenario("noncanon", || {
        install_check_rax();
        of::map_registers().unwrap();
        // A non-canonical load into rax: #GP (SI_KERNEL, si_addr 0). Were it taken for an access
        // to rax's slot at 0, the handler would see a changed rax or never be called.
        // SAFETY: deliberately faults.
        unsafe {
            asm!("mov rax, qword ptr [rcx]",
                 in("rcx") 0x8000_0000_0000_0000u64, inout("rax") SENTINEL => _)
        };
    }) || scenario("too_long", || {
        install_check_rax();
        of::map_registers().unwrap();
        // 8 redundant cs prefixes + `mov rax, [0x08]` = 16 bytes: #GP, not a map access.
        // SAFETY: deliberately faults.
        unsafe {
            asm!(
                ".byte 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e",
                ".byte 0x48, 0x8b, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00",
                inout("rax") SENTINEL => _,
            )
        };
    }) || scenario("hlt", || {
        install_check_rax();
        of::map_registers().unwrap();
        // SAFETY: deliberately faults (#GP at CPL 3).
        unsafe { asm!("hlt", in("rax") SENTINEL) };
    }) {
        return;
    }
    for s in ["noncanon", "too_long", "hlt"] {
        let out = child(T, s);
        assert_eq!(out.status.code(), Some(40), "{s}: {}", show(&out));
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("of: "),
            "{s}: {}",
            show(&out)
        );
    }
}

#[test]
fn many_threads_installing_at_once_all_get_a_working_map() {
    const T: &str = "many_threads_installing_at_once_all_get_a_working_map";
    const THREADS: u64 = 16;
    const M: u64 = 500;
    if scenario("race", || {
        // A fresh process: nobody has installed yet. All threads call map_registers() together.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS as usize));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    of::map_registers().unwrap();
                    let mut r12 = t << 32;
                    for _ in 0..M {
                        // SAFETY: r12 += 1 through the map; r12 is the declared inout.
                        unsafe { asm!("add qword ptr [0x60], 1", inout("r12") r12) };
                    }
                    r12
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), ((t as u64) << 32) + M);
        }
        std::process::exit(12);
    }) {
        return;
    }
    let out = child(T, "race");
    assert_eq!(out.status.code(), Some(12), "{}", show(&out));
}

static PROF_TICKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn prof_tick(_: libc::c_int) {
    // A map access inside the profiling signal's handler, on registers it declares.
    let (mut r13, mut r14) = (40u64, 0xF0u64);
    // SAFETY: r13 += 2 and r14 ^= 0xFF through the map.
    unsafe {
        asm!(
            "add qword ptr [0x68], 2",
            "xor qword ptr [0x70], 0xff",
            inout("r13") r13, inout("r14") r14,
        )
    };
    if r13 == 42 && r14 == 0x0F {
        PROF_TICKS.fetch_add(1, Ordering::Relaxed);
    } else {
        // SAFETY: _exit is async-signal-safe; 13 flags a wrong result inside the handler.
        unsafe { libc::_exit(13) };
    }
}

/// One round of mapped arithmetic with carries between instructions (run-ahead handles the
/// straight-line run after the first fault); the same round on ordinary memory is the oracle.
fn round_mapped(a: u64, b: u64) -> (u64, u64) {
    let (mut r8, mut r9) = (a, b);
    // SAFETY: only r8/r9 (declared) are changed through the map; flags are clobbered.
    unsafe {
        asm!(
            "add qword ptr [0x40], 0x1234567",
            "adc qword ptr [0x48], 7",
            "xor qword ptr [0x40], 0x5a5a",
            "sub qword ptr [0x48], 3",
            "sbb qword ptr [0x40], 0",
            "rol qword ptr [0x48], 5",
            inout("r8") r8, inout("r9") r9,
        )
    };
    (r8, r9)
}

fn round_native(a: u64, b: u64) -> (u64, u64) {
    let mut mem = [a, b];
    // SAFETY: the same instruction sequence on a two-qword buffer we own.
    unsafe {
        asm!(
            "add qword ptr [{m}], 0x1234567",
            "adc qword ptr [{m} + 8], 7",
            "xor qword ptr [{m}], 0x5a5a",
            "sub qword ptr [{m} + 8], 3",
            "sbb qword ptr [{m}], 0",
            "rol qword ptr [{m} + 8], 5",
            m = in(reg) mem.as_mut_ptr(),
        )
    };
    (mem[0], mem[1])
}

#[test]
fn profiling_timer_storm_with_map_accesses_in_the_handler_is_exact() {
    const T: &str = "profiling_timer_storm_with_map_accesses_in_the_handler_is_exact";
    if scenario("prof", || {
        of::map_registers().unwrap();
        // SAFETY: SIGPROF handler with SA_RESTART, then a 100 µs CPU-time interval timer.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = prof_tick as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100,
            };
            let it = libc::itimerval {
                it_interval: tv,
                it_value: tv,
            };
            libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut());
        }
        let (mut m, mut n) = (0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210u64);
        let mut mismatches = 0u64;
        for _ in 0..40_000 {
            let got = round_mapped(m, n);
            let want = round_native(m, n);
            mismatches += u64::from(got != want);
            (m, n) = want;
        }
        // Stop the storm before leaving (see tests/safety.rs's timer test).
        // SAFETY: disarming the timer and blocking SIGPROF.
        unsafe {
            let zero: libc::itimerval = std::mem::zeroed();
            libc::setitimer(libc::ITIMER_PROF, &zero, std::ptr::null_mut());
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPROF);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        println!(
            "mismatches {mismatches} ticks {}",
            PROF_TICKS.load(Ordering::Relaxed)
        );
        // SAFETY: leaving without running exit handlers.
        unsafe { libc::_exit(if mismatches == 0 { 9 } else { 10 }) };
    }) {
        return;
    }
    let out = child(T, "prof");
    assert_eq!(out.status.code(), Some(9), "{}", show(&out));
    // The storm really happened (each tick also checked its own mapped result).
    let ticks: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.split_once("mismatches 0 ticks ").map(|(_, t)| t))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", show(&out)));
    assert!(ticks > 0, "{}", show(&out));
}

fn altstack() -> libc::stack_t {
    // SAFETY: querying the current alternate stack only.
    unsafe {
        let mut st: libc::stack_t = std::mem::zeroed();
        assert_eq!(libc::sigaltstack(std::ptr::null(), &mut st), 0);
        st
    }
}

fn usable(st: &libc::stack_t) -> usize {
    if st.ss_flags & libc::SS_DISABLE != 0 {
        0
    } else {
        st.ss_size
    }
}

#[test]
fn alternate_stacks_only_grow_on_threads_that_map_and_are_usable() {
    // A Rust thread that never calls map_registers() keeps what std gave it; one that does gets
    // at least 64 KiB; a larger one installed by the user is left alone; and the handler works
    // on each (a mapped access right after).
    let (before, after) = std::thread::spawn(|| {
        let before = usable(&altstack());
        let mut r = of::map_registers().unwrap();
        let after = usable(&altstack());
        r.r15.store(1);
        r.r15 += 1;
        assert_eq!(r.r15.load(), 2);
        (before, after)
    })
    .join()
    .unwrap();
    assert!(after >= 64 * 1024, "before {before} after {after}");
    assert!(after >= before);

    let mine = std::thread::spawn(|| {
        // The user's own 256 KiB alternate stack, installed before map_registers().
        let mut mem = vec![0u8; 256 * 1024];
        let st = libc::stack_t {
            ss_sp: mem.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: mem.len(),
        };
        // SAFETY: `mem` outlives every use: the stack is disabled before it is freed.
        unsafe { assert_eq!(libc::sigaltstack(&st, std::ptr::null_mut()), 0) };
        let mut r = of::map_registers().unwrap();
        let now = altstack();
        r.r14.store(5);
        r.r14 -= 2;
        assert_eq!(r.r14.load(), 3);
        let disable = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: turning our alternate stack off before freeing it.
        unsafe { libc::sigaltstack(&disable, std::ptr::null_mut()) };
        drop(mem);
        (std::ptr::eq(now.ss_sp, st.ss_sp), now.ss_size)
    })
    .join()
    .unwrap();
    assert_eq!(
        mine,
        (true, 256 * 1024),
        "the user's larger stack was replaced"
    );

    let untouched = std::thread::spawn(|| usable(&altstack())).join().unwrap();
    assert!(
        untouched < 64 * 1024,
        "a thread that never mapped kept std's alternate stack ({untouched} bytes)"
    );
}

#[test]
fn a_fault_outside_page_0_is_passed_on_silently() {
    // With map_registers() called, a write to an inaccessible page elsewhere (SEGV_ACCERR, not
    // page 0) dies by SIGSEGV as it would without of, and of prints nothing.
    const T: &str = "a_fault_outside_page_0_is_passed_on_silently";
    if scenario("prot_none", || {
        of::map_registers().unwrap();
        // SAFETY: a fresh inaccessible anonymous page.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: deliberately faults.
        unsafe { asm!("mov qword ptr [rcx], 1", in("rcx") p) };
        println!("REACHED-AFTER-FAULT");
    }) {
        return;
    }
    let out = child(T, "prot_none");
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("REACHED-AFTER-FAULT"), "{}", show(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("of: "),
        "{}",
        show(&out)
    );
}
