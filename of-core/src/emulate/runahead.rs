//! Run-ahead: after the faulting instruction, keep emulating the instructions that follow while
//! they touch only registers, immediates and the map (plus direct jumps and conditional
//! branches), so a run of map instructions costs one fault instead of one each.
//!
//! Run-ahead stops *before* anything else: an access to ordinary memory, an instruction outside
//! the short list below, an instruction whose bytes are not inside the code pages the CPU itself
//! fetched the faulting instruction from (so we never read or execute what the CPU would not),
//! TF set (a debugger is single-stepping), a pending signal, or after a bound on instructions.
//! The stopped-at instruction is left for the CPU (or the next fault), so the observable result
//! is the same as one fault per instruction.
//!
//! Register-only instructions are executed exactly: mov/movzx/movsx/movsxd/lea in Rust, the
//! common arithmetic by [`super::fastop`], other arithmetic by running the instruction's own
//! bytes on the host ([`super::hostexec::verbatim`]), branches by evaluating the condition code
//! (Intel SDM Vol. 1 appendix B).

use super::operands;
use super::table::{self, Kind};
use super::{fastop, hostexec};
use crate::decode::MAX_INSTRUCTION_LEN;
use crate::machine::{Machine, read_reg, write_reg};
use crate::map;
use iced_x86::{ConditionCode, ConstantOffsets, Instruction, Mnemonic, OpKind, Register};

/// Where run-ahead gets instruction bytes and learns about pending signals.
pub trait CodeSource {
    /// Copies the bytes at `rip` into `buf` if they lie entirely in code the CPU has fetched
    /// (returns how many bytes are available; fewer than the instruction needs stops run-ahead).
    fn fetch(&mut self, rip: u64, buf: &mut [u8; MAX_INSTRUCTION_LEN]) -> usize;
    /// Decodes, possibly through a cache.
    fn decode(&mut self, bytes: &[u8], rip: u64) -> Option<(Instruction, ConstantOffsets)>;
    /// Whether a signal is waiting (checked every [`SIGNAL_CHECK_EVERY`] instructions).
    fn signal_pending(&mut self) -> bool;
}

/// How often [`CodeSource::signal_pending`] is asked, in instructions.
pub const SIGNAL_CHECK_EVERY: usize = 64;

const TF: u64 = 1 << 8;

/// Evaluates a condition code against rflags (Intel SDM Vol. 1 appendix B, table B-1).
pub fn condition(cc: ConditionCode, rflags: u64) -> bool {
    let f = |bit: u32| rflags & (1 << bit) != 0;
    let (cf, pf, zf, sf, of) = (f(0), f(2), f(6), f(7), f(11));
    match cc {
        ConditionCode::o => of,
        ConditionCode::no => !of,
        ConditionCode::b => cf,
        ConditionCode::ae => !cf,
        ConditionCode::e => zf,
        ConditionCode::ne => !zf,
        ConditionCode::be => cf || zf,
        ConditionCode::a => !cf && !zf,
        ConditionCode::s => sf,
        ConditionCode::ns => !sf,
        ConditionCode::p => pf,
        ConditionCode::np => !pf,
        ConditionCode::l => sf != of,
        ConditionCode::ge => sf == of,
        ConditionCode::le => zf || sf != of,
        ConditionCode::g => !zf && sf == of,
        _ => false,
    }
}

/// Whether every register operand is a general-purpose register other than rsp (any width)
/// and no operand is rip.
fn plain_registers(instr: &Instruction) -> bool {
    (0..instr.op_count()).all(|i| match instr.op_kind(i) {
        OpKind::Register => {
            let r = instr.op_register(i);
            (r.is_gpr() && r.full_register() != Register::RSP)
                || matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
        }
        OpKind::Memory => true,
        _ => true,
    })
}

/// LEA: the effective address without segment base, truncated to the address size and then to
/// the operand size (Intel SDM Vol. 2A, LEA).
fn lea<M: Machine + ?Sized>(m: &mut M, instr: &Instruction) -> bool {
    let base = instr.memory_base();
    let index = instr.memory_index();
    if base == Register::RIP || base == Register::EIP {
        // rip-relative: iced already resolved the target.
        let v = instr.memory_displacement64();
        return write_reg(m, instr.op0_register(), v);
    }
    let mut ea = instr.memory_displacement64();
    if base != Register::None {
        let Some(b) = read_reg(m, base) else { return false };
        ea = ea.wrapping_add(b);
    }
    if index != Register::None {
        let Some(x) = read_reg(m, index) else { return false };
        ea = ea.wrapping_add(x.wrapping_mul(u64::from(instr.memory_index_scale())));
    }
    if base.is_gpr32() || index.is_gpr32() {
        ea &= 0xFFFF_FFFF;
    }
    write_reg(m, instr.op0_register(), ea)
}

