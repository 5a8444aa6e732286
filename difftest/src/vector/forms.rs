//! Which vector forms are tested and how a random instance of one is made.

use super::state::Rng;
use iced_x86::{
    Code, EncodingKind, InstructionInfoFactory, MemorySize, Mnemonic, OpAccess,
    OpCodeOperandKind as K, OpKind, Register,
};
use of_core::emulate::table::{Kind, classify};

/// A form under test.
pub struct Form {
    /// The encoding.
    pub code: Code,
    /// Which operand is the memory operand.
    pub mem_op: u32,
    /// How the unmasked form accesses memory (iced-x86's instruction info).
    pub access: OpAccess,
}

impl Form {
    /// Whether the form is EVEX-encoded.
    pub fn evex(&self) -> bool {
        self.code.encoding() == EncodingKind::EVEX
    }
}

fn is_mem_kind(k: K) -> bool {
    matches!(
        k,
        K::mem | K::r32_or_mem | K::r64_or_mem | K::xmm_or_mem | K::ymm_or_mem | K::zmm_or_mem
    )
}

fn is_vector_kind(k: K) -> bool {
    matches!(
        k,
        K::xmm_reg
            | K::xmm_rm
            | K::xmm_vvvv
            | K::xmm_is4
            | K::xmm_or_mem
            | K::ymm_reg
            | K::ymm_rm
            | K::ymm_vvvv
            | K::ymm_is4
            | K::ymm_or_mem
            | K::zmm_reg
            | K::zmm_rm
            | K::zmm_vvvv
            | K::zmm_or_mem
    )
}

/// A random instance of `code` with its memory operand at absolute `disp`. EVEX instances get
/// random registers among all 32, and where the form allows them a random opmask (k1..k7 or
/// none), zeroing-masking and embedded broadcast. The same `r` state gives the same instance
/// for any `disp`.
pub fn instance(code: Code, r: &mut Rng, disp: u64) -> Option<iced_x86::Instruction> {
    let op = code.op_code();
    let evex = code.encoding() == EncodingKind::EVEX;
    let vregs = if evex { 32 } else { 16 };
    let mut instr = iced_x86::Instruction::default();
    instr.set_code(code);
    let gpr_free = |r: &mut Rng| loop {
        let n = r.below(16) as u32;
        if n != 4 {
            return n;
        }
    };
    let mut used_vec = 0u32;
    let mut prev_imm = false;
    for i in 0..op.op_count() {
        let k = op.op_kind(i);
        let mut vector = |r: &mut Rng, base: Register| {
            let mut n = r.below(vregs) as u32;
            if op.requires_unique_reg_nums() {
                while used_vec & (1 << n) != 0 {
                    n = r.below(vregs) as u32;
                }
            }
            used_vec |= 1 << n;
            base + n
        };
        let reg = match k {
            K::xmm_reg | K::xmm_rm | K::xmm_vvvv | K::xmm_is4 => Some(vector(r, Register::XMM0)),
            K::ymm_reg | K::ymm_rm | K::ymm_vvvv | K::ymm_is4 => Some(vector(r, Register::YMM0)),
            K::zmm_reg | K::zmm_rm | K::zmm_vvvv => Some(vector(r, Register::ZMM0)),
            K::k_reg | K::k_rm | K::k_vvvv => Some(Register::K0 + r.below(8) as u32),
            K::kp1_reg => Some(Register::K0 + 2 * r.below(4) as u32),
            K::r32_reg | K::r32_rm | K::r32_vvvv => Some(Register::EAX + gpr_free(r)),
            K::r64_reg | K::r64_rm | K::r64_vvvv => Some(Register::RAX + gpr_free(r)),
            _ => None,
        };
        if let Some(reg) = reg {
            instr.set_op_kind(i, OpKind::Register);
            instr.set_op_register(i, reg);
        } else if is_mem_kind(k) {
            instr.set_op_kind(i, OpKind::Memory);
            instr.set_memory_base(Register::None);
            instr.set_memory_index(Register::None);
            instr.set_memory_index_scale(1);
            instr.set_memory_displacement64(disp);
            instr.set_memory_displ_size(8);
        } else if k == K::imm8 {
            instr.set_op_kind(
                i,
                if prev_imm {
                    OpKind::Immediate8_2nd
                } else {
                    OpKind::Immediate8
                },
            );
            instr.set_immediate_u64(i, r.below(256));
            prev_imm = true;
            continue;
        } else {
            return None;
        }
        prev_imm = false;
    }
    if evex {
        if op.can_use_op_mask_register() && (op.require_op_mask_register() || !r.chance(4)) {
            instr.set_op_mask(Register::K1 + r.below(7) as u32);
            let register_destination =
                instr.op0_kind() == OpKind::Register && !instr.op0_register().is_k();
            if op.can_use_zeroing_masking() && register_destination && r.chance(2) {
                instr.set_zeroing_masking(true);
            }
        }
        if op.can_broadcast() && r.chance(3) {
            instr.set_is_broadcast(true);
        }
    }
    Some(instr)
}

