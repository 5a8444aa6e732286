//! Safe to install anywhere (issue 4, SPEC §4): ownership, chaining, threads, honest failures.
//! Crash cases run in a subprocess: the test re-executes its own binary with `OF_SAFETY_CASE`
//! naming the scenario, and checks the signal that killed the child and its stderr.

use std::arch::asm;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// Runs `scenario` (one of the `case_*` functions below) in a child process.
fn child(test: &str, scenario: &str) -> Output {
    // A child that did not recognise its scenario must not start children of its own.
    assert!(
        std::env::var_os("OF_SAFETY_CASE").is_none(),
        "scenario {:?} is not handled by {test}",
        std::env::var("OF_SAFETY_CASE")
    );
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("OF_SAFETY_CASE", scenario)
        .output()
        .expect("spawn child")
}

/// In the child: runs `f` if this process was started for `scenario`, then exits 0.
fn scenario(name: &str, f: impl FnOnce()) -> bool {
    if std::env::var("OF_SAFETY_CASE").as_deref() == Ok(name) {
        f();
        std::process::exit(0);
    }
    false
}

fn our_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("of: "))
        .map(str::to_owned)
        .collect()
}

fn died_by(out: &Output, sig: i32) {
    assert_eq!(
        out.status.signal(),
        Some(sig),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Ownership

#[test]
fn read_outside_the_map_dies_with_one_line_naming_the_address() {
    const T: &str = "read_outside_the_map_dies_with_one_line_naming_the_address";
    if scenario("read800", || {
        of::map_registers().unwrap();
        // SAFETY: deliberately faults.
        unsafe { asm!("mov rax, qword ptr [0x800]", out("rax") _) };
    }) {
        return;
    }
    let out = child(T, "read800");
    died_by(&out, libc::SIGSEGV);
    let lines = our_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("0x800"), "{lines:?}");
}

#[test]
fn non_canonical_address_is_not_emulated_as_an_rax_access() {
    const T: &str = "non_canonical_address_is_not_emulated_as_an_rax_access";
    if scenario("noncanon", || {
        of::map_registers().unwrap();
        // #GP arrives as SIGSEGV with si_code SI_KERNEL and si_addr 0: never rax's slot.
        // SAFETY: deliberately faults.
        unsafe {
            asm!("mov rax, qword ptr [rcx]", in("rcx") 0x8000_0000_0000_0000u64, out("rax") _)
        };
        println!("REACHED-AFTER-FAULT");
    }) {
        return;
    }
    let out = child(T, "noncanon");
    died_by(&out, libc::SIGSEGV);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("REACHED-AFTER-FAULT"));
}

#[test]
fn privileged_instruction_dies_by_sigsegv() {
    const T: &str = "privileged_instruction_dies_by_sigsegv";
    if scenario("hlt", || {
        of::map_registers().unwrap();
        // SAFETY: deliberately faults (#GP at CPL 3).
        unsafe { asm!("hlt") };
    }) {
        return;
    }
    died_by(&child(T, "hlt"), libc::SIGSEGV);
}

#[test]
fn call_through_a_null_function_pointer_dies_without_a_nested_fault() {
    const T: &str = "call_through_a_null_function_pointer_dies_without_a_nested_fault";
    if scenario("nullcall", || {
        of::map_registers().unwrap();
        call_null();
    }) {
        return;
    }
    let out = child(T, "nullcall");
    died_by(&out, libc::SIGSEGV);
    // No nested fault: the whole of stderr is at most of's one line.
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = err.lines().collect();
    assert!(lines.len() <= 1, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("of: ")), "{lines:?}");
}

#[test]
fn raise_and_kill_take_the_default_action() {
    const T: &str = "raise_and_kill_take_the_default_action";
    if scenario("raise", || {
        of::map_registers().unwrap();
        // SAFETY: raise(3) is always safe to call.
        unsafe { libc::raise(libc::SIGSEGV) };
    }) || scenario("kill", || {
        of::map_registers().unwrap();
        // SAFETY: kill(2) on our own pid.
        unsafe { libc::kill(libc::getpid(), libc::SIGSEGV) };
        std::thread::sleep(std::time::Duration::from_millis(100));
    }) {
        return;
    }
    died_by(&child(T, "raise"), libc::SIGSEGV);
    died_by(&child(T, "kill"), libc::SIGSEGV);
}

