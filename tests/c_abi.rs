//! The C and assembly face: `make joy` (examples/example.s sets its system-call registers only
//! through the map) and `make hello` (examples/hello.c), built against `libof.a`.
//!
//! The inner `cargo build` uses its own target directory (`target/c-abi`) so it never waits on
//! the lock of the `cargo test` that runs this.

use std::path::PathBuf;
use std::process::Command;

fn make(target: &str) -> std::process::Output {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target").join("c-abi");
    assert!(
        Command::new("gcc").arg("--version").output().is_ok(),
        "gcc is required for the C tests (.ci/run installs build-essential)"
    );
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
    out
}

#[test]
fn make_joy_prints_through_registers_written_via_the_map() {
    let out = make("joy");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == "memory-mapped registers work!"),
        "{stdout}"
    );
}

#[test]
fn hello_c_does_arithmetic_through_the_map() {
    let out = make("hello");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("r12 = 42") && stdout.contains(": ok"),
        "{stdout}"
    );
}

#[test]
fn c_programs_pass_at_every_optimisation_level() {
    let out = make("c-tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("memcpy snapshot") && !stdout.contains("MISMATCH"),
        "{stdout}"
    );
}
