//! Run-ahead must not change what a program computes (issue 6): random straight-line programs
//! of map instructions, register-only arithmetic and conditional branches run through the map
//! with run-ahead on and with run-ahead off (one fault per map instruction), from the same
//! registers and flags, must end in the same registers and flags.
//!
//! The fast subset runs in `cargo test`; `cargo test --release --test runahead -- --ignored`
//! runs the long sweep (`OF_SEED` picks the seed).

use iced_x86::code_asm::*;
use std::arch::asm;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Run-ahead is a process-wide switch: tests in this binary take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// Address of the generated code, called through `call [rip + CODE]`.
static CODE: AtomicU64 = AtomicU64::new(0);

/// SplitMix64: small, seedable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Register values biased toward edge cases.
    fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << self.below(64),
            3 => self.below(16),
            4 => 0x8000_0000_0000_0000 | self.below(4),
            _ => self.next(),
        }
    }
}

/// Registers the generated programs use, in encoding order numbers: rax rcx rdx rsi rdi
/// r8..r14 (never rbx, rsp, rbp — Rust asm cannot hand them over — nor r15, which carries the
/// flags).
const USED: [usize; 12] = [0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14];

fn r64(n: usize) -> AsmRegister64 {
    [
        rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
    ][n]
}
fn r32(n: usize) -> AsmRegister32 {
    [
        eax, ecx, edx, ebx, esp, ebp, esi, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d,
    ][n]
}
fn r16(n: usize) -> AsmRegister16 {
    [
        ax, cx, dx, bx, sp, bp, si, di, r8w, r9w, r10w, r11w, r12w, r13w, r14w, r15w,
    ][n]
}
fn r8_(n: usize) -> AsmRegister8 {
    [
        al, cl, dl, bl, spl, bpl, sil, dil, r8b, r9b, r10b, r11b, r12b, r13b, r14b, r15b,
    ][n]
}

/// A map offset for an access of `size` bytes touching only registers in [`USED`].
fn offset(rng: &mut Rng, size: u64) -> u64 {
    loop {
        let off = rng.below(0x78);
        let end = off + size;
        let ok = (end <= 0x18) || (off >= 0x30 && end <= 0x78);
        if ok {
            return off;
        }
    }
}

fn reg(rng: &mut Rng) -> usize {
    USED[rng.below(USED.len() as u64) as usize]
}

/// Appends one random instruction.
fn instruction(a: &mut CodeAssembler, rng: &mut Rng) -> Result<(), IcedError> {
    let size = [1u64, 2, 4, 8][rng.below(4) as usize];
    let off = offset(rng, size);
    let r = reg(rng);
    let imm = rng.next() as i32 >> rng.below(32);
    macro_rules! sized_mem_op {
        ($op:ident, $src:expr) => {
            match size {
                1 => a.$op(byte_ptr(off), r8_(r))?,
                2 => a.$op(word_ptr(off), r16(r))?,
                4 => a.$op(dword_ptr(off), r32(r))?,
                _ => a.$op(qword_ptr(off), r64(r))?,
            }
        };
    }
    match rng.below(14) {
        0 => sized_mem_op!(add, r),
        1 => sized_mem_op!(sub, r),
        2 => sized_mem_op!(xor, r),
        3 => sized_mem_op!(adc, r),
        4 => match size {
            1 => a.add(byte_ptr(off), imm as i8 as i32)?,
            2 => a.sub(word_ptr(off), imm as i16 as i32)?,
            4 => a.and(dword_ptr(off), imm)?,
            _ => a.or(qword_ptr(off), imm)?,
        },
        5 => match size {
            1 => a.inc(byte_ptr(off))?,
            2 => a.dec(word_ptr(off))?,
            4 => a.neg(dword_ptr(off))?,
            _ => a.not(qword_ptr(off))?,
        },
        6 => match size {
            1 => a.mov(r8_(r), byte_ptr(off))?,
            2 => a.mov(r16(r), word_ptr(off))?,
            4 => a.mov(r32(r), dword_ptr(off))?,
            _ => a.mov(r64(r), qword_ptr(off))?,
        },
        7 => sized_mem_op!(mov, r),
        8 => match size {
            1 => a.shl(byte_ptr(off), (imm & 15) as u32)?,
            2 => a.sar(word_ptr(off), (imm & 31) as u32)?,
            4 => a.rol(dword_ptr(off), (imm & 31) as u32)?,
            _ => a.shr(qword_ptr(off), (imm & 63) as u32)?,
        },
        9 => sized_mem_op!(cmp, r),
        10 => {
            // Register-only arithmetic between two used registers.
            let s = reg(rng);
            match rng.below(6) {
                0 => a.add(r64(r), r64(s))?,
                1 => a.sub(r32(r), r32(s))?,
                2 => a.xor(r16(r), r16(s))?,
                3 => a.imul_2(r64(r), r64(s))?,
                4 => a.lea(r64(r), qword_ptr(r64(s) + 8))?,
                _ => a.mov(r64(r), rng.value())?,
            }
        }
        11 => {
            // A conditional branch over the next instruction.
            let mut skip = a.create_label();
            match rng.below(4) {
                0 => a.jne(skip)?,
                1 => a.jb(skip)?,
                2 => a.jl(skip)?,
                _ => a.js(skip)?,
            }
            a.add(qword_ptr(offset(rng, 8) & !7), 1)?;
            a.set_label(&mut skip)?;
            a.nop()?;
        }
        12 => match size {
            1 | 2 => a.cmove(r32(r), dword_ptr(offset(rng, 4)))?,
            _ => a.cmovb(r64(r), qword_ptr(offset(rng, 8)))?,
        },
        _ => a.sete(byte_ptr(offset(rng, 1)))?,
    }
    Ok(())
}

