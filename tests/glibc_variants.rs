//! glibc's memory and string functions on map bytes, in every variant glibc offers on this CPU
//! (issue 12, item 6).
//!
//! `examples/c/strings.c` puts known bytes in r12..r15 (map bytes 0x60..0x80) and calls each
//! function on page-0 pointers and on an ordinary page holding the same bytes, comparing return
//! values, the 32 bytes afterwards (through r12..r15 and back through the map) and every ordinary
//! output buffer. This test builds it against `libof.a` at -O0 -O1 -O2 -O3 -Os and runs every
//! binary under every glibc variant, chosen with `GLIBC_TUNABLES=glibc.cpu.hwcaps=...`:
//!
//! - default (whatever glibc picks for this CPU);
//! - `Prefer_No_AVX512` (the EVEX-256 memcpy/memset instead of the 512-bit ones);
//! - without AVX-512 (`-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD`: the AVX2 variants);
//! - without AVX2 (also without AVX-512, whose EVEX string variants need AVX2: SSE2/SSE4);
//! - baseline x86-64 (no AVX, SSSE3 or SSE4 either: glibc's SSE2 and generic code).
//!
//! A variant needs CPU features (the EVEX-256 variants AVX-512VL/BW, the AVX2 ones AVX2/BMI2):
//! on a CPU without them it is printed as skipped with the reason. That a variant really ran is
//! checked, not assumed: the program reports the implementation dlsym resolved for every function
//! (named from libc's debug symbols when they are installed) and the vector instruction that
//! read the rip slot during `memcpy(buf, 0, 0x90)`; this test checks the names against the
//! variant, the instruction (decoded with iced-x86) against the name, and that every covered
//! implementation never names r12..r15 (whose map bytes hold the data; a function that used them
//! would read its own values, so strings.c leaves such functions out, and each left-out one is
//! checked to use them).
//!
//! Timing is not asserted. The inner `cargo build` shares `target/c-abi` with tests/c_abi.rs and
//! tests/vector_c.rs.

use iced_x86::{
    Decoder, DecoderOptions, EncodingKind, FlowControl, Instruction, InstructionInfoFactory,
    OpKind, Register,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

const LDLIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];
const OPT_LEVELS: &[&str] = &["-O0", "-O1", "-O2", "-O3", "-Os"];
const NO_AVX512: &str = "-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD";

struct Variant {
    name: &'static str,
    /// The `glibc.cpu.hwcaps` value (None: GLIBC_TUNABLES unset).
    hwcaps: Option<String>,
    /// CPU features the variant's implementations need (`is_x86_feature_detected!` names).
    needs: &'static [&'static str],
    /// Substrings no implementation name may contain in this variant.
    forbidden: &'static [&'static str],
    /// (function, substring its implementation's name must contain).
    expected: &'static [(&'static str, &'static str)],
    /// CPU features with which glibc's default choice differs from this variant's (so the run
    /// must report other implementation addresses than the default run, names or not).
    differs_with: &'static [&'static str],
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "default",
            hwcaps: None,
            needs: &[],
            forbidden: &[],
            expected: &[],
            differs_with: &[],
        },
        Variant {
            name: "Prefer_No_AVX512",
            hwcaps: Some("Prefer_No_AVX512".into()),
            needs: &["avx512f", "avx512vl", "avx512bw", "avx2", "bmi2"],
            forbidden: &["avx512"],
            expected: &[("memcpy", "evex"), ("memset", "evex"), ("strlen", "evex")],
            // Not implied by the CPU alone: glibc itself prefers no AVX-512 on some Intel CPUs.
            differs_with: &[],
        },
        Variant {
            name: "without AVX-512",
            hwcaps: Some(NO_AVX512.into()),
            needs: &["avx2", "bmi2"],
            forbidden: &["avx512", "evex"],
            expected: &[("memcpy", "avx_"), ("memset", "avx2"), ("strlen", "avx2")],
            differs_with: &["avx512vl", "avx512bw", "avx2", "bmi2"],
        },
        Variant {
            name: "without AVX2",
            hwcaps: Some(format!("-AVX2,{NO_AVX512}")),
            needs: &[],
            forbidden: &["avx2", "avx512", "evex"],
            expected: &[("strlen", "sse2"), ("memchr", "sse2"), ("memset", "sse2")],
            differs_with: &["avx2", "bmi2"],
        },
        Variant {
            name: "baseline SSE2",
            hwcaps: Some(format!(
                "-AVX,-AVX2,{NO_AVX512},-AVX_Fast_Unaligned_Load,-SSSE3,-SSE4_1,-SSE4_2,Fast_Unaligned_Load"
            )),
            needs: &[],
            forbidden: &["avx", "evex", "ssse3", "sse4"],
            expected: &[("memcpy", "sse2"), ("strlen", "sse2"), ("strcmp", "sse2")],
            differs_with: &["avx2", "bmi2"],
        },
    ]
}

