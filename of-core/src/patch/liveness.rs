//! Which vector registers and opmasks the code after a region site may still read: the ones a
//! call-out must save and restore around device code ([`super::callout`]). Saving all 32 zmm
//! registers costs ~35 ns a call on an AVX-512 CPU — most of a patched access — while a
//! driver's integer code after a device access usually has none live.
//!
//! The analysis decodes forward from the site along every path (fall-through, both ways of a
//! conditional branch, direct jumps), tracking per path which registers have been fully
//! overwritten; a register read before it is overwritten on some path is *live*. A path ends:
//!
//! - at a `ret`: everything not yet overwritten is live, unless the function holding the site
//!   is one whose callers must follow the System V x86-64 ABI (§3.2.1, Figure 3.4: every
//!   vector register and opmask is caller-saved) — then only the return-value registers
//!   (xmm0/ymm0/zmm0 and xmm1) are. A caller may know better than the ABI: GCC's `-fipa-ra`
//!   (on at -O2) keeps values in caller-saved registers across a call to a function of the
//!   same translation unit that it saw leave them alone. So the ABI is trusted only for a
//!   function exported by a shared object with default visibility ([`abi_at_return`]): GCC
//!   assumes such a function may be interposed (`-fsemantic-interposition`, its default), and
//!   callers elsewhere cannot see its body;
//! - at a direct `call`: the argument registers zmm0–7 can be read by the callee, and the path
//!   goes on after the call with nothing more overwritten (the callee may leave registers
//!   alone, and `-fipa-ra` code relies on that);
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
//! Hand-written code that keeps vector values in registers across a return from an exported
//! function, against the ABI, sets `OF_PATCH_SAVE_ALL=1` (every call-out then saves
//! everything).

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

