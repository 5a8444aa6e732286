//! Decoding the faulting instruction with iced-x86.
//!
//! At most 15 bytes are decoded (the architectural limit, Intel SDM Vol. 2A §2.3.11: a longer
//! instruction raises #GP, so it never reaches us as a page fault). The bytes are fetched by
//! [`crate::signal`] without touching unmapped memory.
//!
//! Instructions are decoded the way the CPU the program runs on executes them ([`Vendor`]):
//! the vendors disagree on a few 64-bit encodings, the ones that matter here being near
//! branches with a 0x66 prefix (`66 C3`, `66 C2 iw`, `66 E8 cw`, `66 FF /2`, `66 FF /4`,
//! `66 E9 cw`, `66 EB`, `66 7x`, `66 0F 8x`, `66 E0..E3`). Intel ignores the prefix there (the
//! operand size stays 64 bits; `66 E8` still takes a rel32); AMD honours it: the branch has a
//! 16-bit operand size, pops or pushes 2 bytes and sets rip to a 16-bit target, zero-extended.

use iced_x86::{ConstantOffsets, Decoder, DecoderError, DecoderOptions, Instruction};

/// The longest x86 instruction, in bytes.
///
/// # Examples
///
/// Fourteen redundant operand-size prefixes and a `nop` make the longest legal instruction:
///
/// ```
/// use of_core::decode::{MAX_INSTRUCTION_LEN, decode};
///
/// let mut bytes = [0x66u8; MAX_INSTRUCTION_LEN]; // 14 x 0x66 prefix ...
/// bytes[MAX_INSTRUCTION_LEN - 1] = 0x90; // ... then nop (0x90)
/// let (instr, _) = decode(&bytes, 0x1000).unwrap();
/// assert_eq!(instr.len(), 15);
/// assert_eq!(instr.mnemonic(), iced_x86::Mnemonic::Nop);
/// assert_eq!(instr.next_ip(), 0x1000 + 15);
/// ```
pub const MAX_INSTRUCTION_LEN: usize = 15;

/// Why bytes could not be decoded.
///
/// # Examples
///
/// ```
/// use of_core::decode::{DecodeError, decode};
///
/// // 48 83 04 25 08 00 00 00 01 is `add qword ptr [8], 1`; its first two bytes are not enough.
/// assert_eq!(decode(&[0x48, 0x83], 0x1000).unwrap_err(), DecodeError::Truncated);
/// // 0x06 is `push es`, which does not exist in 64-bit mode.
/// assert_eq!(decode(&[0x06, 0x90], 0x1000).unwrap_err(), DecodeError::Invalid);
/// // Fifteen 0x66 prefixes and a nop: 16 bytes, longer than any instruction may be.
/// let mut long = [0x66u8; 16];
/// long[15] = 0x90;
/// assert_eq!(decode(&long, 0x1000).unwrap_err(), DecodeError::Invalid);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// The bytes are not a valid 64-bit instruction (or are longer than 15 bytes).
    Invalid,
}

/// Whose reading of the encodings to follow (see the module docs).
///
/// # Examples
///
/// ```
/// use iced_x86::Code;
/// use of_core::decode::{Vendor, decode_for};
///
/// // 66 e8 34 12 00 00 at 0x40000000: AMD reads call rel16 (4 bytes, target
/// // (0x40000004 + 0x1234) mod 2^16); Intel ignores 0x66 and reads call rel32 (6 bytes).
/// let bytes = [0x66, 0xE8, 0x34, 0x12, 0x00, 0x00];
/// let (amd, _) = decode_for(&bytes, 0x4000_0000, Vendor::Amd).unwrap();
/// assert_eq!((amd.code(), amd.len(), amd.near_branch_target()), (Code::Call_rel16, 4, 0x1238));
/// let (intel, _) = decode_for(&bytes, 0x4000_0000, Vendor::Intel).unwrap();
/// assert_eq!(
///     (intel.code(), intel.len(), intel.near_branch_target()),
///     (Code::Call_rel32_64, 6, 0x4000_123A)
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// Intel (and every CPU that is not AMD): 0x66 is ignored by near branches in 64-bit mode.
    Intel,
    /// AMD: 0x66 gives near branches a 16-bit operand size (AMD APM Vol. 3, CALL (Near), RET
    /// (Near), JMP (Near), Jcc: "the operand size ... 16 bits: ... rIP is truncated").
    Amd,
}

impl Vendor {
    /// The vendor of the CPU the program runs on (CPUID leaf 0, read once:
    /// [`crate::cpu::is_amd`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::decode::Vendor;
    ///
    /// let amd = std::fs::read_to_string("/proc/cpuinfo").unwrap().contains("AuthenticAMD");
    /// assert_eq!(Vendor::host() == Vendor::Amd, amd);
    /// ```
    pub fn host() -> Vendor {
        if crate::cpu::is_amd() {
            Vendor::Amd
        } else {
            Vendor::Intel
        }
    }

