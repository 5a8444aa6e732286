//! AVX-512 (EVEX) instructions with a map operand (Intel SDM Vol. 1 ch. 15, Vol. 2A §2.7).
//!
//! Masking decides which bytes an EVEX memory operand touches: an element whose opmask bit is
//! clear is not accessed at all ("memory fault suppression", Vol. 1 §15.6.1), so ownership
//! (SPEC §4) and the map bytes read and written are decided on the selected elements only.
//! [`footprint`] describes how an instruction's mask bits map to its operand's bytes, and
//! [`touched`] turns a mask into the set of bytes; the model is checked against the CPU by
//! `difftest::vector::evex_footprints` on AVX-512 hosts.
//!
//! Execution:
//! - most forms run as the host register form ([`hostexec::evex_register_form`]) with every
//!   zmm and opmask register loaded: the selected operand bytes are loaded into the scratch
//!   register (a broadcast element replicated across it), and a memory destination receives
//!   the selected bytes of the scratch register afterwards;
//! - forms without a register form of the same meaning are data movement in Rust ([`Move`]):
//!   masked scalar moves, non-temporal moves and 128/256-bit tuple broadcasts; unmasked
//!   element moves (`vmovd`, `vpinsrb`, `vmovlps`, …) share the VEX code, which zeroes the
//!   destination above 128 bits up to bit 511 as EVEX does.

use super::super::operands::{self, Access, MapWrites};
use super::super::table::Kind;
use super::super::{EmulationError, Exception, hostexec};
use crate::machine::{Machine, read_zmm, write_zmm};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// How an EVEX instruction's opmask bits map to the bytes of its memory operand.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::vector::evex::{Footprint, footprint};
///
/// let fp = |bytes: &[u8]| footprint(&decode(bytes, 0).unwrap().0);
/// // vmovdqu32 zmm1{k1}, zmmword ptr [0x100] (62 f1 7e 49 6f 0c 25 00 01 00 00): 16 dwords.
/// assert_eq!(
///     fp(&[0x62, 0xF1, 0x7E, 0x49, 0x6F, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00]),
///     Footprint::Elements { granule: 4, count: 16, per: 1 }
/// );
/// // vaddps zmm0{k1}, zmm0, dword bcst [0x100] (62 f1 7c 59 58 04 25 00 01 00 00): one
/// // element for sixteen mask bits.
/// assert_eq!(
///     fp(&[0x62, 0xF1, 0x7C, 0x59, 0x58, 0x04, 0x25, 0x00, 0x01, 0x00, 0x00]),
///     Footprint::Broadcast { elem: 4, tuple: 4, bits: 16 }
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Footprint {
    /// `count` granules of `granule` bytes; granule `j` is touched when any of mask bits
    /// `j*per .. (j+1)*per` is set (`per` > 1 where one memory element feeds several
    /// destination elements, as in `vpmultishiftqb`).
    Elements {
        /// Bytes per granule.
        granule: u8,
        /// Granules in the operand.
        count: u8,
        /// Mask bits per granule.
        per: u8,
    },
    /// A `tuple` of `tuple / elem` elements replicated over `bits` destination elements of
    /// `elem` bytes (embedded broadcast `{1toN}` has `tuple == elem`): element `j` of the tuple
    /// is touched when a destination element `i` with `i % (tuple / elem) == j` is selected.
    Broadcast {
        /// Bytes per element.
        elem: u8,
        /// Bytes in memory.
        tuple: u8,
        /// Destination elements (mask bits).
        bits: u8,
    },
    /// Compress stores and expand loads: the first `popcount(mask)` elements of `elem` bytes,
    /// contiguous in memory.
    Compressed {
        /// Bytes per element.
        elem: u8,
        /// Elements the operand can hold (mask bits).
        count: u8,
    },
    /// All `size` bytes, whatever the mask: instructions without fault suppression
    /// (permutations, shuffles, whole-vector operands; unmasked forms).
    Whole {
        /// Operand size in bytes.
        size: u8,
    },
}

