//! What a trapped region costs, against the peer a user would pick instead (issue 15): one
//! driver-shaped loop — per iteration a device read, 51 ordinary instructions, a device write —
//! run natively on plain memory, through `of` (device on the region's server thread, device in
//! the fault handler, region sites patched), and under unicorn 2.1.4 with the device's
//! callbacks in C, side by side in one run, with the same checks.
//!
//! ```text
//! cargo run --release --example region_bench            # about 30 s
//! OF_BENCH_NO_UNICORN=1 cargo run --release --example region_bench   # without unicorn
//! ```
//!
//! - The loop is `examples/c/region_bench/loop.c`, built once at run time with `$CC` (default
//!   `cc`) `-O2 -fPIC -shared` into a temporary directory and loaded with `dlopen`; every run
//!   executes those same bytes (unicorn from a copy at the same address). Two variants:
//!   `bench_fixed` names the device's registers by absolute address (a microcontroller's
//!   `#define UART ((volatile uint32_t *)0x10000000)`; 7-byte accesses, which site patching
//!   rewrites into a jump), `bench_pointer` takes the base in a register (3- and 4-byte
//!   accesses, shorter than the jump: patched through a pun, `of_core::patch::pun`).
//! - The device is the same C code for everyone (`of_dev_read`/`of_dev_write` for `of`'s
//!   `struct of_device`, `uc_dev_read`/`uc_dev_write` for unicorn's `uc_mmio_map`): 16 bytes of
//!   registers that behave as memory, counting reads and writes. Natively the registers are a
//!   page of plain memory at the same address.
//! - Checks: every configuration runs 1,000 iterations from the same state and must end with
//!   the same result, device registers, memory and (where there is a device) access counts;
//!   then it is timed over more iterations (warm: after a first run, and for the patched
//!   configuration after the sites are patched), five times: the figure is the median, in ns
//!   per iteration, with the cost of one device access over a plain memory access,
//!   `(t - t_native) / 2`. The unicorn harness times its runs the same way.
//! - unicorn comes from PyPI (`unicorn==2.1.4`, whose wheel carries `libunicorn.so.2` and its C
//!   headers): used where `python3 -c 'import unicorn'` finds it, else installed with
//!   `python3 -m pip install --target target/unicorn-2.1.4 unicorn==2.1.4` (nothing outside
//!   `target/`). Without network or Python the unicorn lines say so and the rest still runs.
//!   The harness (`examples/c/region_bench/unicorn.c`) is C: no Python in the timed path.
//!
//! Timings come from a shared, noisy machine: compare the ratios of one run.

use of::ffi::{OF_REGION_IN_HANDLER, OfDevice, of_region_create, of_region_destroy};
use std::ffi::{CString, c_void};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Where the device's registers are (below 2 GiB, so `[disp32]` reaches them).
const DEV_BASE: u64 = 0x1000_0000;
/// Iterations of the checking runs.
const CHECK_N: u64 = 1_000;
/// The initial memory words (also in unicorn.c).
const MEM_INIT: [u64; 4] = [1, 2, 3, 4];

type Fixed = unsafe extern "C" fn(*mut u64, u64) -> u64;
type Pointer = unsafe extern "C" fn(*mut u32, *mut u64, u64) -> u64;

/// The loaded loop and device.
struct Loop {
    fixed: Fixed,
    pointer: Pointer,
    reset: unsafe extern "C" fn(),
    state: unsafe extern "C" fn(*mut u64),
    device: OfDevice,
}

/// What a configuration ended with: result, device registers (2 words), reads, writes,
/// memory (4 words).
type Outcome = [u64; 9];

fn sym<T>(lib: *mut c_void, name: &str) -> T {
    let c = CString::new(name).unwrap();
    // SAFETY: dlsym on a handle of ours with a NUL-terminated name.
    let p = unsafe { libc::dlsym(lib, c.as_ptr()) };
    assert!(!p.is_null(), "{name} missing from the loop's object");
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: T is a function pointer type of the symbol's C signature (loop.c).
    unsafe { std::mem::transmute_copy(&p) }
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| String::from("cc"))
}

fn build_loop(dir: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c/region_bench/loop.c");
    let out = dir.join("loop.so");
    let status = Command::new(cc())
        .args(["-O2", "-fPIC", "-shared", "-Wall", "-Wextra"])
        .arg(format!("-DDEV_BASE={DEV_BASE:#x}"))
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .map_err(|e| format!("{}: {e}", cc()))?;
    if !status.success() {
        return Err(format!("{} failed on {}", cc(), src.display()));
    }
    Ok(out)
}