#[test]
fn instruction_longer_than_15_bytes_is_not_ours() {
    const T: &str = "instruction_longer_than_15_bytes_is_not_ours";
    if scenario("long", || {
        of::map_registers().unwrap();
        // 8 redundant 0x66/0x2e prefixes + `mov rax, [0x08]` (8 bytes) = 16 bytes: #GP.
        // SAFETY: deliberately faults.
        unsafe {
            asm!(
                ".byte 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e",
                ".byte 0x48, 0x8b, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00",
                out("rax") _,
            )
        };
        println!("REACHED-AFTER-FAULT");
    }) {
        return;
    }
    let out = child(T, "long");
    died_by(&out, libc::SIGSEGV);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("REACHED-AFTER-FAULT"));
}

// ---------------------------------------------------------------------------------------------
// 2. Chaining

static SEEN: AtomicU64 = AtomicU64::new(0);

/// si_code of a fault on an unmapped address (`<asm-generic/siginfo.h>`; libc has no Linux const).
const SEGV_MAPERR: i32 = 1;

/// What the SA_SIGINFO handler installed before `map_registers()` expects to see.
static EXPECT_ADDR: AtomicU64 = AtomicU64::new(0);
static EXPECT_CODE: AtomicI32 = AtomicI32::new(0);
/// True: the faulting rip is 0 (a call through a null pointer); false: rip == the context's rdx,
/// which the faulting asm loads with the address of the faulting instruction.
static EXPECT_RIP_ZERO: AtomicBool = AtomicBool::new(false);

extern "C" fn info_handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: kernel-provided arguments of an SA_SIGINFO handler.
    let (addr, code) = unsafe { ((*info).si_addr() as u64, (*info).si_code) };
    // SAFETY: as above; the ucontext is the one of the faulting thread.
    let (rip, rdx) = unsafe {
        let g = &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs;
        (
            g[libc::REG_RIP as usize] as u64,
            g[libc::REG_RDX as usize] as u64,
        )
    };
    let want_rip = if EXPECT_RIP_ZERO.load(Ordering::SeqCst) {
        0
    } else {
        rdx
    };
    // Exit status 40: the handler saw exactly the kernel's siginfo and the faulting context.
    let code_out = if sig != libc::SIGSEGV {
        41
    } else if addr != EXPECT_ADDR.load(Ordering::SeqCst) {
        43
    } else if code != EXPECT_CODE.load(Ordering::SeqCst) {
        44
    } else if rip != want_rip || rip == 0 && !EXPECT_RIP_ZERO.load(Ordering::SeqCst) {
        45
    } else {
        40
    };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(code_out) };
}

extern "C" fn plain_handler(sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(if sig == libc::SIGSEGV { 42 } else { 43 }) };
}

fn install(handler: usize, siginfo: bool) {
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = if siginfo { libc::SA_SIGINFO } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()), 0);
    }
}

/// Reads 0x800 (page 0, outside the map) with rdx = the address of the faulting instruction.
fn fault_0x800() {
    // SAFETY: deliberately faults.
    unsafe {
        asm!(
            "lea rdx, [rip + 2f]",
            "2: mov rax, qword ptr [0x800]",
            out("rax") _, out("rdx") _,
        )
    };
}

/// A non-canonical load (#GP: SIGSEGV, SI_KERNEL, si_addr 0), rdx = the faulting instruction.
fn fault_non_canonical() {
    // SAFETY: deliberately faults.
    unsafe {
        asm!(
            "lea rdx, [rip + 2f]",
            "2: mov rax, qword ptr [rcx]",
            in("rcx") 0x8000_0000_0000_0000u64, out("rax") _, out("rdx") _,
        )
    };
}

/// Reads `addr` with rdx = the address of the faulting instruction.
fn fault_at(addr: u64) {
    // SAFETY: deliberately faults.
    unsafe {
        asm!(
            "lea rdx, [rip + 2f]",
            "2: mov rax, qword ptr [rcx]",
            in("rcx") addr, out("rax") _, out("rdx") _,
        )
    };
}

/// A device that reads as zeros.
struct Zeroes;

impl of::region::Device for Zeroes {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _: u64, _: &[u8]) {}
}

fn call_null() {
    // SAFETY: deliberately calls address 0 (a bug, not a register access).
    let f: extern "C" fn() = unsafe { std::mem::transmute(std::hint::black_box(0usize)) };
    f();
}

