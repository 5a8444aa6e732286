//! Differential test engine for `of`: the host CPU is the oracle.
//!
//! Every integer instruction form that can touch the register map (see [`forms`] for the exact
//! selection over iced-x86's `Code` values) is encoded with iced-x86's encoder and run three
//! ways from the same random register state and input flags ([`run`]):
//!
//! 1. natively, with its memory operand pointing at an ordinary buffer that holds the register
//!    image (same layout as the map), giving the expected result: the CPU's final registers with
//!    the bytes the instruction stored to the image applied last (SPEC §2);
//! 2. through the map, with real faults handled by `of`'s SIGSEGV handler;
//! 3. through `of_core::emulate::emulate` on an `of_core::RegisterFile` (no faults, fast; the
//!    bulk of the states).
//!
//! Compared: all 16 GPRs, the six status flags strictly and DF, the landing address of control
//! transfers, the signal raised (#DE is SIGFPE on both sides; a landing where nothing is mapped
//! is SIGSEGV at that address), and 256 bytes of ordinary memory
//! around the stack. Offsets cover every aligned and unaligned position of the scalar map
//! (writes: 0x00..0x90, reads: 0x00..0xA0, fs/gs bases included), register-straddling ones
//! included; register operands include ah/ch/dh/bh; addressing modes and prefixes vary
//! (base/index, rip-relative, ignored and fs/gs segment overrides, 0x67, lock, redundant and
//! stacked REX, padding to exactly 15 bytes).
//!
//! [`sweep`] runs it all; the `coverage` binary prints the coverage table; the tests in the
//! root crate run a fast subset in `cargo test` and the full sweep behind `--ignored`.
//!
//! # How the two runs are made comparable
//!
//! - Both encodings (operand at `[OFF]` and at `[NB + OFF]`, `NB` the native image's address)
//!   have the same length and run at the same address, so the rip slot (next instruction),
//!   pushed return addresses and landing addresses agree. The native image's rip slot holds the
//!   next instruction's address and its rflags slot what `pushfq` would store (status flags,
//!   DF, IF, bit 1), as the map reads them.
//! - rsp is never random: it is a private stack in the arena, or a map offset for stack forms.
//!   Registers that point into the image (rsp, rbp, rsi, rdi, rbx) hold `NB + value` natively
//!   and are mapped back afterwards ([`case::Reloc`]).
//! - #DE is compared like a result: SIGFPE at the instruction on both sides (caught by the
//!   arena's signal catcher) and `Exception::DivideError` from the core.
//! - Near branches with 0x66 (`66 C3`, `66 C2 iw`, `66 E8`, `66 FF /2`, `66 FF /4`) are run as
//!   the CPU under test reads them ([`forms::branch16_honoured`]): on AMD with 2-byte pops and
//!   pushes and a 16-bit target, where nothing is mapped, so every run ends with SIGSEGV at that
//!   target after the branch retired (the arena's catcher records the fetch fault; the emulate
//!   run reports it when its final rip is unmapped), counted as `fetch_faults`; on Intel as the
//!   64-bit forms with an ignored prefix, landing in the arena.
//!
//! # Limits of the oracle (states the engine does not generate)
//!
//! - `rep` string instructions whose later iterations would read a register an earlier
//!   iteration stored to through the map (rcx, rsi, rdi, rax, rflags/DF) or modified: the
//!   emulator applies map writes per iteration (each iteration is an interruptible step), the
//!   CPU-on-memory oracle only at the end; SPEC §2 does not say which is meant.
//! - 64-bit `enter` with rbp in the map whose copied frame pointers read the just-pushed rbp
//!   (the copy would carry the native address); 16-bit `enter` covers that read-after-write.
//! - `enter`'s imm16 keeps the final rsp inside the image (the CPU write-checks it first).
//! - `popf` values with TF, NT or AC set; control transfers whose target cannot be placed in
//!   the image (bytes of the rip, rflags or fs/gs slots); fault runs whose landing address
//!   cannot hold a stub (counted as "unlandable").
//! - Values derived from the fs base (ASLR) make a replay in another process differ slightly.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod arena;
pub mod case;
pub mod cpu;
pub mod forms;
pub mod model;
pub mod rng;
pub mod run;
pub mod vector;

