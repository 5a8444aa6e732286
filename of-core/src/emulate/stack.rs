//! Stack and control transfer: push, pop, pushf, popf, call, ret, enter, leave, jmp — with rsp
//! anywhere (inside the map, the stack lives in the register image) and operands anywhere.
//!
//! Order of effects (Intel SDM Vol. 2B, PUSH/POP/CALL/RET/ENTER/LEAVE, "Operation"): the source
//! is read first (so `push rsp` pushes the old value), ordinary memory is written before any
//! register changes (a fault leaves the registers untouched), then rsp/rbp/rip change, and map
//! writes come last (SPEC §2).

use super::EmulationError;
use super::operands::{self, MapWrites};
use crate::machine::Machine;
use crate::map::RFLAGS_READ_CLEARED;
use iced_x86::{Instruction, Mnemonic, OpKind};

/// rflags bits `popf` may change at CPL 3 with IOPL 0: CF PF AF ZF SF TF DF OF NT AC ID
/// (Intel SDM Vol. 2B, POPF, table 4-16). IF and IOPL are left alone.
pub const POPF_WRITABLE: u64 = 0x8D5 | (1 << 8) | (1 << 10) | (1 << 14) | (1 << 18) | (1 << 21);

fn operand_value<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    op: u32,
    size: u64,
) -> Result<u64, EmulationError> {
    if instr.op_kind(op) == OpKind::Memory {
        let ea = operands::effective_address(m, instr, op)
            .ok_or(EmulationError::Unsupported("operand form is not emulated"))?;
        operands::load_value(m, ea, size)
    } else {
        operands::read_plain(m, instr, op)
            .ok_or(EmulationError::Unsupported("operand form is not emulated"))
    }
}

/// Executes a stack or control-transfer instruction.
///
/// # Errors
/// Page faults on ordinary memory; [`EmulationError::Unsupported`] for forms not emulated.
pub fn execute<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let rsp = m.gpr(4);
    let inc = instr.stack_pointer_increment() as i64;
    match instr.mnemonic() {
        Mnemonic::Push => {
            let n = (-inc) as u64;
            let v = operand_value(m, instr, 0, n)?;
            let new = rsp.wrapping_sub(n);
            operands::store_value(m, w, new, n, v)?;
            m.set_gpr(4, new);
        }
        Mnemonic::Pushf | Mnemonic::Pushfq => {
            let n = (-inc) as u64;
            let v = m.rflags() & !RFLAGS_READ_CLEARED;
            let new = rsp.wrapping_sub(n);
            operands::store_value(m, w, new, n, v)?;
            m.set_gpr(4, new);
        }
        Mnemonic::Pop => {
            let n = inc as u64;
            let v = operands::load_value(m, rsp, n)?;
            let new = rsp.wrapping_add(n);
            if instr.op0_kind() == OpKind::Memory {
                // The destination address uses rsp after the increment.
                m.set_gpr(4, new);
                let ea = operands::effective_address(m, instr, 0);
                let r = match ea {
                    Some(ea) => operands::store_value(m, w, ea, n, v),
                    None => Err(EmulationError::Unsupported("operand form is not emulated")),
                };
                if r.is_err() {
                    m.set_gpr(4, rsp);
                }
                r?;
            } else {
                m.set_gpr(4, new);
                operands::write_register(m, instr.op0_register(), v)?;
            }
        }
        Mnemonic::Popf | Mnemonic::Popfq => {
            let n = inc as u64;
            let v = operands::load_value(m, rsp, n)?;
            let mask = if n == 2 {
                POPF_WRITABLE & 0xFFFF
            } else {
                POPF_WRITABLE
            };
            let old = m.rflags();
            m.set_gpr(4, rsp.wrapping_add(n));
            m.set_rflags((old & !mask) | (v & mask));
        }
        Mnemonic::Call => {
            let n = (-inc) as u64;
            let target = operand_value(m, instr, 0, n)?;
            let new = rsp.wrapping_sub(n);
            operands::store_value(m, w, new, n, instr.next_ip())?;
            m.set_gpr(4, new);
            m.set_rip(target);
        }
        Mnemonic::Jmp => {
            let target = operand_value(m, instr, 0, 8)?;
            m.set_rip(target);
        }
        Mnemonic::Ret => {
            let target = operands::load_value(m, rsp, 8)?;
            let extra = if instr.op_count() > 0 {
                u64::from(instr.immediate16())
            } else {
                0
            };
            m.set_gpr(4, rsp.wrapping_add(8).wrapping_add(extra));
            m.set_rip(target);
        }
        Mnemonic::Leave => {
            // rsp <- rbp; rbp <- pop()
            let rbp = m.gpr(5);
            let v = operands::load_value(m, rbp, 8)?;
            m.set_gpr(4, rbp.wrapping_add(8));
            m.set_gpr(5, v);
        }
        Mnemonic::Enter => enter(m, instr, w)?,
        _ => {
            return Err(EmulationError::Unsupported(
                "this instruction is not emulated",
            ));
        }
    }
    Ok(())
}

/// ENTER imm16, imm8 in 64-bit mode (Intel SDM Vol. 2A, ENTER, "Operation"): push rbp; for
/// nesting level L > 0 push L-1 frame pointers copied from the enclosing frame and the new
/// frame pointer; rbp <- frame; rsp <- rsp - imm16.
fn enter<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let alloc = u64::from(instr.immediate16());
    let level = u64::from(instr.immediate8_2nd() % 32);
    let mut rsp = m.gpr(4);
    let rbp = m.gpr(5);
    // Values to push, computed before anything is written.
    rsp = rsp.wrapping_sub(8);
    let frame = rsp;
    let mut pushes = [(0u64, 0u64); 4];
    let mut count = 0;
    pushes[count] = (rsp, rbp);
    count += 1;
    if level > 0 {
        if level > 3 {
            return Err(EmulationError::Unsupported(
                "enter with nesting level above 3",
            ));
        }
        let mut src = rbp;
        for _ in 1..level {
            src = src.wrapping_sub(8);
            let v = operands::load_value(m, src, 8)?;
            rsp = rsp.wrapping_sub(8);
            pushes[count] = (rsp, v);
            count += 1;
        }
        rsp = rsp.wrapping_sub(8);
        pushes[count] = (rsp, frame);
        count += 1;
    }
    for &(addr, v) in &pushes[..count] {
        operands::store_value(m, w, addr, 8, v)?;
    }
    m.set_gpr(5, frame);
    m.set_gpr(4, rsp.wrapping_sub(alloc));
    Ok(())
}