#[test]
fn handler_installed_before_gets_every_fault_that_is_not_ours() {
    const T: &str = "handler_installed_before_gets_every_fault_that_is_not_ours";
    let before_info = |expect_addr: u64, code: i32, rip_zero: bool, fault: fn()| {
        move || {
            EXPECT_ADDR.store(expect_addr, Ordering::SeqCst);
            EXPECT_CODE.store(code, Ordering::SeqCst);
            EXPECT_RIP_ZERO.store(rip_zero, Ordering::SeqCst);
            install(info_handler as *const () as usize, true);
            let mut r = of::map_registers().unwrap();
            r.r8.store(1); // page-0 accesses: ours, the previous handler is not called
            r.r8 += 1;
            assert_eq!(r.r8.load(), 2);
            fault();
        }
    };
    if scenario(
        "before_info",
        before_info(0x800, SEGV_MAPERR, false, fault_0x800),
    ) || scenario(
        "before_info_gp",
        before_info(0, libc::SI_KERNEL, false, fault_non_canonical),
    ) || scenario(
        "before_info_null",
        before_info(0, SEGV_MAPERR, true, call_null),
    ) || scenario("before_info_region", || {
        // A trapped region changes nothing for faults outside it and the map: a fault on
        // another inaccessible page reaches the handler installed before, untouched.
        // SAFETY: an anonymous mapping with no access rights, of our own.
        let guard = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as u64;
        EXPECT_ADDR.store(guard + 8, Ordering::SeqCst);
        EXPECT_CODE.store(2, Ordering::SeqCst); // SEGV_ACCERR
        EXPECT_RIP_ZERO.store(false, Ordering::SeqCst);
        install(info_handler as *const () as usize, true);
        let mut r = of::map_registers().unwrap();
        let region = of::region::Region::new(16, Zeroes).unwrap();
        // SAFETY: an 8-byte read inside the region.
        assert_eq!(
            unsafe { (region.as_ptr() as *const u64).read_volatile() },
            0
        );
        r.r8.store(1);
        r.r8 += 1;
        assert_eq!(r.r8.load(), 2);
        fault_at(guard + 8);
    }) || scenario("before_plain", || {
        install(plain_handler as *const () as usize, false);
        of::map_registers().unwrap();
        fault_0x800();
    }) || scenario("before_plain_gp", || {
        install(plain_handler as *const () as usize, false);
        of::map_registers().unwrap();
        fault_non_canonical();
    }) || scenario("before_ign", || {
        install(libc::SIG_IGN, false);
        of::map_registers().unwrap();
        fault_0x800();
    }) {
        return;
    }
    for (s, code) in [
        ("before_info", 40),
        ("before_info_region", 40),
        ("before_info_gp", 40),
        ("before_info_null", 40),
        ("before_plain", 42),
        ("before_plain_gp", 42),
    ] {
        let out = child(T, s);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{s}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // The previous handler got the fault untouched: of printed nothing.
        assert!(our_lines(&out).is_empty(), "{s}: {:?}", our_lines(&out));
    }
    let out = child(T, "before_ign");
    died_by(&out, libc::SIGSEGV);
    assert!(our_lines(&out).len() <= 1, "{:?}", our_lines(&out));
}

static mut OURS: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();

extern "C" fn chaining_handler(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    SEEN.fetch_add(1, Ordering::Relaxed);
    // SAFETY: OURS was filled by sigaction before this handler was installed.
    let prev = unsafe { (*std::ptr::addr_of!(OURS)).assume_init() };
    // SAFETY: the previous action is of's SA_SIGINFO handler.
    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
        unsafe { std::mem::transmute(prev.sa_sigaction) };
    f(sig, info, ctx);
}

#[test]
fn handler_installed_after_that_chains_keeps_the_map_working() {
    const T: &str = "handler_installed_after_that_chains_keeps_the_map_working";
    if scenario("after", || {
        let mut r = of::map_registers().unwrap();
        // SAFETY: installing a handler that saves the previous action (ours) into OURS first.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = chaining_handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigfillset(&mut sa.sa_mask);
            libc::sigaction(
                libc::SIGSEGV,
                &sa,
                (*std::ptr::addr_of_mut!(OURS)).as_mut_ptr(),
            );
        }
        r.r9.store(20);
        r.r9 += 22;
        assert_eq!(r.r9.load(), 42);
        assert!(SEEN.load(Ordering::Relaxed) >= 1);
        std::process::exit(7);
    }) {
        return;
    }
    assert_eq!(child(T, "after").status.code(), Some(7));
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let a = std::hint::black_box([n; 128]);
    if n == u64::MAX {
        0
    } else {
        recurse(n + 1).wrapping_add(a[7])
    }
}

