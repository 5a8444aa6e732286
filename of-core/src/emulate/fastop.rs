//! Fast paths for the most common arithmetic: `add or adc sbb and sub xor cmp test inc dec neg
//! not` between a map operand and a register or immediate, computed by the host's own
//! instruction on registers (KVM's "fastop": `push flags; popf; op; pushf; pop`), without the
//! code-slot rewrite of [`super::hostexec`]. Results and all six status flags are the CPU's.

use crate::map::STATUS_FLAGS;
use core::arch::asm;
use iced_x86::Mnemonic;

/// The two-operand operations with a fast path.
///
/// # Examples
///
/// ```
/// use iced_x86::Mnemonic;
/// use of_core::emulate::fastop::Op;
///
/// assert_eq!(Op::of(Mnemonic::Sub), Some(Op::Sub));
/// assert!(Op::Sub.writes() && Op::Sub.binary());
/// assert!(!Op::Cmp.writes());
/// assert!(!Op::Neg.binary());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// add
    Add,
    /// or
    Or,
    /// adc
    Adc,
    /// sbb
    Sbb,
    /// and
    And,
    /// sub
    Sub,
    /// xor
    Xor,
    /// cmp (no write)
    Cmp,
    /// test (no write)
    Test,
    /// inc (one operand)
    Inc,
    /// dec (one operand)
    Dec,
    /// neg (one operand)
    Neg,
    /// not (one operand; no flags)
    Not,
}

impl Op {
    /// The fast-path operation for `mnemonic`, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use iced_x86::Mnemonic;
    /// use of_core::emulate::fastop::Op;
    ///
    /// assert_eq!(Op::of(Mnemonic::Add), Some(Op::Add));
    /// assert_eq!(Op::of(Mnemonic::Not), Some(Op::Not));
    /// assert_eq!(Op::of(Mnemonic::Shl), None); // shifts run through hostexec
    /// ```
    pub fn of(mnemonic: Mnemonic) -> Option<Op> {
        Some(match mnemonic {
            Mnemonic::Add => Op::Add,
            Mnemonic::Or => Op::Or,
            Mnemonic::Adc => Op::Adc,
            Mnemonic::Sbb => Op::Sbb,
            Mnemonic::And => Op::And,
            Mnemonic::Sub => Op::Sub,
            Mnemonic::Xor => Op::Xor,
            Mnemonic::Cmp => Op::Cmp,
            Mnemonic::Test => Op::Test,
            Mnemonic::Inc => Op::Inc,
            Mnemonic::Dec => Op::Dec,
            Mnemonic::Neg => Op::Neg,
            Mnemonic::Not => Op::Not,
            _ => return None,
        })
    }

    /// Whether the operation writes its destination.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::emulate::fastop::Op;
    ///
    /// assert!(Op::Add.writes() && Op::Not.writes());
    /// assert!(!Op::Cmp.writes() && !Op::Test.writes());
    /// ```
    pub fn writes(self) -> bool {
        !matches!(self, Op::Cmp | Op::Test)
    }

    /// Whether the operation has a source operand.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::emulate::fastop::Op;
    ///
    /// assert!(Op::Adc.binary() && Op::Test.binary());
    /// assert!(!Op::Inc.binary() && !Op::Dec.binary() && !Op::Neg.binary() && !Op::Not.binary());
    /// ```
    pub fn binary(self) -> bool {
        !matches!(self, Op::Inc | Op::Dec | Op::Neg | Op::Not)
    }
}

