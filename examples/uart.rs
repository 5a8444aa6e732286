//! A 16550 UART in user space: a C driver written for a microcontroller talks to a device
//! model through a trapped region ([`of::region`], SPEC §7), and stdin/stdout are the serial
//! line.
//!
//! ```text
//! cargo run --release --example uart -- [-O0|-O1|-O2|-O3]      (default -O2)
//! printf 'hello\n' | cargo run --release --example uart
//! ```
//!
//! The example compiles `examples/c/uart/driver.c` at run time with `$CC` (default `cc`;
//! `-shared -fPIC -ffreestanding -nostdlib -Wall -Wextra -O<n>`, so the driver can use no C
//! library) into a temporary directory, loads it with `dlopen` and calls
//! `int uart_main(volatile uint8_t *base)` with the base of an 8-byte [`Region`] whose
//! [`Device`] is the [`Uart`] model below. The driver's every register access is an ordinary
//! `mov` that faults and is served by the model on the region's server thread. The driver
//! initialises the UART (115200 baud, 8N1, FIFOs), prints a greeting, then echoes what it
//! receives until EOT (0x04), turning `\n` into `\r\n` as a terminal driver does.
//!
//! - **stdout** carries exactly what the driver transmits (THR writes), nothing else.
//! - **stdin** is what the other end of the line sends. A thread reads it into a queue so the
//!   device never blocks; at end of input the line delivers one EOT byte (0x04) — the
//!   driver's signal to stop, as Ctrl-D is a terminal's. (On a terminal, what you type also
//!   appears once by the terminal's own echo, then again from the driver, line by line.)
//! - **stderr** gets the summary after the driver returns: its result, the divisor latch and
//!   line format the model saw, the registers' final values and the byte counts
//!   (`tests/uart.rs` checks them). Exit status 0 when the driver returned a count, 1 when it
//!   returned an error code, 2 when the driver could not be built or loaded.
//!
//! The model (see [`Uart`]) is a 16550 at the level a polled driver can observe: registers at
//! offsets 0–7 with the DLAB switch, a 16-byte receive FIFO (1 byte while FIFOs are disabled),
//! the word length of LCR applied to both directions, RTS flow control, and a transmitter that
//! is busy for one LSR read after each THR write (so a driver that does not poll THRE is caught
//! as an overrun). Not modelled: interrupts (IER is stored, IIR always says none pending),
//! loopback, break, parity and framing errors, modem-status changes.

use of::region::{Device, Region};
use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_int};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};

/// Register offsets (standard 16550 layout).
mod reg {
    /// RBR (read) / THR (write) / DLL (either, while LCR.DLAB).
    pub const DATA: usize = 0;
    /// IER / DLM (while LCR.DLAB).
    pub const IER: usize = 1;
    /// IIR (read) / FCR (write).
    pub const IIR_FCR: usize = 2;
    pub const LCR: usize = 3;
    pub const MCR: usize = 4;
    pub const LSR: usize = 5;
    pub const MSR: usize = 6;
    pub const SCR: usize = 7;
}

const LCR_DLAB: u8 = 0x80;
const LSR_DR: u8 = 0x01;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;
const MCR_RTS: u8 = 0x02;
/// IIR with no interrupt pending; bits 7:6 set when the FIFOs are enabled.
const IIR_NONE: u8 = 0x01;
const IIR_FIFOS: u8 = 0xC0;
/// MSR: CTS, DSR and DCD asserted (the other end is connected and ready), no changes.
const MSR_CONNECTED: u8 = 0xB0;
/// The 16550's receive FIFO depth.
const FIFO_DEPTH: usize = 16;
/// The standard UART crystal: 1.8432 MHz, 16 clocks per bit.
const CLOCK_HZ: u32 = 1_843_200;
/// What the line delivers once stdin ends.
const EOT: u8 = 0x04;

/// The serial line's receive side: bytes the other end (stdin) has sent and the UART has not
/// taken yet. Filled by the stdin thread, drained by the device.
type Line = Arc<Mutex<VecDeque<u8>>>;