#[test]
fn rust_stack_overflow_report_still_appears() {
    const T: &str = "rust_stack_overflow_report_still_appears";
    if scenario("so_main", || {
        of::map_registers().unwrap();
        println!("{}", recurse(0));
    }) || scenario("so_thread", || {
        of::map_registers().unwrap();
        std::thread::spawn(|| println!("{}", recurse(0)))
            .join()
            .unwrap();
    }) {
        return;
    }
    for s in ["so_main", "so_thread"] {
        let out = child(T, s);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("has overflowed its stack"),
            "{s}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.signal().is_some(), "{s}: {:?}", out.status);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Threads

#[test]
fn every_thread_sees_its_own_registers() {
    const THREADS: u64 = 8;
    const M: u64 = 2000;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                of::map_registers().unwrap();
                let mut r8 = t * 1_000_000;
                for _ in 0..M {
                    // SAFETY: r8 += 1 through the map; r8 is the declared inout.
                    unsafe { asm!("add qword ptr [0x40], 1", inout("r8") r8) };
                }
                let local = 0u64;
                let sp: u64;
                // SAFETY: a map read of rsp.
                unsafe { asm!("mov {}, qword ptr [0x20]", out(reg) sp) };
                let here = &local as *const u64 as u64;
                (r8, t * 1_000_000 + M, sp, here)
            })
        })
        .collect();
    for h in handles {
        let (got, want, sp, here) = h.join().unwrap();
        assert_eq!(got, want);
        assert!(
            sp <= here + 4096 && here - sp < 1 << 20,
            "rsp {sp:#x} vs local {here:#x}"
        );
    }
}

#[test]
fn map_registers_gives_the_thread_a_large_enough_alternate_stack() {
    std::thread::spawn(|| {
        of::map_registers().unwrap();
        // SAFETY: querying the current alternate stack.
        let mut st: libc::stack_t = unsafe { std::mem::zeroed() };
        unsafe { libc::sigaltstack(std::ptr::null(), &mut st) };
        assert_eq!(st.ss_flags & libc::SS_DISABLE, 0);
        assert!(st.ss_size >= 64 * 1024, "{}", st.ss_size);
    })
    .join()
    .unwrap();
}

#[test]
fn fork_keeps_the_map_working_in_the_child() {
    of::map_registers().unwrap();
    // SAFETY: the child only does a map access and _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut r10 = 30u64;
        // SAFETY: r10 += 12 through the map.
        unsafe { asm!("add qword ptr [0x50], 12", inout("r10") r10) };
        // SAFETY: _exit in the child.
        unsafe { libc::_exit(r10 as i32) };
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status));
    assert_eq!(libc::WEXITSTATUS(status), 42);
}

static IN_SIGNAL: AtomicU64 = AtomicU64::new(0);

extern "C" fn usr1(_: libc::c_int) {
    let mut r11 = 99u64;
    // SAFETY: r11 += 1 through the map inside another signal's handler.
    unsafe { asm!("add qword ptr [0x58], 1", inout("r11") r11) };
    IN_SIGNAL.store(r11, Ordering::SeqCst);
}

#[test]
fn a_page0_access_inside_another_signal_handler_works() {
    of::map_registers().unwrap();
    // SAFETY: installing a plain SIGUSR1 handler and raising it.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = usr1 as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        libc::raise(libc::SIGUSR1);
    }
    assert_eq!(IN_SIGNAL.load(Ordering::SeqCst), 100);
}

