//! The register map: which bytes of page 0 are which register (SPEC §2).
//!
//! The map is little-endian and byte-addressable. An access of any size at any offset works on
//! exactly the bytes it covers: an 8-byte read at 0x4 is the high half of rax joined to the low
//! half of rcx. Bytes that are not in the table (0xA0..0x100, 0x204..0x1000) are not registers,
//! and an access touching them is not a register access.
//!
//! | offset | bytes | register | access |
//! |---|---|---|---|
//! | 0x00..0x80 | 8 each | rax rcx rdx rbx rsp rbp rsi rdi r8 … r15 (encoding order) | read/write |
//! | 0x80 | 8 | rip (reads: next instruction; writes: jump) | read/write |
//! | 0x88 | 8 | rflags (reads as `pushfq` would push; writes change CF PF AF ZF SF DF OF only) | read/write |
//! | 0x90 | 8 | fs base | read only |
//! | 0x98 | 8 | gs base | read only |
//! | 0x100..0x200 | 16 each | xmm0 … xmm15 | read/write |
//! | 0x200 | 4 | mxcsr (writes keep reserved bits clear) | read/write |

use crate::machine::Machine;

/// Size of the page that holds the map, in bytes (addresses `0..PAGE_SIZE`).
pub const PAGE_SIZE: u64 = 0x1000;
/// Offset of the first general-purpose register slot (rax).
pub const GPR_BASE: u64 = 0x00;
/// Offset of the rip slot.
pub const RIP: u64 = 0x80;
/// Offset of the rflags slot.
pub const RFLAGS: u64 = 0x88;
/// Offset of the fs base slot (read only).
pub const FS_BASE: u64 = 0x90;
/// Offset of the gs base slot (read only).
pub const GS_BASE: u64 = 0x98;
/// End of the scalar part of the map (exclusive).
pub const SCALAR_END: u64 = 0xA0;
/// Offset of the xmm0 slot; xmmN is at `XMM_BASE + 16 * N`.
pub const XMM_BASE: u64 = 0x100;
/// Offset of the mxcsr slot (4 bytes).
pub const MXCSR: u64 = 0x200;
/// End of the map (exclusive).
pub const MAP_END: u64 = 0x204;

/// The rflags bits a write to the rflags slot may change: CF PF AF ZF SF DF OF
/// (Intel SDM Vol. 1 §3.4.3).
pub const RFLAGS_WRITABLE: u64 = 0xCD5;
/// The six status flags CF PF AF ZF SF OF (Intel SDM Vol. 1 §3.4.3.1).
pub const STATUS_FLAGS: u64 = 0x8D5;
/// RF (resume flag, bit 16) and VM (bit 17): cleared in what `pushfq` stores (Intel SDM Vol. 2B,
/// PUSHF), and so in what a read of the rflags slot gives.
pub const RFLAGS_READ_CLEARED: u64 = (1 << 16) | (1 << 17);

/// One register slot of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A general-purpose register, by encoding number (0 = rax … 15 = r15).
    Gpr(u8),
    /// The instruction pointer.
    Rip,
    /// The flags register.
    Rflags,
    /// The fs segment base (read only).
    FsBase,
    /// The gs segment base (read only).
    GsBase,
    /// An xmm register, by number.
    Xmm(u8),
    /// The SSE control/status register (4 bytes).
    Mxcsr,
}

impl Slot {
    /// The slot containing map offset `offset`, with the slot's first offset; `None` for bytes
    /// that are not registers.
    pub const fn at(offset: u64) -> Option<(Slot, u64)> {
        if offset < RIP {
            Some((Slot::Gpr((offset / 8) as u8), offset & !7))
        } else if offset < RFLAGS {
            Some((Slot::Rip, RIP))
        } else if offset < FS_BASE {
            Some((Slot::Rflags, RFLAGS))
        } else if offset < GS_BASE {
            Some((Slot::FsBase, FS_BASE))
        } else if offset < SCALAR_END {
            Some((Slot::GsBase, GS_BASE))
        } else if offset < XMM_BASE {
            None
        } else if offset < MXCSR {
            Some((Slot::Xmm(((offset - XMM_BASE) / 16) as u8), offset & !15))
        } else if offset < MAP_END {
            Some((Slot::Mxcsr, MXCSR))
        } else {
            None
        }
    }

    /// Whether a write may change this slot.
    pub const fn writable(self) -> bool {
        !matches!(self, Slot::FsBase | Slot::GsBase)
    }

    /// Size of the slot in bytes.
    pub const fn size(self) -> u64 {
        match self {
            Slot::Xmm(_) => 16,
            Slot::Mxcsr => 4,
            _ => 8,
        }
    }
}

/// Whether every byte of `addr..addr + len` is a register of the map.
pub fn is_mapped(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    if end > MAP_END {
        return false;
    }
    let scalar = addr < SCALAR_END && end <= SCALAR_END;
    let vector = addr >= XMM_BASE && end <= MAP_END;
    scalar || vector
}

