//! The per-thread token returned by [`crate::map_registers`].

use crate::reg::{Plain, RegU8, RegU16, RegU32, RegU64, Special};
use crate::vector::RegU128;
use core::marker::PhantomData;

/// The calling thread's registers, as fields. Each field is a zero-sized view ([`RegU64`],
/// [`RegU32`], [`RegU16`], [`RegU8`]) of the page-0 bytes that hold the register; each `load`,
/// `store` and compound assignment is one instruction on those bytes (see [`crate::reg`]).
///
/// `Registers` is neither `Send` nor `Sync`: it names the registers of the thread that called
/// [`crate::map_registers`] (every thread sees its own registers through the same addresses, so a
/// token moved to another thread would silently name that thread's registers instead).
///
/// Stores to rbx, rsp, rbp (and their narrower views), rip and rflags are `unsafe`: inline asm
/// cannot declare rbx/rbp/rsp clobbered, a rip store is a jump, and an rflags store may set DF.
///
/// ```
/// let r = of::map_registers().expect("install the SIGSEGV handler");
/// let sp = r.rsp.load();
/// assert!(sp != 0);
/// let mut r8 = r.r8;
/// r8.store(40);
/// r8 += 2;
/// assert_eq!(r8.load(), 42);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Registers {
    /// `rax`, 8 bytes (map offset 0x0).
    pub rax: RegU64<0x0, Plain>,
    /// `rcx`, 8 bytes (map offset 0x8).
    pub rcx: RegU64<0x8, Plain>,
    /// `rdx`, 8 bytes (map offset 0x10).
    pub rdx: RegU64<0x10, Plain>,
    /// `rbx`, 8 bytes (map offset 0x18); stores are `unsafe`.
    pub rbx: RegU64<0x18, Special>,
    /// `rsp`, 8 bytes (map offset 0x20); stores are `unsafe`.
    pub rsp: RegU64<0x20, Special>,
    /// `rbp`, 8 bytes (map offset 0x28); stores are `unsafe`.
    pub rbp: RegU64<0x28, Special>,
    /// `rsi`, 8 bytes (map offset 0x30).
    pub rsi: RegU64<0x30, Plain>,
    /// `rdi`, 8 bytes (map offset 0x38).
    pub rdi: RegU64<0x38, Plain>,
    /// `r8`, 8 bytes (map offset 0x40).
    pub r8: RegU64<0x40, Plain>,
    /// `r9`, 8 bytes (map offset 0x48).
    pub r9: RegU64<0x48, Plain>,
    /// `r10`, 8 bytes (map offset 0x50).
    pub r10: RegU64<0x50, Plain>,
    /// `r11`, 8 bytes (map offset 0x58).
    pub r11: RegU64<0x58, Plain>,
    /// `r12`, 8 bytes (map offset 0x60).
    pub r12: RegU64<0x60, Plain>,
    /// `r13`, 8 bytes (map offset 0x68).
    pub r13: RegU64<0x68, Plain>,
    /// `r14`, 8 bytes (map offset 0x70).
    pub r14: RegU64<0x70, Plain>,
    /// `r15`, 8 bytes (map offset 0x78).
    pub r15: RegU64<0x78, Plain>,
    /// `eax`, the low 4 bytes of `rax` (map offset 0x0).
    pub eax: RegU32<0x0, Plain>,
    /// `ecx`, the low 4 bytes of `rcx` (map offset 0x8).
    pub ecx: RegU32<0x8, Plain>,
    /// `edx`, the low 4 bytes of `rdx` (map offset 0x10).
    pub edx: RegU32<0x10, Plain>,
    /// `ebx`, the low 4 bytes of `rbx` (map offset 0x18); stores are `unsafe`.
    pub ebx: RegU32<0x18, Special>,
    /// `esp`, the low 4 bytes of `rsp` (map offset 0x20); stores are `unsafe`.
    pub esp: RegU32<0x20, Special>,
    /// `ebp`, the low 4 bytes of `rbp` (map offset 0x28); stores are `unsafe`.
    pub ebp: RegU32<0x28, Special>,
    /// `esi`, the low 4 bytes of `rsi` (map offset 0x30).
    pub esi: RegU32<0x30, Plain>,
    /// `edi`, the low 4 bytes of `rdi` (map offset 0x38).
    pub edi: RegU32<0x38, Plain>,
    /// `r8d`, the low 4 bytes of `r8` (map offset 0x40).
    pub r8d: RegU32<0x40, Plain>,
    /// `r9d`, the low 4 bytes of `r9` (map offset 0x48).
    pub r9d: RegU32<0x48, Plain>,
    /// `r10d`, the low 4 bytes of `r10` (map offset 0x50).
    pub r10d: RegU32<0x50, Plain>,
    /// `r11d`, the low 4 bytes of `r11` (map offset 0x58).
    pub r11d: RegU32<0x58, Plain>,
    /// `r12d`, the low 4 bytes of `r12` (map offset 0x60).
    pub r12d: RegU32<0x60, Plain>,
    /// `r13d`, the low 4 bytes of `r13` (map offset 0x68).
    pub r13d: RegU32<0x68, Plain>,
    /// `r14d`, the low 4 bytes of `r14` (map offset 0x70).
    pub r14d: RegU32<0x70, Plain>,
    /// `r15d`, the low 4 bytes of `r15` (map offset 0x78).
    pub r15d: RegU32<0x78, Plain>,
    /// `ax`, the low 2 bytes of `rax` (map offset 0x0).
    pub ax: RegU16<0x0, Plain>,
    /// `cx`, the low 2 bytes of `rcx` (map offset 0x8).
    pub cx: RegU16<0x8, Plain>,
    /// `dx`, the low 2 bytes of `rdx` (map offset 0x10).
    pub dx: RegU16<0x10, Plain>,
    /// `bx`, the low 2 bytes of `rbx` (map offset 0x18); stores are `unsafe`.
    pub bx: RegU16<0x18, Special>,
    /// `sp`, the low 2 bytes of `rsp` (map offset 0x20); stores are `unsafe`.
    pub sp: RegU16<0x20, Special>,
    /// `bp`, the low 2 bytes of `rbp` (map offset 0x28); stores are `unsafe`.
    pub bp: RegU16<0x28, Special>,
    /// `si`, the low 2 bytes of `rsi` (map offset 0x30).
    pub si: RegU16<0x30, Plain>,
    /// `di`, the low 2 bytes of `rdi` (map offset 0x38).
    pub di: RegU16<0x38, Plain>,
    /// `r8w`, the low 2 bytes of `r8` (map offset 0x40).
    pub r8w: RegU16<0x40, Plain>,
    /// `r9w`, the low 2 bytes of `r9` (map offset 0x48).
    pub r9w: RegU16<0x48, Plain>,
    /// `r10w`, the low 2 bytes of `r10` (map offset 0x50).
    pub r10w: RegU16<0x50, Plain>,
    /// `r11w`, the low 2 bytes of `r11` (map offset 0x58).
    pub r11w: RegU16<0x58, Plain>,
    /// `r12w`, the low 2 bytes of `r12` (map offset 0x60).
    pub r12w: RegU16<0x60, Plain>,
    /// `r13w`, the low 2 bytes of `r13` (map offset 0x68).
    pub r13w: RegU16<0x68, Plain>,
    /// `r14w`, the low 2 bytes of `r14` (map offset 0x70).
    pub r14w: RegU16<0x70, Plain>,
    /// `r15w`, the low 2 bytes of `r15` (map offset 0x78).
    pub r15w: RegU16<0x78, Plain>,
    /// `al`, the low byte of `rax` (map offset 0x0).
    pub al: RegU8<0x0, Plain>,
    /// `cl`, the low byte of `rcx` (map offset 0x8).
    pub cl: RegU8<0x8, Plain>,
    /// `dl`, the low byte of `rdx` (map offset 0x10).
    pub dl: RegU8<0x10, Plain>,
    /// `bl`, the low byte of `rbx` (map offset 0x18); stores are `unsafe`.
    pub bl: RegU8<0x18, Special>,
    /// `spl`, the low byte of `rsp` (map offset 0x20); stores are `unsafe`.
    pub spl: RegU8<0x20, Special>,
    /// `bpl`, the low byte of `rbp` (map offset 0x28); stores are `unsafe`.
    pub bpl: RegU8<0x28, Special>,
    /// `sil`, the low byte of `rsi` (map offset 0x30).
    pub sil: RegU8<0x30, Plain>,
    /// `dil`, the low byte of `rdi` (map offset 0x38).
    pub dil: RegU8<0x38, Plain>,
    /// `r8b`, the low byte of `r8` (map offset 0x40).
    pub r8b: RegU8<0x40, Plain>,
    /// `r9b`, the low byte of `r9` (map offset 0x48).
    pub r9b: RegU8<0x48, Plain>,
    /// `r10b`, the low byte of `r10` (map offset 0x50).
    pub r10b: RegU8<0x50, Plain>,
    /// `r11b`, the low byte of `r11` (map offset 0x58).
    pub r11b: RegU8<0x58, Plain>,
    /// `r12b`, the low byte of `r12` (map offset 0x60).
    pub r12b: RegU8<0x60, Plain>,
    /// `r13b`, the low byte of `r13` (map offset 0x68).
    pub r13b: RegU8<0x68, Plain>,
    /// `r14b`, the low byte of `r14` (map offset 0x70).
    pub r14b: RegU8<0x70, Plain>,
    /// `r15b`, the low byte of `r15` (map offset 0x78).
    pub r15b: RegU8<0x78, Plain>,
    /// `ah`, byte 1 of `rax` (map offset 0x1).
    pub ah: RegU8<0x1, Plain>,
    /// `ch`, byte 1 of `rcx` (map offset 0x9).
    pub ch: RegU8<0x9, Plain>,
    /// `dh`, byte 1 of `rdx` (map offset 0x11).
    pub dh: RegU8<0x11, Plain>,
    /// `bh`, byte 1 of `rbx` (map offset 0x19); stores are `unsafe`.
    pub bh: RegU8<0x19, Special>,
    /// `rip`: reads give the next instruction; a store is a jump (map offset 0x80); stores are `unsafe`.
    pub rip: RegU64<0x80, Special>,
    /// `rflags`: reads as `pushfq` would push; stores change CF PF AF ZF SF DF OF only (map offset 0x88); stores are `unsafe`.
    pub rflags: RegU64<0x88, Special>,
    /// `xmm0` (map offset 0x100), 16 bytes.
    pub xmm0: RegU128<0x100>,
    /// `xmm1` (map offset 0x110), 16 bytes.
    pub xmm1: RegU128<0x110>,
    /// `xmm2` (map offset 0x120), 16 bytes.
    pub xmm2: RegU128<0x120>,
    /// `xmm3` (map offset 0x130), 16 bytes.
    pub xmm3: RegU128<0x130>,
    /// `xmm4` (map offset 0x140), 16 bytes.
    pub xmm4: RegU128<0x140>,
    /// `xmm5` (map offset 0x150), 16 bytes.
    pub xmm5: RegU128<0x150>,
    /// `xmm6` (map offset 0x160), 16 bytes.
    pub xmm6: RegU128<0x160>,
    /// `xmm7` (map offset 0x170), 16 bytes.
    pub xmm7: RegU128<0x170>,
    /// `xmm8` (map offset 0x180), 16 bytes.
    pub xmm8: RegU128<0x180>,
    /// `xmm9` (map offset 0x190), 16 bytes.
    pub xmm9: RegU128<0x190>,
    /// `xmm10` (map offset 0x1a0), 16 bytes.
    pub xmm10: RegU128<0x1a0>,
    /// `xmm11` (map offset 0x1b0), 16 bytes.
    pub xmm11: RegU128<0x1b0>,
    /// `xmm12` (map offset 0x1c0), 16 bytes.
    pub xmm12: RegU128<0x1c0>,
    /// `xmm13` (map offset 0x1d0), 16 bytes.
    pub xmm13: RegU128<0x1d0>,
    /// `xmm14` (map offset 0x1e0), 16 bytes.
    pub xmm14: RegU128<0x1e0>,
    /// `xmm15` (map offset 0x1f0), 16 bytes.
    pub xmm15: RegU128<0x1f0>,
    /// `mxcsr` (map offset 0x200), 4 bytes; stores are `unsafe` (compiled code assumes the
    /// default rounding and exception masks) and keep the reserved bits clear.
    pub mxcsr: RegU32<0x200, Special>,
    /// The fs base (map offset 0x90), 8 bytes, read only: a store does not compile.
    pub fs_base: RegU64<0x90, Special>,
    /// The gs base (map offset 0x98), 8 bytes, read only: a store does not compile.
    pub gs_base: RegU64<0x98, Special>,
    _thread: PhantomData<*const ()>,
}

