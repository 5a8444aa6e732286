//! The encoding of one site's call-out stub (the sequence in the [`super`] module docs), with
//! iced-x86's encoder. Branches inside the stub are `rel32` forms and data is reached with
//! `[rip + disp32]`, so every instruction has the same length wherever its target lies: a
//! first pass at dummy targets finds the labels, the second encodes for real.

use super::{AREA, Saved, VectorArea, callout_address};
use crate::patch::liveness::Regs;
use alloc::vec::Vec;
use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Register};

/// The labels of a stub.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Labels {
    /// After the conditional `ldmxcsr`.
    mxcsr_same: u64,
    /// The fallback epilogue.
    fallback: u64,
    /// The copy of the original instruction (after the fallback epilogue).
    original: u64,
    /// After each epilogue's `std`.
    df_clear: [u64; 2],
    /// The data: the Record's address.
    record: u64,
    /// Then the callout's.
    callout: u64,
}

struct Asm {
    e: Encoder,
    ip: u64,
    bad: &'static str,
}

impl Asm {
    fn put(&mut self, i: Result<Instruction, iced_x86::IcedError>) -> Result<(), &'static str> {
        let i = i.map_err(|_| self.bad)?;
        self.ip += self.e.encode(&i, self.ip).map_err(|_| self.bad)? as u64;
        Ok(())
    }
}

fn rsp_at(d: i64) -> MemoryOperand {
    MemoryOperand::with_base_displ(Register::RSP, d)
}

fn gpr(n: usize) -> Register {
    Register::RAX + n as u32
}

/// The store and load of one vector register at this width, and the register.
fn vector_moves(saved: Saved, n: usize) -> (Code, Code, Register) {
    match saved {
        Saved::Sse => (
            Code::Movdqa_xmmm128_xmm,
            Code::Movdqa_xmm_xmmm128,
            Register::XMM0 + n as u32,
        ),
        Saved::Avx => (
            Code::VEX_Vmovdqa_ymmm256_ymm,
            Code::VEX_Vmovdqa_ymm_ymmm256,
            Register::YMM0 + n as u32,
        ),
        Saved::Avx512F | Saved::Avx512Bw => (
            Code::EVEX_Vmovdqa64_zmmm512_k1z_zmm,
            Code::EVEX_Vmovdqa64_zmm_k1z_zmmm512,
            Register::ZMM0 + n as u32,
        ),
    }
}

/// Saves (`store`) or restores the registers of `regs` this CPU has into/from the
/// VectorArea at rsp.
fn vectors(a: &mut Asm, saved: Saved, regs: Regs, store: bool) -> Result<(), &'static str> {
    let count = if matches!(saved, Saved::Avx512F | Saved::Avx512Bw) {
        32
    } else {
        16
    };
    for n in (0..count).filter(|n| (regs >> n) & 1 == 1) {
        let (st, ld, r) = vector_moves(saved, n);
        let m = rsp_at(64 * n as i64);
        a.put(if store {
            Instruction::with2(st, m, r)
        } else {
            Instruction::with2(ld, r, m)
        })?;
    }
    let (st, ld) = match saved {
        Saved::Avx512Bw => (Code::VEX_Kmovq_m64_kr, Code::VEX_Kmovq_kr_km64),
        Saved::Avx512F => (Code::VEX_Kmovw_m16_kr, Code::VEX_Kmovw_kr_km16),
        _ => return Ok(()),
    };
    for n in (0..8).filter(|n| (regs >> (32 + n)) & 1 == 1) {
        let m = rsp_at(core::mem::offset_of!(VectorArea, k) as i64 + 8 * n as i64);
        let r = Register::K0 + n as u32;
        a.put(if store {
            Instruction::with2(st, m, r)
        } else {
            Instruction::with2(ld, r, m)
        })?;
    }
    Ok(())
}

