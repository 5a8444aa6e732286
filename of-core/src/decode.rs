//! Decoding the faulting instruction with iced-x86.
//!
//! At most 15 bytes are decoded (the architectural limit, Intel SDM Vol. 2A §2.3.11: a longer
//! instruction raises #GP, so it never reaches us as a page fault). The bytes are fetched by
//! [`crate::signal`] without touching unmapped memory.

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

/// Decodes one 64-bit instruction from `bytes`, located at address `rip`, and returns it with
/// the decoder's constant offsets (displacement and immediate positions).
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
pub fn decode(bytes: &[u8], rip: u64) -> Result<(Instruction, ConstantOffsets), DecodeError> {
    let bytes = &bytes[..bytes.len().min(MAX_INSTRUCTION_LEN)];
    let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
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