/// Counts the model keeps, printed on stderr at the end.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    /// Bytes the driver read from RBR (EOT included).
    received: u64,
    /// Bytes the driver wrote to THR.
    sent: u64,
    /// THR writes while the transmitter was still busy (the driver did not poll THRE).
    overruns: u64,
    /// Device calls, and how many of them were wider than one byte.
    reads: u64,
    writes: u64,
    wide: u64,
}

/// A 16550 UART as a polled driver sees it.
///
/// The register file is a byte-wide bus: an access of `n` bytes at offset `o` (the region
/// delivers straddling and wide accesses as one call, SPEC §7) is served as `n` one-byte
/// accesses to the registers `o, o+1, …, o+n-1`, lowest offset first, each with its side
/// effects (reading RBR pops a byte, reading LSR ends a transmit-busy period, writing THR
/// transmits). So a 16-bit read at offset 5 returns LSR in its low byte and MSR in its high
/// byte, and a 32-bit write at 0 transmits one byte and writes IER, FCR and LCR.
struct Uart {
    /// Divisor latch (DLL, DLM).
    dll: u8,
    dlm: u8,
    ier: u8,
    /// Last value written to FCR (it cannot be read back; IIR shows the enable bit).
    fcr: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    /// The last byte RBR returned (what RBR reads again when nothing is waiting).
    rbr: u8,
    /// The receive FIFO.
    fifo: VecDeque<u8>,
    /// Set by a THR write, cleared by the next LSR read: the byte is "on the wire".
    tx_busy: bool,
    line: Line,
    counts: Counts,
    /// The first stdout error (the device must not panic over a closed pipe).
    stdout_error: Option<std::io::Error>,
}

impl Uart {
    /// Reset values (16550 data sheet): everything 0, IIR "no interrupt", LSR THRE|TEMT.
    fn new(line: Line) -> Uart {
        Uart {
            dll: 0,
            dlm: 0,
            ier: 0,
            fcr: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            rbr: 0,
            fifo: VecDeque::new(),
            tx_busy: false,
            line,
            counts: Counts::default(),
            stdout_error: None,
        }
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// The mask of LCR's word length (5 to 8 data bits): both directions drop the bits above it.
    fn word_mask(&self) -> u8 {
        0xFF >> (3 - (self.lcr & 3))
    }

    /// Moves bytes from the line into the receive FIFO while RTS is raised and the FIFO has
    /// room: the other end honours RTS flow control, so nothing is lost to an overrun, and
    /// nothing arrives before the driver says it is ready (so clearing the FIFO in the
    /// initialisation cannot throw away input).
    fn receive(&mut self) {
        if self.mcr & MCR_RTS == 0 {
            return;
        }
        let depth = if self.fcr & FCR_ENABLE != 0 {
            FIFO_DEPTH
        } else {
            1
        };
        let mut line = self.line.lock().unwrap_or_else(|e| e.into_inner());
        while self.fifo.len() < depth {
            match line.pop_front() {
                Some(b) => self.fifo.push_back(b & self.word_mask()),
                None => break,
            }
        }
    }

    fn flush(&mut self) {
        if let Err(e) = std::io::stdout().flush() {
            self.stdout_error.get_or_insert(e);
        }
    }

    fn read_register(&mut self, r: usize) -> u8 {
        match r {
            reg::DATA if self.dlab() => self.dll,
            reg::DATA => {
                self.receive();
                if let Some(b) = self.fifo.pop_front() {
                    self.rbr = b;
                    self.counts.received += 1;
                }
                self.rbr
            }
            reg::IER if self.dlab() => self.dlm,
            reg::IER => self.ier,
            reg::IIR_FCR if self.fcr & FCR_ENABLE != 0 => IIR_NONE | IIR_FIFOS,
            reg::IIR_FCR => IIR_NONE,
            reg::LCR => self.lcr,
            reg::MCR => self.mcr,
            reg::LSR => {
                self.receive();
                let mut lsr = 0;
                if !self.fifo.is_empty() {
                    lsr |= LSR_DR;
                } else {
                    // The driver is about to wait for input: show what it has sent so far
                    // (stdout is also flushed at each '\n' by its own line buffering).
                    self.flush();
                }
                if !self.tx_busy {
                    lsr |= LSR_THRE | LSR_TEMT;
                }
                self.tx_busy = false;
                lsr
            }
            reg::MSR => MSR_CONNECTED,
            reg::SCR => self.scr,
            _ => unreachable!("the region is 8 bytes"),
        }
    }

    fn write_register(&mut self, r: usize, v: u8) {
        match r {
            reg::DATA if self.dlab() => self.dll = v,
            reg::DATA => {
                if self.tx_busy {
                    self.counts.overruns += 1;
                }
                let b = v & self.word_mask();
                if let Err(e) = std::io::stdout().write_all(&[b]) {
                    self.stdout_error.get_or_insert(e);
                }
                self.counts.sent += 1;
                self.tx_busy = true;
            }
            reg::IER if self.dlab() => self.dlm = v,
            // Bits 7:4 of IER are reserved (read as 0).
            reg::IER => self.ier = v & 0x0F,
            reg::IIR_FCR => {
                // Enabling or disabling the FIFOs clears them, as does the clear bit.
                if v & FCR_CLEAR_RX != 0 || (v ^ self.fcr) & FCR_ENABLE != 0 {
                    self.fifo.clear();
                }
                // FCR bit 2 clears the transmit FIFO: our transmitter has nothing queued.
                self.fcr = v;
            }
            reg::LCR => self.lcr = v,
            // Bits 7:5 of MCR are reserved.
            reg::MCR => self.mcr = v & 0x1F,
            // LSR and MSR writes are for factory testing: ignored.
            reg::LSR | reg::MSR => {}
            reg::SCR => self.scr = v,
            _ => unreachable!("the region is 8 bytes"),
        }
    }

    /// The baud rate the divisor latch sets (`None` for divisor 0, which stops the clock).
    fn baud(&self) -> Option<u32> {
        let divisor = u32::from(u16::from_le_bytes([self.dll, self.dlm]));
        (divisor != 0).then(|| CLOCK_HZ / (16 * divisor))
    }

    /// LCR's frame format in the usual notation: data bits, parity, stop bits ("8N1").
    fn format(&self) -> String {
        let bits = 5 + (self.lcr & 3);
        let parity = match (self.lcr >> 3) & 7 {
            1 => 'O',
            3 => 'E',
            5 => 'M',
            7 => 'S',
            _ => 'N',
        };
        let stop = match (self.lcr & 4 != 0, bits) {
            (false, _) => "1",
            (true, 5) => "1.5",
            (true, _) => "2",
        };
        format!("{bits}{parity}{stop}")
    }
}

impl Device for Uart {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.counts.reads += 1;
        self.counts.wide += u64::from(data.len() > 1);
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_register(offset as usize + i);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.counts.writes += 1;
        self.counts.wide += u64::from(data.len() > 1);
        for (i, &b) in data.iter().enumerate() {
            self.write_register(offset as usize + i, b);
        }
    }
}

