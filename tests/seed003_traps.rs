//! Seed 003's traps ("Weird things I learned while writing an x86 emulator"), each a named test.
//! Every case runs natively on the register image, through the map with real faults and
//! through `of_core::emulate`, and must agree with the CPU (the `difftest` engine); each test
//! also checks the trap's specific property on the CPU's result, so that the test would catch
//! an engine that agreed with a wrong emulator.

use difftest::case::{Case, encode_at};
use difftest::rng::Rng;
use difftest::run::{Checked, Runner};
use iced_x86::{Code, Instruction, MemoryOperand, Register};
use std::process::Command;

const CF: u64 = 1;
const ZF: u64 = 1 << 6;
const STATUS: u64 = 0x8D5;

fn abs(a: u64) -> MemoryOperand {
    MemoryOperand::with_displ(a, 8)
}

fn check(runner: &mut Runner, case: &Case) -> Checked {
    let c = runner.check(case).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        c.faulted.is_some(),
        "the case must also run through real faults"
    );
    c
}

/// INC and DEC leave CF alone (unlike add/sub 1), at every size and at straddling offsets.
#[test]
fn inc_and_dec_keep_cf() {
    let mut runner = Runner::new();
    let ctx = runner.ctx;
    let mut rng = Rng::new(0x1DEC);
    let codes = [
        (Code::Inc_rm8, 1u64),
        (Code::Inc_rm16, 2),
        (Code::Inc_rm32, 4),
        (Code::Inc_rm64, 8),
        (Code::Dec_rm8, 1),
        (Code::Dec_rm16, 2),
        (Code::Dec_rm32, 4),
        (Code::Dec_rm64, 8),
    ];
    for (code, size) in codes {
        for off in [0u64, 3, 7, 0x1C, 0x7F - size + 1] {
            for cf in [0, CF] {
                // Values that carry out of (inc) or borrow into (dec) the operand: -1 and 0.
                for fill in [u64::MAX, 0, rng.next_u64()] {
                    let regs = [fill; 16];
                    let flags = (rng.next_u64() & STATUS & !CF) | cf;
                    let case = Case::with_operand_at(
                        &ctx,
                        |a| encode_at(&ctx, &Instruction::with1(code, abs(a)).unwrap()),
                        off,
                        regs,
                        flags,
                        Some((off, size)),
                    );
                    let c = check(&mut runner, &case);
                    assert_eq!(c.expected.rflags & CF, cf, "the CPU kept CF for {code:?}");
                }
            }
        }
    }
}

/// CMPXCHG8B and CMPXCHG16B change ZF only; every other status flag is left as it was.
#[test]
fn cmpxchg8b_and_cmpxchg16b_change_only_zf() {
    let mut runner = Runner::new();
    let ctx = runner.ctx;
    let mut rng = Rng::new(0xC8B);
    for (code, size, offsets) in [
        (
            Code::Cmpxchg8b_m64,
            8u64,
            vec![0u64, 4, 0x18, 0x44, 0x78, 0x80],
        ),
        (Code::Cmpxchg16b_m128, 16, vec![0, 0x10, 0x30, 0x70, 0x80]),
    ] {
        for off in offsets {
            for equal in [false, true] {
                for _ in 0..8 {
                    let mut regs: [u64; 16] = std::array::from_fn(|_| rng.value());
                    if equal {
                        // edx:eax / rdx:rax = the destination (3 rounds settle self-aliasing).
                        for _ in 0..3 {
                            let img = ctx.image(&regs, 0, 0);
                            let half = (size / 2) as usize;
                            let word = |o: usize| {
                                let mut b = [0u8; 8];
                                b[..half].copy_from_slice(&img[o..o + half]);
                                u64::from_le_bytes(b)
                            };
                            let mask = if half == 8 { u64::MAX } else { 0xFFFF_FFFF };
                            regs[0] = (regs[0] & !mask) | word(off as usize);
                            regs[2] = (regs[2] & !mask) | word(off as usize + half);
                        }
                    }
                    let flags = rng.next_u64() & STATUS;
                    let case = Case::with_operand_at(
                        &ctx,
                        |a| encode_at(&ctx, &Instruction::with1(code, abs(a)).unwrap()),
                        off,
                        regs,
                        flags,
                        Some((off, size)),
                    );
                    let c = check(&mut runner, &case);
                    assert_eq!(
                        c.expected.rflags & STATUS & !ZF,
                        flags & !ZF,
                        "the CPU changed a flag other than ZF"
                    );
                }
            }
        }
    }
}