fn load(path: &Path) -> Loop {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: dlopen of the object we just built.
    let lib = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW) };
    assert!(!lib.is_null(), "dlopen {}", path.display());
    Loop {
        fixed: sym(lib, "bench_fixed"),
        pointer: sym(lib, "bench_pointer"),
        reset: sym(lib, "bench_device_reset"),
        state: sym(lib, "bench_device_state"),
        device: OfDevice {
            read: sym(lib, "of_dev_read"),
            write: sym(lib, "of_dev_write"),
            ctx: std::ptr::null_mut(),
        },
    }
}

/// Runs `n` iterations of the variant from the initial state; returns the outcome. `plain` is
/// the plain-memory device page for the native run (its registers stand in for the device's).
fn run(l: &Loop, pointer: bool, n: u64, plain: Option<*mut u8>) -> Outcome {
    let mut mem = MEM_INIT;
    // SAFETY: the loop's functions with their C signatures; DEV_BASE holds a region or the
    // plain page; `mem` holds the four words they use.
    unsafe {
        (l.reset)();
        if let Some(p) = plain {
            std::ptr::write_bytes(p, 0, 16);
            *p.add(4) = 1; // status: ready, as bench_device_reset sets it
        }
        let result = if pointer {
            (l.pointer)(DEV_BASE as *mut u32, mem.as_mut_ptr(), n)
        } else {
            (l.fixed)(mem.as_mut_ptr(), n)
        };
        let mut dev = [0u64; 4];
        match plain {
            Some(p) => {
                std::ptr::copy_nonoverlapping(p, dev.as_mut_ptr().cast::<u8>(), 16);
                // Plain memory counts nothing: one read and one write per iteration.
                dev[2] = n;
                dev[3] = n;
            }
            None => (l.state)(dev.as_mut_ptr()),
        }
        [
            result, dev[0], dev[1], dev[2], dev[3], mem[0], mem[1], mem[2], mem[3],
        ]
    }
}

/// ns per iteration over `n` iterations (after a warm-up run of `CHECK_N`).
fn time(l: &Loop, pointer: bool, n: u64, plain: Option<*mut u8>) -> f64 {
    run(l, pointer, CHECK_N, plain);
    // The median of five timed runs (the machine is shared: one run may be descheduled).
    let mut ns: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            run(l, pointer, n, plain);
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    ns[2]
}

/// A region at DEV_BASE with the loop's C device (`of_region_create`, as a C program would).
struct CRegion(*mut of::region::Region);

impl CRegion {
    fn new(l: &Loop, in_handler: bool) -> CRegion {
        let flags = if in_handler { OF_REGION_IN_HANDLER } else { 0 };
        // SAFETY: the device's callbacks only copy bytes and count: callable from any thread
        // and async-signal-safe.
        let r = unsafe { of_region_create(DEV_BASE as *mut c_void, 16, &l.device, flags) };
        assert!(
            !r.is_null(),
            "of_region_create: {}",
            std::io::Error::last_os_error()
        );
        CRegion(r)
    }
}

impl Drop for CRegion {
    fn drop(&mut self) {
        // SAFETY: ours, from of_region_create.
        unsafe { of_region_destroy(self.0) };
    }
}