/// Whether this CPU runs `instr` (CPUID and the OS's XCR0).
pub fn supported_on_host(instr: &iced_x86::Instruction) -> bool {
    of_core::cpu::get().supports(instr)
}

/// The CPUID features of `code` this CPU lacks, as text.
fn missing_features(code: Code) -> String {
    let c = of_core::cpu::get();
    let missing: Vec<String> = code
        .cpuid_features()
        .iter()
        .filter(|&&f| !c.has(f))
        .map(|f| format!("{f:?}"))
        .collect();
    missing.join("+")
}

/// The vector forms with a memory operand: tested forms, forms `of` refuses (with the reason)
/// and forms this CPU cannot run (with the missing features).
pub type FormList = (Vec<Form>, Vec<(Code, &'static str)>, Vec<(Code, String)>);

/// Every legacy-SSE, VEX and EVEX form with a memory operand (see [`FormList`]).
pub fn forms() -> FormList {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    let mut skipped = Vec::new();
    let mut r = Rng(1);
    let mut info = InstructionInfoFactory::new();
    for code in Code::values() {
        let op = code.op_code();
        if !op.is_instruction()
            || !op.mode64()
            || !matches!(
                code.encoding(),
                EncodingKind::Legacy | EncodingKind::VEX | EncodingKind::EVEX
            )
        {
            continue;
        }
        let kinds: Vec<K> = (0..op.op_count()).map(|i| op.op_kind(i)).collect();
        let Some(mem_op) = kinds.iter().position(|&k| is_mem_kind(k)) else {
            continue;
        };
        let vector_operand = kinds.iter().any(|&k| is_vector_kind(k));
        let Some(mut instr) = instance(code, &mut r, 0x40) else {
            continue;
        };
        if !supported_on_host(&instr) {
            if vector_operand {
                skipped.push((code, missing_features(code)));
            }
            continue;
        }
        // Classify the unmasked, unbroadcast form.
        instr.set_op_mask(Register::None);
        instr.set_zeroing_masking(false);
        instr.set_is_broadcast(false);
        if op.require_op_mask_register() {
            instr.set_op_mask(Register::K1);
        }
        let kind = classify(&instr);
        let simd_mxcsr = matches!(
            instr.mnemonic(),
            Mnemonic::Ldmxcsr | Mnemonic::Stmxcsr | Mnemonic::Vldmxcsr | Mnemonic::Vstmxcsr
        );
        match kind {
            Kind::Vector(_) | Kind::VectorHost | Kind::EvexMove(_) | Kind::EvexHost => {}
            Kind::Unsupported(why) if vector_operand || simd_mxcsr => {
                refused.push((code, why));
                continue;
            }
            _ => continue, // scalar forms: the differential engine in difftest/ covers them
        }
        let used = info.info(&instr).used_memory().to_vec();
        let Some(access) = used.first().map(|m| m.access()) else {
            continue;
        };
        ok.push(Form {
            code,
            mem_op: mem_op as u32,
            access,
        });
    }
    (ok, refused, skipped)
}

/// The memory operand's size in bytes (the element for a broadcast).
pub fn mem_size(instr: &iced_x86::Instruction) -> u64 {
    let s = instr.memory_size();
    if s == MemorySize::Unknown {
        0
    } else {
        s.size() as u64
    }
}

/// Whether the bytes `off..off + size` may be written by a case: writable map bytes, never the
/// rsp slot (the run needs its stack) or the rip slot (a write is a jump).
pub fn writable(off: u64, size: u64) -> bool {
    let end = off + size;
    (end <= 0x20 || (off >= 0x28 && end <= 0x80) || (off >= 0x88 && end <= 0x90))
        || (off >= 0x100 && end <= 0x204)
}

/// Whether the bytes `off..off + size` may be read: mapped bytes.
pub fn readable(off: u64, size: u64) -> bool {
    let end = off + size;
    end <= 0xA0 || (off >= 0x100 && end <= 0x204)
}

/// A random offset for an operand of `size` bytes that `write`s or reads the map, all of whose
/// bytes are mapped (and writable for a store).
pub fn offset(r: &mut Rng, size: u64, write: bool) -> u64 {
    loop {
        let off = match r.below(3) {
            0 => r.below(0x204),
            1 => r.below(0x204) & !(size.max(1) - 1),
            _ => r.below(0x204) & !15,
        };
        let ok = if write {
            writable(off, size)
        } else {
            readable(off, size)
        };
        if ok {
            return off;
        }
    }
}

/// Whether an access may write.
pub fn is_write(a: OpAccess) -> bool {
    matches!(
        a,
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

/// The instruction encoded at `ip`, if iced-x86 can encode it.
pub fn encode(instr: &iced_x86::Instruction, ip: u64) -> Option<Vec<u8>> {
    let mut e = iced_x86::Encoder::new(64);
    e.encode(instr, ip).ok()?;
    Some(e.take_buffer())
}

/// Intel-syntax text of an instruction.
pub fn iced_text(i: &iced_x86::Instruction) -> String {
    use iced_x86::Formatter;
    let mut f = iced_x86::IntelFormatter::new();
    let mut s = String::new();
    f.format(i, &mut s);
    s
}
