//! Operands: effective addresses, the memory accesses an instruction makes, and reading/writing
//! operands through the map or ordinary memory.

use super::table::Kind;
use super::{EmulationError, Exception};
use crate::machine::{Machine, read_reg, write_reg};
use crate::map;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// One memory access: `size` bytes at `addr`, of which the bytes selected by `selected` are
/// touched (an AVX-512 masked access touches only the elements its opmask selects: Intel SDM
/// Vol. 1 §15.6.1, memory fault suppression).
///
/// # Examples
///
/// ```
/// use of_core::emulate::operands::Access;
///
/// let rcx = Access::new(8, 8, true);
/// assert!(rcx.covers(8) && rcx.covers(15));
/// assert!(!rcx.covers(7) && !rcx.covers(16));
/// // Dwords 0 and 2 of a 16-byte access at 0x100 (a masked vmovdqu32 with k = 0b0101).
/// let masked = Access::masked(0x100, 16, false, 0x0F0F);
/// assert!(masked.covers(0x100) && !masked.covers(0x104) && masked.covers(0x108));
/// assert_eq!(masked.runs().collect::<Vec<_>>(), [(0x100, 4), (0x108, 4)]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Whether the access writes.
    pub write: bool,
    /// Bit `b` set: byte `b` of the access is touched. Bytes from 64 on are always touched
    /// (only accesses of at most 64 bytes are masked).
    pub selected: u64,
}

impl Access {
    /// An access touching all its bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::emulate::operands::Access;
    ///
    /// let a = Access::new(0x10, 8, false);
    /// assert_eq!((a.addr, a.size, a.write, a.selected), (0x10, 8, false, u64::MAX));
    /// ```
    pub const fn new(addr: u64, size: u64, write: bool) -> Access {
        Access {
            addr,
            size,
            write,
            selected: u64::MAX,
        }
    }

    /// An access of at most 64 bytes touching the bytes set in `selected`.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::emulate::operands::Access;
    ///
    /// let none = Access::masked(0x100, 64, true, 0);
    /// assert!(!none.covers(0x100) && none.runs().next().is_none());
    /// ```
    pub const fn masked(addr: u64, size: u64, write: bool, selected: u64) -> Access {
        Access {
            addr,
            size,
            write,
            selected,
        }
    }

    /// Whether byte `off` of the access is touched.
    fn touches(&self, off: u64) -> bool {
        off < self.size && (off >= 64 || self.selected >> off & 1 == 1)
    }

    /// Whether `addr` lies inside this access and is touched.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::emulate::operands::Access;
    ///
    /// let a = Access::new(0x1FC, 8, false); // xmm15's top + mxcsr
    /// assert!(a.covers(0x200));
    /// assert!(!a.covers(0x204));
    /// // An access that wraps around the address space still covers its bytes.
    /// let w = Access::new(u64::MAX - 1, 4, false);
    /// assert!(w.covers(u64::MAX) && w.covers(1) && !w.covers(2));
    /// ```
    pub fn covers(&self, addr: u64) -> bool {
        self.touches(addr.wrapping_sub(self.addr))
    }

    /// The touched bytes as maximal runs `(first address, length)`, in address order.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::emulate::operands::Access;
    ///
    /// assert_eq!(Access::new(8, 100, false).runs().collect::<Vec<_>>(), [(8, 100)]);
    /// let a = Access::masked(0, 8, false, 0b1011_0011);
    /// assert_eq!(a.runs().collect::<Vec<_>>(), [(0, 2), (4, 2), (7, 1)]);
    /// ```
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut off = 0u64;
        core::iter::from_fn(move || {
            if off >= self.size {
                return None;
            }
            if self.selected == u64::MAX || off >= 64 {
                let start = off;
                off = self.size;
                return Some((self.addr.wrapping_add(start), self.size - start));
            }
            let rest = self.selected >> off; // off < 64
            let start = if rest == 0 {
                64 // nothing selected below byte 64; bytes from 64 on are touched
            } else {
                off + u64::from(rest.trailing_zeros())
            };
            if start >= self.size {
                off = self.size;
                return None;
            }
            let end = if start >= 64 {
                self.size
            } else {
                let ones = u64::from((self.selected >> start).trailing_ones());
                if start + ones >= 64 {
                    self.size
                } else {
                    (start + ones).min(self.size)
                }
            };
            off = end;
            Some((self.addr.wrapping_add(start), end - start))
        })
    }
}

