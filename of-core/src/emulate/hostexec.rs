//! Executing the register form of an instruction on the host ("fastop", generalised).
//!
//! KVM computes flags by running the real instruction on registers (`emulate.c`, "fastop"):
//! whatever the SDM calls undefined, the result is by construction what this CPU produces. We
//! apply the same idea to any instruction whose memory operand (ModRM `mod != 3`) can be replaced
//! by a register without changing its meaning: the ModRM byte is rewritten to `mod = 3`,
//! `rm = scratch`, the SIB and displacement bytes are dropped, the scratch register is loaded with
//! the map bytes the operand covered, and the resulting instruction runs with every other
//! general-purpose register and the status flags of the interrupted thread.
//!
//! Details that keep it exact:
//! - the scratch register is one the instruction does not name (explicitly, through ModRM.reg or
//!   VEX.vvvv, or implicitly, such as rdx:rax for `mul`); without REX only rax/rcx/rdx/rbx are
//!   candidates, because rm 4..7 would name ah..bh in byte instructions;
//! - the host's rsp is never replaced: an explicit rsp operand is renamed to a free register that
//!   holds the thread's rsp, and copied back afterwards;
//! - segment overrides, `0x67` and `lock` are dropped (they have no meaning in register form;
//!   `lock` with a register destination would be #UD), ignored REX prefixes are dropped, the
//!   effective REX/VEX keeps W, R (or gets the renamed R) and gets B for the scratch register;
//! - only the status flags and DF are loaded (never TF or AC), and DF is cleared afterwards.
//!
//! The rewritten instruction runs from a slot of a small pool of executable memory mapped once at
//! installation; slots are claimed with an atomic bitmap (lock-free, so nested signal handlers on
//! the same or other threads each get their own).

use super::EmulationError;
use crate::machine::{Machine, gpr_index};
use crate::map::STATUS_FLAGS;
use core::arch::asm;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// The direction flag (bit 10).
const DF: u64 = 1 << 10;

/// Bytes per code slot: 15 instruction bytes, `ret`, padding to a cache line.
const SLOT_SIZE: usize = 64;
/// Number of code slots (four 4-KiB pages).
const SLOTS: usize = 256;
const WORDS: usize = SLOTS / 64;

static POOL: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
/// 0: not mapped, 1: being mapped, 2: ready, 3: mapping failed.
static POOL_STATE: AtomicUsize = AtomicUsize::new(0);
static FREE_MAP: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// Maps the pool of executable code slots. Idempotent; async-signal-safe (one `mmap`).
///
/// Returns `false` if the kernel refuses writable+executable memory, in which case instructions
/// that need host execution are reported as not emulable.
///
/// # Examples
///
/// ```
/// use of_core::emulate::hostexec::init;
///
/// assert!(init()); // maps the pool
/// assert!(init()); // already mapped
/// ```
pub fn init() -> bool {
    loop {
        match POOL_STATE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // SAFETY: an anonymous private mapping at an address of the kernel's choosing
                // touches no existing memory.
                let p = unsafe {
                    libc::mmap(
                        core::ptr::null_mut(),
                        SLOTS * SLOT_SIZE,
                        libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    POOL_STATE.store(3, Ordering::Release);
                    return false;
                }
                POOL.store(p.cast(), Ordering::Release);
                POOL_STATE.store(2, Ordering::Release);
                return true;
            }
            Err(2) => return true,
            Err(3) => return false,
            Err(_) => core::hint::spin_loop(),
        }
    }
}

/// A claimed code slot, released on drop.
struct Slot {
    index: usize,
    ptr: *mut u8,
}

impl Slot {
    fn claim() -> Option<Slot> {
        if !init() {
            return None;
        }
        let base = POOL.load(Ordering::Acquire);
        for (w, word) in FREE_MAP.iter().enumerate() {
            let mut cur = word.load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros() as usize;
                match word.compare_exchange_weak(
                    cur,
                    cur | (1 << bit),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let index = w * 64 + bit;
                        // SAFETY: index < SLOTS, so the slot lies inside the pool mapping.
                        let ptr = unsafe { base.add(index * SLOT_SIZE) };
                        return Some(Slot { index, ptr });
                    }
                    Err(now) => cur = now,
                }
            }
        }
        None
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        FREE_MAP[self.index / 64].fetch_and(!(1u64 << (self.index % 64)), Ordering::Release);
    }
}

/// Registers in and out of a host execution, in the layout the trampoline expects.
///
/// # Examples
///
/// The trampoline addresses the fields by offset:
///
/// ```
/// use of_core::emulate::hostexec::HostRegs;
///
/// assert_eq!(core::mem::offset_of!(HostRegs, gpr), 0);
/// assert_eq!(core::mem::offset_of!(HostRegs, rflags), 16 * 8);
/// assert_eq!(core::mem::offset_of!(HostRegs, code), 16 * 8 + 8);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HostRegs {
    /// General-purpose registers in encoding order; slot 4 (rsp) is ignored.
    pub gpr: [u64; 16],
    /// rflags in (status flags and DF) and out.
    pub rflags: u64,
    /// Address of the code slot (`instruction; ret`).
    pub code: u64,
}

const _: () = assert!(core::mem::offset_of!(HostRegs, rflags) == 128);
const _: () = assert!(core::mem::offset_of!(HostRegs, code) == 136);

