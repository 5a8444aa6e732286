//! The interrupted thread's state, as found in the signal frame: a [`Machine`] over libc's
//! `ucontext_t` / `mcontext_t` (gregs for the general-purpose registers, rip and rflags;
//! `fpregs` for xmm and mxcsr).

use crate::machine::{Machine, MemoryFault};
use core::cell::Cell;

/// `gregs` index of each general-purpose register, in encoding order (rax, rcx, …, r15).
const GREG_OF: [libc::c_int; 16] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_RSP,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
    libc::REG_R8,
    libc::REG_R9,
    libc::REG_R10,
    libc::REG_R11,
    libc::REG_R12,
    libc::REG_R13,
    libc::REG_R14,
    libc::REG_R15,
];

/// `arch_prctl` codes (linux/arch/x86/include/uapi/asm/prctl.h).
pub(crate) const ARCH_GET_FS: libc::c_int = 0x1003;
pub(crate) const ARCH_GET_GS: libc::c_int = 0x1004;

/// FP_XSTATE_MAGIC1 (arch/x86/include/uapi/asm/sigcontext.h): the signal frame's FXSAVE area is
/// followed by an XSAVE header and extended state.
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// Offset of `struct _fpx_sw_bytes` (the software-reserved bytes 464..512 of the FXSAVE area).
const SW_BYTES: usize = 464;
/// Offset of the XSAVE header's XSTATE_BV (just after the 512-byte legacy area).
const XSTATE_BV: usize = 512;
/// Offset of `xstate_size` in `struct _fpx_sw_bytes`: the bytes of XSAVE state in the frame.
const SW_XSTATE_SIZE: usize = SW_BYTES + 16;

/// A [`Machine`] over the `ucontext_t` a signal handler receives. Changes are written straight
/// into the context, so they take effect when the handler returns (rt_sigreturn restores them).
///
/// # Examples
///
/// Emulation on a `ucontext_t`, as the handler does it (here a zeroed one built by hand):
///
/// ```
/// use of_core::decode::decode;
/// use of_core::signal::context::SignalContext;
/// use of_core::{Machine, emulate};
///
/// // SAFETY: an all-zero ucontext_t is a valid value (fpregs is null: no xmm state).
/// let mut uc: libc::ucontext_t = unsafe { core::mem::zeroed() };
/// uc.uc_mcontext.gregs[libc::REG_RCX as usize] = 41;
/// uc.uc_mcontext.gregs[libc::REG_RIP as usize] = 0x40_0000;
/// uc.uc_mcontext.gregs[libc::REG_EFL as usize] = 0x202;
/// {
///     let mut m = SignalContext::new(&mut uc);
///     assert_eq!(m.gpr(1), 41); // encoding order: 1 is rcx
///     // add qword ptr [8], 1 (48 83 04 25 08 00 00 00 01)
///     let bytes = [0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01];
///     let (instr, offsets) = decode(&bytes, m.rip()).unwrap();
///     emulate(&mut m, &instr, &bytes, &offsets, Some(8)).unwrap();
/// }
/// // The changes are in the context, for rt_sigreturn to restore.
/// assert_eq!(uc.uc_mcontext.gregs[libc::REG_RCX as usize], 42);
/// assert_eq!(uc.uc_mcontext.gregs[libc::REG_RIP as usize], 0x40_0009);
/// ```
pub struct SignalContext<'a> {
    uc: &'a mut libc::ucontext_t,
    fs_base: Cell<Option<u64>>,
    gs_base: Cell<Option<u64>>,
    bus: bool,
}

impl<'a> SignalContext<'a> {
    /// Wraps the context of the current signal.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::signal::context::SignalContext;
    /// use of_core::Machine;
    ///
    /// // SAFETY: an all-zero ucontext_t is a valid value.
    /// let mut uc: libc::ucontext_t = unsafe { core::mem::zeroed() };
    /// uc.uc_mcontext.gregs[libc::REG_R9 as usize] = 9;
    /// let mut m = SignalContext::new(&mut uc);
    /// assert_eq!(m.gpr(9), 9);
    /// m.set_gpr(4, 0x7FFF_F000); // rsp
    /// assert_eq!(m.mxcsr(), 0x1F80); // no fpregs: the reset value
    /// drop(m);
    /// assert_eq!(uc.uc_mcontext.gregs[libc::REG_RSP as usize], 0x7FFF_F000);
    /// ```
    pub fn new(uc: &'a mut libc::ucontext_t) -> Self {
        SignalContext {
            uc,
            fs_base: Cell::new(None),
            gs_base: Cell::new(None),
            bus: false,
        }
    }