fn has_feature(name: &str) -> bool {
    // OF_GLIBC_VARIANTS_HIDE=avx512bw,... treats those features as absent (to see the skip path
    // on a CPU that has them).
    if std::env::var("OF_GLIBC_VARIANTS_HIDE").is_ok_and(|h| h.split(',').any(|f| f == name)) {
        return false;
    }
    // What `of` sees (CPUID and the OS's XCR0, minus what OF_CPU_HIDE hides): the variants
    // whose instructions it would refuse are skipped.
    use iced_x86::CpuidFeature as F;
    let cpu = of::engine::cpu::get();
    match name {
        "avx512f" => cpu.has(F::AVX512F),
        "avx512vl" => cpu.has(F::AVX512VL),
        "avx512bw" => cpu.has(F::AVX512BW),
        "avx2" => cpu.has(F::AVX2),
        "bmi2" => cpu.has(F::BMI2),
        other => panic!("unknown feature {other}"),
    }
}

/// One implementation line: `impl <fn> <symbol> <offset> <size>` (or `left out ...`).
#[derive(Clone, Debug, PartialEq)]
struct Impl {
    symbol: String,
    offset: u64,
    size: u64,
}

/// What one run printed, parsed.
struct Report {
    stdout: String,
    libc: String,
    symbols: Option<String>,
    impls: BTreeMap<String, Impl>,
    left_out: BTreeMap<String, (Impl, String)>,
    probe_bytes: Vec<u8>,
    /// (fault address, instruction bytes) of each group's first not-comparable case.
    overreads: Vec<(u64, Vec<u8>, String)>,
    variant_line: String,
    summary: String,
}

fn hex_u64(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("not hex: {s}"))
}

fn hex_bytes(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

fn parse(stdout: String) -> Report {
    let mut r = Report {
        stdout: String::new(),
        libc: String::new(),
        symbols: None,
        impls: BTreeMap::new(),
        left_out: BTreeMap::new(),
        probe_bytes: Vec::new(),
        overreads: Vec::new(),
        variant_line: String::new(),
        summary: String::new(),
    };
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("libc: ") {
            let (path, rest) = rest.split_once(", build-id ").expect("libc line");
            r.libc = path.to_string();
            let sym = rest.split_once(", symbols: ").expect("symbols").1;
            r.symbols = (!sym.starts_with('(')).then(|| sym.to_string());
        } else if let Some(rest) = line.strip_prefix("impl ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let i = Impl {
                symbol: f[1].to_string(),
                offset: hex_u64(f[2]),
                size: hex_u64(f[3]),
            };
            r.impls.insert(f[0].to_string(), i);
        } else if let Some(rest) = line.strip_prefix("left out ") {
            let (head, why) = rest.split_once(": ").expect("left out line");
            let f: Vec<&str> = head.split_whitespace().collect();
            let i = Impl {
                symbol: f[1].to_string(),
                offset: hex_u64(f[2]),
                size: hex_u64(f[3]),
            };
            r.left_out.insert(f[0].to_string(), (i, why.to_string()));
        } else if let Some(rest) = line.strip_prefix("bytes before rip:") {
            r.probe_bytes = hex_bytes(rest);
        } else if line.starts_with("variant:") {
            r.variant_line = line.to_string();
        } else if line.contains(" groups, ") && line.contains(" mismatches: ") {
            r.summary = line.to_string();
        }
        if let Some(at) = line.find("not comparable: glibc read past the map's end, first at ") {
            let rest =
                &line[at + "not comparable: glibc read past the map's end, first at ".len()..];
            let (addr, rest) = rest.split_once(" by ").unwrap();
            let (place, rest) = rest.split_once(" [").unwrap();
            let bytes = rest.split_once(']').unwrap().0;
            r.overreads
                .push((hex_u64(addr), hex_bytes(bytes), place.to_string()));
        }
    }
    r.stdout = stdout;
    r
}