/// Instructions whose memory operand is read whole even when masked: the data for one
/// destination element may come from any source element (Intel SDM Vol. 2, "Exceptions Type
/// E4NF"/"E6NF": no memory fault suppression), or the CPU reads it whole anyway (found by the
/// guard-page probe on AMD Zen 4: `vpmaddwd`, `vpmaddubsw`, `vpmultishiftqb`,
/// `vgf2p8affineqb`, `vpconflictd`). Shifts read their count operand whole; their
/// immediate-count forms shift the memory operand element by element.
fn reads_whole(instr: &Instruction) -> bool {
    use Mnemonic as M;
    let shift_count_in_memory = instr.op_count() == 3 && instr.op2_kind() == OpKind::Memory;
    match instr.mnemonic() {
        M::Vpsllw
        | M::Vpslld
        | M::Vpsllq
        | M::Vpsraw
        | M::Vpsrad
        | M::Vpsraq
        | M::Vpsrlw
        | M::Vpsrld
        | M::Vpsrlq => return shift_count_in_memory,
        _ => {}
    }
    matches!(
        instr.mnemonic(),
        M::Vpermb
            | M::Vpermw
            | M::Vpermd
            | M::Vpermq
            | M::Vpermps
            | M::Vpermpd
            | M::Vpermi2b
            | M::Vpermi2w
            | M::Vpermi2d
            | M::Vpermi2q
            | M::Vpermi2ps
            | M::Vpermi2pd
            | M::Vpermt2b
            | M::Vpermt2w
            | M::Vpermt2d
            | M::Vpermt2q
            | M::Vpermt2ps
            | M::Vpermt2pd
            | M::Vpermilps
            | M::Vpermilpd
            | M::Vpshufb
            | M::Vpshufd
            | M::Vpshufhw
            | M::Vpshuflw
            | M::Vshufps
            | M::Vshufpd
            | M::Vshuff32x4
            | M::Vshuff64x2
            | M::Vshufi32x4
            | M::Vshufi64x2
            | M::Valignd
            | M::Valignq
            | M::Vpalignr
            | M::Vpunpcklbw
            | M::Vpunpckhbw
            | M::Vpunpcklwd
            | M::Vpunpckhwd
            | M::Vpunpckldq
            | M::Vpunpckhdq
            | M::Vpunpcklqdq
            | M::Vpunpckhqdq
            | M::Vunpcklps
            | M::Vunpckhps
            | M::Vunpcklpd
            | M::Vunpckhpd
            | M::Vpacksswb
            | M::Vpackssdw
            | M::Vpackuswb
            | M::Vpackusdw
            | M::Vdbpsadbw
            | M::Vmovddup
            | M::Vmovsldup
            | M::Vmovshdup
            | M::Vinsertf32x4
            | M::Vinsertf64x2
            | M::Vinsertf32x8
            | M::Vinsertf64x4
            | M::Vinserti32x4
            | M::Vinserti64x2
            | M::Vinserti32x8
            | M::Vinserti64x4
            | M::Vcvtne2ps2bf16
            | M::Vpmaddwd
            | M::Vpmaddubsw
            | M::Vpmultishiftqb
            | M::Vgf2p8affineqb
            | M::Vgf2p8affineinvqb
            | M::Vpconflictd
            | M::Vpconflictq
    )
}

/// Stores that the CPU checks whole even when masked (it raises the page fault of an
/// unselected element; found by the guard-page probe on AMD Zen 4), while writing only the
/// selected elements: the 128- and 256-bit extracts.
fn store_checked_whole(mn: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        mn,
        M::Vextractf32x4
            | M::Vextractf64x2
            | M::Vextractf32x8
            | M::Vextractf64x4
            | M::Vextracti32x4
            | M::Vextracti64x2
            | M::Vextracti32x8
            | M::Vextracti64x4
    )
}

