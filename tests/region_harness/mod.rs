//! What tests/regions.rs and tests/regions_patched.rs share: a plain-memory device, random
//! states, the instruction forms, and a harness that runs one instruction from a state block.
#![allow(dead_code)]

use difftest::forms::{self, Category};
use iced_x86::code_asm::*;
use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Mnemonic, OpKind, Register};
use of::region::Device;

/// Bytes of the buffer and of the region.
pub const LEN: usize = 256;

/// A device that is plain memory, counting its accesses.
pub struct Memory {
    pub bytes: [u8; LEN],
    pub reads: u64,
    pub writes: u64,
}

impl Device for Memory {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let o = offset as usize;
        data.copy_from_slice(&self.bytes[o..o + data.len()]);
        self.reads += 1;
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let o = offset as usize;
        self.bytes[o..o + data.len()].copy_from_slice(data);
        self.writes += 1;
    }
}

/// The state block the harness loads and stores.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub gpr: [u64; 16],
    pub flags: u64,
    pub xmm: [[u8; 16]; 16],
}

pub const FLAGS: u64 = 0x8D5 | 0x400;

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The integer forms with an explicit memory operand, turned into `[r15 + disp]` instances.
pub fn integer_forms() -> Vec<Instruction> {
    let features = difftest::cpu::Features::host();
    let mut out = Vec::new();
    for code in forms::selection() {
        let (cat, _) = forms::classify(code, &features);
        if cat != Category::Integer {
            continue;
        }
        let Some(i) = forms::sample(code) else {
            continue;
        };
        let Some(mem) = (0..i.op_count()).find(|&k| i.op_kind(k) == OpKind::Memory) else {
            continue;
        };
        let _ = mem;
        let names_bad = (0..i.op_count()).any(|k| {
            i.op_kind(k) == OpKind::Register && {
                let r = i.op_register(k).full_register();
                r == Register::RSP || r == Register::R15
            }
        });
        let op = code.op_code();
        if names_bad
            || op.is_stack_instruction()
            || i.is_string_instruction()
            || i.memory_size().size() == 0
            || matches!(
                i.mnemonic(),
                Mnemonic::Div
                    | Mnemonic::Idiv
                    | Mnemonic::Xlatb
                    | Mnemonic::Bound
                    | Mnemonic::Lea
                    | Mnemonic::Nop
                    | Mnemonic::Lar
                    | Mnemonic::Lsl
                    | Mnemonic::Verr
                    | Mnemonic::Verw
                    | Mnemonic::Cmpxchg16b
                    | Mnemonic::Cmpxchg8b
            )
            || (matches!(
                i.mnemonic(),
                Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
            ) && i.op1_kind() == OpKind::Register)
            || i.is_jmp_near_indirect()
            || i.is_call_near_indirect()
        {
            continue;
        }
        out.push(i);
    }
    out
}

/// Vector loads and stores on `[r15 + disp]` (legacy SSE and VEX.128 on xmm registers).
pub fn vector_forms() -> Vec<Instruction> {
    let mem = MemoryOperand::with_base_displ(Register::R15, 0);
    let mut v = vec![
        Instruction::with2(Code::Movdqu_xmm_xmmm128, Register::XMM1, mem).unwrap(),
        Instruction::with2(Code::Movdqu_xmmm128_xmm, mem, Register::XMM2).unwrap(),
        Instruction::with2(Code::Movq_xmm_xmmm64, Register::XMM3, mem).unwrap(),
        Instruction::with2(Code::Paddd_xmm_xmmm128, Register::XMM4, mem).unwrap(),
        Instruction::with2(Code::Pcmpeqb_xmm_xmmm128, Register::XMM5, mem).unwrap(),
        Instruction::with2(Code::Movd_rm32_xmm, mem, Register::XMM6).unwrap(),
    ];
    if std::arch::is_x86_feature_detected!("avx") {
        v.push(
            Instruction::with3(
                Code::VEX_Vpaddq_xmm_xmm_xmmm128,
                Register::XMM7,
                Register::XMM8,
                mem,
            )
            .unwrap(),
        );
        v.push(Instruction::with2(Code::VEX_Vmovdqu_xmmm128_xmm, mem, Register::XMM9).unwrap());
    }
    v
}

