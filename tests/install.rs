//! `make install PREFIX=…` and `make uninstall` for C users, through pkg-config only.
//!
//! Installs into a fresh prefix, checks the four files (libof.a, libof.so, include/of.h,
//! lib/pkgconfig/of.pc), builds `examples/hello.c` and `examples/example.s` with nothing but the
//! flags `pkg-config` gives — statically against libof.a (`--static`, Libs.private) and
//! dynamically against libof.so (found through LD_LIBRARY_PATH for one, an rpath for the
//! other) — runs them (libof's SIGSEGV handler does the work in both libraries), then
//! uninstalls and checks the prefix is empty again.
//!
//! The inner `cargo` runs in `target/c-abi`, the directory `tests/c_abi.rs` uses, so the release
//! build is shared with it and never waits on the lock of the `cargo test` running this.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether every tool the test needs is there. Without one, the test is skipped with a message
/// on a developer's machine and fails under CI (`.ci/run` installs them).
fn tools_present() -> bool {
    let missing: Vec<&str> = ["cc", "make", "pkg-config", "readelf", "ldd"]
        .into_iter()
        .filter(|tool| Command::new(tool).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI run without {missing:?}: .ci/run installs build-essential and pkg-config"
    );
    eprintln!(
        "SKIPPED: {missing:?} not found; the install test needs gcc, binutils, make, pkg-config"
    );
    false
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn make(target: &str, prefix: &Path) -> Output {
    run(Command::new("make")
        .arg(target)
        .arg(format!("PREFIX={}", prefix.display()))
        .current_dir(root())
        .env("CARGO_TARGET_DIR", root().join("target").join("c-abi")))
}

/// `pkg-config ARGS of` against the installed prefix only (PKG_CONFIG_LIBDIR replaces the
/// system search path, so an `of.pc` elsewhere on the machine cannot answer).
fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let out = run(Command::new("pkg-config")
        .args(args)
        .arg("of")
        .env("PKG_CONFIG_LIBDIR", prefix.join("lib").join("pkgconfig"))
        .env_remove("PKG_CONFIG_PATH"));
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Every file and directory under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                all.insert(format!("{rel}/"));
                todo.push(path);
            } else {
                all.insert(rel);
            }
        }
    }
    all
}

/// The DT_NEEDED entries of an ELF file, as readelf prints them.
fn needed(binary: &Path) -> Vec<String> {
    let out = run(Command::new("readelf").arg("-d").arg(binary));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_owned()))
        .collect()
}

/// Compiles `source` into `exe` with `cc`, `flags` after the source file (link order).
fn cc(source: &str, exe: &Path, flags: &[String]) {
    run(Command::new("cc")
        .args(["-O2", "-Wall", "-fno-delete-null-pointer-checks"])
        .arg("-o")
        .arg(exe)
        .arg(root().join(source))
        .args(flags));
}