/// The [`Footprint`] of an EVEX instruction's memory operand.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::vector::evex::{Footprint, footprint};
///
/// let fp = |bytes: &[u8]| footprint(&decode(bytes, 0).unwrap().0);
/// // vpcompressd zmmword ptr [0x100]{k1}, zmm2 (62 f2 7d 49 8b 14 25 00 01 00 00)
/// assert_eq!(
///     fp(&[0x62, 0xF2, 0x7D, 0x49, 0x8B, 0x14, 0x25, 0x00, 0x01, 0x00, 0x00]),
///     Footprint::Compressed { elem: 4, count: 16 }
/// );
/// // vpermd zmm1{k1}, zmm2, zmmword ptr [0x100] (62 f2 6d 49 36 0c 25 00 01 00 00)
/// assert_eq!(
///     fp(&[0x62, 0xF2, 0x6D, 0x49, 0x36, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00]),
///     Footprint::Whole { size: 64 }
/// );
/// ```
pub fn footprint(instr: &Instruction) -> Footprint {
    use Mnemonic as M;
    let op = instr.code().op_code();
    let ms = instr.memory_size();
    let size = ms.size().min(64) as u8;
    if !op.can_use_op_mask_register() || reads_whole(instr) {
        return Footprint::Whole { size };
    }
    let vl = match instr.op0_kind() {
        OpKind::Register => instr.op0_register().size().min(64) as u8,
        _ => size,
    };
    let elem = ms.element_size().clamp(1, 64) as u8;
    match instr.mnemonic() {
        M::Vpcompressb
        | M::Vpcompressw
        | M::Vpcompressd
        | M::Vpcompressq
        | M::Vcompressps
        | M::Vcompresspd
        | M::Vpexpandb
        | M::Vpexpandw
        | M::Vpexpandd
        | M::Vpexpandq
        | M::Vexpandps
        | M::Vexpandpd => Footprint::Compressed {
            elem,
            count: size / elem,
        },
        M::Vbroadcastss
        | M::Vbroadcastsd
        | M::Vbroadcastf32x2
        | M::Vbroadcastf32x4
        | M::Vbroadcastf64x2
        | M::Vbroadcastf32x8
        | M::Vbroadcastf64x4
        | M::Vbroadcasti32x2
        | M::Vbroadcasti32x4
        | M::Vbroadcasti64x2
        | M::Vbroadcasti32x8
        | M::Vbroadcasti64x4
        | M::Vpbroadcastb
        | M::Vpbroadcastw
        | M::Vpbroadcastd
        | M::Vpbroadcastq => Footprint::Broadcast {
            elem,
            tuple: size,
            bits: vl / elem,
        },
        _ if instr.is_broadcast() => Footprint::Broadcast {
            elem: size,
            tuple: size,
            bits: (op.memory_size().size().min(64) as u8) / size.max(1),
        },
        _ => {
            // With a broadcast form, a mask bit stands for one broadcast-sized element (EVEX.W
            // decides both); otherwise for one memory element.
            let granule = if op.can_broadcast() {
                op.broadcast_memory_size().size().clamp(1, 64) as u8
            } else {
                elem
            };
            Footprint::Elements {
                granule,
                count: size / granule,
                per: 1,
            }
        }
    }
}

/// How many opmask bits `fp` uses.
fn mask_bits(fp: Footprint) -> u32 {
    match fp {
        Footprint::Elements { count, per, .. } => u32::from(count) * u32::from(per),
        Footprint::Broadcast { bits, .. } => u32::from(bits),
        Footprint::Compressed { count, .. } => u32::from(count),
        Footprint::Whole { .. } => 0,
    }
}

/// `n` low bits set (`n` up to 64).
const fn low_bits(n: u32) -> u64 {
    if n >= 64 { u64::MAX } else { (1 << n) - 1 }
}