/// Up to four accesses of one instruction (the faulting iteration for string instructions).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::{Access, accesses};
/// use of_core::emulate::table::classify;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[6] = 0x10; // rsi -> rdx's slot
/// m.gpr[7] = 0x18; // rdi -> rbx's slot
/// // movsq (48 a5): reads 8 bytes at rsi, writes 8 bytes at rdi.
/// let (instr, _) = decode(&[0x48, 0xA5], 0x40_0000).unwrap();
/// let acc = accesses(&m, &instr, classify(&instr));
/// assert_eq!(
///     acc.as_slice(),
///     &[
///         Access::new(0x10, 8, false),
///         Access::new(0x18, 8, true),
///     ]
/// );
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Accesses {
    list: [Access; 4],
    len: usize,
}

impl Accesses {
    fn push(&mut self, a: Access) {
        if self.len < self.list.len() && a.size > 0 {
            self.list[self.len] = a;
            self.len += 1;
        }
    }
    /// The accesses.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::emulate::operands::Accesses;
    ///
    /// assert!(Accesses::default().as_slice().is_empty());
    /// ```
    pub fn as_slice(&self) -> &[Access] {
        &self.list[..self.len]
    }
}

/// The effective address of memory operand `op` (Intel SDM Vol. 1 §3.7.5): base + index ×
/// scale + displacement, truncated to the address size (0x67 gives 32 bits), plus the fs/gs base
/// for those segment overrides (other segments are flat in 64-bit mode).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::effective_address;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[3] = 0xFFFF_FFFF; // rbx
/// m.gpr[1] = 1; // rcx
/// // mov eax, dword ptr [rbx + rcx*4 + 0x10] (8b 44 8b 10): operand 1 is the memory operand.
/// let (instr, _) = decode(&[0x8B, 0x44, 0x8B, 0x10], 0x40_0000).unwrap();
/// assert_eq!(effective_address(&m, &instr, 1), Some(0xFFFF_FFFF + 4 + 0x10));
/// // The same with 0x67 (mov eax, dword ptr [ebx + ecx*4 + 0x10]): the sum is truncated to
/// // 32 bits, 0x1_0000_0013 -> 0x13.
/// let (instr, _) = decode(&[0x67, 0x8B, 0x44, 0x8B, 0x10], 0x40_0000).unwrap();
/// assert_eq!(effective_address(&m, &instr, 1), Some(0x13));
/// ```
pub fn effective_address<M: Machine + ?Sized>(m: &M, instr: &Instruction, op: u32) -> Option<u64> {
    if instr.op_kind(op) == OpKind::Memory
        && instr.memory_base() == Register::None
        && instr.memory_index() == Register::None
        && !matches!(instr.memory_segment(), Register::FS | Register::GS)
    {
        // Fast path: an absolute address (disp32, or moffs); 0x67 truncates it to 32 bits.
        let d = instr.memory_displacement64();
        return Some(if instr.memory_displ_size() == 4 {
            d & 0xFFFF_FFFF
        } else {
            d
        });
    }
    instr.virtual_address(op, 0, |reg, _, _| read_reg(m, reg))
}

/// Size in bytes of the explicit memory operand.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::memory_size;
///
/// // add qword ptr [8], 1 (48 83 04 25 08 00 00 00 01)
/// let (q, _) = decode(&[0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01], 0).unwrap();
/// assert_eq!(memory_size(&q), 8);
/// // add byte ptr [8], 1 (80 04 25 08 00 00 00 01)
/// let (b, _) = decode(&[0x80, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0x01], 0).unwrap();
/// assert_eq!(memory_size(&b), 1);
/// ```
pub fn memory_size(instr: &Instruction) -> u64 {
    instr.memory_size().size() as u64
}

