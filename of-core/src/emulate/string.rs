//! String instructions: movs, stos, lods, cmps, scas, with rep/repe/repne (Intel SDM Vol. 2B,
//! MOVS/STOS/LODS/CMPS/SCAS and REP/REPE/REPNE).
//!
//! Iterations run here while they touch the map. The first iteration that touches only ordinary
//! memory is left to the CPU: `rip` stays on the instruction with rcx/rsi/rdi advanced, which is
//! exactly the state of an interrupted `rep` instruction, and the CPU resumes it natively.

use super::operands;
use super::{EmulationError, alu};
use crate::machine::{Machine, read_reg};
use crate::map;
use iced_x86::{Instruction, Mnemonic, Register};

const DF: u64 = 1 << 10;
const ZF: u64 = 1 << 6;

/// Iterations emulated per call. A store into rdi's or rsi's own slot can keep the pointers in
/// the map indefinitely (rcx counts down from up to 2^64); after this many iterations the
/// instruction is left as an interrupted `rep` (rip on it, registers advanced), so the CPU
/// faults again and emulation continues in bounded, interruptible steps.
const ITERATIONS_PER_CALL: u32 = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
}

fn op_of(instr: &Instruction) -> Option<Op> {
    use Mnemonic as M;
    Some(match instr.mnemonic() {
        M::Movsb | M::Movsw | M::Movsd | M::Movsq => Op::Movs,
        M::Stosb | M::Stosw | M::Stosd | M::Stosq => Op::Stos,
        M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => Op::Lods,
        M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => Op::Cmps,
        M::Scasb | M::Scasw | M::Scasd | M::Scasq => Op::Scas,
        _ => return None,
    })
}

/// Executes a string instruction starting at `here` (its own address).
///
/// # Errors
/// A page fault on ordinary memory; completed iterations stay visible and `rip` is `here`.
///
/// # Examples
///
/// `rep stosq` with rdi pointing into the map fills three register slots:
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::string;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[0] = 0xAB; // rax: the value stored
/// m.gpr[1] = 3; // rcx: the count
/// m.gpr[7] = 0x40; // rdi: r8's slot
/// // rep stosq (f3 48 ab)
/// let (instr, _) = decode(&[0xF3, 0x48, 0xAB], 0x40_0000).unwrap();
/// m.rip = instr.next_ip(); // as `emulate::execute` does before running a family
/// string::execute(&mut m, &instr, 0x40_0000).unwrap();
/// assert_eq!(&m.gpr[8..11], &[0xAB, 0xAB, 0xAB]); // r8, r9, r10
/// assert_eq!(m.gpr[11], 0); // r11 untouched
/// assert_eq!((m.gpr[1], m.gpr[7]), (0, 0x58)); // rcx counted down, rdi advanced
/// assert_eq!(m.rip, 0x40_0003); // retired
/// ```
pub fn execute<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    here: u64,
) -> Result<(), EmulationError> {
    let op = op_of(instr).ok_or(EmulationError::Unsupported(
        "this instruction is not emulated",
    ))?;
    let n = operands::string_element(instr);
    let wide_addr = operands::address_size(instr) == 8;
    let mask = if wide_addr { u64::MAX } else { 0xFFFF_FFFF };
    let (rsi_reg, rdi_reg) = if wide_addr {
        (Register::RSI, Register::RDI)
    } else {
        (Register::ESI, Register::EDI)
    };
    let count_reg = operands::count_register(instr);
    let rep = instr.has_rep_prefix() || instr.has_repe_prefix() || instr.has_repne_prefix();
    let conditional = matches!(op, Op::Cmps | Op::Scas);
    let src_seg = read_reg(m, instr.memory_segment()).unwrap_or(0);
    let acc = match n {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    };
    let mut first = true;
    let mut iterations = 0u32;
    loop {
        if rep && m.gpr(1) & mask == 0 {
            return Ok(()); // rip is already the next instruction
        }
        if iterations == ITERATIONS_PER_CALL {
            m.set_rip(here); // resumed by the CPU, which faults here again
            return Ok(());
        }
        iterations += 1;
        let rsi = m.gpr(6) & mask;
        let rdi = m.gpr(7) & mask;
        let src = src_seg.wrapping_add(rsi);
        let uses_src = matches!(op, Op::Movs | Op::Lods | Op::Cmps);
        let uses_dst = matches!(op, Op::Movs | Op::Stos | Op::Cmps | Op::Scas);
        let in_map =
            (uses_src && map::touches_page0(src, n)) || (uses_dst && map::touches_page0(rdi, n));
        if !first && !in_map {
            m.set_rip(here); // the CPU continues the remaining iterations natively
            return Ok(());
        }
        first = false;
        let mut w = operands::MapWrites::default();
        let step = |m: &mut M, w: &mut operands::MapWrites| -> Result<(), EmulationError> {
            match op {
                Op::Movs => {
                    let v = operands::load_value(m, src, n)?;
                    operands::store_value(m, w, rdi, n, v)
                }
                Op::Stos => {
                    let v = m.gpr(0);
                    operands::store_value(m, w, rdi, n, v)
                }
                Op::Lods => {
                    let v = operands::load_value(m, src, n)?;
                    operands::write_register(m, acc, v)
                }
                Op::Cmps => {
                    let a = operands::load_value(m, src, n)?;
                    let b = operands::load_value(m, rdi, n)?;
                    m.set_rflags(alu::cmp_flags(m.rflags(), a, b, n));
                    Ok(())
                }
                Op::Scas => {
                    let b = operands::load_value(m, rdi, n)?;
                    let a = m.gpr(0);
                    m.set_rflags(alu::cmp_flags(m.rflags(), a, b, n));
                    Ok(())
                }
            }
        };
        if let Err(e) = step(m, &mut w) {
            m.set_rip(here);
            return Err(e);
        }
        let delta = if m.rflags() & DF != 0 {
            n.wrapping_neg()
        } else {
            n
        };
        if uses_src {
            operands::write_register(m, rsi_reg, rsi.wrapping_add(delta))?;
        }
        if uses_dst {
            operands::write_register(m, rdi_reg, rdi.wrapping_add(delta))?;
        }
        if rep {
            let c = m.gpr(1) & mask;
            operands::write_register(m, count_reg, c.wrapping_sub(1))?;
        }
        w.apply(m);
        if !rep {
            return Ok(());
        }
        if conditional {
            let zf = m.rflags() & ZF != 0;
            if (instr.has_repe_prefix() && !zf) || (instr.has_repne_prefix() && zf) {
                return Ok(());
            }
        }
        if m.gpr(1) & mask == 0 {
            return Ok(());
        }
    }
}
