//! Where the ModRM memory operand sits in an instruction's bytes (legacy, REX, VEX and EVEX
//! prefixes; Intel SDM Vol. 2A §2.1, §2.3, §2.7).

/// Where the ModRM memory operand sits in the raw bytes of an instruction.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    /// Index of the first byte after the legacy/REX prefixes (VEX or opcode).
    pub(super) prefix_end: usize,
    /// Index of the effective REX prefix, if any.
    pub(super) rex: Option<usize>,
    /// Index and length (2 or 3) of a VEX prefix, if any.
    pub(super) vex: Option<(usize, usize)>,
    /// Index of the ModRM byte.
    pub(super) modrm: usize,
    /// Index of the first byte after ModRM, SIB and displacement (immediates follow).
    pub(super) operand_end: usize,
}

fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3
    )
}

pub(super) fn layout(raw: &[u8]) -> Option<Layout> {
    let mut i = 0;
    let mut rex = None;
    while i < raw.len() {
        let b = raw[i];
        if is_legacy_prefix(b) {
            rex = None; // a REX followed by a legacy prefix is ignored
        } else if b & 0xF0 == 0x40 {
            rex = Some(i);
        } else {
            break;
        }
        i += 1;
    }
    let prefix_end = i;
    let b = *raw.get(i)?;
    let (vex, modrm) = match b {
        0xC5 => (Some((i, 2)), i + 3),
        0xC4 => (Some((i, 3)), i + 4),
        0x62 | 0x8F => return None, // EVEX / XOP
        0x0F => match *raw.get(i + 1)? {
            0x38 | 0x3A => (None, i + 3),
            0x0F => return None, // 3DNow!
            _ => (None, i + 2),
        },
        _ => (None, i + 1),
    };
    if vex.is_some() && rex.is_some() {
        return None;
    }
    let m = *raw.get(modrm)?;
    let md = m >> 6;
    let rm = m & 7;
    if md == 3 {
        return None;
    }
    let has_sib = rm == 4;
    let base = if has_sib {
        *raw.get(modrm + 1)? & 7
    } else {
        rm
    };
    let disp = match md {
        0 if rm == 5 || (has_sib && base == 5) => 4,
        0 => 0,
        1 => 1,
        _ => 4,
    };
    Some(Layout {
        prefix_end,
        rex,
        vex,
        modrm,
        operand_end: modrm + 1 + usize::from(has_sib) + disp,
    })
}
