//! The state the emulator works on: a register file and a memory interface.
//!
//! [`Machine`] is deliberately small so the emulator core can run against the `ucontext` of a
//! signal ([`crate::signal::context::SignalContext`]), an in-memory [`RegisterFile`] (tests, a
//! VMM), or a mock. [`read_reg`] and [`write_reg`] add the hardware rules for partial registers
//! keyed by [`iced_x86::Register`].

use crate::regs::GeneralRegisters;
use iced_x86::Register;

/// A memory access outside the register map failed (the page is not mapped or not writable).
///
/// # Examples
///
/// [`RegisterFile`] has 256 bytes of ordinary memory at `memory_base`; the first byte past them
/// is reported:
///
/// ```
/// use of_core::{Machine, MemoryFault, RegisterFile};
///
/// let mut m = RegisterFile::default();
/// let end = m.memory_base + 256;
/// let mut buf = [0u8; 8];
/// assert_eq!(
///     m.read_memory(end - 4, &mut buf),
///     Err(MemoryFault { addr: end - 4, write: false })
/// );
/// assert_eq!(
///     m.write_memory(end, &[1]),
///     Err(MemoryFault { addr: end, write: true })
/// );
/// assert_eq!(m.write_memory(end - 8, &[1; 8]), Ok(()));
/// ```
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
///
/// # Examples
///
/// A minimal machine with no memory outside page 0, driven by the emulator:
///
/// ```
/// use of_core::decode::decode;
/// use of_core::{EmulationError, Exception, Machine, MemoryFault, emulate};
///
/// /// Sixteen registers, rip and rflags; every access to ordinary memory fails.
/// struct Tiny {
///     gpr: [u64; 16],
///     rip: u64,
///     rflags: u64,
/// }
///
/// impl Machine for Tiny {
///     fn gpr(&self, n: usize) -> u64 {
///         self.gpr[n]
///     }
///     fn set_gpr(&mut self, n: usize, value: u64) {
///         self.gpr[n] = value;
///     }
///     fn rip(&self) -> u64 {
///         self.rip
///     }
///     fn set_rip(&mut self, value: u64) {
///         self.rip = value;
///     }
///     fn rflags(&self) -> u64 {
///         self.rflags
///     }
///     fn set_rflags(&mut self, value: u64) {
///         self.rflags = value;
///     }
///     fn fs_base(&self) -> u64 {
///         0
///     }
///     fn gs_base(&self) -> u64 {
///         0
///     }
///     fn read_memory(&mut self, addr: u64, _buf: &mut [u8]) -> Result<(), MemoryFault> {
///         Err(MemoryFault { addr, write: false })
///     }
///     fn write_memory(&mut self, addr: u64, _data: &[u8]) -> Result<(), MemoryFault> {
///         Err(MemoryFault { addr, write: true })
///     }
/// }
///
/// let mut m = Tiny { gpr: [0; 16], rip: 0x2000, rflags: 0x202 };
/// m.gpr[0] = 0x1234_5678_9ABC_DEF0; // rax
///
/// // mov qword ptr [0x10], rax (48 89 04 25 10 00 00 00): map offset 0x10 is rdx.
/// let mov = [0x48, 0x89, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00];
/// let (instr, offsets) = decode(&mov, m.rip).unwrap();
/// emulate(&mut m, &instr, &mov, &offsets, Some(0x10)).unwrap();
/// assert_eq!(m.gpr[2], 0x1234_5678_9ABC_DEF0);
/// assert_eq!(m.rip, 0x2000 + 8);
///
/// // push qword ptr [8] (ff 34 25 08 00 00 00) reads rcx from the map and writes it below rsp,
/// // which is ordinary memory here: the write fails, the CPU would raise #PF there, and the
/// // machine is left as it was.
/// m.gpr[4] = 0x7000; // rsp
/// let push = [0xFF, 0x34, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (instr, offsets) = decode(&push, m.rip).unwrap();
/// let r = emulate(&mut m, &instr, &push, &offsets, Some(0x8));
/// assert_eq!(
///     r,
///     Err(EmulationError::Exception(Exception::PageFault { addr: 0x7000 - 8, write: true }))
/// );
/// assert_eq!((m.gpr[4], m.rip), (0x7000, 0x2008));
/// ```
pub trait Machine {
    /// The value of general-purpose register `n` (0..16, encoding order).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile, map};
    ///
    /// let mut m = RegisterFile::default();
    /// m.gpr[1] = 0x1122_3344_5566_7788; // rcx is encoding number 1 ...
    /// assert_eq!(m.gpr(1), 0x1122_3344_5566_7788);
    /// let mut b = [0u8; 8];
    /// assert!(map::read(&m, 8, &mut b)); // ... and bytes 8..16 of the map
    /// assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788);
    /// ```
    fn gpr(&self, n: usize) -> u64;
    /// Sets general-purpose register `n` (0..16, encoding order) to `value` (all 64 bits).
    ///
    /// # Examples
    ///
    /// `set_gpr` replaces all 64 bits; [`write_reg`] applies the partial-register rules on top:
    ///
    /// ```
    /// use iced_x86::Register;
    /// use of_core::machine::{Machine, RegisterFile, read_reg, write_reg};
    ///
    /// let mut m = RegisterFile::default();
    /// m.set_gpr(15, u64::MAX);
    /// assert_eq!(m.gpr[15], u64::MAX);
    /// assert_eq!(read_reg(&m, Register::R15D), Some(0xFFFF_FFFF));
    /// assert!(write_reg(&mut m, Register::R15W, 0)); // a 16-bit write merges
    /// assert_eq!(m.gpr(15), 0xFFFF_FFFF_FFFF_0000);
    /// ```
    fn set_gpr(&mut self, n: usize, value: u64);
    /// The instruction pointer.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::decode::decode;
    /// use of_core::{Machine, RegisterFile, emulate};
    ///
    /// let mut m = RegisterFile::default();
    /// m.rip = 0x40_1000;
    /// // inc qword ptr [0] (48 ff 04 25 00 00 00 00), 8 bytes long.
    /// let bytes = [0x48, 0xFF, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00];
    /// let (instr, offsets) = decode(&bytes, m.rip()).unwrap();
    /// emulate(&mut m, &instr, &bytes, &offsets, Some(0)).unwrap();
    /// assert_eq!(m.gpr[0], 1);
    /// assert_eq!(m.rip(), 0x40_1008); // the next instruction
    /// ```
    fn rip(&self) -> u64;
    /// Sets the instruction pointer.
    ///
    /// # Examples
    ///
    /// A write to the rip slot of the map is a jump:
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile, map};
    ///
    /// let mut m = RegisterFile::default();
    /// assert!(map::write(&mut m, map::RIP, &0x40_2000u64.to_le_bytes()));
    /// assert_eq!(m.rip(), 0x40_2000);
    /// m.set_rip(0x40_3000);
    /// assert_eq!(m.rip, 0x40_3000);
    /// ```
    fn set_rip(&mut self, value: u64);
    /// The full rflags value, system bits included.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile, map};
    ///
    /// let mut m = RegisterFile::default();
    /// assert_eq!(m.rflags(), 0x202); // IF and the always-one bit 1
    /// // The map's rflags slot reads as pushfq would store it: RF (bit 16) cleared.
    /// m.rflags |= 1 << 16;
    /// let mut b = [0u8; 8];
    /// assert!(map::read(&m, map::RFLAGS, &mut b));
    /// assert_eq!(u64::from_le_bytes(b), 0x202);
    /// ```
    fn rflags(&self) -> u64;
    /// Sets the full rflags value. The emulator only ever changes user-writable bits.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile};
    ///
    /// let mut m = RegisterFile::default();
    /// m.set_rflags(0x202 | 0x40); // ZF (bit 6)
    /// assert_eq!(m.rflags, 0x242);
    /// ```
    fn set_rflags(&mut self, value: u64);
    /// The fs segment base (IA32_FS_BASE).
    ///
    /// # Examples
    ///
    /// ```
    /// use iced_x86::Register;
    /// use of_core::machine::{Machine, RegisterFile, read_reg};
    ///
    /// let m = RegisterFile { fs_base: 0x7F00_0000_0000, ..RegisterFile::default() };
    /// assert_eq!(m.fs_base(), 0x7F00_0000_0000);
    /// assert_eq!(read_reg(&m, Register::FS), Some(0x7F00_0000_0000));
    /// ```
    fn fs_base(&self) -> u64;
    /// The gs segment base (IA32_GS_BASE).
    ///
    /// # Examples
    ///
    /// The gs base is what a `gs:`-prefixed operand adds to its address:
    ///
    /// ```
    /// use of_core::decode::decode;
    /// use of_core::emulate::operands::effective_address;
    /// use of_core::{Machine, RegisterFile};
    ///
    /// let m = RegisterFile { gs_base: 0x1000, ..RegisterFile::default() };
    /// assert_eq!(m.gs_base(), 0x1000);
    /// // mov rax, qword ptr gs:[8] (65 48 8b 04 25 08 00 00 00)
    /// let bytes = [0x65, 0x48, 0x8B, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00];
    /// let (instr, _) = decode(&bytes, 0x40_0000).unwrap();
    /// assert_eq!(effective_address(&m, &instr, 1), Some(0x1000 + 8));
    /// ```
    fn gs_base(&self) -> u64;
    /// The value of xmm register `n` (0..16), little-endian as a `u128`.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile, map};
    ///
    /// let mut m = RegisterFile::default();
    /// m.xmm[2] = 0x0F0E_0D0C_0B0A_0908_0706_0504_0302_0100;
    /// assert_eq!(m.xmm(2) >> 120, 0x0F);
    /// // xmm2 is bytes 0x120..0x130 of the map, little-endian.
    /// let mut b = [0u8; 2];
    /// assert!(map::read(&m, map::XMM_BASE + 16 * 2 + 14, &mut b));
    /// assert_eq!(b, [0x0E, 0x0F]);
    /// ```
    fn xmm(&self, n: usize) -> u128 {
        let _ = n;
        0
    }
    /// Sets xmm register `n` (0..16).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile};
    ///
    /// let mut m = RegisterFile::default();
    /// m.set_xmm(15, u128::MAX);
    /// assert_eq!(m.xmm[15], u128::MAX);
    /// assert_eq!(m.xmm(14), 0);
    /// ```
    fn set_xmm(&mut self, n: usize, value: u128) {
        let _ = (n, value);
    }
    /// Bits 128..256 of ymm register `n` (0..16); zero when the state is in its initial
    /// configuration or AVX is absent.
    ///
    /// # Examples
    ///
    /// A VEX.128 load zeroes bits 128..256 of its destination (Intel SDM Vol. 1 §14.1.3):
    ///
    /// ```
    /// use of_core::decode::decode;
    /// use of_core::{Machine, RegisterFile, emulate};
    ///
    /// let mut m = RegisterFile::default();
    /// m.xmm[0] = 0x1111;
    /// m.ymm_high[1] = 0x2222;
    /// // vmovdqu xmm1, xmmword ptr [0x100] (c5 fa 6f 0c 25 00 01 00 00): xmm1 = xmm0 (map 0x100).
    /// let bytes = [0xC5, 0xFA, 0x6F, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00];
    /// let (instr, offsets) = decode(&bytes, 0x40_0000).unwrap();
    /// m.rip = 0x40_0000;
    /// emulate(&mut m, &instr, &bytes, &offsets, Some(0x100)).unwrap();
    /// assert_eq!(m.xmm(1), 0x1111);
    /// assert_eq!(m.ymm_high(1), 0);
    /// ```
    fn ymm_high(&self, n: usize) -> u128 {
        let _ = n;
        0
    }
    /// Sets bits 128..256 of ymm register `n`.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile};
    ///
    /// let mut m = RegisterFile::default();
    /// m.set_ymm_high(3, 7);
    /// assert_eq!((m.ymm_high(3), m.xmm(3)), (7, 0));
    /// ```
    fn set_ymm_high(&mut self, n: usize, value: u128) {
        let _ = (n, value);
    }
    /// Bits 256..512 of zmm register `n` (0..16), 32 little-endian bytes; zero when the state
    /// is in its initial configuration or AVX-512 is absent (XSAVE component ZMM_Hi256, Intel
    /// SDM Vol. 1 §13.2).
    ///
    /// # Examples
    ///
    /// A VEX write zeroes its destination above its width, up to bit 511 (Intel SDM Vol. 1
    /// §15.5); a legacy-SSE write keeps those bits:
    ///
    /// ```
    /// use of_core::decode::decode;
    /// use of_core::{Machine, RegisterFile, emulate};
    ///
    /// let run = |m: &mut RegisterFile, bytes: &[u8]| {
    ///     let (instr, offsets) = decode(bytes, m.rip).unwrap();
    ///     emulate(m, &instr, bytes, &offsets, Some(0x100)).unwrap();
    /// };
    /// let mut m = RegisterFile { rip: 0x40_0000, ..RegisterFile::default() };
    /// m.zmm_hi256[1] = [0xAB; 32];
    /// // movdqu xmm1, xmmword ptr [0x100] (f3 0f 6f 0c 25 00 01 00 00): legacy SSE.
    /// run(&mut m, &[0xF3, 0x0F, 0x6F, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00]);
    /// assert_eq!(m.zmm_hi256(1), [0xAB; 32]);
    /// // vmovdqu xmm1, xmmword ptr [0x100] (c5 fa 6f 0c 25 00 01 00 00): VEX.128.
    /// run(&mut m, &[0xC5, 0xFA, 0x6F, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00]);
    /// assert_eq!(m.zmm_hi256(1), [0; 32]);
    /// ```
    fn zmm_hi256(&self, n: usize) -> [u8; 32] {
        let _ = n;
        [0; 32]
    }
    /// Sets bits 256..512 of zmm register `n` (0..16).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile};
    ///
    /// let mut m = RegisterFile::default();
    /// m.set_zmm_hi256(15, [7; 32]);
    /// assert_eq!(m.zmm_hi256[15], [7; 32]);
    /// ```
    fn set_zmm_hi256(&mut self, n: usize, value: [u8; 32]) {
        let _ = (n, value);
    }
    /// All 512 bits of zmm register `16 + n` (`n` in 0..16), 64 little-endian bytes; zero when
    /// the state is in its initial configuration or AVX-512 is absent (XSAVE component
    /// Hi16_ZMM).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::machine::{Machine, RegisterFile, read_zmm};
    ///
    /// let mut m = RegisterFile::default();
    /// m.hi16_zmm[0][63] = 0x80; // the top byte of zmm16
    /// assert_eq!(m.hi16_zmm(0)[63], 0x80);
    /// assert_eq!(read_zmm(&m, 16)[63], 0x80);
    /// ```
    fn hi16_zmm(&self, n: usize) -> [u8; 64] {
        let _ = n;
        [0; 64]
    }
    /// Sets zmm register `16 + n` (`n` in 0..16).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile};
    ///
    /// let mut m = RegisterFile::default();
    /// m.set_hi16_zmm(15, [1; 64]); // zmm31
    /// assert_eq!(m.hi16_zmm[15], [1; 64]);
    /// ```
    fn set_hi16_zmm(&mut self, n: usize, value: [u8; 64]) {
        let _ = (n, value);
    }
    /// Opmask register k`n` (`n` in 0..8), 64 bits; zero when the state is in its initial
    /// configuration or AVX-512 is absent (XSAVE component opmask).
    ///
    /// # Examples
    ///
    /// A masked EVEX load writes only the elements whose mask bit is set (merge masking):
    ///
    /// ```
    /// use of_core::decode::decode;
    /// use of_core::machine::{Machine, RegisterFile, read_zmm};
    /// use of_core::emulate;
    ///
    /// let mut m = RegisterFile { rip: 0x40_0000, ..RegisterFile::default() };
    /// m.gpr[0] = 0x1111_1111_2222_2222; // rax: map bytes 0..8
    /// m.xmm[3] = u128::MAX;
    /// m.opmask[1] = 0b10; // select dword element 1 only
    /// // vmovdqu32 xmm3{k1}, xmmword ptr [0] (62 f1 7e 09 6f 1c 25 00 00 00 00)
    /// let bytes = [0x62, 0xF1, 0x7E, 0x09, 0x6F, 0x1C, 0x25, 0x00, 0x00, 0x00, 0x00];
    /// let (instr, offsets) = decode(&bytes, m.rip).unwrap();
    /// if of_core::cpu::get().supports(&instr) {
    ///     emulate(&mut m, &instr, &bytes, &offsets, Some(4)).unwrap();
    ///     assert_eq!(m.opmask(1), 0b10);
    ///     // Element 1 is rax's high dword; the others keep xmm3's bits.
    ///     assert_eq!(m.xmm[3], (u128::MAX & !(0xFFFF_FFFFu128 << 32)) | (0x1111_1111u128 << 32));
    ///     assert_eq!(read_zmm(&m, 3)[16..], [0; 48]); // EVEX.128 zeroes bits 128..512
    /// }
    /// ```
    fn opmask(&self, n: usize) -> u64 {
        let _ = n;
        0
    }
    /// Sets opmask register k`n` (`n` in 0..8).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile};
    ///
    /// let mut m = RegisterFile::default();
    /// m.set_opmask(7, u64::MAX);
    /// assert_eq!(m.opmask[7], u64::MAX);
    /// ```
    fn set_opmask(&mut self, n: usize, value: u64) {
        let _ = (n, value);
    }
    /// The MXCSR register.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile, map};
    ///
    /// let m = RegisterFile::default();
    /// // The reset value: all six exceptions masked (bits 7..13), round to nearest.
    /// assert_eq!(m.mxcsr(), 0x1F80);
    /// let mut b = [0u8; 4];
    /// assert!(map::read(&m, map::MXCSR, &mut b));
    /// assert_eq!(u32::from_le_bytes(b), 0x1F80);
    /// ```
    fn mxcsr(&self) -> u32 {
        0x1F80
    }
    /// Sets MXCSR; implementations keep reserved bits (those clear in MXCSR_MASK) clear.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile};
    ///
    /// let mut m = RegisterFile::default();
    /// m.set_mxcsr(u32::MAX);
    /// // Bits 18..32 are reserved on every CPU (MXCSR_MASK is 0xFFFF or 0x2FFFF) ...
    /// assert_eq!(m.mxcsr() & 0xFFFC_0000, 0);
    /// // ... while the masks, flags, rounding control and FZ (bits 0..16 but DAZ) are kept.
    /// assert_eq!(m.mxcsr() & 0xFFBF, 0xFFBF);
    /// ```
    fn set_mxcsr(&mut self, value: u32) {
        let _ = value;
    }
    /// Whether `addr..addr + len` lies in a trapped region ([`crate::region`]) that this machine
    /// may access now (the fault handler holds the regions' bus). Region accesses are register
    /// accesses as far as ownership and run-ahead go; their bytes are read and written through
    /// [`Machine::read_memory`] and [`Machine::write_memory`], which serve them from the
    /// region's device. No region by default.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, RegisterFile};
    ///
    /// assert!(!RegisterFile::default().trapped(0x10_0000, 8));
    /// ```
    fn trapped(&self, addr: u64, len: u64) -> bool {
        let _ = (addr, len);
        false
    }
    /// Reads ordinary memory (outside page 0) at `addr` into `buf`.
    ///
    /// # Errors
    /// A [`MemoryFault`] naming the first inaccessible address.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, MemoryFault, RegisterFile};
    ///
    /// let mut m = RegisterFile::default();
    /// m.memory[..4].copy_from_slice(&[1, 2, 3, 4]);
    /// let mut buf = [0u8; 4];
    /// m.read_memory(m.memory_base, &mut buf).unwrap();
    /// assert_eq!(buf, [1, 2, 3, 4]);
    /// assert_eq!(
    ///     m.read_memory(0x10, &mut buf),
    ///     Err(MemoryFault { addr: 0x10, write: false })
    /// );
    /// ```
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault>;
    /// Writes `data` to ordinary memory (outside page 0) at `addr`.
    ///
    /// # Errors
    /// A [`MemoryFault`] naming the first address that is not writable.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::{Machine, MemoryFault, RegisterFile};
    ///
    /// let mut m = RegisterFile::default();
    /// let at = m.memory_base + 10;
    /// m.write_memory(at, &[0xAB, 0xCD]).unwrap();
    /// assert_eq!(&m.memory[10..12], &[0xAB, 0xCD]);
    /// assert_eq!(
    ///     m.write_memory(m.memory_base - 1, &[0]),
    ///     Err(MemoryFault { addr: m.memory_base - 1, write: true })
    /// );
    /// ```
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), MemoryFault>;
}