/// The opmask bits that select elements: all when the instruction has no opmask (`{k0}`),
/// else the value of its opmask register.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::vector::evex::selection;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.opmask[1] = 0b1010;
/// // vmovdqu32 zmm1{k1}, zmmword ptr [0x100]
/// let (i, _) = decode(&[0x62, 0xF1, 0x7E, 0x49, 0x6F, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00], 0).unwrap();
/// assert_eq!(selection(&m, &i), 0b1010);
/// // vmovdqu32 zmm1, zmmword ptr [0x100]: no opmask, all sixteen elements.
/// let (i, _) = decode(&[0x62, 0xF1, 0x7E, 0x48, 0x6F, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00], 0).unwrap();
/// assert_eq!(selection(&m, &i), 0xFFFF);
/// ```
pub fn selection<M: Machine + ?Sized>(m: &M, instr: &Instruction) -> u64 {
    let bits = low_bits(mask_bits(footprint(instr)));
    match instr.op_mask() {
        Register::None | Register::K0 => bits,
        k => m.opmask(k.number() & 7) & bits,
    }
}

/// The bytes of the memory operand that `fp` touches under `mask` (bit `b`: byte `b`).
///
/// # Examples
///
/// ```
/// use of_core::emulate::vector::evex::{Footprint, touched};
///
/// let dwords = Footprint::Elements { granule: 4, count: 4, per: 1 };
/// assert_eq!(touched(dwords, 0b0101), 0x0F0F);
/// let bcst = Footprint::Broadcast { elem: 8, tuple: 8, bits: 8 };
/// assert_eq!((touched(bcst, 0), touched(bcst, 0x80)), (0, 0xFF));
/// let compressed = Footprint::Compressed { elem: 2, count: 32 };
/// assert_eq!(touched(compressed, 0b1001_0001), 0x3F); // three elements, packed
/// assert_eq!(touched(Footprint::Whole { size: 16 }, 0), 0xFFFF);
/// ```
pub fn touched(fp: Footprint, mask: u64) -> u64 {
    let range = |from: u32, len: u32| low_bits(len) << from;
    match fp {
        Footprint::Whole { size } => low_bits(u32::from(size)),
        Footprint::Elements {
            granule,
            count,
            per,
        } => {
            let (g, per) = (u32::from(granule), u32::from(per));
            let mut t = 0;
            for j in 0..u32::from(count) {
                if j * per < 64 && (mask >> (j * per)) & low_bits(per) != 0 {
                    t |= range(j * g, g);
                }
            }
            t
        }
        Footprint::Broadcast { elem, tuple, bits } => {
            let e = u32::from(elem);
            let n = (u32::from(tuple) / e.max(1)).max(1);
            let mut t = 0;
            for i in 0..u32::from(bits).min(64) {
                if mask >> i & 1 == 1 {
                    t |= range((i % n) * e, e);
                }
            }
            t
        }
        Footprint::Compressed { elem, count } => {
            let k = (mask & low_bits(u32::from(count))).count_ones();
            range(0, k * u32::from(elem))
        }
    }
}

/// The memory access an EVEX instruction makes at `ea`, with the bytes its mask selects.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::vector::evex::access;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.opmask[1] = 0b11; // the first two dwords
/// // vmovdqu32 zmm1{k1}, zmmword ptr [0x90] (62 f1 7e 49 6f 0c 25 90 00 00 00): bytes 0x98..
/// // are past the fs/gs bases, but only 0x90..0x98 are touched.
/// let (i, _) = decode(&[0x62, 0xF1, 0x7E, 0x49, 0x6F, 0x0C, 0x25, 0x90, 0x00, 0x00, 0x00], 0).unwrap();
/// let a = access(&m, &i, 0x90);
/// assert_eq!((a.addr, a.size, a.write), (0x90, 64, false));
/// assert_eq!(a.runs().collect::<Vec<_>>(), [(0x90, 8)]);
/// ```
pub fn access<M: Machine + ?Sized>(m: &M, instr: &Instruction, ea: u64) -> Access {
    let fp = footprint(instr);
    let size = operands::memory_size(instr);
    let write = operands::memory_operand(instr) == Some(0);
    if store_checked_whole(instr.mnemonic()) {
        return Access::new(ea, size, write);
    }
    let mask = selection(m, instr);
    Access::masked(ea, size, write, touched(fp, mask))
}

