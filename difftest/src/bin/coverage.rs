//! Prints the coverage table (Markdown): every iced-x86 `Mnemonic` with a legacy, VEX or EVEX
//! encoding that can touch the register map, its category, status and the number of
//! differential cases run.
//!
//! ```text
//! cargo run --release -p difftest --bin coverage > docs/coverage.md
//! ```
//!
//! The vector forms are run by `difftest::vector` in a child process (this binary with
//! `--vector-sweep`, which prints one tab-separated line per form): its signal catcher and the
//! integer engine's cannot share a process.
//!
//! Environment: `OF_SEED` (hex), `OF_STATES` (default 32), `OF_FAULT_STATES` (default 4),
//! `OF_THREADS` (default 1), `OF_MIN_STATES` (default 2048), `OF_VECTOR_STATES` (default 200
//! per vector form, one in ten through a real fault). Exits 1 if an integer or vector form
//! disagrees with the CPU or an integer form is refused.

use difftest::forms::{self, Category, Probe};
use difftest::vector::{self, Execution, VectorFormStats};
use difftest::{Config, DEFAULT_SEED, FormStats, sweep};
use iced_x86::{Code, Mnemonic};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| String::from("unknown CPU"))
}

/// Everything known about one mnemonic.
#[derive(Default)]
struct Row {
    codes: Vec<(Code, Category, &'static str)>,
    forms: Vec<FormStats>,
    vector: Vec<VectorFormStats>,
    probes: Vec<(Code, Probe)>,
}

/// Seed of the vector sweep in the table.
const VECTOR_SEED: u64 = 0xF011_5EED;

/// Child mode: runs the vector sweep and prints `form`, `refused` and `summary` lines.
fn vector_child(states: usize) {
    let t = vector::sweep(VECTOR_SEED, states, 10, None);
    for f in &t.per_form {
        println!(
            "form\t{:?}\t{:?}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            f.code,
            f.execution,
            f.emulated,
            f.faulted,
            f.exceptions,
            f.refused_cases,
            f.mismatches,
            f.masked,
            f.suppressed
        );
    }
    for (c, why) in &t.refused {
        println!("refused\t{c:?}\t{why}");
    }
    println!("summary\t{}", t.summary());
    for m in t.mismatches.iter().take(40) {
        eprintln!("{m}");
    }
}

/// Output of the vector child: per-form counts, refusals, the summary line.
struct VectorReport {
    forms: Vec<VectorFormStats>,
    refused: Vec<(Code, String)>,
    summary: String,
}

fn vector_report(states: usize) -> VectorReport {
    let out = std::process::Command::new(std::env::current_exe().expect("current_exe"))
        .arg("--vector-sweep")
        .env("OF_VECTOR_STATES", states.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the vector sweep");
    assert!(out.status.success(), "vector sweep: {}", out.status);
    let codes: HashMap<String, Code> = Code::values().map(|c| (format!("{c:?}"), c)).collect();
    let mut r = VectorReport {
        forms: Vec::new(),
        refused: Vec::new(),
        summary: String::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "form" => {
                let n = |i: usize| f[i].parse::<u64>().expect("a count");
                r.forms.push(VectorFormStats {
                    code: codes[f[1]],
                    execution: if f[2] == "Move" {
                        Execution::Move
                    } else {
                        Execution::Host
                    },
                    emulated: n(3),
                    faulted: n(4),
                    exceptions: n(5),
                    refused_cases: n(6),
                    mismatches: n(7),
                    masked: n(8),
                    suppressed: n(9),
                    based: 0,
                    disp8: 0,
                });
            }
            "refused" => r.refused.push((codes[f[1]], f[2].to_string())),
            "summary" => r.summary = f[1].to_string(),
            _ => {}
        }
    }
    r
}

/// Whether `of` patches `code` at a hot site: its sample instruction (operand `[0x10]`),
/// encoded and decoded as the fault handler would see it, asked of `of_core::patch::plan`.
fn patch_plan(code: Code) -> Result<(), &'static str> {
    let sample = forms::sample(code).ok_or("no sample")?;
    let mut e = iced_x86::Encoder::new(64);
    e.encode(&sample, 0x40_0000).map_err(|_| "no sample")?;
    let bytes = e.take_buffer();
    let (instr, _) = of_core::decode::decode(&bytes, 0x40_0000).map_err(|_| "no sample")?;
    of_core::patch::plan::plan(&instr).map(|_| ())
}

