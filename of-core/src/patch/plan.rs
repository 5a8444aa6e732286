//! Which page-0 instructions are patched, and the code that replaces them.
//!
//! A patched site jumps to generated code that performs the *same instruction* on real
//! memory holding the same bytes as the map — a buffer on the stack, below the red zone,
//! filled from the registers the operand covers and copied back to them afterwards (map
//! writes last, SPEC §2) — so results and every flag, undefined ones included, are the CPU's
//! own, as on the fault path:
//!
//! ```text
//! lea  rsp, [rsp - 144]      ; below the 128-byte red zone, 16 bytes of buffer
//! mov  [rsp], rA             ; the first general-purpose register the operand covers
//! mov  [rsp + 8], rB         ; the second one, when the operand straddles two
//! <the instruction, its operand at [rsp + off % 8]>
//! mov  rA, [rsp]             ; only if the instruction writes its operand
//! mov  rB, [rsp + 8]
//! lea  rsp, [rsp + 144]
//! jmp  <the next instruction>
//! ```
//!
//! `lea`, `mov` and `jmp` change no flag. The forms patched are those whose exact behaviour
//! this reproduces ([`plan`] says why a form is not): an explicit absolute page-0 operand
//! (ModRM `[disp32]` or `moffs`, no segment override) inside the general-purpose
//! slots other than rsp's, an instruction of at least five bytes (room for `jmp rel32`) that
//! raises no exception of its own (no `div`/`idiv`), names no stack pointer and has no other
//! memory access (no stack or string forms, no register bit offset); a `lock`ed access
//! (`xchg` is one) stays within one register, so the buffer copy is never a split lock; and an
//! instruction that writes its operand writes no register the operand covers (the covered
//! registers are reloaded whole).

use crate::emulate::table::{Kind, classify};
use crate::map;
use alloc::vec::Vec;
use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Mnemonic, OpKind, Register};

/// Bytes below rsp the generated code uses: the red zone (128) and a 16-byte buffer.
pub const STACK_BYTES: i64 = 128 + 16;

/// How a site is rewritten.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::patch::plan::plan;
///
/// // add qword ptr [8], 1 (48 83 04 25 08 00 00 00 01): rcx, one slot, written.
/// let (add, _) = decode(&[0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01], 0).unwrap();
/// let p = plan(&add).unwrap();
/// assert_eq!((p.first_slot, p.slots, p.offset, p.writes), (1, 1, 0, true));
/// // div qword ptr [8] can raise #DE, which must be raised at the original address.
/// let (div, _) = decode(&[0x48, 0xF7, 0x34, 0x25, 0x08, 0x00, 0x00, 0x00], 0).unwrap();
/// assert!(plan(&div).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Encoding number of the first general-purpose register the operand covers.
    pub first_slot: usize,
    /// How many registers it covers (1 or 2).
    pub slots: usize,
    /// Offset of the operand inside the first register (0..8).
    pub offset: u64,
    /// Whether the instruction writes its memory operand.
    pub writes: bool,
}

/// The ModRM form of a `moffs` move (`a0`..`a3`), which has no base register.
fn modrm_code(code: Code) -> Code {
    match code {
        Code::Mov_AL_moffs8 => Code::Mov_r8_rm8,
        Code::Mov_AX_moffs16 => Code::Mov_r16_rm16,
        Code::Mov_EAX_moffs32 => Code::Mov_r32_rm32,
        Code::Mov_RAX_moffs64 => Code::Mov_r64_rm64,
        Code::Mov_moffs8_AL => Code::Mov_rm8_r8,
        Code::Mov_moffs16_AX => Code::Mov_rm16_r16,
        Code::Mov_moffs32_EAX => Code::Mov_rm32_r32,
        Code::Mov_moffs64_RAX => Code::Mov_rm64_r64,
        c => c,
    }
}

