//! Instructions for the cases, built with iced-x86: the general-purpose register views, the
//! non-memory operands of a form (fixed or random), memory operands and encoding.

use crate::forms::is_memory_kind;
use crate::rng::Rng;
use iced_x86::{
    Code, Encoder, Instruction, InstructionInfoFactory, OpCodeOperandKind as K, OpKind, Register,
};

/// 8-bit registers iced-x86 can encode (ah..bh only without REX).
pub const R8: [Register; 20] = [
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::AH,
    Register::CH,
    Register::DH,
    Register::BH,
    Register::SPL,
    Register::BPL,
    Register::SIL,
    Register::DIL,
    Register::R8L,
    Register::R9L,
    Register::R10L,
    Register::R11L,
    Register::R12L,
    Register::R13L,
    Register::R14L,
    Register::R15L,
];

const R16: [Register; 16] = [
    Register::AX,
    Register::CX,
    Register::DX,
    Register::BX,
    Register::SP,
    Register::BP,
    Register::SI,
    Register::DI,
    Register::R8W,
    Register::R9W,
    Register::R10W,
    Register::R11W,
    Register::R12W,
    Register::R13W,
    Register::R14W,
    Register::R15W,
];
const R32: [Register; 16] = [
    Register::EAX,
    Register::ECX,
    Register::EDX,
    Register::EBX,
    Register::ESP,
    Register::EBP,
    Register::ESI,
    Register::EDI,
    Register::R8D,
    Register::R9D,
    Register::R10D,
    Register::R11D,
    Register::R12D,
    Register::R13D,
    Register::R14D,
    Register::R15D,
];
const R64: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// The `size`-byte view of general-purpose register `n` (encoding order; for bytes, 4..8 are
/// spl..dil, not ah..bh).
pub fn gpr(n: usize, size: u64) -> Register {
    match size {
        1 => {
            if n < 4 {
                R8[n]
            } else {
                R8[n + 4]
            }
        }
        2 => R16[n],
        4 => R32[n],
        _ => R64[n],
    }
}

/// Encoding number of the 64-bit register behind a GPR view (ah..bh: rax..rbx).
pub fn full(reg: Register) -> Option<usize> {
    match reg {
        Register::AH | Register::CH | Register::DH | Register::BH => {
            Some((reg as usize) - (Register::AH as usize))
        }
        r if r.is_gpr() => Some(r.full_register().number()),
        _ => None,
    }
}

/// A random `size`-byte GPR view (bytes: ah..bh included), or cl/cx/ecx/rcx without `rng`.
fn random_reg(rng: Option<&mut Rng>, size: u64) -> Register {
    match rng {
        None => gpr(1, size),
        Some(rng) => {
            if size == 1 {
                rng.pick(&R8)
            } else {
                gpr(rng.below(16) as usize, size)
            }
        }
    }
}

