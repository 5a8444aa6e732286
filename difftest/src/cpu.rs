//! Which instruction-set extensions this CPU has, read with CPUID (Intel SDM Vol. 2A, CPUID),
//! so that forms the host cannot execute are skipped (with a note) instead of dying by SIGILL.

use core::arch::x86_64::{__cpuid, __cpuid_count};
use iced_x86::CpuidFeature;

/// The extensions relevant to integer instructions with memory operands.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// CPUID.1:ECX.MOVBE[bit 22]
    pub movbe: bool,
    /// CPUID.1:ECX.POPCNT[bit 23]
    pub popcnt: bool,
    /// CPUID.1:ECX.SSE4_2[bit 20] (crc32)
    pub sse4_2: bool,
    /// CPUID.1:ECX.CMPXCHG16B[bit 13]
    pub cmpxchg16b: bool,
    /// CPUID.80000001H:ECX.LZCNT[bit 5] (ABM)
    pub lzcnt: bool,
    /// CPUID.(EAX=7,ECX=0):EBX.BMI1[bit 3]
    pub bmi1: bool,
    /// CPUID.(EAX=7,ECX=0):EBX.BMI2[bit 8]
    pub bmi2: bool,
    /// CPUID.(EAX=7,ECX=0):EBX.ADX[bit 19]
    pub adx: bool,
    /// CPUID.(EAX=7,ECX=0):EBX.CLFLUSHOPT[bit 23]
    pub clflushopt: bool,
    /// CPUID.(EAX=7,ECX=0):EBX.CLWB[bit 24]
    pub clwb: bool,
    /// CPUID.(EAX=7,ECX=0):ECX.CLDEMOTE[bit 25]
    pub cldemote: bool,
    /// CPUID.(EAX=7,ECX=0):ECX.MOVDIRI[bit 27]
    pub movdiri: bool,
    /// CPUID.(EAX=7,ECX=0):ECX.MOVDIR64B[bit 28]
    pub movdir64b: bool,
    /// CPUID.80000001H:ECX.PREFETCHW[bit 8] (3DNowPrefetch)
    pub prefetchw: bool,
}

impl Features {
    /// Reads the features of the CPU this runs on.
    pub fn host() -> Features {
        // CPUID is available on every x86-64 CPU; leaves above the maximum are not asked.
        let (l1, l7, e1) = {
            let max = __cpuid(0).eax;
            let max_ext = __cpuid(0x8000_0000).eax;
            let l1 = __cpuid(1);
            let l7 = if max >= 7 {
                Some(__cpuid_count(7, 0))
            } else {
                None
            };
            let e1 = if max_ext >= 0x8000_0001 {
                Some(__cpuid(0x8000_0001))
            } else {
                None
            };
            (l1, l7, e1)
        };
        let bit = |v: u32, b: u32| v & (1 << b) != 0;
        let (b7, c7) = l7.map(|r| (r.ebx, r.ecx)).unwrap_or((0, 0));
        let ce = e1.map(|r| r.ecx).unwrap_or(0);
        Features {
            movbe: bit(l1.ecx, 22),
            popcnt: bit(l1.ecx, 23),
            sse4_2: bit(l1.ecx, 20),
            cmpxchg16b: bit(l1.ecx, 13),
            lzcnt: bit(ce, 5),
            bmi1: bit(b7, 3),
            bmi2: bit(b7, 8),
            adx: bit(b7, 19),
            clflushopt: bit(b7, 23),
            clwb: bit(b7, 24),
            cldemote: bit(c7, 25),
            movdiri: bit(c7, 27),
            movdir64b: bit(c7, 28),
            prefetchw: bit(ce, 8),
        }
    }

    /// Whether the host has `f`. Features outside the list above count as absent, so an
    /// instruction needing one is never executed.
    pub fn has(&self, f: CpuidFeature) -> bool {
        use CpuidFeature as F;
        match f {
            F::INTEL8086
            | F::INTEL8086_ONLY
            | F::INTEL186
            | F::INTEL286
            | F::INTEL386
            | F::INTEL486
            | F::CX8
            | F::X64
            | F::CMOV
            | F::CLFSH
            | F::MULTIBYTENOP => true,
            F::CMPXCHG16B => self.cmpxchg16b,
            F::MOVBE => self.movbe,
            F::POPCNT => self.popcnt,
            F::SSE4_2 => self.sse4_2,
            F::LZCNT => self.lzcnt,
            F::BMI1 => self.bmi1,
            F::BMI2 => self.bmi2,
            F::ADX => self.adx,
            F::CLFLUSHOPT => self.clflushopt,
            F::CLWB => self.clwb,
            F::CLDEMOTE => self.cldemote,
            F::MOVDIRI => self.movdiri,
            F::MOVDIR64B => self.movdir64b,
            F::PREFETCHW => self.prefetchw,
            // Vector and x87 extensions (for probing the emulator on other categories); std's
            // detection reads CPUID (and XCR0 for the AVX state) the same way.
            F::FPU | F::FPU287 | F::FPU387 => true,
            F::MMX => std::arch::is_x86_feature_detected!("mmx"),
            F::FXSR => std::arch::is_x86_feature_detected!("fxsr"),
            F::SSE => std::arch::is_x86_feature_detected!("sse"),
            F::SSE2 => std::arch::is_x86_feature_detected!("sse2"),
            F::SSE3 => std::arch::is_x86_feature_detected!("sse3"),
            F::SSSE3 => std::arch::is_x86_feature_detected!("ssse3"),
            F::SSE4_1 => std::arch::is_x86_feature_detected!("sse4.1"),
            F::SSE4A => std::arch::is_x86_feature_detected!("sse4a"),
            F::AVX => std::arch::is_x86_feature_detected!("avx"),
            F::AVX2 => std::arch::is_x86_feature_detected!("avx2"),
            F::FMA => std::arch::is_x86_feature_detected!("fma"),
            F::F16C => std::arch::is_x86_feature_detected!("f16c"),
            F::AES => std::arch::is_x86_feature_detected!("aes"),
            F::PCLMULQDQ => std::arch::is_x86_feature_detected!("pclmulqdq"),
            F::SHA => std::arch::is_x86_feature_detected!("sha"),
            F::GFNI => std::arch::is_x86_feature_detected!("gfni"),
            F::VAES => std::arch::is_x86_feature_detected!("vaes"),
            F::VPCLMULQDQ => std::arch::is_x86_feature_detected!("vpclmulqdq"),
            F::XSAVE => std::arch::is_x86_feature_detected!("xsave"),
            F::XSAVEC => std::arch::is_x86_feature_detected!("xsavec"),
            F::XSAVEOPT => std::arch::is_x86_feature_detected!("xsaveopt"),
            F::XSAVES => std::arch::is_x86_feature_detected!("xsaves"),
            // AVX-512 and the rest: what `of` itself detects (CPUID and the OS's XCR0).
            _ => of_core::cpu::get().has(f),
        }
    }
}
