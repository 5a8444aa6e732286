//! The `uart` example (issue 15): a C 16550 driver, compiled at each optimisation level, talks
//! through a trapped region to the example's UART model. With a known stdin, stdout must be
//! exactly the driver's greeting then the echo (`\n` sent as `\r\n`), and the model's summary
//! on stderr must show the initialisation the driver did (divisor 1 = 115200 baud, 8N1, FIFOs
//! enabled and cleared, DTR|RTS, the scratch register's last pattern) and consistent counts.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What `examples/c/uart/driver.c` prints first.
const GREETING: &[u8] = b"of: 16550 UART on a trapped region\r\n";

/// target/<profile>/examples/uart, built by `cargo test` alongside this test. Unlike
/// `tests/examples.rs` this always asks cargo to build it (a no-op when it is up to date):
/// `cargo test --test uart` does not build examples, and a stale model or a stale binary
/// would otherwise be tested after an edit. Built once per test process.
fn example() -> PathBuf {
    let name = "uart";
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let path = profile_dir.join("examples").join(name);
    BUILT.call_once(|| {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building example {name}");
    });
    path
}

/// Whether the C compiler the example uses (`$CC`, default `cc`) runs; says so if not.
fn have_cc() -> bool {
    let cc = std::env::var("CC").unwrap_or_else(|_| String::from("cc"));
    let program = cc.split_whitespace().next().unwrap_or("cc").to_string();
    if Command::new(&program).arg("--version").output().is_ok() {
        true
    } else {
        eprintln!("SKIPPED: no C compiler (`{cc}`); the uart example compiles its driver");
        false
    }
}

/// Runs the example with `args`, feeding `input` on stdin; fails the test after a minute (a
/// driver polling a register the model never sets would otherwise hang the suite).
fn run(args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Output {
    let mut child = Command::new(example())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the uart example");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // The example may exit before reading everything (EOT in the input): ignore EPIPE.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).unwrap();
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        stderr.read_to_end(&mut v).unwrap();
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let _ = child.wait();
            let err = err_reader.join().unwrap();
            panic!(
                "uart {args:?} did not finish in 60 s\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    feeder.join().unwrap();
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// What the driver transmits after its greeting for `input` (up to the first EOT): every byte
/// echoed, a line feed as CR LF.
fn echo(input: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for &b in input.iter().take_while(|&&b| b != 0x04) {
        if b == b'\n' {
            v.push(b'\r');
        }
        v.push(b);
    }
    v
}

/// The stderr line starting with `prefix`, without it.
fn line<'a>(stderr: &'a str, prefix: &str) -> &'a str {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in\n{stderr}"))
}

/// Runs the example at `opt` on `input` (with `env` added to its environment) and checks
/// stdout and the model's summary exactly.
fn check(opt: &str, env: &[(&str, &str)], input: &[u8]) {
    let out = run(&[opt], env, input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "uart {opt}: {:?}\n{stderr}",
        out.status
    );
    // The driver compiles warning-free (the example passes the compiler's stderr on).
    assert!(
        !stderr.contains("warning:"),
        "uart {opt}: compiler warnings\n{stderr}"
    );

    let mut expected = GREETING.to_vec();
    let echoed = echo(input);
    expected.extend(&echoed);
    assert!(
        out.stdout == expected,
        "uart {opt}: stdout differs\n got: {:?}\nwant: {:?}\n{stderr}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&expected)
    );

    let received = input.iter().take_while(|&&b| b != 0x04).count();
    assert_eq!(
        line(&stderr, "uart: driver ("),
        format!("{opt}) returned {received}"),
        "{stderr}"
    );
    assert_eq!(
        line(&stderr, "uart: divisor latch "),
        "1 (115200 baud), line 8N1",
        "{stderr}"
    );
    // FCR: enable | clear RX | clear TX; MCR: DTR | RTS; SCR: the driver's second pattern.
    assert_eq!(
        line(&stderr, "uart: registers "),
        "IER 0x00 FCR 0x07 LCR 0x03 MCR 0x03 SCR 0xa5",
        "{stderr}"
    );
    // Received: the echoed bytes plus the EOT; sent: greeting and echo; the driver polled
    // THRE before every THR write.
    assert_eq!(
        line(&stderr, "uart: received "),
        format!(
            "{} bytes, sent {} bytes, 0 overruns",
            received + 1,
            expected.len()
        ),
        "{stderr}"
    );
}

/// Every byte value but EOT, between lines of text; CR LF and lone CR included.
fn all_bytes() -> Vec<u8> {
    let mut input = b"hello, uart\nsecond line\r\n".to_vec();
    input.extend((0u8..=255).filter(|&b| b != 0x04));
    input.extend(b"\nlast line, no newline");
    input
}

#[test]
fn driver_echoes_every_byte_at_every_optimisation_level() {
    if !have_cc() {
        return;
    }
    let input = all_bytes();
    for opt in ["-O0", "-O1", "-O2", "-O3"] {
        check(opt, &[], &input);
    }
}

#[test]
fn empty_input_gives_the_greeting_and_zero() {
    if !have_cc() {
        return;
    }
    check("-O2", &[], b"");
}

/// EOT in the input stops the driver there, as Ctrl-D does a terminal; the rest is not read
/// (the example exits with its stdin thread still connected).
#[test]
fn eot_in_the_input_stops_the_echo() {
    if !have_cc() {
        return;
    }
    let mut input = b"before\n\x04after\n".to_vec();
    input.extend(vec![b'x'; 100_000]);
    check("-O1", &[], &input);
}

#[test]
fn default_is_o2_and_bad_arguments_are_refused() {
    if !have_cc() {
        return;
    }
    let out = run(&[], &[], b"x");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(line(&stderr, "uart: driver ("), "-O2) returned 1");

    let out = run(&["-O9"], &[], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

/// With site patching on (`OF_PATCH=1`, as `make c-tests` also runs every C program) the
/// driver's register accesses must still reach the device, at the lowest and highest levels.
#[test]
fn driver_works_with_site_patching() {
    if !have_cc() {
        return;
    }
    let input = all_bytes();
    for opt in ["-O0", "-O3"] {
        check(opt, &[("OF_PATCH", "1")], &input);
    }
}