/// Reads `reg` with hardware rules: 32/16/8-bit views are the low bits of their 64-bit register;
/// ah/ch/dh/bh are bits 8..16 of rax/rcx/rdx/rbx; `rip`/`eip` give the next instruction; segment
/// registers give their base (fs, gs) or 0 (cs ds es ss, flat in 64-bit mode, Intel SDM Vol. 1
/// §3.4.2.1). Returns `None` for registers this emulator does not model.
///
/// # Examples
///
/// ```
/// use iced_x86::Register;
/// use of_core::machine::{RegisterFile, read_reg};
///
/// let mut m = RegisterFile::default();
/// m.gpr[0] = 0x1122_3344_5566_7788; // rax
/// m.gpr[11] = 0xAAAA_BBBB_CCCC_DDDD; // r11
/// m.rip = 0x40_1000;
/// assert_eq!(read_reg(&m, Register::RAX), Some(0x1122_3344_5566_7788));
/// assert_eq!(read_reg(&m, Register::EAX), Some(0x5566_7788));
/// assert_eq!(read_reg(&m, Register::AX), Some(0x7788));
/// assert_eq!(read_reg(&m, Register::AL), Some(0x88));
/// assert_eq!(read_reg(&m, Register::AH), Some(0x77)); // bits 8..16
/// assert_eq!(read_reg(&m, Register::R11W), Some(0xDDDD));
/// assert_eq!(read_reg(&m, Register::RIP), Some(0x40_1000));
/// assert_eq!(read_reg(&m, Register::DS), Some(0)); // flat segment
/// assert_eq!(read_reg(&m, Register::CR0), None); // not modelled
/// ```
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
///
/// # Examples
///
/// ```
/// use iced_x86::Register;
/// use of_core::machine::{RegisterFile, write_reg};
///
/// let mut m = RegisterFile::default();
/// m.gpr[0] = u64::MAX;
/// assert!(write_reg(&mut m, Register::AL, 0x12)); // 8-bit: merges
/// assert_eq!(m.gpr[0], 0xFFFF_FFFF_FFFF_FF12);
/// assert!(write_reg(&mut m, Register::AH, 0x34)); // bits 8..16
/// assert_eq!(m.gpr[0], 0xFFFF_FFFF_FFFF_3412);
/// assert!(write_reg(&mut m, Register::AX, 0x5678)); // 16-bit: merges
/// assert_eq!(m.gpr[0], 0xFFFF_FFFF_FFFF_5678);
/// assert!(write_reg(&mut m, Register::EAX, 0x9ABC_DEF0)); // 32-bit: zero-extends
/// assert_eq!(m.gpr[0], 0x0000_0000_9ABC_DEF0);
/// assert!(!write_reg(&mut m, Register::RIP, 0)); // not written this way
/// assert!(!write_reg(&mut m, Register::CS, 0));
/// ```
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