/// `shr eax, 32`: the count is masked to 5 bits (6 with REX.W), so the masked count is 0 and
/// neither the operand nor any flag changes. Here with the operand in the map, by immediate and
/// by cl, at 32 and 64 bits (and 8/16-bit operands, whose counts are masked to 5 bits too).
#[test]
fn shr_by_32_leaves_eax_and_flags_unchanged() {
    let mut runner = Runner::new();
    let ctx = runner.ctx;
    let mut rng = Rng::new(0x5832);
    let cases: [(Code, u32, u64); 6] = [
        (Code::Shr_rm32_imm8, 32, 4),
        (Code::Shr_rm64_imm8, 64, 8),
        (Code::Shl_rm32_imm8, 32, 4),
        (Code::Sar_rm64_imm8, 128, 8),
        (Code::Shr_rm8_imm8, 32, 1),
        (Code::Shr_rm16_imm8, 32, 2),
    ];
    for (code, count, size) in cases {
        for off in [0u64, 2, 0x30, 0x7C] {
            let regs: [u64; 16] = std::array::from_fn(|_| rng.next_u64());
            let flags = rng.next_u64() & STATUS;
            let case = Case::with_operand_at(
                &ctx,
                |a| encode_at(&ctx, &Instruction::with2(code, abs(a), count).unwrap()),
                off,
                regs,
                flags,
                Some((off, size)),
            );
            let c = check(&mut runner, &case);
            assert_eq!(c.expected.gpr, case.regs, "the CPU left the operand alone");
            assert_eq!(
                c.expected.rflags & STATUS,
                flags,
                "the CPU left the flags alone"
            );
        }
    }
    // By cl = 32 (and 64 for a 64-bit operand).
    for (code, cl, size) in [(Code::Shr_rm32_CL, 32u64, 4u64), (Code::Shr_rm64_CL, 64, 8)] {
        let mut regs: [u64; 16] = std::array::from_fn(|_| rng.next_u64());
        regs[1] = (regs[1] & !0xFF) | cl;
        let flags = rng.next_u64() & STATUS;
        let case = Case::with_operand_at(
            &ctx,
            |a| {
                encode_at(
                    &ctx,
                    &Instruction::with2(code, abs(a), Register::CL).unwrap(),
                )
            },
            0,
            regs,
            flags,
            Some((0, size)),
        );
        let c = check(&mut runner, &case);
        assert_eq!(c.expected.gpr, case.regs);
        assert_eq!(c.expected.rflags & STATUS, flags);
    }
}

/// `add byte ptr [8], 0xCC` behind a redundant REX (0x40) and behind two REX prefixes (only
/// the last counts): the CPU executes it as the plain 8-bit add, and so must the map.
#[test]
fn redundant_and_double_rex_before_an_8_bit_add() {
    let mut runner = Runner::new();
    let ctx = runner.ctx;
    let mut rng = Rng::new(0x4040);
    // 80 /0 ib with a SIB absolute address: 80 04 25 <disp32> CC.
    let plain = |a: u64| {
        let mut v = vec![0x80, 0x04, 0x25];
        v.extend_from_slice(&(a as u32).to_le_bytes());
        v.push(0xCC);
        v
    };
    for prefixes in [
        vec![0x40u8],
        vec![0x40, 0x40],
        vec![0x4F, 0x40],
        vec![0x48, 0x40],
        vec![0x41, 0x40, 0x40],
    ] {
        for off in [8u64, 0xF, 0x3A, 0x88] {
            let regs: [u64; 16] = std::array::from_fn(|_| rng.value());
            let flags = rng.next_u64() & STATUS;
            let case = Case::with_operand_at(
                &ctx,
                |a| {
                    let mut v = prefixes.clone();
                    v.extend(plain(a));
                    v
                },
                off,
                regs,
                flags,
                Some((off, 1)),
            );
            let c = check(&mut runner, &case);
            if off < 0x80 {
                let n = (off / 8) as usize;
                let shift = 8 * (off % 8);
                let byte = ((regs[n] >> shift) as u8).wrapping_add(0xCC);
                assert_eq!(
                    (c.expected.gpr[n] >> shift) as u8,
                    byte,
                    "{prefixes:02x?}: one byte added"
                );
                assert_eq!(
                    c.expected.gpr[n] & !(0xFF << shift),
                    regs[n] & !(0xFF << shift)
                );
            }
        }
    }
}

