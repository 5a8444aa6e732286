//! Trapped regions (issue 15, SPEC §7): instructions on a region served by a device.
//!
//! The differential test runs random instruction forms — every integer form `difftest`
//! selects that has an explicit memory operand (arithmetic, logic, moves, shifts, bit tests,
//! xchg/xadd/cmpxchg with and without `lock`, set/cmov, mul/imul …), string instructions with
//! and without `rep` in both directions, and vector loads and stores — twice from the same
//! random state: once on an ordinary buffer, once on a region whose device is plain memory
//! holding the same bytes. Registers, status flags and DF, and the memory (the buffer vs the
//! device's bytes) must agree. Also: threads hammering one region with `lock add`.

use difftest::forms::{self, Category};
use iced_x86::code_asm::*;
use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Mnemonic, OpKind, Register};
use of::region::{Device, Region};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of the buffer and of the region.
const LEN: usize = 256;

/// A device that is plain memory, counting its accesses.
struct Memory {
    bytes: [u8; LEN],
    reads: u64,
    writes: u64,
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
struct Block {
    gpr: [u64; 16],
    flags: u64,
    xmm: [[u8; 16]; 16],
}

const FLAGS: u64 = 0x8D5 | 0x400;

/// An executable page holding `entry(block_in, block_out)` around one instruction.
struct Harness {
    page: *mut u8,
}

impl Harness {
    fn new() -> Harness {
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
        Harness { page: page.cast() }
    }

    /// Runs `instr` (encoded for this page) from `input`; returns the state after it.
    fn run(&self, instr: &[u8], input: &Block) -> Block {
        let at = self.page as u64;
        let mut out = *input;
        let mut a = CodeAssembler::new(64).unwrap();
        let gprs = [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
        let xmms = [
            xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
            xmm14, xmm15,
        ];
        let inp = input as *const Block as u64;
        let outp = &mut out as *mut Block as u64;
        // Save the callee-saved registers, load every register but rsp from `input`.
        for r in [rbx, rbp, r12, r13, r14, r15] {
            a.push(r).unwrap();
        }
        a.mov(rax, inp).unwrap();
        for (i, x) in xmms.iter().enumerate() {
            a.movdqu(*x, xmmword_ptr(rax + 128 + 8 + 16 * i as i32)).unwrap();
        }
        a.push(qword_ptr(rax + 128)).unwrap();
        a.popfq().unwrap();
        for (i, r) in gprs.iter().enumerate().rev() {
            if i != 4 {
                a.mov(*r, qword_ptr(rax + 8 * i as i32)).unwrap();
            }
        }
        let before = a.assemble(at).unwrap();
        let mut b = CodeAssembler::new(64).unwrap();
        // After the instruction: store every register but rsp to `out`.
        b.push(rax).unwrap();
        b.mov(rax, outp).unwrap();
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
            b.movdqu(xmmword_ptr(rax + 128 + 8 + 16 * i as i32), *x).unwrap();
        }
        b.cld().unwrap();
        for r in [r15, r14, r13, r12, rbp, rbx] {
            b.pop(r).unwrap();
        }
        b.ret().unwrap();
        let after_at = at + (before.len() + instr.len()) as u64;
        let after = b.assemble(after_at).unwrap();
        // SAFETY: the page is ours and large enough (checked).
        unsafe {
            let mut p = self.page;
            assert!(before.len() + instr.len() + after.len() <= 4096);
            for part in [&before[..], instr, &after[..]] {
                std::ptr::copy_nonoverlapping(part.as_ptr(), p, part.len());
                p = p.add(part.len());
            }
            let f: extern "sysv64" fn() = std::mem::transmute(self.page);
            f();
        }
        out
    }

