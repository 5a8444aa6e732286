//! Which vector registers and opmasks the code after a region site may still read: the ones a
//! call-out must save and restore around device code ([`super::callout`]). Saving all 32 zmm
//! registers costs ~35 ns a call on an AVX-512 CPU — most of a patched access — while a
//! driver's integer code after a device access usually has none live.
//!
//! The analysis decodes forward from the site along every path (fall-through, both ways of a
//! conditional branch, direct jumps), tracking per path which registers have been fully
//! overwritten; a register read before it is overwritten on some path is *live*. A path ends:
//!
//! - at a `ret`: only the return-value registers (xmm0/ymm0/zmm0 and xmm1) can be read by the
//!   caller — every vector register and opmask is caller-saved in the System V x86-64 ABI
//!   (§3.2.1, Figure 3.4), so the caller cannot expect any other to survive;
//! - at a direct `call`: the argument registers zmm0–7 can be read by the callee; the callee
//!   may overwrite every vector register, so what the code after the call reads is not ours;
//! - anywhere the analysis cannot follow (an indirect call or jump — a TLS descriptor call
//!   preserves every register —, an interrupt, undecodable or unreadable bytes, or after
//!   [`BUDGET`] instructions): everything not yet overwritten is live.
//!
//! A register counts as overwritten only by a whole-register write: a VEX or EVEX destination
//! (zeroed up to the maximum vector length, Intel SDM Vol. 1 §14.1.4 / Vol. 2A §2.3.10)
//! without merge-masking; a legacy SSE write keeps bits 511:128 and overwrites nothing. An
//! opmask destination is always written whole. Register uses come from iced-x86's
//! instruction info (explicit and implicit operands, masks, VSIB indexes). MXCSR is always
//! saved by the call-out; x87 and MMX state never are (see the README).
//!
//! The analysis trusts the ABI at `call` and `ret` (hand-written code that keeps vector values
//! in registers across its own calls, against the ABI, sets `OF_PATCH_SAVE_ALL=1`, which makes
//! every call-out save everything).

use alloc::vec::Vec;
use iced_x86::{FlowControl, Instruction, Mnemonic, OpAccess, OpKind, Register};

/// The most instructions one analysis decodes (over all paths).
pub const BUDGET: usize = 1024;

/// Bits of a register set: zmm0..32 in bits 0..32, k0..8 in bits 32..40.
pub type Regs = u64;

/// Every vector register and opmask.
pub const ALL: Regs = (1 << 40) - 1;
/// What a caller may read after a `ret`: zmm0 and zmm1 (return values).
pub const RETURN_VALUES: Regs = 0b11;
/// What a callee may read at a `call`: zmm0..8 (arguments).
pub const ARGUMENTS: Regs = 0xFF;

/// The bit of `r` (an xmm/ymm/zmm register or opmask), or 0.
pub fn bit(r: Register) -> Regs {
    if r.is_xmm() || r.is_ymm() || r.is_zmm() {
        1 << (r.number() & 31)
    } else if r.is_k() {
        1 << (32 + (r.number() & 7))
    } else {
        0
    }
}

/// The vector registers and opmasks `instr` reads, and those it overwrites whole.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::patch::liveness::uses;
///
/// // vpaddd ymm1, ymm2, ymm3: reads 2 and 3, overwrites 1 (VEX: zeroed to the top).
/// let (i, _) = decode(&[0xC5, 0xED, 0xFE, 0xCB], 0).unwrap();
/// assert_eq!(uses(&i), (0b1100, 0b10));
/// // paddd xmm1, xmm2: legacy SSE keeps the upper bits: overwrites nothing.
/// let (i, _) = decode(&[0x66, 0x0F, 0xFE, 0xCA], 0).unwrap();
/// assert_eq!(uses(&i), (0b110, 0));
/// ```
pub fn uses(instr: &Instruction) -> (Regs, Regs) {
    use Mnemonic as M;
    match instr.mnemonic() {
        // Keeps bits 127:0 of xmm0..15 (Intel SDM Vol. 2C, VZEROUPPER): overwrites nothing.
        M::Vzeroupper => return (0, 0),
        // Saving or restoring the whole state: everything is read (iced-x86 lists no vector
        // register for them).
        M::Fxsave
        | M::Fxsave64
        | M::Fxrstor
        | M::Fxrstor64
        | M::Xsave
        | M::Xsave64
        | M::Xsavec
        | M::Xsavec64
        | M::Xsaveopt
        | M::Xsaveopt64
        | M::Xsaves
        | M::Xsaves64
        | M::Xrstor
        | M::Xrstor64
        | M::Xrstors
        | M::Xrstors64 => return (ALL, 0),
        _ => {}
    }
    let mut info = iced_x86::InstructionInfoFactory::new();
    let info = info.info(instr);
    let (mut reads, mut kills) = (0, 0);
    let whole = matches!(
        instr.code().encoding(),
        iced_x86::EncodingKind::VEX | iced_x86::EncodingKind::EVEX
    ) && (instr.op_mask() == Register::None || instr.zeroing_masking());
    for u in info.used_registers() {
        let r = u.register();
        let b = bit(r);
        if b == 0 {
            continue;
        }
        match u.access() {
            OpAccess::Read | OpAccess::CondRead | OpAccess::ReadWrite | OpAccess::ReadCondWrite => {
                reads |= b
            }
            OpAccess::Write if r.is_k() || whole => kills |= b,
            _ => {}
        }
    }
    (reads, kills)
}