/// Fills the non-memory operands of `instr` (already `new_instruction(code)`) from the
/// opcode's operand kinds; memory operands get `OpKind::Memory` (fields set by the caller).
/// Returns the index of the memory operand.
pub(super) fn fill_operands(
    instr: &mut Instruction,
    mut rng: Option<&mut Rng>,
) -> Option<Option<u32>> {
    let op = instr.code().op_code();
    let mut mem = None;
    let mut prev_imm = false;
    for i in 0..op.op_count() {
        let k = op.op_kind(i);
        let imm = |instr: &mut Instruction, kind: OpKind, bits: u32, rng: &mut Option<&mut Rng>| {
            instr.set_op_kind(i, kind);
            let v = match rng {
                Some(r) => r.immediate(bits),
                None => 1,
            };
            instr.set_immediate_u64(i, v);
        };
        let is_imm = matches!(
            k,
            K::imm8
                | K::imm8_const_1
                | K::imm8sex16
                | K::imm8sex32
                | K::imm8sex64
                | K::imm16
                | K::imm32
                | K::imm32sex64
                | K::imm64
        );
        match k {
            k if is_memory_kind(k) => {
                instr.set_op_kind(i, OpKind::Memory);
                mem = Some(i);
            }
            K::r8_reg | K::r8_opcode => {
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, random_reg(rng.as_deref_mut(), 1));
            }
            K::r16_reg | K::r16_reg_mem | K::r16_rm | K::r16_opcode => {
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, random_reg(rng.as_deref_mut(), 2));
            }
            K::r32_reg | K::r32_reg_mem | K::r32_rm | K::r32_opcode | K::r32_vvvv => {
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, random_reg(rng.as_deref_mut(), 4));
            }
            K::r64_reg | K::r64_reg_mem | K::r64_rm | K::r64_opcode | K::r64_vvvv => {
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, random_reg(rng.as_deref_mut(), 8));
            }
            K::al | K::cl | K::ax | K::dx | K::eax | K::rax => {
                let r = match k {
                    K::al => Register::AL,
                    K::cl => Register::CL,
                    K::ax => Register::AX,
                    K::dx => Register::DX,
                    K::eax => Register::EAX,
                    _ => Register::RAX,
                };
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, r);
            }
            K::imm8 if prev_imm => imm(instr, OpKind::Immediate8_2nd, 8, &mut rng),
            K::imm8 => imm(instr, OpKind::Immediate8, 8, &mut rng),
            K::imm8_const_1 => {
                instr.set_op_kind(i, OpKind::Immediate8);
                instr.set_immediate_u64(i, 1);
            }
            K::imm8sex16 => imm(instr, OpKind::Immediate8to16, 8, &mut rng),
            K::imm8sex32 => imm(instr, OpKind::Immediate8to32, 8, &mut rng),
            K::imm8sex64 => imm(instr, OpKind::Immediate8to64, 8, &mut rng),
            K::imm16 => imm(instr, OpKind::Immediate16, 16, &mut rng),
            K::imm32 => imm(instr, OpKind::Immediate32, 32, &mut rng),
            K::imm32sex64 => imm(instr, OpKind::Immediate32to64, 32, &mut rng),
            K::imm64 => imm(instr, OpKind::Immediate64, 64, &mut rng),
            K::br64_4 | K::br64_1 => instr.set_op_kind(i, OpKind::NearBranch64),
            _ => return None,
        }
        prev_imm = is_imm;
    }
    Some(mem)
}

/// See [`crate::forms::sample`].
pub fn sample_instruction(code: Code) -> Option<Instruction> {
    let mut instr = new_instruction(code);
    let mem = fill_operands(&mut instr, None)?;
    if mem.is_some() {
        set_memory(
            &mut instr,
            Register::None,
            Register::None,
            1,
            0x10,
            8,
            Register::None,
        );
    }
    Some(instr)
}

/// An instruction of `code` with no operands filled in yet.
pub(super) fn new_instruction(code: Code) -> Instruction {
    let mut i = Instruction::default();
    i.set_code(code);
    i
}

/// Sets every field of `instr`'s memory operand.
pub(super) fn set_memory(
    instr: &mut Instruction,
    base: Register,
    index: Register,
    scale: u32,
    disp: u64,
    displ_size: u32,
    seg: Register,
) {
    instr.set_memory_base(base);
    instr.set_memory_index(index);
    instr.set_memory_index_scale(scale);
    instr.set_memory_displacement64(disp);
    instr.set_memory_displ_size(displ_size);
    instr.set_segment_prefix(seg);
}

/// `instr` encoded in 64-bit mode at `ip`, if iced-x86 can encode it.
pub(super) fn encode(instr: &Instruction, ip: u64) -> Option<Vec<u8>> {
    let mut e = Encoder::new(64);
    e.encode(instr, ip).ok()?;
    Some(e.take_buffer())
}

/// Registers (by encoding number) an instruction reads or writes, explicitly or implicitly.
pub(super) fn used_registers(instr: &Instruction) -> u16 {
    let mut f = InstructionInfoFactory::new();
    let mut set = 0u16;
    for u in f.info(instr).used_registers() {
        if let Some(n) = full(u.register()) {
            set |= 1 << n;
        }
    }
    set
}