/// Reads stdin into the line on a thread of its own (the device must never block), then sends
/// one EOT. The thread is not joined: if the driver stops early it may still be in `read`.
fn connect_stdin(line: Line) {
    std::thread::Builder::new()
        .name(String::from("uart-stdin"))
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => line
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("uart: stdin: {e}");
                        break;
                    }
                }
            }
            line.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(EOT);
        })
        .expect("spawn the stdin thread");
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles the driver into `dir/driver.so`; the compiler's diagnostics go to our stderr.
fn compile(source: &Path, dir: &Path, opt: &str) -> Result<PathBuf, String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| String::from("cc"));
    let mut words = cc.split_whitespace();
    let program = words.next().ok_or("$CC is empty")?;
    let so = dir.join("driver.so");
    let out = Command::new(program)
        .args(words)
        // -ffreestanding -nostdlib and -z defs: the driver must not need a C library (a
        // microcontroller has none), and the link fails if it does.
        .args([
            "-shared",
            "-fPIC",
            "-ffreestanding",
            "-nostdlib",
            "-Wl,-z,defs",
        ])
        .args(["-Wall", "-Wextra", opt, "-o"])
        .arg(&so)
        .arg(source)
        .output()
        .map_err(|e| format!("cannot run `{cc}`: {e}"))?;
    std::io::stderr().write_all(&out.stderr).ok();
    if !out.status.success() {
        return Err(format!("`{cc}` failed on {}", source.display()));
    }
    Ok(so)
}

/// The driver's entry point: `int uart_main(volatile uint8_t *base)`.
type UartMain = unsafe extern "C" fn(*mut u8) -> c_int;

