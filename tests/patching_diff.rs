//! The integer differential sweep with site patching on (issue 14): every fault case runs twice
//! from the same site — through the fault path (which queues the site: threshold 1), then,
//! after the patcher thread handled it, through the patched jump when `of` patches the form —
//! and both runs must agree with the CPU on all 16 GPRs, the six status flags, DF, the landing
//! address, #DE and ordinary memory. The engine is the `difftest` crate (see
//! `tests/differential.rs`); the vector sweep with patching is in `tests/patching_vector.rs`.
//!
//! `cargo test` runs a fast subset; the full sweep:
//!
//! ```text
//! cargo test --release --test patching_diff -- --ignored --nocapture
//! ```

use difftest::{Config, DEFAULT_SEED, Report, sweep};

fn run(cfg: &Config) -> Option<Report> {
    of::map_registers().unwrap();
    if !of::engine::signal::set_patching(true) {
        eprintln!("skipped: this kernel refuses core-serialising membarriers (patching is off)");
        return None;
    }
    of::engine::patch::set_threshold(1);
    let before = of::engine::patch::stats();
    let r = sweep(cfg);
    let after = of::engine::patch::stats();
    println!("{}", r.summary());
    println!("patching: {before:?} -> {after:?}");
    for m in r.mismatches.iter().take(20) {
        println!("  {m:?}");
    }
    Some(r)
}

fn check(r: &Report) {
    let patched: u64 = r.forms.iter().map(|f| f.patched).sum();
    let forms_patched = r.forms.iter().filter(|f| f.patched > 0).count();
    println!("{forms_patched} forms ran through patched sites ({patched} runs)");
    assert!(patched > 0, "no fault run went through a patched site");
    assert_eq!(r.mismatch_count(), 0, "mismatches with patching on");
}

#[test]
fn integer_forms_agree_with_the_cpu_through_patched_sites() {
    let cfg = Config {
        seed: Config::seed_from_env(DEFAULT_SEED) ^ 0x9A7C,
        states: 3,
        fault_states: 2,
        offsets: Some(6),
        filter: None,
        threads: 1,
        details_per_form: 2,
        min_states_per_form: 0,
    };
    if let Some(r) = run(&cfg) {
        check(&r);
    }
}

#[test]
#[ignore = "long: run with --ignored"]
fn integer_forms_agree_with_the_cpu_through_patched_sites_full_sweep() {
    let cfg = Config {
        seed: Config::seed_from_env(DEFAULT_SEED) ^ 0x9A7C,
        states: 32,
        fault_states: 4,
        offsets: None,
        filter: None,
        threads: std::env::var("OF_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
        details_per_form: 3,
        min_states_per_form: 2048,
    };
    if let Some(r) = run(&cfg) {
        check(&r);
    }
}
