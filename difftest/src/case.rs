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

use crate::arena::{Arena, MEMORY_LEN};
use crate::forms::{Family, Form, branch16_honoured, is_branch16, is_memory_kind};
use crate::model::{self, DF, IMAGE_LEN, RFLAGS_FIXED, Regs, WRITABLE_END};
use crate::rng::Rng;
use iced_x86::{
    Code, Encoder, Instruction, InstructionInfoFactory, Mnemonic, OpCodeOperandKind as K, OpKind,
    Register,
};

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
    encode(instr, ctx.code).expect("encodable instruction")
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

/// 8-bit registers iced-x86 can encode (ah..bh only without REX).
pub const R8: [Register; 20] = [
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::AH,
    Register::CH,
    Register::DH,
    Register::BH,
    Register::SPL,
    Register::BPL,
    Register::SIL,
    Register::DIL,
    Register::R8L,
    Register::R9L,
    Register::R10L,
    Register::R11L,
    Register::R12L,
    Register::R13L,
    Register::R14L,
    Register::R15L,
];

const R16: [Register; 16] = [
    Register::AX,
    Register::CX,
    Register::DX,
    Register::BX,
    Register::SP,
    Register::BP,
    Register::SI,
    Register::DI,
    Register::R8W,
    Register::R9W,
    Register::R10W,
    Register::R11W,
    Register::R12W,
    Register::R13W,
    Register::R14W,
    Register::R15W,
];
const R32: [Register; 16] = [
    Register::EAX,
    Register::ECX,
    Register::EDX,
    Register::EBX,
    Register::ESP,
    Register::EBP,
    Register::ESI,
    Register::EDI,
    Register::R8D,
    Register::R9D,
    Register::R10D,
    Register::R11D,
    Register::R12D,
    Register::R13D,
    Register::R14D,
    Register::R15D,
];
const R64: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// The `size`-byte view of general-purpose register `n` (encoding order; for bytes, 4..8 are
/// spl..dil, not ah..bh).
pub fn gpr(n: usize, size: u64) -> Register {
    match size {
        1 => {
            if n < 4 {
                R8[n]
            } else {
                R8[n + 4]
            }
        }
        2 => R16[n],
        4 => R32[n],
        _ => R64[n],
    }
}

/// Encoding number of the 64-bit register behind a GPR view (ah..bh: rax..rbx).
pub fn full(reg: Register) -> Option<usize> {
    match reg {
        Register::AH | Register::CH | Register::DH | Register::BH => {
            Some((reg as usize) - (Register::AH as usize))
        }
        r if r.is_gpr() => Some(r.full_register().number()),
        _ => None,
    }
}

fn random_reg(rng: Option<&mut Rng>, size: u64) -> Register {
    match rng {
        None => gpr(1, size),
        Some(rng) => {
            if size == 1 {
                rng.pick(&R8)
            } else {
                gpr(rng.below(16) as usize, size)
            }
        }
    }
}

