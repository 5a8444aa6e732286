//! The state the emulator works on: a register file and a memory interface.
//!
//! [`Machine`] is deliberately small so the emulator core can run against the `ucontext` of a
//! signal ([`crate::signal::context::SignalContext`]), an in-memory [`RegisterFile`] (tests, a
//! VMM), or a mock. [`read_reg`] and [`write_reg`] add the hardware rules for partial registers
//! keyed by [`iced_x86::Register`].

use crate::regs::GeneralRegisters;
use iced_x86::Register;

/// A memory access outside the register map failed (the page is not mapped or not writable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryFault {
    /// The first address that could not be accessed.
    pub addr: u64,
    /// Whether the failed access was a write.
    pub write: bool,
}

/// A thread's architectural state as the emulator sees it.
///
/// General-purpose registers are addressed by encoding number (0 = rax, 1 = rcx, 2 = rdx,
/// 3 = rbx, 4 = rsp, 5 = rbp, 6 = rsi, 7 = rdi, 8..=15 = r8..r15; Intel SDM Vol. 2A §2.1.5,
/// table 2-2). `rip` is the address of the *next* instruction while an instruction is being
/// emulated. Memory outside page 0 is reached through [`Machine::read_memory`] and
/// [`Machine::write_memory`], which must not fault: they report a [`MemoryFault`] instead.
pub trait Machine {
    /// The value of general-purpose register `n` (0..16, encoding order).
    fn gpr(&self, n: usize) -> u64;
    /// Sets general-purpose register `n` (0..16, encoding order) to `value` (all 64 bits).
    fn set_gpr(&mut self, n: usize, value: u64);
    /// The instruction pointer.
    fn rip(&self) -> u64;
    /// Sets the instruction pointer.
    fn set_rip(&mut self, value: u64);
    /// The full rflags value, system bits included.
    fn rflags(&self) -> u64;
    /// Sets the full rflags value. The emulator only ever changes user-writable bits.
    fn set_rflags(&mut self, value: u64);
    /// The fs segment base (IA32_FS_BASE).
    fn fs_base(&self) -> u64;
    /// The gs segment base (IA32_GS_BASE).
    fn gs_base(&self) -> u64;
    /// The value of xmm register `n` (0..16), little-endian as a `u128`.
    fn xmm(&self, n: usize) -> u128 {
        let _ = n;
        0
    }
    /// Sets xmm register `n` (0..16).
    fn set_xmm(&mut self, n: usize, value: u128) {
        let _ = (n, value);
    }
    /// Bits 128..256 of ymm register `n` (0..16); zero when the state is in its initial
    /// configuration or AVX is absent.
    fn ymm_high(&self, n: usize) -> u128 {
        let _ = n;
        0
    }
    /// Sets bits 128..256 of ymm register `n`.
    fn set_ymm_high(&mut self, n: usize, value: u128) {
        let _ = (n, value);
    }
    /// The MXCSR register.
    fn mxcsr(&self) -> u32 {
        0x1F80
    }
    /// Sets MXCSR; implementations keep reserved bits (those clear in MXCSR_MASK) clear.
    fn set_mxcsr(&mut self, value: u32) {
        let _ = value;
    }
    /// Reads ordinary memory (outside page 0) at `addr` into `buf`.
    ///
    /// # Errors
    /// A [`MemoryFault`] naming the first inaccessible address.
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault>;
    /// Writes `data` to ordinary memory (outside page 0) at `addr`.
    ///
    /// # Errors
    /// A [`MemoryFault`] naming the first address that is not writable.
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), MemoryFault>;
}

/// Reads `reg` with hardware rules: 32/16/8-bit views are the low bits of their 64-bit register;
/// ah/ch/dh/bh are bits 8..16 of rax/rcx/rdx/rbx; `rip`/`eip` give the next instruction; segment
/// registers give their base (fs, gs) or 0 (cs ds es ss, flat in 64-bit mode, Intel SDM Vol. 1
/// §3.4.2.1). Returns `None` for registers this emulator does not model.
pub fn read_reg<M: Machine + ?Sized>(m: &M, reg: Register) -> Option<u64> {
    use Register as R;
    Some(match reg {
        R::AH | R::CH | R::DH | R::BH => {
            let n = (reg as u32 - R::AH as u32) as usize;
            (m.gpr(n) >> 8) & 0xFF
        }
        R::RIP => m.rip(),
        R::EIP => m.rip() & 0xFFFF_FFFF,
        R::FS => m.fs_base(),
        R::GS => m.gs_base(),
        R::ES | R::CS | R::SS | R::DS => 0,
        _ => {
            let (n, size) = gpr_index(reg)?;
            let v = m.gpr(n);
            match size {
                8 => v,
                4 => v & 0xFFFF_FFFF,
                2 => v & 0xFFFF,
                _ => v & 0xFF,
            }
        }
    })
}