/// The memory access of the instruction whose bytes are `bytes` (decoded at address 0).
fn decode_one(bytes: &[u8]) -> Instruction {
    let mut d = Decoder::new(64, bytes, DecoderOptions::NONE);
    d.decode()
}

/// The vector instruction that ends exactly at the end of `before`: (encoding, memory operand
/// bytes, text).
fn probe_instruction(before: &[u8]) -> Option<(EncodingKind, usize, String)> {
    let mut best: Option<Instruction> = None;
    for k in 1..=before.len() {
        let i = decode_one(&before[before.len() - k..]);
        if i.is_invalid() || i.len() != k {
            continue;
        }
        let vector_mem = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory)
            && (0..i.op_count()).any(|n| {
                i.op_kind(n) == OpKind::Register
                    && (i.op_register(n).is_xmm()
                        || i.op_register(n).is_ymm()
                        || i.op_register(n).is_zmm())
            });
        if vector_mem {
            best = Some(i);
        }
    }
    best.map(|i| (i.encoding(), i.memory_size().size(), format!("{i}")))
}

/// What the probe instruction of a memcpy implementation must look like, from its name.
fn expected_probe(symbol: &str) -> Option<(EncodingKind, usize)> {
    if symbol.contains("avx512") {
        Some((EncodingKind::EVEX, 64))
    } else if symbol.contains("evex") {
        Some((EncodingKind::EVEX, 32))
    } else if symbol.contains("avx") {
        Some((EncodingKind::VEX, 32))
    } else if symbol.contains("sse2") || symbol.contains("ssse3") {
        Some((EncodingKind::Legacy, 16))
    } else {
        None
    }
}

// ---- libc's code: which implementations (and what they jump to or call) name r12..r15 ----

struct Libc {
    bytes: Vec<u8>,
    /// (vaddr, file offset, size) of the executable PT_LOAD segments.
    segments: Vec<(u64, u64, u64)>,
    /// Sized function symbols: start -> (end, name).
    functions: BTreeMap<u64, (u64, String)>,
    /// IFUNC symbols: resolver address -> names.
    ifuncs: HashMap<u64, Vec<String>>,
    /// PLT entry address -> the name objdump gives it (`*ABS*+0x9f1c0` or `malloc`).
    plt: HashMap<u64, String>,
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as u64
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

impl Libc {
    fn load(path: &str, symbols: &str) -> Result<Libc, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("read {path}: {e}"))?;
        if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
            return Err(format!("{path} is not ELF"));
        }
        let (phoff, phentsize, phnum) = (
            u64_at(&bytes, 0x20) as usize,
            u16_at(&bytes, 0x36) as usize,
            u16_at(&bytes, 0x38) as usize,
        );
        let mut segments = Vec::new();
        for i in 0..phnum {
            let p = phoff + i * phentsize;
            let (ty, flags) = (u32_at(&bytes, p), u32_at(&bytes, p + 4));
            if ty == 1 && flags & 1 != 0 {
                segments.push((
                    u64_at(&bytes, p + 16),
                    u64_at(&bytes, p + 8),
                    u64_at(&bytes, p + 32),
                ));
            }
        }
        let nm = Command::new("nm")
            .args(["-S", "--defined-only", symbols])
            .output()
            .map_err(|e| format!("nm: {e}"))?;
        if !nm.status.success() {
            return Err(format!("nm {symbols} failed"));
        }
        let mut functions = BTreeMap::new();
        let mut ifuncs: HashMap<u64, Vec<String>> = HashMap::new();
        for line in String::from_utf8_lossy(&nm.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                [addr, size, t, name] if "tTwW".contains(*t) => {
                    let (a, s) = (hex_u64(addr), hex_u64(size));
                    // Several names for one address: prefer one that is not a __GI_ alias.
                    let keep = functions.get(&a).is_none_or(|(_, n): &(u64, String)| {
                        n.starts_with("__GI_") && !name.starts_with("__GI_")
                    });
                    if s > 0 && keep {
                        functions.insert(a, (a + s, name.to_string()));
                    }
                }
                [addr, t, name] if *t == "i" => {
                    ifuncs
                        .entry(hex_u64(addr))
                        .or_default()
                        .push(name.to_string());
                }
                [addr, _size, t, name] if *t == "i" => {
                    ifuncs
                        .entry(hex_u64(addr))
                        .or_default()
                        .push(name.to_string());
                }
                _ => {}
            }
        }
        let od = Command::new("objdump")
            .args(["-d", "-j", ".plt", "-j", ".plt.got", "-j", ".plt.sec", path])
            .output()
            .map_err(|e| format!("objdump: {e}"))?;
        let mut plt = HashMap::new();
        for line in String::from_utf8_lossy(&od.stdout).lines() {
            // 0000000000026110 <*ABS*+0x9f1c0@plt>:
            if let Some((addr, rest)) = line.split_once(" <")
                && let Some(name) = rest.strip_suffix("@plt>:")
                && let Ok(a) = u64::from_str_radix(addr.trim(), 16)
            {
                plt.insert(a, name.to_string());
            }
        }
        Ok(Libc {
            bytes,
            segments,
            functions,
            ifuncs,
            plt,
        })
    }

    fn code(&self, start: u64, end: u64) -> Option<&[u8]> {
        self.segments.iter().find_map(|&(va, off, size)| {
            (start >= va && end <= va + size)
                .then(|| &self.bytes[(off + start - va) as usize..(off + end - va) as usize])
        })
    }

    fn function_at(&self, addr: u64) -> Option<(u64, u64, &str)> {
        if let Some((&s, (e, n))) = self.functions.range(..=addr).next_back()
            && addr < *e
        {
            return Some((s, *e, n.as_str()));
        }
        None
    }
}

