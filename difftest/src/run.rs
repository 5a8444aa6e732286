//! The three runs of a case and their comparison.
//!
//! - **native**: the instruction with its operand in the native image, on the CPU. Its final
//!   registers, with the bytes it stored to the image then applied to them (SPEC §2: the map
//!   write is applied last), are the expected result.
//! - **fault**: the instruction with its operand in page 0, on the CPU, through `of`'s SIGSEGV
//!   handler (real faults; run-ahead as configured).
//! - **emulate**: the same bytes through `of_core::emulate::emulate` on an
//!   `of_core::RegisterFile` (no faults; used for the bulk of the states), then run-ahead over
//!   the rest of the case's bytes (as the fault path does).
//!
//! A control transfer to an address where nothing is mapped (AMD's 16-bit near branches land
//! in the low 64 KiB) ends the native and fault runs with SIGSEGV at that address, after the
//! branch retired; the emulate run reports the same when its final rip is not mapped (the CPU
//! would fetch there next).

use crate::arena::{Arena, MEMORY_LEN};
use crate::case::{Case, Ctx};
use crate::model::{self, DF, RFLAGS_FIXED, Regs, STATUS};
use iced_x86::{ConstantOffsets, Decoder, Formatter, Instruction, IntelFormatter};
use of_core::decode::Vendor;
use of_core::emulate::{EmulationError, Exception};

/// The observable result of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// General-purpose registers (encoding order).
    pub gpr: [u64; 16],
    /// Where execution continues (the landing address), or the address of the instruction
    /// that raised `signal`.
    pub rip: u64,
    /// rflags (only the status flags and DF are compared).
    pub rflags: u64,
    /// 0, or the signal raised (SIGFPE for #DE; SIGSEGV for a fetch from an unmapped address
    /// after the code retired, with `rip` that address).
    pub signal: i32,
    /// The compared ordinary memory.
    pub memory: [u8; MEMORY_LEN],
}

/// Which run disagreed with the native one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// Through real faults and `of`'s handler.
    Fault,
    /// Through `of_core::emulate` on a `RegisterFile`.
    Emulate,
}

/// Intel-syntax text of `bytes` decoded at `ip`, as this CPU reads them (0x66 near branches
/// are 16-bit on AMD).
pub fn disassemble(bytes: &[u8], ip: u64) -> String {
    let mut d = Decoder::with_ip(64, bytes, ip, Vendor::host().decoder_options());
    let instr = d.decode();
    let mut out = String::new();
    IntelFormatter::new().format(&instr, &mut out);
    out
}

/// Runs cases on one thread's arena.
pub struct Runner {
    arena: Arena,
    /// The arena's addresses.
    pub ctx: Ctx,
}

impl Default for Runner {
    fn default() -> Self {
        Runner::new()
    }
}

impl Runner {
    /// A runner with a fresh arena for the calling thread.
    pub fn new() -> Runner {
        let arena = Arena::new();
        let ctx = Ctx::of(&arena);
        Runner { arena, ctx }
    }

    /// The native run and the expected result derived from it.
    pub fn expected(&mut self, case: &Case) -> Outcome {
        let ctx = self.ctx;
        let len = case.native_code.len();
        self.arena
            .set_image(&ctx.image(&case.regs, case.rflags, len));
        self.arena.set_memory(&case.memory);
        let regs: [u64; 16] = std::array::from_fn(|i| case.reloc_in[i].apply(case.regs[i], ctx.nb));
        // A target outside the landing zone (a 16-bit one) gets no stub: the run ends with the
        // fetch fault there; the stub after the instruction is never reached.
        let landing = case
            .target
            .filter(|&t| self.arena.can_land(t, len))
            .unwrap_or(ctx.code + len as u64);
        let exit = self
            .arena
            .run(&case.native_code, landing, regs, case.rflags);
        let image = self.arena.image();
        // A fetch fault comes after the instruction retired; #DE (SIGFPE) and traps leave the
        // registers as the instruction found them.
        let retired = exit.signal == 0 || exit.signal == libc::SIGSEGV;
        let relocs = if retired {
            &case.reloc_out
        } else {
            &case.reloc_in
        };
        let mut r = Regs {
            gpr: std::array::from_fn(|i| relocs[i].undo(exit.gpr[i], ctx.nb)),
            rip: exit.landed,
            rflags: exit.rflags,
        };
        if retired {
            for &(off, n) in &case.writes {
                let mut bytes = image[off as usize..(off + n) as usize].to_vec();
                for &p in &case.pointer_data {
                    if p >= off && p + 8 <= off + n {
                        let i = (p - off) as usize;
                        let v = u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
                        bytes[i..i + 8].copy_from_slice(&v.wrapping_sub(ctx.nb).to_le_bytes());
                    }
                }
                model::overlay(&mut r, off, &bytes);
            }
        }
        let mut signal = exit.signal;
        if retired && r.rip != exit.landed {
            // A store to the rip slot (a push onto it) moved the landing address after the
            // branch: the CPU fetches there next, and faults if nothing is mapped there.
            signal = if mapped(r.rip) { 0 } else { libc::SIGSEGV };
        }
        Outcome {
            gpr: r.gpr,
            rip: r.rip,
            rflags: r.rflags,
            signal,
            memory: self.arena.memory(),
        }
    }

