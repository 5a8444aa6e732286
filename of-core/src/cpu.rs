//! What this CPU and its OS provide, read once: the CPUID feature bits, the vendor, the XSAVE
//! state components the OS enabled (XCR0) with their offsets in the standard-format XSAVE area
//! (CPUID leaf 0xD), and MXCSR_MASK.
//!
//! This is the bottom of of-core: the emulator, the signal context and the host-execution
//! trampolines ask here; this module asks nothing of them.
//!
//! The first call reads everything (CPUID, XGETBV, one `fxsave64`); [`crate::signal::install`]
//! makes that call, so the signal handler normally finds the values ready. A call that finds
//! them not yet published (the first use raced with another thread, or nothing installed the
//! handler) computes its own copy instead of waiting, so no caller ever spins on another thread.
//!
//! `OF_CPU_HIDE=avx512` (or `avx2`, `avx`) in the environment makes `of` behave as on a CPU
//! without those extensions (a test aid; see `hidden_from_env`).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};
use iced_x86::CpuidFeature;

/// An XSAVE state component: where it starts in the standard-format XSAVE area and how many
/// bytes it has (CPUID leaf 0xD sub-leaf `i`, EBX and EAX; Intel SDM Vol. 1 §13.2, §13.4.3).
///
/// # Examples
///
/// ```
/// use of_core::cpu;
///
/// // The AVX state (YMM_Hi128, component 2) is 256 bytes: the upper halves of ymm0..ymm15.
/// if let Some(c) = cpu::get().component(cpu::YMM_HI128) {
///     assert_eq!(c.size, 256);
///     assert!(c.offset >= 576); // after the legacy area and the XSAVE header
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Component {
    /// Offset in bytes from the start of the XSAVE area.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// XSAVE component number of YMM_Hi128: bits 128..256 of ymm0..ymm15 (16 × 16 bytes).
pub const YMM_HI128: usize = 2;
/// XSAVE component number of the AVX-512 opmask state: k0..k7 (8 × 8 bytes).
pub const OPMASK: usize = 5;
/// XSAVE component number of ZMM_Hi256: bits 256..512 of zmm0..zmm15 (16 × 32 bytes).
pub const ZMM_HI256: usize = 6;
/// XSAVE component number of Hi16_ZMM: all 512 bits of zmm16..zmm31 (16 × 64 bytes).
pub const HI16_ZMM: usize = 7;

/// The expected sizes of the components this crate reads (Intel SDM Vol. 1 table 13-1).
const SIZES: [(usize, u32); 4] = [
    (YMM_HI128, 256),
    (OPMASK, 64),
    (ZMM_HI256, 512),
    (HI16_ZMM, 1024),
];

/// Everything of this CPU the emulator depends on.
///
/// # Examples
///
/// ```
/// use of_core::cpu;
///
/// let c = cpu::get();
/// assert_eq!(c.avx(), std::arch::is_x86_feature_detected!("avx"));
/// assert_eq!(c.avx512(), std::arch::is_x86_feature_detected!("avx512f"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// CPUID.1:ECX.
    pub leaf1_ecx: u32,
    /// CPUID.1:EDX.
    pub leaf1_edx: u32,
    /// CPUID.(EAX=7,ECX=0):EBX.
    pub leaf7_ebx: u32,
    /// CPUID.(EAX=7,ECX=0):ECX.
    pub leaf7_ecx: u32,
    /// CPUID.(EAX=7,ECX=0):EDX.
    pub leaf7_edx: u32,
    /// CPUID.(EAX=7,ECX=1):EAX.
    pub leaf7_1_eax: u32,
    /// CPUID.80000001H:ECX.
    pub ext1_ecx: u32,
    /// CPUID.80000001H:EDX.
    pub ext1_edx: u32,
    /// XCR0: the state components the OS saves and restores (0 without OSXSAVE).
    pub xcr0: u64,
    /// Whether the vendor string is "AuthenticAMD".
    pub amd: bool,
    /// Components 0..8 of the standard-format XSAVE area (only enabled ones are non-zero).
    pub components: [Component; 8],
    /// MXCSR_MASK (Intel SDM Vol. 1 §11.6.6): the MXCSR bits software may set.
    pub mxcsr_mask: u32,
}

