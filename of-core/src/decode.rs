//! Decoding the faulting instruction with iced-x86.
//!
//! At most 15 bytes are decoded (the architectural limit, Intel SDM Vol. 2A §2.3.11: a longer
//! instruction raises #GP, so it never reaches us as a page fault). The bytes are fetched by
//! [`crate::signal`] without touching unmapped memory.

use iced_x86::{ConstantOffsets, Decoder, DecoderError, DecoderOptions, Instruction};

/// The longest x86 instruction, in bytes.
pub const MAX_INSTRUCTION_LEN: usize = 15;

/// Why bytes could not be decoded.
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
