//! The examples run as programs: `hello_world` (written with `#[of::mapped]`), `dump` (the
//! register table) and `green_threads` (coroutines switching through the map). The `of` 0.1
//! program is built and run by `tests/compat.rs`.

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
    // MXCSR as every Rust program starts: all six exceptions masked, round to nearest.
    let mxcsr = s.lines().find(|l| l.starts_with("mxcsr ")).unwrap();
    assert!(mxcsr.contains("0x200"), "{mxcsr}");
    let m = u32::from_str_radix(mxcsr.rsplit("0x").next().unwrap(), 16).unwrap();
    assert_eq!(m & 0xFFC0, 0x1F80, "{mxcsr}");
    let rsp = s.lines().find(|l| l.starts_with("rsp ")).unwrap();
    let v = u64::from_str_radix(rsp.rsplit("0x").next().unwrap(), 16).unwrap();
    assert!(v > 0x1000, "{rsp}");
}

/// The README's main job: rsp read through the map, then rsp, rdi, rsi and rip written through
/// it in one fused `#[of::mapped]` block, landing in `hello(1, 1234)`.
#[test]
fn hello_world_prints_rsp_then_the_arguments_it_jumped_with() {
    let out = Command::new(example("hello_world")).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 2, "{s}");
    let rsp = lines[0].strip_prefix("rsp: 0x").expect("`rsp: 0x…` first");
    let rsp = u64::from_str_radix(rsp, 16).expect("hex");
    assert!(rsp > 0x1000 && rsp.is_multiple_of(8), "{s}");
    assert_eq!(lines[1], "a1: 1, a2: 1234");
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
