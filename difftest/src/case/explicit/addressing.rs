//! Addressing modes of an explicit memory operand, and the operand itself: the registers and
//! displacement that make it address a map offset, in the map encoding and in the native one.

use crate::case::Ctx;
use crate::case::instruction::gpr;
use crate::rng::Rng;
use iced_x86::Register;

/// The random parts of an explicit form's instruction other than the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// `[disp32]` (SIB, no base; sign-extended 64-bit address).
    Abs,
    /// `[disp32]` with 0x67 (zero-extended 32-bit address).
    Abs32,
    /// `[moffs64]`.
    Moffs,
    /// `[moffs32]` (0x67).
    Moffs32,
    /// `fs:[moffs64]` / `gs:[moffs64]`.
    MoffsSeg(Register),
    /// `[base + disp32]`.
    Base,
    /// `[base + index * scale + disp32]`.
    BaseIndex,
    /// `[rip + disp32]`.
    Rip,
    /// `cs:`/`ds:`/`es:`/`ss:` `[disp32]` (ignored in 64-bit mode).
    SegIgnored(Register),
    /// `fs:`/`gs:` `[base + disp32]` (adds the segment base).
    SegBase(Register),
    /// `[e32 + disp32]` with 0x67 (the address wraps at 32 bits).
    Addr32,
}

impl Mode {
    /// A random mode for a `moffs` operand (`mov al/ax/eax/rax` to or from an absolute
    /// address) or for a ModRM one.
    pub(super) fn random(moffs: bool, rng: &mut Rng) -> Mode {
        if moffs {
            match rng.below(6) {
                0 => Mode::Moffs32,
                1 => Mode::MoffsSeg(if rng.one_in(2) {
                    Register::FS
                } else {
                    Register::GS
                }),
                2 => Mode::SegIgnored(rng.pick(&[
                    Register::CS,
                    Register::DS,
                    Register::ES,
                    Register::SS,
                ])),
                _ => Mode::Moffs,
            }
        } else {
            match rng.below(16) {
                0 => Mode::Base,
                1 => Mode::BaseIndex,
                2 => Mode::Rip,
                3 => Mode::SegIgnored(rng.pick(&[
                    Register::CS,
                    Register::DS,
                    Register::ES,
                    Register::SS,
                ])),
                4 => Mode::SegBase(if rng.one_in(2) {
                    Register::FS
                } else {
                    Register::GS
                }),
                5 => Mode::Addr32,
                6 => Mode::Abs32,
                _ => Mode::Abs,
            }
        }
    }

    /// The variant label (for statistics).
    pub(super) fn label(self) -> &'static str {
        match self {
            Mode::Abs => "abs",
            Mode::Abs32 => "abs32",
            Mode::Moffs => "moffs",
            Mode::Moffs32 => "moffs32",
            Mode::MoffsSeg(Register::FS) => "fs:moffs",
            Mode::MoffsSeg(_) => "gs:moffs",
            Mode::Base => "base",
            Mode::BaseIndex => "base+index",
            Mode::Rip => "rip",
            Mode::SegIgnored(_) => "cs/ds/es/ss",
            Mode::SegBase(Register::FS) => "fs:base",
            Mode::SegBase(_) => "gs:base",
            Mode::Addr32 => "addr32",
        }
    }
}

/// base, index, displacement, displacement size, segment of a memory operand.
pub(super) type MemSpec = (Register, Register, u64, u32, Register);

/// A memory operand addressing map offset `off` in mode `mode`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Operand {
    /// The addressing mode.
    pub(super) mode: Mode,
    /// The base register (encoding number), for the modes with one.
    pub(super) base: usize,
    /// The index register (encoding number), for [`Mode::BaseIndex`].
    pub(super) index: usize,
    /// The scale, for [`Mode::BaseIndex`].
    pub(super) scale: u32,
    /// The displacement of the modes with a base register.
    pub(super) disp: i64,
    /// The map offset addressed.
    pub(super) off: u64,
}

impl Operand {
    /// Random base and index registers among those the instruction does not use (`used`, by
    /// encoding number), scale and a displacement that needs 32 bits in both encodings; `None`
    /// if fewer than two registers are free.
    pub(super) fn random(mode: Mode, off: u64, used: u16, rng: &mut Rng) -> Option<Operand> {
        let free: Vec<usize> = (0..16).filter(|n| used & (1 << n) == 0).collect();
        if free.len() < 2 {
            return None;
        }
        let base = rng.pick(&free);
        let index = loop {
            let x = rng.pick(&free);
            if x != base {
                break x;
            }
        };
        let scale = rng.pick(&[1u32, 2, 4, 8]);
        // A displacement that needs 32 bits in both encodings.
        let disp = loop {
            let d = (rng.next_u64() as i32 as i64) >> rng.below(24);
            if !(-0x80..=0x7F).contains(&d) && (-0x3FFF_FFFF..0x4000_0000).contains(&d) {
                break d;
            }
        };
        Some(Operand {
            mode,
            base,
            index,
            scale,
            disp,
            off,
        })
    }

