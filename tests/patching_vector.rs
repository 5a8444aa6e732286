//! The vector differential sweep with site patching on (issue 14): every fault case runs twice
//! from the same site, the second time after the patcher thread handled the site. `of` patches
//! no vector form (they stay on the fault path: `of_core::patch::plan::plan`), so both runs go
//! through the fault path and must agree with the CPU; the sites are refused, never patched.

use difftest::vector::{prepare, report, sweep};

#[test]
fn vector_forms_agree_with_the_cpu_with_patching_on() {
    prepare(); // the engine's catcher, then of's handler above it
    if !of::engine::signal::set_patching(true) {
        eprintln!("skipped: this kernel refuses core-serialising membarriers (patching is off)");
        return;
    }
    of::engine::patch::set_threshold(1);
    let before = of::engine::patch::stats();
    let t = sweep(0x9A7C_0005, 4, 2, None);
    let after = of::engine::patch::stats();
    eprintln!("patching: {before:?} -> {after:?}");
    report(&t);
    assert!(after.queued > before.queued, "no site was queued");
    assert_eq!(after.patched, before.patched, "a vector form was patched");
}
