//! `GeneralRegisters`: the general-purpose register file in encoding order (seed 002's shape).

/// The sixteen general-purpose registers, `repr(C)`, in x86 encoding order, so that index `n`
/// is the register that ModRM/REX number `n` names (Intel SDM Vol. 2A §2.1.5) and field offset
/// `8 * n` is the register's offset in the page-0 map.
///
/// Unlike the hypervisor structure this is modelled on, the rsp slot is a real register here:
/// a snapshot of a thread includes its stack pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GeneralRegisters {
    /// Register 0.
    pub rax: u64,
    /// Register 1.
    pub rcx: u64,
    /// Register 2.
    pub rdx: u64,
    /// Register 3.
    pub rbx: u64,
    /// Register 4 (stack pointer).
    pub rsp: u64,
    /// Register 5.
    pub rbp: u64,
    /// Register 6.
    pub rsi: u64,
    /// Register 7.
    pub rdi: u64,
    /// Register 8.
    pub r8: u64,
    /// Register 9.
    pub r9: u64,
    /// Register 10.
    pub r10: u64,
    /// Register 11.
    pub r11: u64,
    /// Register 12.
    pub r12: u64,
    /// Register 13.
    pub r13: u64,
    /// Register 14.
    pub r14: u64,
    /// Register 15.
    pub r15: u64,
}

const _: () = assert!(core::mem::size_of::<GeneralRegisters>() == 128);
const _: () = assert!(core::mem::offset_of!(GeneralRegisters, rsp) == 0x20);
const _: () = assert!(core::mem::offset_of!(GeneralRegisters, r15) == 0x78);

/// The names of the sixteen registers in encoding order.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

impl GeneralRegisters {
    /// Builds the register file from an array in encoding order.
    pub const fn from_array(a: [u64; 16]) -> Self {
        GeneralRegisters {
            rax: a[0],
            rcx: a[1],
            rdx: a[2],
            rbx: a[3],
            rsp: a[4],
            rbp: a[5],
            rsi: a[6],
            rdi: a[7],
            r8: a[8],
            r9: a[9],
            r10: a[10],
            r11: a[11],
            r12: a[12],
            r13: a[13],
            r14: a[14],
            r15: a[15],
        }
    }

    /// The registers as an array in encoding order.
    pub const fn to_array(&self) -> [u64; 16] {
        [
            self.rax, self.rcx, self.rdx, self.rbx, self.rsp, self.rbp, self.rsi, self.rdi,
            self.r8, self.r9, self.r10, self.r11, self.r12, self.r13, self.r14, self.r15,
        ]
    }

    /// The register with encoding number `index`.
    ///
    /// # Panics
    /// If `index >= 16`.
    pub fn get_reg_of_index(&self, index: u8) -> u64 {
        self.to_array()[index as usize]
    }

    /// Sets the register with encoding number `index` to `value`.
    ///
    /// # Panics
    /// If `index >= 16`.
    pub fn set_reg_of_index(&mut self, index: u8, value: u64) {
        let mut a = self.to_array();
        a[index as usize] = value;
        *self = Self::from_array(a);
    }
}