/// What [`walk`] found.
struct Walk {
    /// The functions visited, in order.
    visited: Vec<String>,
    /// The first instruction naming r12..r15 (the walk stops there).
    hit: Option<String>,
    /// Callees not followed.
    not_followed: Vec<String>,
}

/// Walks from `entry` through every function it jumps to, calls or falls into (PLT calls to
/// IFUNC symbols go to the implementation this run reported for them); returns the functions
/// visited, and the first instruction naming r12..r15 if any. Calls to functions outside the
/// string family (through the PLT to non-IFUNC symbols, or to the error paths
/// `__stack_chk_fail`, `__chk_fail`, `__fortify_fail`, `__assert_fail`) are listed, not
/// followed: they do not receive map pointers.
fn walk(libc: &Libc, entry: u64, reported: &BTreeMap<String, Impl>) -> Result<Walk, String> {
    let mut queue = vec![entry];
    let mut seen = HashSet::new();
    let mut visited = Vec::new();
    let mut not_followed = Vec::new();
    let mut factory = InstructionInfoFactory::new();
    while let Some(addr) = queue.pop() {
        let Some((start, end, name)) = libc.function_at(addr) else {
            return Err(format!("no function symbol contains libc+{addr:#x}"));
        };
        if !seen.insert(start) {
            continue;
        }
        visited.push(name.to_string());
        let code = libc
            .code(start, end)
            .ok_or_else(|| format!("{name} is not in an executable segment"))?;
        let mut d = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
        let mut last = FlowControl::Next;
        for i in &mut d {
            let info = factory.info(&i);
            if info.used_registers().iter().any(|u| {
                matches!(
                    u.register().full_register(),
                    Register::R12 | Register::R13 | Register::R14 | Register::R15
                )
            }) {
                return Ok(Walk {
                    hit: Some(format!("`{i}` at {name}+{:#x}", i.ip() - start)),
                    visited,
                    not_followed,
                });
            }
            last = i.flow_control();
            let direct = matches!(
                last,
                FlowControl::UnconditionalBranch
                    | FlowControl::ConditionalBranch
                    | FlowControl::Call
            ) && matches!(i.op0_kind(), OpKind::NearBranch64);
            if !direct {
                continue;
            }
            let t = i.near_branch_target();
            if (start..end).contains(&t) {
                continue;
            }
            if let Some(label) = libc.plt.get(&t) {
                let target = label
                    .strip_prefix("*ABS*+")
                    .map(hex_u64)
                    .and_then(|resolver| libc.ifuncs.get(&resolver))
                    .and_then(|names| {
                        names.iter().find_map(|n| {
                            let base = n.trim_start_matches("__GI_").trim_start_matches("__");
                            reported
                                .get(n.as_str())
                                .or_else(|| reported.get(base))
                                .map(|imp| (n.clone(), imp.offset))
                        })
                    });
                match target {
                    Some((_, off)) => queue.push(off),
                    None if label.starts_with("*ABS*") => {
                        return Err(format!(
                            "{name} calls the IFUNC {label}@plt, whose implementation this run did not report"
                        ));
                    }
                    None => not_followed.push(format!("{label}@plt")),
                }
                continue;
            }
            match libc.function_at(t) {
                Some((_, _, callee))
                    if ["chk_fail", "fortify_fail", "assert_fail"]
                        .iter()
                        .any(|e| callee.contains(e)) =>
                {
                    not_followed.push(callee.to_string());
                }
                _ => queue.push(t),
            }
        }
        // A function that does not end in a jump or return falls into the next one
        // (__strcasecmp_evex into __strcasecmp_l_evex); one that ends in a call to an error
        // path (`call __stack_chk_fail`) does not return there.
        let falls = matches!(last, FlowControl::Next | FlowControl::ConditionalBranch);
        if libc.functions.contains_key(&end) && (falls || last == FlowControl::Call) {
            queue.push(end);
        } else if falls {
            return Err(format!("{name} runs past its end into libc+{end:#x}"));
        }
    }
    Ok(Walk {
        visited,
        hit: None,
        not_followed,
    })
}

