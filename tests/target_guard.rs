//! On a target other than x86_64 Linux, building `of` stops with ONE error, the `compile_error!`
//! at the top of `of-core` saying what `of` needs, not a cascade of errors from code that cannot
//! compile there (x86 `asm!`, Linux signal frames).
//!
//! Needs the standard library of some such target (`rustup target add aarch64-unknown-linux-gnu`,
//! for instance): the test checks with the first one installed, and is skipped with a message
//! when there is none. The check runs in its own target directory (`target/target-guard`).

use std::path::PathBuf;
use std::process::Command;

/// An installed target that is not x86_64 Linux, if any: a directory of the sysroot's
/// `lib/rustlib` that holds a `libcore` rlib.
fn other_target() -> Option<String> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let mut targets: Vec<String> = std::fs::read_dir(sysroot.join("lib").join("rustlib"))
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let has_core = std::fs::read_dir(e.path().join("lib"))
                .ok()?
                .filter_map(Result::ok)
                .any(|f| f.file_name().to_string_lossy().starts_with("libcore-"));
            let x86_64_linux = name.starts_with("x86_64-") && name.contains("-linux");
            (has_core && !x86_64_linux).then_some(name)
        })
        .collect();
    targets.sort();
    targets.into_iter().next()
}

#[test]
fn other_targets_get_one_compile_error() {
    let Some(target) = other_target() else {
        eprintln!(
            "SKIPPED: no standard library for a target other than x86_64 Linux is installed \
             (e.g. `rustup target add aarch64-unknown-linux-gnu`)"
        );
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for package in ["of-core", "of"] {
        let out = Command::new(&cargo)
            .args(["check", "--message-format=short", "-p", package, "--target"])
            .arg(&target)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", root.join("target").join("target-guard"))
            .output()
            .expect("run cargo check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{package} built for {target}:\n{stderr}"
        );
        // `--message-format=short`: one line per diagnostic, `file:line:col: error: message`.
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error")).collect();
        eprintln!("cargo check -p {package} --target {target}: {errors:#?}");
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].starts_with("of-core/src/lib.rs:")
                && errors[0].contains("supports only x86_64 Linux"),
            "{stderr}"
        );
        assert!(
            stderr.contains("could not compile `of-core` (lib) due to 1 previous error"),
            "{stderr}"
        );
    }
}
