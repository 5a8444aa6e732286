//! Building test cases: one instruction (encoded twice, with its map operand at page-0 offset
//! `OFF` and with the same operand at the native image), a register state, and what the run
//! must be told about both (which registers hold pointers into the image, which image bytes the
//! instruction stores, where a control transfer lands).
//!
//! Both encodings have the same length and run at the same address, so the next-instruction
//! address (the rip slot), return addresses and landing addresses are identical in both runs.
//! Registers that point into the image (rsp for stack forms, rsi/rdi for strings, rbx for xlat,
//! rbp for leave/enter) hold `NB + value` natively, where `NB` is the native image's address
//! ([`Reloc`]); the image itself always holds the map's view (`value`).
//!
//! One module per family of [`Family`], as the forms are built differently:
//!
//! - `explicit`: forms with an explicit memory operand (moves, ALU and arithmetic, shifts and
//!   rotates, multiplies, ...), over every addressing mode and prefix variant, with per-family
//!   states where a uniformly random state would miss the interesting cases: divides
//!   (`explicit::divide`), compare-exchange up to 16 bytes (`explicit::compare_exchange`), bit
//!   tests with a register bit offset (`explicit::bit_test`), selector checks
//!   (`explicit::selector`) and indirect near branches (`explicit::branch`);
//! - `stack`: push, pop, call, ret, enter and leave with rsp (or rbp) in the map;
//! - `string`: movs, cmps, stos, lods and scas, once or repeated, in either direction;
//! - `xlat`.
//!
//! Shared by all: `instruction` (register views, operands and encoding with iced-x86), `state`
//! (random register states and memory, setting image bytes through the registers) and
//! `branch16` (the 16-bit targets of 0x66 near branches).

mod branch16;
mod explicit;
mod instruction;
mod stack;
mod state;
mod string;
mod xlat;

pub use instruction::{R8, full, gpr, sample_instruction};
pub use state::{force_image, image_value};

use crate::arena::{Arena, MEMORY_LEN};
use crate::forms::{Family, Form};
use crate::model::{self, DF, IMAGE_LEN, RFLAGS_FIXED, Regs, WRITABLE_END};
use crate::rng::Rng;
use iced_x86::{Code, Instruction, Register};

/// How a register's native value relates to its map value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reloc {
    /// Equal.
    #[default]
    None,
    /// Native = map + NB (64-bit arithmetic).
    Full,
    /// Native low 32 bits = map low 32 bits + NB (mod 2^32); upper 32 bits equal (0x67 forms).
    Low32,
}

impl Reloc {
    /// The native value of map value `v`.
    pub fn apply(self, v: u64, nb: u64) -> u64 {
        match self {
            Reloc::None => v,
            Reloc::Full => v.wrapping_add(nb),
            Reloc::Low32 => (v & !0xFFFF_FFFF) | u64::from((v as u32).wrapping_add(nb as u32)),
        }
    }

    /// The map value of native value `v`.
    pub fn undo(self, v: u64, nb: u64) -> u64 {
        match self {
            Reloc::None => v,
            Reloc::Full => v.wrapping_sub(nb),
            Reloc::Low32 => (v & !0xFFFF_FFFF) | u64::from((v as u32).wrapping_sub(nb as u32)),
        }
    }
}

/// One test case.
#[derive(Clone, Debug)]
pub struct Case {
    /// The instruction with its operand in the map.
    pub map_code: Vec<u8>,
    /// The same instruction with its operand in the native image.
    pub native_code: Vec<u8>,
    /// Registers as the map sees them (rsp included).
    pub regs: [u64; 16],
    /// Input flags: the status flags and DF.
    pub rflags: u64,
    /// How each input register is relocated for the native run.
    pub reloc_in: [Reloc; 16],
    /// How each output register of the native run is mapped back.
    pub reloc_out: [Reloc; 16],
    /// Map bytes the instruction stores: `(offset, length)`.
    pub writes: Vec<(u64, u64)>,
    /// Map offsets of 8-byte values the instruction stores that are relocated pointers.
    pub pointer_data: Vec<u64>,
    /// Landing address of a control transfer; `None`: the next instruction.
    pub target: Option<u64>,
    /// Ordinary memory around the stack top before the run.
    pub memory: [u8; MEMORY_LEN],
    /// The map access's offset (for reports).
    pub offset: u64,
    /// Addressing mode and prefix variant (for statistics).
    pub variant: String,
}

