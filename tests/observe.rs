//! Seeing what `of` did (issue 13): `OF_TRACE` lines per emulated instruction, `OF_STATS=1`'s
//! report at exit, and the counters of `of::stats()`. Each case runs this test binary again as a
//! child with the environment under test and checks what it wrote.

use std::arch::asm;
use std::process::Command;

fn child(name: &str, env: &[(&str, &str)]) -> (std::process::ExitStatus, String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env("OF_OBSERVE_CHILD", name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn in_child(name: &str) -> bool {
    std::env::var("OF_OBSERVE_CHILD").as_deref() == Ok(name)
}

/// The child's workload: r8 = 5, then `add qword ptr [0x40], 1` (a fault) immediately followed
/// by `add qword ptr [0x48], 2` (emulated by run-ahead), then a load from ordinary memory.
fn workload() -> (u64, u64) {
    of::map_registers().unwrap();
    let (mut r8, mut r9) = (5u64, 10u64);
    let word = 0u64;
    // SAFETY: two page-0 accesses changing r8 and r9 (declared), then a load from `word`.
    unsafe {
        asm!(
            "add qword ptr [0x40], 1",
            "add qword ptr [0x48], 2",
            "mov {t}, [{w}]",
            t = out(reg) _,
            w = in(reg) &word,
            inout("r8") r8,
            inout("r9") r9,
        )
    };
    (r8, r9)
}

#[test]
fn of_trace_writes_one_line_per_emulated_instruction() {
    const NAME: &str = "of_trace_writes_one_line_per_emulated_instruction";
    if in_child(NAME) {
        assert_eq!(workload(), (6, 12));
        return;
    }
    let (status, _, err) = child(NAME, &[("OF_TRACE", "1")]);
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("of: trace tid "))
        .collect();
    let fault = lines
        .iter()
        .find(|l| l.contains(" fault ") && l.contains("`add qword ptr [0x40], 1`"))
        .unwrap_or_else(|| panic!("no fault line in:\n{err}"));
    assert!(fault.contains("[48 83 04 25 40 00 00 00 01]"), "{fault}");
    assert!(fault.contains("r8 0x5 -> 0x6"), "{fault}");
    let ahead = lines
        .iter()
        .find(|l| l.contains(" run-ahead ") && l.contains("`add qword ptr [0x48], 2`"))
        .unwrap_or_else(|| panic!("no run-ahead line in:\n{err}"));
    assert!(ahead.contains("r9 0xa -> 0xc"), "{ahead}");
    // The thread id is the child's main thread's, a number.
    let tid: u64 = fault.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(tid > 0);
}

#[test]
fn of_trace_file_appends_to_the_file() {
    const NAME: &str = "of_trace_file_appends_to_the_file";
    if in_child(NAME) {
        assert_eq!(workload(), (6, 12));
        return;
    }
    let path = std::env::temp_dir().join(format!("of-trace-{}.log", std::process::id()));
    std::fs::write(&path, "first line\n").unwrap();
    let p = path.to_str().unwrap();
    let (status, _, err) = child(NAME, &[("OF_TRACE", p)]);
    assert!(status.success(), "{err}");
    assert!(
        !err.contains("of: trace"),
        "trace lines went to stderr: {err}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(text.starts_with("first line\n"), "{text}");
    assert!(
        text.contains("`add qword ptr [0x40], 1`: r8 0x5 -> 0x6"),
        "{text}"
    );
    assert!(
        text.contains("`add qword ptr [0x48], 2`: r9 0xa -> 0xc"),
        "{text}"
    );
}

#[test]
fn of_stats_prints_the_counters_at_exit() {
    const NAME: &str = "of_stats_prints_the_counters_at_exit";
    if in_child(NAME) {
        for _ in 0..3 {
            assert_eq!(workload(), (6, 12));
        }
        return;
    }
    let (status, _, err) = child(NAME, &[("OF_STATS", "1")]);
    assert!(status.success(), "{err}");
    let summary = err
        .lines()
        .find(|l| l.starts_with("of: statistics: "))
        .unwrap_or_else(|| panic!("no statistics in:\n{err}"));
    assert!(summary.contains("(3 emulated"), "{summary}");
    assert!(
        summary.contains("3 more instructions emulated by run-ahead"),
        "{summary}"
    );
    let site = err
        .lines()
        .find(|l| l.starts_with("of:   fault site "))
        .unwrap_or_else(|| panic!("no site in:\n{err}"));
    assert!(
        site.contains(": 3 faults, `add qword ptr [0x40], 1`"),
        "{site}"
    );
}

#[test]
fn of_stats_counts_refusals_and_prints_them_before_the_process_dies() {
    const NAME: &str = "of_stats_counts_refusals_and_prints_them_before_the_process_dies";
    if in_child(NAME) {
        of::map_registers().unwrap();
        // SAFETY: an x87 load from the map: refused, and the process dies of SIGSEGV.
        unsafe { asm!("fld qword ptr [8]", "fstp st(0)") };
        unreachable!();
    }
    let (status, _, err) = child(NAME, &[("OF_STATS", "1")]);
    assert!(!status.success());
    assert!(
        err.contains("of:   refused 1x: x87 memory operands are not mapped"),
        "{err}"
    );
}

#[test]
fn stats_count_faults_passed_on_and_the_cache() {
    const NAME: &str = "stats_count_faults_passed_on_and_the_cache";
    if in_child(NAME) {
        extern "C" fn skip(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
            // SAFETY: the kernel's ucontext; skip the 8-byte load.
            let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] += 8;
        }
        // SAFETY: a handler installed before `of`'s.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = skip as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        }
        of::map_registers().unwrap();
        let before = of::stats();
        for _ in 0..5 {
            // SAFETY: outside the map: passed on to `skip`.
            unsafe { asm!(".byte 0x48, 0x8b, 0x04, 0x25, 0x00, 0x08, 0x00, 0x00", out("rax") _) };
            let word = 0u64;
            // SAFETY: one map access (r12), then a load from `word`.
            unsafe {
                asm!("add qword ptr [0x60], 1", "mov {t}, [{w}]", t = out(reg) _, w = in(reg) &word, out("r12") _)
            };
        }
        let after = of::stats();
        assert_eq!(
            after.passed_on - before.passed_on,
            5,
            "{before:?} {after:?}"
        );
        assert_eq!(after.faults - before.faults, 10);
        assert_eq!(after.faults_emulated - before.faults_emulated, 5);
        assert!(after.icache_hits - before.icache_hits >= 4, "{after:?}");
        println!("child ok");
        return;
    }
    let (status, out, err) = child(NAME, &[]);
    assert!(status.success() && out.contains("child ok"), "{out}{err}");
}
