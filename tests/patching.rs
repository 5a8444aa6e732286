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

/// `fn $name(n, start) -> (register, site)`: runs `add qword ptr [$slot], 1` on `$reg` (from
/// `start`) from one site of its own `n` times, each followed by a load from ordinary memory
/// (so run-ahead stops there and every execution faults until the site is patched); returns
/// the register and the site's address.
macro_rules! site_loop {
    ($(#[$attr:meta])* $name:ident, $add:literal, $reg:tt) => {
        $(#[$attr])*
        #[inline(never)]
        fn $name(n: u64, start: u64) -> (u64, u64) {
            let mut value = start;
            let mut site: u64 = 0;
            let word = 7u64;
            for _ in 0..n {
                // SAFETY: the page-0 access changes the declared register and the status
                // flags; the other instructions read `word` and write the declared outputs.
                unsafe {
                    asm!(
                        "lea {s}, [rip + 2f]",
                        "2:",
                        $add,
                        "mov {t}, [{w}]",
                        s = out(reg) site,
                        t = out(reg) _,
                        w = in(reg) &word,
                        inout($reg) value,
                        options(nostack),
                    )
                };
            }
            (value, site)
        }
    };
}

site_loop!(
    /// On r8.
    add_r8_loop, "add qword ptr [0x40], 1", "r8"
);

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

site_loop!(
    /// Like `add_r8_loop`, at a site of its own.
    shared_site_loop, "add qword ptr [0x40], 1", "r8"
);

/// Runs this test binary's test `name` in a child process with `OF_PATCH_CHILD=name`;
/// returns its exit status and output.
fn child(name: &str) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env("OF_PATCH_CHILD", name)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

fn in_child(name: &str) -> bool {
    std::env::var("OF_PATCH_CHILD").as_deref() == Ok(name)
}

/// Signals delivered while threads run generated code (a storm of SIGPROF sent to the working
/// threads every few microseconds, and a handler that reads the interrupted context as a
/// profiler does): results stay exact, and some signals land inside generated code.
#[test]
fn a_timer_storm_inside_generated_code_changes_nothing() {
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    if !enable() {
        return;
    }
    static SIGNALS: AtomicU64 = AtomicU64::new(0);
    static IN_GENERATED: AtomicU64 = AtomicU64::new(0);
    extern "C" fn on_prof(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid ucontext.
        let uc = unsafe { &*ctx.cast::<libc::ucontext_t>() };
        let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
        SIGNALS.fetch_add(1, Ordering::Relaxed);
        if of::engine::patch::pool::in_generated_code(rip) {
            IN_GENERATED.fetch_add(1, Ordering::Relaxed);
        }
    }
    // SAFETY: installing a handler for SIGPROF (nothing else in this test process uses it).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_prof as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut());
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                of::map_registers().unwrap();
                for round in 0..50u64 {
                    let start = (t << 40) | (round << 20);
                    let (r11, _) = storm_site_loop(100_000, start);
                    assert_eq!(r11, start + 100_000, "thread {t} round {round}");
                }
                // Stay alive until the storm is over: pthread_kill on a thread that has
                // exited (and been joined) is undefined.
                done.fetch_add(1, Ordering::Release);
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        })
        .collect();
    let targets: Vec<libc::pthread_t> = workers.iter().map(|w| w.as_pthread_t()).collect();
    let storm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                for &t in &targets {
                    // SAFETY: the targets are live until `stop` is set (they wait for it).
                    unsafe { libc::pthread_kill(t, libc::SIGPROF) };
                }
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
        })
    };
    // A worker that panicked ends early: then stop the storm at once and report the panic.
    while done.load(Ordering::Acquire) < 4 && !workers.iter().any(|w| w.is_finished()) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    stop.store(true, Ordering::Release);
    storm.join().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    of::engine::patch::flush();
    let (all, inside) = (
        SIGNALS.load(Ordering::Relaxed),
        IN_GENERATED.load(Ordering::Relaxed),
    );
    eprintln!("signal storm: {all} SIGPROF, {inside} of them inside generated code");
    assert!(
        inside > 0,
        "no signal landed in generated code ({all} signals)"
    );
}

site_loop!(
    /// Like `add_r8_loop` on r11, at a site of its own.
    storm_site_loop, "add qword ptr [0x58], 1", "r11"
);