/// Executes one register-only instruction, or returns `false` (nothing changed) if it is not
/// on the list.
fn register_only<M: Machine + ?Sized>(m: &mut M, instr: &Instruction, raw: &[u8]) -> bool {
    if instr.is_jcc_short_or_near() {
        if condition(instr.condition_code(), m.rflags()) {
            m.set_rip(instr.near_branch_target());
        }
        return true;
    }
    if instr.is_jmp_short_or_near() {
        m.set_rip(instr.near_branch_target());
        return true;
    }
    if instr.has_lock_prefix() || (instr.has_segment_prefix() && instr.mnemonic() != Mnemonic::Lea) {
        return false;
    }
    if !plain_registers(instr) {
        return false;
    }
    match instr.mnemonic() {
        Mnemonic::Nop => true,
        Mnemonic::Lea => lea(m, instr),
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd => {
            let (Some(v), OpKind::Register) = (operands::read_plain(m, instr, 1), instr.op0_kind())
            else {
                return false;
            };
            let v = match instr.mnemonic() {
                Mnemonic::Movsx | Mnemonic::Movsxd => {
                    let size = instr.op1_register().size() as u64;
                    super::mov::sign_extend(v, size)
                }
                _ => v,
            };
            write_reg(m, instr.op0_register(), v)
        }
        mn => {
            if let Some(op) = fastop::Op::of(mn) {
                if instr.op0_kind() != OpKind::Register {
                    return false;
                }
                let dst = instr.op0_register();
                let size = dst.size() as u64;
                let Some(a) = read_reg(m, dst) else { return false };
                let b = if op.binary() {
                    match operands::read_plain(m, instr, 1) {
                        Some(b) => b,
                        None => return false,
                    }
                } else {
                    0
                };
                let (r, f) = fastop::compute(op, size, a, b, m.rflags());
                m.set_rflags(f);
                if op.writes() {
                    return write_reg(m, dst, r);
                }
                return true;
            }
            // Other arithmetic from the host list, except divisions (which may raise #DE).
            if !matches!(table::classify(instr), Kind::Host { .. })
                || matches!(mn, Mnemonic::Div | Mnemonic::Idiv)
            {
                return false;
            }
            let Some(form) = hostexec::verbatim(&raw[..instr.len()]) else {
                return false;
            };
            hostexec::execute(m, &form, 0).is_ok()
        }
    }
}

/// Whether every memory access of `instr` lies in mapped (and, for writes, writable) map bytes.
fn map_only<M: Machine + ?Sized>(m: &M, instr: &Instruction, kind: Kind) -> bool {
    let acc = operands::accesses(m, instr, kind);
    let list = acc.as_slice();
    !list.is_empty()
        && list.iter().all(|a| map::is_mapped(a.addr, a.size) && (!a.write || map::is_writable(a.addr, a.size)))
}

/// Runs ahead from `m.rip()` for at most `max` instructions. Returns how many were executed.
pub fn run<M: Machine + ?Sized, S: CodeSource + ?Sized>(m: &mut M, src: &mut S, max: usize) -> usize {
    let mut done = 0;
    let mut bytes = [0u8; MAX_INSTRUCTION_LEN];
    while done < max {
        if m.rflags() & TF != 0 {
            break;
        }
        if done % SIGNAL_CHECK_EVERY == SIGNAL_CHECK_EVERY - 1 && src.signal_pending() {
            break;
        }
        let rip = m.rip();
        let n = src.fetch(rip, &mut bytes);
        let Some((instr, offsets)) = src.decode(&bytes[..n], rip) else {
            break;
        };
        let kind = table::classify(&instr);
        let has_memory = matches!(kind, Kind::Stack | Kind::String)
            || (0..instr.op_count()).any(|i| instr.op_kind(i) == OpKind::Memory) && kind != Kind::NoAccess;
        let ok = if has_memory {
            match kind {
                Kind::Unsupported(_) | Kind::NoAccess => false,
                _ if !map_only(m, &instr, kind) => false,
                _ => super::emulate(m, &instr, &bytes[..n], &offsets, None).is_ok(),
            }
        } else {
            let here = rip;
            m.set_rip(instr.next_ip());
            let ok = register_only(m, &instr, &bytes[..n]);
            if !ok {
                m.set_rip(here);
            }
            ok
        };
        if !ok {
            break;
        }
        if kind == Kind::String && m.rip() == rip {
            // A rep string instruction left its remaining iterations to the CPU.
            break;
        }
        done += 1;
    }
    done
}