    /// Says whether the handler holds the regions' bus ([`crate::region`]): only then are
    /// region accesses served (by their devices) rather than failing like unmapped memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::signal::context::SignalContext;
    /// use of_core::Machine;
    ///
    /// // SAFETY: an all-zero ucontext_t is a valid value.
    /// let mut uc: libc::ucontext_t = unsafe { core::mem::zeroed() };
    /// let mut m = SignalContext::new(&mut uc);
    /// m.set_bus(true);
    /// assert!(!m.trapped(0x10_0000, 8)); // still no region there
    /// ```
    pub fn set_bus(&mut self, held: bool) {
        self.bus = held;
    }

    fn fpstate(&self) -> Option<&libc::_libc_fpstate> {
        // SAFETY: the kernel points fpregs at the FXSAVE-format area inside the signal frame
        // (or leaves it null), which lives as long as the context.
        unsafe { self.uc.uc_mcontext.fpregs.as_ref() }
    }

    fn fpstate_mut(&mut self) -> Option<&mut libc::_libc_fpstate> {
        // SAFETY: as in `fpstate`; we hold the only reference to the context.
        unsafe { self.uc.uc_mcontext.fpregs.as_mut() }
    }

    /// XSAVE state component `i` (see [`crate::cpu`]) in the frame: a pointer to its bytes,
    /// a pointer to the XSAVE header's XSTATE_BV word, and its size. `None` when the frame has
    /// no XSAVE state, the kernel did not save that component, or the OS does not enable it.
    fn component(&self, i: usize) -> Option<(*mut u8, *mut u64, usize)> {
        let c = crate::cpu::get().component(i)?;
        let fp = self.uc.uc_mcontext.fpregs.cast::<u8>();
        if fp.is_null() {
            return None;
        }
        // SAFETY: the kernel's FXSAVE area is 512 bytes; bytes 464..468 are magic1, 472..480
        // the frame's xfeatures and 480..484 its xstate_size (`struct _fpx_sw_bytes`).
        let (magic, features, size) = unsafe {
            (
                core::ptr::read_unaligned(fp.add(SW_BYTES).cast::<u32>()),
                core::ptr::read_unaligned(fp.add(SW_BYTES + 8).cast::<u64>()),
                core::ptr::read_unaligned(fp.add(SW_XSTATE_SIZE).cast::<u32>()),
            )
        };
        let end = c.offset as usize + c.size as usize;
        if magic != FP_XSTATE_MAGIC1 || features & (1 << i) == 0 || (size as usize) < end {
            return None;
        }
        // SAFETY: magic1 says the XSAVE header and the components in `features` follow in
        // standard format (the kernel's signal frame uses it), `size` bytes in all.
        unsafe {
            Some((
                fp.add(c.offset as usize),
                fp.add(XSTATE_BV).cast::<u64>(),
                c.size as usize,
            ))
        }
    }

    /// Reads `buf.len()` bytes at `at` of component `i`; zeros when the component is in its
    /// initial configuration (XSTATE_BV bit clear) or absent.
    fn read_component(&self, i: usize, at: usize, buf: &mut [u8]) {
        buf.fill(0);
        let Some((area, bv, size)) = self.component(i) else {
            return;
        };
        if at + buf.len() > size {
            return;
        }
        // SAFETY: `component` checked the frame holds the component's `size` bytes.
        unsafe {
            if core::ptr::read_unaligned(bv) & (1 << i) != 0 {
                core::ptr::copy_nonoverlapping(area.add(at), buf.as_mut_ptr(), buf.len());
            }
        }
    }