/// The way back: rflags from the Frame (rbx) without `popfq` (microcoded: DF by `std`, OF by
/// an `add`, SF ZF AF PF CF by `sahf`), the general-purpose registers, rsp above the red zone.
/// `df_clear` is the label after the `std`; returns where that is.
fn epilogue(a: &mut Asm, df_clear: u64) -> Result<u64, &'static str> {
    use Register::*;
    a.put(Instruction::with2(Code::Mov_r64_rm64, RSP, RBX))?; // rsp = the Frame
    a.put(Instruction::with2(Code::Mov_r64_rm64, RAX, rsp_at(128)))?; // rax = its rflags
    a.put(Instruction::with2(Code::Bt_rm32_imm8, EAX, 10))?; // CF = DF
    a.put(Instruction::with_branch(Code::Jae_rel32_64, df_clear))?;
    a.put(Ok(Instruction::with(Code::Std)))?;
    let here = a.ip;
    a.put(Instruction::with2(Code::Mov_r32_rm32, ECX, EAX))?;
    a.put(Instruction::with2(Code::Shr_rm32_imm8, ECX, 11))?;
    a.put(Instruction::with2(Code::And_rm32_imm8, ECX, 1))?; // cl = OF
    a.put(Instruction::with2(Code::Add_rm8_imm8, CL, 0x7F))?; // OF = (cl == 1)
    a.put(Instruction::with2(Code::Mov_r8_rm8, AH, AL))?; // ah = SF ZF AF PF CF
    a.put(Ok(Instruction::with(Code::Sahf)))?; // into the flags; OF and DF stay
    for n in 0..16 {
        if n == 4 {
            // The rsp placeholder (lea: no flags).
            a.put(Instruction::with2(Code::Lea_r64_m, RSP, rsp_at(8)))?;
        } else {
            a.put(Instruction::with1(Code::Pop_r64, gpr(n)))?;
        }
    }
    // The rflags slot and the red zone.
    a.put(Instruction::with2(Code::Lea_r64_m, RSP, rsp_at(8 + 128)))?;
    Ok(here)
}

/// One pass of the encoding at `at`, with the labels `l` (dummies in the first pass).
fn pass(
    instr: &Instruction,
    record: u64,
    saved: Saved,
    regs: Regs,
    at: u64,
    l: Labels,
) -> Result<(Vec<u8>, Labels), &'static str> {
    use Register::*;
    let bad = "cannot encode the call-out stub";
    let mut a = Asm {
        e: Encoder::new(64),
        ip: at,
        bad,
    };
    let mut found = Labels::default();
    a.put(Instruction::with2(Code::Lea_r64_m, RSP, rsp_at(-128)))?; // below the red zone
    a.put(Ok(Instruction::with(Code::Pushfq)))?; // Frame.rflags
    a.put(Ok(Instruction::with(Code::Cld)))?; // the ABI's DF = 0 for the call
    for n in (0..16).rev() {
        a.put(Instruction::with1(Code::Push_r64, gpr(n)))?; // Frame.gpr[15] … gpr[0]
    }
    a.put(Instruction::with2(Code::Mov_r64_rm64, RBX, RSP))?; // rbx (callee-saved) = the Frame
    a.put(Instruction::with2(Code::Sub_rm64_imm32, RSP, AREA as i32))?;
    a.put(Instruction::with2(Code::And_rm64_imm8, RSP, -64))?; // rsp = the VectorArea
    vectors(&mut a, saved, regs, true)?;
    let mxcsr = core::mem::offset_of!(VectorArea, mxcsr) as i64;
    a.put(Instruction::with1(Code::Stmxcsr_m32, rsp_at(mxcsr)))?;
    a.put(Instruction::with2(Code::Mov_r64_rm64, RDI, RBX))?; // callout(frame,
    a.put(Instruction::with2(Code::Mov_r64_rm64, RSI, RSP))?; //         area,
    a.put(Instruction::with2(
        Code::Mov_r64_rm64,
        RDX,
        MemoryOperand::with_base_displ(RIP, l.record as i64), //     record)
    ))?;
    a.put(Instruction::with1(
        Code::Call_rm64,
        MemoryOperand::with_base_displ(RIP, l.callout as i64),
    ))?; // rsp is 64-byte aligned, as calls need
    a.put(Instruction::with2(Code::Mov_r32_rm32, R12D, EAX))?; // r12 (restored below) = done
    vectors(&mut a, saved, regs, false)?;
    // MXCSR reloaded only if the call changed it (ldmxcsr is slow; rax is restored below).
    a.put(Instruction::with1(Code::Stmxcsr_m32, rsp_at(mxcsr + 4)))?;
    a.put(Instruction::with2(
        Code::Mov_r32_rm32,
        EAX,
        rsp_at(mxcsr + 4),
    ))?;
    a.put(Instruction::with2(Code::Cmp_r32_rm32, EAX, rsp_at(mxcsr)))?;
    a.put(Instruction::with_branch(Code::Je_rel32_64, l.mxcsr_same))?;
    a.put(Instruction::with1(Code::Ldmxcsr_m32, rsp_at(mxcsr)))?;
    found.mxcsr_same = a.ip;
    a.put(Instruction::with2(Code::Test_rm32_r32, R12D, R12D))?;
    a.put(Instruction::with_branch(Code::Je_rel32_64, l.fallback))?;
    found.df_clear[0] = epilogue(&mut a, l.df_clear[0])?;
    let next = instr.next_ip();
    a.put(Instruction::with_branch(Code::Jmp_rel32_64, next))?;
    found.fallback = a.ip;
    found.df_clear[1] = epilogue(&mut a, l.df_clear[1])?;
    found.original = a.ip;
    a.put(Ok(*instr))?; // the original instruction: it faults, or runs on ordinary memory
    a.put(Instruction::with_branch(Code::Jmp_rel32_64, next))?;
    let mut code = a.e.take_buffer();
    let data = at + (code.len() as u64).div_ceil(8) * 8;
    code.resize((data - at) as usize, 0xCC);
    code.extend_from_slice(&record.to_le_bytes());
    code.extend_from_slice(&callout_address().to_le_bytes());
    found.record = data;
    found.callout = data + 8;
    Ok((code, found))
}

