//! Run-ahead: after the faulting instruction, keep emulating the instructions that follow while
//! they touch only registers, immediates and the map (plus direct jumps and conditional
//! branches), so a run of map instructions costs one fault instead of one each.
//!
//! Run-ahead stops *before* anything else: an access to ordinary memory, an instruction outside
//! the short list below, an instruction whose bytes are not inside the code pages the CPU itself
//! fetched the faulting instruction from (so we never read or execute what the CPU would not),
//! TF set (a debugger is single-stepping), a pending signal, or after a bound on instructions.
//! The stopped-at instruction is left for the CPU (or the next fault), so the observable result
//! is the same as one fault per instruction.
//!
//! Register-only instructions are executed exactly: mov/movzx/movsx/movsxd/lea in Rust, the
//! common arithmetic by [`super::fastop`], other arithmetic by running the instruction's own
//! bytes on the host ([`super::hostexec::verbatim`]), branches by evaluating the condition code
//! (Intel SDM Vol. 1 appendix B).

use super::operands;
use super::table::{self, Kind};
use super::{fastop, hostexec};
use crate::machine::{Machine, read_reg, write_reg};
use crate::map;
use iced_x86::{ConditionCode, ConstantOffsets, Instruction, Mnemonic, OpKind, Register};

/// Where run-ahead gets instruction bytes and learns about pending signals.
///
/// # Examples
///
/// Code in a buffer, as a test or a VMM (which reads guest code itself) would provide it:
///
/// ```
/// use iced_x86::{ConstantOffsets, Instruction};
/// use of_core::emulate::runahead::{CodeSource, run};
/// use of_core::RegisterFile;
///
/// /// Code in a buffer at `base`.
/// struct Buffer {
///     base: u64,
///     code: Vec<u8>,
/// }
///
/// impl CodeSource for Buffer {
///     fn fetch(&mut self, rip: u64, buf: &mut [u8; 16]) -> usize {
///         let Some(off) = rip.checked_sub(self.base) else { return 0 };
///         let rest = self.code.get(off as usize..).unwrap_or(&[]);
///         let n = rest.len().min(15);
///         buf[..n].copy_from_slice(&rest[..n]);
///         n
///     }
///     fn decode(&mut self, b: &[u8; 16], n: usize, rip: u64) -> Option<(Instruction, ConstantOffsets)> {
///         of_core::decode::decode(&b[..n], rip).ok()
///     }
///     fn signal_pending(&mut self) -> bool {
///         false
///     }
/// }
///
/// let mut code = Vec::new();
/// code.extend([0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01]); // add qword ptr [8], 1
/// code.extend([0x48, 0x01, 0xC9]); // add rcx, rcx
/// code.extend([0x48, 0x8B, 0x14, 0x25, 0x00, 0x00, 0x10, 0x00]); // mov rdx, qword ptr [0x100000]
/// let mut src = Buffer { base: 0x40_0000, code };
/// let mut m = RegisterFile { rip: 0x40_0000, ..RegisterFile::default() };
/// m.gpr[1] = 20; // rcx
/// // The first two run; the load from ordinary memory is left for the CPU.
/// assert_eq!(run(&mut m, &mut src, 100), 2);
/// assert_eq!(m.gpr[1], (20 + 1) * 2);
/// assert_eq!(m.rip, 0x40_0000 + 9 + 3);
/// ```
pub trait CodeSource {
    /// Copies the bytes at `rip` into `buf` if they lie in code the CPU has fetched (returns
    /// how many bytes are available, at most 15; fewer than the instruction needs stops
    /// run-ahead). Bytes of `buf` past the returned count are unspecified.
    ///
    /// # Examples
    ///
    /// Run-ahead stops where the code the source offers ends:
    ///
    /// (`Buffer`, hidden, is the code source of the [`CodeSource`] example, plus a `pending`
    /// flag that [`CodeSource::signal_pending`] returns.)
    ///
    /// ```
    /// # use iced_x86::{ConstantOffsets, Instruction};
    /// # use of_core::emulate::runahead::CodeSource;
    /// # /// Code in a buffer at `base`.
    /// # struct Buffer {
    /// #     base: u64,
    /// #     code: Vec<u8>,
    /// #     pending: bool,
    /// # }
    /// # impl CodeSource for Buffer {
    /// #     fn fetch(&mut self, rip: u64, buf: &mut [u8; 16]) -> usize {
    /// #         let Some(off) = rip.checked_sub(self.base) else { return 0 };
    /// #         let rest = self.code.get(off as usize..).unwrap_or(&[]);
    /// #         let n = rest.len().min(15);
    /// #         buf[..n].copy_from_slice(&rest[..n]);
    /// #         n
    /// #     }
    /// #     fn decode(&mut self, b: &[u8; 16], n: usize, rip: u64) -> Option<(Instruction, ConstantOffsets)> {
    /// #         of_core::decode::decode(&b[..n], rip).ok()
    /// #     }
    /// #     fn signal_pending(&mut self) -> bool {
    /// #         self.pending
    /// #     }
    /// # }
    /// use of_core::emulate::runahead::run;
    /// use of_core::RegisterFile;
    ///
    /// // inc qword ptr [0] (48 ff 04 25 00 00 00 00), twice, but only 12 bytes offered.
    /// let mut code = [0x48, 0xFF, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00].repeat(2);
    /// code.truncate(12);
    /// let mut src = Buffer { base: 0x1000, code, pending: false };
    /// let mut m = RegisterFile { rip: 0x1000, ..RegisterFile::default() };
    /// assert_eq!(run(&mut m, &mut src, 10), 1);
    /// assert_eq!((m.gpr[0], m.rip), (1, 0x1008));
    /// ```
    fn fetch(&mut self, rip: u64, buf: &mut [u8; 16]) -> usize;
    /// Decodes the first `n` of `bytes`, possibly through a cache.
    ///
    /// # Examples
    ///
    /// Bytes the source cannot decode stop run-ahead:
    ///
    /// (`Buffer`, hidden, is the code source of the [`CodeSource`] example, plus a `pending`
    /// flag that [`CodeSource::signal_pending`] returns.)
    ///
    /// ```
    /// # use iced_x86::{ConstantOffsets, Instruction};
    /// # use of_core::emulate::runahead::CodeSource;
    /// # /// Code in a buffer at `base`.
    /// # struct Buffer {
    /// #     base: u64,
    /// #     code: Vec<u8>,
    /// #     pending: bool,
    /// # }
    /// # impl CodeSource for Buffer {
    /// #     fn fetch(&mut self, rip: u64, buf: &mut [u8; 16]) -> usize {
    /// #         let Some(off) = rip.checked_sub(self.base) else { return 0 };
    /// #         let rest = self.code.get(off as usize..).unwrap_or(&[]);
    /// #         let n = rest.len().min(15);
    /// #         buf[..n].copy_from_slice(&rest[..n]);
    /// #         n
    /// #     }
    /// #     fn decode(&mut self, b: &[u8; 16], n: usize, rip: u64) -> Option<(Instruction, ConstantOffsets)> {
    /// #         of_core::decode::decode(&b[..n], rip).ok()
    /// #     }
    /// #     fn signal_pending(&mut self) -> bool {
    /// #         self.pending
    /// #     }
    /// # }
    /// use of_core::emulate::runahead::run;
    /// use of_core::RegisterFile;
    ///
    /// // 0x06 (push es) is invalid in 64-bit mode.
    /// let mut src = Buffer { base: 0x1000, code: vec![0x90, 0x06], pending: false };
    /// let mut m = RegisterFile { rip: 0x1000, ..RegisterFile::default() };
    /// assert_eq!(run(&mut m, &mut src, 10), 1); // the nop only
    /// assert_eq!(m.rip, 0x1001);
    /// ```
    fn decode(
        &mut self,
        bytes: &[u8; 16],
        n: usize,
        rip: u64,
    ) -> Option<(Instruction, ConstantOffsets)>;
    /// Whether a signal is waiting (checked every [`SIGNAL_CHECK_EVERY`] instructions).
    ///
    /// # Examples
    ///
    /// A pending signal stops run-ahead at the next check:
    ///
    /// (`Buffer`, hidden, is the code source of the [`CodeSource`] example, plus a `pending`
    /// flag that [`CodeSource::signal_pending`] returns.)
    ///
    /// ```
    /// # use iced_x86::{ConstantOffsets, Instruction};
    /// # use of_core::emulate::runahead::CodeSource;
    /// # /// Code in a buffer at `base`.
    /// # struct Buffer {
    /// #     base: u64,
    /// #     code: Vec<u8>,
    /// #     pending: bool,
    /// # }
    /// # impl CodeSource for Buffer {
    /// #     fn fetch(&mut self, rip: u64, buf: &mut [u8; 16]) -> usize {
    /// #         let Some(off) = rip.checked_sub(self.base) else { return 0 };
    /// #         let rest = self.code.get(off as usize..).unwrap_or(&[]);
    /// #         let n = rest.len().min(15);
    /// #         buf[..n].copy_from_slice(&rest[..n]);
    /// #         n
    /// #     }
    /// #     fn decode(&mut self, b: &[u8; 16], n: usize, rip: u64) -> Option<(Instruction, ConstantOffsets)> {
    /// #         of_core::decode::decode(&b[..n], rip).ok()
    /// #     }
    /// #     fn signal_pending(&mut self) -> bool {
    /// #         self.pending
    /// #     }
    /// # }
    /// use of_core::emulate::runahead::{SIGNAL_CHECK_EVERY, run};
    /// use of_core::RegisterFile;
    ///
    /// let nops = vec![0x90; 4 * SIGNAL_CHECK_EVERY];
    /// let mut src = Buffer { base: 0x1000, code: nops.clone(), pending: true };
    /// let mut m = RegisterFile { rip: 0x1000, ..RegisterFile::default() };
    /// assert_eq!(run(&mut m, &mut src, 1000), SIGNAL_CHECK_EVERY - 1);
    /// let mut src = Buffer { base: 0x1000, code: nops, pending: false };
    /// let mut m = RegisterFile { rip: 0x1000, ..RegisterFile::default() };
    /// assert_eq!(run(&mut m, &mut src, 1000), 4 * SIGNAL_CHECK_EVERY);
    /// ```
    fn signal_pending(&mut self) -> bool;

