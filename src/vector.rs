//! 128-bit views of the map (xmm registers) and the read-only views of fs/gs base and MXCSR.

use core::marker::PhantomData;

/// A 16-byte view of the register map at byte offset `OFF` (xmm0 is at 0x100, xmmN at
/// `0x100 + 16 * N`; any 16 mapped bytes work, e.g. `RegU128<0x0>` is rax:rcx).
///
/// `load` and `store` are each one `movdqu` with an absolute page-0 operand; the xmm register
/// that carries the value is declared clobbered, and so is every xmm register the view covers.
/// Neither `Send` nor `Sync`.
///
/// ```
/// let r = of::map_registers().unwrap();
/// let v = 0x0011_2233_4455_6677_8899_aabb_ccdd_eeffu128;
/// r.xmm9.store(v); //          movdqu xmmword ptr [0x190], xmm15
/// assert_eq!(r.xmm9.load(), v); // movdqu xmm, xmmword ptr [0x190]
/// ```
///
/// A view outside the xmm slots does not build:
///
/// ```compile_fail,E0080
/// let v = of::RegU128::<0x0>::new(); // rax:rcx: use RegU64 views
/// # let _ = v.load();
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RegU128<const OFF: usize> {
    _p: PhantomData<*const ()>,
}

impl<const OFF: usize> RegU128<OFF> {
    /// A view of the 16 bytes at `OFF`; fails to compile if they leave the vector part of the
    /// map (0x100..0x200) — scalar registers have their own typed views.
    ///
    /// ```
    /// of::map_registers().unwrap();
    /// let xmm10 = of::RegU128::<{ 0x100 + 16 * 10 }>::new();
    /// xmm10.store(1 << 100);
    /// assert_eq!(xmm10.load(), 1 << 100);
    /// ```
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
    ///
    /// The 16 bytes may straddle two xmm registers (any 16 mapped bytes are a view):
    ///
    /// ```
    /// of::map_registers().unwrap();
    /// let (xmm11, xmm12) = (of::RegU128::<0x1b0>::new(), of::RegU128::<0x1c0>::new());
    /// xmm11.store(0x1111_1111_1111_1111_2222_2222_2222_2222);
    /// xmm12.store(0x3333_3333_3333_3333_4444_4444_4444_4444);
    /// // high half of xmm11, then low half of xmm12 (little-endian)
    /// let mid = of::RegU128::<0x1b8>::new().load();
    /// assert_eq!(mid, 0x4444_4444_4444_4444_1111_1111_1111_1111);
    /// ```
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
    ///
    /// ```
    /// let r = of::map_registers().unwrap();
    /// r.xmm8.store(u128::MAX);
    /// assert_eq!(r.xmm8.load(), u128::MAX);
    /// ```
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
