//! The string family: movs, cmps, stos, lods and scas of every size, once, with rep or with
//! repne, in either direction, with rsi and/or rdi in the map, 0x67 and segment overrides.

use super::state::{random_memory, random_state};
use super::{Case, Ctx, Reloc, limit};
use crate::forms::Form;
use crate::model::{DF, IMAGE_LEN};
use crate::rng::Rng;
use iced_x86::Code;

/// The five string operations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StrOp {
    Movs,
    Cmps,
    Stos,
    Lods,
    Scas,
}

/// The operation of a string form and its opcode byte (without prefixes).
fn string_op(code: Code) -> Option<(StrOp, u8)> {
    use Code as C;
    Some(match code {
        C::Movsb_m8_m8 => (StrOp::Movs, 0xA4),
        C::Movsw_m16_m16 | C::Movsd_m32_m32 | C::Movsq_m64_m64 => (StrOp::Movs, 0xA5),
        C::Cmpsb_m8_m8 => (StrOp::Cmps, 0xA6),
        C::Cmpsw_m16_m16 | C::Cmpsd_m32_m32 | C::Cmpsq_m64_m64 => (StrOp::Cmps, 0xA7),
        C::Stosb_m8_AL => (StrOp::Stos, 0xAA),
        C::Stosw_m16_AX | C::Stosd_m32_EAX | C::Stosq_m64_RAX => (StrOp::Stos, 0xAB),
        C::Lodsb_AL_m8 => (StrOp::Lods, 0xAC),
        C::Lodsw_AX_m16 | C::Lodsd_EAX_m32 | C::Lodsq_RAX_m64 => (StrOp::Lods, 0xAD),
        C::Scasb_AL_m8 => (StrOp::Scas, 0xAE),
        C::Scasw_AX_m16 | C::Scasd_EAX_m32 | C::Scasq_RAX_m64 => (StrOp::Scas, 0xAF),
        _ => return None,
    })
}

/// Map slots (by register number; 17 = rflags) an access range touches.
fn slots(start: u64, len: u64) -> u32 {
    let mut s = 0u32;
    let mut a = start;
    while a < start + len {
        s |= 1 << (a / 8).min(19);
        a += 1;
    }
    s
}