/// Index of the explicit memory operand, if the instruction has one.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::memory_operand;
///
/// // mov qword ptr [0x10], rax (48 89 04 25 10 00 00 00): a store, memory is operand 0.
/// let (st, _) = decode(&[0x48, 0x89, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00], 0).unwrap();
/// assert_eq!(memory_operand(&st), Some(0));
/// // mov rax, qword ptr [0x10] (48 8b 04 25 10 00 00 00): a load, memory is operand 1.
/// let (ld, _) = decode(&[0x48, 0x8B, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00], 0).unwrap();
/// assert_eq!(memory_operand(&ld), Some(1));
/// // mov rax, rcx (48 89 c8): none.
/// let (rr, _) = decode(&[0x48, 0x89, 0xC8], 0).unwrap();
/// assert_eq!(memory_operand(&rr), None);
/// ```
pub fn memory_operand(instr: &Instruction) -> Option<u32> {
    (0..instr.op_count()).find(|&i| instr.op_kind(i) == OpKind::Memory)
}

/// Address size in bytes (8, or 4 with the 0x67 prefix).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::address_size;
///
/// // movsb (a4) and, with 0x67, movsb using esi/edi (67 a4).
/// assert_eq!(address_size(&decode(&[0xA4], 0).unwrap().0), 8);
/// assert_eq!(address_size(&decode(&[0x67, 0xA4], 0).unwrap().0), 4);
/// // mov eax, dword ptr [ebx] (67 8b 03)
/// assert_eq!(address_size(&decode(&[0x67, 0x8B, 0x03], 0).unwrap().0), 4);
/// ```
pub fn address_size(instr: &Instruction) -> u64 {
    match instr.op_kind(0) {
        OpKind::MemorySegESI | OpKind::MemoryESEDI => 4,
        _ => match instr.op_count() > 1 {
            true if matches!(instr.op_kind(1), OpKind::MemorySegESI | OpKind::MemoryESEDI) => 4,
            _ => {
                if instr.memory_base().is_gpr32() || instr.memory_index().is_gpr32() {
                    4
                } else {
                    8
                }
            }
        },
    }
}

/// The register that holds the count of a `rep` string instruction (rcx, or ecx with 0x67).
///
/// # Examples
///
/// ```
/// use iced_x86::Register;
/// use of_core::decode::decode;
/// use of_core::emulate::operands::count_register;
///
/// // rep stosb (f3 aa) counts with rcx; with 0x67 (67 f3 aa) with ecx.
/// assert_eq!(count_register(&decode(&[0xF3, 0xAA], 0).unwrap().0), Register::RCX);
/// assert_eq!(count_register(&decode(&[0x67, 0xF3, 0xAA], 0).unwrap().0), Register::ECX);
/// ```
pub fn count_register(instr: &Instruction) -> Register {
    if address_size(instr) == 4 {
        Register::ECX
    } else {
        Register::RCX
    }
}

/// Element size in bytes of a string instruction.
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::string_element;
///
/// assert_eq!(string_element(&decode(&[0xA4], 0).unwrap().0), 1); // movsb
/// assert_eq!(string_element(&decode(&[0x66, 0xA5], 0).unwrap().0), 2); // movsw
/// assert_eq!(string_element(&decode(&[0xA5], 0).unwrap().0), 4); // movsd
/// assert_eq!(string_element(&decode(&[0x48, 0xA5], 0).unwrap().0), 8); // movsq
/// ```
pub fn string_element(instr: &Instruction) -> u64 {
    memory_size(instr)
}

/// The bit-string displacement of bt/bts/btr/btc with a register bit offset: the operand is
/// accessed at `EA + size * (offset SAR log2(8 * size))` (Intel SDM Vol. 2A, BT, "bit base").
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::bit_string_displacement;
/// use of_core::RegisterFile;
///
/// // bt qword ptr [0], rcx (48 0f a3 0c 25 00 00 00 00): bit rcx of the bit string at 0.
/// let bytes = [0x48, 0x0F, 0xA3, 0x0C, 0x25, 0x00, 0x00, 0x00, 0x00];
/// let (instr, _) = decode(&bytes, 0).unwrap();
/// let mut m = RegisterFile::default();
/// m.gpr[1] = 130; // bit 130 = bit 2 of the third qword: 130 / 64 = 2, so 2 * 8 bytes further
/// assert_eq!(bit_string_displacement(&m, &instr), 16);
/// m.gpr[1] = (-1i64) as u64; // bit -1 = bit 63 of the qword before
/// assert_eq!(bit_string_displacement(&m, &instr), (-8i64) as u64);
/// ```
pub fn bit_string_displacement<M: Machine + ?Sized>(m: &M, instr: &Instruction) -> u64 {
    let size = memory_size(instr);
    let bits = size * 8;
    let raw = read_reg(m, instr.op1_register()).unwrap_or(0);
    let offset: i64 = match size {
        2 => raw as u16 as i16 as i64,
        4 => raw as u32 as i32 as i64,
        _ => raw as i64,
    };
    (offset >> bits.trailing_zeros()).wrapping_mul(size as i64) as u64
}

