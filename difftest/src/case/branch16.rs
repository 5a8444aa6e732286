//! Near branches with a 0x66 prefix (`66 C3`, `66 C2 iw`, `66 E8`, `66 FF /2`, `66 FF /4`), which
//! AMD CPUs run with a 16-bit target and Intel CPUs as the 64-bit forms
//! ([`branch16_honoured`]): the targets and labels the explicit and stack families share.

use crate::forms::branch16_honoured;
use crate::rng::Rng;

/// A 16-bit branch target: half the time in page 0 (where `of`'s handler sees the fetch fault
/// first and passes it on), else anywhere in the low 64 KiB.
pub(super) fn target16(rng: &mut Rng) -> u64 {
    if rng.one_in(2) {
        rng.below(0x1000)
    } else {
        rng.below(0x1_0000)
    }
}

/// Variant label of a 0x66 near branch on this CPU.
pub(super) fn branch16_label() -> &'static str {
    if branch16_honoured() {
        ", 16-bit (AMD)"
    } else {
        ", 0x66 ignored (Intel)"
    }
}