/// The unicorn package's directory (with `lib/libunicorn.so.2` and `include/`), installing it
/// under target/ if needed.
fn unicorn_dir() -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let local = target.join("unicorn-2.1.4");
    let find = || -> Option<PathBuf> {
        let out = Command::new("python3")
            .env("PYTHONPATH", &local)
            .args([
                "-c",
                "import os, unicorn; print(unicorn.__version__); print(os.path.dirname(unicorn.__file__))",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let version = lines.next()?;
        let dir = PathBuf::from(lines.next()?);
        (out.status.success()
            && version.starts_with("2.1.4")
            && dir.join("lib/libunicorn.so.2").exists())
        .then_some(dir)
    };
    if let Some(d) = find() {
        return Ok(d);
    }
    eprintln!(
        "region_bench: installing unicorn 2.1.4 into {} (pip)",
        local.display()
    );
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(&local)
        .arg("unicorn==2.1.4")
        .status()
        .map_err(|e| format!("python3: {e}"))?;
    if !status.success() {
        return Err(String::from("pip could not install unicorn==2.1.4"));
    }
    find().ok_or_else(|| String::from("unicorn 2.1.4 not importable after pip install"))
}

fn build_unicorn(dir: &Path, uc: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c/region_bench/unicorn.c");
    let out = dir.join("unicorn-bench");
    let lib = uc.join("lib");
    let status = Command::new(cc())
        .args(["-O2", "-Wall", "-Wextra"])
        .arg(format!("-I{}", uc.join("include").display()))
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .arg(format!("-L{}", lib.display()))
        .arg("-l:libunicorn.so.2")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-ldl")
        .status()
        .map_err(|e| format!("{}: {e}", cc()))?;
    if !status.success() {
        return Err(String::from("the unicorn harness did not build"));
    }
    Ok(out)
}

/// Runs the unicorn harness (on plain unicorn memory if `plain`): (ns per iteration, outcome).
fn unicorn(
    bin: &Path,
    so: &Path,
    pointer: bool,
    n: u64,
    plain: bool,
) -> Result<(f64, Outcome), String> {
    let out = Command::new(bin)
        .arg(so)
        .arg(if pointer { "pointer" } else { "fixed" })
        .arg(n.to_string())
        .arg(format!("{DEV_BASE:#x}"))
        .args(plain.then_some("plain"))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() != 10 {
        return Err(format!("unexpected output: {text}"));
    }
    let ns: f64 = f[0].parse().map_err(|_| text.clone())?;
    let mut o = [0u64; 9];
    for (k, v) in f[1..].iter().enumerate() {
        o[k] = u64::from_str_radix(v, 16).map_err(|_| text.clone())?;
    }
    Ok((ns, o))
}

struct Line {
    what: String,
    ns: Option<f64>,
    note: String,
}

fn main() -> ExitCode {
    of::map_registers().expect("of");
    let dir = std::env::temp_dir().join(format!("of-region-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let code = match bench(&dir) {
        Ok(ok) => {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("region_bench: {e}");
            ExitCode::from(2)
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    code
}

fn bench(dir: &Path) -> Result<bool, String> {
    let so = build_loop(dir)?;
    let l = load(&so);
    let mut lines = Vec::new();
    let mut checks: Vec<(String, Outcome)> = Vec::new();

    // Native: a plain read-write page at DEV_BASE.
    // SAFETY: a fresh anonymous mapping at a free address (MAP_FIXED_NOREPLACE).
    let page = unsafe {
        libc::mmap(
            DEV_BASE as *mut c_void,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if page != DEV_BASE as *mut c_void {
        return Err(format!("{DEV_BASE:#x} is not free"));
    }
    let plain = Some(page.cast::<u8>());
    let mut native = [0.0; 2];
    for (k, pointer) in [false, true].into_iter().enumerate() {
        let v = if pointer { "pointer" } else { "fixed" };
        checks.push((format!("native, {v}"), run(&l, pointer, CHECK_N, plain)));
        native[k] = time(&l, pointer, 20_000_000, plain);
        lines.push(Line {
            what: format!("native, plain memory ({v})"),
            ns: Some(native[k]),
            note: String::new(),
        });
    }
    // SAFETY: our mapping, no longer used.
    unsafe { libc::munmap(page, 4096) };

    // of, fault path: server thread and in handler, both variants.
    for in_handler in [false, true] {
        let region = CRegion::new(&l, in_handler);
        for (k, pointer) in [false, true].into_iter().enumerate() {
            let v = if pointer { "pointer" } else { "fixed" };
            let mode = if in_handler {
                "in the fault handler"
            } else {
                "on the server thread"
            };
            checks.push((format!("of {mode}, {v}"), run(&l, pointer, CHECK_N, None)));
            let n = if in_handler { 20_000 } else { 5_000 };
            let ns = time(&l, pointer, n, None);
            lines.push(Line {
                what: format!("of, device {mode} ({v})"),
                ns: Some(ns),
                note: format!("{:.0} ns per device access", (ns - native[k]) / 2.0),
            });
        }
        drop(region);
    }

    // of, patched: both variants' sites become call-outs (the pointer variant's through puns).
    if of::engine::signal::set_patching(true) {
        let region = CRegion::new(&l, true);
        for (k, pointer) in [false, true].into_iter().enumerate() {
            let v = if pointer { "pointer" } else { "fixed" };
            // Learn the sites (the default threshold is two faults each) and let the patcher
            // rewrite them, in rounds: a site that run-ahead emulates after another one's
            // fault only faults itself (and is counted) once that one is patched.
            for _ in 0..4 {
                run(&l, pointer, 16, None);
                of::engine::patch::flush();
            }
            let faults = of::stats().faults;
            checks.push((format!("of patched, {v}"), run(&l, pointer, CHECK_N, None)));
            let faulted = of::stats().faults - faults;
            let n = if faulted == 0 { 2_000_000 } else { 20_000 };
            let ns = time(&l, pointer, n, None);
            lines.push(Line {
                what: format!("of, patched ({v})"),
                ns: Some(ns),
                note: if faulted == 0 {
                    format!(
                        "{:.0} ns per device access; no fault in {CHECK_N} iterations",
                        (ns - native[k]) / 2.0
                    )
                } else {
                    format!("not patched ({faulted} faults in {CHECK_N} iterations)")
                },
            });
        }
        drop(region);
        of::engine::signal::set_patching(false);
    } else {
        lines.push(Line {
            what: String::from("of, patched"),
            ns: None,
            note: String::from("site patching unavailable on this kernel"),
        });
    }

    // unicorn.
    let uc = if std::env::var_os("OF_BENCH_NO_UNICORN").is_some() {
        Err(String::from("skipped (OF_BENCH_NO_UNICORN)"))
    } else {
        unicorn_dir().and_then(|d| build_unicorn(dir, &d))
    };
    for pointer in [false, true] {
        let v = if pointer { "pointer" } else { "fixed" };
        let r = uc.as_ref().map_err(|e| e.clone()).and_then(|bin| {
            let (_, o) = unicorn(bin, &so, pointer, CHECK_N, false)?;
            let (_, o_plain) = unicorn(bin, &so, pointer, CHECK_N, true)?;
            let (ns, _) = unicorn(bin, &so, pointer, 1_000_000, false)?;
            let (ns_plain, _) = unicorn(bin, &so, pointer, 1_000_000, true)?;
            Ok((ns, o, ns_plain, o_plain))
        });
        match r {
            Ok((ns, o, ns_plain, o_plain)) => {
                checks.push((format!("unicorn, {v}"), o));
                checks.push((format!("unicorn plain memory, {v}"), o_plain));
                lines.push(Line {
                    what: format!("unicorn 2.1.4, plain memory ({v})"),
                    ns: Some(ns_plain),
                    note: String::new(),
                });
                lines.push(Line {
                    what: format!("unicorn 2.1.4, C callbacks ({v})"),
                    ns: Some(ns),
                    note: format!(
                        "{:.0} ns per device access over unicorn's plain memory",
                        (ns - ns_plain) / 2.0
                    ),
                });
            }
            Err(e) => lines.push(Line {
                what: format!("unicorn 2.1.4 ({v})"),
                ns: None,
                note: format!("unavailable: {}", e.trim()),
            }),
        }
    }

    let unicorn_fixed = lines
        .iter()
        .find(|x| x.what.starts_with("unicorn 2.1.4, C callbacks (fixed)"))
        .and_then(|x| x.ns);
    println!(
        "region_bench: per iteration 1 device read + 51 ordinary instructions + 1 device write (gcc -O2)"
    );
    for x in &lines {
        match x.ns {
            Some(ns) => {
                let vs_native = ns / native[usize::from(x.what.contains("pointer"))];
                let vs_uc = unicorn_fixed
                    .map(|u| format!("{:>7.2}x unicorn", ns / u))
                    .unwrap_or_default();
                println!(
                    "  {:<48} {:>10.1} ns  {:>8.1}x native {vs_uc}  {}",
                    x.what, ns, vs_native, x.note
                );
            }
            None => println!("  {:<48} {:>10}     {}", x.what, "-", x.note),
        }
    }
    let first = checks[0].1;
    let mut ok = true;
    for (what, o) in &checks {
        if *o != first {
            ok = false;
            println!("  CHECK FAILED: {what} ended with {o:x?}, native with {first:x?}");
        }
    }
    println!(
        "  checks: {} configurations x {CHECK_N} iterations: result {:#x}, device {:#x} {:#x}, {} reads, {} writes, memory {:#x} ..: {}",
        checks.len(),
        first[0],
        first[1],
        first[2],
        first[3],
        first[4],
        first[5],
        if ok { "all equal" } else { "MISMATCH" }
    );
    Ok(ok)
}