impl Registers {
    /// The views; only [`crate::map_registers`] hands them out, after installing the handler.
    pub(crate) const fn new() -> Self {
        Registers {
            rax: RegU64::new(),
            rcx: RegU64::new(),
            rdx: RegU64::new(),
            rbx: RegU64::new_special(),
            rsp: RegU64::new_special(),
            rbp: RegU64::new_special(),
            rsi: RegU64::new(),
            rdi: RegU64::new(),
            r8: RegU64::new(),
            r9: RegU64::new(),
            r10: RegU64::new(),
            r11: RegU64::new(),
            r12: RegU64::new(),
            r13: RegU64::new(),
            r14: RegU64::new(),
            r15: RegU64::new(),
            eax: RegU32::new(),
            ecx: RegU32::new(),
            edx: RegU32::new(),
            ebx: RegU32::new_special(),
            esp: RegU32::new_special(),
            ebp: RegU32::new_special(),
            esi: RegU32::new(),
            edi: RegU32::new(),
            r8d: RegU32::new(),
            r9d: RegU32::new(),
            r10d: RegU32::new(),
            r11d: RegU32::new(),
            r12d: RegU32::new(),
            r13d: RegU32::new(),
            r14d: RegU32::new(),
            r15d: RegU32::new(),
            ax: RegU16::new(),
            cx: RegU16::new(),
            dx: RegU16::new(),
            bx: RegU16::new_special(),
            sp: RegU16::new_special(),
            bp: RegU16::new_special(),
            si: RegU16::new(),
            di: RegU16::new(),
            r8w: RegU16::new(),
            r9w: RegU16::new(),
            r10w: RegU16::new(),
            r11w: RegU16::new(),
            r12w: RegU16::new(),
            r13w: RegU16::new(),
            r14w: RegU16::new(),
            r15w: RegU16::new(),
            al: RegU8::new(),
            cl: RegU8::new(),
            dl: RegU8::new(),
            bl: RegU8::new_special(),
            spl: RegU8::new_special(),
            bpl: RegU8::new_special(),
            sil: RegU8::new(),
            dil: RegU8::new(),
            r8b: RegU8::new(),
            r9b: RegU8::new(),
            r10b: RegU8::new(),
            r11b: RegU8::new(),
            r12b: RegU8::new(),
            r13b: RegU8::new(),
            r14b: RegU8::new(),
            r15b: RegU8::new(),
            ah: RegU8::new(),
            ch: RegU8::new(),
            dh: RegU8::new(),
            bh: RegU8::new_special(),
            rip: RegU64::new_special(),
            rflags: RegU64::new_special(),
            xmm0: RegU128::new(),
            xmm1: RegU128::new(),
            xmm2: RegU128::new(),
            xmm3: RegU128::new(),
            xmm4: RegU128::new(),
            xmm5: RegU128::new(),
            xmm6: RegU128::new(),
            xmm7: RegU128::new(),
            xmm8: RegU128::new(),
            xmm9: RegU128::new(),
            xmm10: RegU128::new(),
            xmm11: RegU128::new(),
            xmm12: RegU128::new(),
            xmm13: RegU128::new(),
            xmm14: RegU128::new(),
            xmm15: RegU128::new(),
            mxcsr: RegU32::new_special(),
            fs_base: RegU64::new_special(),
            gs_base: RegU64::new_special(),
            _thread: PhantomData,
        }
    }
}