    /// Whether to report each instruction run-ahead emulates through [`CodeSource::traced`]
    /// (off by default; the fault handler's source says yes when `OF_TRACE` is on).
    ///
    /// # Examples
    ///
    /// A source that keeps no trace needs nothing: the default says no.
    fn tracing(&self) -> bool {
        false
    }

    /// Called after run-ahead emulated `instr` (its `bytes`) when [`CodeSource::tracing`] is
    /// on, with the registers before and after it.
    ///
    /// # Examples
    ///
    /// See [`crate::trace`] for the line the fault handler writes.
    fn traced(
        &mut self,
        instr: &Instruction,
        bytes: &[u8],
        before: &crate::trace::Snap,
        after: &crate::trace::Snap,
    ) {
        let _ = (instr, bytes, before, after);
    }

    /// Whether the source wants [`CodeSource::region_site`] calls (the fault handler's does
    /// while site patching is on and a trapped region exists: run-ahead's device accesses are
    /// sites too). The default says no.
    fn counts_region_sites(&self) -> bool {
        false
    }

    /// Called after run-ahead emulated `instr` (its `bytes`), which accessed a trapped region,
    /// when [`CodeSource::counts_region_sites`] is on.
    fn region_site(&mut self, instr: &Instruction, bytes: &[u8]) {
        let _ = (instr, bytes);
    }
}

