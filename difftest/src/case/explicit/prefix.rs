//! Byte-level prefix variants of an explicit form's encoding, applied to the map and native
//! encodings alike: a redundant REX, a stacked (ignored) REX, padding to exactly 15 bytes.

use crate::rng::Rng;

/// Index of the first byte after legacy prefixes and of the effective REX prefix, if any.
fn prefix_layout(bytes: &[u8]) -> (usize, Option<usize>) {
    let mut i = 0;
    let mut rex = None;
    while i < bytes.len() {
        match bytes[i] {
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3 => {
                rex = None
            }
            0x40..=0x4F => rex = Some(i),
            _ => break,
        }
        i += 1;
    }
    (i, rex)
}

/// Byte-level prefix variants applied to both encodings alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Prefix {
    /// The encoding as iced-x86 makes it.
    None,
    /// A REX prefix (0x40) where none was needed.
    Rex,
    /// An extra, ignored REX prefix before the effective one (or before a redundant 0x40).
    Rex2,
    /// Ignored segment prefixes up to exactly 15 bytes.
    Pad15,
}

impl Prefix {
    /// A random variant (none for a rip-relative operand: a longer instruction moves the
    /// address) applied to both encodings, or none if it does not apply to them alike.
    pub(super) fn vary(
        map_code: Vec<u8>,
        native_code: Vec<u8>,
        rip_relative: bool,
        rng: &mut Rng,
    ) -> (Vec<u8>, Vec<u8>, Prefix) {
        let prefix = match rng.below(12) {
            _ if rip_relative => Prefix::None,
            0 => Prefix::Rex,
            1 => Prefix::Rex2,
            2 => Prefix::Pad15,
            _ => Prefix::None,
        };
        let extra_rex = 0x40 | rng.below(16) as u8;
        let pad = rng.pick(&[0x2E, 0x3E, 0x26, 0x36]);
        match (
            apply_prefix(prefix, &map_code, extra_rex, pad),
            apply_prefix(prefix, &native_code, extra_rex, pad),
        ) {
            (Some(a), Some(b)) if a.len() == b.len() => (a, b, prefix),
            _ => (map_code, native_code, Prefix::None),
        }
    }

    /// The suffix of the variant label (for statistics).
    pub(super) fn label(self) -> &'static str {
        match self {
            Prefix::Rex => "+rex",
            Prefix::Rex2 => "+rex2",
            Prefix::Pad15 => "+15byte",
            Prefix::None => "",
        }
    }
}

/// `bytes` with prefix variant `p` (`extra_rex`: the stacked REX; `pad`: the padding
/// segment prefix), or `None` if `p` does not apply to this encoding or makes it too long.
fn apply_prefix(p: Prefix, bytes: &[u8], extra_rex: u8, pad: u8) -> Option<Vec<u8>> {
    let (start, rex) = prefix_layout(bytes);
    let vex = matches!(bytes.get(start), Some(0xC4 | 0xC5));
    let mut out = bytes.to_vec();
    match p {
        Prefix::None => {}
        Prefix::Rex => {
            if rex.is_some() || vex {
                return None;
            }
            out.insert(start, 0x40);
        }
        Prefix::Rex2 => {
            if vex {
                return None;
            }
            match rex {
                Some(i) => out.insert(i, extra_rex),
                None => {
                    out.insert(start, 0x40);
                    out.insert(start, extra_rex);
                }
            }
        }
        Prefix::Pad15 => {
            if bytes[..start].iter().any(|&b| b == 0x64 || b == 0x65) {
                return None;
            }
            while out.len() < 15 {
                out.insert(0, pad);
            }
        }
    }
    (out.len() <= 15).then_some(out)
}
