//! Criterion benchmarks of the engine's hot paths, without faults: what `of`'s SIGSEGV handler
//! does once the kernel has delivered the fault (decode, the decoded-instruction cache,
//! classification, the ownership check, emulation of the common forms on an in-memory
//! [`RegisterFile`]) and what run-ahead does after it (predecode and execution of the following
//! instructions, the look-ahead of [`reaches_map`]).
//!
//! ```text
//! cargo bench -p of-core                         # everything, about a second per benchmark
//! cargo bench -p of-core -- emulate/mov          # only the benchmarks whose id contains this
//! cargo bench -p of-core -- --measurement-time 5 # longer, steadier measurements
//! ```
//!
//! The cost of a real fault (the kernel's delivery and return, which dominates) is measured by
//! `cargo run --release --example bench` in the `of` crate; `docs/benchmarks.md` has the
//! figures of both. EVEX (AVX-512) forms are benchmarked only where the CPU has AVX-512, VEX
//! ones only where it has AVX.

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use iced_x86::code_asm::*;
use iced_x86::{ConstantOffsets, Instruction};
use of_core::emulate::runahead::{self, CodeSource, reaches_map};
use of_core::emulate::{check_ownership, operands, table};
use of_core::{RegisterFile, cpu, decode, emulate, icache};
use std::hint::black_box;
use std::time::Duration;

/// Address every benchmarked instruction is decoded and emulated at.
const RIP: u64 = 0x40_0000;

/// One instruction form: its bytes, decoded, and the map address of its operand (the fault
/// address the handler would be given).
struct Form {
    name: &'static str,
    bytes: Vec<u8>,
    instr: Instruction,
    offsets: ConstantOffsets,
    fault: u64,
}

/// Assembles one instruction at [`RIP`] with iced-x86's code assembler.
fn assemble(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).expect("64-bit assembler");
    f(&mut a).expect("valid instruction");
    a.assemble(RIP).expect("encodable instruction")
}

/// A form whose map operand is at `fault`, checked to emulate on a default register file.
fn form(
    name: &'static str,
    fault: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Form {
    let bytes = assemble(f);
    let (instr, offsets) = decode::decode(&bytes, RIP).expect("decodable");
    assert_eq!(instr.len(), bytes.len(), "{name}: one instruction");
    let mut m = machine();
    emulate(&mut m, &instr, &bytes, &offsets, Some(fault))
        .unwrap_or_else(|e| panic!("{name}: not emulated: {e:?}"));
    Form {
        name,
        bytes,
        instr,
        offsets,
        fault,
    }
}

/// A register file with recognisable, non-zero values, at [`RIP`].
fn machine() -> RegisterFile {
    let mut m = RegisterFile {
        rip: RIP,
        ..RegisterFile::default()
    };
    for (i, g) in m.gpr.iter_mut().enumerate() {
        *g = 0x0101_0101_0101_0101u64.wrapping_mul(i as u64 + 1);
    }
    m
}

/// The common forms: moves of every size at aligned and register-straddling offsets, the ALU
/// read-modify-writes, the locked exchanges, and vector loads the CPU can run.
fn common_forms() -> Vec<Form> {
    let cpu = cpu::get();
    let mut v = vec![
        // Loads: the map offset 0x40 is r8, 0x48 r9; 0x43, 0x46 and 0x47 straddle both.
        form("mov_load/1", 0x41, |a| a.mov(cl, byte_ptr(0x41))),
        form("mov_load/2_aligned", 0x42, |a| a.mov(cx, word_ptr(0x42))),
        form("mov_load/2_unaligned", 0x47, |a| a.mov(cx, word_ptr(0x47))),
        form("mov_load/4_aligned", 0x44, |a| a.mov(ecx, dword_ptr(0x44))),
        form("mov_load/4_unaligned", 0x46, |a| {
            a.mov(ecx, dword_ptr(0x46))
        }),
        form("mov_load/8_aligned", 0x40, |a| a.mov(rcx, qword_ptr(0x40))),
        form("mov_load/8_unaligned", 0x43, |a| {
            a.mov(rcx, qword_ptr(0x43))
        }),
        // Stores.
        form("mov_store/1", 0x41, |a| a.mov(byte_ptr(0x41), dl)),
        form("mov_store/2_aligned", 0x42, |a| a.mov(word_ptr(0x42), dx)),
        form("mov_store/2_unaligned", 0x47, |a| a.mov(word_ptr(0x47), dx)),
        form("mov_store/4_aligned", 0x44, |a| a.mov(dword_ptr(0x44), edx)),
        form("mov_store/4_unaligned", 0x46, |a| {
            a.mov(dword_ptr(0x46), edx)
        }),
        form("mov_store/8_aligned", 0x40, |a| a.mov(qword_ptr(0x40), rdx)),
        form("mov_store/8_unaligned", 0x43, |a| {
            a.mov(qword_ptr(0x43), rdx)
        }),
        // ALU on the map (read-modify-write, or read only for cmp).
        form("alu/add_m64_imm8", 0x40, |a| a.add(qword_ptr(0x40), 1)),
        form("alu/add_m64_r64", 0x40, |a| a.add(qword_ptr(0x40), rcx)),
        form("alu/add_r64_m64", 0x40, |a| a.add(rcx, qword_ptr(0x40))),
        form("alu/sub_m64_r64", 0x40, |a| a.sub(qword_ptr(0x40), rcx)),
        form("alu/and_m64_r64", 0x40, |a| a.and(qword_ptr(0x40), rcx)),
        form("alu/or_m64_r64", 0x40, |a| a.or(qword_ptr(0x40), rcx)),
        form("alu/xor_m64_r64", 0x40, |a| a.xor(qword_ptr(0x40), rcx)),
        form("alu/cmp_m64_r64", 0x40, |a| a.cmp(qword_ptr(0x40), rcx)),
        form("alu/inc_m64", 0x40, |a| a.inc(qword_ptr(0x40))),
        form("alu/dec_m32", 0x44, |a| a.dec(dword_ptr(0x44))),
        form("alu/shl_m64_imm8", 0x40, |a| a.shl(qword_ptr(0x40), 3)),
        // Locked exchanges.
        form("atomic/lock_xadd_m64", 0x40, |a| {
            a.lock().xadd(qword_ptr(0x40), rcx)
        }),
        form("atomic/lock_cmpxchg_m64", 0x40, |a| {
            a.lock().cmpxchg(qword_ptr(0x40), rcx)
        }),
        // Vector loads: SSE2 is part of x86-64.
        form("vector/movdqu_xmm_m128", 0x10, |a| {
            a.movdqu(xmm1, xmmword_ptr(0x10))
        }),
    ];
    if cpu.avx() {
        v.push(form("vector/vmovdqu_ymm_m256", 0x20, |a| {
            a.vmovdqu(ymm1, ymmword_ptr(0x20))
        }));
    }
    if cpu.avx512() {
        v.push(form("vector/vmovdqu64_zmm_m512", 0x00, |a| {
            a.vmovdqu64(zmm1, zmmword_ptr(0x00))
        }));
    }
    v
}

/// Short measurements by default (`--measurement-time` and `--warm-up-time` override them).
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700))
        .sample_size(30)
}

