//! Runs the differential sweep and prints the summary and every mismatch in detail.
//!
//! Environment: `OF_SEED` (hex), `OF_STATES` (emulate-run states per form and offset, default
//! 32), `OF_FAULT_STATES` (of those, through real faults, default 4), `OF_OFFSETS` (sample this
//! many offsets per form; default all), `OF_FILTER` (only forms whose title contains it),
//! `OF_THREADS` (default 1), `OF_MIN_STATES` (states per form at least, default 2048),
//! `OF_VERBOSE=1` (per-form lines). Exits 1 on any mismatch.

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let cfg = difftest::Config {
        seed: difftest::Config::seed_from_env(difftest::DEFAULT_SEED),
        states: env("OF_STATES").unwrap_or(32),
        fault_states: env("OF_FAULT_STATES").unwrap_or(4),
        offsets: env("OF_OFFSETS"),
        filter: std::env::var("OF_FILTER").ok(),
        threads: env("OF_THREADS").unwrap_or(1),
        details_per_form: env("OF_DETAILS").unwrap_or(3),
        min_states_per_form: env("OF_MIN_STATES").unwrap_or(2048),
    };
    let started = std::time::Instant::now();
    let report = difftest::sweep(&cfg);
    for n in &report.notes {
        println!("note: {n}");
    }
    if env::<u32>("OF_VERBOSE") == Some(1) {
        for f in &report.forms {
            println!(
                "{:<60} emulate {:>7} fault {:>6} #DE {:>5} unbuildable {:>3} unlandable {:>5} mismatches {}",
                f.form.title(),
                f.emulated,
                f.faulted,
                f.divide_errors,
                f.unbuildable,
                f.unlandable,
                f.mismatches
            );
        }
        for (v, n) in &report.variants {
            println!("variant {v:<50} {n}");
        }
    }
    for m in &report.mismatches {
        print!("{m}");
    }
    let failing: Vec<String> = report
        .forms
        .iter()
        .filter(|f| f.mismatches > 0)
        .map(|f| {
            format!(
                "{} ({} mismatches{})",
                f.form.title(),
                f.mismatches,
                f.refused
                    .as_ref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    for f in &failing {
        println!("failing form: {f}");
    }
    println!("{}", report.summary());
    println!("elapsed: {:.1?}", started.elapsed());
    if report.mismatch_count() > 0 {
        std::process::exit(1);
    }
}