/// Whether `instr` is patched, and how; otherwise why not (the forms listed in the module
/// docs; a site that is not patched keeps the fault path).
///
/// # Errors
/// A short reason.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::patch::plan::plan;
///
/// let p = |bytes: &[u8]| plan(&decode(bytes, 0).unwrap().0);
/// // mov qword ptr [0x38], r11 (4c 89 1c 25 38 00 00 00): rdi.
/// assert_eq!(p(&[0x4C, 0x89, 0x1C, 0x25, 0x38, 0x00, 0x00, 0x00]).unwrap().first_slot, 7);
/// // mov rax, qword ptr [0x20]: the rsp slot stays on the fault path.
/// assert!(p(&[0x48, 0x8B, 0x04, 0x25, 0x20, 0x00, 0x00, 0x00]).is_err());
/// // push qword ptr [8]: an implicit stack access.
/// assert!(p(&[0xFF, 0x34, 0x25, 0x08, 0x00, 0x00, 0x00]).is_err());
/// ```
pub fn plan(instr: &Instruction) -> Result<Plan, &'static str> {
    use Mnemonic as M;
    if instr.len() < 5 {
        return Err("shorter than a jmp rel32");
    }
    let writes = match classify(instr) {
        Kind::Host { writes } => writes,
        Kind::Move => instr.op0_kind() == OpKind::Memory,
        _ => return Err("not a plain register access (stack, string, vector or refused form)"),
    };
    if matches!(
        instr.mnemonic(),
        M::Div | M::Idiv | M::Lar | M::Lsl | M::Verr | M::Verw | M::Xlatb
    ) {
        return Err("may raise an exception or reads more than its operand");
    }
    let mem = (0..instr.op_count())
        .find(|&i| instr.op_kind(i) == OpKind::Memory)
        .ok_or("no explicit memory operand")?;
    if instr.memory_base() != Register::None
        || instr.memory_index() != Register::None
        || !matches!(instr.memory_segment(), Register::DS | Register::None)
        || instr.segment_prefix() != Register::None
    {
        return Err("not an absolute page-0 operand");
    }
    // 4: a 0x67 (32-bit) address, 8: a 64-bit one; both are the same page-0 address, and the
    // generated code addresses the buffer with rsp (no 0x67).
    if !matches!(instr.memory_displ_size(), 4 | 8) {
        return Err("not an absolute address");
    }
    for i in 0..instr.op_count() {
        if instr.op_kind(i) == OpKind::Register {
            let r = instr.op_register(i);
            if !r.is_gpr() || r.full_register() == Register::RSP {
                return Err("names the stack pointer or a non-general register");
            }
        } else if i != mem
            && !matches!(
                instr.op_kind(i),
                OpKind::Immediate8
                    | OpKind::Immediate16
                    | OpKind::Immediate32
                    | OpKind::Immediate8to16
                    | OpKind::Immediate8to32
                    | OpKind::Immediate8to64
                    | OpKind::Immediate32to64
            )
        {
            return Err("operand kind not patched");
        }
    }
    let ea = instr.memory_displacement64();
    let size = instr.memory_size().size() as u64;
    if size == 0 || size > 8 || ea >= map::RIP || ea + size > map::RIP {
        return Err("not inside the general-purpose slots");
    }
    let first = (ea / 8) as usize;
    let last = ((ea + size - 1) / 8) as usize;
    if first <= 4 && last >= 4 {
        return Err("covers the rsp slot");
    }
    let locked = instr.has_lock_prefix() || instr.mnemonic() == M::Xchg;
    if locked && first != last {
        return Err("a locked access straddling two registers");
    }
    if writes {
        // The generated code reloads the covered registers whole from the buffer (the map
        // write applied last); a register result in a covered register (xadd/xchg with a
        // register the operand overlaps, cmpxchg's rax) would be lost outside the operand's
        // bytes.
        let mut info = iced_x86::InstructionInfoFactory::new();
        let clash = info.info(instr).used_registers().iter().any(|u| {
            matches!(
                u.access(),
                iced_x86::OpAccess::Write
                    | iced_x86::OpAccess::CondWrite
                    | iced_x86::OpAccess::ReadWrite
                    | iced_x86::OpAccess::ReadCondWrite
            ) && u.register().is_gpr()
                && (first..=last).contains(&u.register().full_register().number())
        });
        if clash {
            return Err("writes a register its operand covers");
        }
    }
    Ok(Plan {
        first_slot: first,
        slots: last - first + 1,
        offset: ea % 8,
        writes,
    })
}

