//! Generated code for sites that touch a trapped region ([`crate::region`]): the *call-out*.
//!
//! A page-0 site is patched into code that runs the same instruction on a stack copy of the
//! registers ([`super::plan`]); a region site cannot be (its bytes live in a device), so its
//! jump leads to a stub that saves the interrupted code's state, calls the engine in ordinary
//! code (no fault, no signal frame) to emulate the instruction against that state — its device
//! accesses become direct calls of the device's functions on this thread, under the bus — and
//! restores the state, updated. Each site gets its own stub ([`stub`]):
//!
//! ```text
//! lea  rsp, [rsp - 128]             ; below the red zone
//! pushfq; cld; push r15 … push rax  ; the Frame (rsp's slot is a placeholder)
//! mov  rbx, rsp; sub rsp, AREA; and rsp, -64
//! save the vector registers and opmasks the code after the site may read (and the site's
//!      own), and MXCSR, into the 64-byte aligned VectorArea
//! call callout(frame, area, record)  ; emulates; 1 = done, 0 = run the original instead
//! restore them (MXCSR only if changed: ldmxcsr is slow)
//! test; jz fallback
//! epilogue: rflags from the Frame (std, add, sahf: popfq is microcoded and slow), pop rax …
//!           r15, rsp back above the red zone
//! jmp <the next instruction>
//! fallback: epilogue; <the original instruction>; jmp <the next instruction>
//! ```
//!
//! Every return is a `ret` to its own call (predicted), and the way back a direct jump.
//!
//! **What is saved.** Device code may change everything the System V ABI lets a called
//! function change: the general-purpose registers, rflags (DF is cleared for the call, as the
//! ABI requires, and restored), the vector registers, opmasks and MXCSR. The general-purpose
//! registers, rflags and MXCSR are always saved. Of the vector registers and opmasks, a stub
//! saves those the code after the site may still read ([`super::liveness`]: on an AVX-512 CPU
//! the 32 zmm registers cost ~35 ns a call, most of a patched access, while a driver's integer
//! code usually has none live) and those the site's instruction itself uses, at the width the
//! CPU has (xmm, ymm or zmm: what XCR0 enables, not what `OF_CPU_HIDE` hides).
//! `OF_PATCH_SAVE_ALL=1` makes every stub save all of them. Not saved: the x87 register stack
//! (device code that uses x87 while the interrupted code has x87 values live would disturb
//! them) — see the README. CPUs without LAHF/SAHF in 64-bit mode keep the fault path.
//!
//! Plain moves (`mov`/`movzx`/`movsx` between a register or immediate and a region, the usual
//! device-register access; [`plain_move`]) skip the engine's classification and ownership
//! checks: once the effective address is in a region, the engine's `mov` alone runs.
//!
//! The instruction is emulated with no fault address: if at this execution it touches neither
//! a region nor the map (its pointer now points at ordinary memory), or the engine declines or
//! would raise an exception, the state is left as it was and the stub runs the original
//! instruction, which then takes the fault path (or simply runs, on ordinary memory).

mod stub;

pub use stub::{Stub, stub};

use crate::machine::{Machine, MemoryFault};
use iced_x86::{ConstantOffsets, Instruction, Mnemonic, Register};

/// The general-purpose registers and rflags as the stub pushed them.
#[repr(C)]
pub struct Frame {
    /// rax … r15 in encoding order; `gpr[4]` (rsp) is a placeholder on entry.
    pub gpr: [u64; 16],
    /// rflags of the interrupted code.
    pub rflags: u64,
}

/// The interrupted code's vector state, saved by the stub (64-byte aligned; only the registers
/// of [`Record::regs`] hold values).
#[repr(C, align(64))]
pub struct VectorArea {
    /// zmm0..32 (or their low 16/32 bytes: xmm, ymm), 64 bytes each.
    pub z: [[u8; 64]; 32],
    /// k0..8 (16 bits each without AVX512BW).
    pub k: [u64; 8],
    /// MXCSR.
    pub mxcsr: u32,
    _pad: [u32; 15],
}

