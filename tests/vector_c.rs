//! The C library's own vector code on the map (issue 5): `examples/c/memcpy_snapshot.c`, built
//! here with `cc` against `libof.a` and the system glibc, snapshots the register file with
//! `memcpy(buf, (void *)0, 0xa0)` and checks it against the values set just before the call
//! (callee-saved registers, rsp, fs/gs bases, rip inside the C library, rflags), then memset,
//! memcpy into r13, `memcpy((void *)8, &x, 8)` into rcx, a 16-byte memcpy into rax:rcx (one
//! xmm store) and memcmp on map bytes. This test also checks that the instruction that
//! read the rip slot is a vector load (glibc's AVX2 memcpy).
//!
//! The inner `cargo build` shares `target/c-abi` with tests/c_abi.rs (one release build).

use std::path::PathBuf;
use std::process::Command;

const LDLIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

fn build_and_run(opt: &str) -> Option<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target").join("c-abi");
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `cc` not found; the C tests need gcc and binutils");
        return None;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "--lib", "-p", "of"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .expect("run cargo");
    assert!(st.success(), "cargo build --release failed");
    let out_dir = target_dir.join("vector-c");
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(format!("memcpy_snapshot{opt}"));
    let cc = Command::new("cc")
        .args([
            opt,
            "-Wall",
            "-Werror",
            "-fno-builtin",
            "-fno-delete-null-pointer-checks",
            "-ffixed-r12",
            "-ffixed-r13",
            "-ffixed-r14",
            "-ffixed-r15",
            "-Wno-array-bounds",
            "-pthread",
        ])
        .arg(format!("-I{}", root.join("include").display()))
        .arg("-o")
        .arg(&exe)
        .arg(root.join("examples/c/memcpy_snapshot.c"))
        .arg(target_dir.join("release/libof.a"))
        .args(LDLIBS)
        .output()
        .expect("run cc");
    assert!(
        cc.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = Command::new(&exe).output().expect("run the C program");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "memcpy_snapshot{opt} failed ({:?}):\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    Some(stdout)
}

/// The instruction that ends exactly at the end of `before` (the 16 bytes before rip), if one
/// decoding of a suffix gives a single instruction of that length.
fn instruction_before(before: &[u8]) -> Vec<iced_x86::Instruction> {
    let mut found = Vec::new();
    for k in 1..=before.len() {
        let tail = &before[before.len() - k..];
        let mut d = iced_x86::Decoder::new(64, tail, iced_x86::DecoderOptions::NONE);
        let i = d.decode();
        if !i.is_invalid() && i.len() == k {
            found.push(i);
        }
    }
    found
}

fn check(opt: &str) {
    let Some(stdout) = build_and_run(opt) else {
        return;
    };
    println!("{stdout}");
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    for prefix in [
        "memcpy(buf, 0, 0x90) snapshot:",
        "memcpy(buf, 0, 0xa0) snapshot:",
        "memset r12:",
        "memcpy into r13:",
        "memcpy((void *)8, &x, 8) sets rcx:",
        "memcpy((void *)0, pair, 16) sets rax:rcx:",
        "memcmp on map bytes:",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line:\n{stdout}"));
        assert!(line.ends_with(": ok"), "{line}");
    }
    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("bytes before rip:"))
        .collect();
    assert_eq!(lines.len(), 2, "one per snapshot:\n{stdout}");
    for line in lines {
        let bytes: Vec<u8> = line
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        assert_eq!(bytes.len(), 16);
        let candidates = instruction_before(&bytes);
        let vector_load = candidates.iter().find(|i| {
            i.op_count() == 2
                && i.op0_kind() == iced_x86::OpKind::Register
                && (i.op0_register().is_zmm()
                    || i.op0_register().is_ymm()
                    || i.op0_register().is_xmm())
                && i.op1_kind() == iced_x86::OpKind::Memory
        });
        assert!(
            vector_load.is_some(),
            "the rip slot was not read by a vector load: {candidates:?}"
        );
        println!("rip slot read by `{}`", vector_load.unwrap());
    }
}

#[test]
fn glibc_memcpy_snapshots_the_register_file_at_o2() {
    check("-O2");
}

#[test]
fn glibc_memcpy_snapshots_the_register_file_at_o0() {
    check("-O0");
}