pub fn encode(i: &Instruction, ip: u64) -> Option<Vec<u8>> {
    let mut e = Encoder::new(64);
    e.encode(i, ip).ok()?;
    Some(e.take_buffer())
}

pub fn random_block(r: &mut Rng, base: u64) -> Block {
    let mut b = Block {
        gpr: [0; 16],
        flags: (r.next() & 0x8D5) | 0x202,
        xmm: [[0; 16]; 16],
    };
    for (i, g) in b.gpr.iter_mut().enumerate() {
        *g = match r.below(4) {
            0 => r.below(256),
            1 => r.next() | (1 << 63),
            _ => r.next(),
        };
        if i == 15 {
            *g = base;
        }
    }
    for x in b.xmm.iter_mut() {
        for c in x.chunks_mut(8) {
            c.copy_from_slice(&r.next().to_le_bytes());
        }
    }
    b
}

/// A harness whose code does not change between runs (the instruction stays at one address, so
/// site patching can learn it): `entry(input, output)`, the instruction at [`Fixed::site`].
pub struct Fixed {
    page: *mut u8,
    site: u64,
}

impl Fixed {
    /// A fresh read-write-execute page of 4096 bytes (a `Fixed` unmaps its own; other tests
    /// leak theirs).
    pub fn raw_page() -> *mut u8 {
        // SAFETY: an anonymous private mapping of our own.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        page.cast()
    }

    /// Writes the harness around `instr`, encoded for [`Fixed::site`] by `encode(site)`.
    pub fn new(encode: impl Fn(u64) -> Option<Vec<u8>>) -> Option<Fixed> {
        let page = Self::raw_page();
        let at = page as u64;
        let gprs = [
            rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
        ];
        let xmms = [
            xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
            xmm14, xmm15,
        ];
        let mut a = CodeAssembler::new(64).unwrap();
        // rdi = input, rsi = output. Save the callee-saved registers and the output pointer.
        for r in [rbx, rbp, r12, r13, r14, r15] {
            a.push(r).unwrap();
        }
        a.push(rsi).unwrap();
        a.mov(rax, rdi).unwrap();
        for (i, x) in xmms.iter().enumerate() {
            a.movdqu(*x, xmmword_ptr(rax + 128 + 8 + 16 * i as i32))
                .unwrap();
        }
        a.push(qword_ptr(rax + 128)).unwrap();
        a.popfq().unwrap();
        for (i, r) in gprs.iter().enumerate().rev() {
            if i != 4 {
                a.mov(*r, qword_ptr(rax + 8 * i as i32)).unwrap();
            }
        }
        let before = a.assemble(at).unwrap();
        let site = at + before.len() as u64;
        let instr = encode(site)?;
        let mut b = CodeAssembler::new(64).unwrap();
        // After the instruction: rax to the stack, rax = the output pointer, store the rest.
        b.push(rax).unwrap();
        b.mov(rax, qword_ptr(rsp + 8)).unwrap();
        for (i, r) in gprs.iter().enumerate() {
            if i != 0 && i != 4 {
                b.mov(qword_ptr(rax + 8 * i as i32), *r).unwrap();
            }
        }
        b.pop(rcx).unwrap();
        b.mov(qword_ptr(rax), rcx).unwrap();
        b.pushfq().unwrap();
        b.pop(rcx).unwrap();
        b.mov(qword_ptr(rax + 128), rcx).unwrap();
        for (i, x) in xmms.iter().enumerate() {
            b.movdqu(xmmword_ptr(rax + 128 + 8 + 16 * i as i32), *x)
                .unwrap();
        }
        b.cld().unwrap();
        b.pop(rcx).unwrap(); // the output pointer
        for r in [r15, r14, r13, r12, rbp, rbx] {
            b.pop(r).unwrap();
        }
        b.ret().unwrap();
        let after = b.assemble(site + instr.len() as u64).unwrap();
        assert!(before.len() + instr.len() + after.len() <= 4096);
        // SAFETY: the page is ours and large enough (checked).
        unsafe {
            let mut p = page.cast::<u8>();
            for part in [&before[..], &instr[..], &after[..]] {
                std::ptr::copy_nonoverlapping(part.as_ptr(), p, part.len());
                p = p.add(part.len());
            }
        }
        Some(Fixed {
            page: page.cast(),
            site,
        })
    }

