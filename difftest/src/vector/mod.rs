//! Differential engine for the vector instructions on the map (issues 5 and 12): the host CPU
//! is the oracle. `tests/vector_diff.rs` in the root crate runs it (fast subset in `cargo test`,
//! the full sweep behind `--ignored`); the `coverage` binary runs it for the coverage table.
//!
//! Forms: every iced-x86 `Code` of a legacy-SSE, VEX or EVEX instruction with a memory operand
//! that this CPU implements (CPUID and the OS's XCR0: EVEX forms only where AVX-512 is enabled,
//! each AVX-512 subset only where the CPU reports it; the others are listed as skipped with the
//! missing features) and that `of` classifies as vector data movement or vector host
//! execution (see `forms::forms`); the test fails if any vector form with a memory operand is
//! refused, except the refusals listed in `EXPECTED_REFUSALS`.
//!
//! Each case draws a random state — all vector registers (zmm0..zmm31 with AVX-512, else
//! ymm0..ymm15: random bits and special floating-point values: zeros, infinities, NaNs,
//! denormals, extremes), k0..k7 (all ones, zero, one bit, sparse, random), the GPRs, the status
//! flags and DF, MXCSR (rounding, FTZ, DAZ, AMD's misaligned-SSE bit, sticky flags, sometimes
//! unmasked exceptions) — random operand registers and imm8, for EVEX forms a random opmask
//! (k1..k7 or none), zeroing-masking and embedded broadcast where the form allows them, and a
//! map offset (aligned or not, straddling registers, any mapped bytes a load may read and any
//! writable bytes a store may write; for masked EVEX forms also offsets where only the selected
//! elements are mapped), then:
//!
//! 1. runs the instruction natively with its memory operand on an ordinary buffer holding the
//!    register image (same layout as the map): the expected result is the CPU's final registers
//!    with the bytes the instruction stored into the image applied last (SPEC §2);
//! 2. emulates it with `of_core::emulate` on an `of_core::RegisterFile` (no fault);
//! 3. for some cases, runs it through the map (real fault, `of`'s handler, the upper vector
//!    state and the opmask registers from the signal frame's XSAVE area).
//!
//! Compared: zmm0..zmm31 (512 bits each; ymm0..ymm15 without AVX-512), k0..k7, the 16 GPRs,
//! the status flags and DF, MXCSR, and the exception raised (#GP as SIGSEGV/SI_KERNEL, #XM as
//! SIGFPE with the kernel's FPE_FLT* code).
//!
//! [`footprint`] checks the AVX-512 fault-suppression model (which bytes a masked access
//! touches) against the CPU with guard pages.

mod arena;
pub mod footprint;

/// Installs the engine's signal catcher, then `of`'s handler above it (what [`sweep`] does on
/// first use): call it first when the process must set `of` up further before sweeping (site
/// patching, for one).
pub fn prepare() {
    arena::setup();
}
mod forms;
mod run;
mod state;

use arena::{Arena, setup};
use forms::{Form, encode, iced_text, instance, is_write, mem_size, offset, readable, writable};
use iced_x86::{Code, Mnemonic, OpAccess, Register};
use of_core::emulate::table::{Kind, classify};
use run::{core_run, fault_run, native};
use state::{Rng, diff, random_state};

/// Forms refused on purpose (with the reason `of` prints).
const EXPECTED_REFUSALS: &[Mnemonic] = &[];

/// How `of` executes a vector form (from `of_core::emulate::table::classify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Execution {
    /// Emulated in Rust as data movement (loads, stores, inserts, extracts, broadcasts).
    Move,
    /// Run on the host as the register form of the same instruction (arithmetic, conversions).
    Host,
}

/// Counts of one form.
#[derive(Clone, Debug)]
pub struct VectorFormStats {
    /// The encoding tested.
    pub code: Code,
    /// How `of` executes it.
    pub execution: Execution,
    /// Cases run through `of_core::emulate` (no fault).
    pub emulated: u64,
    /// Cases run through the map with a real fault.
    pub faulted: u64,
    /// Cases where the CPU raised an exception (#GP, #XM), compared like a result.
    pub exceptions: u64,
    /// Cases with an opmask (EVEX).
    pub masked: u64,
    /// Cases whose unselected elements lay outside the mapped bytes (EVEX fault suppression).
    pub suppressed: u64,
    /// Cases addressed as `[base + disp]` (EVEX; compressed disp8*N included).
    pub based: u64,
    /// Of those, cases encoded with a compressed 8-bit displacement (disp8*N).
    pub disp8: u64,
    /// Cases refused on purpose (dpps/dppd with an unmasked exception).
    pub refused_cases: u64,
    /// Cases that disagreed with the CPU.
    pub mismatches: u64,
}