    /// Whether the fault run can be made: its landing address can hold a stub, or the run ends
    /// with a signal the arena's catcher records (#DE, or a fetch fault at a canonical user
    /// address: elsewhere the fetch raises #GP, which is not recorded).
    pub fn can_fault_run(&self, case: &Case, expected: &Outcome) -> bool {
        match expected.signal {
            0 => self.arena.can_land(expected.rip, case.map_code.len()),
            libc::SIGSEGV => expected.rip < 1 << 47,
            _ => true,
        }
    }

    /// The fault run (requires [`Runner::can_fault_run`]).
    pub fn fault(&mut self, case: &Case, expected: &Outcome) -> Outcome {
        let len = case.map_code.len();
        let landing = if expected.signal != 0 {
            self.ctx.code + len as u64
        } else {
            expected.rip
        };
        self.arena.set_memory(&case.memory);
        let exit = self
            .arena
            .run(&case.map_code, landing, case.regs, case.rflags);
        Outcome {
            gpr: exit.gpr,
            rip: exit.landed,
            rflags: exit.rflags,
            signal: exit.signal,
            memory: self.arena.memory(),
        }
    }

    /// The fault run twice from the same site, for site patching (SPEC §6): first through the
    /// fault path (`of` queues the site when its threshold is 1), then — after the patcher
    /// thread handled it — through whatever the site became: the patched jump when the form is
    /// patched, the fault path again otherwise. Returns both outcomes and whether the second
    /// run went through a patched site (requires [`Runner::can_fault_run`]).
    pub fn fault_twice(&mut self, case: &Case, expected: &Outcome) -> (Outcome, Outcome, bool) {
        let len = case.map_code.len();
        let landing = if expected.signal != 0 {
            self.ctx.code + len as u64
        } else {
            expected.rip
        };
        let outcome = |exit: crate::arena::Exit, arena: &crate::arena::Arena| Outcome {
            gpr: exit.gpr,
            rip: exit.landed,
            rflags: exit.rflags,
            signal: exit.signal,
            memory: arena.memory(),
        };
        self.arena.set_memory(&case.memory);
        let first = self
            .arena
            .run_keep(&case.map_code, landing, case.regs, case.rflags);
        let first = outcome(first, &self.arena);
        of_core::patch::flush();
        let patched = self.arena.first_code_byte() == 0xE9;
        self.arena.set_memory(&case.memory);
        let second = self.arena.rerun(len, landing, case.regs, case.rflags);
        (first, outcome(second, &self.arena), patched)
    }

    /// The emulate run, or why the emulator refused the instruction.
    ///
    /// # Errors
    /// A description of the refusal (`Unsupported`, `NotOurs`, a decode error).
    pub fn emulate(&self, case: &Case) -> Result<Outcome, String> {
        let ctx = self.ctx;
        let mut rf = of_core::RegisterFile {
            gpr: case.regs,
            rip: ctx.code,
            rflags: (case.rflags & (STATUS | DF)) | RFLAGS_FIXED,
            fs_base: ctx.fs,
            gs_base: ctx.gs,
            memory_base: ctx.mem,
            memory: case.memory,
            ..Default::default()
        };
        let (instr, offsets) = of_core::decode::decode(&case.map_code, ctx.code)
            .map_err(|e| format!("decode error {e:?}"))?;
        let mut signal = match of_core::emulate(&mut rf, &instr, &case.map_code, &offsets, None) {
            Ok(()) => 0,
            Err(EmulationError::Exception(Exception::DivideError)) => libc::SIGFPE,
            Err(EmulationError::Exception(e)) => return Err(format!("raised {e:?}")),
            Err(EmulationError::Unsupported(r)) => return Err(format!("refused: {r}")),
            Err(EmulationError::NotOurs(w)) => return Err(format!("not ours: {w:?}")),
        };
        if signal == 0 {
            // What the handler does next: run ahead, here over the case's bytes after the first
            // instruction (a landing on the first instruction itself is compared as a landing
            // address, as in the native run, not executed again).
            let mut code = CaseCode {
                base: ctx.code,
                skip: instr.len(),
                bytes: &case.map_code,
            };
            of_core::emulate::runahead::run(&mut rf, &mut code, 64);
            // The CPU fetches the next instruction at rip: nothing mapped there is a SIGSEGV
            // at rip (the native and fault runs see the same fault).
            if !mapped(rf.rip) {
                signal = libc::SIGSEGV;
            }
        }
        Ok(Outcome {
            gpr: rf.gpr,
            rip: rf.rip,
            rflags: rf.rflags,
            signal,
            memory: rf.memory,
        })
    }
}