/// An encoded stub.
pub struct Stub {
    /// Its bytes.
    pub code: Vec<u8>,
    /// The address of its copy of the original instruction, which runs it natively and jumps
    /// to the next instruction (the fallback's end; also where the SIGTRAP handler sends a
    /// thread that meets a patch's `int3` while the instruction touches ordinary memory).
    pub original: u64,
}

/// Encodes the stub of the [`super`] module docs for `instr` at `at`: the Record at `record`,
/// the registers of `regs` saved at width `saved`.
///
/// # Errors
/// When iced-x86 cannot encode a piece (the original instruction's rip-relative operand out
/// of reach from `at`).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::patch::callout::{Saved, stub};
///
/// let bytes = [0x0F, 0xB6, 0x04, 0x25, 0x05, 0x00, 0x00, 0x40]; // movzx eax, byte ptr [0x4000_0005]
/// let (i, _) = decode(&bytes, 0x40_0000).unwrap();
/// // Saving xmm3 only.
/// let s = stub(&i, 0x1234_5678, Saved::Sse, 1 << 3, 0x50_0000).unwrap();
/// let code = s.code;
/// let d = iced_x86::Decoder::with_ip(64, &code, 0x50_0000, iced_x86::DecoderOptions::NONE);
/// let seq: Vec<String> = d.into_iter().map(|i| i.to_string()).collect();
/// assert_eq!(seq[0], "lea rsp,[rsp-80h]");
/// assert_eq!(seq.iter().filter(|s| s.starts_with("movdqa")).count(), 2); // save, restore
/// assert!(seq.iter().any(|s| s == "movdqa [rsp+0C0h],xmm3"));
/// // Both ways back end in a jump to the next instruction; the fallback runs the original.
/// assert_eq!(seq.iter().filter(|s| *s == "jmp near ptr 0000000000400008h").count(), 2);
/// assert!(seq.iter().any(|s| s == "movzx eax,byte ptr [40000005h]"));
/// // The copy of the original instruction, then the jump back.
/// let off = (s.original - 0x50_0000) as usize;
/// let mut d = iced_x86::Decoder::with_ip(64, &code[off..], s.original, iced_x86::DecoderOptions::NONE);
/// assert_eq!(d.decode().to_string(), "movzx eax,byte ptr [40000005h]");
/// assert_eq!(d.decode().to_string(), "jmp near ptr 0000000000400008h");
/// ```
pub fn stub(
    instr: &Instruction,
    record: u64,
    saved: Saved,
    regs: Regs,
    at: u64,
) -> Result<Stub, &'static str> {
    // Every branch is a rel32 and every data reference a disp32: the labels the first pass
    // finds hold in the second.
    let dummy = Labels {
        mxcsr_same: at,
        fallback: at,
        original: at,
        df_clear: [at; 2],
        record: at,
        callout: at,
    };
    let (_, labels) = pass(instr, record, saved, regs, at, dummy)?;
    let (code, again) = pass(instr, record, saved, regs, at, labels)?;
    if again != labels {
        return Err("the call-out stub's layout moved between passes");
    }
    Ok(Stub {
        code,
        original: labels.original,
    })
}