/// Executable memory holding one program: `push r15; popfq; <body>; pushfq; pop r15; ret`.
struct Program {
    mem: *mut u8,
    len: usize,
}

impl Program {
    fn new(rng: &mut Rng, n: usize) -> Program {
        const SIZE: usize = 1 << 16;
        // SAFETY: a fresh private anonymous mapping.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(mem, libc::MAP_FAILED);
        let mut a = CodeAssembler::new(64).unwrap();
        a.push(r15).unwrap();
        a.popfq().unwrap();
        for _ in 0..n {
            instruction(&mut a, rng).unwrap();
        }
        a.pushfq().unwrap();
        a.pop(r15).unwrap();
        a.ret().unwrap();
        let bytes = a.assemble(mem as u64).unwrap();
        assert!(bytes.len() <= SIZE);
        // SAFETY: the mapping is SIZE bytes long and writable.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), mem.cast(), bytes.len()) };
        Program {
            mem: mem.cast(),
            len: SIZE,
        }
    }

    /// Runs the program with `regs` (indexed like [`USED`]) and the status flags `flags`;
    /// returns the registers and status flags after it.
    fn run(&self, regs: [u64; 12], flags: u64) -> ([u64; 12], u64) {
        CODE.store(self.mem as u64, Ordering::SeqCst);
        let mut g = regs;
        let mut f = (flags & 0x8D5) | 0x202;
        // SAFETY: the program only touches the registers handed over here and map slots of
        // those registers; it keeps rsp balanced and returns with `ret`.
        unsafe {
            asm!(
                "call qword ptr [rip + {code}]",
                code = sym CODE,
                inout("rax") g[0], inout("rcx") g[1], inout("rdx") g[2], inout("rsi") g[3],
                inout("rdi") g[4], inout("r8") g[5], inout("r9") g[6], inout("r10") g[7],
                inout("r11") g[8], inout("r12") g[9], inout("r13") g[10], inout("r14") g[11],
                inout("r15") f,
            );
        }
        (g, f & 0x8D5)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.mem.cast(), self.len) };
    }
}

