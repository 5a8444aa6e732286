//! Stack and control transfer: push, pop, pushf, popf, call, ret, enter, leave, jmp — with rsp
//! anywhere (inside the map, the stack lives in the register image) and operands anywhere.
//!
//! Order of effects (Intel SDM Vol. 2B, PUSH/POP/CALL/RET/ENTER/LEAVE, "Operation"): the source
//! is read first (so `push rsp` pushes the old value), ordinary memory is written before any
//! register changes (a fault leaves the registers untouched), then rsp/rbp/rip change, and map
//! writes come last (SPEC §2).

use super::operands::{self, MapWrites};
use super::{EmulationError, Exception};
use crate::machine::Machine;
use crate::map::{self, RFLAGS_READ_CLEARED};
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

/// rflags bits `popf` may change at CPL 3 with IOPL 0: CF PF AF ZF SF TF DF OF NT AC ID
/// (Intel SDM Vol. 2B, POPF, table 4-16). IF and IOPL are left alone.
///
/// # Examples
///
/// ```
/// use of_core::emulate::stack::POPF_WRITABLE;
///
/// let (tf, if_, df, iopl) = (1u64 << 8, 1 << 9, 1 << 10, 3 << 12);
/// assert_eq!(POPF_WRITABLE & (tf | df), tf | df);
/// assert_eq!(POPF_WRITABLE & (if_ | iopl), 0);
/// ```
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
///
/// # Examples
///
/// A stack inside the map: with rsp = 0x40 (r8's slot), `push qword ptr [8]` stores rcx into the
/// 8 bytes below, rdi's slot:
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::{operands::MapWrites, stack};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[4] = 0x40; // rsp
/// m.gpr[1] = 0xC; // rcx
/// // push qword ptr [8] (ff 34 25 08 00 00 00)
/// let (instr, _) = decode(&[0xFF, 0x34, 0x25, 0x08, 0x00, 0x00, 0x00], 0x40_0000).unwrap();
/// m.rip = instr.next_ip(); // as `emulate::execute` does before running a family
/// let mut w = MapWrites::default();
/// stack::execute(&mut m, &instr, &mut w).unwrap();
/// w.apply(&mut m);
/// assert_eq!(m.gpr[4], 0x38); // rsp - 8
/// assert_eq!(m.gpr[7], 0xC); // rdi = the pushed rcx
///
/// // ret (c3) pops the return address from the map: [0x38] is rdi = 0xC.
/// let (ret, _) = decode(&[0xC3], 0x40_0007).unwrap();
/// m.rip = ret.next_ip();
/// stack::execute(&mut m, &ret, &mut w).unwrap();
/// w.apply(&mut m);
/// assert_eq!((m.rip, m.gpr[4]), (0xC, 0x40));
/// ```
///
/// Near branches with 0x66 as AMD executes them (16-bit operand size; Intel ignores the
/// prefix, see [`crate::decode::Vendor`]):
///
/// ```
/// use of_core::decode::{Vendor, decode_for};
/// use of_core::emulate::{operands::MapWrites, stack};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// let mut w = MapWrites::default();
/// m.gpr[1] = 0xAAAA_0000_0000_1234; // rcx: cx = 0x1234
/// m.gpr[4] = 0x40; // rsp: r8's slot
/// // call word ptr [8] (66 ff 14 25 08 00 00 00): the target is cx, zero-extended; the
/// // return address is pushed as 2 bytes (the low 16 bits of rip) at rsp - 2 = 0x3e.
/// let bytes = [0x66, 0xFF, 0x14, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (call, _) = decode_for(&bytes, 0x40_ABCD, Vendor::Amd).unwrap();
/// m.rip = call.next_ip(); // 0x40abd5
/// stack::execute(&mut m, &call, &mut w).unwrap();
/// w.apply(&mut m);
/// assert_eq!((m.rip, m.gpr[4]), (0x1234, 0x3E));
/// assert_eq!(m.gpr[7] >> 48, 0xABD5); // the top two bytes of rdi (0x3e..0x40)
///
/// // ret (66 c3) pops those 2 bytes: rip = 0xabd5, rsp back to 0x40.
/// let (ret, _) = decode_for(&[0x66, 0xC3], 0x1234, Vendor::Amd).unwrap();
/// m.rip = ret.next_ip();
/// stack::execute(&mut m, &ret, &mut w).unwrap();
/// w.apply(&mut m);
/// assert_eq!((m.rip, m.gpr[4]), (0xABD5, 0x40));
/// ```
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
            // With 0x66 (decoded so only on AMD: call rel16 / call r/m16) the target is 16 bits,
            // zero-extended, and the pushed return address is the low 16 bits of rip.
            let n = (-inc) as u64;
            let target = operand_value(m, instr, 0, n)?;
            let new = rsp.wrapping_sub(n);
            operands::store_value(m, w, new, n, instr.next_ip())?;
            m.set_gpr(4, new);
            m.set_rip(target);
        }
        Mnemonic::Jmp => {
            // jmp r/m16 (0x66, decoded so only on AMD): a 16-bit target, zero-extended.
            let n = if instr.code() == Code::Jmp_rm16 { 2 } else { 8 };
            let target = operand_value(m, instr, 0, n)?;
            m.set_rip(target);
        }
        Mnemonic::Ret => {
            // ret with 0x66 (decoded so only on AMD) pops 2 bytes into ip, zero-extended.
            let n = ret_size(instr);
            let target = operands::load_value(m, rsp, n)?;
            let extra = if instr.op_count() > 0 {
                u64::from(instr.immediate16())
            } else {
                0
            };
            m.set_gpr(4, rsp.wrapping_add(n).wrapping_add(extra));
            m.set_rip(target);
        }
        Mnemonic::Leave => {
            // rsp <- rbp; rbp <- pop() (bp <- 16-bit pop with 0x66; Intel SDM Vol. 2A, LEAVE).
            let n = if instr.code() == Code::Leavew { 2 } else { 8 };
            let rbp = m.gpr(5);
            let v = operands::load_value(m, rbp, n)?;
            m.set_gpr(4, rbp.wrapping_add(n));
            if n == 2 {
                operands::write_register(m, Register::BP, v)?;
            } else {
                m.set_gpr(5, v);
            }
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

/// Bytes a near `ret` pops: 2 for `ret`/`ret imm16` with a 16-bit operand size (`66 C3`,
/// `66 C2 iw`), 8 otherwise.
///
/// Only AMD CPUs honour 0x66 on a near return in 64-bit mode (AMD APM Vol. 3, RET (Near):
/// "the operand size ... 16 bits"; Intel SDM Vol. 2B, RET: the operand size is forced to 64
/// bits), and [`crate::decode::decode`] decodes `66 C3` as the 16-bit form only on AMD, so the
/// size follows the CPU the program runs on.
///
/// # Examples
///
/// ```
/// use of_core::decode::{Vendor, decode_for};
/// use of_core::emulate::stack::ret_size;
///
/// let amd = decode_for(&[0x66, 0xC3], 0x40_0000, Vendor::Amd).unwrap().0;
/// let intel = decode_for(&[0x66, 0xC3], 0x40_0000, Vendor::Intel).unwrap().0;
/// assert_eq!((ret_size(&amd), ret_size(&intel)), (2, 8));
/// // REX.W wins over 0x66 on both.
/// let w = decode_for(&[0x66, 0x48, 0xC3], 0x40_0000, Vendor::Amd).unwrap().0;
/// assert_eq!(ret_size(&w), 8);
/// ```
pub fn ret_size(instr: &Instruction) -> u64 {
    match instr.code() {
        Code::Retnw | Code::Retnw_imm16 => 2,
        _ => 8,
    }
}

/// ENTER imm16, imm8 in 64-bit mode (Intel SDM Vol. 2A, ENTER, "Operation"), operand size 64
/// or 16 (0x66): push rbp; for nesting level L > 0 (imm8 mod 32) push L-1 frame pointers copied
/// from the enclosing frame and the new frame pointer; rbp <- frame; rsp <- rsp - imm16.
///
/// All pushes form one contiguous block below rsp, computed before anything is written. In
/// ordinary memory it is written before any register changes (a fault leaves them untouched);
/// in the map it is written after rbp and rsp change (SPEC §2: the map write is applied last).
fn enter<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    _w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let n: u64 = if instr.code() == Code::Enterw_imm16_imm8 {
        2
    } else {
        8
    };
    let alloc = u64::from(instr.immediate16());
    let level = u64::from(instr.immediate8_2nd() % 32);
    let rsp = m.gpr(4);
    let rbp = m.gpr(5);
    let pushes = if level == 0 { 1 } else { level + 1 };
    let total = n * pushes;
    let base = rsp.wrapping_sub(total);
    let frame = rsp.wrapping_sub(n);
    // The k-th push (0 = rbp) lands at rsp - n * (k + 1).
    let mut block = [0u8; 8 * 32];
    let put = |block: &mut [u8; 8 * 32], k: u64, v: u64| {
        let at = (total - n * (k + 1)) as usize;
        block[at..at + n as usize].copy_from_slice(&v.to_le_bytes()[..n as usize]);
    };
    put(&mut block, 0, rbp);
    if level > 0 {
        for i in 1..level {
            // As on memory, a copied frame pointer sees the bytes this instruction has already
            // pushed (the i pushes so far cover rsp - n * i .. rsp).
            let src = rbp.wrapping_sub(n * i);
            let mut v = operands::load_value(m, src, n)?.to_le_bytes();
            let pushed_from = rsp.wrapping_sub(n * i);
            for (j, b) in v.iter_mut().enumerate().take(n as usize) {
                let a = src.wrapping_add(j as u64);
                if a.wrapping_sub(pushed_from) < n * i {
                    *b = block[a.wrapping_sub(base) as usize];
                }
            }
            put(&mut block, i, u64::from_le_bytes(v));
        }
        put(&mut block, level, frame);
    }
    let bytes = &block[..total as usize];
    let in_map = map::touches_page0(base, total);
    if !in_map {
        m.write_memory(base, bytes).map_err(|f| {
            EmulationError::Exception(Exception::PageFault {
                addr: f.addr,
                write: true,
            })
        })?;
    }
    if n == 2 {
        operands::write_register(m, Register::BP, frame)?;
    } else {
        m.set_gpr(5, frame);
    }
    m.set_gpr(4, base.wrapping_sub(alloc));
    if in_map && !map::write(m, base, bytes) {
        // Unreachable after the ownership check (the block is one access of `accesses`).
        return Err(EmulationError::Exception(Exception::PageFault {
            addr: base,
            write: true,
        }));
    }
    Ok(())
}