    fn code_at(&self, before_len: usize) -> u64 {
        self.page as u64 + before_len as u64
    }
}

/// The length of the harness's code before the instruction (for encoding it at its address).
fn prologue_len(h: &Harness) -> usize {
    // Assemble the same prologue once and measure it.
    let mut a = CodeAssembler::new(64).unwrap();
    let gprs = [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
    for r in [rbx, rbp, r12, r13, r14, r15] {
        a.push(r).unwrap();
    }
    a.mov(rax, 0x1122_3344_5566_7788u64).unwrap();
    for i in 0..16 {
        let x = [
            xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
            xmm14, xmm15,
        ][i];
        a.movdqu(x, xmmword_ptr(rax + 128 + 8 + 16 * i as i32)).unwrap();
    }
    a.push(qword_ptr(rax + 128)).unwrap();
    a.popfq().unwrap();
    for (i, r) in gprs.iter().enumerate().rev() {
        if i != 4 {
            a.mov(*r, qword_ptr(rax + 8 * i as i32)).unwrap();
        }
    }
    a.assemble(h.page as u64).unwrap().len()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The integer forms with an explicit memory operand, turned into `[r15 + disp]` instances.
fn integer_forms() -> Vec<Instruction> {
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
fn vector_forms() -> Vec<Instruction> {
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
            Instruction::with3(Code::VEX_Vpaddq_xmm_xmm_xmmm128, Register::XMM7, Register::XMM8, mem)
                .unwrap(),
        );
        v.push(Instruction::with2(Code::VEX_Vmovdqu_xmmm128_xmm, mem, Register::XMM9).unwrap());
    }
    v
}

fn encode(i: &Instruction, ip: u64) -> Option<Vec<u8>> {
    let mut e = Encoder::new(64);
    e.encode(i, ip).ok()?;
    Some(e.take_buffer())
}

fn random_block(r: &mut Rng, base: u64) -> Block {
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

/// Runs `instr` once on `buf` (r15 = its address) and once on the region (r15 = its address)
/// from the same state; returns the differences.
fn compare(
    h: &Harness,
    pro: usize,
    instr: &Instruction,
    r: &mut Rng,
    buf: &mut [u8; LEN],
    region: &Region,
) -> Result<(), String> {
    let bytes0: Vec<u8> = (0..LEN).map(|_| r.next() as u8).collect();
    let state = random_block(r, 0);
    let at = h.code_at(pro);
    let Some(code) = encode(instr, at) else {
        return Ok(());
    };
    buf.copy_from_slice(&bytes0);
    region.with_device(|d: &mut Memory| d.bytes.copy_from_slice(&bytes0));
    let mut native_in = state;
    native_in.gpr[15] = buf.as_mut_ptr() as u64;
    let mut region_in = state;
    region_in.gpr[15] = region.as_ptr() as u64;
    let mut want = h.run(&code, &native_in);
    let got = h.run(&code, &region_in);
    want.gpr[15] = region_in.gpr[15];
    let mut diffs = Vec::new();
    for i in 0..16 {
        if want.gpr[i] != got.gpr[i] && i != 4 {
            diffs.push(format!("gpr{i} {:#x} vs {:#x}", want.gpr[i], got.gpr[i]));
        }
    }
    if want.flags & FLAGS != got.flags & FLAGS {
        diffs.push(format!("flags {:#x} vs {:#x}", want.flags & FLAGS, got.flags & FLAGS));
    }
    if want.xmm != got.xmm {
        diffs.push(String::from("xmm registers differ"));
    }
    let dev = region.with_device(|d: &mut Memory| d.bytes);
    if dev[..] != buf[..] {
        let first = (0..LEN).find(|&k| dev[k] != buf[k]).unwrap();
        diffs.push(format!("memory differs first at {first:#x}"));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!("`{instr}`: {}", diffs.join(", ")))
    }
}

#[test]
fn instruction_forms_on_a_region_match_ordinary_memory() {
    of::map_registers().unwrap();
    let region = Region::new(
        LEN,
        Memory {
            bytes: [0; LEN],
            reads: 0,
            writes: 0,
        },
    )
    .unwrap();
    let h = Harness::new();
    let pro = prologue_len(&h);
    let mut buf = Box::new([0u8; LEN]);
    let mut r = Rng(0x5EED_0015);
    let mut failures = Vec::new();
    let mut cases = 0;
    let forms: Vec<Instruction> = integer_forms().into_iter().chain(vector_forms()).collect();
    assert!(forms.len() > 300, "only {} forms", forms.len());
    for f in &forms {
        for _ in 0..8 {
            let mut i = *f;
            let size = i.memory_size().size().max(1) as u64;
            let mut disp = r.below(LEN as u64 - size + 1) as i64;
            if size == 16 && i.code().encoding() == iced_x86::EncodingKind::Legacy {
                disp &= !15; // legacy SSE: #GP when misaligned, on both sides
            }
            i.set_memory_base(Register::R15);
            i.set_memory_index(Register::None);
            i.set_memory_displacement64(disp as u64);
            i.set_memory_displ_size(if disp < 128 { 1 } else { 4 });
            i.set_segment_prefix(Register::None);
            if r.below(4) == 0 && i.op_code().can_use_lock_prefix() {
                i.set_has_lock_prefix(true);
            }
            cases += 1;
            if std::env::var_os("OF_REGIONS_TRACE").is_some() {
                eprintln!("{i}");
            }
            if let Err(e) = compare(&h, pro, &i, &mut r, &mut buf, &region) {
                failures.push(e);
            }
        }
    }
    let (reads, writes) = region.with_device(|d: &mut Memory| (d.reads, d.writes));
    eprintln!(
        "regions: {} forms, {cases} cases, {} mismatches; the device served {reads} reads and {writes} writes",
        forms.len(),
        failures.len()
    );
    for f in failures.iter().take(20) {
        eprintln!("  {f}");
    }
    assert!(failures.is_empty());
    assert!(reads > 0 && writes > 0);
}

/// String instructions with and without `rep`, in both directions, between the region and
/// ordinary memory.
#[test]
fn string_instructions_on_a_region_match_ordinary_memory() {
    of::map_registers().unwrap();
    let region = Region::new(
        LEN,
        Memory {
            bytes: [0; LEN],
            reads: 0,
            writes: 0,
        },
    )
    .unwrap();
    let h = Harness::new();
    let pro = prologue_len(&h);
    let mut buf = Box::new([0u8; LEN]);
    let mut other = Box::new([0u8; LEN]);
    let mut r = Rng(0x57A1_0015);
    let codes = [
        Code::Movsb_m8_m8,
        Code::Movsw_m16_m16,
        Code::Movsd_m32_m32,
        Code::Movsq_m64_m64,
        Code::Stosb_m8_AL,
        Code::Stosq_m64_RAX,
        Code::Lodsb_AL_m8,
        Code::Lodsq_RAX_m64,
        Code::Cmpsb_m8_m8,
        Code::Cmpsd_m32_m32,
        Code::Scasb_AL_m8,
        Code::Scasq_RAX_m64,
    ];
    let mut failures = Vec::new();
    let mut cases = 0;
    for &c in &codes {
        for k in 0..24 {
            let rep = match k % 3 {
                0 => iced_x86::RepPrefixKind::None,
                1 => iced_x86::RepPrefixKind::Repe,
                _ => iced_x86::RepPrefixKind::Repne,
            };
            let none = Register::None;
            let i = match c {
                Code::Movsb_m8_m8 => Instruction::with_movsb(64, none, rep),
                Code::Movsw_m16_m16 => Instruction::with_movsw(64, none, rep),
                Code::Movsd_m32_m32 => Instruction::with_movsd(64, none, rep),
                Code::Movsq_m64_m64 => Instruction::with_movsq(64, none, rep),
                Code::Stosb_m8_AL => Instruction::with_stosb(64, rep),
                Code::Stosq_m64_RAX => Instruction::with_stosq(64, rep),
                Code::Lodsb_AL_m8 => Instruction::with_lodsb(64, none, rep),
                Code::Lodsq_RAX_m64 => Instruction::with_lodsq(64, none, rep),
                Code::Cmpsb_m8_m8 => Instruction::with_cmpsb(64, none, rep),
                Code::Cmpsd_m32_m32 => Instruction::with_cmpsd(64, none, rep),
                Code::Scasb_AL_m8 => Instruction::with_scasb(64, rep),
                _ => Instruction::with_scasq(64, rep),
            }
            .unwrap();
            let Some(code) = encode(&i, h.code_at(pro)) else {
                continue;
            };
            let bytes0: Vec<u8> = (0..LEN).map(|_| r.next() as u8).collect();
            let bytes1: Vec<u8> = (0..LEN).map(|_| r.next() as u8).collect();
            buf.copy_from_slice(&bytes0);
            other.copy_from_slice(&bytes1);
            region.with_device(|d: &mut Memory| d.bytes.copy_from_slice(&bytes0));
            let mut state = random_block(&mut r, 0);
            let down = r.below(2) == 1;
            if down {
                state.flags |= 0x400;
            } else {
                state.flags &= !0x400;
            }
            let count = r.below(12);
            state.gpr[1] = count; // rcx
            // rsi and rdi: one in the region (or buffer), one in `other`, 96 bytes in.
            let region_is_source = r.below(2) == 0;
            let (mut native_in, mut region_in) = (state, state);
            let other_at = other.as_mut_ptr() as u64 + 96;
            let (src_n, dst_n, src_r, dst_r) = if region_is_source {
                (buf.as_mut_ptr() as u64 + 96, other_at, region.as_ptr() as u64 + 96, other_at)
            } else {
                (other_at, buf.as_mut_ptr() as u64 + 96, other_at, region.as_ptr() as u64 + 96)
            };
            native_in.gpr[6] = src_n;
            native_in.gpr[7] = dst_n;
            region_in.gpr[6] = src_r;
            region_in.gpr[7] = dst_r;
            // The ordinary side must start equal in both runs.
            let want = h.run(&code, &native_in);
            let other_after_native: Vec<u8> = other.to_vec();
            other.copy_from_slice(&bytes1);
            let got = h.run(&code, &region_in);
            cases += 1;
            let mut diffs = Vec::new();
            for g in [0usize, 1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14] {
                if want.gpr[g] != got.gpr[g] {
                    diffs.push(format!("gpr{g} {:#x} vs {:#x}", want.gpr[g], got.gpr[g]));
                }
            }
            // rsi/rdi moved by the same amounts.
            for g in [6usize, 7] {
                let dn = want.gpr[g].wrapping_sub(native_in.gpr[g]);
                let dr = got.gpr[g].wrapping_sub(region_in.gpr[g]);
                if dn != dr {
                    diffs.push(format!("gpr{g} moved {dn:#x} vs {dr:#x}"));
                }
            }
            if want.flags & FLAGS != got.flags & FLAGS {
                diffs.push(format!("flags {:#x} vs {:#x}", want.flags & FLAGS, got.flags & FLAGS));
            }
            let dev = region.with_device(|d: &mut Memory| d.bytes);
            if dev[..] != buf[..] {
                diffs.push(String::from("region bytes differ"));
            }
            if other[..] != other_after_native[..] {
                diffs.push(String::from("ordinary bytes differ"));
            }
            if !diffs.is_empty() {
                failures.push(format!(
                    "`{i}` rcx {count} df {down} region {}: {}",
                    if region_is_source { "source" } else { "destination" },
                    diffs.join(", ")
                ));
            }
        }
    }
    eprintln!("regions, strings: {cases} cases, {} mismatches", failures.len());
    for f in failures.iter().take(20) {
        eprintln!("  {f}");
    }
    assert!(failures.is_empty());
}

/// Threads hammering one region with `lock add`: the total is exact.
#[test]
fn threads_hammering_a_region_with_lock_add_get_exact_totals() {
    of::map_registers().unwrap();
    let region = std::sync::Arc::new(
        Region::new(
            64,
            Memory {
                bytes: [0; LEN],
                reads: 0,
                writes: 0,
            },
        )
        .unwrap(),
    );
    const THREADS: u64 = 8;
    const EACH: u64 = 2_000;
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let region = region.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let p = region.as_ptr() as u64;
                for _ in 0..EACH {
                    // SAFETY: an 8-byte locked add inside the region (offsets 8 and 16).
                    unsafe {
                        std::arch::asm!(
                            "lock add qword ptr [{p} + 8], 1",
                            "lock xadd qword ptr [{p} + 16], {one}",
                            p = in(reg) p,
                            one = inout(reg) 1u64 => _,
                        )
                    };
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (a, b) = region.with_device(|d: &mut Memory| {
        (
            u64::from_le_bytes(d.bytes[8..16].try_into().unwrap()),
            u64::from_le_bytes(d.bytes[16..24].try_into().unwrap()),
        )
    });
    assert_eq!((a, b), (THREADS * EACH, THREADS * EACH));
}
