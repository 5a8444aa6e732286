//! `xlat`: a byte read at rbx + al, with 0x67, segment overrides and an ignored REX.W.

use super::state::{random_memory, random_state};
use super::{Case, Ctx, Reloc};
use crate::rng::Rng;

/// A case for `xlat` reading map offset `p` (= rbx + al).
pub(super) fn build(ctx: &Ctx, p: u64, rng: &mut Rng) -> Option<Case> {
    let (mut regs, rflags) = random_state(rng, ctx);
    let addr32 = rng.one_in(4);
    let seg = if !addr32 && rng.one_in(4) {
        Some(rng.pick(&[0x64u8, 0x65, 0x2E, 0x36]))
    } else {
        None
    };
    let seg_base = match seg {
        Some(0x64) => ctx.fs,
        Some(0x65) => ctx.gs,
        _ => 0,
    };
    let al = regs[0] & 0xFF;
    let rbx = p.wrapping_sub(al).wrapping_sub(seg_base);
    regs[3] = if addr32 {
        (rng.next_u64() & !0xFFFF_FFFF) | (rbx & 0xFFFF_FFFF)
    } else {
        rbx
    };
    let mut reloc = [Reloc::None; 16];
    reloc[3] = if addr32 { Reloc::Low32 } else { Reloc::Full };
    let mut code = Vec::new();
    if let Some(s) = seg {
        code.push(s);
    }
    if addr32 {
        code.push(0x67);
    }
    if rng.one_in(4) {
        code.push(0x48); // REX.W: ignored by xlat
    }
    code.push(0xD7);
    let mut variant = String::from(if addr32 { "addr32" } else { "rbx+al" });
    if let Some(s) = seg {
        variant.push_str(if s == 0x64 {
            ", fs:"
        } else if s == 0x65 {
            ", gs:"
        } else {
            ", seg ignored"
        });
    }
    Some(Case {
        native_code: code.clone(),
        map_code: code,
        regs,
        rflags,
        reloc_in: reloc,
        reloc_out: reloc,
        writes: Vec::new(),
        pointer_data: Vec::new(),
        target: None,
        memory: random_memory(rng),
        offset: p,
        variant,
    })
}