    /// The operand's fields in the map encoding and in the native one (which addresses the
    /// native image, `NB` higher).
    pub(super) fn specs(&self, ctx: &Ctx) -> (MemSpec, MemSpec) {
        let Operand {
            mode,
            base,
            index,
            disp,
            off,
            ..
        } = *self;
        let nb = ctx.nb;
        match mode {
            Mode::Abs => (
                (Register::None, Register::None, off, 8, Register::None),
                (Register::None, Register::None, nb + off, 8, Register::None),
            ),
            Mode::Abs32 => (
                (Register::None, Register::None, off, 4, Register::None),
                (Register::None, Register::None, nb + off, 4, Register::None),
            ),
            Mode::Moffs => (
                (Register::None, Register::None, off, 8, Register::None),
                (Register::None, Register::None, nb + off, 8, Register::None),
            ),
            Mode::Moffs32 => (
                (Register::None, Register::None, off, 4, Register::None),
                (Register::None, Register::None, nb + off, 4, Register::None),
            ),
            Mode::MoffsSeg(s) => {
                let a = off.wrapping_sub(ctx.segment_base(s));
                (
                    (Register::None, Register::None, a, 8, s),
                    (Register::None, Register::None, a.wrapping_add(nb), 8, s),
                )
            }
            Mode::SegIgnored(s) => (
                (Register::None, Register::None, off, 8, s),
                (Register::None, Register::None, nb + off, 8, s),
            ),
            Mode::Base | Mode::SegBase(_) => {
                let s = if let Mode::SegBase(s) = mode {
                    s
                } else {
                    Register::None
                };
                (
                    (gpr(base, 8), Register::None, disp as u64, 4, s),
                    (
                        gpr(base, 8),
                        Register::None,
                        (disp as u64).wrapping_add(nb),
                        4,
                        s,
                    ),
                )
            }
            Mode::BaseIndex => (
                (gpr(base, 8), gpr(index, 8), disp as u64, 4, Register::None),
                (
                    gpr(base, 8),
                    gpr(index, 8),
                    (disp as u64).wrapping_add(nb),
                    4,
                    Register::None,
                ),
            ),
            Mode::Rip => (
                (Register::RIP, Register::None, off, 4, Register::None),
                (Register::RIP, Register::None, nb + off, 4, Register::None),
            ),
            Mode::Addr32 => (
                (gpr(base, 4), Register::None, disp as u64, 4, Register::None),
                (
                    gpr(base, 4),
                    Register::None,
                    (disp as u64).wrapping_add(nb),
                    4,
                    Register::None,
                ),
            ),
        }
    }

    /// The scale to encode (1 unless there is an index register).
    pub(super) fn encoded_scale(&self) -> u32 {
        if self.mode == Mode::BaseIndex {
            self.scale
        } else {
            1
        }
    }

    /// Sets the base register of `regs` so that the operand addresses `off` (again, after other
    /// registers changed).
    pub(super) fn place(&self, ctx: &Ctx, regs: &mut [u64; 16]) {
        let Operand {
            mode,
            base,
            index,
            scale,
            disp,
            off,
        } = *self;
        match mode {
            Mode::Base | Mode::SegBase(_) => {
                let s = if let Mode::SegBase(s) = mode {
                    ctx.segment_base(s)
                } else {
                    0
                };
                regs[base] = off.wrapping_sub(disp as u64).wrapping_sub(s);
            }
            Mode::BaseIndex => {
                regs[base] = off
                    .wrapping_sub(disp as u64)
                    .wrapping_sub(regs[index].wrapping_mul(u64::from(scale)));
            }
            Mode::Addr32 => {
                let low = off.wrapping_sub(disp as u64) & 0xFFFF_FFFF;
                regs[base] = (regs[base] & !0xFFFF_FFFF) | low;
            }
            _ => {}
        }
    }

    /// The effective address in state `regs`, as the CPU computes it.
    pub(super) fn address(&self, ctx: &Ctx, regs: &[u64; 16]) -> u64 {
        let Operand {
            mode,
            base,
            index,
            scale,
            disp,
            off,
        } = *self;
        let addr_mask = if matches!(mode, Mode::Addr32 | Mode::Moffs32 | Mode::Abs32) {
            0xFFFF_FFFF
        } else {
            u64::MAX
        };
        let v = match mode {
            Mode::Base => regs[base].wrapping_add(disp as u64),
            Mode::SegBase(s) => regs[base]
                .wrapping_add(disp as u64)
                .wrapping_add(ctx.segment_base(s)),
            Mode::BaseIndex => regs[base]
                .wrapping_add(regs[index].wrapping_mul(u64::from(scale)))
                .wrapping_add(disp as u64),
            Mode::Addr32 => regs[base].wrapping_add(disp as u64),
            _ => off,
        };
        v & addr_mask
    }
}