/// How often [`CodeSource::signal_pending`] is asked, in instructions.
///
/// # Examples
///
/// ```
/// use of_core::emulate::runahead::SIGNAL_CHECK_EVERY;
///
/// assert!(SIGNAL_CHECK_EVERY > 1);
/// ```
pub const SIGNAL_CHECK_EVERY: usize = 64;

const TF: u64 = 1 << 8;

/// Evaluates a condition code against rflags (Intel SDM Vol. 1 appendix B, table B-1).
///
/// # Examples
///
/// ```
/// use iced_x86::ConditionCode;
/// use of_core::emulate::runahead::condition;
///
/// let (cf, zf, sf, of) = (1u64 << 0, 1 << 6, 1 << 7, 1 << 11);
/// assert!(condition(ConditionCode::e, zf));
/// assert!(!condition(ConditionCode::ne, zf));
/// assert!(condition(ConditionCode::be, cf)); // below or equal: CF or ZF
/// assert!(!condition(ConditionCode::a, cf));
/// assert!(condition(ConditionCode::l, sf)); // less: SF != OF
/// assert!(!condition(ConditionCode::l, sf | of));
/// assert!(condition(ConditionCode::g, sf | of)); // greater: !ZF and SF == OF
/// assert!(!condition(ConditionCode::g, zf));
/// ```
pub fn condition(cc: ConditionCode, rflags: u64) -> bool {
    let f = |bit: u32| rflags & (1 << bit) != 0;
    let (cf, pf, zf, sf, of) = (f(0), f(2), f(6), f(7), f(11));
    match cc {
        ConditionCode::o => of,
        ConditionCode::no => !of,
        ConditionCode::b => cf,
        ConditionCode::ae => !cf,
        ConditionCode::e => zf,
        ConditionCode::ne => !zf,
        ConditionCode::be => cf || zf,
        ConditionCode::a => !cf && !zf,
        ConditionCode::s => sf,
        ConditionCode::ns => !sf,
        ConditionCode::p => pf,
        ConditionCode::np => !pf,
        ConditionCode::l => sf != of,
        ConditionCode::ge => sf == of,
        ConditionCode::le => zf || sf != of,
        ConditionCode::g => !zf && sf == of,
        _ => false,
    }
}