/// What the code after `site` may read of the vector registers and opmasks, trusting the ABI
/// at a `ret` if `abi_at_return` ([`abi_at_return`]). `fetch(addr, buf)` fills `buf` with the
/// instruction bytes at `addr` (a patched site's original bytes) and returns how many it could
/// read.
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
/// assert_eq!(live_after(&site, true, fetch), RETURN_VALUES);
/// // Not trusting the caller to follow the ABI: everything is live at the ret.
/// assert_eq!(live_after(&site, false, fetch), of_core::patch::liveness::ALL);
/// // movdqa xmm5, xmm9 after it: xmm9 is read (and xmm5 only partly written).
/// let code = [0x8B, 0x07, 0x66, 0x45, 0x0F, 0x6F, 0xE9, 0xC3];
/// let fetch = |addr: u64, buf: &mut [u8; 16]| {
///     let rest = code.get(addr as usize..).unwrap_or(&[]);
///     buf[..rest.len()].copy_from_slice(rest);
///     rest.len()
/// };
/// assert_eq!(live_after(&site, true, fetch), RETURN_VALUES | 1 << 9);
/// ```
pub fn live_after(
    site: &Instruction,
    abi_at_return: bool,
    mut fetch: impl FnMut(u64, &mut [u8; 16]) -> usize,
) -> Regs {
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
            if live == ALL {
                return live;
            }
            match i.flow_control() {
                FlowControl::Next => addr = i.next_ip(),
                // syscall returns with every vector register intact.
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
                    live |= if abi_at_return { RETURN_VALUES } else { ALL } & !killed;
                    break;
                }
                // A direct call's callee reads its arguments; the caller goes on after it. An
                // indirect call may be anything (a TLS descriptor call, `call qword ptr [rax]`
                // with -mtls-dialect=gnu2, preserves every register): below, all live.
                FlowControl::Call if i.op0_kind() == OpKind::NearBranch64 => {
                    live |= ARGUMENTS & !killed;
                    addr = i.next_ip();
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

/// `RTLD_DL_SYMENT` (glibc `dlfcn.h`): `dladdr1` also returns the symbol's `Elf64_Sym`.
const RTLD_DL_SYMENT: libc::c_int = 1;

/// Whether a `ret` of the function holding `site` returns to code that follows the System V
/// ABI: the function is a symbol a shared object exports (`dladdr1`, dlopen(3)) — global or
/// weak, default visibility, `STT_FUNC`, `site` within its size — and that object is not the
/// main program (an executable's functions cannot be interposed, so GCC's `-fipa-ra` applies
/// to calls to them). Ordinary code only (the patcher thread).
///
/// # Examples
///
/// ```
/// use of_core::patch::liveness::abi_at_return;
///
/// // A function of the C library (a shared object): exported, default visibility.
/// assert!(abi_at_return(libc::getpid as usize as u64));
/// // Not code at all.
/// assert!(!abi_at_return(0x1000));
/// ```
pub fn abi_at_return(site: u64) -> bool {
    // SAFETY: Dl_info is pointers only: all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    let mut sym: *mut libc::c_void = core::ptr::null_mut();
    // SAFETY: dladdr1 with valid out-pointers; it only reads the loader's tables.
    let found = unsafe {
        libc::dladdr1(
            site as *const libc::c_void,
            &mut info,
            &mut sym,
            RTLD_DL_SYMENT,
        )
    } != 0;
    if !found || sym.is_null() || info.dli_fbase.is_null() {
        return false;
    }
    // SAFETY: with RTLD_DL_SYMENT, a non-null `sym` is the symbol's Elf64_Sym.
    let sym = unsafe { &*sym.cast::<libc::Elf64_Sym>() };
    let start = info.dli_saddr as u64;
    let (kind, bind, visibility) = (sym.st_info & 0xF, sym.st_info >> 4, sym.st_other & 3);
    // STT_FUNC = 2; STB_GLOBAL = 1, STB_WEAK = 2; STV_DEFAULT = 0 (elf.h).
    if kind != 2 || !matches!(bind, 1 | 2) || visibility != 0 {
        return false;
    }
    if !(start <= site && site < start.saturating_add(sym.st_size)) {
        return false;
    }
    // The main program: its program headers (AT_PHDR) lie at its base + e_phoff.
    let base = info.dli_fbase as u64;
    // SAFETY: dli_fbase is where the object's ELF header is mapped (readable); e_phoff is the
    // 8 bytes at offset 0x20 of an Elf64_Ehdr.
    let phoff = unsafe { core::ptr::read_unaligned((base + 0x20) as *const u64) };
    // SAFETY: getauxval has no preconditions.
    let main_phdr = unsafe { libc::getauxval(libc::AT_PHDR) };
    base.wrapping_add(phoff) != main_phdr
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::code_asm::*;

    /// `live_after` for the code `a` assembles at 0 (the site is its first instruction).
    fn live(a: &mut CodeAssembler, abi_at_return: bool) -> Regs {
        let code = a.assemble(0).unwrap();
        let fetch = |addr: u64, buf: &mut [u8; 16]| {
            let rest = code.get(addr as usize..).unwrap_or(&[]);
            let n = rest.len().min(16);
            buf[..n].copy_from_slice(&rest[..n]);
            n
        };
        let (site, _) = crate::decode::decode(&code, 0).unwrap();
        live_after(&site, abi_at_return, fetch)
    }

    #[test]
    fn a_path_still_waiting_is_followed_after_another_makes_all_but_one_live() {
        // je A queues A; the fall-through overwrites ymm5, then an indirect jump makes all
        // else live: ymm5 is read on A and must not be missed.
        let mut a = CodeAssembler::new(64).unwrap();
        let (mut la, mut lb) = (a.create_label(), a.create_label());
        a.mov(eax, dword_ptr(rdi)).unwrap(); // the site
        a.test(eax, eax).unwrap();
        a.je(la).unwrap();
        a.vmovdqa(ymm5, ymmword_ptr(rsi)).unwrap();
        a.jne(lb).unwrap();
        a.jmp(rax).unwrap();
        a.set_label(&mut lb).unwrap();
        a.ret().unwrap();
        a.set_label(&mut la).unwrap();
        a.vmovdqa(ymmword_ptr(rdx), ymm5).unwrap();
        a.ret().unwrap();
        assert_eq!(live(&mut a, true), ALL);
    }

    #[test]
    fn a_return_makes_everything_live_unless_the_caller_follows_the_abi() {
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(byte_ptr(rdi), 1).unwrap(); // the site
        a.ret().unwrap();
        assert_eq!(live(&mut a, false), ALL);
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(byte_ptr(rdi), 1).unwrap();
        a.ret().unwrap();
        assert_eq!(live(&mut a, true), RETURN_VALUES);
    }

    #[test]
    fn the_code_after_a_direct_call_is_followed() {
        // A caller compiled with -fipa-ra may keep xmm9 across a call to a local function.
        let mut a = CodeAssembler::new(64).unwrap();
        let mut callee = a.create_label();
        a.mov(byte_ptr(rdi), 1).unwrap(); // the site
        a.call(callee).unwrap();
        a.movdqu(xmmword_ptr(rsi), xmm9).unwrap();
        a.ret().unwrap();
        a.set_label(&mut callee).unwrap();
        a.ret().unwrap();
        assert_eq!(live(&mut a, true), ARGUMENTS | 1 << 9 | RETURN_VALUES);
    }

    #[test]
    fn whole_register_writes_end_liveness_and_partial_ones_do_not() {
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(byte_ptr(rdi), 1).unwrap(); // the site
        a.vpxor(xmm0, xmm0, xmm0).unwrap(); // VEX: zmm0 whole
        a.movaps(xmm1, xmm2).unwrap(); // legacy: bits 511:128 of zmm1 kept
        a.ret().unwrap();
        // zmm0 overwritten before the ret; zmm1 still live (partly), xmm2 read.
        assert_eq!(live(&mut a, true), 0b110);
    }
}
