//! Emulating one decoded instruction against a [`Machine`].
//!
//! [`emulate`] is the whole pipeline after decoding: classify ([`table`]), compute the memory
//! accesses and check they are register accesses ([`operands`]), execute by family (one module
//! each: [`mov`], [`alu`], [`stack`], [`string`], [`wide`]), then write back — registers first,
//! held map writes last, `rip` to the next instruction unless the instruction jumped.

pub mod alu;
pub mod fastop;
pub mod hostexec;
pub mod mov;
pub mod operands;
pub mod runahead;
pub mod stack;
pub mod string;
pub mod table;
pub mod vector;
pub mod wide;

use crate::machine::Machine;
use crate::map;
use iced_x86::{ConstantOffsets, Instruction, OpKind};
use operands::{Access, MapWrites};
use table::Kind;

/// A processor exception the real instruction would have raised (Intel SDM Vol. 3A §6.15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #DE: divide by zero or quotient too large (delivered by Linux as SIGFPE, FPE_INTDIV).
    DivideError,
    /// #GP(0): for example a misaligned `cmpxchg16b` operand (Linux: SIGSEGV, SI_KERNEL).
    GeneralProtection,
    /// #XM: an unmasked SIMD floating-point exception (Linux: SIGFPE, FPE_FLT*); `flags` are
    /// MXCSR's exception flags that are set and unmasked once the instruction raised it (Intel
    /// SDM Vol. 1 §11.5.2; the kernel derives `si_code` from them). MXCSR has been updated.
    SimdFloatingPoint {
        /// MXCSR bits 0..6 (IE DE ZE OE UE PE).
        flags: u32,
    },
    /// #PF on ordinary memory (Linux: SIGSEGV at `addr`).
    PageFault {
        /// The address that could not be accessed.
        addr: u64,
        /// Whether the access was a write.
        write: bool,
    },
}

/// Why a fault is not a register access (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotOurs {
    /// No access of the instruction covers the fault address (or none touches page 0).
    NoMapAccess,
    /// The access touches bytes of page 0 that are not registers.
    OutsideMap {
        /// First byte of the access.
        addr: u64,
        /// Length of the access in bytes.
        size: u64,
    },
    /// The access writes read-only map bytes (fs/gs base).
    ReadOnly {
        /// First byte of the access.
        addr: u64,
        /// Length of the access in bytes.
        size: u64,
    },
}

/// Why an instruction was not emulated. Every variant leaves the [`Machine`] unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulationError {
    /// The instruction is not a register access: the fault belongs to someone else.
    NotOurs(NotOurs),
    /// The instruction accesses the map but is not emulated (the reason is for the diagnostic).
    Unsupported(&'static str),
    /// The instruction raises this exception, as the CPU would.
    Exception(Exception),
}

/// Checks the ownership rules of SPEC §4 for an instruction's accesses: at least one access
/// touches page 0 (and covers `fault_addr`, when given); every page-0 access lies in mapped bytes,
/// and every page-0 write in writable bytes.
///
/// # Errors
/// [`EmulationError::NotOurs`] with the reason.
pub fn check_ownership(accesses: &[Access], fault_addr: Option<u64>) -> Result<(), EmulationError> {
    let mut touches = false;
    let mut covered = fault_addr.is_none();
    for a in accesses {
        if !map::touches_page0(a.addr, a.size) {
            continue;
        }
        touches = true;
        if let Some(f) = fault_addr {
            covered |= a.covers(f);
        }
        if !map::is_mapped(a.addr, a.size) {
            return Err(EmulationError::NotOurs(NotOurs::OutsideMap {
                addr: a.addr,
                size: a.size,
            }));
        }
        if a.write && !map::is_writable(a.addr, a.size) {
            return Err(EmulationError::NotOurs(NotOurs::ReadOnly {
                addr: a.addr,
                size: a.size,
            }));
        }
    }
    if touches && covered {
        Ok(())
    } else {
        Err(EmulationError::NotOurs(NotOurs::NoMapAccess))
    }
}