/// All 512 bits of vector register `n` (0..32), 64 little-endian bytes, assembled from
/// [`Machine::xmm`], [`Machine::ymm_high`], [`Machine::zmm_hi256`] and [`Machine::hi16_zmm`].
///
/// # Examples
///
/// ```
/// use of_core::machine::{RegisterFile, read_zmm};
///
/// let mut m = RegisterFile::default();
/// m.xmm[2] = 1;
/// m.ymm_high[2] = 2;
/// m.zmm_hi256[2][0] = 3;
/// let z = read_zmm(&m, 2);
/// assert_eq!((z[0], z[16], z[32]), (1, 2, 3));
/// m.hi16_zmm[4] = [9; 64];
/// assert_eq!(read_zmm(&m, 20), [9; 64]);
/// ```
pub fn read_zmm<M: Machine + ?Sized>(m: &M, n: usize) -> [u8; 64] {
    let n = n & 31;
    if n >= 16 {
        return m.hi16_zmm(n - 16);
    }
    let mut z = [0u8; 64];
    z[..16].copy_from_slice(&m.xmm(n).to_le_bytes());
    z[16..32].copy_from_slice(&m.ymm_high(n).to_le_bytes());
    z[32..].copy_from_slice(&m.zmm_hi256(n));
    z
}