const _: () = assert!(core::mem::size_of::<Frame>() == 17 * 8);
const _: () = assert!(core::mem::offset_of!(VectorArea, k) == 2048);
const _: () = assert!(core::mem::offset_of!(VectorArea, mxcsr) == 2112);
/// Bytes reserved below the Frame for the area (alignment slack included).
pub(crate) const AREA: usize = core::mem::size_of::<VectorArea>() + 64;

/// The width of the vector state a stub saves (what the CPU has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Saved {
    /// xmm0..16.
    Sse = 0,
    /// ymm0..16.
    Avx = 1,
    /// zmm0..32 and k0..8 (16-bit).
    Avx512F = 2,
    /// zmm0..32 and k0..8 (64-bit).
    Avx512Bw = 3,
}

/// Whether `instr` is a plain move between a general-purpose register (or an immediate) and
/// memory — `mov`, `movzx`, `movsx`, `movsxd`, the usual device-register access — which the
/// call-out does with the engine's `mov` alone when its operand lies in a region, without
/// classifying it or checking ownership again.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::patch::callout::plain_move;
///
/// // movzx eax, byte ptr [0x4000_0005]
/// let (i, _) = decode(&[0x0F, 0xB6, 0x04, 0x25, 0x05, 0x00, 0x00, 0x40], 0).unwrap();
/// assert!(plain_move(&i));
/// // add dword ptr [0x4000_0000], 1: the whole engine's
/// let (i, _) = decode(&[0x83, 0x04, 0x25, 0x00, 0x00, 0x00, 0x40, 0x01], 0).unwrap();
/// assert!(!plain_move(&i));
/// ```
pub fn plain_move(instr: &Instruction) -> bool {
    use iced_x86::OpKind;
    let Some(mem) = crate::emulate::operands::memory_operand(instr) else {
        return false;
    };
    let other = 1 - mem.min(1);
    matches!(
        instr.mnemonic(),
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd
    ) && instr.op_count() == 2
        && matches!(instr.memory_size().size(), 1 | 2 | 4 | 8)
        && match instr.op_kind(other) {
            OpKind::Register => instr.op_register(other).is_gpr(),
            // mov m, imm (a load's other operand is always its register).
            _ => mem == 0,
        }
}

/// What the stub of one site hands the engine (leaked: a patched site is never unpatched).
pub struct Record {
    /// The site's instruction, decoded at its address.
    pub instr: Instruction,
    /// Its bytes.
    pub bytes: [u8; 16],
    /// Its field offsets (for the engine's host execution).
    pub offsets: ConstantOffsets,
    /// Whether it is a [`plain_move`].
    pub plain_move: bool,
    /// The width of the vector registers the stub saves.
    pub saved: Saved,
    /// Which vector registers and opmasks the stub saves ([`super::liveness::Regs`]).
    pub regs: super::liveness::Regs,
}

/// A leaked [`Record`] for `instr` (bytes `bytes`), whose stub saves `regs` at width `saved`.
pub fn record(
    instr: &Instruction,
    bytes: &[u8; 16],
    offsets: ConstantOffsets,
    saved: Saved,
    regs: super::liveness::Regs,
) -> &'static Record {
    alloc::boxed::Box::leak(alloc::boxed::Box::new(Record {
        instr: *instr,
        bytes: *bytes,
        offsets,
        plain_move: plain_move(instr),
        saved,
        regs,
    }))
}

/// The vector state this CPU has: what XCR0 itself enables, not what `OF_CPU_HIDE` makes
/// `of` emulate (what device code may change is what the hardware has).
pub fn saved_state() -> Saved {
    let xcr0 = crate::cpu::hardware_xcr0();
    // XCR0 bits 1, 2: SSE and AVX state; 5, 6, 7: opmask, ZMM_Hi256, Hi16_ZMM (only settable
    // on a CPU with AVX512F).
    if xcr0 & 0xE6 == 0xE6 {
        // CPUID.(EAX=7,ECX=0):EBX bit 30, AVX512BW: 64-bit opmasks (leaf 7 exists on any CPU
        // with AVX-512).
        if (core::arch::x86_64::__cpuid_count(7, 0).ebx >> 30) & 1 == 1 {
            Saved::Avx512Bw
        } else {
            Saved::Avx512F
        }
    } else if xcr0 & 0b110 == 0b110 {
        Saved::Avx
    } else {
        Saved::Sse
    }
}