/// Whether every byte of `addr..addr + len` is a *writable* register of the map.
pub fn is_writable(addr: u64, len: u64) -> bool {
    is_mapped(addr, len) && (addr >= XMM_BASE || addr.saturating_add(len) <= FS_BASE)
}

/// Whether `addr..addr + len` touches page 0 at all.
pub fn touches_page0(addr: u64, len: u64) -> bool {
    addr < PAGE_SIZE || (len > 0 && addr.wrapping_add(len - 1) < PAGE_SIZE)
}

/// Reads a whole slot as 16 little-endian bytes (slots narrower than 16 bytes are zero-padded).
pub fn read_slot<M: Machine + ?Sized>(m: &M, slot: Slot) -> [u8; 16] {
    let mut out = [0u8; 16];
    match slot {
        Slot::Gpr(n) => out[..8].copy_from_slice(&m.gpr(n as usize).to_le_bytes()),
        Slot::Rip => out[..8].copy_from_slice(&m.rip().to_le_bytes()),
        Slot::Rflags => {
            out[..8].copy_from_slice(&(m.rflags() & !RFLAGS_READ_CLEARED).to_le_bytes())
        }
        Slot::FsBase => out[..8].copy_from_slice(&m.fs_base().to_le_bytes()),
        Slot::GsBase => out[..8].copy_from_slice(&m.gs_base().to_le_bytes()),
        Slot::Xmm(n) => out = m.xmm(n as usize).to_le_bytes(),
        Slot::Mxcsr => out[..4].copy_from_slice(&m.mxcsr().to_le_bytes()),
    }
    out
}

/// Writes a whole slot from 16 little-endian bytes (only the slot's size is used). The rflags
/// slot changes only [`RFLAGS_WRITABLE`] bits; mxcsr keeps its reserved bits clear; fs/gs bases
/// are not changed.
pub fn write_slot<M: Machine + ?Sized>(m: &mut M, slot: Slot, bytes: &[u8; 16]) {
    let mut q = [0u8; 8];
    q.copy_from_slice(&bytes[..8]);
    let v = u64::from_le_bytes(q);
    match slot {
        Slot::Gpr(n) => m.set_gpr(n as usize, v),
        Slot::Rip => m.set_rip(v),
        Slot::Rflags => {
            let old = m.rflags();
            m.set_rflags((old & !RFLAGS_WRITABLE) | (v & RFLAGS_WRITABLE));
        }
        Slot::FsBase | Slot::GsBase => {}
        Slot::Xmm(n) => m.set_xmm(n as usize, u128::from_le_bytes(*bytes)),
        Slot::Mxcsr => {
            let mut d = [0u8; 4];
            d.copy_from_slice(&bytes[..4]);
            m.set_mxcsr(u32::from_le_bytes(d));
        }
    }
}

/// Reads `buf.len()` map bytes starting at map offset `addr`. Returns `false` (and leaves `buf`
/// partly written) if any byte is not a register.
pub fn read<M: Machine + ?Sized>(m: &M, addr: u64, buf: &mut [u8]) -> bool {
    let len = buf.len();
    if addr < RIP && (addr & 7) as usize + len <= 8 {
        // Fast path: inside one general-purpose register.
        let v = m.gpr((addr / 8) as usize) >> (8 * (addr & 7));
        buf.copy_from_slice(&v.to_le_bytes()[..len]);
        return true;
    }
    if !is_mapped(addr, buf.len() as u64) {
        return false;
    }
    let mut i = 0usize;
    while i < buf.len() {
        let off = addr + i as u64;
        let Some((slot, start)) = Slot::at(off) else {
            return false;
        };
        let image = read_slot(m, slot);
        let from = (off - start) as usize;
        let n = core::cmp::min(slot.size() as usize - from, buf.len() - i);
        buf[i..i + n].copy_from_slice(&image[from..from + n]);
        i += n;
    }
    true
}