/// Whether every register operand is a general-purpose register other than rsp (any width)
/// and no operand is rip.
fn plain_registers(instr: &Instruction) -> bool {
    (0..instr.op_count()).all(|i| match instr.op_kind(i) {
        OpKind::Register => {
            let r = instr.op_register(i);
            (r.is_gpr() && r.full_register() != Register::RSP)
                || matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
        }
        OpKind::Memory => true,
        _ => true,
    })
}

/// LEA: the effective address without segment base, truncated to the address size and then to
/// the operand size (Intel SDM Vol. 2A, LEA).
fn lea<M: Machine + ?Sized>(m: &mut M, instr: &Instruction) -> bool {
    let base = instr.memory_base();
    let index = instr.memory_index();
    if base == Register::RIP || base == Register::EIP {
        // rip-relative: iced already resolved the target.
        let v = instr.memory_displacement64();
        return write_reg(m, instr.op0_register(), v);
    }
    let mut ea = instr.memory_displacement64();
    if base != Register::None {
        let Some(b) = read_reg(m, base) else {
            return false;
        };
        ea = ea.wrapping_add(b);
    }
    if index != Register::None {
        let Some(x) = read_reg(m, index) else {
            return false;
        };
        ea = ea.wrapping_add(x.wrapping_mul(u64::from(instr.memory_index_scale())));
    }
    if base.is_gpr32() || index.is_gpr32() {
        ea &= 0xFFFF_FFFF;
    }
    write_reg(m, instr.op0_register(), ea)
}

/// Executes one register-only instruction, or returns `false` (nothing changed) if it is not
/// on the list.
fn register_only<M: Machine + ?Sized>(m: &mut M, instr: &Instruction, raw: &[u8]) -> bool {
    if instr.is_jcc_short_or_near() {
        if condition(instr.condition_code(), m.rflags()) {
            m.set_rip(instr.near_branch_target());
        }
        return true;
    }
    if instr.is_jmp_short_or_near() {
        m.set_rip(instr.near_branch_target());
        return true;
    }
    if instr.has_lock_prefix() || (instr.has_segment_prefix() && instr.mnemonic() != Mnemonic::Lea)
    {
        return false;
    }
    if !plain_registers(instr) {
        return false;
    }
    match instr.mnemonic() {
        Mnemonic::Nop => true,
        Mnemonic::Lea => lea(m, instr),
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd => {
            let (Some(v), OpKind::Register) = (operands::read_plain(m, instr, 1), instr.op0_kind())
            else {
                return false;
            };
            let v = match instr.mnemonic() {
                Mnemonic::Movsx | Mnemonic::Movsxd => {
                    let size = instr.op1_register().size() as u64;
                    super::mov::sign_extend(v, size)
                }
                _ => v,
            };
            write_reg(m, instr.op0_register(), v)
        }
        mn => {
            if let Some(op) = fastop::Op::of(mn) {
                if instr.op0_kind() != OpKind::Register {
                    return false;
                }
                let dst = instr.op0_register();
                let size = dst.size() as u64;
                let Some(a) = read_reg(m, dst) else {
                    return false;
                };
                let b = if op.binary() {
                    match operands::read_plain(m, instr, 1) {
                        Some(b) => b,
                        None => return false,
                    }
                } else {
                    0
                };
                let (r, f) = fastop::compute(op, size, a, b, m.rflags());
                m.set_rflags(f);
                if op.writes() {
                    return write_reg(m, dst, r);
                }
                return true;
            }
            // Other arithmetic from the host list, except divisions (which may raise #DE).
            if !matches!(table::classify(instr), Kind::Host { .. })
                || matches!(mn, Mnemonic::Div | Mnemonic::Idiv)
            {
                return false;
            }
            if !hostexec::cpu_supports(instr) {
                return false;
            }
            let Some(form) = hostexec::verbatim(&raw[..instr.len()]) else {
                return false;
            };
            hostexec::execute(m, &form, 0).is_ok()
        }
    }
}

/// Whether every memory access of `instr` lies in mapped (and, for writes, writable) map bytes.
fn map_only<M: Machine + ?Sized>(m: &M, instr: &Instruction, kind: Kind) -> bool {
    let acc = operands::accesses(m, instr, kind);
    let list = acc.as_slice();
    !list.is_empty()
        && list.iter().all(|a| {
            a.runs().all(|(addr, size)| {
                (map::is_mapped(addr, size) && (!a.write || map::is_writable(addr, size)))
                    || m.trapped(addr, size)
            })
        })
}

