//! The end-to-end spine (issue 2): the hello_world example as a subprocess, and a read
//! outside the map dying by SIGSEGV after the one-line diagnostic.

use std::os::unix::process::ExitStatusExt;
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
fn hello_world_prints_rsp_and_its_arguments_and_exits_0() {
    let out = Command::new(example("hello_world"))
        .output()
        .expect("run hello_world");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let rsp = lines.next().unwrap_or_default();
    let value = rsp
        .strip_prefix("rsp: 0x")
        .expect("first line is `rsp: 0x...`");
    let value = u64::from_str_radix(value, 16).expect("hex rsp");
    assert!(
        value > 0x1000 && value.is_multiple_of(8),
        "implausible rsp {value:#x}"
    );
    assert!(stdout.lines().any(|l| l == "a1: 1, a2: 1234"), "{stdout}");
}

#[test]
fn a_read_outside_the_map_dies_by_sigsegv_after_one_line() {
    if std::env::var_os("OF_SPINE_CHILD").is_some() {
        of::map_registers().unwrap();
        // SAFETY: deliberately faults; the process is expected to die.
        unsafe { std::arch::asm!("mov rax, qword ptr [0x800]", out("rax") _) };
        std::process::exit(0); // not reached
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_read_outside_the_map_dies_by_sigsegv_after_one_line",
            "--nocapture",
        ])
        .env("OF_SPINE_CHILD", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<_> = stderr.lines().filter(|l| l.starts_with("of: ")).collect();
    assert_eq!(ours.len(), 1, "{stderr}");
    assert!(
        ours[0].contains("0x800") && ours[0].contains("outside the register map"),
        "{stderr}"
    );
}
