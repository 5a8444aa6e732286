//! Green threads whose context switch moves rsp and rip through the register map.
//!
//! Each coroutine has its own stack. A switch saves what a correct switch must (seed 004): the
//! callee-saved registers rbx rbp r12–r15, MXCSR and the x87 control word, on the current stack,
//! stores rsp in the old context, then writes the new context's rsp to the map's rsp slot (0x20)
//! and jumps by writing its resume address to the rip slot (0x80).
//!
//! `cargo run --example green_threads` prints the checksum of a few thousand round-robin
//! switches; `tests/examples.rs` recomputes it independently.

use std::arch::global_asm;

/// A suspended context: its stack pointer (the saved state lies on its stack).
#[repr(C)]
struct Context {
    rsp: u64,
}

global_asm!(
    ".globl of_green_switch",
    "of_green_switch:",
    // rdi = &mut from: Context, rsi = &to: Context; called like an extern "C" function.
    "push rbp", // save the callee-saved registers on the current stack
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",       // room for MXCSR (4 bytes) and the x87 control word
    "stmxcsr [rsp]",    // save MXCSR
    "fnstcw [rsp + 4]", // save the x87 control word
    "lea rax, [rip + of_green_resume]",
    "push rax",                  // [rsp] = where this context resumes
    "mov [rdi], rsp",            // from.rsp = rsp
    "mov rax, [rsi]",            // rax = to.rsp
    "mov qword ptr [0x20], rax", // rsp = to.rsp, through the map
    "pop rcx",                   // rcx = the new context's resume address
    "mov qword ptr [0x80], rcx", // jump there, through the map's rip slot
    "of_green_resume:",
    "ldmxcsr [rsp]",   // restore MXCSR
    "fldcw [rsp + 4]", // restore the x87 control word
    "add rsp, 8",
    "pop r15", // restore the callee-saved registers
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret", // back into the code that called of_green_switch
);

unsafe extern "C" {
    fn of_green_switch(from: *mut Context, to: *const Context);
    static of_green_resume: u8;
}

const COROUTINES: usize = 3;
const ROUNDS: u64 = 1000;
const STACK: usize = 64 * 1024;

static mut MAIN: Context = Context { rsp: 0 };
static mut CO: [Context; COROUTINES] = [const { Context { rsp: 0 } }; COROUTINES];
static mut CHECKSUM: u64 = 0;
static mut CURRENT: usize = 0;

/// The body of every coroutine: one step per turn, then back to the scheduler.
extern "C" fn coroutine() -> ! {
    // SAFETY: single OS thread; the statics are only touched between switches.
    unsafe {
        let me = CURRENT;
        let mut k = 0u64;
        loop {
            // A little floating point, so a switch that lost MXCSR or x87 state would show.
            let x = (me as f64 + 0.5) * (k as f64 + 0.25);
            CHECKSUM = CHECKSUM.wrapping_mul(1_000_003) ^ (me as u64 * 1_000_000 + k) ^ x.to_bits();
            k += 1;
            of_green_switch(&raw mut CO[me], &raw const MAIN);
        }
    }
}

/// A fresh stack laid out as if `of_green_switch` had suspended a context about to "return"
/// into `coroutine`.
fn new_context(stack: &mut [u64]) -> u64 {
    let top = (stack.as_mut_ptr() as u64 + (stack.len() * 8) as u64) & !15;
    let words = |i: u64| (top - 8 * i) as *mut u64;
    // SAFETY: all slots lie inside `stack`.
    unsafe {
        *words(1) = 0; // a never-used return address for `coroutine` (it never returns)
        *words(2) = coroutine as *const () as u64; // popped by the final `ret`
        for i in 3..=8 {
            *words(i) = 0; // rbp rbx r12 r13 r14 r15
        }
        *words(9) = 0x037F_0000_1F80; // MXCSR 0x1F80 and x87 CW 0x037F (reset values)
        *words(10) = &raw const of_green_resume as u64; // resume address
    }
    top - 80
}

#[allow(clippy::needless_range_loop)] // CURRENT must hold the index the coroutine reads
fn main() {
    of::map_registers().expect("of: cannot map registers");
    let mut stacks: Vec<Vec<u64>> = (0..COROUTINES).map(|_| vec![0u64; STACK / 8]).collect();
    let mut switches = 0u64;
    // SAFETY: one OS thread; contexts point into stacks that outlive every switch.
    unsafe {
        for (i, s) in stacks.iter_mut().enumerate() {
            CO[i].rsp = new_context(s);
        }
        for _ in 0..ROUNDS {
            for i in 0..COROUTINES {
                CURRENT = i;
                of_green_switch(&raw mut MAIN, &raw const CO[i]);
                switches += 2;
            }
        }
        println!("coroutines: {COROUTINES}, rounds: {ROUNDS}, switches: {switches}");
        let checksum = CHECKSUM;
        println!("checksum: {checksum:#018x}");
    }
}