/// EVEX data movement done in Rust (no register form means the same thing).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::table::{Kind, classify};
/// use of_core::emulate::vector::evex::Move;
///
/// // vmovss xmm1{k1}, dword ptr [8] (62 f1 7e 09 10 0c 25 08 00 00 00)
/// let (i, _) = decode(&[0x62, 0xF1, 0x7E, 0x09, 0x10, 0x0C, 0x25, 0x08, 0x00, 0x00, 0x00], 0).unwrap();
/// assert_eq!(classify(&i), Kind::EvexMove(Move::Scalar));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// `vmovss`/`vmovsd`/`vmovsh` with an opmask: element 0 loaded (rest of the register
    /// zeroed up to bit 511) or stored, under mask bit 0.
    Scalar,
    /// `vmovntdq`/`vmovntps`/`vmovntpd` stores and `vmovntdqa` loads: the whole vector,
    /// aligned to its size (#GP otherwise), no opmask.
    NonTemporal,
    /// `vbroadcastf32x4` and the other 128/256-bit tuple broadcasts: the tuple replicated,
    /// then merge- or zero-masked per element.
    TupleBroadcast,
}

/// The table class of an EVEX instruction (see [`crate::emulate::table::classify`]).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::table::Kind;
/// use of_core::emulate::vector::evex::classify;
///
/// let class = |bytes: &[u8]| classify(&decode(bytes, 0).unwrap().0);
/// // vpaddd zmm1, zmm2, zmmword ptr [0x100] (62 f1 6d 48 fe 0c 25 00 01 00 00)
/// assert_eq!(class(&[0x62, 0xF1, 0x6D, 0x48, 0xFE, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00]), Kind::EvexHost);
/// // vpgatherdd zmm1{k1}, [rax+zmm2*4] (62 f2 7d 49 90 0c 90): VSIB is not emulated.
/// assert!(matches!(class(&[0x62, 0xF2, 0x7D, 0x49, 0x90, 0x0C, 0x90]), Kind::Unsupported(_)));
/// ```
pub fn classify(instr: &Instruction) -> Kind {
    use Mnemonic as M;
    if instr.vsib().is_some() {
        return Kind::Unsupported("gathers and scatters (VSIB addressing) are not emulated");
    }
    if operands::memory_operand(instr).is_none() {
        return Kind::Unsupported(super::super::table::unsupported_reason(instr));
    }
    let registers_ok = (0..instr.op_count()).all(|i| {
        instr.op_kind(i) != OpKind::Register || {
            let r = instr.op_register(i);
            r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_k() || r.is_gpr()
        }
    });
    if !registers_ok {
        return Kind::Unsupported("this vector instruction is not emulated");
    }
    match instr.mnemonic() {
        M::Vmovss | M::Vmovsd | M::Vmovsh => Kind::EvexMove(Move::Scalar),
        M::Vmovntdq | M::Vmovntps | M::Vmovntpd | M::Vmovntdqa => Kind::EvexMove(Move::NonTemporal),
        M::Vbroadcastf32x4
        | M::Vbroadcastf64x2
        | M::Vbroadcastf32x8
        | M::Vbroadcastf64x4
        | M::Vbroadcasti32x4
        | M::Vbroadcasti64x2
        | M::Vbroadcasti32x8
        | M::Vbroadcasti64x4 => Kind::EvexMove(Move::TupleBroadcast),
        M::Vmovd
        | M::Vmovq
        | M::Vmovw
        | M::Vmovlps
        | M::Vmovhps
        | M::Vmovlpd
        | M::Vmovhpd
        | M::Vpinsrb
        | M::Vpinsrw
        | M::Vpinsrd
        | M::Vpinsrq
        | M::Vpextrb
        | M::Vpextrw
        | M::Vpextrd
        | M::Vpextrq
        | M::Vextractps
        | M::Vinsertps => match super::classify(instr) {
            Some(mv) => Kind::Vector(mv),
            None => Kind::EvexHost,
        },
        _ => Kind::EvexHost,
    }
}

/// The vector register operand (number 0..32) and its width in bytes.
fn vector_operand(instr: &Instruction) -> Option<(usize, usize)> {
    (0..instr.op_count())
        .filter(|&i| instr.op_kind(i) == OpKind::Register)
        .map(|i| instr.op_register(i))
        .find(|r| r.is_xmm() || r.is_ymm() || r.is_zmm())
        .map(|r| (r.number() & 31, r.size()))
}

