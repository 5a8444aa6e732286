//! Operands: effective addresses, the memory accesses an instruction makes, and reading/writing
//! operands through the map or ordinary memory.

use super::table::Kind;
use super::{EmulationError, Exception};
use crate::machine::{Machine, read_reg, write_reg};
use crate::map;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// One memory access: `size` bytes at `addr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Whether the access writes.
    pub write: bool,
}

impl Access {
    /// Whether `addr` lies inside this access.
    pub fn covers(&self, addr: u64) -> bool {
        addr.wrapping_sub(self.addr) < self.size
    }
}

/// Up to four accesses of one instruction (the faulting iteration for string instructions).
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
    pub fn as_slice(&self) -> &[Access] {
        &self.list[..self.len]
    }
}

/// The effective address of memory operand `op` (Intel SDM Vol. 1 §3.7.5): base + index ×
/// scale + displacement, truncated to the address size (0x67 gives 32 bits), plus the fs/gs base
/// for those segment overrides (other segments are flat in 64-bit mode).
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
pub fn memory_size(instr: &Instruction) -> u64 {
    instr.memory_size().size() as u64
}

/// Index of the explicit memory operand, if the instruction has one.
pub fn memory_operand(instr: &Instruction) -> Option<u32> {
    (0..instr.op_count()).find(|&i| instr.op_kind(i) == OpKind::Memory)
}

/// Address size in bytes (8, or 4 with the 0x67 prefix).
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
pub fn count_register(instr: &Instruction) -> Register {
    if address_size(instr) == 4 {
        Register::ECX
    } else {
        Register::RCX
    }
}

/// Element size in bytes of a string instruction.
pub fn string_element(instr: &Instruction) -> u64 {
    memory_size(instr)
}