/// After `fork`, the patched site works in both processes; a site first reached in the child
/// (which has no patcher thread) works on the fault path.
#[test]
fn fork_keeps_patched_sites_working_in_both_processes() {
    if !enable() {
        return;
    }
    let (r8, site) = fork_site_loop(10, 0);
    assert_eq!(r8, 10);
    of::engine::patch::flush();
    // SAFETY: the site is mapped code.
    assert_eq!(unsafe { core::ptr::read_volatile(site as *const u8) }, 0xE9);
    // SAFETY: fork; the child only runs the loops and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = fork_site_loop(1000, 5).0 == 1005 && fork_child_only_loop(1000, 7).0 == 1007;
        // SAFETY: _exit from the forked child.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    assert_eq!(fork_site_loop(1000, 9).0, 1009);
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
}

site_loop!(
    /// On r10.
    fork_site_loop, "add qword ptr [0x50], 1", "r10"
);

#[inline(never)]
fn fork_child_only_loop(n: u64, start: u64) -> (u64, u64) {
    let mut r9 = start;
    let word = 7u64;
    for _ in 0..n {
        // SAFETY: r9 += 1 through the map; a load from `word`.
        unsafe {
            asm!(
                "add qword ptr [0x48], 1",
                "mov {t}, [{w}]",
                t = out(reg) _,
                w = in(reg) &word,
                inout("r9") r9,
                options(nostack),
            )
        };
    }
    (r9, 0)
}

/// A program whose own SIGSEGV handler was installed before `of`: patched sites work, and a
/// fault that is not a register access still reaches the program's handler.
#[test]
fn a_handler_installed_first_still_gets_its_faults() {
    const NAME: &str = "a_handler_installed_first_still_gets_its_faults";
    if in_child(NAME) {
        static HITS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        extern "C" fn mine(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
            HITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Skip the 8-byte `mov rax, [0x800]`.
            // SAFETY: the kernel's ucontext.
            let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] += 8;
        }
        // SAFETY: installing our handler before `of`'s.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = mine as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        }
        if !enable() {
            return;
        }
        assert_eq!(add_r8_loop(100, 0).0, 100);
        of::engine::patch::flush();
        assert!(of::engine::patch::stats().patched >= 1);
        assert_eq!(add_r8_loop(100, 0).0, 100);
        // SAFETY: faults outside the map; our handler skips it.
        unsafe { asm!(".byte 0x48, 0x8b, 0x04, 0x25, 0x00, 0x08, 0x00, 0x00", out("rax") _) };
        assert_eq!(HITS.load(std::sync::atomic::Ordering::Relaxed), 1);
        println!("child ok");
        return;
    }
    let (status, text) = child(NAME);
    assert!(status.success() && text.contains("child ok"), "{text}");
}

/// A process where writing code is refused (seccomp: `mprotect` with PROT_WRITE|PROT_EXEC and
/// `pwrite64`, so neither `/proc/self/mem` nor a temporary mprotect works) keeps the fault path
/// and computes the same.
#[test]
fn refused_code_writes_keep_the_fault_path() {
    const NAME: &str = "refused_code_writes_keep_the_fault_path";
    if in_child(NAME) {
        of::map_registers().unwrap();
        deny_code_writes();
        if !of::engine::signal::set_patching(true) {
            println!("child ok (patching unavailable)");
            return;
        }
        assert_eq!(add_r8_loop(200, 0).0, 200);
        of::engine::patch::flush();
        let s = of::engine::patch::stats();
        assert_eq!(s.patched, 0, "{s:?}");
        assert!(s.refused >= 1, "{s:?}");
        assert_eq!(add_r8_loop(200, 1).0, 201);
        println!("child ok {s:?}");
        return;
    }
    let (status, text) = child(NAME);
    assert!(status.success() && text.contains("child ok"), "{text}");
    eprintln!(
        "{}",
        text.lines().find(|l| l.contains("child ok")).unwrap_or("")
    );
}