    /// Writes `data` at `at` of component `i`. A component in its initial configuration has
    /// no meaningful bytes in the frame: it is zeroed first and its XSTATE_BV bit set, so
    /// XRSTOR on sigreturn loads it (Intel SDM Vol. 1 §13.8).
    fn write_component(&mut self, i: usize, at: usize, data: &[u8]) {
        let Some((area, bv, size)) = self.component(i) else {
            return;
        };
        if at + data.len() > size {
            return;
        }
        // SAFETY: as in `read_component`; we hold the only reference to the context.
        unsafe {
            let state = core::ptr::read_unaligned(bv);
            if state & (1 << i) == 0 {
                core::ptr::write_bytes(area, 0, size);
                core::ptr::write_unaligned(bv, state | (1 << i));
            }
            core::ptr::copy_nonoverlapping(data.as_ptr(), area.add(at), data.len());
        }
    }

    /// The segment base the thread had when interrupted: the handler runs on the same thread
    /// and signal delivery does not change fs/gs bases, so `arch_prctl(ARCH_GET_*)` reads it.
    fn segment_base(cache: &Cell<Option<u64>>, code: libc::c_int) -> u64 {
        if let Some(v) = cache.get() {
            return v;
        }
        let v = segment_base(code);
        cache.set(Some(v));
        v
    }
}

/// The calling thread's fs or gs base (`code`: [`ARCH_GET_FS`] or [`ARCH_GET_GS`]), by
/// arch_prctl(2); async-signal-safe.
pub(crate) fn segment_base(code: libc::c_int) -> u64 {
    let mut v: u64 = 0;
    // SAFETY: arch_prctl(ARCH_GET_FS/GS, &mut u64) writes one u64 to the pointer.
    unsafe { libc::syscall(libc::SYS_arch_prctl, code, &mut v as *mut u64) };
    v
}

/// The pid of this process, for process_vm_readv/writev.
fn pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Reads ordinary memory of this process without faulting: process_vm_readv(2) reports an
/// inaccessible page as an error instead of raising SIGSEGV.
///
/// # Examples
///
/// ```
/// use of_core::MemoryFault;
/// use of_core::signal::context::read_memory;
///
/// let data = [1u8, 2, 3, 4];
/// let mut buf = [0u8; 4];
/// read_memory(data.as_ptr() as u64, &mut buf).unwrap();
/// assert_eq!(buf, data);
/// // Page 0 is never mapped: an error, not a SIGSEGV.
/// assert_eq!(read_memory(0x10, &mut buf), Err(MemoryFault { addr: 0x10, write: false }));
/// ```
pub fn read_memory(addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
    if buf.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local iovec describes `buf`; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_readv(pid(), &local, 1, &remote, 1, 0) };
    if n == buf.len() as isize {
        Ok(())
    } else {
        Err(MemoryFault {
            addr: addr.wrapping_add(n.max(0) as u64),
            write: false,
        })
    }
}

/// Writes ordinary memory of this process without faulting (process_vm_writev(2), which
/// honours page protections).
///
/// # Examples
///
/// ```
/// use of_core::MemoryFault;
/// use of_core::signal::context::write_memory;
///
/// let mut buf = [0u8; 4];
/// write_memory(buf.as_mut_ptr() as u64, &[5, 6, 7, 8]).unwrap();
/// assert_eq!(std::hint::black_box(buf), [5, 6, 7, 8]);
/// // A read-only page is not written (and does not fault).
/// // SAFETY: a fresh read-only anonymous page, unmapped at the end.
/// let page = unsafe {
///     libc::mmap(core::ptr::null_mut(), 4096, libc::PROT_READ,
///                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
/// };
/// assert_ne!(page, libc::MAP_FAILED);
/// let at = page as u64;
/// assert_eq!(write_memory(at, &[1]), Err(MemoryFault { addr: at, write: true }));
/// unsafe { libc::munmap(page, 4096) };
/// ```
pub fn write_memory(addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
    if data.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: the local iovec describes `data`; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_writev(pid(), &local, 1, &remote, 1, 0) };
    if n == data.len() as isize {
        Ok(())
    } else {
        Err(MemoryFault {
            addr: addr.wrapping_add(n.max(0) as u64),
            write: true,
        })
    }
}

