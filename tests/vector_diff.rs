//! Differential tests of the vector instructions on the map (issue 5), run by the engine in
//! `difftest::vector` (see its docs for how a case is drawn, run and compared): every legacy-SSE
//! and VEX form with a memory operand that this CPU implements, natively on a buffer holding the
//! register image vs. through `of_core::emulate` vs. through the map with a real fault.
//!
//! Environment: `OF_VECTOR_SEED`, `OF_VECTOR_STATES` (fast subset, default 12),
//! `OF_VECTOR_FILTER` (substring of the iced-x86 `Code` name), `OF_VECTOR_LIST=1` (print the
//! mnemonics by execution path).

use difftest::vector::{report, sweep};

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Fast subset: every form, a few states each, one in four through a real fault.
#[test]
fn vector_forms_match_the_cpu() {
    let seed = env("OF_VECTOR_SEED").unwrap_or(0x5EED_0005);
    let filter = std::env::var("OF_VECTOR_FILTER").ok();
    let states = env("OF_VECTOR_STATES").unwrap_or(12);
    let t = sweep(seed, states, 4, filter.as_deref());
    assert!(filter.is_some() || t.forms > 300, "only {} forms", t.forms);
    assert!(
        t.per_form
            .iter()
            .all(|f| f.emulated > 0 || f.refused_cases > 0)
    );
    report(&t);
}

/// Full sweep: 1000 states per form, one in ten through a real fault.
#[test]
#[ignore = "long: run with --ignored"]
fn vector_forms_match_the_cpu_full_sweep() {
    let t = sweep(0xF011_5EED, 1000, 10, None);
    report(&t);
}

/// The AVX-512 fault-suppression model (which bytes a masked EVEX access touches) against the
/// CPU, with guard pages: every EVEX form with an opmask this CPU implements.
#[test]
fn evex_fault_suppression_matches_the_cpu() {
    if !of::engine::cpu::get().avx512() {
        eprintln!(
            "skipped: this CPU has no AVX-512, or OF_CPU_HIDE hides it (EVEX forms are not emulated here)"
        );
        return;
    }
    let filter = std::env::var("OF_VECTOR_FILTER").ok();
    let t = difftest::vector::footprint::probe(0xF00D, 2, filter.as_deref());
    eprintln!(
        "EVEX fault suppression: {} forms, {} native runs ({} faulted), {} disagreements with the model",
        t.forms,
        t.runs,
        t.faults,
        t.mismatches.len()
    );
    for m in t.mismatches.iter().take(400) {
        eprintln!("  {m}");
    }
    assert!(filter.is_some() || t.forms > 500, "only {} forms", t.forms);
    assert!(t.mismatches.is_empty());
}