/// The memory accesses `instr` makes from the state of `m` (which must still be the state
/// before the instruction: `m.rip()` is the instruction's own address).
///
/// # Examples
///
/// `push qword ptr [8]` with rsp pointing into the map (at r8's slot, 0x40) reads rcx and
/// writes the 8 bytes below rsp:
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::{Access, accesses};
/// use of_core::emulate::table::classify;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[4] = 0x40; // rsp
/// // push qword ptr [8] (ff 34 25 08 00 00 00)
/// let (instr, _) = decode(&[0xFF, 0x34, 0x25, 0x08, 0x00, 0x00, 0x00], 0x40_0000).unwrap();
/// let acc = accesses(&m, &instr, classify(&instr));
/// assert_eq!(
///     acc.as_slice(),
///     &[
///         Access::new(8, 8, false),
///         Access::new(0x38, 8, true),
///     ]
/// );
/// // lea rax, [8] (48 8d 04 25 08 00 00 00) names memory but does not access it.
/// let (lea, _) = decode(&[0x48, 0x8D, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00], 0).unwrap();
/// assert!(accesses(&m, &lea, classify(&lea)).as_slice().is_empty());
/// ```
pub fn accesses<M: Machine + ?Sized>(m: &M, instr: &Instruction, kind: Kind) -> Accesses {
    let mut acc = Accesses::default();
    let explicit = memory_operand(instr)
        .and_then(|op| Some((op, effective_address(m, instr, op)?, memory_size(instr))));
    match kind {
        Kind::NoAccess => {}
        Kind::String => {
            let n = string_element(instr);
            let a = address_size(instr);
            let mask = if a == 4 { 0xFFFF_FFFF } else { u64::MAX };
            let rsi = m.gpr(6) & mask;
            let rdi = m.gpr(7) & mask;
            let seg = |r: Register| read_reg(m, r).unwrap_or(0);
            let src_seg = seg(instr.memory_segment());
            match instr.mnemonic() {
                Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => {
                    acc.push(Access::new(rdi, n, true))
                }
                Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => {
                    acc.push(Access::new(src_seg.wrapping_add(rsi), n, false))
                }
                Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq => {
                    acc.push(Access::new(rdi, n, false))
                }
                Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd | Mnemonic::Cmpsq => {
                    acc.push(Access::new(src_seg.wrapping_add(rsi), n, false));
                    acc.push(Access::new(rdi, n, false));
                }
                _ => {
                    acc.push(Access::new(src_seg.wrapping_add(rsi), n, false));
                    acc.push(Access::new(rdi, n, true));
                }
            }
        }
        Kind::Stack => stack_accesses(m, instr, explicit, &mut acc),
        Kind::BitTestRegister { writes } => {
            if let Some((_, ea, size)) = explicit {
                let addr = ea.wrapping_add(bit_string_displacement(m, instr));
                acc.push(Access::new(addr, size, writes));
            }
        }
        Kind::Host { writes } => {
            if let Some((_, ea, size)) = explicit {
                acc.push(Access::new(ea, size, writes));
            }
        }
        Kind::Move => {
            if let Some((op, ea, size)) = explicit {
                let write = op == 0 && instr.mnemonic() != Mnemonic::Xlatb;
                acc.push(Access::new(ea, size, write));
            }
        }
        Kind::CompareExchangeWide => {
            if let Some((_, ea, size)) = explicit {
                acc.push(Access::new(ea, size, true));
            }
        }
        Kind::VectorHost => {
            if let Some((op, ea, size)) = explicit {
                acc.push(Access::new(ea, size, op == 0));
            }
        }
        Kind::Vector(mv) => {
            if let Some((op, ea, size)) = explicit {
                acc.push(Access::new(
                    ea,
                    size,
                    op == 0 && mv != super::vector::Move::LoadMxcsr,
                ));
            }
        }
        Kind::EvexMove(_) | Kind::EvexHost => {
            if let Some((_, ea, _)) = explicit {
                acc.push(super::vector::evex::access(m, instr, ea));
            }
        }
        Kind::CacheControl => {
            if let Some((_, ea, _)) = explicit {
                acc.push(Access::new(ea, 1, false));
            }
        }
        Kind::Unsupported(_) => {
            if let Some((op, ea, size)) = explicit {
                acc.push(Access::new(ea, size.max(1), op == 0));
            }
        }
    }
    acc
}