/// The bytes of a case after its first instruction, as run-ahead's code source: only they can
/// be fetched.
struct CaseCode<'a> {
    base: u64,
    skip: usize,
    bytes: &'a [u8],
}

impl of_core::emulate::runahead::CodeSource for CaseCode<'_> {
    fn fetch(&mut self, rip: u64, buf: &mut [u8; 16]) -> usize {
        let Some(off) = rip.checked_sub(self.base) else {
            return 0;
        };
        if off < self.skip as u64 {
            return 0;
        }
        let rest = self.bytes.get(off as usize..).unwrap_or(&[]);
        let n = rest.len().min(15);
        buf[..n].copy_from_slice(&rest[..n]);
        n
    }

    fn decode(
        &mut self,
        bytes: &[u8; 16],
        n: usize,
        rip: u64,
    ) -> Option<(Instruction, ConstantOffsets)> {
        of_core::decode::decode(&bytes[..n], rip).ok()
    }

    fn signal_pending(&mut self) -> bool {
        false
    }
}

/// Whether `addr` is mapped in this process (a one-byte `process_vm_readv` of our own memory,
/// which fails instead of faulting).
pub fn mapped(addr: u64) -> bool {
    let mut byte = 0u8;
    let local = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: reads one byte of this process into `byte`; an unmapped address fails (EFAULT).
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == 1
}

const NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

fn flag_names(bits: u64) -> String {
    let mut v = Vec::new();
    for (b, n) in [
        (0, "CF"),
        (2, "PF"),
        (4, "AF"),
        (6, "ZF"),
        (7, "SF"),
        (10, "DF"),
        (11, "OF"),
    ] {
        if bits & (1 << b) != 0 {
            v.push(n);
        }
    }
    v.join(" ")
}

/// The differences between an expected and an actual outcome (empty when they agree): all 16
/// GPRs, the six status flags and DF, the landing address, the signal, the compared memory.
pub fn differences(expected: &Outcome, actual: &Outcome) -> Vec<String> {
    let mut d = Vec::new();
    if expected.signal != actual.signal {
        d.push(format!(
            "signal: expected {}, got {}",
            expected.signal, actual.signal
        ));
    }
    if expected.rip != actual.rip {
        d.push(format!(
            "rip (landing): expected {:#x}, got {:#x}",
            expected.rip, actual.rip
        ));
    }
    for ((name, e), a) in NAMES.iter().zip(expected.gpr).zip(actual.gpr) {
        if e != a {
            d.push(format!("{name}: expected {e:#018x}, got {a:#018x}"));
        }
    }
    let m = STATUS | DF;
    let x = (expected.rflags ^ actual.rflags) & m;
    if x != 0 {
        d.push(format!(
            "flags differ in [{}]: expected [{}], got [{}]",
            flag_names(x),
            flag_names(expected.rflags & m),
            flag_names(actual.rflags & m)
        ));
    }
    if let Some(i) = (0..MEMORY_LEN).find(|&i| expected.memory[i] != actual.memory[i]) {
        d.push(format!(
            "memory differs from byte {i} (stack top - {:#x})",
            MEMORY_LEN / 2 - i.min(MEMORY_LEN / 2)
        ));
    }
    d
}

/// A readable dump of a case's input state.
pub fn describe_state(case: &Case) -> String {
    let mut s = String::new();
    for (name, v) in NAMES.iter().zip(case.regs) {
        s.push_str(&format!("{name}={v:#x} "));
    }
    s.push_str(&format!("flags=[{}]", flag_names(case.rflags)));
    s
}

/// The outcomes of one case.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The CPU's result on the native image, with the stored bytes applied last.
    pub expected: Outcome,
    /// Through `of_core::emulate`.
    pub emulated: Outcome,
    /// Through real faults (`None` if the landing address could not hold a stub).
    pub faulted: Option<Outcome>,
}

impl Runner {
    /// Runs `case` three ways and compares.
    ///
    /// # Errors
    /// A description of every difference (or of the emulator's refusal).
    pub fn check(&mut self, case: &Case) -> Result<Checked, String> {
        let expected = self.expected(case);
        let text = disassemble(&case.map_code, self.ctx.code);
        let emulated = self
            .emulate(case)
            .map_err(|e| format!("`{text}` at {:#x}: emulate run: {e}", case.offset))?;
        let d = differences(&expected, &emulated);
        if !d.is_empty() {
            return Err(format!(
                "`{text}` at {:#x}: emulate run: {d:?}; input {}",
                case.offset,
                describe_state(case)
            ));
        }
        let faulted = if self.can_fault_run(case, &expected) {
            let f = self.fault(case, &expected);
            let d = differences(&expected, &f);
            if !d.is_empty() {
                return Err(format!(
                    "`{text}` at {:#x}: fault run: {d:?}; input {}",
                    case.offset,
                    describe_state(case)
                ));
            }
            Some(f)
        } else {
            None
        };
        Ok(Checked {
            expected,
            emulated,
            faulted,
        })
    }
}
