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
//!
//! # Examples
//!
//! The layout constants describe the table above:
//!
//! ```
//! use of_core::map::*;
//!
//! // Sixteen 8-byte general-purpose registers, then rip, rflags, fs base, gs base.
//! assert_eq!(GPR_BASE + 16 * 8, RIP);
//! assert_eq!((RFLAGS, FS_BASE, GS_BASE, SCALAR_END), (RIP + 8, RIP + 16, RIP + 24, RIP + 32));
//! // Sixteen 16-byte xmm registers, then the 4-byte mxcsr.
//! assert_eq!(XMM_BASE + 16 * 16, MXCSR);
//! assert_eq!(MXCSR + 4, MAP_END);
//! assert!(MAP_END <= PAGE_SIZE);
//! // Every byte below MAP_END is a register except the hole SCALAR_END..XMM_BASE.
//! let registers = (0..PAGE_SIZE).filter(|&a| is_mapped(a, 1)).count() as u64;
//! assert_eq!(registers, MAP_END - (XMM_BASE - SCALAR_END));
//! ```

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
///
/// # Examples
///
/// ```
/// use of_core::map::{RFLAGS_WRITABLE, STATUS_FLAGS};
///
/// // CF(0) PF(2) AF(4) ZF(6) SF(7) OF(11), plus DF(10) for writes.
/// assert_eq!(STATUS_FLAGS, 1 | 1 << 2 | 1 << 4 | 1 << 6 | 1 << 7 | 1 << 11);
/// assert_eq!(RFLAGS_WRITABLE, STATUS_FLAGS | 1 << 10);
/// ```
pub const RFLAGS_WRITABLE: u64 = 0xCD5;
/// The six status flags CF PF AF ZF SF OF (Intel SDM Vol. 1 §3.4.3.1).
pub const STATUS_FLAGS: u64 = 0x8D5;
/// RF (resume flag, bit 16) and VM (bit 17): cleared in what `pushfq` stores (Intel SDM Vol. 2B,
/// PUSHF), and so in what a read of the rflags slot gives.
///
/// # Examples
///
/// ```
/// use of_core::map::{self, RFLAGS_READ_CLEARED};
/// use of_core::RegisterFile;
///
/// let m = RegisterFile { rflags: 0x202 | RFLAGS_READ_CLEARED, ..RegisterFile::default() };
/// let mut b = [0u8; 8];
/// assert!(map::read(&m, map::RFLAGS, &mut b));
/// assert_eq!(u64::from_le_bytes(b), 0x202);
/// ```
pub const RFLAGS_READ_CLEARED: u64 = (1 << 16) | (1 << 17);

/// One register slot of the map.
///
/// # Examples
///
/// ```
/// use of_core::map::Slot;
///
/// assert_eq!(Slot::at(0x7C), Some((Slot::Gpr(15), 0x78))); // inside r15
/// assert_eq!(Slot::at(0x8B), Some((Slot::Rflags, 0x88)));
/// assert_eq!(Slot::at(0x1F0), Some((Slot::Xmm(15), 0x1F0)));
/// assert_eq!(Slot::at(0xA0), None); // the hole after gs base
/// assert!(!Slot::GsBase.writable());
/// assert_eq!(Slot::Mxcsr.size(), 4);
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::map::Slot;
    ///
    /// assert_eq!(Slot::at(0x00), Some((Slot::Gpr(0), 0x00))); // rax
    /// assert_eq!(Slot::at(0x0F), Some((Slot::Gpr(1), 0x08))); // last byte of rcx
    /// assert_eq!(Slot::at(0x80), Some((Slot::Rip, 0x80)));
    /// assert_eq!(Slot::at(0x93), Some((Slot::FsBase, 0x90)));
    /// assert_eq!(Slot::at(0x9F), Some((Slot::GsBase, 0x98)));
    /// assert_eq!(Slot::at(0xFF), None);
    /// assert_eq!(Slot::at(0x105), Some((Slot::Xmm(0), 0x100)));
    /// assert_eq!(Slot::at(0x203), Some((Slot::Mxcsr, 0x200)));
    /// assert_eq!(Slot::at(0x204), None);
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::map::Slot;
    ///
    /// assert!(Slot::Gpr(4).writable() && Slot::Rip.writable() && Slot::Rflags.writable());
    /// assert!(Slot::Xmm(3).writable() && Slot::Mxcsr.writable());
    /// assert!(!Slot::FsBase.writable() && !Slot::GsBase.writable());
    /// ```
    pub const fn writable(self) -> bool {
        !matches!(self, Slot::FsBase | Slot::GsBase)
    }

    /// Size of the slot in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::map::Slot;
    ///
    /// assert_eq!(Slot::Gpr(0).size(), 8);
    /// assert_eq!(Slot::Rip.size(), 8);
    /// assert_eq!(Slot::Xmm(7).size(), 16);
    /// assert_eq!(Slot::Mxcsr.size(), 4);
    /// ```
    pub const fn size(self) -> u64 {
        match self {
            Slot::Xmm(_) => 16,
            Slot::Mxcsr => 4,
            _ => 8,
        }
    }
}

