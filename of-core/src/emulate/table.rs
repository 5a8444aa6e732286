//! The one list: which instruction family handles each mnemonic, and how its explicit memory
//! operand is used (KVM's per-opcode flags: a `Mov`-style destination is write-only, `NoWrite`
//! reads its destination, string and stack instructions have implicit operands).

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

/// How an instruction is emulated.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::table::{Kind, classify};
///
/// let kind = |bytes: &[u8]| classify(&decode(bytes, 0).unwrap().0);
/// // mov qword ptr [0x10], rax (48 89 04 25 10 00 00 00)
/// assert_eq!(kind(&[0x48, 0x89, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00]), Kind::Move);
/// // cmp qword ptr [8], 1 (48 83 3c 25 08 00 00 00 01): reads its destination only
/// assert_eq!(
///     kind(&[0x48, 0x83, 0x3C, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01]),
///     Kind::Host { writes: false }
/// );
/// // bts qword ptr [0], rcx (48 0f ab 0c 25 00 00 00 00)
/// assert_eq!(
///     kind(&[0x48, 0x0F, 0xAB, 0x0C, 0x25, 0x00, 0x00, 0x00, 0x00]),
///     Kind::BitTestRegister { writes: true }
/// );
/// assert_eq!(kind(&[0xC3]), Kind::Stack); // ret
/// assert_eq!(kind(&[0xF3, 0x48, 0xAB]), Kind::String); // rep stosq
/// // cmpxchg16b xmmword ptr [0] (48 0f c7 0c 25 00 00 00 00)
/// assert_eq!(
///     kind(&[0x48, 0x0F, 0xC7, 0x0C, 0x25, 0x00, 0x00, 0x00, 0x00]),
///     Kind::CompareExchangeWide
/// );
/// // lea rax, [8] (48 8d 04 25 08 00 00 00)
/// assert_eq!(kind(&[0x48, 0x8D, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00]), Kind::NoAccess);
/// // clflush byte ptr [0] (0f ae 3c 25 00 00 00 00)
/// assert_eq!(kind(&[0x0F, 0xAE, 0x3C, 0x25, 0x00, 0x00, 0x00, 0x00]), Kind::CacheControl);
/// // addps xmm0, xmmword ptr [0x100] (0f 58 04 25 00 01 00 00)
/// assert_eq!(kind(&[0x0F, 0x58, 0x04, 0x25, 0x00, 0x01, 0x00, 0x00]), Kind::VectorHost);
/// // fld qword ptr [8] (dd 04 25 08 00 00 00)
/// assert!(matches!(kind(&[0xDD, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00]), Kind::Unsupported(_)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Data movement done in Rust: mov, movzx, movsx, movsxd, movbe, xlat.
    Move,
    /// The register form runs on the host ([`super::hostexec`]). `writes` says whether the
    /// memory operand (operand 0) receives the result.
    Host {
        /// Whether the memory operand is written.
        writes: bool,
    },
    /// bt/bts/btr/btc with a register bit offset: the access moves by the offset's high bits
    /// (Intel SDM Vol. 2A, BT: "bit string" addressing), then runs like [`Kind::Host`].
    BitTestRegister {
        /// Whether the memory operand is written (all but bt).
        writes: bool,
    },
    /// push, pop, pushf, popf, call, ret, enter, leave, jmp (near, with any operand).
    Stack,
    /// movs, stos, lods, cmps, scas, with or without rep/repe/repne.
    String,
    /// cmpxchg8b, cmpxchg16b.
    CompareExchangeWide,
    /// The instruction names memory but never accesses it (lea, nop, prefetch): never ours.
    NoAccess,
    /// clflush, clflushopt, clwb, cldemote: checked like a 1-byte read, then a no-op.
    CacheControl,
    /// SSE/AVX data movement with memory semantics ([`super::vector`]).
    Vector(super::vector::Move),
    /// SSE/AVX arithmetic with a memory source, run in register form on the host.
    VectorHost,
    /// AVX-512 (EVEX) data movement done in Rust ([`super::vector::evex`]); the memory access
    /// touches the elements the opmask selects.
    EvexMove(super::vector::evex::Move),
    /// AVX-512 (EVEX) instructions run in register form on the host, with zmm0..31 and
    /// k0..7 loaded; the memory access touches the elements the opmask selects.
    EvexHost,
    /// An instruction that touches the map but is not emulated, with the reason.
    Unsupported(&'static str),
}

