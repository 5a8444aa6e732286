//! The catalogue: which iced-x86 encodings (`Code` values) can touch the map, which of them are
//! general-purpose integer instructions, and how each integer form is exercised.
//!
//! Selection (also printed at the top of the coverage table): every `Code` that is an
//! instruction, is valid in 64-bit mode, has a legacy, VEX or EVEX encoding, and either has an explicit
//! memory operand (ModRM memory, `moffs`, VSIB, MIB/SIB-memory), an implicit `[rsi]`/`[rdi]`/
//! `[rbx + al]` operand (string instructions, `xlat`), or an implicit stack access (iced-x86's
//! `is_stack_instruction`).

use crate::cpu::Features;
use iced_x86::{
    Code, CpuidFeature, EncodingKind, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpCodeOperandKind as K,
};

/// What kind of instruction a selected `Code` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// A general-purpose integer instruction a user-mode program can execute: must be emulated
    /// and is differential-tested.
    Integer,
    /// Names a memory operand but never accesses it (lea, nop r/m, prefetch and hint nops): it
    /// cannot fault on the map, so it is never a register access.
    NoAccess,
    /// x87 memory operands.
    X87,
    /// SSE/AVX/MMX, mask, bound and tile registers, and processor-state save areas.
    Vector,
    /// Segment selectors (mov Sreg, lfs/lgs/lss, push/pop fs/gs), far branches and far returns.
    Segment,
    /// Privileged, I/O and descriptor-table instructions (#GP at CPL 3 before any access, or
    /// system state the map does not model).
    System,
    /// Always #UD (ud0/ud1), or the host CPU lacks the extension (#UD before any access).
    Unavailable,
}

impl Category {
    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Category::Integer => "integer",
            Category::NoAccess => "no memory access",
            Category::X87 => "x87",
            Category::Vector => "vector / state",
            Category::Segment => "segment / far",
            Category::System => "system",
            Category::Unavailable => "not on this CPU",
        }
    }
}

/// How an integer form is exercised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// The explicit memory operand (ModRM or moffs) in the map, in every addressing mode and
    /// prefix variant; rsp on a private stack.
    Explicit,
    /// push/pop/call/ret/enter/leave/pushf/popf with rsp (leave: rbp) in the map.
    Stack,
    /// movs/cmps/stos/lods/scas with rsi and/or rdi in the map, with and without rep.
    String,
    /// xlat with rbx + al in the map.
    Xlat,
}

impl Family {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Family::Explicit => "explicit",
            Family::Stack => "stack",
            Family::String => "string",
            Family::Xlat => "xlat",
        }
    }
}

/// One integer instruction form.
#[derive(Clone, Debug)]
pub struct Form {
    /// The encoding.
    pub code: Code,
    /// How it is exercised.
    pub family: Family,
    /// Its mnemonic.
    pub mnemonic: Mnemonic,
    /// Bytes of the map access (memory operand, stack slot or string element).
    pub size: u64,
    /// Whether the explicit memory operand is written (iced-x86's operand access).
    pub writes: bool,
    /// iced-x86's description, e.g. `ADD r/m32, imm8`.
    pub name: String,
    /// iced-x86's opcode string, e.g. `o32 83 /0 ib`.
    pub opcode: String,
}

impl Form {
    /// `NAME (OPCODE) [family]`.
    pub fn title(&self) -> String {
        format!("{} ({}) [{}]", self.name, self.opcode, self.family.label())
    }
}

/// Whether `k` is an explicit memory operand kind.
pub fn is_memory_kind(k: K) -> bool {
    matches!(
        k,
        K::mem_offs
            | K::mem
            | K::mem_mpx
            | K::mem_mib
            | K::mem_vsib32x
            | K::mem_vsib64x
            | K::mem_vsib32y
            | K::mem_vsib64y
            | K::mem_vsib32z
            | K::mem_vsib64z
            | K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r32_or_mem_mpx
            | K::r64_or_mem
            | K::r64_or_mem_mpx
            | K::mm_or_mem
            | K::xmm_or_mem
            | K::ymm_or_mem
            | K::zmm_or_mem
            | K::bnd_or_mem_mpx
            | K::k_or_mem
            | K::sibmem
    )
}

fn is_string_kind(k: K) -> bool {
    matches!(k, K::seg_rSI | K::es_rDI | K::seg_rDI | K::seg_rBX_al)
}