/// Emulates `instr`, decoded from `raw` at `m.rip()`, against `m`.
///
/// `offsets` are the decoder's constant offsets for `instr` (used to cross-check the operand
/// layout before running a register form). `fault_addr` is the `si_addr` of the fault being
/// handled, or `None` to emulate without a fault (then any page-0 access is accepted).
///
/// On success the instruction has retired: registers, flags, map bytes and ordinary memory are
/// updated and `m.rip()` is the next instruction (or the branch target). A `rep` string
/// instruction may retire only some iterations, leaving `rip` on itself, as the CPU may.
///
/// # Errors
/// See [`EmulationError`]; on error `m` is unchanged (except for completed iterations of a
/// `rep` string instruction, which are architecturally visible on hardware too).
pub fn emulate<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    raw: &[u8],
    offsets: &ConstantOffsets,
    fault_addr: Option<u64>,
) -> Result<(), EmulationError> {
    let kind = table::classify(instr);
    let acc = operands::accesses(m, instr, kind);
    if let Kind::Unsupported(reason) = kind {
        // A map access we do not emulate (x87, fxsave/xsave, ...) is reported as such even when
        // its operand also runs past the mapped bytes (a 512-byte fxsave always does).
        let hits_map = acc.as_slice().iter().any(|a| match fault_addr {
            Some(f) => a.covers(f) && map::is_mapped(f, 1),
            None => map::touches_page0(a.addr, a.size) && map::is_mapped(a.addr, 1),
        });
        // Operands whose addresses `accesses` does not compute (gathers' VSIB, maskmov's
        // masked [rdi] store, the stack of push fs / retf / iretq): a fault inside the map is
        // one of ours that we cannot do.
        let uncomputed = acc.as_slice().is_empty()
            && (instr.stack_pointer_increment() != 0
                || (0..instr.op_count()).any(|i| {
                    matches!(
                        instr.op_kind(i),
                        OpKind::Memory | OpKind::MemorySegRDI | OpKind::MemorySegEDI
                    )
                }))
            && fault_addr.is_none_or(|f| map::is_mapped(f, 1));
        if hits_map || uncomputed {
            return Err(EmulationError::Unsupported(reason));
        }
    }
    check_ownership(acc.as_slice(), fault_addr)?;
    execute(m, instr, raw, offsets, kind)
}

/// Executes `instr` of class `kind` whose accesses have been checked (see [`emulate`], which
/// is this plus classification and the ownership check).
///
/// # Errors
/// As [`emulate`].
pub fn execute<M: Machine + ?Sized>(
    m: &mut M,
    instr: &Instruction,
    raw: &[u8],
    offsets: &ConstantOffsets,
    kind: Kind,
) -> Result<(), EmulationError> {
    let here = m.rip();
    let mut writes = MapWrites::default();
    m.set_rip(instr.next_ip());
    let r = match kind {
        Kind::Move => mov::execute(m, instr, &mut writes),
        Kind::Host { writes: w } => alu::execute(m, instr, raw, offsets, w, 0, &mut writes),
        Kind::BitTestRegister { writes: w } => {
            let disp = operands::bit_string_displacement(m, instr);
            alu::execute(m, instr, raw, offsets, w, disp, &mut writes)
        }
        Kind::Stack => stack::execute(m, instr, &mut writes),
        Kind::String => string::execute(m, instr, here),
        Kind::CompareExchangeWide => wide::execute(m, instr, &mut writes),
        Kind::NoAccess => Err(EmulationError::NotOurs(NotOurs::NoMapAccess)),
        Kind::CacheControl => Ok(()),
        Kind::Vector(mv) => vector::execute(m, instr, mv, &mut writes),
        Kind::VectorHost => vector::execute_host(m, instr, raw, offsets, &mut writes),
        Kind::Unsupported(reason) => Err(EmulationError::Unsupported(reason)),
    };
    match r {
        Ok(()) => {
            writes.apply(m);
            Ok(())
        }
        Err(e) => {
            if kind != Kind::String {
                m.set_rip(here);
            }
            Err(e)
        }
    }
}