/// Whether every byte of `addr..addr + len` is a register of the map.
///
/// # Examples
///
/// ```
/// use of_core::map::is_mapped;
///
/// assert!(is_mapped(0x00, 8)); // rax
/// assert!(is_mapped(0x04, 8)); // high half of rax, low half of rcx
/// assert!(is_mapped(0x00, 0xA0)); // all scalar registers at once
/// assert!(is_mapped(0x1F0, 16)); // xmm15
/// assert!(is_mapped(0x200, 4)); // mxcsr
/// assert!(!is_mapped(0x200, 8)); // mxcsr is 4 bytes
/// assert!(!is_mapped(0x9C, 8)); // gs base high half + 4 bytes of the hole
/// assert!(!is_mapped(0xF8, 16)); // hole + xmm0: one range must lie in one part
/// assert!(!is_mapped(u64::MAX, 2)); // wraps around
/// ```
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
///
/// # Examples
///
/// ```
/// use of_core::map::is_writable;
///
/// assert!(is_writable(0x80, 16)); // rip and rflags
/// assert!(!is_writable(0x8C, 8)); // rflags high half + fs base
/// assert!(!is_writable(0x98, 8)); // gs base
/// assert!(is_writable(0x100, 0x104)); // all xmm registers and mxcsr
/// assert!(!is_writable(0xA0, 1)); // not a register
/// ```
pub fn is_writable(addr: u64, len: u64) -> bool {
    is_mapped(addr, len) && (addr >= XMM_BASE || addr.saturating_add(len) <= FS_BASE)
}

/// Whether `addr..addr + len` touches page 0 at all.
///
/// # Examples
///
/// ```
/// use of_core::map::touches_page0;
///
/// assert!(touches_page0(0x800, 8)); // in page 0, even outside the map
/// assert!(touches_page0(0xFFC, 8)); // starts in page 0
/// assert!(!touches_page0(0x1000, 8));
/// assert!(touches_page0(u64::MAX - 3, 8)); // wraps around into page 0
/// assert!(!touches_page0(u64::MAX - 3, 4)); // ends at u64::MAX
/// ```
pub fn touches_page0(addr: u64, len: u64) -> bool {
    addr < PAGE_SIZE || (len > 0 && addr.wrapping_add(len - 1) < PAGE_SIZE)
}

/// Reads a whole slot as 16 little-endian bytes (slots narrower than 16 bytes are zero-padded).
///
/// # Examples
///
/// ```
/// use of_core::map::{Slot, read_slot};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[3] = 0x0807_0605_0403_0201; // rbx
/// m.rflags = 0x1_0246; // RF is not visible through the map
/// let b = read_slot(&m, Slot::Gpr(3));
/// assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
/// assert_eq!(&read_slot(&m, Slot::Rflags)[..8], &0x246u64.to_le_bytes());
/// assert_eq!(&read_slot(&m, Slot::Mxcsr)[..4], &0x1F80u32.to_le_bytes());
/// ```
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
///
/// # Examples
///
/// ```
/// use of_core::map::{Slot, write_slot};
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile { fs_base: 0x5000, ..RegisterFile::default() };
/// let ones = [0xFF; 16];
/// write_slot(&mut m, Slot::Gpr(8), &ones);
/// assert_eq!(m.gpr[8], u64::MAX); // only the slot's 8 bytes are used
/// write_slot(&mut m, Slot::Rflags, &ones);
/// assert_eq!(m.rflags, 0x202 | 0xCD5); // status flags and DF only; IF stays set
/// write_slot(&mut m, Slot::FsBase, &ones);
/// assert_eq!(m.fs_base, 0x5000); // read only
/// write_slot(&mut m, Slot::Xmm(1), &ones);
/// assert_eq!(m.xmm[1], u128::MAX);
/// ```
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
///
/// # Examples
///
/// ```
/// use of_core::map;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[0] = 0x0706_0504_0302_0100; // rax
/// m.gpr[1] = 0x1716_1514_1312_1110; // rcx
/// // An 8-byte read at 4 joins the high half of rax and the low half of rcx.
/// let mut b = [0u8; 8];
/// assert!(map::read(&m, 4, &mut b));
/// assert_eq!(u64::from_le_bytes(b), 0x1312_1110_0706_0504);
/// // Bytes that are not registers.
/// assert!(!map::read(&m, 0xA0, &mut b));
/// ```
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
///
/// # Examples
///
/// ```
/// use of_core::map;
/// use of_core::RegisterFile;
///
/// let mut m = RegisterFile::default();
/// m.gpr[0] = 0x1111_1111_1111_1111; // rax
/// m.gpr[1] = 0x2222_2222_2222_2222; // rcx
/// // A 2-byte write at 7 changes the top byte of rax and the low byte of rcx.
/// assert!(map::write(&mut m, 7, &[0xAA, 0xBB]));
/// assert_eq!(m.gpr[0], 0xAA11_1111_1111_1111);
/// assert_eq!(m.gpr[1], 0x2222_2222_2222_22BB);
/// // Nothing is written when any byte is read only (0x8c..0x94 ends in the fs base).
/// let before = m.clone();
/// assert!(!map::write(&mut m, 0x8C, &[0; 8]));
/// assert_eq!(m, before);
/// ```
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