/// A case for a string instruction with its map pointer at `p`.
pub(super) fn build(ctx: &Ctx, form: &Form, p: u64, rng: &mut Rng) -> Option<Case> {
    let (op, opcode) = string_op(form.code)?;
    let n = form.size;
    let uses_src = matches!(op, StrOp::Movs | StrOp::Cmps | StrOp::Lods);
    let uses_dst = matches!(op, StrOp::Movs | StrOp::Cmps | StrOp::Stos | StrOp::Scas);
    let (mut regs, mut rflags) = random_state(rng, ctx);
    rflags = (rflags & !DF) | if rng.one_in(2) { DF } else { 0 };
    let down = rflags & DF != 0;
    let rep = match rng.below(3) {
        0 => None,
        1 => Some(0xF3u8),
        _ => Some(0xF2u8),
    };
    let addr32 = rng.one_in(4);
    let seg = if uses_src && rng.one_in(3) {
        let s = rng.pick(&[0x2Eu8, 0x3E, 0x26, 0x36, 0x64, 0x65]);
        if addr32 && (s == 0x64 || s == 0x65) {
            None
        } else {
            Some(s)
        }
    } else {
        None
    };
    let seg_base = match seg {
        Some(0x64) => ctx.fs,
        Some(0x65) => ctx.gs,
        _ => 0,
    };
    // Which pointer is at p; the other in the map or in ordinary memory.
    let src_at_p = match (uses_src, uses_dst) {
        (true, true) => rng.one_in(2),
        (true, false) => true,
        _ => false,
    };
    let other_in_map = rng.one_in(2);
    let other = if other_in_map {
        rng.below(IMAGE_LEN as u64 - n + 1)
    } else {
        ctx.mem + 0x80
    };
    let (src, dst, src_map, dst_map) = if src_at_p {
        (p, other, true, other_in_map && uses_dst)
    } else {
        (other, p, other_in_map && uses_src, true)
    };
    let dst_map = dst_map && uses_dst;
    let src_map = src_map && uses_src;
    // The most iterations that stay inside the map (writes: inside the writable map).
    let fit = |start: u64, in_map: bool, writes: bool| -> u64 {
        if !in_map {
            return 0x78 / n;
        }
        let lim = limit(writes);
        if start + n > lim {
            return 0;
        }
        if down {
            start / n + 1
        } else {
            (lim - start) / n
        }
    };
    let writes_dst = matches!(op, StrOp::Movs | StrOp::Stos);
    let mut max = u64::MAX;
    if uses_src {
        max = max.min(fit(src, src_map, false));
    }
    if uses_dst {
        max = max.min(fit(dst, dst_map, writes_dst));
    }
    if max == 0 {
        return None;
    }
    let count = if rep.is_some() {
        match rng.below(5) {
            0 => 0,
            1 => 1,
            2 => 2,
            _ => rng.below(max + 1),
        }
        .min(max)
    } else {
        1
    };
    let iterations = count;
    // Registers the instruction changes must not be read or written through the map by a
    // later iteration (or by the single iteration, for the count register of rep).
    let mut modified = 0u32;
    if uses_src {
        modified |= 1 << 6;
    }
    if uses_dst {
        modified |= 1 << 7;
    }
    if rep.is_some() {
        modified |= 1 << 1;
    }
    if op == StrOp::Lods {
        modified |= 1;
    }
    if matches!(op, StrOp::Cmps | StrOp::Scas) {
        modified |= 1 << 17;
    }
    let range = |start: u64| -> (u64, u64) {
        if iterations == 0 {
            (start, 0)
        } else if down {
            (start - (iterations - 1) * n, iterations * n)
        } else {
            (start, iterations * n)
        }
    };
    let mut touched = 0u32;
    let mut written = 0u32;
    if src_map {
        let (a, l) = range(src);
        touched |= slots(a, l);
    }
    if dst_map {
        let (a, l) = range(dst);
        touched |= slots(a, l);
        if writes_dst {
            written |= slots(a, l);
        }
    }
    if iterations >= 2 && touched & modified != 0 {
        return None;
    }
    if rep.is_some() && iterations >= 1 && written & (1 << 1) != 0 {
        return None;
    }
    // Nor may a later iteration run after a store to a register the instruction reads: the
    // rflags slot (DF sets the direction), or rax (what stos stores, what scas compares).
    let read = (1 << 17)
        | if matches!(op, StrOp::Stos | StrOp::Scas) {
            1
        } else {
            0
        };
    if iterations >= 2 && written & (read | modified) != 0 {
        return None;
    }
    // Registers.
    let hi = |rng: &mut Rng| {
        if addr32 {
            rng.next_u64() & !0xFFFF_FFFF
        } else {
            0
        }
    };
    let mut reloc_in = [Reloc::None; 16];
    let kind = if addr32 { Reloc::Low32 } else { Reloc::Full };
    if uses_src {
        regs[6] =
            hi(rng) | (src.wrapping_sub(seg_base) & if addr32 { 0xFFFF_FFFF } else { u64::MAX });
        if src_map {
            reloc_in[6] = kind;
        }
    }
    if uses_dst {
        regs[7] = hi(rng) | dst;
        if dst_map {
            reloc_in[7] = kind;
        }
    }
    if rep.is_some() {
        regs[1] = if addr32 {
            (rng.next_u64() & !0xFFFF_FFFF) | count
        } else {
            count
        };
    }
    // Bytes: [seg] [67] [rep] [66] [REX.W] opcode.
    let mut code = Vec::new();
    if let Some(s) = seg {
        code.push(s);
    }
    if addr32 {
        code.push(0x67);
    }
    if let Some(r) = rep {
        code.push(r);
    }
    if n == 2 {
        code.push(0x66);
    }
    if n == 8 {
        code.push(0x48);
    }
    code.push(opcode);
    let mut writes = Vec::new();
    if dst_map && writes_dst && iterations > 0 {
        writes.push(range(dst));
    }
    let mut variant = String::new();
    variant.push_str(match rep {
        None => "once",
        Some(0xF3) => "rep",
        _ => "repne",
    });
    variant.push_str(if down { ", DF=1" } else { ", DF=0" });
    variant.push_str(match (src_map, dst_map) {
        (true, true) => ", rsi+rdi in map",
        (true, false) => ", rsi in map",
        _ => ", rdi in map",
    });
    if addr32 {
        variant.push_str(", addr32");
    }
    if let Some(s) = seg {
        variant.push_str(match s {
            0x64 => ", fs:",
            0x65 => ", gs:",
            _ => ", seg ignored",
        });
    }
    Some(Case {
        native_code: code.clone(),
        map_code: code,
        regs,
        rflags,
        reloc_in,
        reloc_out: reloc_in,
        writes,
        pointer_data: Vec::new(),
        target: None,
        memory: random_memory(rng),
        offset: p,
        variant,
    })
}