fn stack_accesses<M: Machine + ?Sized>(
    m: &M,
    instr: &Instruction,
    explicit: Option<(u32, u64, u64)>,
    acc: &mut Accesses,
) {
    let rsp = m.gpr(4);
    let inc = instr.stack_pointer_increment() as i64;
    match instr.mnemonic() {
        Mnemonic::Push | Mnemonic::Pushf | Mnemonic::Pushfq | Mnemonic::Call => {
            if let Some((_, ea, size)) = explicit {
                acc.push(Access::new(ea, size, false));
            }
            let n = (-inc) as u64;
            acc.push(Access::new(rsp.wrapping_sub(n), n, true));
        }
        Mnemonic::Pop | Mnemonic::Popf | Mnemonic::Popfq => {
            let n = inc as u64;
            acc.push(Access::new(rsp, n, false));
            if let Some((_, ea, size)) = explicit {
                // pop computes a destination address that uses rsp after the increment.
                let ea = if instr.memory_base() == Register::RSP {
                    ea.wrapping_add(n)
                } else {
                    ea
                };
                acc.push(Access::new(ea, size, true));
            }
        }
        Mnemonic::Ret => acc.push(Access::new(rsp, super::stack::ret_size(instr), false)),
        Mnemonic::Jmp => {
            if let Some((_, ea, size)) = explicit {
                acc.push(Access::new(ea, size, false));
            }
        }
        Mnemonic::Leave => {
            let n = if instr.code() == iced_x86::Code::Leavew {
                2
            } else {
                8
            };
            let rbp = m.gpr(5);
            acc.push(Access::new(rbp, n, false));
        }
        Mnemonic::Enter => {
            let n = if instr.code() == iced_x86::Code::Enterw_imm16_imm8 {
                2
            } else {
                8
            };
            let level = u64::from(instr.immediate8_2nd() % 32);
            let total = n * if level == 0 { 1 } else { level + 1 };
            acc.push(Access::new(rsp.wrapping_sub(total), total, true));
            if level > 1 {
                let rbp = m.gpr(5);
                let m_ = n * (level - 1);
                acc.push(Access::new(rbp.wrapping_sub(m_), m_, false));
            }
            // The CPU write-checks the final rsp before pushing (seen on AMD: #PF there, with
            // SEGV_ACCERR on a read-only page), so that address can be the fault address.
            let alloc = u64::from(instr.immediate16());
            if alloc != 0 {
                acc.push(Access::new(
                    rsp.wrapping_sub(total).wrapping_sub(alloc),
                    1,
                    true,
                ));
            }
        }
        _ => {}
    }
}