/// The bit-string displacement of bt/bts/btr/btc with a register bit offset: the operand is
/// accessed at `EA + size * (offset SAR log2(8 * size))` (Intel SDM Vol. 2A, BT, "bit base").
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
                    acc.push(Access {
                        addr: rdi,
                        size: n,
                        write: true,
                    })
                }
                Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => {
                    acc.push(Access {
                        addr: src_seg.wrapping_add(rsi),
                        size: n,
                        write: false,
                    })
                }
                Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq => {
                    acc.push(Access {
                        addr: rdi,
                        size: n,
                        write: false,
                    })
                }
                Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd | Mnemonic::Cmpsq => {
                    acc.push(Access {
                        addr: src_seg.wrapping_add(rsi),
                        size: n,
                        write: false,
                    });
                    acc.push(Access {
                        addr: rdi,
                        size: n,
                        write: false,
                    });
                }
                _ => {
                    acc.push(Access {
                        addr: src_seg.wrapping_add(rsi),
                        size: n,
                        write: false,
                    });
                    acc.push(Access {
                        addr: rdi,
                        size: n,
                        write: true,
                    });
                }
            }
        }
        Kind::Stack => stack_accesses(m, instr, explicit, &mut acc),
        Kind::BitTestRegister { writes } => {
            if let Some((_, ea, size)) = explicit {
                let addr = ea.wrapping_add(bit_string_displacement(m, instr));
                acc.push(Access {
                    addr,
                    size,
                    write: writes,
                });
            }
        }
        Kind::Host { writes } => {
            if let Some((_, ea, size)) = explicit {
                acc.push(Access {
                    addr: ea,
                    size,
                    write: writes,
                });
            }
        }
        Kind::Move => {
            if let Some((op, ea, size)) = explicit {
                let write = op == 0 && instr.mnemonic() != Mnemonic::Xlatb;
                acc.push(Access {
                    addr: ea,
                    size,
                    write,
                });
            }
        }
        Kind::CompareExchangeWide => {
            if let Some((_, ea, size)) = explicit {
                acc.push(Access {
                    addr: ea,
                    size,
                    write: true,
                });
            }
        }
        Kind::VectorHost => {
            if let Some((op, ea, size)) = explicit {
                acc.push(Access {
                    addr: ea,
                    size,
                    write: op == 0,
                });
            }
        }
        Kind::Vector(mv) => {
            if let Some((op, ea, size)) = explicit {
                acc.push(Access {
                    addr: ea,
                    size,
                    write: op == 0 && mv != super::vector::Move::LoadMxcsr,
                });
            }
        }
        Kind::CacheControl => {
            if let Some((_, ea, _)) = explicit {
                acc.push(Access {
                    addr: ea,
                    size: 1,
                    write: false,
                });
            }
        }
        Kind::Unsupported(_) => {
            if let Some((op, ea, size)) = explicit {
                acc.push(Access {
                    addr: ea,
                    size: size.max(1),
                    write: op == 0,
                });
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
                acc.push(Access {
                    addr: ea,
                    size,
                    write: false,
                });
            }
            let n = (-inc) as u64;
            acc.push(Access {
                addr: rsp.wrapping_sub(n),
                size: n,
                write: true,
            });
        }
        Mnemonic::Pop | Mnemonic::Popf | Mnemonic::Popfq => {
            let n = inc as u64;
            acc.push(Access {
                addr: rsp,
                size: n,
                write: false,
            });
            if let Some((_, ea, size)) = explicit {
                // pop computes a destination address that uses rsp after the increment.
                let ea = if instr.memory_base() == Register::RSP {
                    ea.wrapping_add(n)
                } else {
                    ea
                };
                acc.push(Access {
                    addr: ea,
                    size,
                    write: true,
                });
            }
        }
        Mnemonic::Ret => acc.push(Access {
            addr: rsp,
            size: 8,
            write: false,
        }),
        Mnemonic::Jmp => {
            if let Some((_, ea, size)) = explicit {
                acc.push(Access {
                    addr: ea,
                    size,
                    write: false,
                });
            }
        }
        Mnemonic::Leave => {
            let n = if instr.code() == iced_x86::Code::Leavew {
                2
            } else {
                8
            };
            let rbp = m.gpr(5);
            acc.push(Access {
                addr: rbp,
                size: n,
                write: false,
            });
        }
        Mnemonic::Enter => {
            let n = if instr.code() == iced_x86::Code::Enterw_imm16_imm8 {
                2
            } else {
                8
            };
            let level = u64::from(instr.immediate8_2nd() % 32);
            let total = n * if level == 0 { 1 } else { level + 1 };
            acc.push(Access {
                addr: rsp.wrapping_sub(total),
                size: total,
                write: true,
            });
            if level > 1 {
                let rbp = m.gpr(5);
                let m_ = n * (level - 1);
                acc.push(Access {
                    addr: rbp.wrapping_sub(m_),
                    size: m_,
                    write: false,
                });
            }
            // The CPU write-checks the final rsp before pushing (seen on AMD: #PF there, with
            // SEGV_ACCERR on a read-only page), so that address can be the fault address.
            let alloc = u64::from(instr.immediate16());
            if alloc != 0 {
                acc.push(Access {
                    addr: rsp.wrapping_sub(total).wrapping_sub(alloc),
                    size: 1,
                    write: true,
                });
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
#[derive(Clone, Copy, Debug, Default)]
pub struct MapWrites {
    addr: [u64; 4],
    len: [u8; 4],
    data: [[u8; 32]; 4],
    n: usize,
}

impl MapWrites {
    /// Applies the held writes in order and forgets them.
    pub fn apply<M: Machine + ?Sized>(&mut self, m: &mut M) {
        for i in 0..self.n {
            let len = self.len[i] as usize;
            map::write(m, self.addr[i], &self.data[i][..len]);
        }
        self.n = 0;
    }
}

/// Writes `data` (at most 32 bytes) at `addr`: ordinary memory is written now (so a fault there
/// leaves the registers untouched); map bytes are queued in `w`.
///
/// # Errors
/// [`Exception::PageFault`] if ordinary memory is not writable; [`EmulationError::Unsupported`]
/// if more than four map writes are queued by one instruction.
pub fn store<M: Machine + ?Sized>(
    m: &mut M,
    w: &mut MapWrites,
    addr: u64,
    data: &[u8],
) -> Result<(), EmulationError> {
    if map::touches_page0(addr, data.len() as u64) {
        if !map::is_writable(addr, data.len() as u64) {
            return Err(EmulationError::Exception(Exception::PageFault {
                addr,
                write: true,
            }));
        }
        if w.n == w.addr.len() || data.len() > 32 {
            return Err(EmulationError::Unsupported(
                "too many map writes in one instruction",
            ));
        }
        w.addr[w.n] = addr;
        w.len[w.n] = data.len() as u8;
        w.data[w.n][..data.len()].copy_from_slice(data);
        w.n += 1;
        Ok(())
    } else {
        m.write_memory(addr, data).map_err(|f| {
            EmulationError::Exception(Exception::PageFault {
                addr: f.addr,
                write: true,
            })
        })
    }
}

/// Writes the low `size` bytes of `value` at `addr` (see [`store`]).
///
/// # Errors
/// As [`store`].
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