/// Applies merge- or zero-masking to `result` over `old`, element by element (`elem` bytes,
/// `mask` bit `i` for element `i`), within the vector length `vl`; bytes from `vl` to 64 are
/// zeroed (an EVEX write zeroes its destination above the vector length, Vol. 1 §15.5).
fn masked_merge(
    old: &[u8; 64],
    result: &[u8; 64],
    elem: usize,
    mask: u64,
    zeroing: bool,
    vl: usize,
) -> [u8; 64] {
    let mut out = [0u8; 64];
    for i in 0..vl / elem {
        let r = i * elem..(i + 1) * elem;
        if mask >> i & 1 == 1 {
            out[r.clone()].copy_from_slice(&result[r]);
        } else if !zeroing {
            out[r.clone()].copy_from_slice(&old[r]);
        }
    }
    out
}

/// Executes an EVEX data-movement instruction of class `mv` in Rust.
///
/// # Errors
/// #GP for a misaligned non-temporal move; page faults on ordinary memory;
/// [`EmulationError::Unsupported`] for operand shapes not handled.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::MapWrites;
/// use of_core::emulate::vector::evex::{self, Move};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[1] = 0x4040_0000; // rcx: the float 3.0 in its low dword
/// m.xmm[1] = u128::MAX;
/// m.opmask[1] = 0; // element 0 not selected ...
/// // vmovss xmm1{k1}{z}, dword ptr [8] (62 f1 7e 89 10 0c 25 08 00 00 00)
/// let bytes = [0x62, 0xF1, 0x7E, 0x89, 0x10, 0x0C, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (i, _) = decode(&bytes, 0).unwrap();
/// let mut w = MapWrites::default();
/// evex::execute(&mut m, &i, Move::Scalar, &mut w).unwrap();
/// assert_eq!(m.xmm[1], 0); // ... so zeroed, and the rest of the register too
/// m.opmask[1] = 1;
/// evex::execute(&mut m, &i, Move::Scalar, &mut w).unwrap();
/// assert_eq!(m.xmm[1], 0x4040_0000);
/// ```
pub fn execute<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    mv: Move,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let bad = EmulationError::Unsupported("vector operand form is not emulated");
    let mem = operands::memory_operand(instr).ok_or(bad)?;
    let ea = operands::effective_address(m, instr, mem).ok_or(bad)?;
    let size = operands::memory_size(instr) as usize;
    let (n, vl) = vector_operand(instr).ok_or(bad)?;
    if size == 0 || size > 64 {
        return Err(bad);
    }
    let store = mem == 0;
    let mask = selection(m, instr);
    let bytes = touched(footprint(instr), mask);
    match mv {
        Move::NonTemporal => {
            if ea % size as u64 != 0 {
                return Err(EmulationError::Exception(Exception::GeneralProtection));
            }
            if store {
                let z = read_zmm(m, n);
                operands::store(m, w, ea, &z[..size])
            } else {
                let mut z = [0u8; 64];
                operands::load(m, ea, &mut z[..size])?;
                write_zmm(m, n, &z);
                Ok(())
            }
        }
        Move::Scalar => {
            if store {
                let z = read_zmm(m, n);
                operands::store_selected(m, w, ea, &z[..size], bytes)
            } else {
                let mut v = [0u8; 64];
                operands::load_selected(m, ea, &mut v[..size], bytes)?;
                let old = read_zmm(m, n);
                let z = masked_merge(&old, &v, size, mask & 1, instr.zeroing_masking(), size);
                write_zmm(m, n, &z);
                Ok(())
            }
        }
        Move::TupleBroadcast => {
            let elem = instr.memory_size().element_size().max(1);
            let mut tuple = [0u8; 64];
            operands::load_selected(m, ea, &mut tuple[..size], bytes)?;
            let mut full = [0u8; 64];
            for (i, b) in full.iter_mut().enumerate().take(vl) {
                *b = tuple[i % size];
            }
            let old = read_zmm(m, n);
            let z = masked_merge(&old, &full, elem, mask, instr.zeroing_masking(), vl);
            write_zmm(m, n, &z);
            Ok(())
        }
    }
}

