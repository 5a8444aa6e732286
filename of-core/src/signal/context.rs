//! The interrupted thread's state, as found in the signal frame: a [`Machine`] over libc's
//! `ucontext_t` / `mcontext_t` (gregs for the general-purpose registers, rip and rflags;
//! `fpregs` for xmm and mxcsr).

use crate::machine::{Machine, MemoryFault};
use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};

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
const ARCH_GET_FS: libc::c_int = 0x1003;
const ARCH_GET_GS: libc::c_int = 0x1004;

/// Offset of the YMM_Hi128 component in the standard-format XSAVE area, from CPUID leaf 0xD
/// sub-leaf 2 (EBX); 0 when AVX state is not available. Read once by [`probe_xsave`].
static YMM_HI128_OFFSET: AtomicU32 = AtomicU32::new(0);

/// Reads the XSAVE layout from CPUID (Intel SDM Vol. 1 §13.4.3). Called at installation, never
/// from the handler (CPUID may trap to a hypervisor).
///
/// # Examples
///
/// ```
/// use of_core::signal::context::{avx_enabled, probe_xsave};
///
/// probe_xsave();
/// probe_xsave(); // idempotent
/// assert_eq!(avx_enabled(), std::arch::is_x86_feature_detected!("avx"));
/// ```
pub fn probe_xsave() {
    probe();
    PROBED.store(true, Ordering::Release);
}

fn probe() {
    let max = core::arch::x86_64::__cpuid(0).eax;
    if max < 0xD {
        return;
    }
    let l1 = core::arch::x86_64::__cpuid_count(1, 0);
    let osxsave_avx = (l1.ecx >> 27) & 1 == 1 && (l1.ecx >> 28) & 1 == 1;
    if !osxsave_avx {
        return;
    }
    let ymm = core::arch::x86_64::__cpuid_count(0xD, 2);
    if ymm.eax == 256 {
        YMM_HI128_OFFSET.store(ymm.ebx, Ordering::Relaxed);
    }
}

/// Whether the OS enabled AVX state (found by [`probe_xsave`]).
///
/// # Examples
///
/// ```
/// use of_core::signal::context::avx_enabled;
///
/// // The OS saves ymm state (XCR0) exactly when std's runtime detection reports AVX.
/// assert_eq!(avx_enabled(), std::arch::is_x86_feature_detected!("avx"));
/// ```
pub fn avx_enabled() -> bool {
    if !PROBED.load(Ordering::Acquire) {
        probe_xsave();
    }
    YMM_HI128_OFFSET.load(Ordering::Relaxed) != 0
}

static PROBED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// FP_XSTATE_MAGIC1 (arch/x86/include/uapi/asm/sigcontext.h): the signal frame's FXSAVE area is
/// followed by an XSAVE header and extended state.
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// Offset of `struct _fpx_sw_bytes` (the software-reserved bytes 464..512 of the FXSAVE area).
const SW_BYTES: usize = 464;
/// Offset of the XSAVE header's XSTATE_BV (just after the 512-byte legacy area).
const XSTATE_BV: usize = 512;
/// XSTATE_BV bit of the YMM_Hi128 component.
const YMM_BIT: u64 = 1 << 2;

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
        }
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

    /// Pointer to the YMM_Hi128 area of the frame's XSAVE state, with its XSTATE_BV word, if
    /// the frame has one.
    fn ymm_area(&self) -> Option<(*mut u8, *mut u64)> {
        let off = YMM_HI128_OFFSET.load(Ordering::Relaxed) as usize;
        let fp = self.uc.uc_mcontext.fpregs.cast::<u8>();
        if off == 0 || fp.is_null() {
            return None;
        }
        // SAFETY: the kernel's FXSAVE area is 512 bytes; bytes 464..468 are magic1 and
        // 472..480 the frame's xfeatures (`struct _fpx_sw_bytes`).
        let (magic, features) = unsafe {
            (
                core::ptr::read_unaligned(fp.add(SW_BYTES).cast::<u32>()),
                core::ptr::read_unaligned(fp.add(SW_BYTES + 8).cast::<u64>()),
            )
        };
        if magic != FP_XSTATE_MAGIC1 || features & YMM_BIT == 0 {
            return None;
        }
        // SAFETY: magic1 says the XSAVE header and the components in `features` follow in
        // standard format, as the kernel's signal frame uses.
        unsafe { Some((fp.add(off), fp.add(XSTATE_BV).cast::<u64>())) }
    }

    /// The segment base the thread had when interrupted: the handler runs on the same thread
    /// and signal delivery does not change fs/gs bases, so `arch_prctl(ARCH_GET_*)` reads it.
    fn segment_base(cache: &Cell<Option<u64>>, code: libc::c_int) -> u64 {
        if let Some(v) = cache.get() {
            return v;
        }
        let mut v: u64 = 0;
        // SAFETY: arch_prctl(ARCH_GET_FS/GS, &mut u64) writes one u64 to the pointer.
        unsafe { libc::syscall(libc::SYS_arch_prctl, code, &mut v as *mut u64) };
        cache.set(Some(v));
        v
    }
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
        let Some((area, bv)) = self.ymm_area() else {
            return 0;
        };
        // SAFETY: `ymm_area` checked the frame holds XSAVE state with the YMM component.
        unsafe {
            if core::ptr::read_unaligned(bv) & YMM_BIT == 0 {
                return 0; // initial configuration: upper halves are zero
            }
            core::ptr::read_unaligned(area.add(16 * (n & 15)).cast::<u128>())
        }
    }
    fn set_ymm_high(&mut self, n: usize, value: u128) {
        let Some((area, bv)) = self.ymm_area() else {
            return;
        };
        // SAFETY: as in `ymm_high`; when the component was in its initial configuration its
        // bytes are not meaningful, so all sixteen upper halves are zeroed before setting one.
        unsafe {
            let state = core::ptr::read_unaligned(bv);
            if state & YMM_BIT == 0 {
                core::ptr::write_bytes(area, 0, 256);
                core::ptr::write_unaligned(bv, state | YMM_BIT);
            }
            core::ptr::write_unaligned(area.add(16 * (n & 15)).cast::<u128>(), value);
        }
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
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        read_memory(addr, buf)
    }
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
        write_memory(addr, data)
    }
}