impl Case {
    /// A hand-made case: `encode(addr)` returns the instruction's bytes with its memory operand
    /// at absolute address `addr` (called with map offset `off` and with the native image's
    /// `NB + off`; both encodings must have the same length). `writes` is the map range the
    /// instruction stores to, if any. rsp is set to the private stack.
    pub fn with_operand_at(
        ctx: &Ctx,
        encode: impl Fn(u64) -> Vec<u8>,
        off: u64,
        mut regs: [u64; 16],
        rflags: u64,
        writes: Option<(u64, u64)>,
    ) -> Case {
        let map_code = encode(off);
        let native_code = encode(ctx.nb + off);
        assert_eq!(
            map_code.len(),
            native_code.len(),
            "both encodings must have the same length"
        );
        regs[4] = ctx.stack;
        Case {
            map_code,
            native_code,
            regs,
            rflags: rflags & (model::STATUS | DF),
            reloc_in: [Reloc::None; 16],
            reloc_out: [Reloc::None; 16],
            writes: writes.into_iter().collect(),
            pointer_data: Vec::new(),
            target: None,
            memory: [0; MEMORY_LEN],
            offset: off,
            variant: String::from("hand-made"),
        }
    }
}

/// Encodes `instr` (64-bit mode) at the instruction address of `ctx`.
pub fn encode_at(ctx: &Ctx, instr: &Instruction) -> Vec<u8> {
    instruction::encode(instr, ctx.code).expect("encodable instruction")
}

/// Addresses of the arena a case is built for.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// The native image's address (`NB`).
    pub nb: u64,
    /// Address of the instruction under test.
    pub code: u64,
    /// rsp when the stack is not in the map.
    pub stack: u64,
    /// First byte of the compared ordinary memory.
    pub mem: u64,
    /// fs base.
    pub fs: u64,
    /// gs base.
    pub gs: u64,
    /// Landing addresses for constructed control transfers.
    pub targets: [u64; 4],
}

impl Ctx {
    /// The context of `arena`.
    pub fn of(arena: &Arena) -> Ctx {
        Ctx {
            nb: arena.native_base(),
            code: arena.code_address(),
            stack: arena.stack_top(),
            mem: arena.memory_base(),
            fs: arena.fs_base(),
            gs: arena.gs_base(),
            targets: arena.landing_targets(),
        }
    }

    /// The image of a state, with the rip slot holding the next instruction's address.
    pub fn image(&self, regs: &[u64; 16], rflags: u64, len: usize) -> [u8; IMAGE_LEN] {
        model::image(
            &Regs {
                gpr: *regs,
                rip: self.code + len as u64,
                rflags: (rflags & (model::STATUS | DF)) | RFLAGS_FIXED,
            },
            self.fs,
            self.gs,
        )
    }

    fn segment_base(&self, seg: Register) -> u64 {
        match seg {
            Register::FS => self.fs,
            Register::GS => self.gs,
            _ => 0,
        }
    }
}

/// The highest map offset (exclusive) an access may reach: the whole scalar map for reads,
/// the writable part for writes.
pub fn limit(writes: bool) -> u64 {
    if writes {
        WRITABLE_END
    } else {
        IMAGE_LEN as u64
    }
}

/// The offsets a form is swept over.
pub fn offsets(form: &Form) -> Vec<u64> {
    let lim = limit(form.writes || matches!(form.family, Family::Stack));
    match form.family {
        Family::Explicit => {
            if form.code == Code::Cmpxchg16b_m128 {
                return (0..=lim - 16).step_by(16).collect();
            }
            (0..=lim - form.size).collect()
        }
        Family::Xlat => (0..IMAGE_LEN as u64).collect(),
        Family::String => (0..=IMAGE_LEN as u64 - form.size).collect(),
        Family::Stack => stack::offsets(form),
    }
}

/// Builds a case for `form` at map offset `off`, or `None` if this offset admits no valid state
/// after a few attempts (e.g. a jump target that cannot be placed in the image).
pub fn build(ctx: &Ctx, form: &Form, off: u64, rng: &mut Rng) -> Option<Case> {
    for _ in 0..24 {
        let c = match form.family {
            Family::Explicit => explicit::build(ctx, form, off, rng),
            Family::Stack => stack::build(ctx, form, off, rng),
            Family::String => string::build(ctx, form, off, rng),
            Family::Xlat => xlat::build(ctx, off, rng),
        };
        // A target outside the arena must be unmapped (the run ends with the fetch fault
        // there): never run whatever this process may have mapped at a low address.
        let c = c.filter(|c| {
            c.target
                .is_none_or(|t| ctx.targets.contains(&t) || !crate::run::mapped(t))
        });
        if c.is_some() {
            return c;
        }
    }
    None
}
