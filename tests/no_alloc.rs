//! The fault path allocates nothing (issue 4): a global allocator that aborts when it is called
//! on a thread that is inside the SIGSEGV handler. The handler is wrapped by a chaining handler
//! installed after `map_registers()` that records the thread while `of`'s handler runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::arch::asm;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The thread (tid) currently inside of's handler, or 0.
static IN_HANDLER: AtomicI32 = AtomicI32::new(0);
static HANDLED: AtomicU64 = AtomicU64::new(0);

struct Guard;

// SAFETY: forwards to the system allocator; aborts (never returns bad memory) when misused.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check();
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        check();
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn check() {
    let t = IN_HANDLER.load(Ordering::SeqCst);
    // SAFETY: gettid has no preconditions.
    if t != 0 && t == unsafe { libc::gettid() } {
        let msg = b"allocation inside the SIGSEGV handler\n";
        // SAFETY: write(2) and abort(3) from the allocator.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::abort();
        }
    }
}

#[global_allocator]
static GLOBAL: Guard = Guard;

static mut OURS: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();

extern "C" fn wrapper(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: gettid has no preconditions.
    IN_HANDLER.store(unsafe { libc::gettid() }, Ordering::SeqCst);
    // SAFETY: OURS holds of's action, saved when this wrapper was installed.
    let prev = unsafe { (*std::ptr::addr_of!(OURS)).assume_init() };
    // SAFETY: of's handler is an SA_SIGINFO handler.
    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
        unsafe { std::mem::transmute(prev.sa_sigaction) };
    f(sig, info, ctx);
    HANDLED.fetch_add(1, Ordering::SeqCst);
    IN_HANDLER.store(0, Ordering::SeqCst);
}

#[test]
fn the_fault_path_does_not_allocate() {
    let mut r = of::map_registers().unwrap();
    // SAFETY: install the wrapper, saving of's action.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = wrapper as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigfillset(&mut sa.sa_mask);
        libc::sigaction(
            libc::SIGSEGV,
            &sa,
            (*std::ptr::addr_of_mut!(OURS)).as_mut_ptr(),
        );
    }
    for runahead in [true, false] {
        of::engine::signal::set_runahead(runahead);
        r.r8.store(7);
        r.r8 += 5;
        r.r8 <<= 2;
        assert_eq!(r.r8.load(), 48);
        let mut buf = [0u8; 16];
        let (q, rem): (u64, u64);
        // SAFETY: registers named are declared; the map accesses: div by r9 (map operand), a
        // rep stosb into r10/r11 (rdi in the map), a vector load of r10:r11.
        unsafe {
            asm!(
                "div qword ptr [0x48]",        // rdx:rax / r9 through the map
                "mov rdi, 0x50",
                "mov rcx, 16",
                "mov al, 0x5a",
                "rep stosb",                   // r10, r11 = 0x5a.. through the map
                "movdqu xmm0, xmmword ptr [0x50]",
                "movdqu [{b}], xmm0",
                b = in(reg) buf.as_mut_ptr(),
                inout("rax") 1000u64 => q, inout("rdx") 0u64 => rem, in("r9") 7u64,
                out("rdi") _, out("rcx") _, out("r10") _, out("r11") _, out("xmm0") _,
            );
        }
        assert_eq!(buf, [0x5a; 16]);
        // rax was overwritten by `mov al` after the division: only rdx (the remainder) survives.
        assert_eq!(rem, 1000 % 7);
        let _ = q;
        // push/pop with map operands, including rsp's own slot: `push [0x20]` pushes the value
        // rsp had before the push, exactly as `push rsp` does on the CPU.
        let (copied, pushed_rsp, native_rsp): (u64, u64, u64);
        // SAFETY: balanced pushes and pops on the real stack (no `nostack`, so the compiler
        // leaves no red zone in use); r8/r9 are declared.
        unsafe {
            asm!(
                "push qword ptr [0x40]",       // push r8 through the map
                "pop qword ptr [0x48]",        // r9 = popped value, through the map
                "mov {n}, rsp",
                "push rsp",                    // native reference
                "pop {n}",
                "push qword ptr [0x20]",       // push rsp through the map
                "pop {p}",
                n = out(reg) native_rsp, p = out(reg) pushed_rsp,
                in("r8") 0x1234_5678_9abc_def0u64, out("r9") copied,
            );
        }
        assert_eq!(copied, 0x1234_5678_9abc_def0);
        assert_eq!(pushed_rsp, native_rsp);
        let s = of::snapshot().unwrap();
        assert!(s.rip > 0x1000);
    }
    assert!(HANDLED.load(Ordering::SeqCst) > 10);
}

/// The detector itself works: an allocation while the flag names this thread aborts.
#[test]
fn the_guard_aborts_an_allocation_made_while_the_flag_is_set() {
    use std::os::unix::process::ExitStatusExt;
    if std::env::var("OF_NO_ALLOC_CASE").as_deref() == Ok("guard") {
        // SAFETY: gettid has no preconditions.
        IN_HANDLER.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        let v = std::hint::black_box(vec![1u8; 64]);
        IN_HANDLER.store(0, Ordering::SeqCst);
        println!("{}", v.len());
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_guard_aborts_an_allocation_made_while_the_flag_is_set",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OF_NO_ALLOC_CASE", "guard")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{:?}", out.status);
    assert!(String::from_utf8_lossy(&out.stderr).contains("allocation inside the SIGSEGV handler"));
}