/// Reads `buf.len()` bytes at `addr`: from the map if the range touches page 0, otherwise
/// from ordinary memory.
///
/// # Errors
/// [`Exception::PageFault`] when the bytes cannot be read.
///
/// # Examples
///
/// ```
/// use of_core::emulate::operands::load;
/// use of_core::emulate::{EmulationError, Exception};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[0] = 0x4433_2211; // rax, through the map
/// m.memory[..2].copy_from_slice(&[0xAA, 0xBB]); // ordinary memory
/// let mut b = [0u8; 2];
/// load(&mut m, 1, &mut b).unwrap();
/// assert_eq!(b, [0x22, 0x33]);
/// let base = m.memory_base;
/// load(&mut m, base, &mut b).unwrap();
/// assert_eq!(b, [0xAA, 0xBB]);
/// // A page-0 byte that is not a register reads as a page fault, as would unmapped memory.
/// assert_eq!(
///     load(&mut m, 0xA0, &mut b),
///     Err(EmulationError::Exception(Exception::PageFault { addr: 0xA0, write: false }))
/// );
/// ```
pub fn load<M: Machine + ?Sized>(
    m: &mut M,
    addr: u64,
    buf: &mut [u8],
) -> Result<(), EmulationError> {
    if map::touches_page0(addr, buf.len() as u64) {
        if map::read(m, addr, buf) {
            Ok(())
        } else {
            Err(EmulationError::Exception(Exception::PageFault {
                addr,
                write: false,
            }))
        }
    } else {
        m.read_memory(addr, buf).map_err(|f| {
            EmulationError::Exception(Exception::PageFault {
                addr: f.addr,
                write: false,
            })
        })
    }
}

/// Reads a little-endian value of `size` (1..=8) bytes at `addr` (see [`load`]).
///
/// # Errors
/// As [`load`].
///
/// # Examples
///
/// ```
/// use of_core::emulate::operands::load_value;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[0] = 0xAB00_0000_0000_0000; // rax: top byte 0xAB
/// m.gpr[1] = 0xCD; // rcx: low byte 0xCD
/// // Two bytes at 7: the top byte of rax, then the low byte of rcx (little-endian).
/// assert_eq!(load_value(&mut m, 7, 2), Ok(0xCDAB));
/// ```
pub fn load_value<M: Machine + ?Sized>(
    m: &mut M,
    addr: u64,
    size: u64,
) -> Result<u64, EmulationError> {
    let mut b = [0u8; 8];
    load(m, addr, &mut b[..size as usize & 15])?;
    Ok(u64::from_le_bytes(b))
}

/// Map writes held back until the instruction's register results are in place (SPEC §2: when
/// one instruction writes a register and map bytes that alias it, the map write is applied last).
///
/// # Examples
///
/// ```
/// use of_core::emulate::operands::{MapWrites, store_value};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// let mut w = MapWrites::default();
/// store_value(&mut m, &mut w, 0x00, 8, 5).unwrap(); // queued: rax is still 0
/// assert_eq!(m.gpr[0], 0);
/// m.gpr[0] = 99; // a register result of the same instruction
/// w.apply(&mut m); // the map write comes last and wins
/// assert_eq!(m.gpr[0], 5);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MapWrites {
    addr: [u64; 4],
    len: [u8; 4],
    selected: [u64; 4],
    data: [[u8; 64]; 4],
    n: usize,
}

impl Default for MapWrites {
    fn default() -> Self {
        MapWrites {
            addr: [0; 4],
            len: [0; 4],
            selected: [0; 4],
            data: [[0; 64]; 4],
            n: 0,
        }
    }
}

impl MapWrites {
    /// Applies the held writes in order and forgets them.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::emulate::operands::{MapWrites, store};
    /// use of_core::RegisterFile;
    ///
    /// let mut m = RegisterFile::default();
    /// let mut w = MapWrites::default();
    /// store(&mut m, &mut w, 0x08, &[1]).unwrap();
    /// store(&mut m, &mut w, 0x09, &[2]).unwrap();
    /// w.apply(&mut m);
    /// assert_eq!(m.gpr[1], 0x0201); // both, in order
    /// w.apply(&mut m); // forgotten: applying again changes nothing
    /// m.gpr[1] = 0;
    /// w.apply(&mut m);
    /// assert_eq!(m.gpr[1], 0);
    /// ```
    pub fn apply<M: Machine + ?Sized>(&mut self, m: &mut M) {
        for i in 0..self.n {
            let a = Access::masked(self.addr[i], u64::from(self.len[i]), true, self.selected[i]);
            for (addr, len) in a.runs() {
                let off = addr.wrapping_sub(self.addr[i]) as usize;
                map::write(m, addr, &self.data[i][off..off + len as usize]);
            }
        }
        self.n = 0;
    }
}

