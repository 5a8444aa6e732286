//! The AVX-512 fault-suppression model against the CPU: which bytes of its memory operand a
//! masked EVEX instruction touches.
//!
//! `of` decides ownership (SPEC §4) and the map bytes it reads and writes from
//! `of_core::emulate::vector::evex::access`. This probe asks the CPU instead: the
//! instruction runs natively with its operand placed so that its first `u` bytes (or its last
//! `t` bytes) lie in an inaccessible page, for several opmask values; it faults exactly when a
//! touched byte is there. Every placement is compared with the model's prediction. Aligned
//! moves are placed only where their alignment holds (a misaligned one would raise #GP, which
//! is recorded as such and compared with the model's alignment rule).

use super::arena::{Arena, setup};
use super::forms::{encode, forms, iced_text, instance, mem_size};
use super::state::Rng;
use iced_x86::{EncodingKind, Register};
use of_core::emulate::vector::evex::access;

/// Where the probe's pages lie: [no access][read/write][no access], below 2 GiB so an absolute
/// disp32 reaches them.
const GUARDED: u64 = 0x3F00_0000;
const PAGE: u64 = 0x1000;

fn map_guarded() -> u64 {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the pages are ours.
        unsafe {
            let p = libc::mmap(
                GUARDED as *mut libc::c_void,
                3 * PAGE as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            );
            assert_eq!(p as u64, GUARDED, "map the probe pages");
            let rw = (GUARDED + PAGE) as *mut libc::c_void;
            assert_eq!(
                libc::mprotect(rw, PAGE as usize, libc::PROT_READ | libc::PROT_WRITE),
                0
            );
        }
    });
    GUARDED + PAGE
}

/// What one native run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// No fault.
    Clean,
    /// A page fault (SIGSEGV with a page-fault si_code).
    PageFault,
    /// #GP (SIGSEGV, SI_KERNEL): misaligned.
    Misaligned,
    /// Something else (signal, si_code).
    Other(u64, u64),
}

fn run(a: &Arena, instr: &iced_x86::Instruction, k: u64) -> Probe {
    let Some(bytes) = encode(instr, a.code_addr()) else {
        return Probe::Other(0, 0);
    };
    let b = a.block();
    b.gpr_in = [0; 16];
    b.gpr_in[4] = a.stack_top();
    b.flags_in = 0x202;
    b.mxcsr_in = 0x1F80;
    b.zmm_in = [[0; 64]; 32];
    b.k_in = [k; 8];
    a.run(&bytes);
    match (b.signal, b.si_code) {
        (0, _) => Probe::Clean,
        (11, 1) | (11, 2) => Probe::PageFault,
        (11, 0x80) => Probe::Misaligned,
        (s, c) => Probe::Other(s, c),
    }
}

/// The figures of a probe run.
#[derive(Debug, Default)]
pub struct FootprintTally {
    /// EVEX forms probed (memory operand and an opmask).
    pub forms: usize,
    /// Native runs.
    pub runs: usize,
    /// Runs that faulted.
    pub faults: usize,
    /// Disagreements with the model (at most 2 per form).
    pub mismatches: Vec<String>,
}

/// Probes every EVEX form with a memory operand and an opmask that this CPU implements (or
/// those whose `Code` name contains `filter`), with `masks` random opmask values besides 0,
/// all ones and single bits.
///
/// # Panics
/// If the probe pages cannot be mapped.
pub fn probe(seed: u64, masks: usize, filter: Option<&str>) -> FootprintTally {
    setup();
    let a = Arena::get();
    let rw = map_guarded();
    let mut t = FootprintTally::default();
    if !super::arena::avx512() {
        return t;
    }
    let mut r = Rng(seed | 1);
    let (forms, _, _) = forms();
    for f in forms
        .iter()
        .filter(|f| f.code.encoding() == EncodingKind::EVEX)
    {
        let name = format!("{:?}", f.code);
        if let Some(want) = filter
            && !name.to_lowercase().contains(&want.to_lowercase())
        {
            continue;
        }
        let op = f.code.op_code();
        if !op.can_use_op_mask_register() {
            continue;
        }
        t.forms += 1;
        let mut bad = 0;
        for variant in 0..2 {
            let Some(mut base) = instance(f.code, &mut Rng(seed.wrapping_add(2 * variant) | 1), 0)
            else {
                continue;
            };
            base.set_op_mask(Register::K1);
            base.set_is_broadcast(variant == 1 && op.can_broadcast());
            if variant == 1 && !op.can_broadcast() {
                continue;
            }
            let size = mem_size(&base);
            if size == 0 || size > 64 {
                continue;
            }
            let mut mask_values = vec![0u64, u64::MAX, 1, 1 << 1, 1 << 7, 1 << 15, 1 << 31];
            for _ in 0..masks {
                mask_values.push(r.next() & r.next());
                mask_values.push(r.next());
            }
            for &k in &mask_values {
                let rf = of_core::RegisterFile {
                    opmask: [k; 8],
                    ..Default::default()
                };
                let all = if size >= 64 {
                    u64::MAX
                } else {
                    (1 << size) - 1
                };
                let model = access(&rf, &base, 0).selected & all;
                // u bytes of the operand below the accessible page, or t bytes above it.
                for below in [true, false] {
                    for n in 1..=size {
                        let at = if below { rw - n } else { rw + PAGE - size + n };
                        let mut i = base;
                        i.set_memory_displacement64(at);
                        let got = run(&a, &i, k);
                        t.runs += 1;
                        if got == Probe::Misaligned {
                            continue; // the alignment rule is the sweep's to check
                        }
                        if got != Probe::Clean {
                            t.faults += 1;
                        }
                        let low = |n: u64| if n >= 64 { u64::MAX } else { (1 << n) - 1 };
                        let guard = if below { low(n) } else { low(n) << (size - n) };
                        let predicted = if model & guard != 0 {
                            Probe::PageFault
                        } else {
                            Probe::Clean
                        };
                        if got != predicted && bad < 2 {
                            bad += 1;
                            t.mismatches.push(format!(
                                "{name} `{}` k1={k:#x} {} {n} bytes in the guard page: CPU {got:?}, model {predicted:?} (model bytes {model:#x})",
                                iced_text(&i),
                                if below { "first" } else { "last" },
                            ));
                        }
                    }
                }
            }
        }
    }
    t
}