/// `decode::decode` (iced-x86 with the host vendor's options) and the decoded-instruction cache.
fn bench_decode(c: &mut Criterion) {
    let forms = common_forms();
    let mut g = c.benchmark_group("decode");
    for f in forms.iter().filter(|f| {
        matches!(
            f.name,
            "alu/add_m64_imm8" | "mov_load/8_aligned" | "atomic/lock_cmpxchg_m64"
        ) || f.name.starts_with("vector/")
    }) {
        g.bench_function(f.name, |b| {
            b.iter(|| decode::decode(black_box(&f.bytes), black_box(RIP)).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("icache");
    let add = padded(&assemble(|a| a.add(qword_ptr(0x40), 1)));
    let sub = padded(&assemble(|a| a.sub(qword_ptr(0x40), 1)));
    // The same bytes at the same rip: every lookup after the first hits.
    g.bench_function("hit", |b| {
        b.iter(|| icache::decode(black_box(&add), 15, black_box(RIP)).unwrap())
    });
    // Two encodings alternating at one rip: every lookup misses, decodes and refills.
    let mut flip = false;
    g.bench_function("miss", |b| {
        b.iter(|| {
            flip = !flip;
            let bytes = if flip { &add } else { &sub };
            icache::decode(black_box(bytes), 15, black_box(RIP)).unwrap()
        })
    });
    g.finish();
}

/// `bytes` padded to the 16 bytes the cache compares.
fn padded(bytes: &[u8]) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..bytes.len()].copy_from_slice(bytes);
    b
}

/// `table::classify`, and the ownership check the handler makes before emulating
/// (`operands::accesses` + `check_ownership`).
fn bench_classify(c: &mut Criterion) {
    let forms = common_forms();
    let pick = |f: &&Form| {
        matches!(
            f.name,
            "alu/add_m64_imm8"
                | "mov_load/8_unaligned"
                | "mov_store/4_aligned"
                | "atomic/lock_xadd_m64"
                | "vector/movdqu_xmm_m128"
        )
    };
    let mut g = c.benchmark_group("classify");
    for f in forms.iter().filter(pick) {
        g.bench_function(f.name, |b| b.iter(|| table::classify(black_box(&f.instr))));
    }
    g.finish();

    let m = machine();
    let mut g = c.benchmark_group("ownership");
    for f in forms.iter().filter(pick) {
        g.bench_function(f.name, |b| {
            b.iter(|| {
                let kind = table::classify(black_box(&f.instr));
                let acc = operands::accesses(&m, &f.instr, kind);
                check_ownership(acc.as_slice(), Some(black_box(f.fault))).is_ok()
            })
        });
    }
    g.finish();
}

/// `emulate` of each common form on a [`RegisterFile`], as the handler calls it (classify,
/// ownership check, execute, write back, rip advanced).
fn bench_emulate(c: &mut Criterion) {
    let forms = common_forms();
    let mut g = c.benchmark_group("emulate");
    for f in &forms {
        emulate_one(&mut g, f);
    }
    g.finish();
}

fn emulate_one(g: &mut BenchmarkGroup<'_, WallTime>, f: &Form) {
    let mut m = machine();
    g.bench_function(f.name, |b| {
        b.iter(|| {
            m.rip = RIP;
            emulate(
                &mut m,
                black_box(&f.instr),
                &f.bytes,
                &f.offsets,
                Some(f.fault),
            )
            .unwrap();
        })
    });
    black_box(&m);
}

/// Code in a buffer at `base`, decoded directly or through the decoded-instruction cache (as
/// the fault handler's source does).
struct Buffer {
    base: u64,
    code: Vec<u8>,
    cached: bool,
}

impl CodeSource for Buffer {
    fn fetch(&mut self, rip: u64, buf: &mut [u8; 16]) -> usize {
        let Some(off) = rip.checked_sub(self.base) else {
            return 0;
        };
        let rest = self.code.get(off as usize..).unwrap_or(&[]);
        let n = rest.len().min(15);
        buf[..n].copy_from_slice(&rest[..n]);
        n
    }

    fn decode(
        &mut self,
        b: &[u8; 16],
        n: usize,
        rip: u64,
    ) -> Option<(Instruction, ConstantOffsets)> {
        if self.cached {
            icache::decode(b, n, rip).ok()
        } else {
            decode::decode(&b[..n], rip).ok()
        }
    }

    fn signal_pending(&mut self) -> bool {
        false
    }
}

/// Assembles a sequence at `base`.
fn program(base: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).expect("64-bit assembler");
    f(&mut a).expect("valid instructions");
    a.assemble(base).expect("encodable instructions")
}

/// `runahead::run` (decode, classify and predecode each instruction once, then execute) over
/// a straight-line burst and a loop on the map, and `reaches_map`'s look-ahead.
fn bench_runahead(c: &mut Criterion) {
    const BASE: u64 = 0x50_0000;
    // Eight instructions run ahead, then a load from ordinary memory stops it.
    let straight = program(BASE, |a| {
        a.add(qword_ptr(0x40), 1)?;
        a.mov(rax, qword_ptr(0x08))?;
        a.add(rcx, rax)?;
        a.inc(qword_ptr(0x10))?;
        a.xor(qword_ptr(0x18), rcx)?;
        a.mov(edx, dword_ptr(0x44))?;
        a.sub(rdx, 3)?;
        a.mov(qword_ptr(0x48), rdx)?;
        a.mov(rdx, qword_ptr(0x10_0000))
    });
    // dec qword ptr [0x08]; jnz back: five rounds (ten instructions) from rcx = 5.
    let looped = program(BASE, |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.dec(qword_ptr(0x08))?;
        a.jnz(top)?;
        a.mov(rax, qword_ptr(0x10_0000))
    });
    let cases = [
        ("straight_8/decode", &straight, false, 8, 0),
        ("straight_8/icache", &straight, true, 8, 0),
        ("loop_5x2/decode", &looped, false, 10, 5),
    ];
    let mut g = c.benchmark_group("runahead");
    for (name, code, cached, expect, counter) in cases {
        let mut src = Buffer {
            base: BASE,
            code: code.clone(),
            cached,
        };
        let mut m = machine();
        // The loop's counter is rcx (map offset 0x08); the burst leaves it as it is.
        let start = |m: &mut RegisterFile| {
            m.rip = BASE;
            if counter != 0 {
                m.gpr[1] = counter;
            }
        };
        start(&mut m);
        assert_eq!(runahead::run(&mut m, &mut src, 100), expect, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| {
                start(&mut m);
                runahead::run(&mut m, &mut src, black_box(100))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("reaches_map");
    let m = machine();
    // dec r12; add qword ptr [0x40], 1: the next map access is the second instruction.
    let burst = program(BASE, |a| {
        a.dec(r12)?;
        a.add(qword_ptr(0x40), 1)
    });
    // dec r12; mov [rsi], r12; jnz back, rsi in ordinary memory: the ordinary store comes first.
    let mut m_store = machine();
    m_store.gpr[6] = 0x10_0000;
    let store_loop = program(BASE, |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.dec(r12)?;
        a.mov(qword_ptr(rsi), r12)?;
        a.jnz(top)
    });
    let mut burst_src = Buffer {
        base: BASE,
        code: burst,
        cached: false,
    };
    let mut store_src = Buffer {
        base: BASE,
        code: store_loop,
        cached: false,
    };
    assert!(reaches_map(&m, &mut burst_src, BASE));
    assert!(!reaches_map(&m_store, &mut store_src, BASE));
    g.bench_function("burst/true", |b| {
        b.iter(|| reaches_map(&m, &mut burst_src, black_box(BASE)))
    });
    g.bench_function("loop_with_store/false", |b| {
        b.iter(|| reaches_map(&m_store, &mut store_src, black_box(BASE)))
    });
    g.finish();
}

criterion_group! {
    name = engine;
    config = config();
    targets = bench_decode, bench_classify, bench_emulate, bench_runahead
}
criterion_main!(engine);