// ---- building and running ----

fn build(root: &Path, target_dir: &Path) -> Vec<(String, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "--lib", "-p", "of"])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .expect("run cargo");
    assert!(st.success(), "cargo build --release failed");
    let out_dir = target_dir.join("glibc-variants");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = OPT_LEVELS
            .iter()
            .map(|&opt| {
                let exe = out_dir.join(format!("strings{opt}"));
                s.spawn(move || {
                    let cc = Command::new("cc")
                        .args([
                            opt,
                            "-Wall",
                            "-Werror",
                            "-fno-builtin",
                            "-fno-delete-null-pointer-checks",
                            "-ffixed-r12",
                            "-ffixed-r13",
                            "-ffixed-r14",
                            "-ffixed-r15",
                            "-Wno-array-bounds",
                            "-pthread",
                        ])
                        .arg(format!("-I{}", root.join("include").display()))
                        .arg("-o")
                        .arg(&exe)
                        .arg(root.join("examples/c/strings.c"))
                        .arg(target_dir.join("release/libof.a"))
                        .args(LDLIBS)
                        .output()
                        .expect("run cc");
                    assert!(
                        cc.status.success(),
                        "cc {opt} failed: {}",
                        String::from_utf8_lossy(&cc.stderr)
                    );
                    (opt.to_string(), exe)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn run(exe: &Path, hwcaps: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(exe);
    cmd.env_remove("OF_STRINGS_FULL");
    // The default variant is what glibc picks by itself, except when OF_CPU_HIDE makes `of`
    // act as on an older CPU: then glibc is told the same through the inherited GLIBC_TUNABLES.
    if std::env::var_os("OF_CPU_HIDE").is_none() {
        cmd.env_remove("GLIBC_TUNABLES");
    }
    if let Some(h) = hwcaps {
        cmd.env("GLIBC_TUNABLES", format!("glibc.cpu.hwcaps={h}"));
    }
    let out = cmd
        .output()
        .map_err(|e| format!("run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{} ({:?}) failed:\n{stdout}\n{}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout)
}

#[test]
fn glibc_string_functions_on_map_bytes_in_every_variant() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target").join("c-abi");
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `cc` not found; the C tests need gcc and binutils");
        return;
    }
    let exes = build(&root, &target_dir);

    // The variants this CPU can run; the others are printed as skipped.
    let mut runnable = Vec::new();
    for v in variants() {
        let missing: Vec<&str> = v
            .needs
            .iter()
            .copied()
            .filter(|f| !has_feature(f))
            .collect();
        if missing.is_empty() {
            runnable.push(v);
        } else {
            println!(
                "SKIPPED variant {}: this CPU lacks {} (its implementations need {})",
                v.name,
                missing.join(", "),
                v.needs.join(", ")
            );
        }
    }
    if has_feature("avx512f") && has_feature("avx512vl") && has_feature("avx512bw") {
        println!("CPU: AVX-512 F/VL/BW present: the EVEX variants can run");
    } else {
        println!("CPU: no AVX-512 F/VL/BW: glibc's EVEX variants cannot run here");
    }

    // Every (variant, -O level) run, a few at a time.
    let jobs: Vec<(usize, usize)> = (0..runnable.len())
        .flat_map(|v| (0..exes.len()).map(move |o| (v, o)))
        .collect();
    let results: Mutex<BTreeMap<(usize, usize), Result<String, String>>> =
        Mutex::new(BTreeMap::new());
    let next = Mutex::new(0usize);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let j = {
                        let mut n = next.lock().unwrap();
                        let j = *n;
                        *n += 1;
                        j
                    };
                    let Some(&(v, o)) = jobs.get(j) else { break };
                    let r = run(&exes[o].1, runnable[v].hwcaps.as_deref());
                    results.lock().unwrap().insert((v, o), r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap();

    let mut failures = Vec::new();
    let mut default_impls: Option<BTreeMap<String, Impl>> = None;
    let mut group_lines: Option<usize> = None;
    let mut libcs: HashMap<(String, String), Result<Libc, String>> = HashMap::new();
    for (vi, v) in runnable.iter().enumerate() {
        let mut first: Option<Report> = None;
        for (oi, (opt, _)) in exes.iter().enumerate() {
            let stdout = match &results[&(vi, oi)] {
                Ok(s) => s.clone(),
                Err(e) => {
                    failures.push(format!("variant {} {opt}: {e}", v.name));
                    continue;
                }
            };
            let r = parse(stdout);
            let groups: Vec<&str> = r
                .stdout
                .lines()
                .filter(|l| l.ends_with(": ok") || l.contains(": MISMATCH"))
                .filter(|l| !l.contains(" mismatches: "))
                .collect();
            if r.stdout.contains("MISMATCH") || groups.iter().any(|l| !l.ends_with(": ok")) {
                failures.push(format!("variant {} {opt}:\n{}", v.name, r.stdout));
                continue;
            }
            if *group_lines.get_or_insert(groups.len()) != groups.len() {
                failures.push(format!(
                    "variant {} {opt}: {} group lines, other runs {group_lines:?}",
                    v.name,
                    groups.len()
                ));
            }
            println!("{} {opt}: {}", v.name, r.summary);
            match &first {
                None => first = Some(r),
                Some(f) if f.impls != r.impls => failures.push(format!(
                    "variant {} {opt}: other implementations than at {}",
                    v.name, exes[0].0
                )),
                Some(_) => {}
            }
        }
        let Some(r) = first else { continue };
        println!(
            "variant {} (GLIBC_TUNABLES={}):",
            v.name,
            v.hwcaps
                .as_deref()
                .map_or("(unset)".into(), |h| format!("glibc.cpu.hwcaps={h}"))
        );
        println!("  {}", r.variant_line);
        for line in r.stdout.lines().filter(|l| l.contains("not comparable: ")) {
            println!("  {line}");
        }

        // The variant changed something, and what it should: names.
        if r.symbols.is_some() {
            for (f, want) in v.expected {
                let got = &r.impls[*f].symbol;
                if !got.contains(want) {
                    failures.push(format!(
                        "variant {}: {f} is {got}, expected a *{want}* implementation",
                        v.name
                    ));
                }
            }
            for (f, imp) in &r.impls {
                if let Some(bad) = v.forbidden.iter().find(|b| imp.symbol.contains(*b)) {
                    failures.push(format!(
                        "variant {}: {f} is {} ({bad} should be off)",
                        v.name, imp.symbol
                    ));
                }
            }
        } else {
            println!(
                "  (no libc debug symbols: implementation names unknown, only the probe is checked)"
            );
        }
        match &default_impls {
            None => default_impls = Some(r.impls.clone()),
            Some(d) => {
                let changed: Vec<&str> = r
                    .impls
                    .iter()
                    .filter(|(f, i)| d.get(*f).map(|x| x.offset) != Some(i.offset))
                    .map(|(f, _)| f.as_str())
                    .collect();
                println!(
                    "  {} of {} implementations differ from the default run",
                    changed.len(),
                    r.impls.len()
                );
                // A variant that forbids a name the default run used must have changed it.
                let must_change = d
                    .values()
                    .any(|i| v.forbidden.iter().any(|b| i.symbol.contains(b)));
                let must_change = must_change
                    || (!v.differs_with.is_empty()
                        && v.differs_with.iter().all(|f| has_feature(f)));
                if must_change && changed.is_empty() {
                    failures.push(format!(
                        "variant {}: GLIBC_TUNABLES changed no implementation",
                        v.name
                    ));
                }
            }
        }

        // The rip slot was read by a vector load whose width matches memcpy's name.
        match probe_instruction(&r.probe_bytes) {
            None => failures.push(format!(
                "variant {}: the rip slot was not read by a vector load: {:02x?}",
                v.name, r.probe_bytes
            )),
            Some((enc, size, text)) => {
                let memcpy = &r.impls["memcpy"].symbol;
                println!(
                    "  probe: memcpy ({memcpy}) read the rip slot with `{text}` ({enc:?}, {size} bytes)"
                );
                if let Some(want) = expected_probe(memcpy)
                    && want != (enc, size)
                {
                    failures.push(format!(
                        "variant {}: memcpy is {memcpy} but the rip slot was read by `{text}` ({enc:?}, {size} bytes), expected {want:?}",
                        v.name
                    ));
                }
            }
        }

        // Each not-comparable case is a real access past 0xa0.
        for (addr, bytes, place) in &r.overreads {
            let i = decode_one(bytes);
            let size = i.memory_size().size() as u64;
            if i.is_invalid() || addr + size <= 0xa0 || *addr >= 0x100 {
                failures.push(format!(
                    "variant {}: `{i}` at {place} faulted at {addr:#x} ({size} bytes), which is inside the map",
                    v.name
                ));
            }
        }

        // r12..r15: no covered implementation names them, every left-out one does.
        let Some(symfile) = &r.symbols else {
            println!("  SKIPPED the r12..r15 check: no libc debug symbols");
            continue;
        };
        let key = (r.libc.clone(), symfile.clone());
        let libc = match libcs
            .entry(key)
            .or_insert_with(|| Libc::load(&r.libc, symfile))
        {
            Ok(l) => &*l,
            Err(e) => {
                println!("  SKIPPED the r12..r15 check: {e}");
                continue;
            }
        };
        let mut clean = 0;
        let mut reached = HashSet::new();
        let mut outside = HashSet::new();
        for (f, imp) in &r.impls {
            match walk(libc, imp.offset, &r.impls) {
                Err(e) => failures.push(format!("variant {}: {f}: {e}", v.name)),
                Ok(Walk {
                    visited,
                    hit: Some(hit),
                    ..
                }) => failures.push(format!(
                    "variant {}: {f} ({}) uses r12..r15: {hit} (reached through {})",
                    v.name,
                    imp.symbol,
                    visited.join(" -> ")
                )),
                Ok(Walk {
                    visited,
                    hit: None,
                    not_followed: nf,
                }) => {
                    clean += 1;
                    reached.extend(visited);
                    outside.extend(nf);
                }
            }
        }
        let mut outside: Vec<String> = outside.into_iter().collect();
        outside.sort();
        println!(
            "  r12..r15: none of the {clean} covered implementations (and the {} functions they reach) names them; not followed: {}",
            reached.len(),
            if outside.is_empty() {
                "nothing".to_string()
            } else {
                outside.join(", ")
            }
        );
        let mut uses = Vec::new();
        for (f, (imp, why)) in &r.left_out {
            match walk(libc, imp.offset, &r.impls) {
                Ok(Walk { hit: Some(hit), .. }) => uses.push(format!("{f} ({hit})")),
                Ok(Walk {
                    visited,
                    hit: None,
                    ..
                }) => failures.push(format!(
                    "variant {}: {f} is left out ({why}) but {} never names r12..r15: strings.c can cover it",
                    v.name,
                    visited.join(" -> ")
                )),
                Err(e) => println!("  left out {f} ({why}); not checked: {e}"),
            }
        }
        println!("  left out, each using r12..r15: {}", uses.join(", "));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