/// The state of the interrupted code, as the stub saved it, seen by the engine. The site's
/// own instruction uses only registers the stub saved ([`Record::regs`] includes them), but at
/// some execution its pointer may point at page 0 instead of a region, and a map access may
/// name any register: a vector register the stub did not save then reads as zero, is not
/// written, and marks the emulation `missing`, so the stub runs the original instruction
/// instead (the map access then faults and is emulated as usual).
struct FrameMachine<'a> {
    f: &'a mut Frame,
    v: &'a mut VectorArea,
    saved: Saved,
    regs: super::liveness::Regs,
    rip: u64,
    missing: core::cell::Cell<bool>,
}

impl FrameMachine<'_> {
    /// Whether zmm register `n` (0..32) was saved, at a width with `bytes` of it (noting a miss).
    fn zmm_saved(&self, n: usize, bytes: usize) -> bool {
        let width = match self.saved {
            Saved::Sse => 16,
            Saved::Avx => 32,
            Saved::Avx512F | Saved::Avx512Bw => 64,
        };
        let has = (self.regs >> n) & 1 == 1;
        let exists = n < 16 || width == 64;
        if exists && !has {
            self.missing.set(true);
        }
        has && bytes <= width && exists
    }

    /// Whether opmask `n` was saved (noting a miss).
    fn k_saved(&self, n: usize) -> bool {
        let exists = matches!(self.saved, Saved::Avx512F | Saved::Avx512Bw);
        let has = (self.regs >> (32 + n)) & 1 == 1;
        if exists && !has {
            self.missing.set(true);
        }
        exists && has
    }
}

impl Machine for FrameMachine<'_> {
    fn gpr(&self, n: usize) -> u64 {
        self.f.gpr[n & 15]
    }
    fn set_gpr(&mut self, n: usize, value: u64) {
        self.f.gpr[n & 15] = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, value: u64) {
        self.rip = value;
    }
    fn rflags(&self) -> u64 {
        self.f.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.f.rflags = value;
    }
    fn fs_base(&self) -> u64 {
        crate::signal::context::segment_base(crate::signal::context::ARCH_GET_FS)
    }
    fn gs_base(&self) -> u64 {
        crate::signal::context::segment_base(crate::signal::context::ARCH_GET_GS)
    }
    fn xmm(&self, n: usize) -> u128 {
        let n = n & 15;
        if !self.zmm_saved(n, 16) {
            return 0;
        }
        u128::from_le_bytes(self.v.z[n][..16].try_into().unwrap_or([0; 16]))
    }
    fn set_xmm(&mut self, n: usize, value: u128) {
        let n = n & 15;
        if self.zmm_saved(n, 16) {
            self.v.z[n][..16].copy_from_slice(&value.to_le_bytes());
        }
    }
    fn ymm_high(&self, n: usize) -> u128 {
        let n = n & 15;
        if !self.zmm_saved(n, 32) {
            return 0;
        }
        u128::from_le_bytes(self.v.z[n][16..32].try_into().unwrap_or([0; 16]))
    }
    fn set_ymm_high(&mut self, n: usize, value: u128) {
        let n = n & 15;
        if self.zmm_saved(n, 32) {
            self.v.z[n][16..32].copy_from_slice(&value.to_le_bytes());
        }
    }
    fn zmm_hi256(&self, n: usize) -> [u8; 32] {
        let n = n & 15;
        if !self.zmm_saved(n, 64) {
            return [0; 32];
        }
        self.v.z[n][32..].try_into().unwrap_or([0; 32])
    }
    fn set_zmm_hi256(&mut self, n: usize, value: [u8; 32]) {
        let n = n & 15;
        if self.zmm_saved(n, 64) {
            self.v.z[n][32..].copy_from_slice(&value);
        }
    }
    fn hi16_zmm(&self, n: usize) -> [u8; 64] {
        let n = 16 + (n & 15);
        if !self.zmm_saved(n, 64) {
            return [0; 64];
        }
        self.v.z[n]
    }
    fn set_hi16_zmm(&mut self, n: usize, value: [u8; 64]) {
        let n = 16 + (n & 15);
        if self.zmm_saved(n, 64) {
            self.v.z[n] = value;
        }
    }
    fn opmask(&self, n: usize) -> u64 {
        let n = n & 7;
        match self.saved {
            _ if !self.k_saved(n) => 0,
            Saved::Avx512Bw => self.v.k[n],
            _ => self.v.k[n] & 0xFFFF,
        }
    }
    fn set_opmask(&mut self, n: usize, value: u64) {
        let n = n & 7;
        match self.saved {
            _ if !self.k_saved(n) => {}
            Saved::Avx512Bw => self.v.k[n] = value,
            _ => self.v.k[n] = value & 0xFFFF,
        }
    }
    fn mxcsr(&self) -> u32 {
        self.v.mxcsr
    }
    fn set_mxcsr(&mut self, value: u32) {
        self.v.mxcsr = value & crate::cpu::mxcsr_mask();
    }
    fn trapped(&self, addr: u64, len: u64) -> bool {
        crate::region::find(addr, len).is_some()
    }
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        if let Some((i, off)) = crate::region::find(addr, buf.len() as u64) {
            crate::region::read_direct(i, off, buf);
            return Ok(());
        }
        crate::signal::context::read_memory(addr, buf)
    }
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
        if let Some((i, off)) = crate::region::find(addr, data.len() as u64) {
            crate::region::write_direct(i, off, data);
            return Ok(());
        }
        crate::signal::context::write_memory(addr, data)
    }
}