    /// The iced-x86 [`DecoderOptions`] for this vendor: `AMD` or `NONE`.
    ///
    /// # Examples
    ///
    /// ```
    /// use iced_x86::DecoderOptions;
    /// use of_core::decode::Vendor;
    ///
    /// assert_eq!(Vendor::Amd.decoder_options(), DecoderOptions::AMD);
    /// assert_eq!(Vendor::Intel.decoder_options(), DecoderOptions::NONE);
    /// ```
    pub fn decoder_options(self) -> u32 {
        match self {
            Vendor::Intel => DecoderOptions::NONE,
            Vendor::Amd => DecoderOptions::AMD,
        }
    }
}

/// Decodes one 64-bit instruction from `bytes`, located at address `rip`, the way the CPU the
/// program runs on reads it ([`Vendor::host`]), and returns it with the decoder's constant
/// offsets (displacement and immediate positions).
///
/// # Errors
/// [`DecodeError`] if the bytes are truncated or invalid.
///
/// # Examples
///
/// ```
/// use iced_x86::{Mnemonic, OpKind, Register};
/// use of_core::decode::decode;
///
/// // add qword ptr [8], 1: REX.W, opcode 83 /0 ib, ModRM 04 + SIB 25 (no base, no index:
/// // absolute disp32), disp32 = 8, imm8 = 1. Trailing bytes (here a nop) are ignored.
/// let bytes = [0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01, 0x90];
/// let (instr, offsets) = decode(&bytes, 0x40_0000).unwrap();
/// assert_eq!(instr.to_string(), "add qword ptr [8],1");
/// assert_eq!(instr.mnemonic(), Mnemonic::Add);
/// assert_eq!(instr.len(), 9);
/// assert_eq!(instr.next_ip(), 0x40_0000 + 9);
/// assert_eq!(instr.op0_kind(), OpKind::Memory);
/// assert_eq!(instr.memory_base(), Register::None);
/// assert_eq!(instr.memory_displacement64(), 8);
/// // The displacement is bytes 4..8 and the immediate byte 8.
/// assert_eq!((offsets.displacement_offset(), offsets.displacement_size()), (4, 4));
/// assert_eq!((offsets.immediate_offset(), offsets.immediate_size()), (8, 1));
/// ```
///
/// `ret` with 0x66 is the 16-bit form on AMD, a plain `ret` elsewhere:
///
/// ```
/// use iced_x86::Code;
/// use of_core::decode::{Vendor, decode};
///
/// let (ret, _) = decode(&[0x66, 0xC3], 0x40_0000).unwrap();
/// let expected = match Vendor::host() {
///     Vendor::Amd => Code::Retnw,
///     Vendor::Intel => Code::Retnq,
/// };
/// assert_eq!(ret.code(), expected);
/// ```
pub fn decode(bytes: &[u8], rip: u64) -> Result<(Instruction, ConstantOffsets), DecodeError> {
    decode_for(bytes, rip, Vendor::host())
}

/// [`decode`] as `vendor`'s CPUs read the bytes (for emulating another machine's code, and for
/// tests of both readings on one host).
///
/// # Errors
/// [`DecodeError`] if the bytes are truncated or invalid.
///
/// # Examples
///
/// `66 ff 14 25 08 00 00 00`: AMD reads `call word ptr [8]` (a 2-byte target and a 2-byte
/// push), Intel `call qword ptr [8]`:
///
/// ```
/// use iced_x86::{Code, MemorySize};
/// use of_core::decode::{Vendor, decode_for};
///
/// let bytes = [0x66, 0xFF, 0x14, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (amd, _) = decode_for(&bytes, 0x40_0000, Vendor::Amd).unwrap();
/// assert_eq!((amd.code(), amd.memory_size(), amd.stack_pointer_increment()),
///            (Code::Call_rm16, MemorySize::WordOffset, -2));
/// let (intel, _) = decode_for(&bytes, 0x40_0000, Vendor::Intel).unwrap();
/// assert_eq!((intel.code(), intel.memory_size(), intel.stack_pointer_increment()),
///            (Code::Call_rm64, MemorySize::QwordOffset, -8));
/// ```
pub fn decode_for(
    bytes: &[u8],
    rip: u64,
    vendor: Vendor,
) -> Result<(Instruction, ConstantOffsets), DecodeError> {
    let bytes = &bytes[..bytes.len().min(MAX_INSTRUCTION_LEN)];
    let mut decoder = Decoder::with_ip(64, bytes, rip, vendor.decoder_options());
    let instr = decoder.decode();
    if instr.is_invalid() {
        return Err(match decoder.last_error() {
            DecoderError::NoMoreBytes => DecodeError::Truncated,
            _ => DecodeError::Invalid,
        });
    }
    let offsets = decoder.get_constant_offsets(&instr);
    Ok((instr, offsets))
}