/// Writes `data` to the map starting at map offset `addr`, slot by slot in address order.
/// Returns `false` (writing nothing) if any byte is not a writable register.
pub fn write<M: Machine + ?Sized>(m: &mut M, addr: u64, data: &[u8]) -> bool {
    let len = data.len();
    if addr < RIP && (addr & 7) as usize + len <= 8 && len > 0 {
        // Fast path: inside one general-purpose register.
        let n = (addr / 8) as usize;
        let mut image = m.gpr(n).to_le_bytes();
        let from = (addr & 7) as usize;
        image[from..from + len].copy_from_slice(data);
        m.set_gpr(n, u64::from_le_bytes(image));
        return true;
    }
    if !is_writable(addr, data.len() as u64) {
        return false;
    }
    let mut i = 0usize;
    while i < data.len() {
        let off = addr + i as u64;
        let Some((slot, start)) = Slot::at(off) else {
            return false;
        };
        let mut image = read_slot(m, slot);
        if slot == Slot::Rflags {
            // Patch the full value, not the masked read, so bits outside the written bytes and
            // outside RFLAGS_WRITABLE keep their value (write_slot merges anyway).
            image[..8].copy_from_slice(&m.rflags().to_le_bytes());
        }
        let from = (off - start) as usize;
        let n = core::cmp::min(slot.size() as usize - from, data.len() - i);
        image[from..from + n].copy_from_slice(&data[i..i + n]);
        write_slot(m, slot, &image);
        i += n;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::RegisterFile;

    fn file() -> RegisterFile {
        let mut m = RegisterFile::default();
        for (i, g) in m.gpr.iter_mut().enumerate() {
            // Byte k of register i is 0x10 * i + k: every byte of the image is distinct.
            *g = u64::from_le_bytes(core::array::from_fn(|k| (0x10 * i + k) as u8));
        }
        m.rip = 0x1122_3344_5566_7788;
        m.rflags = 0x0003_0246; // RF and VM set, IF, ZF, PF, bit 1
        m.fs_base = 0xAAAA;
        m.gs_base = 0xBBBB;
        m
    }

    #[test]
    fn an_eight_byte_read_at_4_joins_rax_high_and_rcx_low() {
        let m = file();
        let mut b = [0u8; 8];
        assert!(read(&m, 4, &mut b));
        assert_eq!(b, [0x04, 0x05, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13]);
    }

    #[test]
    fn a_two_byte_write_at_7_changes_rax_top_byte_and_rcx_low_byte() {
        let mut m = file();
        let before = m.clone();
        assert!(write(&mut m, 7, &[0xEE, 0xDD]));
        assert_eq!(
            m.gpr[0],
            (before.gpr[0] & 0x00FF_FFFF_FFFF_FFFF) | 0xEE00_0000_0000_0000
        );
        assert_eq!(m.gpr[1], (before.gpr[1] & !0xFF) | 0xDD);
        assert_eq!(&m.gpr[2..], &before.gpr[2..]);
    }

    #[test]
    fn rflags_reads_clear_rf_and_vm_and_writes_change_only_status_and_df() {
        let mut m = file();
        let mut b = [0u8; 8];
        assert!(read(&m, RFLAGS, &mut b));
        assert_eq!(u64::from_le_bytes(b), 0x246);
        assert!(write(&mut m, RFLAGS, &u64::MAX.to_le_bytes()));
        assert_eq!(m.rflags, 0x0003_0246 | 0xCD5);
        assert!(write(&mut m, RFLAGS, &0u64.to_le_bytes()));
        assert_eq!(m.rflags, 0x0003_0246 & !0xCD5);
    }

    #[test]
    fn rip_slot_reads_and_writes_rip() {
        let mut m = file();
        let mut b = [0u8; 8];
        assert!(read(&m, RIP, &mut b));
        assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788);
        assert!(write(&mut m, RIP, &0x4000u64.to_le_bytes()));
        assert_eq!(m.rip, 0x4000);
    }

    #[test]
    fn fs_and_gs_bases_are_readable_but_not_writable() {
        let mut m = file();
        let mut b = [0u8; 8];
        assert!(read(&m, FS_BASE, &mut b));
        assert_eq!(u64::from_le_bytes(b), 0xAAAA);
        assert!(read(&m, GS_BASE, &mut b));
        assert_eq!(u64::from_le_bytes(b), 0xBBBB);
        assert!(!write(&mut m, FS_BASE, &[0; 8]));
        assert!(!write(&mut m, 0x8C, &[0; 8])); // straddles rflags and fs base
        assert_eq!(m.fs_base, 0xAAAA);
    }

    #[test]
    fn bytes_outside_the_table_are_not_registers() {
        let m = file();
        let mut b = [0u8; 8];
        assert!(!read(&m, 0x800, &mut b));
        assert!(!read(&m, 0x9C, &mut b)); // gs base high half + 0xA0..0xA4
        assert!(!read(&m, 0xF8, &mut b)); // 0xF8..0x100 is a hole
        assert!(!read(&m, 0x200, &mut b)); // mxcsr is 4 bytes
        let mut d = [0u8; 4];
        assert!(read(&m, 0x200, &mut d));
        assert_eq!(u32::from_le_bytes(d), 0x1F80);
        assert!(is_mapped(0x00, 0xA0) && is_mapped(0x100, 0x104) && !is_mapped(0x00, 0xA1));
    }

    #[test]
    fn xmm_slots_are_sixteen_bytes_each() {
        let mut m = file();
        m.xmm[3] = 0x0F0E_0D0C_0B0A_0908_0706_0504_0302_0100;
        let mut b = [0u8; 4];
        assert!(read(&m, XMM_BASE + 16 * 3 + 6, &mut b));
        assert_eq!(b, [6, 7, 8, 9]);
        assert!(write(
            &mut m,
            XMM_BASE + 16 * 3 + 14,
            &[0xAA, 0xBB, 0xCC, 0xDD]
        ));
        assert_eq!(m.xmm[3] >> 112, 0xBBAA);
        assert_eq!(m.xmm[4] & 0xFFFF, 0xDDCC);
    }
}
