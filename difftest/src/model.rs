//! The test's own model of the register map (SPEC §2), written from the contract and not from
//! `of-core`: how a register state looks as bytes, and what a write of map bytes does to it.
//!
//! The expected result of a map instruction is the CPU's result on ordinary memory holding the
//! register image, with the bytes the instruction stored to that memory then applied to the
//! registers ("the map write is applied last").

/// CF PF AF ZF SF OF.
pub const STATUS: u64 = 0x8D5;
/// The direction flag.
pub const DF: u64 = 1 << 10;
/// IF and the always-one bit 1: what a user thread's rflags holds besides status flags and DF.
pub const RFLAGS_FIXED: u64 = 0x202;
/// The rflags bits a write to the rflags slot may change (SPEC §2: CF PF AF ZF SF DF OF).
pub const WRITABLE: u64 = STATUS | DF;
/// Bytes of the scalar map: 16 GPRs, rip, rflags, fs base, gs base.
pub const IMAGE_LEN: usize = 0xA0;
/// End of the writable scalar map (fs/gs bases at 0x90..0xA0 are read only).
pub const WRITABLE_END: u64 = 0x90;
/// The rip slot.
pub const RIP_SLOT: u64 = 0x80;
/// The rflags slot.
pub const RFLAGS_SLOT: u64 = 0x88;

/// A thread's scalar registers as the map sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    /// rax … r15 in encoding order.
    pub gpr: [u64; 16],
    /// rip (for an image: the address of the next instruction).
    pub rip: u64,
    /// The full rflags value.
    pub rflags: u64,
}

/// The map image of `regs` (0x00..0xA0): GPRs, rip, rflags as a read gives it (RF and VM
/// cleared), fs base, gs base.
pub fn image(regs: &Regs, fs_base: u64, gs_base: u64) -> [u8; IMAGE_LEN] {
    let mut out = [0u8; IMAGE_LEN];
    for (i, g) in regs.gpr.iter().enumerate() {
        out[8 * i..8 * i + 8].copy_from_slice(&g.to_le_bytes());
    }
    out[0x80..0x88].copy_from_slice(&regs.rip.to_le_bytes());
    let flags = regs.rflags & !((1 << 16) | (1 << 17));
    out[0x88..0x90].copy_from_slice(&flags.to_le_bytes());
    out[0x90..0x98].copy_from_slice(&fs_base.to_le_bytes());
    out[0x98..0xA0].copy_from_slice(&gs_base.to_le_bytes());
    out
}

/// Applies a write of `bytes` at map offset `off` to `regs`, byte by byte: GPR bytes replace
/// register bytes, rip bytes replace rip bytes (a jump), rflags bytes change only the
/// [`WRITABLE`] bits they cover. Panics on bytes at or beyond 0x90 (not writable).
pub fn overlay(regs: &mut Regs, off: u64, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        let a = off + i as u64;
        let shift = 8 * (a % 8);
        let put = |v: u64| (v & !(0xFF << shift)) | (u64::from(b) << shift);
        match a {
            0..0x80 => {
                let n = (a / 8) as usize;
                regs.gpr[n] = put(regs.gpr[n]);
            }
            0x80..0x88 => regs.rip = put(regs.rip),
            0x88..0x90 => {
                let mask = WRITABLE & (0xFF << shift);
                regs.rflags = (regs.rflags & !mask) | (put(regs.rflags) & mask);
            }
            _ => panic!("map write at {a:#x} is outside the writable map"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> Regs {
        Regs {
            gpr: std::array::from_fn(|i| 0x0706_0504_0302_0100 + 0x1010_1010_1010_1010 * i as u64),
            rip: 0x1000,
            rflags: 0x246,
        }
    }

    #[test]
    fn a_straddling_write_changes_both_registers() {
        let mut r = regs();
        overlay(&mut r, 7, &[0xAA, 0xBB]);
        assert_eq!(r.gpr[0], 0xAA06_0504_0302_0100);
        assert_eq!(r.gpr[1], 0x1716_1514_1312_11BB);
    }

    #[test]
    fn rflags_writes_change_only_status_and_df() {
        let mut r = regs();
        overlay(&mut r, 0x88, &[0xFF, 0xFF, 0xFF]);
        assert_eq!(r.rflags, 0x246 | 0xCD5);
        overlay(&mut r, 0x89, &[0x00]);
        assert_eq!(r.rflags, (0x246 | 0xCD5) & !0xC00);
    }

    #[test]
    fn the_image_clears_rf_and_vm() {
        let mut r = regs();
        r.rflags |= 3 << 16;
        let img = image(&r, 1, 2);
        assert_eq!(
            u64::from_le_bytes(img[0x88..0x90].try_into().unwrap()),
            0x246
        );
        assert_eq!(img[0x90], 1);
        assert_eq!(img[0x98], 2);
        assert_eq!(img[8], 0x10);
    }
}