/// 0x67 in 64-bit mode: the effective address is computed in 32 bits (upper halves of the
/// registers ignored, the sum wraps at 4 GiB), so `mov eax, [ebx + d]` with garbage in rbx's
/// upper half and a wrapping sum still reads the map.
#[test]
fn address_size_prefix_0x67_in_64_bit_mode() {
    let mut runner = Runner::new();
    let ctx = runner.ctx;
    let mut rng = Rng::new(0x67);
    for off in [0x10u64, 0x13, 0x40, 0x88, 0x98] {
        for disp in [0i64, 0x20, -0x7000_0000, 0x7FFF_FFF0] {
            let mut regs: [u64; 16] = std::array::from_fn(|_| rng.next_u64());
            // ebx + disp = off (mod 2^32), with random upper bits in rbx.
            let low = off.wrapping_sub(disp as u64) & 0xFFFF_FFFF;
            regs[3] = (regs[3] & !0xFFFF_FFFF) | low;
            let case = Case::with_operand_at(
                &ctx,
                // The native run's address moves by NB through the displacement.
                |a| {
                    let d = disp.wrapping_add(a as i64 - off as i64);
                    let m = MemoryOperand::with_base_displ_size(Register::EBX, d, 4);
                    encode_at(
                        &ctx,
                        &Instruction::with2(Code::Mov_r32_rm32, Register::EAX, m).unwrap(),
                    )
                },
                off,
                regs,
                rng.next_u64(),
                None,
            );
            assert_eq!(case.map_code.first(), Some(&0x67));
            let c = check(&mut runner, &case);
            if off < 0x80 && off % 8 <= 4 {
                let n = (off / 8) as usize;
                let expect = (regs[n] >> (8 * (off % 8))) & 0xFFFF_FFFF;
                assert_eq!(
                    c.expected.gpr[0], expect,
                    "eax = the 4 map bytes at {off:#x}"
                );
            }
        }
    }
}

/// A map instruction of exactly 15 bytes (the architectural limit) is emulated.
#[test]
fn a_fifteen_byte_instruction_is_emulated() {
    let mut runner = Runner::new();
    let ctx = runner.ctx;
    let mut rng = Rng::new(15);
    for off in [0u64, 8, 0x2B] {
        for pad in [0x2Eu8, 0x3E, 0x26, 0x36] {
            let regs: [u64; 16] = std::array::from_fn(|_| rng.value());
            let case = Case::with_operand_at(
                &ctx,
                |a| fifteen_byte_add(a, pad, 3),
                off,
                regs,
                rng.next_u64(),
                Some((off, 8)),
            );
            assert_eq!(case.map_code.len(), 15);
            let c = check(&mut runner, &case);
            if off % 8 == 0 {
                let n = (off / 8) as usize;
                assert_eq!(c.expected.gpr[n], regs[n].wrapping_add(0x1234_5678));
            }
        }
    }
}

/// `pads` ignored segment prefixes + `add qword ptr [disp32], 0x12345678` (12 bytes).
fn fifteen_byte_add(addr: u64, pad: u8, pads: usize) -> Vec<u8> {
    let mut v = vec![pad; pads];
    v.extend_from_slice(&[0x48, 0x81, 0x04, 0x25]);
    v.extend_from_slice(&(addr as u32).to_le_bytes());
    v.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    v
}