/// Runs the code at `regs.code` with the guest registers of `regs` and stores them back.
///
/// # Safety
/// `regs.code` must point to one instruction that accesses no memory and cannot fault, followed
/// by `ret` (0xC3).
unsafe fn run(regs: &mut HostRegs) {
    // SAFETY: the caller guarantees the code is a non-faulting, memory-free instruction followed
    // by `ret`; every register the block loads is declared clobbered or saved/restored here
    // (rbx, rbp), rsp is never changed across the block, and DF is cleared before leaving.
    unsafe {
        asm!(
            // rdi = &mut HostRegs for the whole prologue.
            "push rbp",                      // save host rbp (inline asm cannot clobber it)
            "push rbx",                      // save host rbx (reserved by LLVM)
            "push rdi",                      // [rsp] = &HostRegs, needed after the guest code
            "push qword ptr [rdi + 136]",    // [rsp] = code slot address
            "push qword ptr [rdi + 128]",    // guest status flags and DF
            "popfq",                         // rflags = guest status flags and DF
            "mov rax, [rdi + 0]",            // rax = guest rax
            "mov rcx, [rdi + 8]",            // rcx = guest rcx
            "mov rdx, [rdi + 16]",           // rdx = guest rdx
            "mov rbx, [rdi + 24]",           // rbx = guest rbx
            "mov rbp, [rdi + 40]",           // rbp = guest rbp (slot 4, rsp, stays the host's)
            "mov rsi, [rdi + 48]",           // rsi = guest rsi
            "mov r8, [rdi + 64]",            // r8..r15 = guest r8..r15
            "mov r9, [rdi + 72]",
            "mov r10, [rdi + 80]",
            "mov r11, [rdi + 88]",
            "mov r12, [rdi + 96]",
            "mov r13, [rdi + 104]",
            "mov r14, [rdi + 112]",
            "mov r15, [rdi + 120]",
            "mov rdi, [rdi + 56]",           // rdi = guest rdi (the block pointer is on the stack)
            "call qword ptr [rsp]",          // run `instruction; ret` in the code slot
            "pushfq",                        // [rsp] = flags out, [rsp+8] = code, [rsp+16] = block
            "xchg rdi, [rsp + 16]",          // rdi = &HostRegs, [rsp+16] = guest rdi out
            "mov [rdi + 0], rax",            // store every guest register but rsp and rdi
            "mov [rdi + 8], rcx",
            "mov [rdi + 16], rdx",
            "mov [rdi + 24], rbx",
            "mov [rdi + 40], rbp",
            "mov [rdi + 48], rsi",
            "mov [rdi + 64], r8",
            "mov [rdi + 72], r9",
            "mov [rdi + 80], r10",
            "mov [rdi + 88], r11",
            "mov [rdi + 96], r12",
            "mov [rdi + 104], r13",
            "mov [rdi + 112], r14",
            "mov [rdi + 120], r15",
            "pop rax",                       // rax = flags out
            "mov [rdi + 128], rax",
            "pop rax",                       // drop the code address
            "pop rax",                       // rax = guest rdi out
            "mov [rdi + 56], rax",
            "cld",                           // the ABI requires DF clear
            "pop rbx",                       // restore host rbx
            "pop rbp",                       // restore host rbp
            inout("rdi") regs as *mut HostRegs => _,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        );
    }
}

/// Where the ModRM memory operand sits in the raw bytes of an instruction.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Index of the first byte after the legacy/REX prefixes (VEX or opcode).
    prefix_end: usize,
    /// Index of the effective REX prefix, if any.
    rex: Option<usize>,
    /// Index and length (2 or 3) of a VEX prefix, if any.
    vex: Option<(usize, usize)>,
    /// Index of the ModRM byte.
    modrm: usize,
    /// Index of the first byte after ModRM, SIB and displacement (immediates follow).
    operand_end: usize,
}

fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3
    )
}

fn layout(raw: &[u8]) -> Option<Layout> {
    let mut i = 0;
    let mut rex = None;
    while i < raw.len() {
        let b = raw[i];
        if is_legacy_prefix(b) {
            rex = None; // a REX followed by a legacy prefix is ignored
        } else if b & 0xF0 == 0x40 {
            rex = Some(i);
        } else {
            break;
        }
        i += 1;
    }
    let prefix_end = i;
    let b = *raw.get(i)?;
    let (vex, modrm) = match b {
        0xC5 => (Some((i, 2)), i + 3),
        0xC4 => (Some((i, 3)), i + 4),
        0x62 | 0x8F => return None, // EVEX / XOP
        0x0F => match *raw.get(i + 1)? {
            0x38 | 0x3A => (None, i + 3),
            0x0F => return None, // 3DNow!
            _ => (None, i + 2),
        },
        _ => (None, i + 1),
    };
    if vex.is_some() && rex.is_some() {
        return None;
    }
    let m = *raw.get(modrm)?;
    let md = m >> 6;
    let rm = m & 7;
    if md == 3 {
        return None;
    }
    let has_sib = rm == 4;
    let base = if has_sib {
        *raw.get(modrm + 1)? & 7
    } else {
        rm
    };
    let disp = match md {
        0 if rm == 5 || (has_sib && base == 5) => 4,
        0 => 0,
        1 => 1,
        _ => 4,
    };
    Some(Layout {
        prefix_end,
        rex,
        vex,
        modrm,
        operand_end: modrm + 1 + usize::from(has_sib) + disp,
    })
}

/// Encoding number (0..16) of the 64-bit register behind a general-purpose register view,
/// ah/ch/dh/bh included.
fn full_gpr(reg: Register) -> Option<usize> {
    match reg {
        Register::AH | Register::CH | Register::DH | Register::BH => {
            Some((reg as u32 - Register::AH as u32) as usize)
        }
        _ => gpr_index(reg).map(|(n, _)| n),
    }
}

/// Registers an instruction reads or writes without naming them in its operands (Intel SDM
/// Vol. 2, each instruction's Operation section), as a bit set by encoding number.
fn implicit_registers(instr: &Instruction) -> u16 {
    const RAX: u16 = 1 << 0;
    const RDX: u16 = 1 << 2;
    match instr.mnemonic() {
        Mnemonic::Mul | Mnemonic::Div | Mnemonic::Idiv => RAX | RDX,
        Mnemonic::Imul if instr.op_count() == 1 => RAX | RDX,
        Mnemonic::Cmpxchg => RAX,
        Mnemonic::Mulx => RDX,
        _ => 0,
    }
}

/// The rewritten register form, ready to copy into a code slot.
///
/// # Examples
///
/// ```
/// use iced_x86::{Mnemonic, Register};
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::register_form;
///
/// // shl qword ptr [8], 3 (48 c1 24 25 08 00 00 00 03)
/// let bytes = [0x48, 0xC1, 0x24, 0x25, 0x08, 0x00, 0x00, 0x00, 0x03];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let form = register_form(&instr, &bytes, &offsets).unwrap();
/// // The form is `shl rN, 3; ret` with rN the scratch register.
/// let (shl, _) = decode(form.bytes(), 0).unwrap();
/// assert_eq!(shl.mnemonic(), Mnemonic::Shl);
/// assert_eq!(shl.op0_register(), Register::RAX + form.scratch as u32);
/// assert_eq!(shl.immediate8(), 3);
/// assert_eq!(form.bytes()[shl.len()..], [0xC3]); // ret
/// assert_eq!(form.rsp_alias, None);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RegisterForm {
    bytes: [u8; 16],
    len: usize,
    /// The register (encoding number) that stands for the memory operand.
    pub scratch: usize,
    /// The register that stands for an explicit rsp operand, if any.
    pub rsp_alias: Option<usize>,
}