    /// The instruction's address.
    pub fn site(&self) -> u64 {
        self.site
    }

    /// Runs from `input`; returns the state after the instruction.
    pub fn call(&self, input: &Block) -> Block {
        let mut out = *input;
        // SAFETY: the page holds the harness written by `new`.
        unsafe {
            let f: extern "sysv64" fn(*const Block, *mut Block) = std::mem::transmute(self.page);
            f(input, &mut out);
        }
        out
    }
}

impl Drop for Fixed {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.page.cast(), 4096) };
    }
}

/// A fresh plain-memory device.
pub fn memory() -> Memory {
    Memory {
        bytes: [0; LEN],
        reads: 0,
        writes: 0,
    }
}

/// What differs between the run on ordinary memory (`want`, `buf`) and the run on the region
/// (`got`, the device's bytes `dev`): registers but rsp and r15 (the operand's base), status
/// flags and DF, xmm registers, memory.
pub fn differences(want: &Block, got: &Block, buf: &[u8; LEN], dev: &[u8; LEN]) -> Vec<String> {
    let mut diffs = Vec::new();
    for i in 0..16 {
        if want.gpr[i] != got.gpr[i] && i != 4 && i != 15 {
            diffs.push(format!("gpr{i} {:#x} vs {:#x}", want.gpr[i], got.gpr[i]));
        }
    }
    if want.flags & FLAGS != got.flags & FLAGS {
        diffs.push(format!(
            "flags {:#x} vs {:#x}",
            want.flags & FLAGS,
            got.flags & FLAGS
        ));
    }
    if want.xmm != got.xmm {
        diffs.push(String::from("xmm registers differ"));
    }
    if dev[..] != buf[..] {
        let first = (0..LEN).find(|&k| dev[k] != buf[k]).unwrap();
        diffs.push(format!("memory differs first at {first:#x}"));
    }
    diffs
}

/// `mov eax, dword ptr [rdx + 4]` with a 32-bit displacement (6 bytes: long enough for the
/// jump without a pun).
pub fn disp32_load(a: &mut iced_x86::code_asm::CodeAssembler) {
    let m = iced_x86::MemoryOperand::new(
        Register::RDX,
        Register::None,
        1,
        4,
        8,
        false,
        Register::None,
    );
    let i = iced_x86::Instruction::with2(iced_x86::Code::Mov_r32_rm32, Register::EAX, m).unwrap();
    a.add_instruction(i).unwrap();
}

/// Assembles `a` into a fresh read-write-execute page (leaked) and returns the page.
pub fn place(a: &mut iced_x86::code_asm::CodeAssembler) -> *mut u8 {
    let page = Fixed::raw_page();
    let code = a.assemble(page as u64).unwrap();
    assert!(code.len() <= 4096);
    // SAFETY: our read-write-execute page, large enough (checked).
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len()) };
    page
}

/// Installs `of` and turns site patching on (threshold 2). False, after saying so, when the
/// kernel cannot patch: the caller has nothing to test.
pub fn patching_on() -> bool {
    of::map_registers().unwrap();
    if !of::engine::signal::set_patching(true) {
        eprintln!("site patching is not available on this kernel: nothing to test");
        return false;
    }
    of::engine::patch::set_threshold(2);
    true
}