/// A source operand of a predecoded fast path.
#[derive(Clone, Copy)]
enum Source {
    None,
    Register(Register),
    Immediate(u64),
}

/// Predecoded shapes that run-ahead executes without going through classification again.
#[derive(Clone, Copy)]
enum Fast {
    /// Nothing precomputed: take the general path.
    General,
    /// `op [abs], src` or `op reg, [abs]` on map bytes inside one register's slot region.
    MapAlu {
        op: fastop::Op,
        size: u64,
        ea: u64,
        mem_dst: bool,
        reg: Register,
        src: Source,
    },
    /// `op reg, src` on registers.
    RegisterAlu {
        op: fastop::Op,
        dst: Register,
        src: Source,
    },
    /// Conditional near branch.
    Jcc { cc: ConditionCode, target: u64 },
}

fn source(instr: &Instruction, op: u32) -> Option<Source> {
    if op >= instr.op_count() {
        return Some(Source::None);
    }
    match instr.op_kind(op) {
        OpKind::Register => {
            let r = instr.op_register(op);
            (r.is_gpr() && r.full_register() != Register::RSP).then_some(Source::Register(r))
        }
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Some(Source::Immediate(instr.immediate(op))),
        _ => None,
    }
}

fn predecode(instr: &Instruction) -> Fast {
    if instr.is_jcc_short_or_near() {
        return Fast::Jcc {
            cc: instr.condition_code(),
            target: instr.near_branch_target(),
        };
    }
    let Some(op) = fastop::Op::of(instr.mnemonic()) else {
        return Fast::General;
    };
    if instr.has_segment_prefix() {
        return Fast::General;
    }
    let mem = (0..instr.op_count()).find(|&i| instr.op_kind(i) == OpKind::Memory);
    match mem {
        Some(mi) => {
            if instr.memory_base() != Register::None || instr.memory_index() != Register::None {
                return Fast::General;
            }
            let size = instr.memory_size().size() as u64;
            let d = instr.memory_displacement64();
            let ea = if instr.memory_displ_size() == 4 {
                d & 0xFFFF_FFFF
            } else {
                d
            };
            // Inside one general-purpose register slot, so the fast map accessors apply.
            if !(ea < map::RIP && (ea & 7) + size <= 8 && matches!(size, 1 | 2 | 4 | 8)) {
                return Fast::General;
            }
            if mi == 0 {
                match source(instr, 1) {
                    Some(src) => Fast::MapAlu {
                        op,
                        size,
                        ea,
                        mem_dst: true,
                        reg: Register::None,
                        src,
                    },
                    None => Fast::General,
                }
            } else {
                let reg = instr.op0_register();
                if instr.op0_kind() != OpKind::Register
                    || !reg.is_gpr()
                    || reg.full_register() == Register::RSP
                {
                    return Fast::General;
                }
                Fast::MapAlu {
                    op,
                    size,
                    ea,
                    mem_dst: false,
                    reg,
                    src: Source::None,
                }
            }
        }
        None => {
            if instr.has_lock_prefix() || instr.op0_kind() != OpKind::Register {
                return Fast::General;
            }
            let dst = instr.op0_register();
            if !dst.is_gpr() || dst.full_register() == Register::RSP {
                return Fast::General;
            }
            match source(instr, 1) {
                Some(src) => Fast::RegisterAlu { op, dst, src },
                None => Fast::General,
            }
        }
    }
}

fn source_value<M: Machine + ?Sized>(m: &M, src: Source) -> u64 {
    match src {
        Source::None => 0,
        Source::Register(r) => read_reg(m, r).unwrap_or(0),
        Source::Immediate(v) => v,
    }
}

/// Executes a predecoded fast shape; `false` if the shape is `General`.
fn fast<M: Machine + ?Sized>(m: &mut M, f: Fast, next: u64) -> bool {
    match f {
        Fast::General => false,
        Fast::Jcc { cc, target } => {
            m.set_rip(if condition(cc, m.rflags()) {
                target
            } else {
                next
            });
            true
        }
        Fast::RegisterAlu { op, dst, src } => {
            let a = read_reg(m, dst).unwrap_or(0);
            let b = source_value(m, src);
            let (r, fl) = fastop::compute(op, dst.size() as u64, a, b, m.rflags());
            m.set_rip(next);
            m.set_rflags(fl);
            if op.writes() {
                write_reg(m, dst, r);
            }
            true
        }
        Fast::MapAlu {
            op,
            size,
            ea,
            mem_dst,
            reg,
            src,
        } => {
            let mut buf = [0u8; 8];
            map::read(m, ea, &mut buf[..size as usize]);
            let value = u64::from_le_bytes(buf);
            m.set_rip(next);
            if mem_dst {
                let b = source_value(m, src);
                let (r, fl) = fastop::compute(op, size, value, b, m.rflags());
                m.set_rflags(fl);
                if op.writes() {
                    map::write(m, ea, &r.to_le_bytes()[..size as usize]);
                }
            } else {
                let a = read_reg(m, reg).unwrap_or(0);
                let (r, fl) = fastop::compute(op, size, a, value, m.rflags());
                m.set_rflags(fl);
                if op.writes() {
                    write_reg(m, reg, r);
                }
            }
            true
        }
    }
}

