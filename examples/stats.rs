//! What `of` did, after a small workload: `cargo run --release --example stats`.
//!
//! The workload: isolated map accesses (one fault each), a burst (one fault, the rest by
//! run-ahead), a loop of 10,000 increments, and a few faults outside the map passed on to a
//! handler installed before `of`. Then it prints `of::stats()`: faults, instructions emulated
//! by fault and by run-ahead, faults passed on, the decoded-instruction cache, the busiest fault
//! sites with their instructions. `OF_STATS=1` prints the same report at exit; `OF_TRACE=1`
//! shows every emulated instruction.

use std::arch::asm;

extern "C" fn skip(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel's ucontext; skip the 8-byte load that faulted.
    let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
    uc.uc_mcontext.gregs[libc::REG_RIP as usize] += 8;
}

fn main() {
    // A handler of the program's own, installed first: `of` passes it what is not a register
    // access.
    // SAFETY: installing an SA_SIGINFO handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = skip as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
    }
    let r = of::map_registers().expect("map registers");
    let word = 0u64;
    for i in 0..100u64 {
        r.r12.store(i); // isolated: one fault
        // SAFETY: one map increment of r13, then a load from ordinary memory (run-ahead stops).
        unsafe {
            asm!("add qword ptr [0x68], 1", "mov {t}, [{w}]", t = out(reg) _, w = in(reg) &word, out("r13") _)
        };
    }
    // A burst: one fault, the other three by run-ahead.
    // SAFETY: four map accesses on r8..r11, declared.
    unsafe {
        asm!(
            "mov qword ptr [0x40], 1",
            "add qword ptr [0x48], 2",
            "xor qword ptr [0x50], 3",
            "sub qword ptr [0x58], 4",
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        )
    };
    // A loop: run-ahead follows the branch back.
    // SAFETY: map increments of r8, r12 counting down; both declared.
    unsafe {
        asm!("2:", "add qword ptr [0x40], 1", "dec r12", "jnz 2b", inout("r12") 10_000u64 => _, out("r8") _)
    };
    for _ in 0..3 {
        // SAFETY: outside the map: passed on to `skip`, which resumes after it.
        unsafe { asm!(".byte 0x48, 0x8b, 0x04, 0x25, 0x00, 0x08, 0x00, 0x00", out("rax") _) };
    }
    let s = of::stats();
    println!("faults taken                      {}", s.faults);
    println!("  emulated                        {}", s.faults_emulated);
    println!("  passed on to the handler before {}", s.passed_on);
    println!("  exceptions raised               {}", s.exceptions);
    println!("  refused                         {}", s.refused);
    println!(
        "instructions by run-ahead         {}",
        s.runahead_instructions
    );
    println!(
        "decoded-instruction cache         {} hits, {} misses",
        s.icache_hits, s.icache_misses
    );
    println!("busiest fault sites:");
    for site in s.sites.iter().filter(|s| s.count > 0) {
        let mut d = iced_x86::Decoder::with_ip(
            64,
            &site.bytes[..usize::from(site.len)],
            site.rip,
            iced_x86::DecoderOptions::NONE,
        );
        println!("  {:#x}  {:6} faults  {}", site.rip, site.count, d.decode());
    }
}