macro_rules! sized {
    ($size:expr, $insn:literal, $a:ident, $b:ident, $f:ident) => {
        // SAFETY: register-only arithmetic between pushfq/popfq pairs; the stack use is
        // balanced and inline asm may use the stack (no `nostack`). The flags loaded hold only
        // status bits (and reserved bit 1), never TF/DF/AC.
        unsafe {
            match $size {
                1 => asm!("push {f}", "popfq", concat!($insn, " {a:l}, {b:l}"), "pushfq", "pop {f}", a = inout(reg) $a, b = in(reg) $b, f = inout(reg) $f),
                2 => asm!("push {f}", "popfq", concat!($insn, " {a:x}, {b:x}"), "pushfq", "pop {f}", a = inout(reg) $a, b = in(reg) $b, f = inout(reg) $f),
                4 => asm!("push {f}", "popfq", concat!($insn, " {a:e}, {b:e}"), "pushfq", "pop {f}", a = inout(reg) $a, b = in(reg) $b, f = inout(reg) $f),
                _ => asm!("push {f}", "popfq", concat!($insn, " {a}, {b}"), "pushfq", "pop {f}", a = inout(reg) $a, b = in(reg) $b, f = inout(reg) $f),
            }
        }
    };
    (unary $size:expr, $insn:literal, $a:ident, $f:ident) => {
        // SAFETY: as above, one register operand.
        unsafe {
            match $size {
                1 => asm!("push {f}", "popfq", concat!($insn, " {a:l}"), "pushfq", "pop {f}", a = inout(reg) $a, f = inout(reg) $f),
                2 => asm!("push {f}", "popfq", concat!($insn, " {a:x}"), "pushfq", "pop {f}", a = inout(reg) $a, f = inout(reg) $f),
                4 => asm!("push {f}", "popfq", concat!($insn, " {a:e}"), "pushfq", "pop {f}", a = inout(reg) $a, f = inout(reg) $f),
                _ => asm!("push {f}", "popfq", concat!($insn, " {a}"), "pushfq", "pop {f}", a = inout(reg) $a, f = inout(reg) $f),
            }
        }
    };
}

/// Computes `op a, b` at operand size `size` (1, 2, 4 or 8 bytes) with input flags `rflags`.
/// Returns the destination's new value (the low `size` bytes are meaningful) and `rflags` with
/// the six status flags replaced by the host's.
///
/// # Examples
///
/// ```
/// use of_core::emulate::fastop::{Op, compute};
///
/// let (cf, pf, af, zf, sf, of) = (1u64 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 7, 1 << 11);
/// let status = cf | pf | af | zf | sf | of;
///
/// // 8-bit: 0x7F + 1 = 0x80 overflows the signed range (OF), is negative (SF), carries out of
/// // bit 3 (AF); 0x80 has one set bit (PF clear); no unsigned carry (CF clear).
/// let (r, f) = compute(Op::Add, 1, 0x7F, 1, 0x202);
/// assert_eq!(r & 0xFF, 0x80);
/// assert_eq!(f & status, of | sf | af);
/// assert_eq!(f & !status, 0x202); // other bits untouched
///
/// // inc leaves CF alone (0xFF + 1 = 0x00 at 8 bits: ZF, PF, AF; CF keeps its input value).
/// let (r, f) = compute(Op::Inc, 1, 0xFF, 0, 0x202 | cf);
/// assert_eq!(r & 0xFF, 0);
/// assert_eq!(f & status, cf | zf | pf | af);
///
/// // cmp computes flags only: 1 - 2 borrows (CF), is -1 (SF, PF: 0xFF has 8 set bits, AF).
/// let (r, f) = compute(Op::Cmp, 8, 1, 2, 0x202);
/// assert_eq!(r, 1);
/// assert_eq!(f & status, cf | sf | pf | af);
/// ```
pub fn compute(op: Op, size: u64, a: u64, b: u64, rflags: u64) -> (u64, u64) {
    let mut a = a;
    let mut f = (rflags & STATUS_FLAGS) | 2;
    match op {
        Op::Add => sized!(size, "add", a, b, f),
        Op::Or => sized!(size, "or", a, b, f),
        Op::Adc => sized!(size, "adc", a, b, f),
        Op::Sbb => sized!(size, "sbb", a, b, f),
        Op::And => sized!(size, "and", a, b, f),
        Op::Sub => sized!(size, "sub", a, b, f),
        Op::Xor => sized!(size, "xor", a, b, f),
        Op::Cmp => sized!(size, "cmp", a, b, f),
        Op::Test => sized!(size, "test", a, b, f),
        Op::Inc => sized!(unary size, "inc", a, f),
        Op::Dec => sized!(unary size, "dec", a, f),
        Op::Neg => sized!(unary size, "neg", a, f),
        Op::Not => sized!(unary size, "not", a, f),
    }
    (a, (rflags & !STATUS_FLAGS) | (f & STATUS_FLAGS))
}
