//! The stack and control-transfer family: push and pop (registers, immediates, flags, memory
//! operands), call (relative, through a register, the map or memory), ret, enter and leave, with
//! rsp (leave: rbp) pointing into the map.

use super::branch16::{branch16_label, target16};
use super::instruction::{encode, fill_operands, gpr, new_instruction, set_memory};
use super::state::{force_image, image_value, random_memory, random_state, set_low};
use super::{Case, Ctx, Reloc, limit};
use crate::arena::MEMORY_LEN;
use crate::forms::{Form, branch16_honoured, is_branch16};
use crate::model::{self, DF, IMAGE_LEN, WRITABLE_END};
use crate::rng::Rng;
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

/// The rsp (leave: rbp) offsets a stack form is swept over.
pub(super) fn offsets(form: &Form) -> Vec<u64> {
    use Mnemonic as M;
    let n = form.size;
    match form.mnemonic {
        // rsp after the push must stay in the writable map.
        M::Push | M::Pushf | M::Pushfq | M::Call | M::Enter => (n..=WRITABLE_END).collect(),
        // rbp for leave, rsp for the rest: the read must lie in the map.
        _ => (0..=IMAGE_LEN as u64 - n).collect(),
    }
}

/// Where a 16-bit branch target is read from, once the encoding's length is known.
#[derive(Clone, Copy)]
enum TargetAt {
    /// The image at this map offset.
    Image(u64),
    /// The compared ordinary memory at this index.
    Memory(u64),
}

