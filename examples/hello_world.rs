//! The original `of` demo: read rsp through the map, then move rsp and jump through rip to a
//! function, passing its two arguments in rdi and rsi written through the map.
//!
//! `cargo run --example hello_world` (debug) and `--release` behave the same: the four map
//! writes are one `asm!` block, so no compiler-generated code runs between moving rsp and
//! jumping.

use std::arch::asm;

fn main() {
    let r = of::map_registers().expect("of: cannot map registers");
    println!("rsp: {:#x}", r.rsp.load());
    let target = hello as extern "C" fn(u64, u64) -> ! as usize as u64;
    // SAFETY: `hello` never returns and runs on this thread's stack below the current frame,
    // as if called: rsp moves down by 8 (the return-address slot of a call), rdi and rsi carry
    // its arguments, and rip jumps to it. The sources live in r8..r10, which the block does not
    // write through the map.
    unsafe {
        asm!(
            "mov qword ptr [0x38], r8",  // rdi = 1 (rdi is map offset 0x38)
            "mov qword ptr [0x30], r9",  // rsi = 1234 (rsi is map offset 0x30)
            "sub qword ptr [0x20], 8",   // rsp -= 8, as a call would push
            "mov qword ptr [0x80], r10", // rip = hello: jump
            in("r8") 1u64,
            in("r9") 1234u64,
            in("r10") target,
            options(noreturn),
        );
    }
}

extern "C" fn hello(a1: u64, a2: u64) -> ! {
    println!("a1: {a1}, a2: {a2}");
    std::process::exit(0);
}