/// Emulates a region site's instruction for its stub (called by the stubs only). Returns 1
/// when done (the Frame and VectorArea hold the new state), 0 when the stub must run the
/// original instruction instead (both left as they were).
///
/// # Safety
/// `frame` and `area` are the stub's, `rec` a leaked [`Record`].
unsafe extern "C" fn callout(frame: *mut Frame, area: *mut VectorArea, rec: *const Record) -> u32 {
    // SAFETY: the stub passes its Frame and VectorArea, which it owns until we return, and
    // the Record the patcher leaked for it.
    let (f, v, rec) = unsafe { (&mut *frame, &mut *area, &*rec) };
    // The interrupted rsp: above the Frame, the 128 bytes the stub stepped over.
    let rsp = frame as u64 + core::mem::size_of::<Frame>() as u64 + 128;
    f.gpr[4] = rsp;
    let len = rec.instr.len();
    let mut m = FrameMachine {
        f,
        v,
        saved: rec.saved,
        regs: rec.regs,
        rip: rec.instr.ip(),
        missing: core::cell::Cell::new(false),
    };
    // A plain move changes nothing unless it is done (and the Frame, just pushed 8 bytes at a
    // time, is not copied whole: wider loads of it stall on store forwarding).
    if rec.plain_move && fast_move(&mut m, rec) {
        return 1;
    }
    let before = (m.f.gpr, m.f.rflags);
    let r = {
        let _bus = crate::region::Bus::take(&rec.bytes[..len]);
        crate::emulate::emulate(&mut m, &rec.instr, &rec.bytes[..len], &rec.offsets, None)
    };
    let (next, missing) = (m.rip, m.missing.get());
    // rsp cannot be changed from here (the stub does not pop it), nor rip: a form that would
    // change either (a page-0 store into rsp's slot, say) takes the fault path instead, as one
    // that needed a vector register the stub did not save.
    if r.is_ok() && !missing && f.gpr[4] == rsp && next == rec.instr.next_ip() {
        1
    } else {
        (f.gpr, f.rflags) = before;
        0
    }
}