/// Classifies `instr`.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::table::{Kind, classify};
/// use of_core::emulate::vector::Move;
///
/// // movdqa xmm1, xmmword ptr [0x100] (66 0f 6f 0c 25 00 01 00 00): aligned vector load.
/// let (i, _) = decode(&[0x66, 0x0F, 0x6F, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00], 0).unwrap();
/// assert_eq!(classify(&i), Kind::Vector(Move::Full { aligned: true }));
/// // mov word ptr [0], ds (8c 1c 25 00 00 00 00): segment selectors are not in the map.
/// let (i, _) = decode(&[0x8C, 0x1C, 0x25, 0x00, 0x00, 0x00, 0x00], 0).unwrap();
/// assert_eq!(classify(&i), Kind::Unsupported("segment selectors are not mapped"));
/// // div qword ptr [8] (48 f7 34 25 08 00 00 00): the memory operand is a source.
/// let (i, _) = decode(&[0x48, 0xF7, 0x34, 0x25, 0x08, 0x00, 0x00, 0x00], 0).unwrap();
/// assert_eq!(classify(&i), Kind::Host { writes: false });
/// ```
pub fn classify(instr: &Instruction) -> Kind {
    use Mnemonic as M;
    let mem_op0 = instr.op_count() > 0 && instr.op0_kind() == OpKind::Memory;
    match instr.mnemonic() {
        M::Mov => {
            for i in 0..instr.op_count() {
                if instr.op_kind(i) == OpKind::Register
                    && instr.op_register(i).is_segment_register()
                {
                    return Kind::Unsupported("segment selectors are not mapped");
                }
            }
            Kind::Move
        }
        // movnti/movdiri are stores with a cache hint: on the register image, plain stores.
        M::Movzx | M::Movsx | M::Movsxd | M::Movbe | M::Xlatb | M::Movnti | M::Movdiri => {
            Kind::Move
        }

        M::Add
        | M::Or
        | M::Adc
        | M::Sbb
        | M::And
        | M::Sub
        | M::Xor
        | M::Inc
        | M::Dec
        | M::Neg
        | M::Not
        | M::Xchg
        | M::Xadd
        | M::Cmpxchg
        | M::Shl
        | M::Sal
        | M::Shr
        | M::Sar
        | M::Rol
        | M::Ror
        | M::Rcl
        | M::Rcr
        | M::Shld
        | M::Shrd
        | M::Bsf
        | M::Bsr
        | M::Lzcnt
        | M::Tzcnt
        | M::Popcnt
        | M::Crc32
        | M::Adcx
        | M::Adox
        | M::Andn
        | M::Bextr
        | M::Blsi
        | M::Blsmsk
        | M::Blsr
        | M::Bzhi
        | M::Pdep
        | M::Pext
        | M::Mulx
        | M::Rorx
        | M::Sarx
        | M::Shlx
        | M::Shrx
        | M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg
        | M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg => Kind::Host { writes: mem_op0 },
        M::Cmp | M::Test => Kind::Host { writes: false },
        // The memory operand of mul/imul/div/idiv is a source only (one-operand forms write
        // rdx:rax; imul r, r/m (, imm) writes its register).
        M::Mul | M::Imul | M::Div | M::Idiv => Kind::Host { writes: false },
        // Selector checks read a 16-bit selector from memory or a register alike.
        M::Lar | M::Lsl => Kind::Host { writes: false },
        M::Verr | M::Verw => Kind::Host { writes: false },
        M::Bt | M::Bts | M::Btr | M::Btc => {
            let writes = instr.mnemonic() != M::Bt;
            if instr.op1_kind() == OpKind::Register {
                Kind::BitTestRegister { writes }
            } else {
                Kind::Host { writes }
            }
        }

        M::Push
        | M::Pop
        | M::Pushf
        | M::Pushfq
        | M::Popf
        | M::Popfq
        | M::Call
        | M::Ret
        | M::Enter
        | M::Leave
        | M::Jmp => match instr.code() {
            Code::Call_m1664 | Code::Call_m1632 | Code::Call_m1616 => {
                Kind::Unsupported("far calls are not emulated")
            }
            Code::Jmp_m1664 | Code::Jmp_m1632 | Code::Jmp_m1616 => {
                Kind::Unsupported("far jumps are not emulated")
            }
            _ if segment_operand(instr) => Kind::Unsupported("segment selectors are not mapped"),
            _ => Kind::Stack,
        },

        M::Movsb
        | M::Movsw
        | M::Movsq
        | M::Stosb
        | M::Stosw
        | M::Stosd
        | M::Stosq
        | M::Lodsb
        | M::Lodsw
        | M::Lodsd
        | M::Lodsq
        | M::Cmpsb
        | M::Cmpsw
        | M::Cmpsq
        | M::Scasb
        | M::Scasw
        | M::Scasd
        | M::Scasq => Kind::String,
        M::Movsd | M::Cmpsd if instr.is_string_instruction() => Kind::String,

        M::Cmpxchg8b | M::Cmpxchg16b => Kind::CompareExchangeWide,

        M::Lea
        | M::Nop
        | M::Prefetch
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Prefetchwt1 => Kind::NoAccess,

        // Cache-line flushes and hints fault like an access but change no architectural state:
        // on register bytes they retire as no-ops.
        M::Clflush | M::Clflushopt | M::Clwb | M::Cldemote => Kind::CacheControl,

        _ if instr.code().encoding() == iced_x86::EncodingKind::EVEX => {
            super::vector::evex::classify(instr)
        }
        _ => match super::vector::classify(instr) {
            // MMX forms share mnemonics with SSE ones (pinsrw, movq, paddb…): mm0..mm7 alias
            // the x87 stack, which the map does not hold.
            _ if (0..instr.op_count())
                .any(|i| instr.op_kind(i) == OpKind::Register && instr.op_register(i).is_mm()) =>
            {
                Kind::Unsupported("MMX registers are not mapped")
            }
            Some(mv) => Kind::Vector(mv),
            None if super::vector::host_candidate(instr) => Kind::VectorHost,
            None => Kind::Unsupported(unsupported_reason(instr)),
        },
    }
}