fn stdout_of(exe: &Path, env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new(exe);
    cmd.env_remove("LD_LIBRARY_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    String::from_utf8(run(&mut cmd).stdout).unwrap()
}

fn check_hello(stdout: &str) {
    assert!(
        stdout.starts_with("r12 = 42, r8 = 0x1122334455677888, rsp = ")
            && stdout.ends_with(": ok\n"),
        "hello.c: {stdout}"
    );
}

fn check_joy(stdout: &str) {
    assert_eq!(stdout, "memory-mapped registers work!\n", "example.s");
}

#[test]
fn make_install_then_pkg_config_static_and_shared_then_uninstall() {
    if !tools_present() {
        return;
    }
    let scratch = std::env::temp_dir().join(format!("of-install-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let prefix = scratch.join("prefix");
    let build = scratch.join("build");
    std::fs::create_dir_all(&prefix).unwrap();
    std::fs::create_dir_all(&build).unwrap();

    make("install", &prefix);
    eprintln!("make install PREFIX={}", prefix.display());
    let installed: Vec<String> = tree(&prefix).into_iter().collect();
    assert_eq!(
        installed,
        [
            "include/",
            "include/of.h",
            "lib/",
            "lib/libof.a",
            "lib/libof.so",
            "lib/pkgconfig/",
            "lib/pkgconfig/of.pc",
        ],
        "installed tree"
    );
    let libdir = prefix.join("lib");
    assert_eq!(
        pkg_config(&prefix, &["--modversion"]),
        [env!("CARGO_PKG_VERSION")]
    );
    assert_eq!(
        pkg_config(&prefix, &["--variable=libdir"]),
        [libdir.display().to_string()]
    );

    // Shared: -I, -L and -lof, nothing else (Libs.private is for static links only).
    let cflags = pkg_config(&prefix, &["--cflags"]);
    assert_eq!(cflags, [format!("-I{}", prefix.join("include").display())]);
    let shared = pkg_config(&prefix, &["--libs"]);
    assert_eq!(shared, [format!("-L{}", libdir.display()), "-lof".into()]);
    // Static: the archive by name, then the libraries the Rust std inside it needs.
    let static_libs = pkg_config(
        &prefix,
        &["--static", "--define-variable=of_lib=:libof.a", "--libs"],
    );
    assert_eq!(
        static_libs[..2],
        [format!("-L{}", libdir.display()), "-l:libof.a".into()]
    );
    assert!(
        static_libs.contains(&"-lgcc_s".to_owned()),
        "{static_libs:?}"
    );
    eprintln!("pkg-config --cflags of: {cflags:?}\npkg-config --libs of: {shared:?}");
    eprintln!("pkg-config --static --define-variable=of_lib=:libof.a --libs of: {static_libs:?}");
    let with = |a: &[String], b: &[String]| -> Vec<String> { a.iter().chain(b).cloned().collect() };

    // Static builds: libof.a linked in, no libof.so needed at run time.
    for (source, exe, check) in [
        ("examples/hello.c", "hello-static", check_hello as fn(&str)),
        ("examples/example.s", "joy-static", check_joy),
    ] {
        let exe = build.join(exe);
        cc(source, &exe, &with(&cflags, &static_libs));
        let deps = needed(&exe);
        assert!(
            !deps.iter().any(|d| d.starts_with("libof")),
            "{exe:?} needs {deps:?}"
        );
        let stdout = stdout_of(&exe, &[]);
        eprint!("{source} static, needs {deps:?}: {stdout}");
        check(&stdout);
    }

    // Shared builds: libof.so needed, found through LD_LIBRARY_PATH or an rpath.
    let rpath = format!("-Wl,-rpath,{}", libdir.display());
    for (source, exe, extra, env, check) in [
        (
            "examples/hello.c",
            "hello-shared",
            None,
            Some(("LD_LIBRARY_PATH", libdir.as_path())),
            check_hello as fn(&str),
        ),
        (
            "examples/example.s",
            "joy-shared",
            Some(rpath),
            None,
            check_joy,
        ),
    ] {
        let exe = build.join(exe);
        let flags: Vec<String> = with(&cflags, &shared).into_iter().chain(extra).collect();
        cc(source, &exe, &flags);
        assert!(needed(&exe).contains(&"libof.so".to_owned()), "{exe:?}");
        let env: Vec<(&str, &Path)> = env.into_iter().collect();
        // The dynamic loader resolves libof.so to the installed copy.
        let mut ldd = Command::new("ldd");
        ldd.arg(&exe).env_remove("LD_LIBRARY_PATH");
        for (k, v) in &env {
            ldd.env(k, v);
        }
        let resolved = String::from_utf8(run(&mut ldd).stdout).unwrap();
        let want = format!("libof.so => {}", libdir.join("libof.so").display());
        assert!(resolved.contains(&want), "{exe:?}: {resolved}");
        let stdout = stdout_of(&exe, &env);
        eprint!(
            "{source} shared ({}): {stdout}",
            want.trim_start_matches("libof.so => ")
        );
        check(&stdout);
    }

    make("uninstall", &prefix);
    let left = tree(&prefix);
    assert!(left.is_empty(), "left after make uninstall: {left:?}");
    eprintln!(
        "make uninstall: {} is empty (files and directories)",
        prefix.display()
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}