/// Fills the non-memory operands of `instr` (already `new_instruction(code)`) from the
/// opcode's operand kinds; memory operands get `OpKind::Memory` (fields set by the caller).
/// Returns the index of the memory operand.
fn fill_operands(instr: &mut Instruction, mut rng: Option<&mut Rng>) -> Option<Option<u32>> {
    let op = instr.code().op_code();
    let mut mem = None;
    let mut prev_imm = false;
    for i in 0..op.op_count() {
        let k = op.op_kind(i);
        let imm = |instr: &mut Instruction, kind: OpKind, bits: u32, rng: &mut Option<&mut Rng>| {
            instr.set_op_kind(i, kind);
            let v = match rng {
                Some(r) => r.immediate(bits),
                None => 1,
            };
            instr.set_immediate_u64(i, v);
        };
        let is_imm = matches!(
            k,
            K::imm8
                | K::imm8_const_1
                | K::imm8sex16
                | K::imm8sex32
                | K::imm8sex64
                | K::imm16
                | K::imm32
                | K::imm32sex64
                | K::imm64
        );
        match k {
            k if is_memory_kind(k) => {
                instr.set_op_kind(i, OpKind::Memory);
                mem = Some(i);
            }
            K::r8_reg | K::r8_opcode => {
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, random_reg(rng.as_deref_mut(), 1));
            }
            K::r16_reg | K::r16_reg_mem | K::r16_rm | K::r16_opcode => {
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, random_reg(rng.as_deref_mut(), 2));
            }
            K::r32_reg | K::r32_reg_mem | K::r32_rm | K::r32_opcode | K::r32_vvvv => {
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, random_reg(rng.as_deref_mut(), 4));
            }
            K::r64_reg | K::r64_reg_mem | K::r64_rm | K::r64_opcode | K::r64_vvvv => {
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, random_reg(rng.as_deref_mut(), 8));
            }
            K::al | K::cl | K::ax | K::dx | K::eax | K::rax => {
                let r = match k {
                    K::al => Register::AL,
                    K::cl => Register::CL,
                    K::ax => Register::AX,
                    K::dx => Register::DX,
                    K::eax => Register::EAX,
                    _ => Register::RAX,
                };
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, r);
            }
            K::imm8 if prev_imm => imm(instr, OpKind::Immediate8_2nd, 8, &mut rng),
            K::imm8 => imm(instr, OpKind::Immediate8, 8, &mut rng),
            K::imm8_const_1 => {
                instr.set_op_kind(i, OpKind::Immediate8);
                instr.set_immediate_u64(i, 1);
            }
            K::imm8sex16 => imm(instr, OpKind::Immediate8to16, 8, &mut rng),
            K::imm8sex32 => imm(instr, OpKind::Immediate8to32, 8, &mut rng),
            K::imm8sex64 => imm(instr, OpKind::Immediate8to64, 8, &mut rng),
            K::imm16 => imm(instr, OpKind::Immediate16, 16, &mut rng),
            K::imm32 => imm(instr, OpKind::Immediate32, 32, &mut rng),
            K::imm32sex64 => imm(instr, OpKind::Immediate32to64, 32, &mut rng),
            K::imm64 => imm(instr, OpKind::Immediate64, 64, &mut rng),
            K::br64_4 | K::br64_1 => instr.set_op_kind(i, OpKind::NearBranch64),
            _ => return None,
        }
        prev_imm = is_imm;
    }
    Some(mem)
}

/// See [`crate::forms::sample`].
pub fn sample_instruction(code: Code) -> Option<Instruction> {
    let mut instr = new_instruction(code);
    let mem = fill_operands(&mut instr, None)?;
    if mem.is_some() {
        set_memory(
            &mut instr,
            Register::None,
            Register::None,
            1,
            0x10,
            8,
            Register::None,
        );
    }
    Some(instr)
}

/// An instruction of `code` with no operands filled in yet.
fn new_instruction(code: Code) -> Instruction {
    let mut i = Instruction::default();
    i.set_code(code);
    i
}

fn set_memory(
    instr: &mut Instruction,
    base: Register,
    index: Register,
    scale: u32,
    disp: u64,
    displ_size: u32,
    seg: Register,
) {
    instr.set_memory_base(base);
    instr.set_memory_index(index);
    instr.set_memory_index_scale(scale);
    instr.set_memory_displacement64(disp);
    instr.set_memory_displ_size(displ_size);
    instr.set_segment_prefix(seg);
}

fn encode(instr: &Instruction, ip: u64) -> Option<Vec<u8>> {
    let mut e = Encoder::new(64);
    e.encode(instr, ip).ok()?;
    Some(e.take_buffer())
}

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

/// The random parts of an explicit form's instruction other than the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
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
    fn label(self) -> &'static str {
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
type MemSpec = (Register, Register, u64, u32, Register);

/// Byte-level prefix variants applied to both encodings alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prefix {
    None,
    /// A REX prefix (0x40) where none was needed.
    Rex,
    /// An extra, ignored REX prefix before the effective one (or before a redundant 0x40).
    Rex2,
    /// Ignored segment prefixes up to exactly 15 bytes.
    Pad15,
}

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

