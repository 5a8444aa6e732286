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
///
/// # Examples
///
/// Exceptions come back as values; the machine is left as the faulting instruction found it:
///
/// ```
/// use of_core::decode::decode;
/// use of_core::{EmulationError, Exception, RegisterFile, emulate};
///
/// let run = |m: &mut RegisterFile, bytes: &[u8], fault: u64| {
///     let (instr, offsets) = decode(bytes, m.rip).unwrap();
///     emulate(m, &instr, bytes, &offsets, Some(fault))
/// };
/// let mut m = RegisterFile { rip: 0x40_0000, ..RegisterFile::default() };
/// m.gpr[0] = 100; // rax
///
/// // div qword ptr [8] (48 f7 34 25 08 00 00 00) divides rdx:rax by rcx, which is 0: #DE.
/// let div = [0x48, 0xF7, 0x34, 0x25, 0x08, 0x00, 0x00, 0x00];
/// let before = m.clone();
/// assert_eq!(run(&mut m, &div, 8), Err(EmulationError::Exception(Exception::DivideError)));
/// assert_eq!(m, before);
///
/// // With rcx = 7: 100 = 14 * 7 + 2.
/// m.gpr[1] = 7;
/// run(&mut m, &div, 8).unwrap();
/// assert_eq!((m.gpr[0], m.gpr[2]), (14, 2));
///
/// // cmpxchg16b xmmword ptr [8] (48 0f c7 0c 25 08 00 00 00): the operand must be 16-byte
/// // aligned, 8 is not: #GP(0).
/// let cx16 = [0x48, 0x0F, 0xC7, 0x0C, 0x25, 0x08, 0x00, 0x00, 0x00];
/// assert_eq!(
///     run(&mut m, &cx16, 8),
///     Err(EmulationError::Exception(Exception::GeneralProtection))
/// );
///
/// // divss xmm0, dword ptr [0x110] (f3 0f 5e 04 25 10 01 00 00): 1.0 / xmm1 with xmm1 = 0.0
/// // and the zero-divide exception unmasked (MXCSR.ZM, bit 9, clear): #XM with ZE (bit 2).
/// if of_core::emulate::hostexec::vector_supported() {
///     m.xmm[0] = u128::from(1.0f32.to_bits());
///     m.xmm[1] = 0;
///     m.mxcsr = 0x1F80 & !(1 << 9);
///     let divss = [0xF3, 0x0F, 0x5E, 0x04, 0x25, 0x10, 0x01, 0x00, 0x00];
///     assert_eq!(
///         run(&mut m, &divss, 0x110),
///         Err(EmulationError::Exception(Exception::SimdFloatingPoint { flags: 1 << 2 }))
///     );
///     assert_eq!(m.xmm[0], u128::from(1.0f32.to_bits())); // destination not written
/// }
/// ```
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
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::NotOurs;
/// use of_core::{EmulationError, RegisterFile, emulate};
///
/// let run = |bytes: &[u8], fault: u64| {
///     let mut m = RegisterFile { rip: 0x40_0000, ..RegisterFile::default() };
///     let (instr, offsets) = decode(bytes, m.rip).unwrap();
///     emulate(&mut m, &instr, bytes, &offsets, Some(fault))
/// };
/// // mov qword ptr [0xa0], rax (48 89 04 25 a0 00 00 00): 0xa0..0xa8 is not a register.
/// let r = run(&[0x48, 0x89, 0x04, 0x25, 0xA0, 0x00, 0x00, 0x00], 0xA0);
/// assert_eq!(r, Err(EmulationError::NotOurs(NotOurs::OutsideMap { addr: 0xA0, size: 8 })));
/// // mov qword ptr [0x90], rax (48 89 04 25 90 00 00 00): the fs base is read only.
/// let r = run(&[0x48, 0x89, 0x04, 0x25, 0x90, 0x00, 0x00, 0x00], 0x90);
/// assert_eq!(r, Err(EmulationError::NotOurs(NotOurs::ReadOnly { addr: 0x90, size: 8 })));
/// // mov qword ptr [0x10], rax covers 0x10..0x18, not a fault at 0x40.
/// let r = run(&[0x48, 0x89, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00], 0x40);
/// assert_eq!(r, Err(EmulationError::NotOurs(NotOurs::NoMapAccess)));
/// ```
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
///
/// # Examples
///
/// What a caller (the signal handler, a VMM) does with each outcome:
///
/// ```
/// use of_core::decode::decode;
/// use of_core::{EmulationError, RegisterFile, emulate};
///
/// fn outcome(bytes: &[u8], fault: u64) -> &'static str {
///     let mut m = RegisterFile { rip: 0x40_0000, ..RegisterFile::default() };
///     let (instr, offsets) = decode(bytes, m.rip).unwrap();
///     match emulate(&mut m, &instr, bytes, &offsets, Some(fault)) {
///         Ok(()) => "emulated",
///         Err(EmulationError::NotOurs(_)) => "pass the fault on",
///         Err(EmulationError::Unsupported(reason)) => reason,
///         Err(EmulationError::Exception(_)) => "raise the exception",
///     }
/// }
/// // inc qword ptr [0] (48 ff 04 25 00 00 00 00)
/// assert_eq!(outcome(&[0x48, 0xFF, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00], 0), "emulated");
/// // fld qword ptr [8] (dd 04 25 08 00 00 00): x87 operands are not emulated.
/// assert_eq!(
///     outcome(&[0xDD, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00], 8),
///     "x87 memory operands are not mapped"
/// );
/// // inc qword ptr [0x800] (48 ff 04 25 00 08 00 00): not a register.
/// assert_eq!(outcome(&[0x48, 0xFF, 0x04, 0x25, 0x00, 0x08, 0x00, 0x00], 0x800), "pass the fault on");
/// // idiv byte ptr [8] (f6 3c 25 08 00 00 00) with cl = 0.
/// assert_eq!(outcome(&[0xF6, 0x3C, 0x25, 0x08, 0x00, 0x00, 0x00], 8), "raise the exception");
/// ```
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
///
/// # Examples
///
/// ```
/// use of_core::emulate::operands::Access;
/// use of_core::emulate::{EmulationError, NotOurs, check_ownership};
///
/// let read = |addr, size| Access::new(addr, size, false);
/// let write = |addr, size| Access::new(addr, size, true);
///
/// // An 8-byte read of rcx (0x8..0x10) that covers the fault at 0xc.
/// assert_eq!(check_ownership(&[read(8, 8)], Some(0xC)), Ok(()));
/// // The same access does not cover a fault at 0x10.
/// assert_eq!(
///     check_ownership(&[read(8, 8)], Some(0x10)),
///     Err(EmulationError::NotOurs(NotOurs::NoMapAccess))
/// );
/// // push qword ptr [8] with rsp in ordinary memory: one page-0 read, one ordinary write.
/// assert_eq!(check_ownership(&[read(8, 8), write(0x7FF8, 8)], Some(8)), Ok(()));
/// // Reading the gs base is fine, writing it is not.
/// assert_eq!(check_ownership(&[read(0x98, 8)], None), Ok(()));
/// assert_eq!(
///     check_ownership(&[write(0x98, 8)], None),
///     Err(EmulationError::NotOurs(NotOurs::ReadOnly { addr: 0x98, size: 8 }))
/// );
/// // 0x9c..0xa4 runs past the gs base into bytes that are not registers.
/// assert_eq!(
///     check_ownership(&[read(0x9C, 8)], None),
///     Err(EmulationError::NotOurs(NotOurs::OutsideMap { addr: 0x9C, size: 8 }))
/// );
/// // No access touches page 0 at all.
/// assert_eq!(
///     check_ownership(&[read(0x10_0000, 8)], None),
///     Err(EmulationError::NotOurs(NotOurs::NoMapAccess))
/// );
/// ```
pub fn check_ownership(accesses: &[Access], fault_addr: Option<u64>) -> Result<(), EmulationError> {
    ownership(accesses, fault_addr, |_, _| false)
}