fn is_vector_kind(k: K) -> bool {
    matches!(
        k,
        K::mem_mpx
            | K::mem_mib
            | K::mem_vsib32x
            | K::mem_vsib64x
            | K::mem_vsib32y
            | K::mem_vsib64y
            | K::mem_vsib32z
            | K::mem_vsib64z
            | K::r32_or_mem_mpx
            | K::r64_or_mem_mpx
            | K::mm_or_mem
            | K::xmm_or_mem
            | K::ymm_or_mem
            | K::zmm_or_mem
            | K::bnd_or_mem_mpx
            | K::k_or_mem
            | K::k_reg
            | K::kp1_reg
            | K::k_rm
            | K::k_vvvv
            | K::mm_reg
            | K::mm_rm
            | K::xmm_reg
            | K::xmm_rm
            | K::xmm_vvvv
            | K::xmmp3_vvvv
            | K::xmm_is4
            | K::xmm_is5
            | K::ymm_reg
            | K::ymm_rm
            | K::ymm_vvvv
            | K::ymm_is4
            | K::ymm_is5
            | K::zmm_reg
            | K::zmm_rm
            | K::zmm_vvvv
            | K::zmmp3_vvvv
            | K::bnd_reg
            | K::tmm_reg
            | K::tmm_rm
            | K::tmm_vvvv
            | K::sibmem
    )
}

/// Extensions whose instructions work on vector, mask, tile or key state (or save it).
fn is_vector_feature(f: CpuidFeature) -> bool {
    let name = format!("{f:?}");
    let prefixes = [
        "SSE",
        "AVX",
        "AMX",
        "MMX",
        "XSAVE",
        "AES",
        "SHA",
        "FMA",
        "D3NOW",
        "CYRIX_D3NOW",
    ];
    let exact = [
        "FXSR",
        "KL",
        "WIDE_KL",
        "MPX",
        "SM3",
        "SM4",
        "F16C",
        "GFNI",
        "PCLMULQDQ",
        "VPCLMULQDQ",
        "VAES",
        "XOP",
    ];
    f != CpuidFeature::SSE4_2
        && (prefixes.iter().any(|p| name.starts_with(p)) || exact.contains(&name.as_str()))
}

/// Whether `code` is in the selection (see the module docs).
pub fn selected(code: Code) -> bool {
    let op = code.op_code();
    if !op.is_instruction()
        || !op.mode64()
        || !matches!(
            op.encoding(),
            EncodingKind::Legacy | EncodingKind::VEX | EncodingKind::EVEX
        )
    {
        return false;
    }
    let kinds = op.op_kinds();
    kinds
        .iter()
        .any(|&k| is_memory_kind(k) || is_string_kind(k))
        || op.is_stack_instruction()
}

/// Every selected `Code`.
pub fn selection() -> Vec<Code> {
    Code::values().filter(|&c| selected(c)).collect()
}

/// A sample instruction of `code` with its memory operand at `[0x10]` and the first register
/// of each class, for asking iced-x86 how the operand is accessed.
pub fn sample(code: Code) -> Option<Instruction> {
    crate::case::sample_instruction(code)
}

/// Whether the sample's explicit memory operand is written.
fn memory_access(code: Code) -> Option<OpAccess> {
    let instr = sample(code)?;
    let op = (0..instr.op_count()).find(|&i| instr.op_kind(i) == iced_x86::OpKind::Memory)?;
    let mut f = InstructionInfoFactory::new();
    Some(f.info(&instr).op_access(op))
}

