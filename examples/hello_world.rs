//! The original `of` demo, written with `#[of::mapped]`: read rsp through the map, then move
//! rsp and jump through rip to a function, passing its two arguments in rdi and rsi written
//! through the map.
//!
//! The four register statements in `unsafe { … }` become ONE `asm!` block (one page-0
//! instruction each), so no compiler-generated code runs between moving rsp and jumping, and
//! `cargo run --example hello_world` (debug) behaves exactly like `--release`.

#[of::mapped]
fn main() {
    let r = of::map_registers().expect("of: cannot map registers");
    let sp = r.rsp;
    println!("rsp: {sp:#x}");
    let target = hello as extern "C" fn(u64, u64) -> ! as usize as u64;
    // SAFETY: `hello` never returns and runs on this thread's stack below the current frame,
    // as if called: rsp moves down by 8 (the return-address slot of a call), rdi and rsi carry
    // its arguments, and the rip write jumps to it.
    unsafe {
        r.rdi = 1;
        r.rsi = 1234;
        r.rsp -= 8;
        r.rip = target;
    }
}

extern "C" fn hello(a1: u64, a2: u64) -> ! {
    println!("a1: {a1}, a2: {a2}");
    std::process::exit(0);
}