/// Writes all 512 bits of vector register `n` (0..32), calling only the setters whose part
/// changed (so a state component in its initial configuration stays there when its bits do not
/// change).
///
/// # Examples
///
/// ```
/// use of_core::machine::{RegisterFile, read_zmm, write_zmm};
///
/// let mut m = RegisterFile::default();
/// let mut z = [0u8; 64];
/// z[0] = 0x11; // xmm part
/// z[40] = 0x22; // bits 256..512
/// write_zmm(&mut m, 5, &z);
/// assert_eq!((m.xmm[5], m.ymm_high[5], m.zmm_hi256[5][8]), (0x11, 0, 0x22));
/// write_zmm(&mut m, 31, &[0xFF; 64]);
/// assert_eq!(read_zmm(&m, 31), [0xFF; 64]);
/// ```
pub fn write_zmm<M: Machine + ?Sized>(m: &mut M, n: usize, z: &[u8; 64]) {
    let n = n & 31;
    if n >= 16 {
        if m.hi16_zmm(n - 16) != *z {
            m.set_hi16_zmm(n - 16, *z);
        }
        return;
    }
    let part = |r: core::ops::Range<usize>| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&z[r]);
        u128::from_le_bytes(b)
    };
    let (lo, hi) = (part(0..16), part(16..32));
    if m.xmm(n) != lo {
        m.set_xmm(n, lo);
    }
    if m.ymm_high(n) != hi {
        m.set_ymm_high(n, hi);
    }
    let mut top = [0u8; 32];
    top.copy_from_slice(&z[32..]);
    if m.zmm_hi256(n) != top {
        m.set_zmm_hi256(n, top);
    }
}

