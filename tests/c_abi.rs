//! The C and assembly face: `make joy` (examples/example.s sets its system-call registers only
//! through the map) and `make hello` (examples/hello.c), built against `libof.a`.
//!
//! The inner `cargo build` uses its own target directory (`target/c-abi`) so it never waits on
//! the lock of the `cargo test` that runs this.

use std::path::PathBuf;
use std::process::Command;

/// Runs `make TARGET`; `None` (after a message on stderr) when there is no C compiler or make.
fn make(target: &str) -> Option<std::process::Output> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target").join("c-abi");
    for tool in ["cc", "make"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!(
                "SKIPPED: `{tool}` not found; the C/assembly tests need gcc, binutils and make"
            );
            return None;
        }
    }
    let out = Command::new("make")
        .arg(target)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "make {target} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out)
}

#[test]
fn make_joy_prints_through_registers_written_via_the_map() {
    let Some(out) = make("joy") else { return };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == "memory-mapped registers work!"),
        "{stdout}"
    );
}

#[test]
fn hello_c_does_arithmetic_through_the_map() {
    let Some(out) = make("hello") else { return };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("r12 = 42") && stdout.contains(": ok"),
        "{stdout}"
    );
}

#[test]
fn c_programs_pass_at_every_optimisation_level() {
    let Some(out) = make("c-tests") else { return };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    // Every program ran at every level, with site patching off and on, and reached its
    // verdict line.
    for prog in ["memcpy_snapshot", "pointers", "regions", "threads"] {
        for opt in ["-O0", "-O1", "-O2", "-O3", "-Os"] {
            for run in ["", ", site patching on (OF_PATCH=1)"] {
                assert!(
                    stdout.contains(&format!("== {prog} {opt}{run}\n")),
                    "{prog} {opt}{run} did not run:\n{stdout}"
                );
            }
        }
    }
    assert_eq!(
        stdout
            .matches("pointers: 200 rounds, 0 mismatches: ok")
            .count(),
        10,
        "{stdout}"
    );
    // threads.c and regions.c (trapped regions through of.h), 10 runs each.
    assert_eq!(stdout.matches(", 0 wrong: ok").count(), 20, "{stdout}");
    assert_eq!(
        stdout.matches("regions: 16 checks, 0 wrong: ok").count(),
        10,
        "{stdout}"
    );
}