fn main() {
    let vector_states = env("OF_VECTOR_STATES").unwrap_or(200);
    if std::env::args().any(|a| a == "--vector-sweep") {
        vector_child(vector_states);
        return;
    }
    let vectors = vector_report(vector_states);
    let vector_tested: std::collections::HashSet<Code> =
        vectors.forms.iter().map(|f| f.code).collect();
    let cfg = Config {
        seed: Config::seed_from_env(DEFAULT_SEED),
        states: env("OF_STATES").unwrap_or(32),
        fault_states: env("OF_FAULT_STATES").unwrap_or(4),
        offsets: None,
        filter: None,
        threads: env("OF_THREADS").unwrap_or(1),
        details_per_form: 3,
        min_states_per_form: env("OF_MIN_STATES").unwrap_or(2048),
    };
    let features = difftest::cpu::Features::host();
    let report = sweep(&cfg);
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let name = |m: Mnemonic| format!("{m:?}").to_lowercase();
    for code in forms::selection() {
        let (cat, why) = forms::classify(code, &features);
        let row = rows.entry(name(code.mnemonic())).or_default();
        row.codes.push((code, cat, why));
        // Probe what the emulator does with the other categories (only with encodings this CPU
        // can execute: the emulator may run them on the host).
        let op = code.op_code();
        let privileged = op.is_privileged() || !op.cpl3() || op.is_input_output();
        if cat == Category::System && privileged {
            row.probes.push((code, Probe::Privileged));
        } else if cat != Category::Integer
            && !matches!(cat, Category::Unavailable | Category::NoAccess)
        {
            if code.cpuid_features().iter().all(|&f| features.has(f)) {
                row.probes.push((code, forms::probe(code)));
            } else {
                row.probes.push((
                    code,
                    Probe::NotProbed(format!("{:?}", code.cpuid_features())),
                ));
            }
        }
    }
    for f in &report.forms {
        rows.entry(name(f.form.mnemonic))
            .or_default()
            .forms
            .push(f.clone());
    }

    for f in &vectors.forms {
        rows.entry(name(f.code.mnemonic()))
            .or_default()
            .vector
            .push(f.clone());
    }

    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Coverage: instructions that can touch the register map\n"
    );
    let _ = writeln!(
        w,
        "Generated by `cargo run --release -p difftest --bin coverage > docs/coverage.md` (do not edit by \
         hand) on {}, seed `{:#x}`, {} states per form and offset, {} of them through real faults. \
         CPUID extensions checked: BMI1 {}, BMI2 {}, ADX {}, MOVBE {}, LZCNT {}, POPCNT {}, CMPXCHG16B {}.\n",
        cpu_model(),
        report.seed,
        cfg.states,
        cfg.fault_states,
        features.bmi1,
        features.bmi2,
        features.adx,
        features.movbe,
        features.lzcnt,
        features.popcnt,
        features.cmpxchg16b
    );
    let _ = writeln!(w, "## Selection\n");
    let _ = writeln!(
        w,
        "Every iced-x86 `Code` (one encoding) that is an instruction valid in 64-bit mode, has a legacy \
         VEX or EVEX encoding (no XOP, MVEX or 3DNow!), and either has an explicit memory operand \
         (ModRM memory, `moffs`, VSIB, MIB or SIB memory), an implicit `[rsi]`/`[rdi]`/`[rbx+al]` operand \
         (string instructions, `xlat`), or an implicit stack access (iced-x86's `is_stack_instruction`). \
         Rows are iced-x86 `Mnemonic`s; a mnemonic's encodings can fall into different categories.\n"
    );
    let _ = writeln!(w, "Categories (in the order they are decided):\n");
    let _ = writeln!(
        w,
        "- **x87**: x87 operands or the FPU CPUID feature. Refused with the SPEC §4 diagnostic."
    );
    let _ = writeln!(
        w,
        "- **vector / state**: an MMX/XMM/YMM/ZMM, mask, bound or tile register, VSIB/MIB memory, or an SSE/AVX/AMX/AES/SHA/MPX/XSAVE/FXSR feature. Every legacy-SSE, VEX and EVEX form with a memory operand that this CPU implements is differential-tested by `difftest::vector`: run natively on a buffer holding the register image, through `of_core::emulate` and (one case in ten, and every case whose unselected elements lie in a hole of the map) through the map with real faults, from random zmm0..zmm31 (ymm0..15 without AVX-512; special floating-point values included), k0..k7, GPRs, flags and MXCSR (rounding, FTZ/DAZ, AMD's misaligned-SSE bit, unmasked exceptions), with random opmasks, zeroing-masking and embedded broadcast on EVEX forms and `[base + disp]` addressing with compressed disp8*N; all vector registers, k0..7, GPRs, status flags and DF, MXCSR and the exception raised (#GP, #XM) must agree, at aligned and unaligned offsets of the whole map (reads 0x00..0x204, writes to every writable byte). Status says how `of` executes the form: *data movement* (emulated in Rust) or *host register form* (the same instruction with a register operand run on the CPU). Forms whose CPUID features this CPU lacks are *not executable here* and untested. Other encodings here are probed once with `of_core::emulate`: MMX, x87 state, XSAVE, gathers and scatters are refused with the diagnostic."
    );
    let _ = writeln!(
        w,
        "- **segment / far**: segment-register operands, far branches and returns, lfs/lgs/lss, iret."
    );
    let _ = writeln!(
        w,
        "- **system**: privileged (CPL 0 only: #GP at CPL 3 before any access, so never a page fault on the map), I/O, descriptor-table and CET shadow-stack instructions."
    );
    let _ = writeln!(
        w,
        "- **no memory access**: the operand is never accessed (lea, nop r/m, hint nops, prefetches): it cannot fault, so it is never a register access."
    );
    let _ = writeln!(
        w,
        "- **not on this CPU**: always #UD (ud0/ud1), or the CPU lacks the extension (#UD before any access)."
    );
    let _ = writeln!(
        w,
        "- **integer**: everything else — general-purpose integer instructions. Each encoding is \
         differential-tested: run natively on a buffer holding the register image, through the map with \
         real faults, and through `of_core::emulate`, from the same random state; all GPRs, CF PF AF ZF SF OF \
         and DF, the landing address, #DE and ordinary memory must agree, at every operand size and every \
         aligned and unaligned offset of the map (reads 0x00..0xA0, writes 0x00..0x90).\n"
    );

    let integer_mnemonics = rows
        .values()
        .filter(|r| r.codes.iter().any(|c| c.1 == Category::Integer))
        .count();
    let integer_codes: usize = rows
        .values()
        .map(|r| r.codes.iter().filter(|c| c.1 == Category::Integer).count())
        .sum();
    let refused_integer: Vec<String> = report
        .forms
        .iter()
        .filter_map(|f| {
            f.refused
                .as_ref()
                .map(|r| format!("{}: {r}", f.form.title()))
        })
        .collect();
    let _ = writeln!(w, "## Summary\n");
    let _ = writeln!(w, "- {}", report.summary());
    let _ = writeln!(
        w,
        "- {}, seed {VECTOR_SEED:#x}, {vector_states} states per form; {} mnemonics emulated as data movement, {} run as the host register form",
        vectors.summary,
        vectors
            .forms
            .iter()
            .filter(|f| f.execution == Execution::Move)
            .map(|f| f.code.mnemonic())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        vectors
            .forms
            .iter()
            .filter(|f| f.execution == Execution::Host)
            .map(|f| f.code.mnemonic())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
    );
    for (c, why) in &vectors.refused {
        let _ = writeln!(
            w,
            "- vector form refused: `{}`: {why}",
            c.op_code().instruction_string()
        );
    }
    let _ = writeln!(
        w,
        "- {} mnemonics, {} encodings selected; integer: {} mnemonics, {} encodings, {} test forms \
         (an encoding with an explicit operand that is also a stack instruction is tested both ways).",
        rows.len(),
        rows.values().map(|r| r.codes.len()).sum::<usize>(),
        integer_mnemonics,
        integer_codes,
        report.forms.len()
    );
    let _ = writeln!(
        w,
        "- integer forms refused by the emulator: {}",
        if refused_integer.is_empty() {
            String::from("none")
        } else {
            refused_integer.join("; ")
        }
    );
    let _ = writeln!(
        w,
        "- integer forms with mismatches: {}",
        report.forms.iter().filter(|f| f.mismatches > 0).count()
    );
    let integer_codes_list: Vec<Code> = rows
        .values()
        .flat_map(|r| {
            r.codes
                .iter()
                .filter(|c| c.1 == Category::Integer)
                .map(|c| c.0)
        })
        .collect();
    let patchable = integer_codes_list
        .iter()
        .filter(|&&c| patch_plan(c).is_ok())
        .count();
    let _ = writeln!(
        w,
        "- site patching (SPEC §6, `of_core::patch::plan`): {patchable} of the {} integer encodings are rewritten at hot sites (absolute page-0 operand in the general-purpose slots other than rsp's, at least 5 bytes, no exception of its own, no other memory access, no register result in a covered register); every other encoding, and every vector one, keeps the fault path",
        integer_codes_list.len()
    );
    for n in &report.notes {
        let _ = writeln!(w, "- {n}");
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Table\n");
    let _ = writeln!(
        w,
        "| mnemonic | category | encodings | status | cases: emulate / real faults |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|");
    for (m, row) in &rows {
        let mut cats: BTreeMap<Category, usize> = BTreeMap::new();
        for c in &row.codes {
            *cats.entry(c.1).or_default() += 1;
        }
        let cat = cats
            .iter()
            .map(|(c, n)| {
                if cats.len() > 1 {
                    format!("{} ({n})", c.label())
                } else {
                    c.label().to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut status = Vec::new();
        let integer: Vec<&(Code, Category, &str)> = row
            .codes
            .iter()
            .filter(|c| c.1 == Category::Integer)
            .collect();
        if !integer.is_empty() {
            let mismatches: u64 = row.forms.iter().map(|f| f.mismatches).sum();
            let refused: Vec<&String> = row
                .forms
                .iter()
                .filter_map(|f| f.refused.as_ref())
                .collect();
            let untested: Vec<&Code> = integer
                .iter()
                .map(|c| &c.0)
                .filter(|c| {
                    !row.forms
                        .iter()
                        .any(|f| f.form.code == **c && f.emulated > 0)
                })
                .collect();
            let mut sizes: Vec<u64> = row.forms.iter().map(|f| f.form.size).collect();
            sizes.sort_unstable();
            sizes.dedup();
            let sizes = sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("/");
            if !refused.is_empty() {
                status.push(format!("**refused**: {}", refused[0]));
            } else if mismatches > 0 {
                status.push(format!("**{mismatches} mismatches**"));
            } else if !row.forms.is_empty() {
                status.push(format!(
                    "emulated, differential-tested, sizes {sizes}, 0 mismatches"
                ));
            }
            // Site patching (SPEC §6): which of the row's encodings `of` rewrites at hot sites,
            // asked of `of_core::patch::plan` on a sample with an absolute page-0 operand.
            let mut patched = 0;
            let mut why_not: BTreeMap<&'static str, usize> = BTreeMap::new();
            for (c, _, _) in &integer {
                match patch_plan(*c) {
                    Ok(()) => patched += 1,
                    Err(why) => *why_not.entry(why).or_default() += 1,
                }
            }
            let mut p = format!("site patching: {patched} of {} encodings", integer.len());
            for (why, n) in &why_not {
                let _ = write!(p, "; {n} not ({why})");
            }
            status.push(p);
            for c in untested {
                if forms::is_branch16(*c) {
                    status.push(format!(
                        "`{}` not tested: 16-bit near branch (0x66), vendor-dependent",
                        c.op_code().op_code_string()
                    ));
                } else {
                    status.push(format!("`{}` not tested", c.op_code().op_code_string()));
                }
            }
        }
        for (cat, why) in row
            .codes
            .iter()
            .filter(|c| c.1 != Category::Integer)
            .map(|c| (c.1, c.2))
            .collect::<std::collections::BTreeSet<_>>()
        {
            match cat {
                Category::NoAccess => {
                    status.push(String::from("never accesses memory: not a register access"))
                }
                Category::Unavailable => status.push(format!("not executable here ({why})")),
                _ => {}
            }
        }
        if !row.vector.is_empty() {
            let mismatches: u64 = row.vector.iter().map(|f| f.mismatches).sum();
            let mut how: Vec<&str> = row
                .vector
                .iter()
                .map(|f| match f.execution {
                    Execution::Move => "data movement",
                    Execution::Host => "host register form",
                })
                .collect();
            how.sort_unstable();
            how.dedup();
            let exceptions: u64 = row.vector.iter().map(|f| f.exceptions).sum();
            let refused: u64 = row.vector.iter().map(|f| f.refused_cases).sum();
            status.push(format!(
                "emulated ({}), differential-tested ({} encoding{}{}{}), {}",
                how.join(" and "),
                row.vector.len(),
                if row.vector.len() == 1 { "" } else { "s" },
                if exceptions > 0 {
                    format!(", {exceptions} cases raising #GP/#XM")
                } else {
                    String::new()
                },
                if refused > 0 {
                    format!(", {refused} cases refused: unmasked exception")
                } else {
                    String::new()
                },
                if mismatches > 0 {
                    format!("**{mismatches} mismatches**")
                } else {
                    String::from("0 mismatches")
                }
            ));
        }
        let mut probes: Vec<String> = row
            .probes
            .iter()
            .filter(|(c, _)| !vector_tested.contains(c))
            .map(|(c, p)| {
                if row.vector.is_empty() {
                    p.describe()
                } else {
                    // The other encodings of a tested mnemonic (MMX forms, say): name them.
                    format!("`{}` {}", c.op_code().instruction_string(), p.describe())
                }
            })
            .collect();
        probes.sort();
        probes.dedup();
        status.extend(probes);
        let emulated: u64 = row.forms.iter().map(|f| f.emulated).sum::<u64>()
            + row.vector.iter().map(|f| f.emulated).sum::<u64>();
        let faulted: u64 = row.forms.iter().map(|f| f.faulted).sum::<u64>()
            + row.vector.iter().map(|f| f.faulted).sum::<u64>();
        let cases = if row.forms.is_empty() && row.vector.is_empty() {
            String::from("—")
        } else {
            format!("{emulated} / {faulted}")
        };
        let _ = writeln!(
            w,
            "| `{m}` | {cat} | {} | {} | {cases} |",
            row.codes.len(),
            status.join("; ")
        );
    }

    let _ = writeln!(w, "\n## Integer forms\n");
    let _ = writeln!(
        w,
        "<details><summary>{} forms</summary>\n",
        report.forms.len()
    );
    let _ = writeln!(
        w,
        "| form | size | emulate | real faults | #DE | mismatches |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for f in &report.forms {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            f.form.title(),
            f.form.size,
            f.emulated,
            f.faulted,
            f.divide_errors,
            f.mismatches
        );
    }
    let _ = writeln!(w, "\n</details>\n");
    let _ = writeln!(w, "## Vector forms\n");
    let _ = writeln!(
        w,
        "<details><summary>{} forms</summary>\n",
        vectors.forms.len()
    );
    let _ = writeln!(
        w,
        "| form | execution | emulate | real faults | #GP/#XM | refused | mismatches |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    for f in &vectors.forms {
        let _ = writeln!(
            w,
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            f.code.op_code().instruction_string(),
            match f.execution {
                Execution::Move => "data movement",
                Execution::Host => "host register form",
            },
            f.emulated,
            f.faulted,
            f.exceptions,
            f.refused_cases,
            f.mismatches
        );
    }
    let _ = writeln!(w, "\n</details>\n");
    let _ = writeln!(w, "## Addressing modes and prefix variants\n");
    let _ = writeln!(
        w,
        "<details><summary>{} variants</summary>\n",
        report.variants.len()
    );
    let _ = writeln!(w, "| variant | cases |");
    let _ = writeln!(w, "|---|---|");
    for (v, n) in &report.variants {
        let _ = writeln!(w, "| {v} | {n} |");
    }
    let _ = writeln!(w, "\n</details>");
    print!("{out}");
    for m in &report.mismatches {
        eprint!("{m}");
    }
    eprintln!("{}", report.summary());
    eprintln!("{}", vectors.summary);
    let vector_mismatches: u64 = vectors.forms.iter().map(|f| f.mismatches).sum();
    if report.mismatch_count() > 0 || !refused_integer.is_empty() || vector_mismatches > 0 {
        std::process::exit(1);
    }
}