/// The encoding number (0..16) and size in bytes of a general-purpose register view, or `None`
/// for anything else (ah/ch/dh/bh included: they are not the low bits of their register).
///
/// # Examples
///
/// ```
/// use iced_x86::Register;
/// use of_core::machine::gpr_index;
///
/// assert_eq!(gpr_index(Register::RAX), Some((0, 8)));
/// assert_eq!(gpr_index(Register::R10D), Some((10, 4)));
/// assert_eq!(gpr_index(Register::SP), Some((4, 2)));
/// assert_eq!(gpr_index(Register::SIL), Some((6, 1))); // needs REX; low byte of rsi
/// assert_eq!(gpr_index(Register::R15L), Some((15, 1)));
/// assert_eq!(gpr_index(Register::AH), None); // bits 8..16 of rax
/// assert_eq!(gpr_index(Register::XMM0), None);
/// ```
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
///
/// # Examples
///
/// Emulating `add qword ptr [8], 1` — map offset 8 is rcx — without any fault:
///
/// ```
/// use of_core::decode::decode;
/// use of_core::{RegisterFile, emulate};
///
/// let mut m = RegisterFile::default(); // rflags = 0x202 (IF and bit 1)
/// m.gpr[1] = 0xFFFF_FFFF_FFFF_FFFF; // rcx
/// m.rip = 0x40_0000;
/// // add qword ptr [8], 1: 48 83 04 25 08 00 00 00 01 (9 bytes).
/// let bytes = [0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01];
/// let (instr, offsets) = decode(&bytes, m.rip).unwrap();
/// emulate(&mut m, &instr, &bytes, &offsets, Some(8)).unwrap();
///
/// // 0xFFFF_FFFF_FFFF_FFFF + 1 = 2^64: the result is 0 with a carry out of bit 63.
/// assert_eq!(m.gpr[1], 0);
/// let (cf, pf, af, zf, sf, of) = (1 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 7, 1 << 11);
/// assert_eq!(m.rflags & cf, cf); // carry out of bit 63
/// assert_eq!(m.rflags & pf, pf); // low byte 0x00 has an even number of set bits
/// assert_eq!(m.rflags & af, af); // 0xF + 0x1 carries out of bit 3
/// assert_eq!(m.rflags & zf, zf); // the result is zero
/// assert_eq!(m.rflags & (sf | of), 0); // -1 + 1 = 0: positive, no signed overflow
/// assert_eq!(m.rflags & !(cf | pf | af | zf | sf | of), 0x202); // other bits untouched
/// assert_eq!(m.rip, 0x40_0000 + 9);
/// // Every other register is as it was.
/// assert_eq!(m.gpr.iter().filter(|&&g| g != 0).count(), 0);
/// ```
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
    /// Bits 256..512 of zmm0..zmm15 (little-endian bytes).
    pub zmm_hi256: [[u8; 32]; 16],
    /// zmm16..zmm31, all 512 bits each (little-endian bytes).
    pub hi16_zmm: [[u8; 64]; 16],
    /// Opmask registers k0..k7.
    pub opmask: [u64; 8],
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
            zmm_hi256: [[0; 32]; 16],
            hi16_zmm: [[0; 64]; 16],
            opmask: [0; 8],
            mxcsr: 0x1F80,
            memory_base: 0x10_0000,
            memory: [0; 256],
        }
    }
}