const fn bit(word: u32, n: u32) -> bool {
    (word >> n) & 1 == 1
}

impl Cpu {
    /// Reads the CPU (CPUID, XGETBV when the OS enabled it, one `fxsave64`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(of_core::cpu::Cpu::read(), of_core::cpu::get());
    /// ```
    pub fn read() -> Cpu {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        let zero = core::arch::x86_64::CpuidResult {
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
        };
        let l0 = __cpuid(0);
        let max = l0.eax;
        let l1 = __cpuid_count(1, 0);
        let l7 = if max >= 7 { __cpuid_count(7, 0) } else { zero };
        let l7_1 = if max >= 7 && l7.eax >= 1 {
            __cpuid_count(7, 1)
        } else {
            zero
        };
        let emax = __cpuid(0x8000_0000).eax;
        let e1 = if emax >= 0x8000_0001 {
            __cpuid(0x8000_0001)
        } else {
            zero
        };
        let xcr0 = hardware_xcr0();
        let amd = l0.ebx == 0x6874_7541 && l0.edx == 0x6974_6E65 && l0.ecx == 0x444D_4163;
        let hidden = hidden_from_env();
        let (mut l1c, mut l7b, mut l7c, mut l7d, mut l71a, mut xcr0) =
            (l1.ecx, l7.ebx, l7.ecx, l7.edx, l7_1.eax, xcr0);
        if hidden & (HIDE_AVX512 | HIDE_AVX2 | HIDE_AVX) != 0 {
            // AVX512F and every subset (leaf 7 EBX bits 16..31 but SHA and ADX/SMAP/CLFLUSHOPT/
            // CLWB, ECX's VBMI/VBMI2/VNNI/BITALG/VPOPCNTDQ, EDX's 4VNNIW/4FMAPS/VP2INTERSECT/
            // FP16, leaf 7.1 EAX's BF16) and the opmask/ZMM state in XCR0.
            l7b &= !((1 << 16) | (1 << 17) | (1 << 21) | (1 << 26) | (1 << 27) | (1 << 28));
            l7b &= !((1 << 30) | (1 << 31));
            l7c &= !((1 << 1) | (1 << 6) | (1 << 11) | (1 << 12) | (1 << 14));
            l7d &= !((1 << 2) | (1 << 3) | (1 << 8) | (1 << 23));
            l71a &= !(1 << 5);
            xcr0 &= !0b1110_0000;
        }
        if hidden & (HIDE_AVX2 | HIDE_AVX) != 0 {
            l7b &= !(1 << 5);
        }
        if hidden & HIDE_AVX != 0 {
            l1c &= !((1 << 28) | (1 << 12) | (1 << 29)); // AVX, FMA, F16C
            xcr0 &= !0b100;
        }
        let mut components = [Component::default(); 8];
        if max >= 0xD {
            for (i, size) in SIZES {
                if xcr0 & (1 << i) != 0 {
                    let c = __cpuid_count(0xD, i as u32);
                    if c.eax == size {
                        components[i] = Component {
                            offset: c.ebx,
                            size: c.eax,
                        };
                    }
                }
            }
        }
        Cpu {
            leaf1_ecx: l1c,
            leaf1_edx: l1.edx,
            leaf7_ebx: l7b,
            leaf7_ecx: l7c,
            leaf7_edx: l7d,
            leaf7_1_eax: l71a,
            ext1_ecx: e1.ecx,
            ext1_edx: e1.edx,
            xcr0,
            amd,
            components,
            mxcsr_mask: read_mxcsr_mask(),
        }
    }