#[test]
fn timer_storm_during_mapped_arithmetic_gives_the_exact_result() {
    const T: &str = "timer_storm_during_mapped_arithmetic_gives_the_exact_result";
    extern "C" fn tick(_: libc::c_int) {
        let mut r9 = 5u64;
        // SAFETY: a map access inside the timer handler, on a register it owns.
        unsafe { asm!("add qword ptr [0x48], 1", inout("r9") r9) };
        std::hint::black_box(r9);
    }
    let storm = |runahead: bool| {
        move || {
            of::map_registers().unwrap();
            // SAFETY: SIGALRM handler with SA_RESTART, then a 50 µs interval timer.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = tick as *const () as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
                let it = libc::itimerval {
                    it_interval: libc::timeval {
                        tv_sec: 0,
                        tv_usec: 50,
                    },
                    it_value: libc::timeval {
                        tv_sec: 0,
                        tv_usec: 50,
                    },
                };
                libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
            }
            // Off: one fault per increment, more interleaving; on: signals land inside run-ahead.
            of::engine::signal::set_runahead(runahead);
            let mut r8 = 0u64;
            for _ in 0..200_000 {
                // SAFETY: r8 += 3 through the map.
                unsafe { asm!("add qword ptr [0x40], 3", inout("r8") r8) };
            }
            // Stop the storm before exiting: std's exit path unmaps the main thread's alternate stack,
            // and a SIGALRM delivered then could not be (a race in the test, not in of).
            // SAFETY: disarming the timer and blocking SIGALRM.
            unsafe {
                let zero: libc::itimerval = std::mem::zeroed();
                libc::setitimer(libc::ITIMER_REAL, &zero, std::ptr::null_mut());
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGALRM);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let r = if r8 == 600_000 { 9 } else { 10 };
            // SAFETY: leaving without running exit handlers.
            unsafe { libc::_exit(r) };
        }
    };
    if scenario("storm", storm(false)) || scenario("storm_runahead", storm(true)) {
        return;
    }
    for s in ["storm", "storm_runahead"] {
        let out = child(T, s);
        assert_eq!(
            out.status.code(),
            Some(9),
            "{s}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Honest failures

// The faulting instructions are the first instructions of these functions, so the rip in the
// diagnostic can be checked against the function's address.
std::arch::global_asm!(
    ".globl of_safety_fld",
    "of_safety_fld:",
    "fld qword ptr [8]",
    "fstp st(0)",
    "ret",
    ".globl of_safety_fxsave",
    "of_safety_fxsave:",
    "fxsave [0]",
    "ret",
);

unsafe extern "C" {
    fn of_safety_fld();
    fn of_safety_fxsave();
}

/// Splits `of: cannot emulate `<asm>` (<hex bytes>) at 0x<hex>: <reason>` into its parts.
fn parse_cannot_emulate(line: &str) -> Option<(&str, Vec<u8>, u64, &str)> {
    let rest = line.strip_prefix("of: cannot emulate `")?;
    let (asm_text, rest) = rest.split_once("` (")?;
    let (bytes, rest) = rest.split_once(") at 0x")?;
    let (rip, reason) = rest.split_once(": ")?;
    let bytes = bytes
        .split(' ')
        .map(|b| {
            (b.len() == 2)
                .then(|| u8::from_str_radix(b, 16).ok())
                .flatten()
        })
        .collect::<Option<Vec<u8>>>()?;
    let rip = u64::from_str_radix(rip, 16).ok()?;
    (!asm_text.is_empty() && !reason.trim().is_empty()).then_some((asm_text, bytes, rip, reason))
}

#[test]
fn an_instruction_that_cannot_be_emulated_prints_one_line_and_dies() {
    const T: &str = "an_instruction_that_cannot_be_emulated_prints_one_line_and_dies";
    let entry = |f: unsafe extern "C" fn()| {
        move || {
            of::map_registers().unwrap();
            println!("AT {:x}", f as usize);
            // SAFETY: deliberately faults on its first instruction.
            unsafe { f() };
        }
    };
    if scenario("fld", entry(of_safety_fld)) || scenario("fxsave", entry(of_safety_fxsave)) {
        return;
    }
    // (scenario, the instruction as SPEC §4's example line writes it, its bytes)
    for (s, text, bytes) in [
        (
            "fld",
            "fld qword ptr [8]",
            &[0xdd, 0x04, 0x25, 8, 0, 0, 0][..],
        ),
        (
            "fxsave",
            "fxsave [0]",
            &[0x0f, 0xae, 0x04, 0x25, 0, 0, 0, 0][..],
        ),
    ] {
        let out = child(T, s);
        died_by(&out, libc::SIGSEGV);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let at = stdout
            .lines()
            .find_map(|l| l.split_once("AT ").map(|(_, a)| a.trim()))
            .and_then(|a| u64::from_str_radix(a, 16).ok())
            .unwrap_or_else(|| panic!("{s}: no address in {stdout}"));
        let lines = our_lines(&out);
        assert_eq!(lines.len(), 1, "{s}: {lines:?}");
        let (asm_text, got_bytes, rip, reason) =
            parse_cannot_emulate(&lines[0]).unwrap_or_else(|| panic!("{s}: {lines:?}"));
        assert_eq!(asm_text, text, "{s}: {lines:?}");
        assert_eq!(got_bytes, bytes, "{s}: {lines:?}");
        assert_eq!(rip, at, "{s}: {lines:?}");
        assert!(!reason.is_empty());
    }
}
