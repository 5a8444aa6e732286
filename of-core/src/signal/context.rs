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
const ARCH_GET_FS: libc::c_int = 0x1003;
const ARCH_GET_GS: libc::c_int = 0x1004;

/// A [`Machine`] over the `ucontext_t` a signal handler receives. Changes are written straight
/// into the context, so they take effect when the handler returns (rt_sigreturn restores them).
pub struct SignalContext<'a> {
    uc: &'a mut libc::ucontext_t,
    fs_base: Cell<Option<u64>>,
    gs_base: Cell<Option<u64>>,
}

impl<'a> SignalContext<'a> {
    /// Wraps the context of the current signal.
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