    /// Where component `i` (0..8) lies in the signal frame's XSAVE area, if the OS enabled it.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::cpu;
    ///
    /// let c = cpu::get();
    /// assert_eq!(c.component(cpu::HI16_ZMM).is_some(), c.avx512());
    /// assert_eq!(c.component(99), None);
    /// ```
    pub fn component(&self, i: usize) -> Option<Component> {
        self.components.get(i).copied().filter(|c| c.size != 0)
    }

    /// AVX usable: the CPU has it and the OS saves the ymm state (XCR0 bits 1 and 2).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(of_core::cpu::get().avx(), std::arch::is_x86_feature_detected!("avx"));
    /// ```
    pub fn avx(&self) -> bool {
        bit(self.leaf1_ecx, 28) && self.xcr0 & 0b110 == 0b110 && self.component(YMM_HI128).is_some()
    }

    /// AVX-512 usable: AVX512F, and the OS saves the opmask, ZMM_Hi256 and Hi16_ZMM state
    /// (XCR0 bits 5..8) besides the AVX state.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(of_core::cpu::get().avx512(), std::arch::is_x86_feature_detected!("avx512f"));
    /// ```
    pub fn avx512(&self) -> bool {
        self.avx()
            && bit(self.leaf7_ebx, 16)
            && self.xcr0 & 0b1110_0000 == 0b1110_0000
            && self.component(OPMASK).is_some()
            && self.component(ZMM_HI256).is_some()
            && self.component(HI16_ZMM).is_some()
    }

    /// Whether this CPU implements `f` and the OS enabled the state it needs (Intel SDM Vol.
    /// 2A, CPUID; AMD APM Vol. 3 appendix E). Features this table does not know are reported
    /// absent, so their instructions are refused, never executed.
    ///
    /// # Examples
    ///
    /// ```
    /// use iced_x86::CpuidFeature as F;
    ///
    /// let c = of_core::cpu::get();
    /// assert!(c.has(F::X64));
    /// assert_eq!(c.has(F::AVX2), std::arch::is_x86_feature_detected!("avx2"));
    /// assert_eq!(c.has(F::AVX512BW), std::arch::is_x86_feature_detected!("avx512bw"));
    /// assert!(!c.has(F::AMX_TILE)); // not in the table: never
    /// ```
    pub fn has(&self, f: CpuidFeature) -> bool {
        use CpuidFeature as F;
        let avx = self.avx();
        let avx512 = self.avx512();
        let (c1, d1, b7, c7, d7) = (
            self.leaf1_ecx,
            self.leaf1_edx,
            self.leaf7_ebx,
            self.leaf7_ecx,
            self.leaf7_edx,
        );
        match f {
            F::INTEL8086 | F::INTEL186 | F::INTEL286 | F::INTEL386 | F::INTEL486 | F::X64 => true,
            F::CMOV => bit(d1, 15),
            F::CX8 => bit(d1, 8),
            F::CMPXCHG16B => bit(c1, 13),
            F::MMX => bit(d1, 23),
            F::SSE => bit(d1, 25),
            F::SSE2 => bit(d1, 26),
            F::SSE3 => bit(c1, 0),
            F::SSSE3 => bit(c1, 9),
            F::SSE4_1 => bit(c1, 19),
            F::SSE4_2 => bit(c1, 20),
            F::PCLMULQDQ => bit(c1, 1),
            F::AES => bit(c1, 25),
            F::MOVBE => bit(c1, 22),
            F::POPCNT => bit(c1, 23),
            F::FMA => bit(c1, 12) && avx,
            F::F16C => bit(c1, 29) && avx,
            F::AVX => avx,
            F::AVX2 => bit(b7, 5) && avx,
            F::BMI1 => bit(b7, 3),
            F::BMI2 => bit(b7, 8),
            F::ADX => bit(b7, 19),
            F::SHA => bit(b7, 29),
            F::VAES => bit(c7, 9) && avx,
            F::VPCLMULQDQ => bit(c7, 10) && avx,
            F::GFNI => bit(c7, 8),
            F::MOVDIRI => bit(c7, 27),
            F::RDPID => bit(c7, 22),
            F::LZCNT => bit(self.ext1_ecx, 5),
            F::SSE4A => bit(self.ext1_ecx, 6),
            F::AVX_VNNI => bit(self.leaf7_1_eax, 4) && avx,
            F::AVX512F => avx512,
            F::AVX512DQ => bit(b7, 17) && avx512,
            F::AVX512_IFMA => bit(b7, 21) && avx512,
            F::AVX512PF => bit(b7, 26) && avx512,
            F::AVX512ER => bit(b7, 27) && avx512,
            F::AVX512CD => bit(b7, 28) && avx512,
            F::AVX512BW => bit(b7, 30) && avx512,
            F::AVX512VL => bit(b7, 31) && avx512,
            F::AVX512_VBMI => bit(c7, 1) && avx512,
            F::AVX512_VBMI2 => bit(c7, 6) && avx512,
            F::AVX512_VNNI => bit(c7, 11) && avx512,
            F::AVX512_BITALG => bit(c7, 12) && avx512,
            F::AVX512_VPOPCNTDQ => bit(c7, 14) && avx512,
            F::AVX512_4VNNIW => bit(d7, 2) && avx512,
            F::AVX512_4FMAPS => bit(d7, 3) && avx512,
            F::AVX512_VP2INTERSECT => bit(d7, 8) && avx512,
            F::AVX512_FP16 => bit(d7, 23) && avx512,
            F::AVX512_BF16 => bit(self.leaf7_1_eax, 5) && avx512,
            _ => false,
        }
    }