/// Whether `access` stores to memory (conditional stores count: cmpxchg always writes).
pub fn is_write(access: OpAccess) -> bool {
    matches!(
        access,
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

/// The category of a selected `code`, with a reason for the non-integer ones.
pub fn classify(code: Code, features: &Features) -> (Category, &'static str) {
    use Mnemonic as M;
    let op = code.op_code();
    let kinds = op.op_kinds();
    let cpuid = code.cpuid_features();
    let mnemonic = code.mnemonic();
    if matches!(mnemonic, M::Ud0 | M::Ud1) {
        return (Category::Unavailable, "always #UD");
    }
    if cpuid.iter().any(|f| {
        matches!(
            f,
            CpuidFeature::FPU | CpuidFeature::FPU287 | CpuidFeature::FPU387
        )
    }) || kinds.iter().any(|k| matches!(k, K::st0 | K::sti_opcode))
    {
        return (Category::X87, "x87 memory operands are not mapped");
    }
    if kinds.iter().any(|&k| is_vector_kind(k)) || cpuid.iter().any(|&f| is_vector_feature(f)) {
        return (
            Category::Vector,
            "vector registers and state save areas (vector issue)",
        );
    }
    if kinds.iter().any(|k| {
        matches!(
            k,
            K::seg_reg | K::es | K::cs | K::ss | K::ds | K::fs | K::gs | K::farbr2_2 | K::farbr4_2
        )
    }) || matches!(
        mnemonic,
        M::Lfs
            | M::Lgs
            | M::Lss
            | M::Retf
            | M::Iret
            | M::Iretd
            | M::Iretq
            | M::Uiret
            | M::Lkgs
            | M::Eretu
            | M::Erets
    ) || matches!(
        code,
        Code::Call_m1616
            | Code::Call_m1632
            | Code::Call_m1664
            | Code::Jmp_m1616
            | Code::Jmp_m1632
            | Code::Jmp_m1664
    ) {
        return (
            Category::Segment,
            "segment selectors and far control transfers are not mapped",
        );
    }
    if op.is_privileged()
        || !op.cpl3()
        || op.is_input_output()
        || matches!(
            mnemonic,
            M::Sgdt
                | M::Sidt
                | M::Sldt
                | M::Str
                | M::Smsw
                | M::Lgdt
                | M::Lidt
                | M::Lldt
                | M::Ltr
                | M::Lmsw
                | M::Wrssd
                | M::Wrssq
                | M::Wrussd
                | M::Wrussq
                | M::Rstorssp
                | M::Clrssbsy
        )
    {
        return (
            Category::System,
            "privileged, I/O or descriptor-table instruction",
        );
    }
    // Hint NOPs (0F 0D, 0F 18..0F 1F) and prefetches never fault, whatever iced-x86 says about
    // the operand; lea computes an address.
    let hint = matches!(
        mnemonic,
        M::Nop
            | M::Reservednop
            | M::Lea
            | M::Prefetch
            | M::Prefetchw
            | M::Prefetchwt1
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Prefetchit0
            | M::Prefetchit1
    );
    if hint || memory_access(code) == Some(OpAccess::NoMemAccess) {
        return (Category::NoAccess, "the memory operand is not accessed");
    }
    if !cpuid.iter().all(|&f| features.has(f)) {
        return (Category::Unavailable, "the host CPU lacks the extension");
    }
    (Category::Integer, "")
}

/// Near branches and returns with a 16-bit operand size (0x66) that can touch the map: Intel
/// ignores the prefix in 64-bit mode (they are the 64-bit forms with a redundant prefix; `66 E8`
/// still takes a rel32), AMD honours it (2-byte pops and pushes, a 16-bit target zero-extended
/// into rip, which lies in the low 64 KiB, so the next fetch faults there). The CPU the tests run
/// on decides which ([`branch16_honoured`]); the cases are built for it and the native run is
/// the oracle either way.
pub fn is_branch16(code: Code) -> bool {
    matches!(
        code,
        Code::Call_rel16 | Code::Call_rm16 | Code::Jmp_rm16 | Code::Retnw | Code::Retnw_imm16
    )
}

/// Whether this CPU gives 0x66-prefixed near branches a 16-bit operand size (AMD) rather than
/// ignoring the prefix (Intel). From CPUID through `of_core` (the vendor its decoder follows);
/// a wrong answer shows up as mismatches against the native runs, not as a silent pass.
pub fn branch16_honoured() -> bool {
    of_core::decode::Vendor::host() == of_core::decode::Vendor::Amd
}

/// The integer forms, by family, for the codes of `codes` that are integer on this host.
pub fn integer_forms(codes: &[Code], features: &Features) -> Vec<Form> {
    let mut out = Vec::new();
    for &code in codes {
        if classify(code, features).0 != Category::Integer {
            continue;
        }
        let op = code.op_code();
        let kinds = op.op_kinds();
        let explicit = kinds.iter().any(|&k| is_memory_kind(k));
        let string = kinds.iter().any(|&k| is_string_kind(k));
        let mut families = Vec::new();
        if code == Code::Xlat_m8 {
            families.push(Family::Xlat);
        } else if string {
            families.push(Family::String);
        } else {
            if explicit {
                families.push(Family::Explicit);
            }
            if op.is_stack_instruction() {
                families.push(Family::Stack);
            }
        }
        let access = memory_access(code);
        for family in families {
            let size = match family {
                // On Intel the 0x66 of a near branch is ignored: 8-byte target and stack slot.
                _ if is_branch16(code) && !branch16_honoured() => 8,
                Family::Stack => stack_size(code),
                Family::Explicit => match sample(code) {
                    Some(s) => s.memory_size().size() as u64,
                    None => continue,
                },
                Family::String | Family::Xlat => op.memory_size().size() as u64,
            };
            out.push(Form {
                code,
                family,
                mnemonic: code.mnemonic(),
                size,
                writes: access.is_some_and(is_write),
                name: op.instruction_string().to_string(),
                opcode: op.op_code_string().to_string(),
            });
        }
    }
    out
}

/// Bytes one stack slot of a stack instruction takes (2 with a 16-bit operand size; for the
/// near branches of [`is_branch16`] only where the CPU honours 0x66, see [`integer_forms`]).
pub fn stack_size(code: Code) -> u64 {
    match code {
        Code::Push_r16
        | Code::Pop_r16
        | Code::Push_imm16
        | Code::Pushw_imm8
        | Code::Pop_rm16
        | Code::Push_rm16
        | Code::Pushfw
        | Code::Popfw
        | Code::Enterw_imm16_imm8
        | Code::Leavew
        | Code::Retnw
        | Code::Retnw_imm16
        | Code::Call_rel16
        | Code::Call_rm16 => 2,
        _ => 8,
    }
}

/// What the emulator does with one encoding of a non-integer category, probed with a sample
/// instruction whose memory operand is at `[0x10]` (rax..rcx bytes) on an in-memory register
/// file (no faults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Emulated.
    Emulated,
    /// Refused with this reason (the SPEC §4 diagnostic's reason).
    Refused(String),
    /// Not a register access by the emulator's own ownership rules (with the reason).
    NotOurs(String),
    /// Raises this exception.
    Raises(String),
    /// No sample could be built.
    NoSample,
    /// Not probed: the CPU lacks these extensions.
    NotProbed(String),
    /// Not probed: privileged or I/O, #GP at CPL 3 before any memory access.
    Privileged,
}

impl Probe {
    /// A short description for tables.
    pub fn describe(&self) -> String {
        match self {
            Probe::Emulated => String::from("emulated (not differential-tested here)"),
            Probe::Refused(r) => format!("refused: \"{r}\""),
            Probe::NotOurs(why) => format!("not a register access ({why})"),
            Probe::Raises(e) => format!("raises {e}"),
            Probe::NoSample => String::from("(no sample)"),
            Probe::NotProbed(f) => format!("not probed (CPU lacks {f})"),
            Probe::Privileged => String::from(
                "privileged or I/O: #GP at CPL 3 before any access, never a page fault on the map",
            ),
        }
    }
}

/// A sample instruction of any `code` (every operand class gets a representative register;
/// memory at `[0x10]`, VSIB with xmm1/ymm1 as index, `[rdi]` for maskmov).
pub fn probe_instruction(code: Code) -> Option<Instruction> {
    use iced_x86::{OpKind, Register as R};
    let op = code.op_code();
    let mut instr = Instruction::default();
    instr.set_code(code);
    let mut prev_imm = false;
    for i in 0..op.op_count() {
        let k = op.op_kind(i);
        let reg = match k {
            K::r8_reg | K::r8_opcode => Some(R::CL),
            K::r16_reg | K::r16_reg_mem | K::r16_rm | K::r16_opcode => Some(R::CX),
            K::r32_reg | K::r32_reg_mem | K::r32_rm | K::r32_opcode | K::r32_vvvv => Some(R::ECX),
            K::r64_reg | K::r64_reg_mem | K::r64_rm | K::r64_opcode | K::r64_vvvv => Some(R::RCX),
            K::seg_reg => Some(R::ES),
            K::k_reg | K::kp1_reg | K::k_rm | K::k_vvvv => Some(R::K2),
            K::mm_reg | K::mm_rm => Some(R::MM1),
            // A different vector register per operand (gathers #UD when destination, index
            // and mask overlap).
            K::xmm_reg | K::xmm_rm | K::xmm_vvvv | K::xmmp3_vvvv | K::xmm_is4 | K::xmm_is5 => {
                R::values().nth(R::XMM4 as usize + i as usize)
            }
            K::ymm_reg | K::ymm_rm | K::ymm_vvvv | K::ymm_is4 | K::ymm_is5 => {
                R::values().nth(R::YMM4 as usize + i as usize)
            }
            K::zmm_reg | K::zmm_rm | K::zmm_vvvv | K::zmmp3_vvvv => Some(R::ZMM4),
            K::cr_reg => Some(R::CR0),
            K::dr_reg => Some(R::DR0),
            K::tr_reg => Some(R::TR3),
            K::bnd_reg => Some(R::BND1),
            K::tmm_reg | K::tmm_rm | K::tmm_vvvv => Some(R::TMM1),
            K::es => Some(R::ES),
            K::cs => Some(R::CS),
            K::ss => Some(R::SS),
            K::ds => Some(R::DS),
            K::fs => Some(R::FS),
            K::gs => Some(R::GS),
            K::al => Some(R::AL),
            K::cl => Some(R::CL),
            K::ax => Some(R::AX),
            K::dx => Some(R::DX),
            K::eax => Some(R::EAX),
            K::rax => Some(R::RAX),
            K::st0 => Some(R::ST0),
            K::sti_opcode => Some(R::ST1),
            _ => None,
        };
        let is_imm = matches!(
            k,
            K::imm4_m2z
                | K::imm8
                | K::imm8_const_1
                | K::imm8sex16
                | K::imm8sex32
                | K::imm8sex64
                | K::imm16
                | K::imm32
                | K::imm32sex64
                | K::imm64
        );
        if let Some(r) = reg {
            instr.set_op_kind(i, OpKind::Register);
            instr.set_op_register(i, r);
        } else if is_memory_kind(k) {
            instr.set_op_kind(i, OpKind::Memory);
            let index = match k {
                K::mem_vsib32x | K::mem_vsib64x => R::XMM1,
                K::mem_vsib32y | K::mem_vsib64y => R::YMM1,
                K::mem_vsib32z | K::mem_vsib64z => R::ZMM1,
                _ => R::None,
            };
            instr.set_memory_base(R::None);
            instr.set_memory_index(index);
            instr.set_memory_index_scale(1);
            instr.set_memory_displacement64(0x10);
            instr.set_memory_displ_size(if index == R::None { 8 } else { 4 });
        } else if is_imm {
            let kind = match k {
                K::imm8 | K::imm4_m2z if prev_imm => OpKind::Immediate8_2nd,
                K::imm8 | K::imm8_const_1 | K::imm4_m2z => OpKind::Immediate8,
                K::imm8sex16 => OpKind::Immediate8to16,
                K::imm8sex32 => OpKind::Immediate8to32,
                K::imm8sex64 => OpKind::Immediate8to64,
                K::imm16 => OpKind::Immediate16,
                K::imm32 => OpKind::Immediate32,
                K::imm32sex64 => OpKind::Immediate32to64,
                _ => OpKind::Immediate64,
            };
            instr.set_op_kind(i, kind);
            instr.set_immediate_u64(i, 1);
        } else if k == K::seg_rDI {
            // maskmovq/maskmovdqu: the implicit store to [rdi].
            instr.set_op_kind(i, OpKind::MemorySegRDI);
        } else if matches!(
            k,
            K::br64_4 | K::br64_1 | K::br32_4 | K::br32_1 | K::br16_2 | K::br16_1
        ) {
            instr.set_op_kind(i, OpKind::NearBranch64);
            instr.set_near_branch64(0x10_0000);
        } else {
            // String operands (ins/outs, built elsewhere) and far pointers.
            return None;
        }
        prev_imm = is_imm;
    }
    Some(instr)
}

/// Probes the emulator with [`probe_instruction`] (see [`Probe`]).
pub fn probe(code: Code) -> Probe {
    use of_core::emulate::EmulationError as E;
    let Some(instr) = probe_instruction(code) else {
        return Probe::NoSample;
    };
    let ip = 0x10_0000u64;
    let mut e = iced_x86::Encoder::new(64);
    if e.encode(&instr, ip).is_err() {
        return Probe::NoSample;
    }
    let mut bytes = e.take_buffer();
    if code.op_code().fwait() {
        bytes.remove(0); // the separate `wait` before fnsave & co.
    }
    let Ok((decoded, offsets)) = of_core::decode::decode(&bytes, ip) else {
        return Probe::NoSample;
    };
    let mut rf = of_core::RegisterFile {
        rip: ip,
        ..Default::default()
    };
    // Stack instructions with rsp inside the map.
    rf.gpr[4] = 0x40;
    match of_core::emulate(&mut rf, &decoded, &bytes, &offsets, Some(0x10)) {
        Ok(()) => Probe::Emulated,
        Err(E::Unsupported(r)) => Probe::Refused(r.to_string()),
        Err(E::NotOurs(why)) => Probe::NotOurs(match why {
            of_core::emulate::NotOurs::OutsideMap { .. } => {
                String::from("the access covers bytes outside the map")
            }
            of_core::emulate::NotOurs::ReadOnly { .. } => String::from("writes read-only bytes"),
            of_core::emulate::NotOurs::NoMapAccess => String::from("no access to the map"),
        }),
        Err(E::Exception(x)) => Probe::Raises(format!("{x:?}")),
    }
}