use forms::Form;
use rng::Rng;
use run::{Outcome, RunKind, Runner};
use std::collections::BTreeMap;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The seed every case derives from.
    pub seed: u64,
    /// Emulate-run states per form and offset.
    pub states: usize,
    /// Of those, how many also run through real faults.
    pub fault_states: usize,
    /// `None`: every offset; `Some(k)`: about `k` offsets per form (first, last, aligned and
    /// unaligned ones, register-straddling ones).
    pub offsets: Option<usize>,
    /// Only forms whose title contains this text.
    pub filter: Option<String>,
    /// Worker threads (each with its own arena).
    pub threads: usize,
    /// Mismatches reported in detail per form (all are counted).
    pub details_per_form: usize,
    /// At least this many states per form: forms with few offsets (cmpxchg16b has 9 aligned
    /// ones) get more states per offset.
    pub min_states_per_form: usize,
}

impl Config {
    /// The seed from `OF_SEED` (hex, `0x` optional), or `default`.
    pub fn seed_from_env(default: u64) -> u64 {
        std::env::var("OF_SEED")
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or(default)
    }
}

/// The default seed.
pub const DEFAULT_SEED: u64 = 0x0F_D1FF_2026;

/// One disagreement.
#[derive(Clone, Debug)]
pub struct Mismatch {
    /// The form.
    pub form: String,
    /// Which run disagreed.
    pub run: RunKind,
    /// The map instruction in Intel syntax.
    pub text: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The map offset of the access.
    pub offset: u64,
    /// Addressing mode / prefix variant.
    pub variant: String,
    /// The state index (with the seed, form and offset: enough to replay).
    pub state: usize,
    /// The seed of the sweep.
    pub seed: u64,
    /// The input state.
    pub input: String,
    /// What differed.
    pub differences: Vec<String>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: Vec<String> = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(
            f,
            "MISMATCH ({:?} run) {}\n  `{}` ({}) offset {:#x}, variant {}, state #{}, seed {:#x}\n  input: {}",
            self.run,
            self.form,
            self.text,
            hex.join(" "),
            self.offset,
            self.variant,
            self.state,
            self.seed,
            self.input
        )?;
        for d in &self.differences {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

/// Results for one form.
#[derive(Clone, Debug)]
pub struct FormStats {
    /// The form.
    pub form: Form,
    /// Cases compared through the emulate run.
    pub emulated: u64,
    /// Cases compared through real faults.
    pub faulted: u64,
    /// Offsets for which no valid state was found (e.g. a jump target that cannot be placed).
    pub unbuildable: u64,
    /// Fault runs skipped because the landing address could not hold a stub.
    pub unlandable: u64,
    /// States that raised #DE (SIGFPE) on the CPU, compared like any other.
    pub divide_errors: u64,
    /// States whose control transfer landed where nothing is mapped (SIGSEGV at the target
    /// after the instruction retired: AMD's 16-bit near branches), compared like any other.
    pub fetch_faults: u64,
    /// Fault runs that went through a patched site (site patching on: each fault case runs
    /// twice from the same site, the second time patched when `of` patches the form).
    pub patched: u64,
    /// Disagreements.
    pub mismatches: u64,
    /// The emulator's refusal, if it refused.
    pub refused: Option<String>,
}

/// The result of a sweep.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Per form.
    pub forms: Vec<FormStats>,
    /// Detailed mismatches (at most `details_per_form` per form).
    pub mismatches: Vec<Mismatch>,
    /// Cases per addressing mode / prefix variant.
    pub variants: BTreeMap<String, u64>,
    /// Notes (forms skipped because the CPU lacks an extension).
    pub notes: Vec<String>,
}

impl Report {
    /// Total emulate-run cases.
    pub fn emulated(&self) -> u64 {
        self.forms.iter().map(|f| f.emulated).sum()
    }
    /// Total fault-run cases.
    pub fn faulted(&self) -> u64 {
        self.forms.iter().map(|f| f.faulted).sum()
    }
    /// Total mismatches.
    pub fn mismatch_count(&self) -> u64 {
        self.forms.iter().map(|f| f.mismatches).sum()
    }
    /// A one-paragraph summary.
    pub fn summary(&self) -> String {
        let sizes: std::collections::BTreeSet<(iced_x86::Mnemonic, u64)> = self
            .forms
            .iter()
            .map(|f| (f.form.mnemonic, f.form.size))
            .collect();
        let mnemonics: std::collections::BTreeSet<_> =
            self.forms.iter().map(|f| f.form.mnemonic).collect();
        format!(
            "differential sweep, seed {:#x}: {} forms ({} mnemonics, {} mnemonic x size), {} cases \
             ({} through emulate, {} through real faults, {} of those through a patched site), {} #DE \
             cases, {} mismatches",
            self.seed,
            self.forms.len(),
            mnemonics.len(),
            sizes.len(),
            self.emulated() + self.faulted(),
            self.emulated(),
            self.faulted(),
            self.forms.iter().map(|f| f.patched).sum::<u64>(),
            self.forms.iter().map(|f| f.divide_errors).sum::<u64>(),
            self.mismatch_count()
        )
    }
}

/// The offsets of `all` to visit: all of them, or a sample of about `k` that always includes the
/// first and last and mixes aligned, unaligned and register-straddling ones.
fn pick_offsets(all: &[u64], k: Option<usize>, size: u64, rng: &mut Rng) -> Vec<u64> {
    let Some(k) = k else {
        return all.to_vec();
    };
    if all.len() <= k {
        return all.to_vec();
    }
    let mut out = vec![all[0], all[all.len() - 1]];
    // One register-straddling offset (crosses an 8-byte slot boundary), when there is one.
    let straddling: Vec<u64> = all
        .iter()
        .copied()
        .filter(|o| o % 8 + size.min(8) > 8)
        .collect();
    if !straddling.is_empty() {
        out.push(rng.pick(&straddling));
    }
    let aligned: Vec<u64> = all
        .iter()
        .copied()
        .filter(|o| o % size.clamp(1, 8) == 0)
        .collect();
    if !aligned.is_empty() {
        out.push(rng.pick(&aligned));
    }
    while out.len() < k {
        out.push(rng.pick(all));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether `OF_TRACE=1`: print every case before running it (to find a case that kills the
/// process).
fn trace() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var("OF_TRACE").is_ok_and(|v| v == "1"))
}

/// The random stream of a form: its encoding and family, so that `OF_FILTER` replays the same
/// cases as the whole sweep.
fn stream_id(form: &Form) -> u64 {
    (form.code as u64) << 8 ^ (form.family as u64)
}

fn run_form(
    runner: &mut Runner,
    cfg: &Config,
    form: &Form,
    variants: &mut BTreeMap<String, u64>,
    details: &mut Vec<Mismatch>,
) -> FormStats {
    let mut st = FormStats {
        form: form.clone(),
        emulated: 0,
        faulted: 0,
        patched: 0,
        unbuildable: 0,
        unlandable: 0,
        divide_errors: 0,
        fetch_faults: 0,
        mismatches: 0,
        refused: None,
    };
    let mut rng = Rng::stream(cfg.seed, stream_id(form));
    let all = case::offsets(form);
    let offs = pick_offsets(&all, cfg.offsets, form.size, &mut rng);
    let mut reported = 0;
    let states = cfg
        .states
        .max(cfg.min_states_per_form.div_ceil(offs.len().max(1)));
    // Forms that get more states per offset get proportionally more fault runs.
    let fault_states = cfg.fault_states * states / cfg.states.max(1);
    for off in offs {
        for state in 0..states {
            let mut crng =
                Rng::stream(cfg.seed, stream_id(form) ^ off << 40 ^ (state as u64) << 52);
            let Some(case) = case::build(&runner.ctx, form, off, &mut crng) else {
                if state == 0 {
                    st.unbuildable += 1;
                }
                break;
            };
            if trace() {
                eprintln!(
                    "case {} off {off:#x} state {state}: {:02x?} / native {:02x?} {}",
                    form.title(),
                    case.map_code,
                    case.native_code,
                    run::describe_state(&case)
                );
            }
            let expected = runner.expected(&case);
            if expected.signal == libc::SIGFPE {
                st.divide_errors += 1;
            }
            if expected.signal == libc::SIGSEGV {
                st.fetch_faults += 1;
            }
            *variants.entry(case.variant.clone()).or_default() += 1;
            let code_address = runner.ctx.code;
            let mut report = |kind: RunKind, diffs: Vec<String>, st: &mut FormStats| {
                st.mismatches += 1;
                if reported < cfg.details_per_form {
                    reported += 1;
                    details.push(Mismatch {
                        form: form.title(),
                        run: kind,
                        text: run::disassemble(&case.map_code, code_address),
                        bytes: case.map_code.clone(),
                        offset: case.offset,
                        variant: case.variant.clone(),
                        state,
                        seed: cfg.seed,
                        input: run::describe_state(&case),
                        differences: diffs,
                    });
                }
            };
            let emulated = runner.emulate(&case);
            st.emulated += 1;
            let ok = match &emulated {
                Err(why) => {
                    if why.starts_with("refused") && st.refused.is_none() {
                        st.refused = Some(why.clone());
                    }
                    report(RunKind::Emulate, vec![why.clone()], &mut st);
                    false
                }
                Ok(actual) => {
                    let d = run::differences(&expected, actual);
                    let ok = d.is_empty();
                    if !ok {
                        report(RunKind::Emulate, d, &mut st);
                    }
                    ok
                }
            };
            // Real faults only for states the emulator already gets right: a wrong emulation
            // through the handler could take the test process down with it.
            if ok && state < fault_states {
                if runner.can_fault_run(&case, &expected) {
                    if trace() {
                        eprintln!("  fault run");
                    }
                    if of_core::patch::enabled() {
                        // Site patching on: the same site twice, fault path then patched.
                        let (first, second, patched) = runner.fault_twice(&case, &expected);
                        st.faulted += 2;
                        st.patched += u64::from(patched);
                        for actual in [first, second] {
                            let d = run::differences(&expected, &actual);
                            if !d.is_empty() {
                                report(RunKind::Fault, d, &mut st);
                            }
                        }
                    } else {
                        let actual: Outcome = runner.fault(&case, &expected);
                        st.faulted += 1;
                        let d = run::differences(&expected, &actual);
                        if !d.is_empty() {
                            report(RunKind::Fault, d, &mut st);
                        }
                    }
                } else {
                    st.unlandable += 1;
                }
            }
        }
    }
    st
}

/// Runs the differential sweep described by `cfg`.
pub fn sweep(cfg: &Config) -> Report {
    let features = cpu::Features::host();
    let codes = forms::selection();
    let mut notes = Vec::new();
    for &c in &codes {
        let (cat, why) = forms::classify(c, &features);
        if cat == forms::Category::Unavailable && why.contains("lacks") {
            let op = c.op_code();
            if op
                .op_kinds()
                .iter()
                .all(|k| !format!("{k:?}").contains("mm"))
            {
                notes.push(format!(
                    "skipped (CPU lacks {:?}): {}",
                    c.cpuid_features(),
                    op.instruction_string()
                ));
            }
        }
    }
    notes.sort();
    notes.dedup();
    let mut all = forms::integer_forms(&codes, &features);
    if let Some(f) = &cfg.filter {
        all.retain(|form| form.title().contains(f.as_str()));
    }
    let threads = cfg.threads.max(1);
    let mut results: Vec<(usize, FormStats)> = Vec::new();
    let mut mismatches = Vec::new();
    let mut variants = BTreeMap::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let all = &all;
                s.spawn(move || {
                    let mut runner = Runner::new();
                    let mut out = Vec::new();
                    let mut det = Vec::new();
                    let mut var = BTreeMap::new();
                    for (i, form) in all.iter().enumerate().filter(|(i, _)| i % threads == t) {
                        out.push((i, run_form(&mut runner, cfg, form, &mut var, &mut det)));
                    }
                    (out, det, var)
                })
            })
            .collect();
        for h in handles {
            let (out, det, var) = h.join().expect("sweep thread panicked");
            results.extend(out);
            mismatches.extend(det);
            for (k, v) in var {
                *variants.entry(k).or_insert(0) += v;
            }
        }
    });
    results.sort_by_key(|(i, _)| *i);
    Report {
        seed: cfg.seed,
        forms: results.into_iter().map(|(_, s)| s).collect(),
        mismatches,
        variants,
        notes,
    }
}
