//! The explicit family: every form whose memory operand is encoded in the instruction (ModRM or
//! `moffs`): moves, ALU and arithmetic, shifts and rotates, multiplies and divides, bit tests,
//! compare-exchange up to 16 bytes, indirect jmp and call, selector checks, ... The operand is
//! placed at the map offset through a random addressing mode ([`addressing`]), both encodings get
//! the same prefix variant ([`prefix`]), and the state is random except where a family needs a
//! particular one to reach its interesting cases (one module each).

mod addressing;
mod bit_test;
mod branch;
mod compare_exchange;
mod divide;
mod prefix;
mod selector;

use super::branch16::branch16_label;
use super::instruction::{encode, fill_operands, new_instruction, set_memory, used_registers};
use super::state::{random_memory, random_state};
use super::{Case, Ctx, Reloc};
use crate::forms::{Form, branch16_honoured, is_branch16};
use crate::rng::Rng;
use addressing::{Mode, Operand};
use iced_x86::{Mnemonic, OpCodeOperandKind as K, OpKind, Register};
use prefix::Prefix;

/// A case for explicit form `form` with its memory operand at map offset `off`, or `None` if
/// this attempt found no valid one.
pub(super) fn build(ctx: &Ctx, form: &Form, off: u64, rng: &mut Rng) -> Option<Case> {
    let code = form.code;
    let mut instr = new_instruction(code);
    let mem_op = fill_operands(&mut instr, Some(rng))??;
    let moffs = code.op_code().op_kind(mem_op) == K::mem_offs;
    let mnemonic = form.mnemonic;
    let lockable = code.op_code().can_use_lock_prefix() && form.writes && mem_op == 0;
    if lockable && rng.one_in(3) {
        instr.set_has_lock_prefix(true);
    }
    let mode = Mode::random(moffs, rng);
    // Registers the instruction uses, so that base/index registers are free.
    set_memory(
        &mut instr,
        Register::None,
        Register::None,
        1,
        off,
        8,
        Register::None,
    );
    let used = used_registers(&instr) | (1 << 4);
    let op = Operand::random(mode, off, used, rng)?;
    let (map_mem, native_mem) = op.specs(ctx);
    let mut map_instr = instr;
    set_memory(
        &mut map_instr,
        map_mem.0,
        map_mem.1,
        op.encoded_scale(),
        map_mem.2,
        map_mem.3,
        map_mem.4,
    );
    let mut native_instr = instr;
    set_memory(
        &mut native_instr,
        native_mem.0,
        native_mem.1,
        op.encoded_scale(),
        native_mem.2,
        native_mem.3,
        native_mem.4,
    );
    // call/jmp r/m16 where the CPU honours 0x66 (AMD): the target is the 2 bytes at the operand,
    // chosen once the state is known (below); elsewhere a landing address in the arena.
    let branch16 = is_branch16(code);
    let amd16 = branch16 && branch16_honoured();
    let target = branch::landing(ctx, mnemonic, amd16, rng);
    let map_code = encode(&map_instr, ctx.code)?;
    let native_code = encode(&native_instr, ctx.code)?;
    if map_code.len() != native_code.len() {
        return None;
    }
    let (map_code, native_code, prefix) =
        Prefix::vary(map_code, native_code, mode == Mode::Rip, rng);
    let len = map_code.len();

    // The state.
    let (mut regs, rflags) = random_state(rng, ctx);
    let size = form.size;
    op.place(ctx, &mut regs);
    let mut writes_at = off;
    // Family-specific state.
    match mnemonic {
        Mnemonic::Div | Mnemonic::Idiv if !rng.one_in(4) => {
            divide::quotient_fits(&mut regs, size, mnemonic == Mnemonic::Idiv);
        }
        Mnemonic::Cmpxchg if rng.one_in(2) => {
            compare_exchange::equal(ctx, &mut regs, rflags, len, &op, size);
        }
        Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b if rng.one_in(2) => {
            compare_exchange::equal_pair(ctx, &mut regs, rflags, len, &op, size);
        }
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
            if instr.op1_kind() == OpKind::Register =>
        {
            writes_at = bit_test::register_offset(
                ctx,
                &mut regs,
                &op,
                size,
                form.writes,
                instr.op1_register(),
                rng,
            )?;
        }
        Mnemonic::Lar | Mnemonic::Lsl | Mnemonic::Verr | Mnemonic::Verw if rng.one_in(2) => {
            selector::user_selector(ctx, &mut regs, rflags, len, &op, rng);
        }
        _ => {}
    }
    if let Some(t) = target
        && !branch::place_landing(ctx, &mut regs, rflags, len, &op, size, t)
    {
        return None;
    }
    if op.address(ctx, &regs) != off {
        return None;
    }
    let target = if amd16 {
        Some(branch::target16_in_operand(
            ctx, &mut regs, rflags, len, &op, rng,
        ))
    } else {
        target
    };
    let mut variant = mode.label().to_string();
    if map_instr.has_lock_prefix() {
        variant.push_str("+lock");
    }
    variant.push_str(prefix.label());
    if branch16 {
        variant.push_str(branch16_label());
    }
    Some(Case {
        map_code,
        native_code,
        regs,
        rflags,
        reloc_in: [Reloc::None; 16],
        reloc_out: [Reloc::None; 16],
        writes: if form.writes {
            vec![(writes_at, size)]
        } else {
            Vec::new()
        },
        pointer_data: Vec::new(),
        target,
        memory: random_memory(rng),
        offset: off,
        variant,
    })
}