static SAVE_ALL: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Reads `OF_PATCH_SAVE_ALL` (outside signal handlers; [`super::enable`] does).
pub(crate) fn read_save_all() {
    // SAFETY: getenv with a NUL-terminated name, from ordinary code.
    let v = unsafe { libc::getenv(c"OF_PATCH_SAVE_ALL".as_ptr()) };
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    let on = !v.is_null() && unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes() == b"1";
    SAVE_ALL.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Whether `OF_PATCH_SAVE_ALL=1` asked every stub to save every vector register and opmask.
pub fn save_all() -> bool {
    SAVE_ALL.load(core::sync::atomic::Ordering::Relaxed)
}

/// The address of [`callout`], for the stubs.
pub(crate) fn callout_address() -> u64 {
    callout as *const () as usize as u64
}

/// Does a [`plain_move`] whose operand lies entirely in one region, the device called
/// directly, with the engine's pieces for the rest (effective address, store source, sign
/// extension, register write). False, with nothing done, when the operand is elsewhere: then
/// the whole engine decides.
fn fast_move(m: &mut FrameMachine, rec: &Record) -> bool {
    use crate::emulate::{mov, operands};
    let instr = &rec.instr;
    let Some(op) = operands::memory_operand(instr) else {
        return false;
    };
    let Some(ea) = operands::effective_address(m, instr, op) else {
        return false;
    };
    let size = operands::memory_size(instr);
    let Some((index, offset)) = crate::region::find(ea, size) else {
        return false;
    };
    let n = size as usize;
    if op == 0 {
        // A store: the source is a general-purpose register or an immediate.
        let Some(v) = operands::read_plain(m, instr, 1) else {
            return false;
        };
        let _bus = crate::region::Bus::take(&rec.bytes[..instr.len()]);
        crate::region::write_direct(index, offset, &v.to_le_bytes()[..n]);
    } else {
        let mut b = [0u8; 8];
        {
            let _bus = crate::region::Bus::take(&rec.bytes[..instr.len()]);
            crate::region::read_direct(index, offset, &mut b[..n]);
        }
        // Byte by byte: the device stored the bytes one at a time (a C device's loop), and one
        // 8-byte load of them would wait for the stores to drain (no store forwarding).
        let raw = b[..n]
            .iter()
            .rev()
            // SAFETY: a read of an initialised local byte (volatile: not merged into one load).
            .fold(0u64, |v, x| {
                (v << 8) | u64::from(unsafe { core::ptr::read_volatile(x) })
            });
        let v = match instr.mnemonic() {
            Mnemonic::Movsx | Mnemonic::Movsxd => mov::sign_extend(raw, size),
            _ => raw,
        };
        // A general-purpose destination ([`plain_move`]): the write cannot fail.
        crate::machine::write_reg(m, instr.op0_register(), v);
    }
    m.rip = instr.next_ip();
    true
}

/// Whether a region site's instruction gets a call-out; otherwise why not.
///
/// # Errors
/// A short reason: a control transfer, a stack or string form, an instruction naming rsp, or
/// one that may raise an exception after its device access (`div`). (A site shorter than a
/// `jmp rel32` is reached through a pun, [`super::pun`].)
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::patch::callout::plan;
///
/// let p = |bytes: &[u8]| plan(&decode(bytes, 0).unwrap().0);
/// // movzx eax, byte ptr [0x4000_0005]: an absolute device register.
/// assert!(p(&[0x0F, 0xB6, 0x04, 0x25, 0x05, 0x00, 0x00, 0x40]).is_ok());
/// // mov byte ptr [rdi], al: a pointer-based device register (two bytes: punned).
/// assert!(p(&[0x88, 0x07]).is_ok());
/// // push qword ptr [rdi]: a stack form.
/// assert!(p(&[0xFF, 0x37]).is_err());
/// ```
pub fn plan(instr: &Instruction) -> Result<(), &'static str> {
    use crate::emulate::table::{Kind, classify};
    use Mnemonic as M;
    // CPUID.80000001H:ECX.LAHF-SAHF: the entries restore the status flags with sahf.
    if crate::cpu::get().ext1_ecx & 1 == 0 {
        return Err("no LAHF/SAHF in 64-bit mode on this CPU");
    }
    if !matches!(classify(instr), Kind::Host { .. } | Kind::Move) {
        return Err("not a plain register or vector access (stack, string, branch or refused)");
    }
    if matches!(
        instr.mnemonic(),
        M::Div | M::Idiv | M::Lar | M::Lsl | M::Verr | M::Verw | M::Xlatb
    ) {
        return Err("may raise an exception after its device access");
    }
    if instr.is_stack_instruction() || instr.is_string_instruction() {
        return Err("a stack or string form");
    }
    let mut info = iced_x86::InstructionInfoFactory::new();
    if info.info(instr).used_registers().iter().any(|u| {
        matches!(u.register().full_register(), Register::RSP | Register::RIP)
            && u.register() != Register::RIP
    }) {
        return Err("names the stack pointer");
    }
    if instr.memory_base() == Register::RSP || instr.memory_index() == Register::RSP {
        return Err("names the stack pointer");
    }
    Ok(())
}