impl RegisterFile {
    /// The general-purpose registers as a [`GeneralRegisters`] snapshot.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::RegisterFile;
    ///
    /// let mut m = RegisterFile::default();
    /// m.gpr[4] = 0x7FFF_0000; // rsp
    /// m.gpr[15] = 15;
    /// let g = m.general();
    /// assert_eq!((g.rsp, g.r15, g.rax), (0x7FFF_0000, 15, 0));
    /// assert_eq!(g.to_array(), m.gpr);
    /// ```
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
    fn zmm_hi256(&self, n: usize) -> [u8; 32] {
        self.zmm_hi256[n & 15]
    }
    fn set_zmm_hi256(&mut self, n: usize, value: [u8; 32]) {
        self.zmm_hi256[n & 15] = value;
    }
    fn hi16_zmm(&self, n: usize) -> [u8; 64] {
        self.hi16_zmm[n & 15]
    }
    fn set_hi16_zmm(&mut self, n: usize, value: [u8; 64]) {
        self.hi16_zmm[n & 15] = value;
    }
    fn opmask(&self, n: usize) -> u64 {
        self.opmask[n & 7]
    }
    fn set_opmask(&mut self, n: usize, value: u64) {
        self.opmask[n & 7] = value;
    }
    fn mxcsr(&self) -> u32 {
        self.mxcsr
    }
    fn set_mxcsr(&mut self, value: u32) {
        // Reserved bits are those clear in the CPU's MXCSR_MASK (0x2FFFF on AMD, with the
        // misaligned-SSE bit 17; 0xFFFF on Intel).
        self.mxcsr = value & crate::cpu::mxcsr_mask();
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
