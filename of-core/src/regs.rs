//! `GeneralRegisters`: the general-purpose register file in encoding order (seed 002's shape).

/// The sixteen general-purpose registers, `repr(C)`, in x86 encoding order, so that index `n`
/// is the register that ModRM/REX number `n` names (Intel SDM Vol. 2A §2.1.5) and field offset
/// `8 * n` is the register's offset in the page-0 map.
///
/// Unlike the hypervisor structure this is modelled on, the rsp slot is a real register here:
/// a snapshot of a thread includes its stack pointer.
///
/// # Examples
///
/// ```
/// use of_core::GeneralRegisters;
/// use of_core::regs::GPR_NAMES;
///
/// let mut g = GeneralRegisters::default();
/// g.rdi = 0xD1;
/// g.set_reg_of_index(9, 0x99); // r9
/// assert_eq!(g.get_reg_of_index(7), 0xD1); // rdi is register 7
/// assert_eq!(g.r9, 0x99);
/// assert_eq!(GPR_NAMES[9], "r9");
/// // Field offset 8 * n is the register's offset in the map.
/// assert_eq!(core::mem::offset_of!(GeneralRegisters, rdi), 7 * 8);
/// assert_eq!(core::mem::size_of::<GeneralRegisters>(), 16 * 8);
/// ```
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
///
/// # Examples
///
/// ```
/// use of_core::map::Slot;
/// use of_core::regs::GPR_NAMES;
///
/// assert_eq!(GPR_NAMES[4], "rsp");
/// // The name of the register at a map offset:
/// let name = |offset| match Slot::at(offset) {
///     Some((Slot::Gpr(n), _)) => GPR_NAMES[n as usize],
///     _ => "?",
/// };
/// assert_eq!(name(0x2C), "rbp"); // 0x28..0x30
/// assert_eq!(name(0x78), "r15");
/// ```
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

impl GeneralRegisters {
    /// Builds the register file from an array in encoding order.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::GeneralRegisters;
    ///
    /// let g = GeneralRegisters::from_array(core::array::from_fn(|i| 100 + i as u64));
    /// assert_eq!((g.rax, g.rcx, g.rsp, g.r8, g.r15), (100, 101, 104, 108, 115));
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::GeneralRegisters;
    ///
    /// let g = GeneralRegisters { rbx: 3, r12: 12, ..Default::default() };
    /// let a = g.to_array();
    /// assert_eq!((a[3], a[12]), (3, 12));
    /// assert_eq!(GeneralRegisters::from_array(a), g);
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::GeneralRegisters;
    ///
    /// let g = GeneralRegisters { rsi: 0x51, r14: 0xE, ..Default::default() };
    /// assert_eq!(g.get_reg_of_index(6), 0x51);
    /// assert_eq!(g.get_reg_of_index(14), 0xE);
    /// assert!(std::panic::catch_unwind(|| g.get_reg_of_index(16)).is_err());
    /// ```
    pub fn get_reg_of_index(&self, index: u8) -> u64 {
        self.to_array()[index as usize]
    }

    /// Sets the register with encoding number `index` to `value`.
    ///
    /// # Panics
    /// If `index >= 16`.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::GeneralRegisters;
    ///
    /// let mut g = GeneralRegisters::default();
    /// g.set_reg_of_index(2, 0xD0); // rdx
    /// g.set_reg_of_index(13, 0x0D); // r13
    /// assert_eq!((g.rdx, g.r13), (0xD0, 0x0D));
    /// assert_eq!(g.to_array().iter().filter(|&&v| v != 0).count(), 2);
    /// ```
    pub fn set_reg_of_index(&mut self, index: u8, value: u64) {
        let mut a = self.to_array();
        a[index as usize] = value;
        *self = Self::from_array(a);
    }
}