    /// Whether this CPU implements every feature `instr` needs, so running it on the host
    /// cannot raise #UD.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::decode::decode;
    ///
    /// let c = of_core::cpu::get();
    /// // add qword ptr [8], 1: baseline x86-64.
    /// let (add, _) = decode(&[0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01], 0).unwrap();
    /// assert!(c.supports(&add));
    /// // vaddps zmm0, zmm1, zmm2 (62 f1 74 48 58 c2): AVX512F.
    /// let (evex, _) = decode(&[0x62, 0xF1, 0x74, 0x48, 0x58, 0xC2], 0).unwrap();
    /// assert_eq!(c.supports(&evex), std::arch::is_x86_feature_detected!("avx512f"));
    /// ```
    pub fn supports(&self, instr: &iced_x86::Instruction) -> bool {
        instr.code().cpuid_features().iter().all(|&f| self.has(f))
    }
}

const HIDE_AVX512: u32 = 1;
const HIDE_AVX2: u32 = 2;
const HIDE_AVX: u32 = 4;

/// `OF_CPU_HIDE`: a comma-separated list of `avx512`, `avx2`, `avx` (each implies the ones
/// before it) that `of` then treats as absent, as on a CPU without them: instructions needing
/// them are refused, host execution uses the narrower trampoline and the XSAVE components are
/// not touched. A test aid for the paths of older CPUs on a newer one (pair it with glibc's
/// `GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,...` so the C library does not use them either).
/// Read when the CPU is first read (at installation).
fn hidden_from_env() -> u32 {
    // SAFETY: getenv with a NUL-terminated name; called from `Cpu::read`, which
    // `signal::install` runs outside any signal handler.
    let v = unsafe { libc::getenv(c"OF_CPU_HIDE".as_ptr()) };
    if v.is_null() {
        return 0;
    }
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    let bytes = unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes();
    bytes
        .split(|&b| b == b',')
        .map(|w| match w {
            b"avx512" => HIDE_AVX512,
            b"avx2" => HIDE_AVX2,
            b"avx" => HIDE_AVX,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

/// Reads MXCSR_MASK from an `fxsave64` image; 0 there means the default 0xFFBF.
fn read_mxcsr_mask() -> u32 {
    #[repr(C, align(16))]
    struct Area([u8; 512]);
    let mut area = Area([0; 512]);
    // SAFETY: fxsave64 writes exactly 512 bytes to a 16-byte aligned buffer we own; it changes
    // no register.
    unsafe {
        core::arch::asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack, preserves_flags));
    }
    let mut b = [0u8; 4];
    b.copy_from_slice(&area.0[28..32]);
    match u32::from_le_bytes(b) {
        0 => 0xFFBF,
        v => v,
    }
}

/// 0: not read, 1: being published, 2: ready.
static STATE: AtomicU8 = AtomicU8::new(0);

struct Published(UnsafeCell<Cpu>);

// SAFETY: the cell is written once, by the thread that moved STATE from 0 to 1, before STATE
// becomes 2 (Release); it is read only after STATE == 2 is seen (Acquire) and never written
// again.
unsafe impl Sync for Published {}

static PUBLISHED: Published = Published(UnsafeCell::new(Cpu {
    leaf1_ecx: 0,
    leaf1_edx: 0,
    leaf7_ebx: 0,
    leaf7_ecx: 0,
    leaf7_edx: 0,
    leaf7_1_eax: 0,
    ext1_ecx: 0,
    ext1_edx: 0,
    xcr0: 0,
    amd: false,
    components: [Component { offset: 0, size: 0 }; 8],
    mxcsr_mask: 0xFFBF,
}));

/// This CPU, read once (async-signal-safe; see the module docs for the first call). The
/// value is small and `Copy`; callers keep it for the duration of one decision.
///
/// # Examples
///
/// ```
/// let c = of_core::cpu::get();
/// assert_eq!(c, of_core::cpu::get()); // the same values every time
/// assert_eq!(c.mxcsr_mask & 0xFFBF, 0xFFBF);
/// ```
pub fn get() -> Cpu {
    if STATE.load(Ordering::Acquire) == 2 {
        // SAFETY: published (see `Published`).
        return unsafe { *PUBLISHED.0.get() };
    }
    let c = Cpu::read();
    if STATE
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: we moved STATE from 0 to 1: nobody else writes or reads the cell until we
        // publish 2.
        unsafe { *PUBLISHED.0.get() = c };
        STATE.store(2, Ordering::Release);
    }
    // Otherwise another thread (or the code this signal interrupted) is publishing the same
    // values: use our own copy rather than wait for it.
    c
}

