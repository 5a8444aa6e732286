//! The examples run as programs: `dump` prints the register table, and a program written for
//! `of` 0.1 (tests/compat-0.1, a separate crate) builds unchanged and works in debug and release.

use std::path::PathBuf;
use std::process::Command;

/// target/<profile>/examples/<name>, built by `cargo test` alongside this test; built here if
/// only this test target was requested (`cargo test --test ...` does not build examples).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building example {name}");
    }
    path
}

#[test]
fn dump_prints_every_register_with_its_offset() {
    let out = Command::new(example("dump")).output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for (name, off) in [
        ("rax", "0x0"),
        ("rsp", "0x20"),
        ("r15", "0x78"),
        ("rip", "0x80"),
        ("xmm15", "0x1f0"),
    ] {
        assert!(
            s.lines().any(|l| l.starts_with(name) && l.contains(off)),
            "{name}: {s}"
        );
    }
    let rsp = s.lines().find(|l| l.starts_with("rsp ")).unwrap();
    let v = u64::from_str_radix(rsp.rsplit("0x").next().unwrap(), 16).unwrap();
    assert!(v > 0x1000, "{rsp}");
}

#[test]
fn a_program_written_for_of_0_1_builds_and_runs_in_debug_and_release() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests").join("compat-0.1");
    let target = root.join("target").join("compat-0.1");
    for release in [false, true] {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.arg("run")
            .arg("-q")
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target);
        if release {
            cmd.arg("--release");
        }
        let out = cmd.output().unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "release={release}: {s}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(s.starts_with("rsp: "), "{s}");
        assert!(
            s.contains("very good") && s.contains("a1: 1, a2: 1234"),
            "release={release}: {s}"
        );
    }
}

#[test]
fn green_threads_switch_through_the_map_and_agree_on_the_checksum() {
    let out = Command::new(example("green_threads")).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    // The same round-robin computed here without any context switch.
    let (coroutines, rounds) = (3u64, 1000u64);
    let mut sum = 0u64;
    for k in 0..rounds {
        for me in 0..coroutines {
            let x = (me as f64 + 0.5) * (k as f64 + 0.25);
            sum = sum.wrapping_mul(1_000_003) ^ (me * 1_000_000 + k) ^ x.to_bits();
        }
    }
    assert!(s.contains("switches: 6000"), "{s}");
    assert!(
        s.contains(&format!("checksum: {sum:#018x}")),
        "{s} vs {sum:#018x}"
    );
}