impl RegisterForm {
    /// The encoded bytes, `ret` included.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::emulate::hostexec::verbatim;
    ///
    /// // neg rax (48 f7 d8) as its own register form: the bytes and a `ret`.
    /// let form = verbatim(&[0x48, 0xF7, 0xD8]).unwrap();
    /// assert_eq!(form.bytes(), &[0x48, 0xF7, 0xD8, 0xC3]);
    /// ```
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Rewrites `raw` (the bytes `instr` was decoded from) into its register form.
///
/// # Errors
/// [`EmulationError::Unsupported`] if the encoding cannot be rewritten (EVEX/XOP, no free
/// register, or iced-x86's view of the operand layout disagrees with ours).
///
/// # Examples
///
/// An explicit rsp operand is renamed, because the host's rsp is never replaced:
///
/// ```
/// use iced_x86::{Mnemonic, Register};
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::register_form;
///
/// // add rsp, qword ptr [8] (48 03 24 25 08 00 00 00)
/// let bytes = [0x48, 0x03, 0x24, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let form = register_form(&instr, &bytes, &offsets).unwrap();
/// let alias = form.rsp_alias.unwrap();
/// assert!(alias != 4 && alias != form.scratch);
/// let (add, _) = decode(form.bytes(), 0).unwrap();
/// assert_eq!(add.mnemonic(), Mnemonic::Add);
/// assert_eq!(add.op0_register(), Register::RAX + alias as u32);
/// assert_eq!(add.op1_register(), Register::RAX + form.scratch as u32);
/// ```
pub fn register_form(
    instr: &Instruction,
    raw: &[u8],
    offsets: &iced_x86::ConstantOffsets,
) -> Result<RegisterForm, EmulationError> {
    let unsupported = EmulationError::Unsupported("encoding cannot be executed in register form");
    if !cpu_supports(instr) {
        return Err(EmulationError::Unsupported(
            "the host CPU does not implement this instruction",
        ));
    }
    let raw = raw.get(..instr.len()).ok_or(unsupported)?;
    let lay = layout(raw).ok_or(unsupported)?;
    // Cross-check with the decoder so we never execute a misparsed instruction.
    if offsets.has_displacement()
        && (offsets.displacement_offset() + offsets.displacement_size() != lay.operand_end)
    {
        return Err(unsupported);
    }
    if offsets.has_immediate() && offsets.immediate_offset() != lay.operand_end {
        return Err(unsupported);
    }

    let mut used = implicit_registers(instr) | (1 << 4) | (1 << 5);
    let mut names_rsp = false;
    for i in 0..instr.op_count() {
        if instr.op_kind(i) == OpKind::Register {
            let r = instr.op_register(i);
            if let Some(n) = full_gpr(r) {
                used |= 1 << n;
                if n == 4 {
                    names_rsp = true;
                }
            } else if !r.is_gpr() && r != Register::None {
                // Vector, segment or control register operands are not handled here.
                return Err(unsupported);
            }
        }
    }

    let extended = lay.rex.is_some() || matches!(lay.vex, Some((_, 3)));
    let candidates: &[usize] = if extended {
        &[11, 10, 9, 8, 12, 13, 14, 15, 3, 1, 2, 0, 6, 7]
    } else {
        &[3, 1, 2, 0]
    };
    let pick = |used: &mut u16| -> Option<usize> {
        let n = *candidates.iter().find(|&&n| *used & (1 << n) == 0)?;
        *used |= 1 << n;
        Some(n)
    };
    let scratch = pick(&mut used).ok_or(unsupported)?;

    // Current values of the extension bits, and the reg / vvvv fields.
    let modrm = raw[lay.modrm];
    let (mut r_ext, w_bits) = match (lay.rex, lay.vex) {
        (Some(p), _) => ((raw[p] >> 2) & 1, raw[p] & 0x48),
        (None, Some((p, 2))) => (((!raw[p + 1]) >> 7) & 1, 0),
        (None, Some((p, _))) => (((!raw[p + 1]) >> 7) & 1, 0),
        (None, None) => (0, 0),
    };
    let mut reg_field = ((modrm >> 3) & 7) | (r_ext << 3);
    let mut vvvv = match lay.vex {
        Some((p, 2)) => Some((!raw[p + 1] >> 3) & 15),
        Some((p, _)) => Some((!raw[p + 2] >> 3) & 15),
        None => None,
    };
    let mut rsp_alias = None;
    if names_rsp {
        let alias = pick(&mut used).ok_or(unsupported)?;
        // rsp may be named twice (`mulx esp, esp, [m]`: ModRM.reg and VEX.vvvv): rename both.
        let mut renamed = false;
        if reg_field == 4 {
            if alias >= 8 && !extended {
                return Err(unsupported);
            }
            reg_field = alias as u8;
            r_ext = (alias >> 3) as u8;
            renamed = true;
        }
        if vvvv == Some(4) {
            vvvv = Some(alias as u8);
            renamed = true;
        }
        if !renamed {
            return Err(unsupported);
        }
        rsp_alias = Some(alias);
    }
    let b_ext = (scratch >> 3) as u8;

    let mut out = [0u8; 16];
    let mut n = 0;
    for (j, &b) in raw[..lay.prefix_end].iter().enumerate() {
        let keep = match b {
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x67 | 0xF0 => false,
            0x40..=0x4F => Some(j) == lay.rex,
            _ => true,
        };
        if !keep {
            continue;
        }
        out[n] = if Some(j) == lay.rex {
            0x40 | w_bits | (r_ext << 2) | b_ext
        } else {
            b
        };
        n += 1;
    }
    let mut j = lay.prefix_end;
    if let Some((p, len)) = lay.vex {
        let v = vvvv.unwrap_or(0);
        if len == 2 {
            if b_ext != 0 {
                return Err(unsupported);
            }
            out[n] = 0xC5;
            out[n + 1] = ((!r_ext & 1) << 7) | ((!v & 15) << 3) | (raw[p + 1] & 7);
            n += 2;
        } else {
            out[n] = 0xC4;
            out[n + 1] = ((!r_ext & 1) << 7) | (1 << 6) | ((!b_ext & 1) << 5) | (raw[p + 1] & 0x1F);
            out[n + 2] = (raw[p + 2] & 0x87) | ((!v & 15) << 3);
            n += 3;
        }
        j = p + len;
    }
    // Opcode bytes up to ModRM.
    while j < lay.modrm {
        out[n] = raw[j];
        n += 1;
        j += 1;
    }
    out[n] = 0xC0 | ((reg_field & 7) << 3) | (scratch as u8 & 7);
    n += 1;
    for &b in &raw[lay.operand_end..] {
        out[n] = b;
        n += 1;
    }
    out[n] = 0xC3; // ret
    n += 1;
    Ok(RegisterForm {
        bytes: out,
        len: n,
        scratch,
        rsp_alias,
    })
}

/// Runs `form` against the registers of `m` with `operand` (the bytes of the memory operand,
/// zero-extended) in the scratch register. Register results and the status flags are written
/// back to `m`; the new value of the scratch register (the memory operand's result) is returned.
/// Nothing of `m` changes on error.
///
/// # Errors
/// [`EmulationError::Unsupported`] if no code slot is available.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::{execute, register_form};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// // mul qword ptr [8] (48 f7 24 25 08 00 00 00): rdx:rax = rax * operand.
/// let bytes = [0x48, 0xF7, 0x24, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let form = register_form(&instr, &bytes, &offsets).unwrap();
/// m.gpr[0] = 1 << 32; // rax
/// let operand = 3 << 32; // what the memory operand held
/// execute(&mut m, &form, operand).unwrap();
/// // 2^32 * (3 * 2^32) = 3 * 2^64: rdx = 3, rax = 0; the high half is not zero, so CF = OF = 1.
/// assert_eq!((m.gpr[0], m.gpr[2]), (0, 3));
/// assert_eq!(m.rflags & 0x801, 0x801);
/// ```
pub fn execute<M: Machine + ?Sized>(
    m: &mut M,
    form: &RegisterForm,
    operand: u64,
) -> Result<u64, EmulationError> {
    let slot = Slot::claim().ok_or(EmulationError::Unsupported(
        "no executable memory for host execution",
    ))?;
    let bytes = form.bytes();
    // SAFETY: the slot is ours until `slot` drops and is SLOT_SIZE >= 17 bytes long.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), slot.ptr, bytes.len()) };
    let mut regs = HostRegs {
        gpr: [0; 16],
        rflags: (m.rflags() & (STATUS_FLAGS | DF)) | 2,
        code: slot.ptr as u64,
    };
    for (i, g) in regs.gpr.iter_mut().enumerate() {
        *g = m.gpr(i);
    }
    regs.gpr[form.scratch] = operand;
    if let Some(a) = form.rsp_alias {
        regs.gpr[a] = m.gpr(4);
    }
    // SAFETY: `register_form` produced one register-only instruction from a whitelist the
    // caller checked, followed by `ret`; divide errors were ruled out by the caller.
    unsafe { run(&mut regs) };
    drop(slot);
    for i in 0..16 {
        if i == 4 || i == form.scratch || Some(i) == form.rsp_alias {
            continue;
        }
        if regs.gpr[i] != m.gpr(i) {
            m.set_gpr(i, regs.gpr[i]);
        }
    }
    if let Some(a) = form.rsp_alias {
        m.set_gpr(4, regs.gpr[a]);
    }
    let old = m.rflags();
    m.set_rflags((old & !STATUS_FLAGS) | (regs.rflags & STATUS_FLAGS));
    Ok(regs.gpr[form.scratch])
}

/// The register form of an instruction that already has no memory operand: its own bytes (at
/// most 15) followed by `ret`. Used by run-ahead for register-only instructions; the caller
/// guarantees the instruction names neither rsp nor rip and cannot fault.
///
/// # Examples
///
/// ```
/// use of_core::emulate::hostexec::{execute, verbatim};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[1] = 0b1_0000; // rcx
/// // bsf rax, rcx (48 0f bc c1): the index of the lowest set bit.
/// let form = verbatim(&[0x48, 0x0F, 0xBC, 0xC1]).unwrap();
/// execute(&mut m, &form, 0).unwrap();
/// assert_eq!(m.gpr[0], 4);
/// assert_eq!(m.rflags & 0x40, 0); // ZF clear: the source was not zero
/// assert!(verbatim(&[0x90; 16]).is_none()); // longer than any instruction
/// ```
pub fn verbatim(raw: &[u8]) -> Option<RegisterForm> {
    if raw.len() > 15 {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes[..raw.len()].copy_from_slice(raw);
    bytes[raw.len()] = 0xC3;
    // Slot 4 (rsp) is never loaded into or stored from the guest registers, so naming it as the
    // scratch register makes `execute` ignore the operand.
    Some(RegisterForm {
        bytes,
        len: raw.len() + 1,
        scratch: 4,
        rsp_alias: None,
    })
}

/// Vector registers in and out of [`execute_vector`], in the layout its trampoline expects.
///
/// # Examples
///
/// The trampoline addresses the fields by offset:
///
/// ```
/// use of_core::emulate::hostexec::VectorRegs;
///
/// assert_eq!(core::mem::offset_of!(VectorRegs, ymm), 0);
/// assert_eq!(core::mem::offset_of!(VectorRegs, mxcsr), 16 * 32);
/// assert_eq!(core::mem::offset_of!(VectorRegs, host_mxcsr), 16 * 32 + 4);
/// assert_eq!(core::mem::align_of::<VectorRegs>(), 32);
/// ```
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub struct VectorRegs {
    /// ymm0..ymm15, 32 little-endian bytes each.
    pub ymm: [[u8; 32]; 16],
    /// MXCSR to run with (in) and after the instruction (out).
    pub mxcsr: u32,
    /// The host's MXCSR, saved and restored by the trampoline.
    pub host_mxcsr: u32,
}

const _: () = assert!(core::mem::offset_of!(VectorRegs, mxcsr) == 512);
const _: () = assert!(core::mem::offset_of!(VectorRegs, host_mxcsr) == 516);

/// Like [`run`], with all sixteen ymm registers and MXCSR loaded from and stored to `v`.
///
/// # Safety
/// As [`run`]; the host must support AVX (the trampoline uses `vmovdqu ymm`).
unsafe fn run_vector(regs: &mut HostRegs, v: &mut VectorRegs) {
    // SAFETY: as in `run`; every vector register is declared clobbered through clobber_abi("C"),
    // and the host's MXCSR is restored before leaving.
    unsafe {
        asm!(
            // rdi = &HostRegs, rsi = &VectorRegs.
            "push rbp",                      // save host rbp
            "push rbx",                      // save host rbx
            "push rsi",                      // [rsp] = &VectorRegs, needed afterwards
            "stmxcsr [rsi + 516]",           // save the host's MXCSR
            "ldmxcsr [rsi + 512]",           // MXCSR = guest's (exceptions masked by the caller)
            "vmovdqu ymm0, [rsi + 0]",       // ymm0..ymm15 = guest ymm0..ymm15
            "vmovdqu ymm1, [rsi + 32]",
            "vmovdqu ymm2, [rsi + 64]",
            "vmovdqu ymm3, [rsi + 96]",
            "vmovdqu ymm4, [rsi + 128]",
            "vmovdqu ymm5, [rsi + 160]",
            "vmovdqu ymm6, [rsi + 192]",
            "vmovdqu ymm7, [rsi + 224]",
            "vmovdqu ymm8, [rsi + 256]",
            "vmovdqu ymm9, [rsi + 288]",
            "vmovdqu ymm10, [rsi + 320]",
            "vmovdqu ymm11, [rsi + 352]",
            "vmovdqu ymm12, [rsi + 384]",
            "vmovdqu ymm13, [rsi + 416]",
            "vmovdqu ymm14, [rsi + 448]",
            "vmovdqu ymm15, [rsi + 480]",
            "push rdi",                      // [rsp] = &HostRegs
            "push qword ptr [rdi + 136]",    // [rsp] = code slot address
            "push qword ptr [rdi + 128]",    // guest status flags and DF
            "popfq",                         // rflags = guest status flags and DF
            "mov rax, [rdi + 0]",            // guest GPRs, as in `run`
            "mov rcx, [rdi + 8]",
            "mov rdx, [rdi + 16]",
            "mov rbx, [rdi + 24]",
            "mov rbp, [rdi + 40]",
            "mov rsi, [rdi + 48]",
            "mov r8, [rdi + 64]",
            "mov r9, [rdi + 72]",
            "mov r10, [rdi + 80]",
            "mov r11, [rdi + 88]",
            "mov r12, [rdi + 96]",
            "mov r13, [rdi + 104]",
            "mov r14, [rdi + 112]",
            "mov r15, [rdi + 120]",
            "mov rdi, [rdi + 56]",           // guest rdi last
            "call qword ptr [rsp]",          // run `instruction; ret`
            "pushfq",                        // [rsp] = flags, [rsp+8] = code, [rsp+16] = HostRegs
            "xchg rdi, [rsp + 16]",          // rdi = &HostRegs, [rsp+16] = guest rdi out
            "mov [rdi + 0], rax",            // store guest GPRs but rsp and rdi
            "mov [rdi + 8], rcx",
            "mov [rdi + 16], rdx",
            "mov [rdi + 24], rbx",
            "mov [rdi + 40], rbp",
            "mov [rdi + 48], rsi",
            "mov [rdi + 64], r8",
            "mov [rdi + 72], r9",
            "mov [rdi + 80], r10",
            "mov [rdi + 88], r11",
            "mov [rdi + 96], r12",
            "mov [rdi + 104], r13",
            "mov [rdi + 112], r14",
            "mov [rdi + 120], r15",
            "pop rax",                       // flags out
            "mov [rdi + 128], rax",
            "pop rax",                       // drop the code address
            "pop rax",                       // guest rdi out
            "mov [rdi + 56], rax",
            "pop rsi",                       // rsi = &VectorRegs
            "vmovdqu [rsi + 0], ymm0",       // store guest ymm0..ymm15
            "vmovdqu [rsi + 32], ymm1",
            "vmovdqu [rsi + 64], ymm2",
            "vmovdqu [rsi + 96], ymm3",
            "vmovdqu [rsi + 128], ymm4",
            "vmovdqu [rsi + 160], ymm5",
            "vmovdqu [rsi + 192], ymm6",
            "vmovdqu [rsi + 224], ymm7",
            "vmovdqu [rsi + 256], ymm8",
            "vmovdqu [rsi + 288], ymm9",
            "vmovdqu [rsi + 320], ymm10",
            "vmovdqu [rsi + 352], ymm11",
            "vmovdqu [rsi + 384], ymm12",
            "vmovdqu [rsi + 416], ymm13",
            "vmovdqu [rsi + 448], ymm14",
            "vmovdqu [rsi + 480], ymm15",
            "stmxcsr [rsi + 512]",           // guest MXCSR out (sticky exception flags)
            "ldmxcsr [rsi + 516]",           // restore the host's MXCSR
            "vzeroupper",                    // leave no dirty upper state to SSE code
            "cld",                           // the ABI requires DF clear
            "pop rbx",                       // restore host rbx
            "pop rbp",                       // restore host rbp
            inout("rdi") regs as *mut HostRegs => _,
            inout("rsi") v as *mut VectorRegs => _,
            out("rax") _, out("rcx") _, out("rdx") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            clobber_abi("C"),
        );
    }
}

/// The register form of a vector instruction (see [`vector_register_form`]).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::vector_register_form;
///
/// // cvtsi2sd xmm0, qword ptr [8] (f2 48 0f 2a 04 25 08 00 00 00): the register form of the
/// // memory operand is a general-purpose register.
/// let bytes = [0xF2, 0x48, 0x0F, 0x2A, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let v = vector_register_form(&instr, &bytes, &offsets).unwrap();
/// assert!(v.scratch_gpr);
/// assert_ne!(v.form.scratch, 4); // never rsp
/// ```
#[derive(Clone, Copy, Debug)]
pub struct VectorForm {
    /// The rewritten instruction; `form.scratch` is the register standing for the memory
    /// operand.
    pub form: RegisterForm,
    /// Whether the scratch register is a general-purpose register (`cvtsi2sd xmm, r/m64`: the
    /// register form of a GPR-or-memory operand) rather than an xmm/ymm register.
    pub scratch_gpr: bool,
}

/// The register form of a vector instruction: ModRM.rm names a scratch register, number `n`,
/// that the instruction does not use as a vector or general-purpose register (`n` is never 4:
/// rsp). The rewrite is verified by decoding it: the result must be the same mnemonic with the
/// memory operand replaced by register `n` — xmm/ymm `n`, or GPR `n` for operands whose
/// register form is a GPR — so forms whose register encoding means another instruction (movlps
/// and movhlps, for example) are refused.
///
/// # Errors
/// [`EmulationError::Unsupported`] when no such form exists.
///
/// # Examples
///
/// ```
/// use iced_x86::{Mnemonic, Register};
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::vector_register_form;
///
/// // addps xmm1, xmmword ptr [0x100] (0f 58 0c 25 00 01 00 00)
/// let bytes = [0x0F, 0x58, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let v = vector_register_form(&instr, &bytes, &offsets).unwrap();
/// assert!(!v.scratch_gpr);
/// let (form, _) = decode(v.form.bytes(), 0).unwrap();
/// assert_eq!(form.mnemonic(), Mnemonic::Addps);
/// assert_eq!(form.op0_register(), Register::XMM1);
/// assert_eq!(form.op1_register(), Register::XMM0 + v.form.scratch as u32);
/// assert!(v.form.scratch != 0 && v.form.scratch != 1);
/// ```
pub fn vector_register_form(
    instr: &Instruction,
    raw: &[u8],
    offsets: &iced_x86::ConstantOffsets,
) -> Result<VectorForm, EmulationError> {
    let unsupported =
        EmulationError::Unsupported("vector instruction cannot be executed in register form");
    if !cpu_supports(instr) {
        return Err(EmulationError::Unsupported(
            "the host CPU does not implement this instruction",
        ));
    }
    let raw = raw.get(..instr.len()).ok_or(unsupported)?;
    let lay = layout(raw).ok_or(unsupported)?;
    if offsets.has_displacement()
        && (offsets.displacement_offset() + offsets.displacement_size() != lay.operand_end)
    {
        return Err(unsupported);
    }
    if offsets.has_immediate() && offsets.immediate_offset() != lay.operand_end {
        return Err(unsupported);
    }
    let mem_op = (0..instr.op_count())
        .find(|&i| instr.op_kind(i) == OpKind::Memory)
        .ok_or(unsupported)?;
    // xmm0 is an implicit operand of the variable blends and sha256rnds2; rsp (4) is never a
    // scratch register; rax/rcx/rdx are implicit in the string compares.
    let mut used = (1u16 << 4) | (1 << 0);
    for i in 0..instr.op_count() {
        if instr.op_kind(i) == OpKind::Register {
            let r = instr.op_register(i);
            if r.is_xmm() {
                used |= 1 << ((r as u32 - Register::XMM0 as u32) & 15);
            } else if r.is_ymm() {
                used |= 1 << ((r as u32 - Register::YMM0 as u32) & 15);
            } else if r.is_gpr() && r.full_register() != Register::RSP {
                if let Some((n, _)) = gpr_index(r) {
                    used |= 1 << n;
                }
            } else {
                return Err(unsupported);
            }
        }
    }
    if matches!(
        instr.mnemonic(),
        Mnemonic::Pcmpestri
            | Mnemonic::Pcmpestri64
            | Mnemonic::Pcmpestrm
            | Mnemonic::Pcmpestrm64
            | Mnemonic::Pcmpistri
            | Mnemonic::Pcmpistrm
            | Mnemonic::Vpcmpestri
            | Mnemonic::Vpcmpestri64
            | Mnemonic::Vpcmpestrm
            | Mnemonic::Vpcmpestrm64
            | Mnemonic::Vpcmpistri
            | Mnemonic::Vpcmpistrm
    ) {
        used |= 0b111;
    }
    let can_extend = lay.rex.is_some() || matches!(lay.vex, Some((_, 3)));
    let limit = if can_extend { 16 } else { 8 };
    let scratch = (0..limit)
        .find(|&n| used & (1 << n) == 0)
        .ok_or(unsupported)?;
    let b_ext = (scratch >> 3) as u8;
    let mut out = [0u8; 16];
    let mut n = 0;
    for (j, &b) in raw[..lay.prefix_end].iter().enumerate() {
        let keep = match b {
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x67 | 0xF0 => false,
            0x40..=0x4F => Some(j) == lay.rex,
            _ => true,
        };
        if keep {
            out[n] = if Some(j) == lay.rex {
                (b & !0x03) | b_ext
            } else {
                b
            };
            n += 1;
        }
    }
    let mut j = lay.prefix_end;
    if let Some((p, len)) = lay.vex {
        out[n..n + len].copy_from_slice(&raw[p..p + len]);
        if len == 3 {
            // VEX.X = 0 and VEX.B for the scratch register (both stored inverted).
            out[n + 1] = (raw[p + 1] | 0x40) & !0x20 | ((!b_ext & 1) << 5);
        } else if b_ext != 0 {
            return Err(unsupported);
        }
        n += len;
        j = p + len;
    }
    while j < lay.modrm {
        out[n] = raw[j];
        n += 1;
        j += 1;
    }
    out[n] = 0xC0 | (raw[lay.modrm] & 0x38) | (scratch as u8 & 7);
    n += 1;
    for &b in &raw[lay.operand_end..] {
        out[n] = b;
        n += 1;
    }
    // Verify the rewrite means what we think.
    let check =
        iced_x86::Decoder::with_ip(64, &out[..n], 0, iced_x86::DecoderOptions::NONE).decode();
    if check.is_invalid()
        || check.mnemonic() != instr.mnemonic()
        || check.op_count() != instr.op_count()
        || check.len() != n
    {
        return Err(unsupported);
    }
    let mut scratch_gpr = false;
    for i in 0..instr.op_count() {
        if i == mem_op {
            let r = check.op_register(i);
            let num = if r.is_xmm() {
                r as u32 - Register::XMM0 as u32
            } else if r.is_ymm() {
                r as u32 - Register::YMM0 as u32
            } else if let (true, Some((g, _))) = (r.is_gpr32() || r.is_gpr64(), gpr_index(r)) {
                scratch_gpr = true;
                g as u32
            } else {
                return Err(unsupported);
            };
            if check.op_kind(i) != OpKind::Register || num as usize != scratch {
                return Err(unsupported);
            }
        } else if check.op_kind(i) != instr.op_kind(i)
            || (instr.op_kind(i) == OpKind::Register
                && check.op_register(i) != instr.op_register(i))
        {
            return Err(unsupported);
        }
    }
    out[n] = 0xC3;
    n += 1;
    Ok(VectorForm {
        form: RegisterForm {
            bytes: out,
            len: n,
            scratch,
            rsp_alias: None,
        },
        scratch_gpr,
    })
}

/// What a vector host execution found.
///
/// # Examples
///
/// 1.0 / 0.0 with the zero-divide exception unmasked:
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::{
///     VectorOutcome, execute_vector, vector_register_form, vector_supported,
/// };
/// use of_core::RegisterFile;
///
/// if !vector_supported() {
///     return;
/// }
/// let mut m = RegisterFile::default();
/// m.xmm[0] = u128::from(1.0f32.to_bits());
/// m.mxcsr = 0x1F80 & !(1 << 9); // ZM (bit 9) clear: #XM on division by zero
/// // divss xmm0, dword ptr [0x110] (f3 0f 5e 04 25 10 01 00 00)
/// let bytes = [0xF3, 0x0F, 0x5E, 0x04, 0x25, 0x10, 0x01, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let v = vector_register_form(&instr, &bytes, &offsets).unwrap();
/// let mut operand = [0u8; 32]; // 0.0
/// let r = execute_vector(&mut m, &v, &mut operand).unwrap();
/// // ZE (bit 2) is a pre-computation exception; nothing was written.
/// assert_eq!(
///     r,
///     VectorOutcome::Unmasked { mxcsr: (0x1F80 & !(1 << 9)) | (1 << 2), before_computation: true }
/// );
/// assert_eq!(m.xmm[0], u128::from(1.0f32.to_bits()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorOutcome {
    /// Done; the Machine is updated.
    Done,
    /// The instruction raises a SIMD floating-point exception that the guest's MXCSR leaves
    /// unmasked (#XM); nothing was changed.
    Unmasked {
        /// MXCSR as the CPU leaves it when it raises #XM (the detected exception flags set).
        mxcsr: u32,
        /// Whether it is a pre-computation exception (IE, DE, ZE: Intel SDM Vol. 1 §11.5.1),
        /// detected before any result is computed.
        before_computation: bool,
    },
}

/// Whether the host can run [`execute_vector`] (AVX enabled by the OS).
///
/// # Examples
///
/// ```
/// use of_core::emulate::hostexec::vector_supported;
///
/// assert_eq!(vector_supported(), std::arch::is_x86_feature_detected!("avx"));
/// ```
pub fn vector_supported() -> bool {
    crate::signal::context::avx_enabled()
}

/// Runs a vector register form with `operand` (up to 32 bytes, zero-extended) in the scratch
/// vector register, and writes back GPRs, status flags, xmm/ymm and MXCSR flags. On return
/// `operand` holds the scratch register's final contents (the result of a form whose memory
/// operand is the destination).
///
/// SIMD floating-point exceptions (Intel SDM Vol. 1 §11.5.1): the instruction runs with every
/// exception masked and the flags cleared, so the flags it detects are known. If one of them is
/// unmasked in the guest's MXCSR, the real instruction would have raised #XM without writing
/// its destination: then nothing changes and [`VectorOutcome::Unmasked`] carries the MXCSR the
/// CPU would leave (the detected flags set: the pre-computation ones IE DE ZE alone when one
/// of those is unmasked, else all). An unmasked underflow is also signalled for tiny *exact*
/// results, which a masked run does not flag: when the guest unmasks underflow, a second run
/// with FTZ set finds them. Known limit: alongside an unmasked overflow or underflow the CPU
/// sets PE only if the exponent-unbounded result is inexact, while masked runs always flag it
/// for those elements.
///
/// # Errors
/// [`EmulationError::Unsupported`] if no code slot is available or AVX is not enabled.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::{
///     VectorOutcome, execute_vector, vector_register_form, vector_supported,
/// };
/// use of_core::RegisterFile;
///
/// if !vector_supported() {
///     return;
/// }
/// let lanes = |v: [f32; 4]| -> u128 {
///     v.iter().enumerate().map(|(i, x)| u128::from(x.to_bits()) << (32 * i)).sum()
/// };
/// let mut m = RegisterFile::default();
/// m.xmm[1] = lanes([1.0, 2.0, 3.0, 4.0]);
/// // addps xmm1, xmmword ptr [0x100] (0f 58 0c 25 00 01 00 00)
/// let bytes = [0x0F, 0x58, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let v = vector_register_form(&instr, &bytes, &offsets).unwrap();
/// let mut operand = [0u8; 32];
/// operand[..16].copy_from_slice(&lanes([10.0, 20.0, 30.0, 40.0]).to_le_bytes());
/// assert_eq!(execute_vector(&mut m, &v, &mut operand), Ok(VectorOutcome::Done));
/// assert_eq!(m.xmm[1], lanes([11.0, 22.0, 33.0, 44.0])); // exact sums
/// assert_eq!(m.mxcsr & 0x3F, 0); // no exception flag
/// ```
pub fn execute_vector<M: Machine + ?Sized>(
    m: &mut M,
    vform: &VectorForm,
    operand: &mut [u8; 32],
) -> Result<VectorOutcome, EmulationError> {
    let form = &vform.form;
    if !vector_supported() {
        return Err(EmulationError::Unsupported(
            "vector host execution needs AVX",
        ));
    }
    let slot = Slot::claim().ok_or(EmulationError::Unsupported(
        "no executable memory for host execution",
    ))?;
    let bytes = form.bytes();
    // SAFETY: the slot is ours until `slot` drops and is SLOT_SIZE >= 17 bytes long.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), slot.ptr, bytes.len()) };
    let mut regs = HostRegs {
        gpr: [0; 16],
        rflags: (m.rflags() & (STATUS_FLAGS | DF)) | 2,
        code: slot.ptr as u64,
    };
    for (i, g) in regs.gpr.iter_mut().enumerate() {
        *g = m.gpr(i);
    }
    let guest_mxcsr = m.mxcsr();
    let mut v = VectorRegs {
        ymm: [[0; 32]; 16],
        mxcsr: (guest_mxcsr & !0x3F) | 0x1F80,
        host_mxcsr: 0,
    };
    for (i, y) in v.ymm.iter_mut().enumerate() {
        y[..16].copy_from_slice(&m.xmm(i).to_le_bytes());
        y[16..].copy_from_slice(&m.ymm_high(i).to_le_bytes());
    }
    if vform.scratch_gpr {
        let mut q = [0u8; 8];
        q.copy_from_slice(&operand[..8]);
        regs.gpr[form.scratch] = u64::from_le_bytes(q);
    } else {
        v.ymm[form.scratch] = *operand;
    }
    let enabled = !(guest_mxcsr >> 7) & 0x3F;
    // An unmasked underflow is signalled for every tiny result, a masked one only for tiny
    // inexact results (Intel SDM Vol. 1 §11.5.2.4). With FTZ set and underflow masked, every
    // tiny result sets UE: a second run in that mode finds what the unmasked run would.
    let tiny = if enabled & 0x10 != 0 {
        let mut regs2 = regs;
        let mut v2 = v;
        v2.mxcsr |= 1 << 15;
        // SAFETY: as below.
        unsafe { run_vector(&mut regs2, &mut v2) };
        v2.mxcsr & 0x10
    } else {
        0
    };
    // SAFETY: a verified register form of a whitelisted vector instruction followed by `ret`;
    // AVX is enabled; all SIMD exceptions are masked while it runs.
    unsafe { run_vector(&mut regs, &mut v) };
    drop(slot);
    if vform.scratch_gpr {
        *operand = [0; 32];
        operand[..8].copy_from_slice(&regs.gpr[form.scratch].to_le_bytes());
    } else {
        *operand = v.ymm[form.scratch];
    }
    let raised = v.mxcsr & 0x3F;
    let pre = raised & 0x07; // IE DE ZE: detected before the computation
    let signalled = if pre & enabled != 0 {
        pre
    } else if (raised | tiny) & enabled != 0 {
        raised | tiny
    } else {
        0
    };
    if signalled != 0 {
        return Ok(VectorOutcome::Unmasked {
            mxcsr: guest_mxcsr | signalled,
            before_computation: signalled == pre,
        });
    }
    for i in 0..16 {
        if i == 4 || (vform.scratch_gpr && i == form.scratch) {
            continue;
        }
        if regs.gpr[i] != m.gpr(i) {
            m.set_gpr(i, regs.gpr[i]);
        }
    }
    let old = m.rflags();
    m.set_rflags((old & !STATUS_FLAGS) | (regs.rflags & STATUS_FLAGS));
    for (i, y) in v.ymm.iter().enumerate() {
        if i == form.scratch && !vform.scratch_gpr {
            continue;
        }
        let mut lo = [0u8; 16];
        let mut hi = [0u8; 16];
        lo.copy_from_slice(&y[..16]);
        hi.copy_from_slice(&y[16..]);
        let (lo, hi) = (u128::from_le_bytes(lo), u128::from_le_bytes(hi));
        if lo != m.xmm(i) {
            m.set_xmm(i, lo);
        }
        if hi != m.ymm_high(i) {
            m.set_ymm_high(i, hi);
        }
    }
    if raised & !guest_mxcsr != 0 {
        m.set_mxcsr(guest_mxcsr | raised);
    }
    Ok(VectorOutcome::Done)
}

/// CPUID feature words read once: leaf 1 ECX/EDX, leaf 7.0 EBX/ECX/EDX, leaf 0x80000001
/// ECX/EDX, and whether the OS enabled AVX state.
struct Features {
    l1c: u32,
    l1d: u32,
    l7b: u32,
    l7c: u32,
    l7d: u32,
    e1c: u32,
    e1d: u32,
}

static FEATURES: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static FEATURES_READY: AtomicUsize = AtomicUsize::new(0);

fn features() -> Features {
    if FEATURES_READY.load(Ordering::Acquire) == 0 {
        let l1 = core::arch::x86_64::__cpuid_count(1, 0);
        let max = core::arch::x86_64::__cpuid(0).eax;
        let l7 = if max >= 7 {
            core::arch::x86_64::__cpuid_count(7, 0)
        } else {
            core::arch::x86_64::CpuidResult {
                eax: 0,
                ebx: 0,
                ecx: 0,
                edx: 0,
            }
        };
        let emax = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        let e1 = if emax >= 0x8000_0001 {
            core::arch::x86_64::__cpuid(0x8000_0001)
        } else {
            core::arch::x86_64::CpuidResult {
                eax: 0,
                ebx: 0,
                ecx: 0,
                edx: 0,
            }
        };
        let w = |a: u32, b: u32| (u64::from(a) << 32) | u64::from(b);
        FEATURES[0].store(w(l1.ecx, l1.edx), Ordering::Relaxed);
        FEATURES[1].store(w(l7.ebx, l7.ecx), Ordering::Relaxed);
        FEATURES[2].store(w(l7.edx, 0), Ordering::Relaxed);
        FEATURES[3].store(w(e1.ecx, e1.edx), Ordering::Relaxed);
        FEATURES_READY.store(1, Ordering::Release);
    }
    let r = |i: usize| FEATURES[i].load(Ordering::Relaxed);
    Features {
        l1c: (r(0) >> 32) as u32,
        l1d: r(0) as u32,
        l7b: (r(1) >> 32) as u32,
        l7c: r(1) as u32,
        l7d: (r(2) >> 32) as u32,
        e1c: (r(3) >> 32) as u32,
        e1d: r(3) as u32,
    }
}

/// Whether this CPU implements every CPUID feature `instr` needs, so running it on the host
/// cannot raise #UD (Intel SDM Vol. 2A, CPUID; AMD APM Vol. 3 appendix E). Features this table
/// does not know are treated as absent: such instructions are refused, never executed.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::cpu_supports;
///
/// // add qword ptr [8], 1: baseline x86-64.
/// let (add, _) = decode(&[0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01], 0).unwrap();
/// assert!(cpu_supports(&add));
/// // popcnt rax, qword ptr [8] (f3 48 0f b8 04 25 08 00 00 00)
/// let (popcnt, _) = decode(&[0xF3, 0x48, 0x0F, 0xB8, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00], 0).unwrap();
/// assert_eq!(cpu_supports(&popcnt), std::arch::is_x86_feature_detected!("popcnt"));
/// // vaddps zmm0, zmm1, zmm2 (62 f1 74 48 58 c2): AVX-512 is not in the table, so never.
/// let (evex, _) = decode(&[0x62, 0xF1, 0x74, 0x48, 0x58, 0xC2], 0).unwrap();
/// assert_eq!(evex.to_string(), "vaddps zmm0,zmm1,zmm2");
/// assert!(!cpu_supports(&evex));
/// ```
pub fn cpu_supports(instr: &Instruction) -> bool {
    use iced_x86::CpuidFeature as F;
    let f = features();
    let bit = |w: u32, b: u32| (w >> b) & 1 == 1;
    let avx_os = crate::signal::context::avx_enabled();
    instr.code().cpuid_features().iter().all(|feat| match feat {
        F::INTEL8086 | F::INTEL186 | F::INTEL286 | F::INTEL386 | F::INTEL486 | F::X64 => true,
        F::CMOV => bit(f.l1d, 15),
        F::CX8 => bit(f.l1d, 8),
        F::CMPXCHG16B => bit(f.l1c, 13),
        F::MMX => bit(f.l1d, 23),
        F::SSE => bit(f.l1d, 25),
        F::SSE2 => bit(f.l1d, 26),
        F::SSE3 => bit(f.l1c, 0),
        F::SSSE3 => bit(f.l1c, 9),
        F::SSE4_1 => bit(f.l1c, 19),
        F::SSE4_2 => bit(f.l1c, 20),
        F::PCLMULQDQ => bit(f.l1c, 1),
        F::AES => bit(f.l1c, 25),
        F::MOVBE => bit(f.l1c, 22),
        F::POPCNT => bit(f.l1c, 23),
        F::FMA => bit(f.l1c, 12) && avx_os,
        F::F16C => bit(f.l1c, 29) && avx_os,
        F::AVX => bit(f.l1c, 28) && avx_os,
        F::AVX2 => bit(f.l7b, 5) && avx_os,
        F::BMI1 => bit(f.l7b, 3),
        F::BMI2 => bit(f.l7b, 8),
        F::ADX => bit(f.l7b, 19),
        F::SHA => bit(f.l7b, 29),
        F::VAES => bit(f.l7c, 9) && avx_os,
        F::VPCLMULQDQ => bit(f.l7c, 10) && avx_os,
        F::GFNI => bit(f.l7c, 8),
        F::MOVDIRI => bit(f.l7c, 27),
        F::LZCNT => bit(f.e1c, 5),
        F::SSE4A => bit(f.e1c, 6),
        F::RDPID => bit(f.l7c, 22),
        _ => {
            let _ = f.l7d;
            let _ = f.e1d;
            false
        }
    })
}