/// A decoded instruction remembered for the rest of one run-ahead pass (loops revisit the same
/// few addresses), re-validated against the bytes at rip before each use.
#[derive(Clone, Copy)]
struct Seen {
    rip: u64,
    bytes: u128,
    len: usize,
    instr: Instruction,
    offsets: ConstantOffsets,
    kind: Kind,
    has_memory: bool,
    fast: Fast,
}

const LOCAL: usize = 4;

/// Runs ahead from `m.rip()` for at most `max` instructions. Returns how many were executed.
///
/// # Examples
///
/// A loop on the map runs until its condition fails, including the conditional branch:
///
/// (`Buffer`, hidden, is the code source of the [`CodeSource`] example, plus a `pending` flag
/// that [`CodeSource::signal_pending`] returns.)
///
/// ```
/// # use iced_x86::{ConstantOffsets, Instruction};
/// # use of_core::emulate::runahead::CodeSource;
/// # /// Code in a buffer at `base`.
/// # struct Buffer {
/// #     base: u64,
/// #     code: Vec<u8>,
/// #     pending: bool,
/// # }
/// # impl CodeSource for Buffer {
/// #     fn fetch(&mut self, rip: u64, buf: &mut [u8; 16]) -> usize {
/// #         let Some(off) = rip.checked_sub(self.base) else { return 0 };
/// #         let rest = self.code.get(off as usize..).unwrap_or(&[]);
/// #         let n = rest.len().min(15);
/// #         buf[..n].copy_from_slice(&rest[..n]);
/// #         n
/// #     }
/// #     fn decode(&mut self, b: &[u8; 16], n: usize, rip: u64) -> Option<(Instruction, ConstantOffsets)> {
/// #         of_core::decode::decode(&b[..n], rip).ok()
/// #     }
/// #     fn signal_pending(&mut self) -> bool {
/// #         self.pending
/// #     }
/// # }
/// use of_core::emulate::runahead::run;
/// use of_core::RegisterFile;
///
/// let mut code = Vec::new();
/// code.extend([0x48, 0xFF, 0x0C, 0x25, 0x08, 0x00, 0x00, 0x00]); // 0x1000: dec qword ptr [8]
/// code.extend([0x75, 0xF6]); // 0x1008: jnz 0x1000 (rel8 = -10)
/// code.extend([0x48, 0x8B, 0x04, 0x25, 0x00, 0x00, 0x10, 0x00]); // 0x100a: mov rax, [0x100000]
/// let mut src = Buffer { base: 0x1000, code, pending: false };
/// let mut m = RegisterFile { rip: 0x1000, ..RegisterFile::default() };
/// m.gpr[1] = 5; // rcx
/// // Five decrements and five branches, then the load is left for the CPU.
/// assert_eq!(run(&mut m, &mut src, 100), 10);
/// assert_eq!((m.gpr[1], m.rip), (0, 0x100A));
/// assert_ne!(m.rflags & 0x40, 0); // ZF from the last dec
/// // `max` bounds the work.
/// let mut m = RegisterFile { rip: 0x1000, ..RegisterFile::default() };
/// m.gpr[1] = 5;
/// assert_eq!(run(&mut m, &mut src, 3), 3);
/// assert_eq!((m.gpr[1], m.rip), (3, 0x1008));
/// ```
pub fn run<M: Machine + ?Sized, S: CodeSource + ?Sized>(
    m: &mut M,
    src: &mut S,
    max: usize,
) -> usize {
    let mut done = 0;
    let mut bytes = [0u8; 16];
    let mut seen: [Option<Seen>; LOCAL] = [None; LOCAL];
    let mut next_victim = 0;
    while done < max {
        if m.rflags() & TF != 0 {
            break;
        }
        if done % SIGNAL_CHECK_EVERY == SIGNAL_CHECK_EVERY - 1 && src.signal_pending() {
            break;
        }
        let rip = m.rip();
        let n = src.fetch(rip, &mut bytes);
        let now = u128::from_le_bytes(bytes);
        // Fully associative over LOCAL entries, round-robin replacement.
        let found = seen.iter().position(|e| {
            matches!(e, Some(e) if e.rip == rip && n >= e.len
                && (now ^ e.bytes) & ((1u128 << (8 * e.len)) - 1) == 0)
        });
        let slot = found.unwrap_or(next_victim);
        let e = match (found, &seen[slot]) {
            (Some(_), Some(e)) => e,
            _ => {
                next_victim = (next_victim + 1) % LOCAL;
                let Some((instr, offsets)) = src.decode(&bytes, n, rip) else {
                    break;
                };
                let kind = table::classify(&instr);
                // A near `jmp rel` is classified with the stack family (its `jmp r/m` forms
                // read memory) but touches neither the stack nor memory.
                let has_memory = kind == Kind::String
                    || (kind == Kind::Stack && !instr.is_jmp_short_or_near())
                    || (0..instr.op_count()).any(|i| instr.op_kind(i) == OpKind::Memory)
                        && kind != Kind::NoAccess;
                let fast = predecode(&instr);
                let e = Seen {
                    rip,
                    bytes: now,
                    len: instr.len(),
                    instr,
                    offsets,
                    kind,
                    has_memory,
                    fast,
                };
                seen[slot] = Some(e);
                match &seen[slot] {
                    Some(e) => e,
                    None => break,
                }
            }
        };
        let (instr, offsets, kind) = (&e.instr, &e.offsets, e.kind);
        let before = src.tracing().then(|| crate::trace::Snap::of(m));
        let ok = if fast(m, e.fast, instr.next_ip()) {
            true
        } else if e.has_memory {
            match kind {
                Kind::Unsupported(_) | Kind::NoAccess => false,
                _ if !map_only(m, instr, kind) => false,
                _ => {
                    let region =
                        src.counts_region_sites() && crate::region::touched_by(m, instr, kind);
                    let ok = super::execute(m, instr, &bytes[..n], offsets, kind).is_ok();
                    if ok && region {
                        src.region_site(instr, &bytes[..instr.len()]);
                    }
                    ok
                }
            }
        } else {
            m.set_rip(instr.next_ip());
            let ok = register_only(m, instr, &bytes[..n]);
            if !ok {
                m.set_rip(rip);
            }
            ok
        };
        if !ok {
            break;
        }
        if let Some(before) = &before {
            let after = crate::trace::Snap::of(m);
            src.traced(instr, &bytes[..n], before, &after);
        }
        if kind == Kind::String && m.rip() == rip {
            // A rep string instruction left its remaining iterations to the CPU.
            break;
        }
        done += 1;
    }
    done
}