/// Registers (by encoding number) an instruction reads or writes, explicitly or implicitly.
fn used_registers(instr: &Instruction) -> u16 {
    let mut f = InstructionInfoFactory::new();
    let mut set = 0u16;
    for u in f.info(instr).used_registers() {
        if let Some(n) = full(u.register()) {
            set |= 1 << n;
        }
    }
    set
}

fn random_state(rng: &mut Rng, ctx: &Ctx) -> ([u64; 16], u64) {
    let mut regs: [u64; 16] = std::array::from_fn(|_| rng.value());
    regs[4] = ctx.stack;
    (regs, rng.flags())
}

fn random_memory(rng: &mut Rng) -> [u8; MEMORY_LEN] {
    let mut m = [0u8; MEMORY_LEN];
    for c in m.chunks_mut(8) {
        let v = rng.value().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    m
}

/// Makes the image bytes at `off` equal `bytes` by changing GPR bytes. Bytes in the rip, rflags,
/// fs and gs slots cannot change: returns `false` unless they already match.
pub fn force_image(
    ctx: &Ctx,
    regs: &mut [u64; 16],
    rflags: u64,
    len: usize,
    off: u64,
    bytes: &[u8],
) -> bool {
    let image = ctx.image(regs, rflags, len);
    for (i, &b) in bytes.iter().enumerate() {
        let a = off as usize + i;
        if a >= IMAGE_LEN {
            return false;
        }
        if a < 0x80 {
            let n = a / 8;
            let s = 8 * (a % 8);
            regs[n] = (regs[n] & !(0xFF << s)) | (u64::from(b) << s);
        } else if image[a] != b {
            return false;
        }
    }
    true
}

/// The `size`-byte little-endian value at `off` of the image of a state.
pub fn image_value(
    ctx: &Ctx,
    regs: &[u64; 16],
    rflags: u64,
    len: usize,
    off: u64,
    size: u64,
) -> u64 {
    let image = ctx.image(regs, rflags, len);
    let mut b = [0u8; 8];
    let n = size.min(8) as usize;
    b[..n].copy_from_slice(&image[off as usize..off as usize + n]);
    u64::from_le_bytes(b)
}

fn set_low(reg: &mut u64, size: u64, v: u64) {
    let mask = if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    };
    *reg = (*reg & !mask) | (v & mask);
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

/// A 16-bit branch target: half the time in page 0 (where `of`'s handler sees the fetch fault
/// first and passes it on), else anywhere in the low 64 KiB.
fn target16(rng: &mut Rng) -> u64 {
    if rng.one_in(2) {
        rng.below(0x1000)
    } else {
        rng.below(0x1_0000)
    }
}

/// Variant label of a 0x66 near branch on this CPU.
fn branch16_label() -> &'static str {
    if branch16_honoured() {
        ", 16-bit (AMD)"
    } else {
        ", 0x66 ignored (Intel)"
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
        Family::Stack => stack_offsets(form),
    }
}

fn stack_offsets(form: &Form) -> Vec<u64> {
    use Mnemonic as M;
    let n = form.size;
    match form.mnemonic {
        // rsp after the push must stay in the writable map.
        M::Push | M::Pushf | M::Pushfq | M::Call | M::Enter => (n..=WRITABLE_END).collect(),
        // rbp for leave, rsp for the rest: the read must lie in the map.
        _ => (0..=IMAGE_LEN as u64 - n).collect(),
    }
}

