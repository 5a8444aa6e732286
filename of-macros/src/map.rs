//! The register map as the macro sees it: the fields of `Registers`, the page-0 bytes each one
//! names, who may write them, and how the assembler spells their widths.

/// Who may write a view.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Only registers inline asm can declare clobbered: writes are safe.
    Plain,
    /// rbx/rsp/rbp bytes, rip, rflags, mxcsr: writes need `unsafe`.
    Special,
    /// fs/gs base: no writes.
    ReadOnly,
}

/// A register view the macro fuses: map offset, size in bytes, access class.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub(crate) off: u32,
    pub(crate) size: u32,
    pub(crate) class: Class,
}

/// The 64-bit general-purpose registers in encoding order (the index is the register number).
pub(crate) const GPR64: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
const GPR32: [&str; 16] = [
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "r8d", "r9d", "r10d", "r11d", "r12d",
    "r13d", "r14d", "r15d",
];
const GPR16: [&str; 16] = [
    "ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8w", "r9w", "r10w", "r11w", "r12w", "r13w",
    "r14w", "r15w",
];
const GPR8: [&str; 16] = [
    "al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil", "r8b", "r9b", "r10b", "r11b", "r12b",
    "r13b", "r14b", "r15b",
];
const XMM: [&str; 16] = [
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
    "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
];

/// Every field of `Registers`, in map order.
pub(crate) fn all_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = Vec::new();
    for t in [GPR64, GPR32, GPR16, GPR8, XMM] {
        v.extend(t);
    }
    v.extend([
        "ah", "ch", "dh", "bh", "rip", "rflags", "mxcsr", "fs_base", "gs_base",
    ]);
    v
}

/// The fused view called `name`, if any (xmm fields are known but not fused).
pub(crate) fn view(name: &str) -> Option<View> {
    let class = |i: usize| {
        if matches!(i, 3..=5) {
            Class::Special
        } else {
            Class::Plain
        }
    };
    for (table, size) in [(GPR64, 8), (GPR32, 4), (GPR16, 2), (GPR8, 1)] {
        if let Some(i) = table.iter().position(|n| *n == name) {
            return Some(View {
                off: 8 * i as u32,
                size,
                class: class(i),
            });
        }
    }
    let (off, size, class) = match name {
        "ah" => (0x01, 1, Class::Plain),
        "ch" => (0x09, 1, Class::Plain),
        "dh" => (0x11, 1, Class::Plain),
        "bh" => (0x19, 1, Class::Special),
        "rip" => (0x80, 8, Class::Special),
        "rflags" => (0x88, 8, Class::Special),
        "fs_base" => (0x90, 8, Class::ReadOnly),
        "gs_base" => (0x98, 8, Class::ReadOnly),
        "mxcsr" => (0x200, 4, Class::Special),
        _ => return None,
    };
    Some(View { off, size, class })
}

/// Whether `name` is one of the xmm fields (`load`/`store` only, not fused).
pub(crate) fn is_xmm(name: &str) -> bool {
    XMM.contains(&name)
}

/// Whether `name` is a field of `Registers` at all.
pub(crate) fn is_field(name: &str) -> bool {
    view(name).is_some() || is_xmm(name)
}

/// The general-purpose registers (encoding numbers) whose bytes `v` covers.
pub(crate) fn covered(v: View) -> Vec<usize> {
    if v.off >= 0x80 {
        return vec![];
    }
    (v.off / 8..=(v.off + v.size - 1) / 8)
        .map(|n| n as usize)
        .collect()
}

/// rcx, which holds a run-time shift count (in cl).
pub(crate) const RCX: usize = 1;

/// Whether register `n` is rbx, rsp or rbp, which Rust's inline asm cannot declare clobbered.
pub(crate) fn undeclarable(n: usize) -> bool {
    matches!(n, 3..=5)
}

/// Operand registers the macro may pin values to, in preference order (encoding numbers):
/// r11 and r10 (no function arguments), the other caller-saved registers, then the
/// callee-saved r12–r15 (using them costs a push/pop in the function), rcx last (shift counts).
pub(crate) const POOL: [usize; 13] = [11, 10, 9, 8, 6, 7, 2, 0, 12, 13, 14, 15, 1];

/// The assembler's name of register `n` at `size` bytes.
pub(crate) fn reg_name(n: usize, size: u32) -> &'static str {
    match size {
        8 => GPR64[n],
        4 => GPR32[n],
        2 => GPR16[n],
        _ => GPR8[n],
    }
}

/// The assembler's operand-size keyword for `size` bytes (`qword ptr`, …).
pub(crate) fn ptr(size: u32) -> &'static str {
    match size {
        8 => "qword",
        4 => "dword",
        2 => "word",
        _ => "byte",
    }
}

/// The Rust type a view of `size` bytes reads and writes.
pub(crate) fn rust_type(size: u32) -> &'static str {
    match size {
        8 => "u64",
        4 => "u32",
        2 => "u16",
        _ => "u8",
    }
}