impl Machine for SignalContext<'_> {
    fn gpr(&self, n: usize) -> u64 {
        self.uc.uc_mcontext.gregs[GREG_OF[n & 15] as usize] as u64
    }
    fn set_gpr(&mut self, n: usize, value: u64) {
        self.uc.uc_mcontext.gregs[GREG_OF[n & 15] as usize] = value as i64;
    }
    fn rip(&self) -> u64 {
        self.uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64
    }
    fn set_rip(&mut self, value: u64) {
        self.uc.uc_mcontext.gregs[libc::REG_RIP as usize] = value as i64;
    }
    fn rflags(&self) -> u64 {
        self.uc.uc_mcontext.gregs[libc::REG_EFL as usize] as u64
    }
    fn set_rflags(&mut self, value: u64) {
        self.uc.uc_mcontext.gregs[libc::REG_EFL as usize] = value as i64;
    }
    fn fs_base(&self) -> u64 {
        Self::segment_base(&self.fs_base, ARCH_GET_FS)
    }
    fn gs_base(&self) -> u64 {
        Self::segment_base(&self.gs_base, ARCH_GET_GS)
    }
    fn xmm(&self, n: usize) -> u128 {
        let Some(fp) = self.fpstate() else { return 0 };
        let e = fp._xmm[n & 15].element;
        u128::from(e[0])
            | (u128::from(e[1]) << 32)
            | (u128::from(e[2]) << 64)
            | (u128::from(e[3]) << 96)
    }
    fn set_xmm(&mut self, n: usize, value: u128) {
        if let Some(fp) = self.fpstate_mut() {
            for (i, e) in fp._xmm[n & 15].element.iter_mut().enumerate() {
                *e = (value >> (32 * i)) as u32;
            }
        }
    }
    fn ymm_high(&self, n: usize) -> u128 {
        let mut b = [0u8; 16];
        self.read_component(crate::cpu::YMM_HI128, 16 * (n & 15), &mut b);
        u128::from_le_bytes(b)
    }
    fn set_ymm_high(&mut self, n: usize, value: u128) {
        self.write_component(crate::cpu::YMM_HI128, 16 * (n & 15), &value.to_le_bytes());
    }
    fn zmm_hi256(&self, n: usize) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.read_component(crate::cpu::ZMM_HI256, 32 * (n & 15), &mut b);
        b
    }
    fn set_zmm_hi256(&mut self, n: usize, value: [u8; 32]) {
        self.write_component(crate::cpu::ZMM_HI256, 32 * (n & 15), &value);
    }
    fn hi16_zmm(&self, n: usize) -> [u8; 64] {
        let mut b = [0u8; 64];
        self.read_component(crate::cpu::HI16_ZMM, 64 * (n & 15), &mut b);
        b
    }
    fn set_hi16_zmm(&mut self, n: usize, value: [u8; 64]) {
        self.write_component(crate::cpu::HI16_ZMM, 64 * (n & 15), &value);
    }
    fn opmask(&self, n: usize) -> u64 {
        let mut b = [0u8; 8];
        self.read_component(crate::cpu::OPMASK, 8 * (n & 7), &mut b);
        u64::from_le_bytes(b)
    }
    fn set_opmask(&mut self, n: usize, value: u64) {
        self.write_component(crate::cpu::OPMASK, 8 * (n & 7), &value.to_le_bytes());
    }
    fn mxcsr(&self) -> u32 {
        self.fpstate().map_or(0x1F80, |fp| fp.mxcsr)
    }
    fn set_mxcsr(&mut self, value: u32) {
        if let Some(fp) = self.fpstate_mut() {
            // Reserved bits are those clear in MXCSR_MASK (Intel SDM Vol. 1 §11.6.6); a zero
            // mask means the default 0xFFBF.
            let mask = if fp.mxcr_mask == 0 {
                0xFFBF
            } else {
                fp.mxcr_mask
            };
            fp.mxcsr = value & mask;
        }
    }
    fn trapped(&self, addr: u64, len: u64) -> bool {
        self.bus && crate::region::find(addr, len).is_some()
    }
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        if self.bus
            && let Some((i, off)) = crate::region::find(addr, buf.len() as u64)
        {
            crate::region::read(i, off, buf);
            return Ok(());
        }
        read_memory(addr, buf)
    }
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
        if self.bus
            && let Some((i, off)) = crate::region::find(addr, data.len() as u64)
        {
            crate::region::write(i, off, data);
            return Ok(());
        }
        write_memory(addr, data)
    }
}