/// Writes `data` (at most 64 bytes) at `addr`: ordinary memory is written now (so a fault there
/// leaves the registers untouched); map bytes are queued in `w`.
///
/// # Errors
/// [`Exception::PageFault`] if ordinary memory is not writable; [`EmulationError::Unsupported`]
/// if more than four map writes are queued by one instruction.
///
/// # Examples
///
/// ```
/// use of_core::emulate::operands::{MapWrites, store};
/// use of_core::emulate::{EmulationError, Exception};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// let mut w = MapWrites::default();
/// // Ordinary memory is written at once.
/// let base = m.memory_base;
/// store(&mut m, &mut w, base + 4, &[7, 8]).unwrap();
/// assert_eq!(&m.memory[4..6], &[7, 8]);
/// // The fs base is read only: the CPU's view is a write to memory it cannot write.
/// assert_eq!(
///     store(&mut m, &mut w, 0x90, &[0; 8]),
///     Err(EmulationError::Exception(Exception::PageFault { addr: 0x90, write: true }))
/// );
/// // At most four map writes per instruction.
/// for i in 0..4 {
///     store(&mut m, &mut w, 8 * i, &[1]).unwrap();
/// }
/// assert!(matches!(store(&mut m, &mut w, 0x40, &[1]), Err(EmulationError::Unsupported(_))));
/// ```
pub fn store<M: Machine + ?Sized>(
    m: &mut M,
    w: &mut MapWrites,
    addr: u64,
    data: &[u8],
) -> Result<(), EmulationError> {
    store_selected(m, w, addr, data, u64::MAX)
}

/// Writes the bytes of `data` (at most 64) that `selected` selects (bit `b`: byte `b`) at
/// `addr`, leaving the others untouched: an AVX-512 masked store (Intel SDM Vol. 1 §15.6.1).
/// Ordinary memory is written now, map bytes are queued in `w` (see [`store`]).
///
/// # Errors
/// As [`store`]; a byte that is not selected is never checked or written.
///
/// # Examples
///
/// ```
/// use of_core::emulate::operands::{MapWrites, store_selected};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[2] = u64::MAX; // rdx, map bytes 0x10..0x18
/// let mut w = MapWrites::default();
/// // Bytes 0 and 3 of four zero bytes at 0x10.
/// store_selected(&mut m, &mut w, 0x10, &[0; 4], 0b1001).unwrap();
/// w.apply(&mut m);
/// assert_eq!(m.gpr[2], 0xFFFF_FFFF_00FF_FF00);
/// // Unselected bytes may lie where writes are refused (the fs base at 0x90).
/// store_selected(&mut m, &mut w, 0x88, &[0; 16], 0x00FF).unwrap();
/// ```
pub fn store_selected<M: Machine + ?Sized>(
    m: &mut M,
    w: &mut MapWrites,
    addr: u64,
    data: &[u8],
    selected: u64,
) -> Result<(), EmulationError> {
    let access = Access::masked(addr, data.len() as u64, true, selected);
    if map::touches_page0(addr, data.len() as u64) {
        for (a, len) in access.runs() {
            if !map::is_writable(a, len) {
                return Err(EmulationError::Exception(Exception::PageFault {
                    addr: a,
                    write: true,
                }));
            }
        }
        if w.n == w.addr.len() || data.len() > 64 {
            return Err(EmulationError::Unsupported(
                "too many map writes in one instruction",
            ));
        }
        w.addr[w.n] = addr;
        w.len[w.n] = data.len() as u8;
        w.selected[w.n] = selected;
        w.data[w.n][..data.len()].copy_from_slice(data);
        w.n += 1;
        Ok(())
    } else {
        for (a, len) in access.runs() {
            let off = a.wrapping_sub(addr) as usize;
            m.write_memory(a, &data[off..off + len as usize])
                .map_err(|f| {
                    EmulationError::Exception(Exception::PageFault {
                        addr: f.addr,
                        write: true,
                    })
                })?;
        }
        Ok(())
    }
}