/// The last `dlerror()` message.
fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl* call.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        String::from("unknown error")
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Loads the driver and runs `uart_main(base)`.
fn run_driver(so: &Path, base: *mut u8) -> Result<c_int, String> {
    let path = CString::new(so.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: loading our own freshly built object; it has no initialisers (-nostdlib).
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("dlopen {}: {}", so.display(), dlerror()));
    }
    // SAFETY: a live handle and a NUL-terminated name.
    let sym = unsafe { libc::dlsym(handle, c"uart_main".as_ptr()) };
    let result = if sym.is_null() {
        Err(format!("dlsym uart_main: {}", dlerror()))
    } else {
        // SAFETY: driver.c defines `int uart_main(volatile uint8_t *)`, which is `UartMain`.
        let uart_main = unsafe { std::mem::transmute::<*mut libc::c_void, UartMain>(sym) };
        // SAFETY: `base` is the start of the live 8-byte region the driver expects; the
        // driver accesses only offsets 0..8 of it.
        Ok(unsafe { uart_main(base) })
    };
    // SAFETY: the handle from dlopen above; nothing of the object is used after this.
    unsafe { libc::dlclose(handle) };
    result
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = match args.as_slice() {
        [] => "-O2",
        [o] if ["-O0", "-O1", "-O2", "-O3"].contains(&o.as_str()) => o.as_str(),
        _ => {
            eprintln!("usage: uart [-O0|-O1|-O2|-O3]   (the C driver's optimisation; default -O2)");
            return ExitCode::from(2);
        }
    };
    // The driver's source in this repository (it is not part of the compiled example, and
    // not in the published package: the example runs from a checkout).
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c/uart/driver.c");
    if !source.exists() {
        eprintln!(
            "uart: the driver's source {} is missing (run from a checkout of the repository)",
            source.display()
        );
        return ExitCode::from(2);
    }
    let dir = TempDir(std::env::temp_dir().join(format!("of-uart-{}", std::process::id())));
    if let Err(e) = std::fs::create_dir_all(&dir.0) {
        eprintln!("uart: {}: {e}", dir.0.display());
        return ExitCode::from(2);
    }
    let so = match compile(&source, &dir.0, opt) {
        Ok(so) => so,
        Err(e) => {
            eprintln!("uart: {e}");
            return ExitCode::from(2);
        }
    };

    let line = Line::default();
    // Server-thread mode: the device prints and locks, which a signal handler must not.
    let region = match Region::new(8, Uart::new(line.clone())) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("uart: cannot create the region: {e}");
            return ExitCode::from(2);
        }
    };
    connect_stdin(line);

    let result = match run_driver(&so, region.as_ptr()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("uart: {e}");
            return ExitCode::from(2);
        }
    };
    let (uart, baud, format, counts, stdout_error) = region.with_device(|u: &mut Uart| {
        u.flush();
        (
            [u.dll, u.dlm, u.ier, u.fcr, u.lcr, u.mcr, u.scr],
            u.baud(),
            u.format(),
            u.counts,
            u.stdout_error.take(),
        )
    });
    drop(region);
    let [dll, dlm, ier, fcr, lcr, mcr, scr] = uart;
    let divisor = u16::from_le_bytes([dll, dlm]);
    let baud = baud.map_or(String::from("stopped"), |b| format!("{b} baud"));
    eprintln!("uart: driver ({opt}) returned {result}");
    eprintln!("uart: divisor latch {divisor} ({baud}), line {format}");
    eprintln!(
        "uart: registers IER {ier:#04x} FCR {fcr:#04x} LCR {lcr:#04x} MCR {mcr:#04x} SCR {scr:#04x}"
    );
    eprintln!(
        "uart: received {} bytes, sent {} bytes, {} overruns",
        counts.received, counts.sent, counts.overruns
    );
    eprintln!(
        "uart: device calls: {} reads, {} writes, {} wider than a byte",
        counts.reads, counts.writes, counts.wide
    );
    if let Some(e) = stdout_error {
        eprintln!("uart: stdout: {e}");
        return ExitCode::FAILURE;
    }
    if result < 0 {
        eprintln!("uart: the driver failed with error {result} (see driver.c)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
