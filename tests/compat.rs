//! Source compatibility with `of` 0.1 (SPEC §5): `tests/compat-0.1` is a separate crate holding
//! the original hello_world program, unchanged, and a program calling every 0.1 register
//! method. This test builds it with cargo (its own target directory, `target/compat`) in debug
//! and release and checks what the programs print.

use std::path::{Path, PathBuf};
use std::process::Command;

fn build(release: bool) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join("compat");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "--bins"])
        .current_dir(root.join("tests").join("compat-0.1"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS");
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "building the 0.1 program (release={release}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join(if release { "release" } else { "debug" })
}

fn run(exe: &Path, args: &[&str]) -> String {
    let out = Command::new(exe).args(args).output().expect("run program");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {stdout}\n{}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The original program: prints rsp, moves rsp and jumps through RIP to `lol`, which moves rsp
/// again and jumps to `lol_args(1, 1234)` with the arguments written through RDI and RSI.
#[test]
fn the_original_hello_world_builds_unchanged_and_runs_in_debug_and_release() {
    for release in [false, true] {
        let dir = build(release);
        let s = run(&dir.join("of-compat-0-1"), &[]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3, "release={release}: {s}");
        let rsp = lines[0].strip_prefix("rsp: ").expect("`rsp: <hex>` first");
        let rsp = u64::from_str_radix(rsp, 16).expect("hex");
        assert!(
            rsp > 0x1000 && rsp.is_multiple_of(8),
            "release={release}: {s}"
        );
        assert_eq!(
            lines[1..],
            ["very good", "a1: 1, a2: 1234"],
            "release={release}"
        );
    }
}

#[test]
fn every_0_1_method_gives_the_value_0_1_documented() {
    for release in [false, true] {
        let dir = build(release);
        for (a, b) in [
            (5u64, 3u64),
            (0, 1),
            (u64::MAX, 2),
            (0x8000_0000_0000_0000, 0x8000_0000_0000_0000),
            (0x1234_5678_9ABC_DEF0, 0x0F0F_0F0F_F0F0_F0F0),
        ] {
            let s = run(&dir.join("all_methods"), &[&a.to_string(), &b.to_string()]);
            let expected = [
                format!("load {a}"),
                format!("add {}", a.wrapping_add(b)),
                format!("sub {}", a.wrapping_sub(b)),
                format!("bitand {}", a & b),
                format!("bitor {}", a | b),
                format!("bitxor {}", a ^ b),
                format!("add_assign {}", a.wrapping_add(b)),
                format!("sub_assign {}", a.wrapping_sub(b)),
                format!("bitand_assign {}", a & b),
                format!("bitor_assign {}", a | b),
                format!("bitxor_assign {}", a ^ b),
                format!("r11 add_assign {}", a.wrapping_add(b)),
                // bit 1 of rflags is always set
                "rflags 2".to_string(),
            ];
            let lines: Vec<&str> = s.lines().collect();
            assert_eq!(lines, expected, "release={release} a={a:#x} b={b:#x}");
        }
    }
}
