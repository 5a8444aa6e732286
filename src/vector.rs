//! 128-bit views of the map (xmm registers) and the read-only views of fs/gs base and MXCSR.

use core::marker::PhantomData;

/// A 16-byte view of the register map at byte offset `OFF` (xmm0 is at 0x100, xmmN at
/// `0x100 + 16 * N`; any 16 mapped bytes work, e.g. `RegU128<0x0>` is rax:rcx).
///
/// `load` and `store` are each one `movdqu` with an absolute page-0 operand; the xmm register
/// that carries the value is declared clobbered, and so is every xmm register the view covers.
/// Neither `Send` nor `Sync`.
#[derive(Clone, Copy, Debug)]
pub struct RegU128<const OFF: usize> {
    _p: PhantomData<*const ()>,
}

impl<const OFF: usize> RegU128<OFF> {
    /// A view of the 16 bytes at `OFF`; fails to compile if they leave the vector part of the
    /// map (0x100..0x200) — scalar registers have their own typed views.
    pub const fn new() -> Self {
        const {
            assert!(
                OFF >= 0x100 && OFF + 16 <= 0x200,
                "RegU128 views cover xmm bytes (0x100..0x200)"
            )
        };
        RegU128 { _p: PhantomData }
    }

    /// Reads the 16 bytes (little-endian) with one `movdqu xmm, [OFF]`.
    #[inline(always)]
    pub fn load(&self) -> u128 {
        let mut out = [0u8; 16];
        // SAFETY: one map load into a clobbered xmm register, then an ordinary store to `out`.
        unsafe {
            core::arch::asm!(
                "movdqu {x}, xmmword ptr [{off}]",
                "movdqu xmmword ptr [{p}], {x}",
                x = out(xmm_reg) _,
                p = in(reg) out.as_mut_ptr(),
                off = const OFF,
                options(nostack, preserves_flags),
            );
        }
        u128::from_le_bytes(out)
    }

    /// Writes the 16 bytes with one `movdqu [OFF], xmm`. Every xmm register is declared
    /// clobbered (the view may cover any of them).
    #[inline(always)]
    pub fn store(&self, value: u128) {
        let bytes = value.to_le_bytes();
        // SAFETY: an ordinary load from `bytes`, then one map store; all xmm registers are
        // declared clobbered, none is live across the block.
        unsafe {
            core::arch::asm!(
                "movdqu xmm15, xmmword ptr [{p}]",
                "movdqu xmmword ptr [{off}], xmm15",
                p = in(reg) bytes.as_ptr(),
                off = const OFF,
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
                options(nostack, preserves_flags),
            );
        }
    }
}

impl<const OFF: usize> Default for RegU128<OFF> {
    fn default() -> Self {
        Self::new()
    }
}
