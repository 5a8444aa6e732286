//! The register form of a general-purpose instruction: its ModRM memory operand rewritten to a
//! scratch register (KVM's "fastop", generalised).

use super::cpu_supports;
use super::layout::layout;
use crate::emulate::EmulationError;
use crate::machine::gpr_index;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// Encoding number (0..16) of the 64-bit register behind a general-purpose register view,
/// ah/ch/dh/bh included.
pub(super) fn full_gpr(reg: Register) -> Option<usize> {
    match reg {
        Register::AH | Register::CH | Register::DH | Register::BH => {
            Some((reg as u32 - Register::AH as u32) as usize)
        }
        _ => gpr_index(reg).map(|(n, _)| n),
    }
}

/// Registers an instruction reads or writes without naming them in its operands (Intel SDM
/// Vol. 2, each instruction's Operation section), as a bit set by encoding number.
fn implicit_registers(instr: &Instruction) -> u16 {
    const RAX: u16 = 1 << 0;
    const RDX: u16 = 1 << 2;
    match instr.mnemonic() {
        Mnemonic::Mul | Mnemonic::Div | Mnemonic::Idiv => RAX | RDX,
        Mnemonic::Imul if instr.op_count() == 1 => RAX | RDX,
        Mnemonic::Cmpxchg => RAX,
        Mnemonic::Mulx => RDX,
        _ => 0,
    }
}

/// The rewritten register form, ready to copy into a code slot.
///
/// # Examples
///
/// ```
/// use iced_x86::{Mnemonic, Register};
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::register_form;
///
/// // shl qword ptr [8], 3 (48 c1 24 25 08 00 00 00 03)
/// let bytes = [0x48, 0xC1, 0x24, 0x25, 0x08, 0x00, 0x00, 0x00, 0x03];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let form = register_form(&instr, &bytes, &offsets).unwrap();
/// // The form is `shl rN, 3; ret` with rN the scratch register.
/// let (shl, _) = decode(form.bytes(), 0).unwrap();
/// assert_eq!(shl.mnemonic(), Mnemonic::Shl);
/// assert_eq!(shl.op0_register(), Register::RAX + form.scratch as u32);
/// assert_eq!(shl.immediate8(), 3);
/// assert_eq!(form.bytes()[shl.len()..], [0xC3]); // ret
/// assert_eq!(form.rsp_alias, None);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RegisterForm {
    pub(super) bytes: [u8; 16],
    pub(super) len: usize,
    /// The register (encoding number) that stands for the memory operand.
    pub scratch: usize,
    /// The register that stands for an explicit rsp operand, if any.
    pub rsp_alias: Option<usize>,
}