/// A case for a stack instruction with rsp (leave: rbp) at map offset `v`.
pub(super) fn build(ctx: &Ctx, form: &Form, v: u64, rng: &mut Rng) -> Option<Case> {
    use Code as C;
    let code = form.code;
    let n = form.size;
    let nb = ctx.nb;
    let (mut regs, mut rflags) = random_state(rng, ctx);
    let mut reloc_in = [Reloc::None; 16];
    let mut reloc_out = [Reloc::None; 16];
    let mut writes = Vec::new();
    let mut pointer_data = Vec::new();
    let mut target = None;
    let mut instr = new_instruction(code);
    let mut native_instr;
    let mut variant = String::from("rsp in map");
    regs[4] = v;
    reloc_in[4] = Reloc::Full;
    reloc_out[4] = Reloc::Full;
    // 0x66 near branches where the CPU honours the prefix (AMD): 2-byte slots and 16-bit
    // targets, read from the state once the encoding's length is known (`target_at`).
    let amd16 = is_branch16(code) && branch16_honoured();
    let mut target_at: Option<TargetAt> = None;
    // Bytes built by hand (the same for both runs), for encodings iced-x86 does not produce.
    let mut raw: Option<Vec<u8>> = None;
    if is_branch16(code) {
        variant.push_str(branch16_label());
    }
    match code {
        C::Push_r64 | C::Push_r16 => {
            let r = rng.below(16) as usize;
            instr.set_op_kind(0, OpKind::Register);
            instr.set_op_register(0, gpr(r, n));
            writes.push((v - n, n));
            if r == 4 && n == 8 {
                pointer_data.push(v - 8);
            }
            native_instr = instr;
        }
        C::Pop_r64 | C::Pop_r16 => {
            let r = rng.below(16) as usize;
            instr.set_op_kind(0, OpKind::Register);
            instr.set_op_register(0, gpr(r, n));
            if r == 4 && n == 8 {
                reloc_out[4] = Reloc::None; // rsp = the popped value
            }
            native_instr = instr;
        }
        C::Push_imm16 | C::Pushw_imm8 | C::Pushq_imm8 | C::Pushq_imm32 => {
            fill_operands(&mut instr, Some(rng))?;
            writes.push((v - n, n));
            native_instr = instr;
        }
        C::Pushfw | C::Pushfq => {
            writes.push((v - n, n));
            native_instr = instr;
        }
        C::Popfw | C::Popfq => {
            native_instr = instr;
        }
        C::Push_rm64 | C::Push_rm16 | C::Pop_rm64 | C::Pop_rm16 => {
            let push = matches!(code, C::Push_rm64 | C::Push_rm16);
            instr.set_op_kind(0, OpKind::Memory);
            native_instr = instr;
            let after = if push { v } else { v + n };
            // The operand: absolute in the map, rsp-relative in the map, or ordinary memory.
            match rng.below(3) {
                0 => {
                    let lim = limit(!push);
                    let m = rng.below(lim - n + 1);
                    set_memory(
                        &mut instr,
                        Register::None,
                        Register::None,
                        1,
                        m,
                        8,
                        Register::None,
                    );
                    set_memory(
                        &mut native_instr,
                        Register::None,
                        Register::None,
                        1,
                        nb + m,
                        8,
                        Register::None,
                    );
                    if !push {
                        writes.push((m, n));
                    }
                    variant.push_str(", operand [abs] in map");
                }
                1 => {
                    // [rsp + d]: pop uses rsp after the increment.
                    let lim = limit(!push);
                    let m = rng.below(lim - n + 1);
                    let d = m.wrapping_sub(after) as i64;
                    set_memory(
                        &mut instr,
                        Register::RSP,
                        Register::None,
                        1,
                        d as u64,
                        4,
                        Register::None,
                    );
                    native_instr = instr;
                    if !push {
                        writes.push((m, n));
                    }
                    variant.push_str(", operand [rsp+d] in map");
                }
                _ => {
                    let m = ctx.mem + rng.below(MEMORY_LEN as u64 - n + 1);
                    set_memory(
                        &mut instr,
                        Register::None,
                        Register::None,
                        1,
                        m,
                        8,
                        Register::None,
                    );
                    native_instr = instr;
                    variant.push_str(", operand in memory");
                }
            }
            if push {
                writes.push((v - n, n));
            }
        }
        C::Call_rel32_64 => {
            let t = rng.pick(&ctx.targets);
            instr = Instruction::with_branch(code, t).ok()?;
            native_instr = instr;
            target = Some(t);
            writes.push((v - 8, 8));
        }
        C::Call_rel16 if amd16 => {
            // 66 e8 cw: target = (next rip + rel16) mod 2^16; the return address is pushed as
            // its low 2 bytes.
            let t = target16(rng);
            let rel = t.wrapping_sub(ctx.code + 4) as u16;
            raw = Some(vec![0x66, 0xE8, rel as u8, (rel >> 8) as u8]);
            native_instr = instr;
            target = Some(t);
            writes.push((v - n, n));
        }
        C::Call_rel16 => {
            // Intel: 66 e8 cd, a call rel32 with an ignored prefix.
            let t = rng.pick(&ctx.targets);
            let rel = t.wrapping_sub(ctx.code + 6) as u32;
            let mut b = vec![0x66, 0xE8];
            b.extend(rel.to_le_bytes());
            raw = Some(b);
            native_instr = instr;
            target = Some(t);
            writes.push((v - 8, 8));
        }
        C::Call_rm16 => {
            // 66 ff /2: like call r/m64 below, with 2-byte target and push where the CPU
            // honours 0x66, 8-byte ones where it ignores it.
            let t = rng.pick(&ctx.targets);
            target = (!amd16).then_some(t);
            writes.push((v - n, n));
            instr.set_op_kind(0, OpKind::Memory);
            native_instr = instr;
            match rng.below(3) {
                0 => {
                    let r = loop {
                        let r = rng.below(16) as usize;
                        if r != 4 {
                            break r;
                        }
                    };
                    instr.set_op_kind(0, OpKind::Register);
                    instr.set_op_register(0, gpr(r, 2));
                    native_instr = instr;
                    if amd16 {
                        let t = target16(rng);
                        set_low(&mut regs[r], 2, t);
                        target = Some(t);
                    } else {
                        regs[r] = t;
                    }
                    variant.push_str(", target in register");
                }
                1 => {
                    let m = rng.below(IMAGE_LEN as u64 - n + 1);
                    set_memory(
                        &mut instr,
                        Register::None,
                        Register::None,
                        1,
                        m,
                        8,
                        Register::None,
                    );
                    set_memory(
                        &mut native_instr,
                        Register::None,
                        Register::None,
                        1,
                        nb + m,
                        8,
                        Register::None,
                    );
                    variant.push_str(", target in map");
                    if amd16 {
                        target_at = Some(TargetAt::Image(m));
                    } else {
                        writes.push((u64::MAX, m));
                    }
                }
                _ => {
                    let m = ctx.mem + n * rng.below(MEMORY_LEN as u64 / n);
                    set_memory(
                        &mut instr,
                        Register::None,
                        Register::None,
                        1,
                        m,
                        8,
                        Register::None,
                    );
                    native_instr = instr;
                    variant.push_str(", target in memory");
                    if amd16 {
                        target_at = Some(TargetAt::Memory(m - ctx.mem));
                    } else {
                        writes.push((u64::MAX - 1, m - ctx.mem));
                    }
                }
            }
        }
        C::Call_rm64 => {
            let t = rng.pick(&ctx.targets);
            target = Some(t);
            writes.push((v - 8, 8));
            instr.set_op_kind(0, OpKind::Memory);
            native_instr = instr;
            match rng.below(3) {
                0 => {
                    let r = loop {
                        let r = rng.below(16) as usize;
                        if r != 4 {
                            break r;
                        }
                    };
                    instr.set_op_kind(0, OpKind::Register);
                    instr.set_op_register(0, gpr(r, 8));
                    native_instr = instr;
                    regs[r] = t;
                    variant.push_str(", target in register");
                }
                1 => {
                    let m = rng.below(IMAGE_LEN as u64 - 8 + 1);
                    set_memory(
                        &mut instr,
                        Register::None,
                        Register::None,
                        1,
                        m,
                        8,
                        Register::None,
                    );
                    set_memory(
                        &mut native_instr,
                        Register::None,
                        Register::None,
                        1,
                        nb + m,
                        8,
                        Register::None,
                    );
                    variant.push_str(", target in map");
                    // Constructed after encoding (needs the length); remember where.
                    writes.push((u64::MAX, m));
                }
                _ => {
                    let m = ctx.mem + 8 * rng.below(MEMORY_LEN as u64 / 8);
                    set_memory(
                        &mut instr,
                        Register::None,
                        Register::None,
                        1,
                        m,
                        8,
                        Register::None,
                    );
                    native_instr = instr;
                    variant.push_str(", target in memory");
                    writes.push((u64::MAX - 1, m - ctx.mem));
                }
            }
        }
        C::Retnq | C::Retnq_imm16 | C::Retnw | C::Retnw_imm16 => {
            if matches!(code, C::Retnq_imm16 | C::Retnw_imm16) {
                instr.set_op_kind(0, OpKind::Immediate16);
                let imm = if rng.one_in(2) {
                    rng.below(64)
                } else {
                    rng.next_u64() & 0xFFFF
                };
                instr.set_immediate_u64(0, imm);
            }
            native_instr = instr;
            if amd16 {
                target_at = Some(TargetAt::Image(v));
            } else {
                target = Some(rng.pick(&ctx.targets));
            }
        }
        C::Enterq_imm16_imm8 | C::Enterw_imm16_imm8 => {
            let level = match rng.below(4) {
                0 => 0,
                1 => 1,
                2 => 2 + rng.below(2),
                _ => rng.below(32),
            };
            if n * (level + 1) > v {
                return None;
            }
            instr.set_op_kind(0, OpKind::Immediate16);
            instr.set_op_kind(1, OpKind::Immediate8_2nd);
            // The CPU probes the final rsp (rsp - pushes - imm16) before pushing (seen on AMD:
            // #PF at that address): keep it inside the image, so both runs can reach it.
            let room = v - n * (level + 1);
            instr.set_immediate_u64(
                0,
                if rng.one_in(3) {
                    0
                } else {
                    rng.below(room + 1)
                },
            );
            instr.set_immediate_u64(1, level);
            native_instr = instr;
            // rbp: in ordinary memory (frame pointers are copied from below it) or in the map.
            let lo = n * level.saturating_sub(1);
            if rng.one_in(2) || lo > IMAGE_LEN as u64 {
                if lo > MEMORY_LEN as u64 - n {
                    return None;
                }
                regs[5] = ctx.mem + MEMORY_LEN as u64 - n;
                reloc_out[5] = if code == C::Enterw_imm16_imm8 {
                    Reloc::None
                } else {
                    Reloc::Full
                };
                variant.push_str(", rbp in memory");
            } else {
                let u = lo + rng.below(IMAGE_LEN as u64 - lo + 1);
                // A copied frame pointer that reads the pushed rbp would carry the native
                // address into the copy (16-bit enter pushes only the low bits, equal in both).
                if code == C::Enterq_imm16_imm8 && level > 1 && u - lo < v && u > v - 8 {
                    return None;
                }
                regs[5] = u;
                reloc_in[5] = Reloc::Full;
                reloc_out[5] = Reloc::Full;
                if code == C::Enterq_imm16_imm8 {
                    pointer_data.push(v - 8);
                }
                variant.push_str(", rbp in map");
            }
            let total = n * (level + 1);
            writes.push((v - total, total));
            if level > 0 && code == C::Enterq_imm16_imm8 {
                pointer_data.push(v - total);
            }
            variant.push_str(&format!(", level {level}"));
        }
        C::Leaveq | C::Leavew => {
            // rbp in the map; rsp becomes rbp + size.
            regs[4] = ctx.stack;
            reloc_in[4] = Reloc::None;
            regs[5] = v;
            reloc_in[5] = Reloc::Full;
            reloc_out[5] = if code == C::Leavew {
                Reloc::Full
            } else {
                Reloc::None
            };
            native_instr = instr;
            variant = String::from("rbp in map");
        }
        _ => return None,
    }
    let (map_code, native_code) = match raw {
        Some(b) => (b.clone(), b),
        None => (encode(&instr, ctx.code)?, encode(&native_instr, ctx.code)?),
    };
    if map_code.len() != native_code.len() {
        return None;
    }
    let len = map_code.len();
    let mut memory = random_memory(rng);
    // A 16-bit target read from the state: chosen (where the bytes can be set) or as found.
    match target_at {
        Some(TargetAt::Image(m)) => {
            let want = target16(rng);
            let mut r = regs;
            if force_image(ctx, &mut r, rflags, len, m, &want.to_le_bytes()[..2]) && r[4] == v {
                regs = r;
            }
            target = Some(image_value(ctx, &regs, rflags, len, m, 2));
        }
        Some(TargetAt::Memory(i)) => {
            let i = i as usize;
            memory[i..i + 2].copy_from_slice(&target16(rng).to_le_bytes()[..2]);
            target = Some(u64::from(u16::from_le_bytes([memory[i], memory[i + 1]])));
        }
        None => {}
    }
    // Constructed values that need the encoding's length.
    if let Some(i) = writes.iter().position(|w| w.0 >= u64::MAX - 1) {
        let (kind, m) = writes.remove(i);
        let t = target?;
        if kind == u64::MAX {
            if !force_image(ctx, &mut regs, rflags, len, m, &t.to_le_bytes()) || regs[4] != v {
                return None;
            }
        } else {
            memory[m as usize..m as usize + 8].copy_from_slice(&t.to_le_bytes());
        }
    }
    match code {
        C::Retnq | C::Retnq_imm16 | C::Retnw | C::Retnw_imm16 if !amd16 => {
            let t = target?;
            if !force_image(ctx, &mut regs, rflags, len, v, &t.to_le_bytes()) || regs[4] != v {
                return None;
            }
        }
        C::Popfw | C::Popfq => {
            // No TF (single-step), NT or AC (alignment checks) in the popped value.
            let mut val = image_value(ctx, &regs, rflags, len, v, n);
            val &= !((1 << 8) | (1 << 14) | (1 << 18));
            if !force_image(
                ctx,
                &mut regs,
                rflags,
                len,
                v,
                &val.to_le_bytes()[..n as usize],
            ) || regs[4] != v
            {
                return None;
            }
        }
        C::Push_r64 | C::Push_r16 | C::Pop_r64 | C::Pop_r16 => {}
        _ => {}
    }
    rflags &= model::STATUS | DF;
    Some(Case {
        map_code,
        native_code,
        regs,
        rflags,
        reloc_in,
        reloc_out,
        writes,
        pointer_data,
        target,
        memory,
        offset: v,
        variant,
    })
}