/// The subprocess side of the tests below: runs `bytes` (hex in `OF_TRAP_CODE`) with rcx = 0
/// after `map_registers()` and exits 0 if it returns.
#[test]
#[ignore = "subprocess entry point of the tests below"]
fn subprocess_entry() {
    let Ok(hex) = std::env::var("OF_TRAP_CODE") else {
        return;
    };
    let mut code: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    code.push(0xC3); // ret
    let _regs = of::map_registers().unwrap();
    // SAFETY: a fresh private anonymous mapping.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(mem, libc::MAP_FAILED);
    // SAFETY: the mapping is 4096 bytes long.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.cast(), code.len()) };
    let f: extern "C" fn() = unsafe {
        // SAFETY: the bytes are one instruction followed by `ret`; the instruction touches only
        // rcx (through the map) and the memory named in the parent's test.
        std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(mem)
    };
    // The code may change caller-saved registers (rcx, rdx:rax): call it through asm that says so.
    // SAFETY: as above.
    unsafe { std::arch::asm!("call {f}", f = in(reg) f, clobber_abi("C")) };
    std::process::exit(0);
}

/// Runs `code` in a child process through [`subprocess_entry`]; returns its exit status and
/// stderr.
fn run_child(code: &[u8]) -> (std::process::ExitStatus, String) {
    let hex: String = code.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "subprocess_entry",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OF_TRAP_CODE", hex)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 16 bytes: one prefix past the limit. The CPU raises #GP (SIGSEGV with si_code SI_KERNEL,
/// si_addr 0) before any memory access, so the fault is not ours and the process dies by
/// SIGSEGV — with the operand in the map as with the operand in ordinary memory. The same
/// instruction at 15 bytes runs to completion in both places.
#[test]
fn a_sixteen_byte_instruction_raises_gp_and_is_not_ours() {
    use std::os::unix::process::ExitStatusExt;
    // The operand in the map (rcx), and at an ordinary address: the CPU rejects the instruction
    // before any access, so whether that address is mapped does not matter.
    let in_map = 0x8u64;
    let ordinary = 0x7000_0000u64;
    for addr in [in_map, ordinary] {
        let (status, stderr) = run_child(&fifteen_byte_add(addr, 0x2E, 4));
        assert_eq!(
            status.signal(),
            Some(libc::SIGSEGV),
            "16 bytes at {addr:#x}: {status:?}\n{stderr}"
        );
        assert!(!stderr.contains("cannot emulate"), "{stderr}");
    }
    // The 15-byte version through the map completes (rcx += 0x12345678) and exits 0.
    let (status, stderr) = run_child(&fifteen_byte_add(in_map, 0x2E, 3));
    assert_eq!(status.code(), Some(0), "15 bytes: {status:?}\n{stderr}");
}

/// cmpxchg16b's operand must be 16-byte aligned: through the map at 0x08 it raises #GP like the
/// CPU does on a misaligned ordinary address (SIGSEGV), and is not emulated.
#[test]
fn a_misaligned_cmpxchg16b_raises_gp() {
    use std::os::unix::process::ExitStatusExt;
    let runner = Runner::new();
    let ctx = runner.ctx;
    let case = Case::with_operand_at(
        &ctx,
        |a| {
            encode_at(
                &ctx,
                &Instruction::with1(Code::Cmpxchg16b_m128, abs(a)).unwrap(),
            )
        },
        0x8,
        [0; 16],
        0,
        Some((0x8, 16)),
    );
    match runner.emulate(&case) {
        Err(e) => assert!(e.contains("GeneralProtection"), "{e}"),
        Ok(o) => panic!("emulated a misaligned cmpxchg16b: {o:?}"),
    }
    let code = encode_at(
        &ctx,
        &Instruction::with1(Code::Cmpxchg16b_m128, abs(0x8)).unwrap(),
    );
    let (status, stderr) = run_child(&code);
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}\n{stderr}");
    // The CPU on a misaligned ordinary address: #GP before the access, mapped or not.
    let code = encode_at(
        &ctx,
        &Instruction::with1(Code::Cmpxchg16b_m128, abs(0x7000_0008)).unwrap(),
    );
    let (status, stderr) = run_child(&code);
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}\n{stderr}");
}