/// Installs a seccomp filter: `mprotect` with PROT_WRITE and PROT_EXEC both set and `pwrite64`
/// fail with EACCES; everything else is allowed.
fn deny_code_writes() {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u32;
    let f = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let deny = libc::SECCOMP_RET_ERRNO | libc::EACCES as u32;
    let prog = [
        f(LD_W_ABS, 0, 0, 4),        // A = arch
        f(JEQ_K, 1, 0, 0xC000_003E), // x86_64?
        f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        f(LD_W_ABS, 0, 0, 0),                      // A = syscall number
        f(JEQ_K, 0, 1, libc::SYS_pwrite64 as u32), // pwrite64: deny
        f(RET_K, 0, 0, deny),
        f(JEQ_K, 1, 0, libc::SYS_mprotect as u32), // mprotect: check prot
        f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        f(LD_W_ABS, 0, 0, 16 + 2 * 8), // A = prot (args[2], low half)
        f(AND_K, 0, 0, wx),
        f(JEQ_K, 0, 1, wx), // both W and X: deny
        f(RET_K, 0, 0, deny),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS then a seccomp filter program we own, valid for the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0
        );
    }
}

/// A program's own breakpoint (`int3`) still reaches the SIGTRAP handler it installed before
/// `of` (patching installs one of its own for the int3 of its patch protocol).
#[test]
fn a_programs_own_int3_still_reaches_its_handler() {
    const NAME: &str = "a_programs_own_int3_still_reaches_its_handler";
    if in_child(NAME) {
        static TRAPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        extern "C" fn mine(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
            TRAPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: installing our SIGTRAP handler before `of`'s.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = mine as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGTRAP, &sa, std::ptr::null_mut());
        }
        if !enable() {
            println!("child ok (patching unavailable)");
            return;
        }
        // SAFETY: a breakpoint; our handler counts it and execution goes on after it.
        unsafe { asm!("int3") };
        assert_eq!(TRAPS.load(std::sync::atomic::Ordering::Relaxed), 1);
        println!("child ok");
        return;
    }
    let (status, text) = child(NAME);
    assert!(status.success() && text.contains("child ok"), "{text}");
}

/// Code unmapped and replaced at the same address is never patched from the old record: the
/// new instruction faults, is learnt from its own bytes and patched as itself.
#[test]
fn code_replaced_at_the_same_address_is_learnt_again() {
    if !enable() {
        return;
    }
    // An executable page of our own: `add qword ptr [0x68], imm8` (r13), a store to [rsi], ret.
    let code = |imm: u8| -> Vec<u8> {
        let mut c = vec![0x48, 0x83, 0x04, 0x25, 0x68, 0x00, 0x00, 0x00, imm]; // add [0x68], imm
        c.extend([0x48, 0x89, 0x06]); // mov [rsi], rax
        c.push(0xC3); // ret
        c
    };
    let run = |page: u64, n: u64, start: u64| -> u64 {
        let mut r13 = start;
        let word = 0u64;
        for _ in 0..n {
            // SAFETY: calls the page's code: r13 += imm through the map, a store to `word`.
            unsafe {
                asm!(
                    "call {f}",
                    f = in(reg) page,
                    in("rsi") &word,
                    inout("r13") r13,
                    out("rax") _,
                )
            };
        }
        r13
    };
    let map_code = |bytes: &[u8], at: u64| -> u64 {
        // SAFETY: a fresh private mapping at a fixed hint we then own; written while writable,
        // then made read+execute.
        unsafe {
            let p = libc::mmap(
                at as *mut libc::c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            );
            assert_eq!(p as u64, at);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast(), bytes.len());
            libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
            at
        }
    };
    let at = 0x3E00_0000u64;
    let page = map_code(&code(1), at);
    assert_eq!(run(page, 100, 0), 100);
    of::engine::patch::flush();
    // SAFETY: the page is mapped.
    assert_eq!(unsafe { std::ptr::read_volatile(page as *const u8) }, 0xE9);
    assert_eq!(run(page, 100, 0), 100);
    // SAFETY: our mapping.
    unsafe { libc::munmap(page as *mut libc::c_void, 4096) };
    let page = map_code(&code(3), at);
    assert_eq!(run(page, 100, 0), 300, "the new code, not the old record");
    of::engine::patch::flush();
    assert_eq!(run(page, 100, 0), 300);
    // SAFETY: our mapping.
    unsafe { libc::munmap(page as *mut libc::c_void, 4096) };
}