fn segment_operand(instr: &Instruction) -> bool {
    (0..instr.op_count())
        .any(|i| instr.op_kind(i) == OpKind::Register && instr.op_register(i).is_segment_register())
}

/// A short reason for the diagnostic line of an instruction that is not emulated.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::table::unsupported_reason;
///
/// let reason = |bytes: &[u8]| unsupported_reason(&decode(bytes, 0).unwrap().0);
/// // fild dword ptr [8] (db 04 25 08 00 00 00)
/// assert_eq!(reason(&[0xDB, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00]), "x87 memory operands are not mapped");
/// // fxsave [0] (0f ae 04 25 00 00 00 00)
/// assert_eq!(
///     reason(&[0x0F, 0xAE, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00]),
///     "processor state save areas are not mapped"
/// );
/// // paddb mm0, qword ptr [0] (0f fc 04 25 00 00 00 00)
/// assert_eq!(reason(&[0x0F, 0xFC, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00]), "MMX registers are not mapped");
/// ```
pub fn unsupported_reason(instr: &Instruction) -> &'static str {
    let fpu = (0..instr.op_count())
        .any(|i| instr.op_kind(i) == OpKind::Register && instr.op_register(i).is_st());
    let vector = (0..instr.op_count()).any(|i| {
        instr.op_kind(i) == OpKind::Register && {
            let r = instr.op_register(i);
            r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_mm() || r.is_k()
        }
    });
    let name_fpu = matches!(
        instr.mnemonic(),
        Mnemonic::Fld
            | Mnemonic::Fst
            | Mnemonic::Fstp
            | Mnemonic::Fild
            | Mnemonic::Fist
            | Mnemonic::Fistp
            | Mnemonic::Fisttp
            | Mnemonic::Fadd
            | Mnemonic::Fmul
            | Mnemonic::Fsub
            | Mnemonic::Fsubr
            | Mnemonic::Fdiv
            | Mnemonic::Fdivr
            | Mnemonic::Fcom
            | Mnemonic::Fcomp
            | Mnemonic::Fldcw
            | Mnemonic::Fnstcw
            | Mnemonic::Fnstsw
            | Mnemonic::Fldenv
            | Mnemonic::Fnstenv
            | Mnemonic::Frstor
            | Mnemonic::Fnsave
            | Mnemonic::Fbld
            | Mnemonic::Fbstp
    );
    if fpu || name_fpu || instr.memory_size().is_packed() && instr.memory_base() == Register::ST0 {
        "x87 memory operands are not mapped"
    } else if matches!(
        instr.mnemonic(),
        Mnemonic::Fxsave
            | Mnemonic::Fxsave64
            | Mnemonic::Fxrstor
            | Mnemonic::Fxrstor64
            | Mnemonic::Xsave
            | Mnemonic::Xsave64
            | Mnemonic::Xsavec
            | Mnemonic::Xsavec64
            | Mnemonic::Xsaveopt
            | Mnemonic::Xsaveopt64
            | Mnemonic::Xsaves
            | Mnemonic::Xsaves64
            | Mnemonic::Xrstor
            | Mnemonic::Xrstor64
            | Mnemonic::Xrstors
            | Mnemonic::Xrstors64
    ) {
        "processor state save areas are not mapped"
    } else if instr.vsib().is_some() {
        "gathers (VSIB addressing) are not emulated"
    } else if (0..instr.op_count())
        .any(|i| instr.op_kind(i) == OpKind::Register && instr.op_register(i).is_mm())
    {
        "MMX registers are not mapped"
    } else if vector {
        "this vector instruction is not emulated"
    } else {
        "this instruction is not emulated"
    }
}