/// What the code after `site` may read of the vector registers and opmasks. `fetch(addr, buf)`
/// fills `buf` with the instruction bytes at `addr` (a patched site's original bytes) and
/// returns how many it could read.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::patch::liveness::{RETURN_VALUES, live_after};
///
/// // mov eax, [rdi]; add eax, 1; ret: integer code, so only the return values.
/// let code = [0x8B, 0x07, 0x83, 0xC0, 0x01, 0xC3];
/// let fetch = |addr: u64, buf: &mut [u8; 16]| {
///     let rest = code.get(addr as usize..).unwrap_or(&[]);
///     buf[..rest.len()].copy_from_slice(rest);
///     rest.len()
/// };
/// let (site, _) = decode(&code, 0).unwrap();
/// assert_eq!(live_after(&site, fetch), RETURN_VALUES);
/// // movdqa xmm5, xmm9 after it: xmm9 is read (and xmm5 only partly written).
/// let code = [0x8B, 0x07, 0x66, 0x45, 0x0F, 0x6F, 0xE9, 0xC3];
/// let fetch = |addr: u64, buf: &mut [u8; 16]| {
///     let rest = code.get(addr as usize..).unwrap_or(&[]);
///     buf[..rest.len()].copy_from_slice(rest);
///     rest.len()
/// };
/// assert_eq!(live_after(&site, fetch), RETURN_VALUES | 1 << 9);
/// ```
pub fn live_after(site: &Instruction, mut fetch: impl FnMut(u64, &mut [u8; 16]) -> usize) -> Regs {
    let mut live: Regs = 0;
    // Paths to follow: (address, registers overwritten so far on the path).
    let mut work: Vec<(u64, Regs)> = alloc::vec![(site.next_ip(), 0)];
    // Per address, the registers overwritten on every path that reached it so far: a path
    // that arrives having overwritten a superset can read nothing new.
    let mut seen: Vec<(u64, Regs)> = Vec::new();
    let mut steps = 0;
    while let Some((mut addr, mut killed)) = work.pop() {
        loop {
            match seen.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, k)) if *k & !killed == 0 => break,
                Some((_, k)) => *k &= killed,
                None => seen.push((addr, killed)),
            }
            steps += 1;
            if steps > BUDGET {
                return ALL;
            }
            let mut bytes = [0u8; 16];
            let n = fetch(addr, &mut bytes);
            let Ok((i, _)) = crate::decode::decode(&bytes[..n.min(16)], addr) else {
                live |= ALL & !killed;
                break;
            };
            let (reads, kills) = uses(&i);
            live |= reads & !killed;
            killed |= kills;
            if live | killed == ALL {
                return live;
            }
            match i.flow_control() {
                FlowControl::Next => addr = i.next_ip(),
                // syscall and sysenter return with every vector register intact.
                FlowControl::Call if matches!(i.mnemonic(), Mnemonic::Syscall) => {
                    addr = i.next_ip()
                }
                FlowControl::UnconditionalBranch if i.op0_kind() == OpKind::NearBranch64 => {
                    addr = i.near_branch_target()
                }
                FlowControl::ConditionalBranch if i.op0_kind() == OpKind::NearBranch64 => {
                    work.push((i.near_branch_target(), killed));
                    addr = i.next_ip();
                }
                FlowControl::Return => {
                    live |= RETURN_VALUES & !killed;
                    break;
                }
                // A direct call follows the ABI. An indirect one may not: a TLS descriptor
                // call (`call qword ptr [rax]`, -mtls-dialect=gnu2) preserves every register,
                // and code keeps values live across it.
                FlowControl::Call => {
                    live |= ARGUMENTS & !killed;
                    break;
                }
                _ => {
                    live |= ALL & !killed;
                    break;
                }
            }
        }
    }
    live
}
