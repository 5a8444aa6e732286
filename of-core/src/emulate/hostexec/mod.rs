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

mod gpr_form;
mod layout;
mod vector_form;
mod vector_run;

pub use gpr_form::{RegisterForm, register_form};
pub use vector_form::{VectorForm, evex_register_form, never_underflows, vector_register_form};
pub use vector_run::{VectorOutcome, VectorRegs, execute_vector};

use super::EmulationError;
use crate::machine::Machine;
use crate::map::STATUS_FLAGS;
use core::arch::asm;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use iced_x86::Instruction;

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
    crate::cpu::get().avx()
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
/// // vaddps zmm0, zmm1, zmm2 (62 f1 74 48 58 c2): AVX512F, enabled by the OS.
/// let (evex, _) = decode(&[0x62, 0xF1, 0x74, 0x48, 0x58, 0xC2], 0).unwrap();
/// assert_eq!(evex.to_string(), "vaddps zmm0,zmm1,zmm2");
/// assert_eq!(cpu_supports(&evex), std::arch::is_x86_feature_detected!("avx512f"));
/// ```
pub fn cpu_supports(instr: &Instruction) -> bool {
    crate::cpu::get().supports(instr)
}