/// XCR0 as the hardware reports it, ignoring `OF_CPU_HIDE`: the state components the OS saves
/// and restores, which code this process runs (glibc's, a device's) may use. 0 without
/// OSXSAVE (CPUID.1:ECX bit 27).
pub(crate) fn hardware_xcr0() -> u64 {
    if !bit(core::arch::x86_64::__cpuid_count(1, 0).ecx, 27) {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: OSXSAVE says XGETBV is enabled; XCR0 (ecx = 0) always exists then. It reads
    // edx:eax and changes nothing else.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// MXCSR_MASK of this CPU (Intel SDM Vol. 1 §11.6.6).
///
/// # Examples
///
/// ```
/// let mask = of_core::cpu::mxcsr_mask();
/// assert_eq!(mask & 0xFFBF, 0xFFBF); // flags, masks, rounding control, FZ: always writable
/// assert_eq!(mask >> 18, 0); // bits 18..32 are reserved everywhere
/// ```
pub fn mxcsr_mask() -> u32 {
    get().mxcsr_mask
}

/// Whether the CPU vendor is AMD.
///
/// # Examples
///
/// ```
/// let amd = std::fs::read_to_string("/proc/cpuinfo").unwrap().contains("AuthenticAMD");
/// assert_eq!(of_core::cpu::is_amd(), amd);
/// ```
pub fn is_amd() -> bool {
    get().amd
}