/// Builds a case for `form` at map offset `off`, or `None` if this offset admits no valid state
/// after a few attempts (e.g. a jump target that cannot be placed in the image).
pub fn build(ctx: &Ctx, form: &Form, off: u64, rng: &mut Rng) -> Option<Case> {
    for _ in 0..24 {
        let c = match form.family {
            Family::Explicit => explicit(ctx, form, off, rng),
            Family::Stack => stack(ctx, form, off, rng),
            Family::String => string(ctx, form, off, rng),
            Family::Xlat => xlat(ctx, off, rng),
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

fn explicit(ctx: &Ctx, form: &Form, off: u64, rng: &mut Rng) -> Option<Case> {
    let code = form.code;
    let mut instr = new_instruction(code);
    let mem_op = fill_operands(&mut instr, Some(rng))??;
    let moffs = code.op_code().op_kind(mem_op) == K::mem_offs;
    let mnemonic = form.mnemonic;
    let lockable = code.op_code().can_use_lock_prefix() && form.writes && mem_op == 0;
    if lockable && rng.one_in(3) {
        instr.set_has_lock_prefix(true);
    }
    let mode = if moffs {
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
    };
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
    let nb = ctx.nb;
    let (map_mem, native_mem): (MemSpec, MemSpec) = match mode {
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
    };
    let mut map_instr = instr;
    set_memory(
        &mut map_instr,
        map_mem.0,
        map_mem.1,
        if mode == Mode::BaseIndex { scale } else { 1 },
        map_mem.2,
        map_mem.3,
        map_mem.4,
    );
    let mut native_instr = instr;
    set_memory(
        &mut native_instr,
        native_mem.0,
        native_mem.1,
        if mode == Mode::BaseIndex { scale } else { 1 },
        native_mem.2,
        native_mem.3,
        native_mem.4,
    );
    // call/jmp r/m16 where the CPU honours 0x66 (AMD): the target is the 2 bytes at the operand,
    // chosen once the state is known (below); elsewhere a landing address in the arena.
    let branch16 = is_branch16(code);
    let amd16 = branch16 && branch16_honoured();
    let target = if matches!(mnemonic, Mnemonic::Jmp | Mnemonic::Call) && !amd16 {
        Some(rng.pick(&ctx.targets))
    } else {
        None
    };
    let map_code = encode(&map_instr, ctx.code)?;
    let native_code = encode(&native_instr, ctx.code)?;
    if map_code.len() != native_code.len() {
        return None;
    }
    // Prefix variants.
    // (Not with rip-relative operands: a longer instruction moves the address.)
    let prefix = match rng.below(12) {
        _ if mode == Mode::Rip => Prefix::None,
        0 => Prefix::Rex,
        1 => Prefix::Rex2,
        2 => Prefix::Pad15,
        _ => Prefix::None,
    };
    let extra_rex = 0x40 | rng.below(16) as u8;
    let pad = rng.pick(&[0x2E, 0x3E, 0x26, 0x36]);
    let (map_code, native_code, prefix) = match (
        apply_prefix(prefix, &map_code, extra_rex, pad),
        apply_prefix(prefix, &native_code, extra_rex, pad),
    ) {
        (Some(a), Some(b)) if a.len() == b.len() => (a, b, prefix),
        _ => (map_code, native_code, Prefix::None),
    };
    let len = map_code.len();

    // The state.
    let (mut regs, rflags) = random_state(rng, ctx);
    let size = form.size;
    let addr_mask = if matches!(mode, Mode::Addr32 | Mode::Moffs32 | Mode::Abs32) {
        0xFFFF_FFFF
    } else {
        u64::MAX
    };
    let place = |regs: &mut [u64; 16]| match mode {
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
    };
    place(&mut regs);
    // The effective address from the state, as the CPU computes it.
    let ea = |regs: &[u64; 16]| -> u64 {
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
    };
    let mut writes_at = off;
    // Mnemonic-specific state.
    match mnemonic {
        // Mostly states whose quotient fits; the rest raise #DE (SIGFPE on both sides).
        Mnemonic::Div | Mnemonic::Idiv if !rng.one_in(4) => {
            let signed = mnemonic == Mnemonic::Idiv;
            if size == 1 {
                let al = regs[0] & 0xFF;
                let ah = if signed && al & 0x80 != 0 { 0xFF } else { 0 };
                regs[0] = (regs[0] & !0xFF00) | (ah << 8);
            } else {
                let bits = 8 * size;
                let a = regs[0]
                    & if bits == 64 {
                        u64::MAX
                    } else {
                        (1 << bits) - 1
                    };
                let neg = signed && (a >> (bits - 1)) & 1 == 1;
                set_low(&mut regs[2], size, if neg { u64::MAX } else { 0 });
            }
        }
        // Half the states compare equal (a few rounds settle a destination aliasing rax).
        Mnemonic::Cmpxchg if rng.one_in(2) => {
            for _ in 0..3 {
                let v = image_value(ctx, &regs, rflags, len, off, size);
                set_low(&mut regs[0], size, v);
                place(&mut regs);
            }
        }
        Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b if rng.one_in(2) => {
            let half = size / 2;
            for _ in 0..3 {
                let lo = image_value(ctx, &regs, rflags, len, off, half);
                let hi = image_value(ctx, &regs, rflags, len, off + half, half);
                set_low(&mut regs[0], half, lo);
                set_low(&mut regs[2], half, hi);
                place(&mut regs);
            }
        }
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
            if instr.op1_kind() == OpKind::Register =>
        {
            // The register bit offset moves the access by whole operands (SDM: BT, "bit
            // base"): pick the operand the access lands on, inside the map, then the offset.
            let lim = limit(form.writes);
            let lo = -((off / size) as i64);
            let hi = ((lim - size - off) / size) as i64;
            let k = lo + rng.below((hi - lo + 1) as u64) as i64;
            let bits = 8 * size as i64;
            let bit = k * bits + rng.below(bits as u64) as i64;
            let r = full(instr.op1_register())?;
            set_low(&mut regs[r], size, bit as u64);
            writes_at = off.wrapping_add((k * size as i64) as u64);
            place(&mut regs);
        }
        // A selector of this process (user code/data) half the time, so the check succeeds.
        Mnemonic::Lar | Mnemonic::Lsl | Mnemonic::Verr | Mnemonic::Verw if rng.one_in(2) => {
            let sel: u64 = rng.pick(&[0x2B, 0x33, 0x23]);
            force_image(ctx, &mut regs, rflags, len, off, &sel.to_le_bytes()[..2]);
            place(&mut regs);
        }
        _ => {}
    }
    if let Some(t) = target {
        if !force_image(
            ctx,
            &mut regs,
            rflags,
            len,
            off,
            &t.to_le_bytes()[..size as usize],
        ) {
            return None;
        }
        place(&mut regs);
        if image_value(ctx, &regs, rflags, len, off, size) != t || regs[4] != ctx.stack {
            return None;
        }
    }
    if ea(&regs) != off {
        return None;
    }
    let target = if amd16 {
        // A 16-bit target (often in page 0): put it in the operand's bytes when they are GPR
        // bytes the addressing does not need, else take what the image holds there.
        let want = target16(rng);
        let mut r = regs;
        if force_image(ctx, &mut r, rflags, len, off, &want.to_le_bytes()[..2]) {
            place(&mut r);
            if ea(&r) == off && r[4] == ctx.stack {
                regs = r;
            }
        }
        Some(image_value(ctx, &regs, rflags, len, off, 2))
    } else {
        target
    };
    let mut variant = mode.label().to_string();
    if map_instr.has_lock_prefix() {
        variant.push_str("+lock");
    }
    match prefix {
        Prefix::Rex => variant.push_str("+rex"),
        Prefix::Rex2 => variant.push_str("+rex2"),
        Prefix::Pad15 => variant.push_str("+15byte"),
        Prefix::None => {}
    }
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

/// Where a 16-bit branch target is read from, once the encoding's length is known.
#[derive(Clone, Copy)]
enum TargetAt {
    /// The image at this map offset.
    Image(u64),
    /// The compared ordinary memory at this index.
    Memory(u64),
}

/// A case for a stack instruction with rsp (leave: rbp) at map offset `v`.
fn stack(ctx: &Ctx, form: &Form, v: u64, rng: &mut Rng) -> Option<Case> {
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum StrOp {
    Movs,
    Cmps,
    Stos,
    Lods,
    Scas,
}

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
fn string(ctx: &Ctx, form: &Form, p: u64, rng: &mut Rng) -> Option<Case> {
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

/// A case for `xlat` reading map offset `p` (= rbx + al).
fn xlat(ctx: &Ctx, p: u64, rng: &mut Rng) -> Option<Case> {
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