/// Reads the bytes of `buf` (at most 64) that `selected` selects (bit `b`: byte `b`) from
/// `addr`; the others are left as they are and never accessed (see [`store_selected`]).
///
/// # Errors
/// [`Exception::PageFault`] for a selected byte that cannot be read.
///
/// # Examples
///
/// ```
/// use of_core::emulate::operands::load_selected;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[9] = 0x8877_6655_4433_2211; // r9, map bytes 0x48..0x50
/// let mut buf = [0u8; 8];
/// load_selected(&mut m, 0x48, &mut buf, 0b1111_0000).unwrap();
/// assert_eq!(buf, [0, 0, 0, 0, 0x55, 0x66, 0x77, 0x88]);
/// // Bytes 0xa0.. are not registers; unselected, they are not read.
/// let mut wide = [0u8; 16];
/// load_selected(&mut m, 0x98, &mut wide, 0x00FF).unwrap();
/// ```
pub fn load_selected<M: Machine + ?Sized>(
    m: &mut M,
    addr: u64,
    buf: &mut [u8],
    selected: u64,
) -> Result<(), EmulationError> {
    let access = Access::masked(addr, buf.len() as u64, false, selected);
    for (a, len) in access.runs() {
        let off = a.wrapping_sub(addr) as usize;
        load(m, a, &mut buf[off..off + len as usize])?;
    }
    Ok(())
}

/// Writes the low `size` bytes of `value` at `addr` (see [`store`]).
///
/// # Errors
/// As [`store`].
///
/// # Examples
///
/// ```
/// use of_core::emulate::operands::{MapWrites, store_value};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[2] = u64::MAX; // rdx
/// let mut w = MapWrites::default();
/// // A 2-byte store of 0x12345678 at 0x10 writes only 0x5678 into dx's bytes.
/// store_value(&mut m, &mut w, 0x10, 2, 0x1234_5678).unwrap();
/// w.apply(&mut m);
/// assert_eq!(m.gpr[2], 0xFFFF_FFFF_FFFF_5678);
/// ```
pub fn store_value<M: Machine + ?Sized>(
    m: &mut M,
    w: &mut MapWrites,
    addr: u64,
    size: u64,
    value: u64,
) -> Result<(), EmulationError> {
    store(m, w, addr, &value.to_le_bytes()[..size as usize & 15])
}

/// The value of a non-memory operand: a register (hardware view) or an immediate
/// (sign-extended as the instruction defines).
///
/// # Examples
///
/// ```
/// use of_core::decode::decode;
/// use of_core::emulate::operands::read_plain;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// // add qword ptr [8], -1 (48 83 04 25 08 00 00 00 ff): imm8 sign-extended to 64 bits.
/// let bytes = [0x48, 0x83, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00, 0xFF];
/// let (instr, _) = decode(&bytes, 0).unwrap();
/// assert_eq!(read_plain(&m, &instr, 1), Some(u64::MAX));
/// assert_eq!(read_plain(&m, &instr, 0), None); // the memory operand
/// // mov qword ptr [0x10], rax (48 89 04 25 10 00 00 00): operand 1 is rax.
/// m.gpr[0] = 77;
/// let (instr, _) = decode(&[0x48, 0x89, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00], 0).unwrap();
/// assert_eq!(read_plain(&m, &instr, 1), Some(77));
/// ```
pub fn read_plain<M: Machine + ?Sized>(m: &M, instr: &Instruction, op: u32) -> Option<u64> {
    match instr.op_kind(op) {
        OpKind::Register => read_reg(m, instr.op_register(op)),
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Some(instr.immediate(op)),
        OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16 => {
            Some(instr.near_branch_target())
        }
        _ => None,
    }
}

/// Writes a register operand with hardware rules.
///
/// # Examples
///
/// ```
/// use iced_x86::Register;
/// use of_core::emulate::operands::write_register;
/// use of_core::emulate::EmulationError;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[9] = u64::MAX;
/// write_register(&mut m, Register::R9D, 1).unwrap(); // 32-bit: zero-extends
/// assert_eq!(m.gpr[9], 1);
/// assert!(matches!(
///     write_register(&mut m, Register::ES, 0),
///     Err(EmulationError::Unsupported(_))
/// ));
/// ```
pub fn write_register<M: Machine + ?Sized>(
    m: &mut M,
    reg: Register,
    value: u64,
) -> Result<(), EmulationError> {
    if write_reg(m, reg, value) {
        Ok(())
    } else {
        Err(EmulationError::Unsupported(
            "register operand is not modelled",
        ))
    }
}