impl RegisterForm {
    /// The encoded bytes, `ret` included.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::emulate::hostexec::verbatim;
    ///
    /// // neg rax (48 f7 d8) as its own register form: the bytes and a `ret`.
    /// let form = verbatim(&[0x48, 0xF7, 0xD8]).unwrap();
    /// assert_eq!(form.bytes(), &[0x48, 0xF7, 0xD8, 0xC3]);
    /// ```
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Rewrites `raw` (the bytes `instr` was decoded from) into its register form.
///
/// # Errors
/// [`EmulationError::Unsupported`] if the encoding cannot be rewritten (EVEX/XOP, no free
/// register, or iced-x86's view of the operand layout disagrees with ours).
///
/// # Examples
///
/// An explicit rsp operand is renamed, because the host's rsp is never replaced:
///
/// ```
/// use iced_x86::{Mnemonic, Register};
/// use of_core::decode::decode;
/// use of_core::emulate::hostexec::register_form;
///
/// // add rsp, qword ptr [8] (48 03 24 25 08 00 00 00)
/// let bytes = [0x48, 0x03, 0x24, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, 0).unwrap();
/// let form = register_form(&instr, &bytes, &offsets).unwrap();
/// let alias = form.rsp_alias.unwrap();
/// assert!(alias != 4 && alias != form.scratch);
/// let (add, _) = decode(form.bytes(), 0).unwrap();
/// assert_eq!(add.mnemonic(), Mnemonic::Add);
/// assert_eq!(add.op0_register(), Register::RAX + alias as u32);
/// assert_eq!(add.op1_register(), Register::RAX + form.scratch as u32);
/// ```
pub fn register_form(
    instr: &Instruction,
    raw: &[u8],
    offsets: &iced_x86::ConstantOffsets,
) -> Result<RegisterForm, EmulationError> {
    let unsupported = EmulationError::Unsupported("encoding cannot be executed in register form");
    if !cpu_supports(instr) {
        return Err(EmulationError::Unsupported(
            "the host CPU does not implement this instruction",
        ));
    }
    let raw = raw.get(..instr.len()).ok_or(unsupported)?;
    let lay = layout(raw).ok_or(unsupported)?;
    // Cross-check with the decoder so we never execute a misparsed instruction.
    if offsets.has_displacement()
        && (offsets.displacement_offset() + offsets.displacement_size() != lay.operand_end)
    {
        return Err(unsupported);
    }
    if offsets.has_immediate() && offsets.immediate_offset() != lay.operand_end {
        return Err(unsupported);
    }

    let mut used = implicit_registers(instr) | (1 << 4) | (1 << 5);
    let mut names_rsp = false;
    for i in 0..instr.op_count() {
        if instr.op_kind(i) == OpKind::Register {
            let r = instr.op_register(i);
            if let Some(n) = full_gpr(r) {
                used |= 1 << n;
                if n == 4 {
                    names_rsp = true;
                }
            } else if !r.is_gpr() && r != Register::None {
                // Vector, segment or control register operands are not handled here.
                return Err(unsupported);
            }
        }
    }

    let extended = lay.rex.is_some() || matches!(lay.vex, Some((_, 3)));
    let candidates: &[usize] = if extended {
        &[11, 10, 9, 8, 12, 13, 14, 15, 3, 1, 2, 0, 6, 7]
    } else {
        &[3, 1, 2, 0]
    };
    let pick = |used: &mut u16| -> Option<usize> {
        let n = *candidates.iter().find(|&&n| *used & (1 << n) == 0)?;
        *used |= 1 << n;
        Some(n)
    };
    let scratch = pick(&mut used).ok_or(unsupported)?;

    // Current values of the extension bits, and the reg / vvvv fields.
    let modrm = raw[lay.modrm];
    let (mut r_ext, w_bits) = match (lay.rex, lay.vex) {
        (Some(p), _) => ((raw[p] >> 2) & 1, raw[p] & 0x48),
        (None, Some((p, 2))) => (((!raw[p + 1]) >> 7) & 1, 0),
        (None, Some((p, _))) => (((!raw[p + 1]) >> 7) & 1, 0),
        (None, None) => (0, 0),
    };
    let mut reg_field = ((modrm >> 3) & 7) | (r_ext << 3);
    let mut vvvv = match lay.vex {
        Some((p, 2)) => Some((!raw[p + 1] >> 3) & 15),
        Some((p, _)) => Some((!raw[p + 2] >> 3) & 15),
        None => None,
    };
    let mut rsp_alias = None;
    if names_rsp {
        let alias = pick(&mut used).ok_or(unsupported)?;
        // rsp may be named twice (`mulx esp, esp, [m]`: ModRM.reg and VEX.vvvv): rename both.
        let mut renamed = false;
        if reg_field == 4 {
            if alias >= 8 && !extended {
                return Err(unsupported);
            }
            reg_field = alias as u8;
            r_ext = (alias >> 3) as u8;
            renamed = true;
        }
        if vvvv == Some(4) {
            vvvv = Some(alias as u8);
            renamed = true;
        }
        if !renamed {
            return Err(unsupported);
        }
        rsp_alias = Some(alias);
    }
    let b_ext = (scratch >> 3) as u8;

    let mut out = [0u8; 16];
    let mut n = 0;
    for (j, &b) in raw[..lay.prefix_end].iter().enumerate() {
        let keep = match b {
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x67 | 0xF0 => false,
            0x40..=0x4F => Some(j) == lay.rex,
            _ => true,
        };
        if !keep {
            continue;
        }
        out[n] = if Some(j) == lay.rex {
            0x40 | w_bits | (r_ext << 2) | b_ext
        } else {
            b
        };
        n += 1;
    }
    let mut j = lay.prefix_end;
    if let Some((p, len)) = lay.vex {
        let v = vvvv.unwrap_or(0);
        if len == 2 {
            if b_ext != 0 {
                return Err(unsupported);
            }
            out[n] = 0xC5;
            out[n + 1] = ((!r_ext & 1) << 7) | ((!v & 15) << 3) | (raw[p + 1] & 7);
            n += 2;
        } else {
            out[n] = 0xC4;
            out[n + 1] = ((!r_ext & 1) << 7) | (1 << 6) | ((!b_ext & 1) << 5) | (raw[p + 1] & 0x1F);
            out[n + 2] = (raw[p + 2] & 0x87) | ((!v & 15) << 3);
            n += 3;
        }
        j = p + len;
    }
    // Opcode bytes up to ModRM.
    while j < lay.modrm {
        out[n] = raw[j];
        n += 1;
        j += 1;
    }
    out[n] = 0xC0 | ((reg_field & 7) << 3) | (scratch as u8 & 7);
    n += 1;
    for &b in &raw[lay.operand_end..] {
        out[n] = b;
        n += 1;
    }
    out[n] = 0xC3; // ret
    n += 1;
    Ok(RegisterForm {
        bytes: out,
        len: n,
        scratch,
        rsp_alias,
    })
}