/// Whether the instruction requires its operand aligned to its full size (Intel SDM Vol. 2A
/// §2.8, exceptions class E1: `vmovdqa32`/`vmovdqa64`, `vmovaps`/`vmovapd`; a broadcast has
/// no alignment requirement, and these forms have none).
fn aligned(instr: &Instruction) -> bool {
    matches!(
        instr.mnemonic(),
        Mnemonic::Vmovdqa32 | Mnemonic::Vmovdqa64 | Mnemonic::Vmovaps | Mnemonic::Vmovapd
    )
}

/// Executes an EVEX instruction with a map operand through its register form on the host:
/// the selected operand bytes are loaded into the scratch register (a broadcast element
/// replicated across it), the form runs with every zmm and opmask register loaded, and a memory
/// destination receives the selected bytes of the scratch register.
///
/// # Errors
/// #GP for a misaligned aligned move; #XM for an unmasked SIMD floating-point exception;
/// [`EmulationError::Unsupported`] when the host cannot run the form.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::MapWrites;
/// use of_core::emulate::vector::evex;
/// use of_core::RegisterFile;
///
/// // vpaddd zmm1{k1}, zmm1, dword bcst [0x100] (62 f1 75 59 fe 0c 25 00 01 00 00): xmm0's low
/// // dword added to the dwords of zmm1 that k1 selects.
/// let bytes = [0x62, 0xF1, 0x75, 0x59, 0xFE, 0x0C, 0x25, 0x00, 0x01, 0x00, 0x00];
/// let (i, offsets) = decode(&bytes, 0).unwrap();
/// if !of_core::cpu::get().supports(&i) {
///     return;
/// }
/// let mut m = RegisterFile::default();
/// m.xmm[0] = 5;
/// m.xmm[1] = (2 << 32) | 1; // dwords 1, 2, 0, 0 ...
/// m.opmask[1] = 0b10; // ... of which only dword 1 is selected
/// let mut w = MapWrites::default();
/// evex::execute_host(&mut m, &i, &bytes, &offsets, &mut w).unwrap();
/// assert_eq!(m.xmm[1], (7 << 32) | 1);
/// ```
pub fn execute_host<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    raw: &[u8],
    offsets: &iced_x86::ConstantOffsets,
    w: &mut MapWrites,
) -> Result<(), EmulationError> {
    let bad = EmulationError::Unsupported("vector operand form is not emulated");
    let mem = operands::memory_operand(instr).ok_or(bad)?;
    let ea = operands::effective_address(m, instr, mem).ok_or(bad)?;
    let size = operands::memory_size(instr) as usize;
    if size == 0 || size > 64 {
        return Err(bad);
    }
    let fp = footprint(instr);
    let mask = selection(m, instr);
    // AMD processors (Zen 4, checked by the vector sweep) skip the alignment check when the
    // opmask selects no element; Intel's SDM lists it unconditionally (Vol. 2A §2.8, class E1).
    if aligned(instr) && ea % size as u64 != 0 && (mask != 0 || !crate::cpu::is_amd()) {
        return Err(EmulationError::Exception(Exception::GeneralProtection));
    }
    let bytes = touched(fp, mask);
    let form = hostexec::evex_register_form(instr, raw, offsets)?;
    let mut operand = [0u8; 64];
    if mem != 0 {
        operands::load_selected(m, ea, &mut operand[..size], bytes)?;
        if instr.is_broadcast() {
            for i in size..64 {
                operand[i] = operand[i % size];
            }
        }
    }
    let guest_mxcsr = m.mxcsr();
    let outcome = hostexec::execute_vector(m, &form, &mut operand)?;
    super::finish_host(m, instr, guest_mxcsr, outcome, &operand[..size], mask)?;
    if mem == 0 {
        operands::store_selected(m, w, ea, &operand[..size], bytes)?;
    }
    Ok(())
}