fn sweep(seed: u64, programs: usize, max_len: usize) -> usize {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    of::map_registers().expect("map registers");
    let mut rng = Rng(seed);
    let mut instructions = 0;
    let (mut ran_ahead, mut faults_on, mut faults_off) = (0, 0, 0);
    for p in 0..programs {
        let n = 1 + rng.below(max_len as u64) as usize;
        instructions += n;
        let prog = Program::new(&mut rng, n);
        for _ in 0..4 {
            let regs: [u64; 12] = std::array::from_fn(|_| rng.value());
            let flags = rng.next();
            of::engine::signal::set_runahead(true);
            let s0 = of::engine::signal::stats();
            let on = prog.run(regs, flags);
            let s1 = of::engine::signal::stats();
            of::engine::signal::set_runahead(false);
            let off = prog.run(regs, flags);
            let s2 = of::engine::signal::stats();
            of::engine::signal::set_runahead(true);
            ran_ahead += s1.runahead_instructions - s0.runahead_instructions;
            assert_eq!(
                s2.runahead_instructions, s1.runahead_instructions,
                "run-ahead ran while off"
            );
            faults_off += s2.faults_emulated - s1.faults_emulated;
            faults_on += s1.faults_emulated - s0.faults_emulated;
            assert_eq!(
                on, off,
                "seed {seed:#x}, program {p} ({n} instructions): run-ahead on vs off differ; registers in: {regs:#x?}, flags in {flags:#x}"
            );
        }
    }
    // The comparison means something only if run-ahead really ran.
    assert!(
        ran_ahead > 0 && faults_on < faults_off,
        "run-ahead never engaged: {ran_ahead} instructions, {faults_on} vs {faults_off} faults"
    );
    println!(
        "faults with run-ahead on: {faults_on}, off: {faults_off}; instructions run ahead: {ran_ahead}"
    );
    instructions
}

fn seed() -> u64 {
    std::env::var("OF_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x0F0F_2026)
}

#[test]
fn runahead_matches_one_fault_per_instruction() {
    let n = sweep(seed(), 150, 48);
    println!(
        "run-ahead on/off: 150 programs, {n} instructions, 4 states each, seed {:#x}",
        seed()
    );
}

#[test]
#[ignore = "long sweep: cargo test --release --test runahead -- --ignored"]
fn runahead_matches_one_fault_per_instruction_full_sweep() {
    let n = sweep(seed() ^ 0xFFFF, 5000, 96);
    println!(
        "run-ahead on/off: 5000 programs, {n} instructions, 4 states each, seed {:#x}",
        seed() ^ 0xFFFF
    );
}

/// `add qword ptr [0x40], 1` (r8 += 1 through the map), then `mov r9, qword ptr [p]`: one asm
/// site, so every call faults at the same rip. Returns (r8, r9).
#[inline(never)]
fn add_then_load(v8: u64, p: u64) -> (u64, u64) {
    let (out8, out9): (u64, u64);
    // SAFETY: the add goes through the map (r8 is an in/out operand); `p` is either a map
    // offset or the address of a live u64.
    unsafe {
        asm!(
            "add qword ptr [0x40], 1",
            "mov r9, qword ptr [{p}]",
            p = in(reg) p,
            inout("r8") v8 => out8,
            out("r9") out9,
            options(nostack),
        )
    };
    (out8, out9)
}

/// A fault site after which run-ahead found nothing to do (the next instruction reads an
/// ordinary buffer) is skipped for a while, then tried again: when the same site's next
/// instruction becomes a map access, run-ahead resumes within the retry window, and results
/// are the same throughout.
#[test]
fn an_unproductive_site_is_retried_and_results_do_not_change() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    of::map_registers().unwrap();
    of::engine::signal::set_runahead(true);
    let buffer = 0x5EED_u64;
    for i in 0..300u64 {
        let (v8, v9) = add_then_load(i, &raw const buffer as u64);
        assert_eq!((v8, v9), (i + 1, buffer), "ordinary next load, call {i}");
    }
    let before = of::engine::signal::stats();
    for i in 0..300u64 {
        // The next instruction now reads r8's own slot: a map access run-ahead can emulate.
        let (v8, v9) = add_then_load(i, 0x40);
        assert_eq!((v8, v9), (i + 1, i + 1), "map next load, call {i}");
    }
    let after = of::engine::signal::stats();
    let ran_ahead = after.runahead_instructions - before.runahead_instructions;
    // At most 15 skipped faults, then every call runs ahead at least through the load (other
    // tests in this binary are serialised, so the counters are ours).
    assert!(
        ran_ahead >= 300 - 16,
        "run-ahead emulated only {ran_ahead} instructions"
    );
}