/// [`check_ownership`], with accesses inside trapped regions ([`crate::region`], as
/// `trapped` says) counted as register accesses too: mapped, writable, and ours when they cover
/// the fault.
fn ownership(
    accesses: &[Access],
    fault_addr: Option<u64>,
    trapped: impl Fn(u64, u64) -> bool,
) -> Result<(), EmulationError> {
    let mut touches = false;
    let mut covered = fault_addr.is_none();
    // A masked access (AVX-512) is checked on the bytes it touches: masked-off elements are
    // not accessed, as on hardware.
    for a in accesses {
        // Without a fault, an operand in page 0 whose elements are all masked off (it touches
        // nothing) is still the map's: the instruction runs, as it does on hardware.
        touches |=
            fault_addr.is_none() && a.runs().next().is_none() && map::touches_page0(a.addr, a.size);
        for (addr, size) in a.runs() {
            if trapped(addr, size) {
                touches = true;
                if let Some(f) = fault_addr {
                    covered |= f.wrapping_sub(addr) < size;
                }
                continue;
            }
            if !map::touches_page0(addr, size) {
                continue;
            }
            touches = true;
            if let Some(f) = fault_addr {
                covered |= f.wrapping_sub(addr) < size;
            }
            if !map::is_mapped(addr, size) {
                return Err(EmulationError::NotOurs(NotOurs::OutsideMap { addr, size }));
            }
            if a.write && !map::is_writable(addr, size) {
                return Err(EmulationError::NotOurs(NotOurs::ReadOnly { addr, size }));
            }
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
///
/// # Examples
///
/// `sub dword ptr [0x10], 1` on edx = 0 (map offset 0x10 is rdx). A 32-bit result written to the
/// map changes only the four bytes the operand covers (this is memory, not a register
/// destination, so nothing is zero-extended):
///
/// ```
/// use of_core::decode::decode;
/// use of_core::{RegisterFile, emulate};
///
/// let mut m = RegisterFile::default();
/// m.gpr[2] = 0xAAAA_AAAA_0000_0000; // rdx: edx = 0
/// m.rip = 0x40_0000;
/// // sub dword ptr [0x10], 1: 83 2c 25 10 00 00 00 01 (83 /5 ib, 8 bytes).
/// let bytes = [0x83, 0x2C, 0x25, 0x10, 0x00, 0x00, 0x00, 0x01];
/// let (instr, offsets) = decode(&bytes, m.rip).unwrap();
/// emulate(&mut m, &instr, &bytes, &offsets, Some(0x10)).unwrap();
///
/// // 0 - 1 = 0xFFFF_FFFF with a borrow out of bit 31 (CF); the result is negative (SF) and not
/// // zero; its low byte 0xFF has eight set bits, an even number (PF); 0x0 - 0x1 borrows into
/// // bit 3 (AF); 0 - 1 = -1 does not overflow (OF clear).
/// assert_eq!(m.gpr[2], 0xAAAA_AAAA_FFFF_FFFF);
/// let (cf, pf, af, zf, sf, of) = (1 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 7, 1 << 11);
/// assert_eq!(m.rflags & (cf | pf | af | zf | sf | of), cf | pf | af | sf);
/// assert_eq!(m.rip, 0x40_0008);
///
/// // Without a fault address any page-0 access is accepted (the MMIO use).
/// let (instr, offsets) = decode(&bytes, m.rip).unwrap();
/// emulate(&mut m, &instr, &bytes, &offsets, None).unwrap();
/// assert_eq!(m.gpr[2], 0xAAAA_AAAA_FFFF_FFFE);
/// ```
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
            Some(f) => a.covers(f) && (map::is_mapped(f, 1) || m.trapped(f, 1)),
            None => {
                (map::touches_page0(a.addr, a.size) && map::is_mapped(a.addr, 1))
                    || m.trapped(a.addr, 1)
            }
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
            && fault_addr.is_none_or(|f| map::is_mapped(f, 1) || m.trapped(f, 1));
        if hits_map || uncomputed {
            return Err(EmulationError::Unsupported(reason));
        }
    }
    ownership(acc.as_slice(), fault_addr, |addr, size| {
        m.trapped(addr, size)
    })?;
    execute(m, instr, raw, offsets, kind)
}

/// Executes `instr` of class `kind` whose accesses have been checked (see [`emulate`], which
/// is this plus classification and the ownership check).
///
/// # Errors
/// As [`emulate`].
///
/// # Examples
///
/// Classification and the ownership check done by the caller, then execution:
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::{check_ownership, execute, operands, table};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[0] = 0x8000_0000_0000_0000; // rax
/// m.rip = 0x40_0000;
/// // shl qword ptr [0], 1: 48 d1 24 25 00 00 00 00 (d1 /4).
/// let bytes = [0x48, 0xD1, 0x24, 0x25, 0x00, 0x00, 0x00, 0x00];
/// let (instr, offsets) = decode(&bytes, m.rip).unwrap();
/// let kind = table::classify(&instr);
/// assert_eq!(kind, table::Kind::Host { writes: true });
/// let acc = operands::accesses(&m, &instr, kind);
/// check_ownership(acc.as_slice(), Some(0)).unwrap();
/// execute(&mut m, &instr, &bytes, &offsets, kind).unwrap();
/// // Bit 63 is shifted out into CF; the result is 0 (ZF).
/// assert_eq!(m.gpr[0], 0);
/// assert_eq!(m.rflags & 0x41, 0x41); // CF | ZF
/// assert_eq!(m.rip, 0x40_0008);
/// ```
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
        Kind::EvexMove(mv) => vector::evex::execute(m, instr, mv, &mut writes),
        Kind::EvexHost => vector::evex::execute_host(m, instr, raw, offsets, &mut writes),
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