/// Writes `value` to `reg` with hardware rules (Intel SDM Vol. 1 §3.4.1.1): a 32-bit write
/// zero-extends to 64 bits, 8- and 16-bit writes merge into the register, ah/ch/dh/bh write
/// bits 8..16. Returns `false` for registers this emulator does not write (segments, rip).
pub fn write_reg<M: Machine + ?Sized>(m: &mut M, reg: Register, value: u64) -> bool {
    use Register as R;
    match reg {
        R::AH | R::CH | R::DH | R::BH => {
            let n = (reg as u32 - R::AH as u32) as usize;
            let old = m.gpr(n);
            m.set_gpr(n, (old & !0xFF00) | ((value & 0xFF) << 8));
            true
        }
        _ => {
            let Some((n, size)) = gpr_index(reg) else {
                return false;
            };
            let old = m.gpr(n);
            let new = match size {
                8 => value,
                4 => value & 0xFFFF_FFFF,
                2 => (old & !0xFFFF) | (value & 0xFFFF),
                _ => (old & !0xFF) | (value & 0xFF),
            };
            m.set_gpr(n, new);
            true
        }
    }
}

/// The encoding number (0..16) and size in bytes of a general-purpose register view, or `None`
/// for anything else (ah/ch/dh/bh included: they are not the low bits of their register).
pub fn gpr_index(reg: Register) -> Option<(usize, usize)> {
    use Register as R;
    let r = reg as u32;
    let span = |first: Register| r.wrapping_sub(first as u32) as usize;
    if reg.is_gpr64() {
        Some((span(R::RAX), 8))
    } else if reg.is_gpr32() {
        Some((span(R::EAX), 4))
    } else if reg.is_gpr16() {
        Some((span(R::AX), 2))
    } else if reg.is_gpr8() {
        // iced orders 8-bit registers AL CL DL BL AH CH DH BH SPL BPL SIL DIL R8L..R15L.
        let i = span(R::AL);
        match i {
            0..=3 => Some((i, 1)),
            4..=7 => None,
            _ => Some((i - 4, 1)),
        }
    } else {
        None
    }
}

/// An in-memory register file with a small flat memory outside page 0: the [`Machine`] used by
/// tests and by callers that emulate without faults (for example a VMM's MMIO path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterFile {
    /// General-purpose registers in encoding order.
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags register.
    pub rflags: u64,
    /// fs base.
    pub fs_base: u64,
    /// gs base.
    pub gs_base: u64,
    /// xmm0..xmm15.
    pub xmm: [u128; 16],
    /// Bits 128..256 of ymm0..ymm15.
    pub ymm_high: [u128; 16],
    /// MXCSR.
    pub mxcsr: u32,
    /// Base address of [`RegisterFile::memory`].
    pub memory_base: u64,
    /// Bytes of ordinary memory at `memory_base..memory_base + len`; accesses elsewhere fail
    /// with a [`MemoryFault`].
    pub memory: [u8; 256],
}

impl Default for RegisterFile {
    fn default() -> Self {
        RegisterFile {
            gpr: [0; 16],
            rip: 0,
            rflags: 0x202,
            fs_base: 0,
            gs_base: 0,
            xmm: [0; 16],
            ymm_high: [0; 16],
            mxcsr: 0x1F80,
            memory_base: 0x10_0000,
            memory: [0; 256],
        }
    }
}

impl RegisterFile {
    /// The general-purpose registers as a [`GeneralRegisters`] snapshot.
    pub fn general(&self) -> GeneralRegisters {
        GeneralRegisters::from_array(self.gpr)
    }

    fn range(&self, addr: u64, len: usize) -> Option<core::ops::Range<usize>> {
        let start = addr.checked_sub(self.memory_base)? as usize;
        let end = start.checked_add(len)?;
        (end <= self.memory.len()).then_some(start..end)
    }
}

impl Machine for RegisterFile {
    fn gpr(&self, n: usize) -> u64 {
        self.gpr[n & 15]
    }
    fn set_gpr(&mut self, n: usize, value: u64) {
        self.gpr[n & 15] = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, value: u64) {
        self.rip = value;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.rflags = value;
    }
    fn fs_base(&self) -> u64 {
        self.fs_base
    }
    fn gs_base(&self) -> u64 {
        self.gs_base
    }
    fn xmm(&self, n: usize) -> u128 {
        self.xmm[n & 15]
    }
    fn set_xmm(&mut self, n: usize, value: u128) {
        self.xmm[n & 15] = value;
    }
    fn ymm_high(&self, n: usize) -> u128 {
        self.ymm_high[n & 15]
    }
    fn set_ymm_high(&mut self, n: usize, value: u128) {
        self.ymm_high[n & 15] = value;
    }
    fn mxcsr(&self) -> u32 {
        self.mxcsr
    }
    fn set_mxcsr(&mut self, value: u32) {
        // Reserved bits are those clear in the CPU's MXCSR_MASK (0x2FFFF on AMD, with the
        // misaligned-SSE bit 17; 0xFFFF on Intel).
        self.mxcsr = value & crate::emulate::vector::mxcsr_mask();
    }
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        let r = self
            .range(addr, buf.len())
            .ok_or(MemoryFault { addr, write: false })?;
        buf.copy_from_slice(&self.memory[r]);
        Ok(())
    }
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
        let r = self
            .range(addr, data.len())
            .ok_or(MemoryFault { addr, write: true })?;
        self.memory[r].copy_from_slice(data);
        Ok(())
    }
}