/// Encodes the generated code for `instr` (decoded at `site`) placed at `at`: the sequence of
/// the module docs, ending in a jump to `site + len`.
///
/// # Errors
/// When iced-x86 cannot encode a piece (it never should for a planned form) or the jump back
/// is out of `rel32` range.
///
/// # Examples
///
/// ```
/// use iced_x86::Mnemonic;
/// use of_core::decode::decode;
/// use of_core::patch::plan::{plan, trampoline};
///
/// // add qword ptr [8], 1 at 0x40_0000.
/// let bytes = [0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01];
/// let (add, _) = decode(&bytes, 0x40_0000).unwrap();
/// let code = trampoline(&add, &plan(&add).unwrap(), 0x50_0000).unwrap();
/// let mut d = iced_x86::Decoder::with_ip(64, &code, 0x50_0000, iced_x86::DecoderOptions::NONE);
/// let seq: Vec<String> = d.iter().map(|i| i.to_string()).collect();
/// assert_eq!(
///     seq,
///     [
///         "lea rsp,[rsp-90h]",
///         "mov [rsp],rcx",
///         "add qword ptr [rsp],1",
///         "mov rcx,[rsp]",
///         "lea rsp,[rsp+90h]",
///         "jmp near ptr 0000000000400009h",
///     ]
/// );
/// ```
pub fn trampoline(instr: &Instruction, plan: &Plan, at: u64) -> Result<Vec<u8>, &'static str> {
    let bad = "cannot encode the generated code";
    let mut e = Encoder::new(64);
    let mut ip = at;
    let emit = |e: &mut Encoder, i: Instruction, ip: &mut u64| -> Result<(), &'static str> {
        let n = e.encode(&i, *ip).map_err(|_| bad)?;
        *ip += n as u64;
        Ok(())
    };
    let rsp_at = |d: i64| MemoryOperand::with_base_displ(Register::RSP, d);
    let gpr = |n: usize| Register::RAX + n as u32;
    emit(
        &mut e,
        Instruction::with2(Code::Lea_r64_m, Register::RSP, rsp_at(-STACK_BYTES))
            .map_err(|_| bad)?,
        &mut ip,
    )?;
    for k in 0..plan.slots {
        let i = Instruction::with2(
            Code::Mov_rm64_r64,
            rsp_at(8 * k as i64),
            gpr(plan.first_slot + k),
        )
        .map_err(|_| bad)?;
        emit(&mut e, i, &mut ip)?;
    }
    let mut moved = *instr;
    moved.set_code(modrm_code(instr.code()));
    moved.set_memory_base(Register::RSP);
    moved.set_memory_index(Register::None);
    moved.set_memory_displacement64(plan.offset);
    moved.set_memory_displ_size(1);
    moved.set_segment_prefix(Register::None);
    emit(&mut e, moved, &mut ip)?;
    if plan.writes {
        for k in 0..plan.slots {
            let i = Instruction::with2(
                Code::Mov_r64_rm64,
                gpr(plan.first_slot + k),
                rsp_at(8 * k as i64),
            )
            .map_err(|_| bad)?;
            emit(&mut e, i, &mut ip)?;
        }
    }
    emit(
        &mut e,
        Instruction::with2(Code::Lea_r64_m, Register::RSP, rsp_at(STACK_BYTES)).map_err(|_| bad)?,
        &mut ip,
    )?;
    let back = instr.next_ip();
    let jmp = Instruction::with_branch(Code::Jmp_rel32_64, back).map_err(|_| bad)?;
    emit(&mut e, jmp, &mut ip)?;
    Ok(e.take_buffer())
}