/// Counts of a sweep.
#[derive(Default, Debug)]
pub struct Tally {
    /// Forms run.
    pub forms: usize,
    /// EVEX forms among them.
    pub evex_forms: usize,
    /// Cases through `of_core::emulate`.
    pub core_cases: usize,
    /// Cases through the map with a real fault.
    pub fault_cases: usize,
    /// Cases where the CPU raised an exception.
    pub exceptions: usize,
    /// Cases with an opmask.
    pub masked_cases: usize,
    /// Cases whose unselected elements lay outside the mapped bytes.
    pub suppressed_cases: usize,
    /// Cases addressed as `[base + disp]`, and of those with a compressed disp8*N.
    pub based_cases: (usize, usize),
    /// Vector forms with a memory operand that `of` refuses (with the reason).
    pub refused: Vec<(Code, &'static str)>,
    /// Vector forms this CPU cannot run (with the missing CPUID features).
    pub skipped: Vec<(Code, String)>,
    /// Cases refused on purpose (dpps/dppd with an unmasked exception).
    pub refused_cases: usize,
    /// Descriptions of the disagreements (at most 3 per form).
    pub mismatches: Vec<String>,
    /// Per-form counts, in `Code` order.
    pub per_form: Vec<VectorFormStats>,
}

/// A base register for `[base + disp]` addressing of an operand of `size` bytes at map offset
/// `off`: a general-purpose register the instruction does not name and whose map slot the
/// operand does not cover (its value differs between the native and the mapped run), and a
/// displacement that is a small multiple of the operand size (a compressed disp8*N), a small
/// byte offset (a disp8 that cannot be compressed: disp32) or zero.
fn base_register(
    r: &mut Rng,
    instr: &iced_x86::Instruction,
    off: u64,
    size: u64,
) -> Option<(Register, i64)> {
    let named = (0..instr.op_count())
        .filter(|&i| instr.op_kind(i) == iced_x86::OpKind::Register)
        .map(|i| instr.op_register(i))
        .filter(|r| r.is_gpr())
        .map(|r| r.full_register())
        .collect::<Vec<_>>();
    for _ in 0..8 {
        let g = Register::RAX + r.below(16) as u32;
        let slot = 8 * g.number() as u64;
        if g == Register::RSP || named.contains(&g) || (off < slot + 8 && slot < off + size) {
            continue;
        }
        let n = size.clamp(1, 64) as i64;
        let disp = match r.below(3) {
            0 => n * (r.below(9) as i64 - 4),
            1 => r.below(256) as i64 - 128,
            _ => 0,
        };
        return Some((g, disp));
    }
    None
}

/// A random offset for a masked EVEX case where only the bytes the opmask selects need be
/// mapped (and writable, for a store): the unselected ones may lie in the holes of the map.
fn suppressed_offset(
    r: &mut Rng,
    probe: &iced_x86::Instruction,
    s: &state::State,
    write: bool,
) -> Option<(u64, bool)> {
    let size = mem_size(probe);
    let rf = of_core::RegisterFile {
        opmask: s.k,
        ..Default::default()
    };
    // The bytes the CPU checks (the model `tests/vector_diff.rs` holds against the CPU with
    // guard pages).
    let all = if size >= 64 {
        u64::MAX
    } else {
        (1 << size) - 1
    };
    let bytes = of_core::emulate::vector::evex::access(&rf, probe, 0).selected & all;
    if bytes == 0 || size > 64 {
        return None;
    }
    for _ in 0..64 {
        // Mostly just below a hole of the map (0xa0..0x100, 0x204..), where a full operand
        // would not fit.
        let off = match r.below(3) {
            0 => r.below(0x204 + 0x40),
            1 => 0xA0 - 1 - r.below(0x40),
            _ => 0x204 - 1 - r.below(0x40),
        };
        let a = of_core::emulate::operands::Access::masked(off, size, write, bytes);
        let ok = a.runs().all(|(at, len)| {
            if write {
                writable(at, len)
            } else {
                readable(at, len)
            }
        });
        if ok && a.runs().next().is_some() {
            let whole = if write {
                writable(off, size)
            } else {
                readable(off, size)
            };
            return Some((off, !whole));
        }
    }
    None
}

/// Runs every vector form (or those whose `Code` name contains `filter`, case-insensitive)
/// from `states` random states each; every `fault_every`-th state (0: none) also runs through
/// the map with a real fault.
///
/// Maps the registers and installs the arena's signal catcher beneath `of`'s handler on first
/// use: call it from a process that installs no other catcher (the integer engine's own).
///
/// # Panics
///
/// If the arena cannot be mapped or `of::map_registers` fails.
pub fn sweep(seed: u64, states: usize, fault_every: usize, filter: Option<&str>) -> Tally {
    setup();
    let a = Arena::get();
    let avx512 = arena::avx512();
    let (forms, refused, skipped) = forms::forms();
    let unexpected: Vec<_> = refused
        .iter()
        .filter(|(c, _)| !EXPECTED_REFUSALS.contains(&c.mnemonic()))
        .map(|(c, why)| format!("{c:?}: {why}"))
        .collect();
    if std::env::var_os("OF_VECTOR_LIST").is_some() {
        list(&forms);
    }
    let mut t = Tally::default();
    if filter.is_none() && !unexpected.is_empty() {
        t.mismatches.push(format!("refused: {unexpected:#?}"));
    }
    t.refused = refused;
    t.skipped = skipped;
    let mut r = Rng(seed | 1);
    for f in &forms {
        let name = format!("{:?}", f.code);
        if let Some(want) = filter
            && !name.to_lowercase().contains(&want.to_lowercase())
        {
            continue;
        }
        t.forms += 1;
        if f.evex() {
            t.evex_forms += 1;
        }
        let mut st = VectorFormStats {
            code: f.code,
            execution: execution(f.code),
            emulated: 0,
            faulted: 0,
            exceptions: 0,
            masked: 0,
            suppressed: 0,
            based: 0,
            disp8: 0,
            refused_cases: 0,
            mismatches: 0,
        };
        for k in 0..states {
            let s = random_state(&mut r, a.stack_top(), avx512);
            let seed_instr = r.next();
            let probe = instance(f.code, &mut Rng(seed_instr | 1), 0).unwrap();
            let write = is_write(f.access);
            let masked = !matches!(probe.op_mask(), Register::None);
            let (off, suppressed) = match masked && r.chance(3) {
                true => suppressed_offset(&mut r, &probe, &s, write)
                    .unwrap_or_else(|| (offset(&mut r, mem_size(&probe), write), false)),
                false => (offset(&mut r, mem_size(&probe), write), false),
            };
            let mut mapped = instance(f.code, &mut Rng(seed_instr | 1), off).unwrap();
            let mut native_i =
                instance(f.code, &mut Rng(seed_instr | 1), a.native_base() + off).unwrap();
            let size = mem_size(&probe) as usize;
            // EVEX forms: half the cases address the operand as [base + disp] with a
            // displacement that is often a multiple of the operand's disp8*N scale, so the
            // compressed 8-bit displacement is exercised; the base register holds the map
            // offset (or the native address) minus the displacement.
            let mut s = s;
            let mut s_native = s;
            let mut base = None;
            if f.evex()
                && r.chance(2)
                && let Some((g, disp)) = base_register(&mut r, &mapped, off, size as u64)
            {
                mapped.set_memory_base(g);
                mapped.set_memory_displacement64(disp as u64);
                mapped.set_memory_displ_size(1);
                native_i = mapped;
                let n = g.number();
                s.gpr[n] = off.wrapping_sub(disp as u64);
                s_native.gpr[n] = (a.native_base() + off).wrapping_sub(disp as u64);
                base = Some(n);
            }
            let (Some(mb), Some(nb)) = (
                encode(&mapped, a.code_addr()),
                encode(&native_i, a.code_addr()),
            ) else {
                continue; // an operand combination iced-x86 cannot encode
            };
            assert_eq!(mb.len(), nb.len(), "{name}: encodings differ in length");
            // A masked store writes the selected elements only: found by running it twice.
            let store = f.mem_op == 0 && is_write(f.access);
            let range = off as usize..(off as usize + size).min(0x204);
            let written = (f.access == OpAccess::Write || (store && masked)).then_some(range);
            let mut want = native(&a, &s_native, &nb, written, store && masked);
            if let Some(n) = base {
                // The base register is not written by the instruction: it keeps the map
                // offset on the other side.
                want.state.gpr[n] = s.gpr[n];
                st.based += 1;
                let compressed = of_core::decode::decode(&mb, a.code_addr())
                    .is_ok_and(|(_, o)| o.displacement_size() == 1);
                st.disp8 += u64::from(compressed);
            }
            if want.signal.0 != 0 {
                st.exceptions += 1;
            }
            st.emulated += 1;
            st.masked += u64::from(masked);
            st.suppressed += u64::from(suppressed);
            let what = |how: &str| {
                let text = iced_text(&mapped);
                format!("{name} `{text}` off {off:#x} mem_op {} {how}", f.mem_op)
            };
            let core = core_run(&a, &s, &mb);
            if let Err(e) = &core
                && e.contains("dpps/dppd raising")
                && want.signal.0 == libc::SIGFPE as u64
            {
                // Refused on purpose (see of_core::emulate::vector::execute_host); through the
                // map it would end the process with a diagnostic.
                st.refused_cases += 1;
                continue;
            }
            let ks = if masked {
                format!(
                    " k{}={:#x}",
                    probe.op_mask().number(),
                    s.k[probe.op_mask().number()]
                )
            } else {
                String::new()
            };
            match core {
                Ok(got) if diff(&want, &got).is_empty() => {}
                Ok(got) => {
                    st.mismatches += 1;
                    t.mismatches.push(format!(
                        "{} core:{}{ks} in {s:x?}",
                        what(""),
                        diff(&want, &got)
                    ));
                }
                Err(e) => {
                    st.mismatches += 1;
                    t.mismatches.push(format!("{} core: {e}{ks}", what("")));
                }
            }
            if fault_every != 0 && (k % fault_every == 0 || suppressed) {
                // With site patching on, each fault case runs twice from the same site: the
                // second time after the patcher thread handled it (vector forms are never
                // patched: the site keeps the fault path).
                let runs = if of_core::patch::enabled() { 2 } else { 1 };
                for run in 0..runs {
                    if run == 1 {
                        of_core::patch::flush();
                    }
                    st.faulted += 1;
                    let got = fault_run(&a, &s, &mb);
                    if !diff(&want, &got).is_empty() {
                        st.mismatches += 1;
                        t.mismatches
                            .push(format!("{} fault:{}{ks}", what(""), diff(&want, &got)));
                    }
                }
            }
            if st.mismatches >= 3 {
                break; // enough examples for this form
            }
        }
        t.core_cases += st.emulated as usize;
        t.fault_cases += st.faulted as usize;
        t.exceptions += st.exceptions as usize;
        t.masked_cases += st.masked as usize;
        t.suppressed_cases += st.suppressed as usize;
        t.based_cases.0 += st.based as usize;
        t.based_cases.1 += st.disp8 as usize;
        t.refused_cases += st.refused_cases as usize;
        t.per_form.push(st);
    }
    t
}

/// Prints the mnemonics by execution path (OF_VECTOR_LIST).
fn list(forms: &[Form]) {
    let mut moves = std::collections::BTreeSet::new();
    let mut host = std::collections::BTreeSet::new();
    for f in forms {
        let enc = if f.evex() { "EVEX " } else { "" };
        match execution(f.code) {
            Execution::Move => moves.insert(format!("{enc}{:?}", f.code.mnemonic())),
            Execution::Host => host.insert(format!("{enc}{:?}", f.code.mnemonic())),
        };
    }
    eprintln!(
        "data movement ({}): {}",
        moves.len(),
        Vec::from_iter(moves).join(" ")
    );
    eprintln!(
        "host execution ({}): {}",
        host.len(),
        Vec::from_iter(host).join(" ")
    );
}

/// How `of` executes `code` (a form [`sweep`] tests).
fn execution(code: Code) -> Execution {
    let probe = instance(code, &mut Rng(1), 0x40).expect("a tested form has an instance");
    match classify(&probe) {
        Kind::Vector(_) | Kind::EvexMove(_) => Execution::Move,
        _ => Execution::Host,
    }
}

impl Tally {
    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "vector differential: {} forms ({} EVEX; {} vector forms refused; {} skipped: the CPU lacks them), {} emulate cases ({} with an opmask, {} with unselected elements outside the map, {} as [base + disp] of which {} with a compressed disp8*N; {} refused: dpps/dppd with an unmasked exception), {} fault cases, {} raised exceptions, {} mismatches",
            self.forms,
            self.evex_forms,
            self.refused.len(),
            self.skipped.len(),
            self.core_cases,
            self.masked_cases,
            self.suppressed_cases,
            self.based_cases.0,
            self.based_cases.1,
            self.refused_cases,
            self.fault_cases,
            self.exceptions,
            self.mismatches.len()
        )
    }

    /// The skipped forms grouped by the features the CPU lacks, one line per group.
    pub fn skipped_summary(&self) -> Vec<String> {
        let mut groups: std::collections::BTreeMap<&str, usize> = Default::default();
        for (_, why) in &self.skipped {
            *groups.entry(why.as_str()).or_default() += 1;
        }
        groups
            .into_iter()
            .map(|(why, n)| format!("skipped: {n} forms need {why}, which this CPU lacks"))
            .collect()
    }
}

/// Prints the summary, what was skipped and up to 40 mismatches to stderr.
///
/// # Panics
///
/// If there was any mismatch or unexpected refusal.
pub fn report(t: &Tally) {
    eprintln!("{}", t.summary());
    for line in t.skipped_summary() {
        eprintln!("  {line}");
    }
    for m in t.mismatches.iter().take(40) {
        eprintln!("  {m}");
    }
    assert!(t.mismatches.is_empty(), "{} mismatches", t.mismatches.len());
}