/// How many instructions [`reaches_map`] looks at, over every path it follows.
pub const LOOK_AHEAD: usize = 12;

/// Whether run-ahead from `rip` would reach another map access before it has to stop: decodes
/// (without executing) the instructions that follow — along fall-through, direct jumps and
/// both ways of a conditional branch, at most [`LOOK_AHEAD`] instructions — and answers true at
/// the first one whose memory operand lies in page 0. The address of an operand with base or
/// index registers is computed from the registers of `m` as long as no instruction looked at
/// before it can have written them. It answers false at the first access to ordinary memory,
/// stack or string instruction, or instruction run-ahead does not execute on every path: then
/// the CPU is faster at what run-ahead would do (SPEC §8: an isolated access costs a fault and
/// no more).
///
/// # Examples
///
/// (`Buffer` is the code source of the [`CodeSource`] example.)
///
/// ```
/// # use iced_x86::{ConstantOffsets, Instruction};
/// # use of_core::emulate::runahead::CodeSource;
/// # struct Buffer {
/// #     base: u64,
/// #     code: Vec<u8>,
/// # }
/// # impl CodeSource for Buffer {
/// #     fn fetch(&mut self, rip: u64, buf: &mut [u8; 16]) -> usize {
/// #         let Some(off) = rip.checked_sub(self.base) else { return 0 };
/// #         let rest = self.code.get(off as usize..).unwrap_or(&[]);
/// #         let n = rest.len().min(15);
/// #         buf[..n].copy_from_slice(&rest[..n]);
/// #         n
/// #     }
/// #     fn decode(&mut self, b: &[u8; 16], n: usize, rip: u64) -> Option<(Instruction, ConstantOffsets)> {
/// #         of_core::decode::decode(&b[..n], rip).ok()
/// #     }
/// #     fn signal_pending(&mut self) -> bool {
/// #         false
/// #     }
/// # }
/// use of_core::emulate::runahead::reaches_map;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[6] = 0x10_0000; // rsi: ordinary memory
/// // dec r12; mov [rsi], r12; jnz back: an ordinary store comes first.
/// let loop_with_store = vec![0x49, 0xFF, 0xCC, 0x4C, 0x89, 0x26, 0x75, 0xF8];
/// let mut src = Buffer { base: 0x1000, code: loop_with_store };
/// assert!(!reaches_map(&m, &mut src, 0x1000));
/// // dec r12; add qword ptr [0x40], 1: the next map access is two instructions on.
/// let burst = vec![0x49, 0xFF, 0xCC, 0x48, 0x83, 0x04, 0x25, 0x40, 0x00, 0x00, 0x00, 0x01];
/// let mut src = Buffer { base: 0x1000, code: burst };
/// assert!(reaches_map(&m, &mut src, 0x1000));
/// // With rsi pointing into the map, the store of the first loop is a map access.
/// m.gpr[6] = 0x60;
/// let mut src = Buffer { base: 0x1000, code: vec![0x49, 0xFF, 0xCC, 0x4C, 0x89, 0x26] };
/// assert!(reaches_map(&m, &mut src, 0x1000));
/// ```
pub fn reaches_map<M: Machine + ?Sized, S: CodeSource + ?Sized>(
    m: &M,
    src: &mut S,
    rip: u64,
) -> bool {
    let mut bytes = [0u8; 16];
    // Paths still to look at (a conditional branch adds one), and what they may have written.
    let mut paths: [(u64, u32); 4] = [(rip, 0); 4];
    let mut npaths = 1;
    let mut looked = 0;
    while npaths > 0 {
        npaths -= 1;
        let (mut pc, mut written) = paths[npaths];
        loop {
            if looked >= LOOK_AHEAD {
                return false;
            }
            looked += 1;
            let n = src.fetch(pc, &mut bytes);
            let Some((instr, _)) = src.decode(&bytes, n, pc) else {
                break;
            };
            if let Some(op) = (0..instr.op_count()).find(|&i| instr.op_kind(i) == OpKind::Memory) {
                if instr.mnemonic() == Mnemonic::Lea || instr.mnemonic() == Mnemonic::Nop {
                    written |= destination_mask(&instr);
                    pc = instr.next_ip();
                    continue;
                }
                let regs = [instr.memory_base(), instr.memory_index()];
                let known = regs.iter().all(|&r| {
                    r == Register::None
                        || r == Register::RIP
                        || gpr_number(r).is_some_and(|g| written & (1 << g) == 0)
                });
                let size = instr.memory_size().size() as u64;
                let in_page0 = known
                    && operands::effective_address(m, &instr, op)
                        .is_some_and(|ea| map::touches_page0(ea, size) || m.trapped(ea, size));
                if in_page0 {
                    return true;
                }
                break; // ordinary memory (or an address we cannot tell): the CPU's job
            }
            if instr.is_jcc_short_or_near() {
                if npaths < paths.len() {
                    paths[npaths] = (instr.next_ip(), written);
                    npaths += 1;
                }
                pc = instr.near_branch_target();
                continue;
            }
            if instr.is_jmp_short_or_near() {
                pc = instr.near_branch_target();
                continue;
            }
            if instr.stack_pointer_increment() != 0
                || instr.is_string_instruction()
                || !plain_registers(&instr)
            {
                break;
            }
            written |= destination_mask(&instr);
            pc = instr.next_ip();
        }
    }
    false
}

fn gpr_number(r: Register) -> Option<u32> {
    (r.is_gpr64() || r.is_gpr32()).then(|| r.full_register().number() as u32)
}

/// The general-purpose registers an instruction may write (a superset): its first register
/// operand, and every register for the few with implicit destinations.
fn destination_mask(instr: &Instruction) -> u32 {
    use Mnemonic as M;
    match instr.mnemonic() {
        M::Mul
        | M::Imul
        | M::Div
        | M::Idiv
        | M::Cwd
        | M::Cdq
        | M::Cqo
        | M::Cpuid
        | M::Rdtsc
        | M::Rdtscp
        | M::Xchg
        | M::Xadd
        | M::Cmpxchg
        | M::Mulx
        | M::Syscall
        | M::Rdrand
        | M::Rdseed => u32::MAX,
        _ if instr.op_count() > 0 && instr.op0_kind() == OpKind::Register => {
            let r = instr.op0_register();
            if r.is_gpr() {
                1 << (r.full_register().number() as u32 & 15)
            } else {
                0
            }
        }
        _ => 0,
    }
}
