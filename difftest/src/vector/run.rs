//! Running one case three ways: natively on an image of the registers, through
//! `of_core::emulate` on a `RegisterFile`, and through the map with a real fault.

use super::arena::Arena;
use super::state::{FLAGS, Outcome, RFLAGS_WRITABLE, SI_KERNEL, State, fs_gs, image, xm_code};
use of_core::machine::{read_zmm, write_zmm};

fn mxcsr_mask() -> u32 {
    of_core::cpu::mxcsr_mask()
}

fn load_block(a: &Arena, s: &State) {
    let b = a.block();
    b.gpr_in = s.gpr;
    b.flags_in = s.flags;
    b.mxcsr_in = u64::from(s.mxcsr);
    b.zmm_in = s.zmm;
    b.k_in = s.k;
    // Without AVX512BW the exit code stores 16-bit opmasks: start from zero.
    b.zmm_out = [[0; 64]; 32];
    b.k_out = [0; 8];
}

fn outcome(a: &Arena) -> Outcome {
    let b = a.block();
    Outcome {
        state: State {
            gpr: b.gpr_out,
            flags: b.flags_out & FLAGS,
            mxcsr: b.mxcsr_out as u32,
            zmm: b.zmm_out,
            k: b.k_out,
        },
        signal: if b.signal == 0 {
            (0, 0)
        } else {
            (b.signal, b.si_code)
        },
    }
}

/// Native run: the expected outcome. `written` is the image range an unconditional store
/// writes (its bytes apply even when equal to the old image, since the instruction may also
/// have changed the register behind them, like MXCSR's flags). With `probe_stores`, the bytes
/// a conditional (masked) store writes are found by running it a second time over an image
/// whose bytes in `written` are all inverted: a byte is stored if either run changed it.
/// Otherwise only the bytes that changed apply.
pub fn native(
    a: &Arena,
    s: &State,
    bytes: &[u8],
    written: Option<std::ops::Range<usize>>,
    probe_stores: bool,
) -> Outcome {
    let next = a.code_addr() + bytes.len() as u64;
    let before = image(s, next);
    let mut also = [false; 0x204];
    if let (true, Some(w)) = (probe_stores, written.clone()) {
        let mut inverted = before;
        for i in w.clone() {
            inverted[i] = !inverted[i];
        }
        *a.image() = inverted;
        load_block(a, s);
        a.run(bytes);
        let after = *a.image();
        for i in w {
            also[i] = after[i] != inverted[i];
        }
    }
    *a.image() = before;
    load_block(a, s);
    a.run(bytes);
    let after = *a.image();
    let mut o = outcome(a);
    // Stores into the image apply to the registers last: start from the image of the
    // registers as the instruction left them and overlay the bytes it stored.
    // An instruction that raised an exception stored nothing.
    let written = written.filter(|_| o.signal.0 == 0 && !probe_stores);
    let stored = |i: usize| {
        before[i] != after[i]
            || (o.signal.0 == 0 && also[i])
            || written.as_ref().is_some_and(|w| w.contains(&i))
    };
    let mut merged = image(&o.state, next);
    let mut any = [false; 0x204];
    for i in 0..0x204 {
        if stored(i) {
            merged[i] = after[i];
            any[i] = true;
        }
    }
    let hit = |r: std::ops::Range<usize>| r.into_iter().any(|i| any[i]);
    for i in 0..16 {
        if hit(8 * i..8 * i + 8) {
            let mut q = [0u8; 8];
            q.copy_from_slice(&merged[8 * i..8 * i + 8]);
            o.state.gpr[i] = u64::from_le_bytes(q);
        }
    }
    assert!(!hit(0x80..0x88), "a store to the rip slot");
    if hit(0x88..0x90) {
        let mut q = [0u8; 8];
        q.copy_from_slice(&merged[0x88..0x90]);
        let v = u64::from_le_bytes(q);
        o.state.flags = (o.state.flags & !RFLAGS_WRITABLE) | (v & RFLAGS_WRITABLE);
    }
    for i in 0..16 {
        let r = 0x100 + 16 * i..0x110 + 16 * i;
        if hit(r.clone()) {
            o.state.zmm[i][..16].copy_from_slice(&merged[r]);
        }
    }
    if hit(0x200..0x204) {
        let mut d = [0u8; 4];
        d.copy_from_slice(&merged[0x200..0x204]);
        o.state.mxcsr = u32::from_le_bytes(d) & mxcsr_mask();
    }
    o
}

/// Through `of_core::emulate` on a RegisterFile.
pub fn core_run(a: &Arena, s: &State, bytes: &[u8]) -> Result<Outcome, String> {
    let rip = a.code_addr();
    let (instr, offsets) = of_core::decode::decode(bytes, rip).map_err(|e| format!("{e:?}"))?;
    let (fs, gs) = fs_gs();
    let mut rf = of_core::RegisterFile {
        gpr: s.gpr,
        rip,
        rflags: s.flags,
        fs_base: fs,
        gs_base: gs,
        mxcsr: s.mxcsr,
        ..Default::default()
    };
    for (i, z) in s.zmm.iter().enumerate() {
        write_zmm(&mut rf, i, z);
    }
    rf.opmask = s.k;
    use of_core::emulate::{EmulationError as E, Exception as X};
    let signal = match of_core::emulate(&mut rf, &instr, bytes, &offsets, None) {
        Ok(()) => {
            if rf.rip != rip + bytes.len() as u64 {
                return Err(format!("rip {:#x} after the instruction", rf.rip));
            }
            (0, 0)
        }
        Err(E::Exception(X::GeneralProtection)) => (libc::SIGSEGV as u64, SI_KERNEL),
        Err(E::Exception(X::SimdFloatingPoint { flags })) => (
            libc::SIGFPE as u64,
            xm_code(flags | (0x1F80 & !(flags << 7))),
        ),
        Err(e) => return Err(format!("{e:?}")),
    };
    if signal.0 != 0 && rf.rip != rip {
        return Err(format!("rip {:#x} after an exception", rf.rip));
    }
    let mut st = State {
        gpr: rf.gpr,
        flags: rf.rflags & FLAGS,
        mxcsr: rf.mxcsr,
        zmm: [[0; 64]; 32],
        k: rf.opmask,
    };
    for (i, z) in st.zmm.iter_mut().enumerate() {
        *z = read_zmm(&rf, i);
    }
    Ok(Outcome { state: st, signal })
}

/// Through the map, with a real fault.
pub fn fault_run(a: &Arena, s: &State, bytes: &[u8]) -> Outcome {
    *a.image() = [0xEE; 0x204]; // nothing reads it
    load_block(a, s);
    a.run(bytes);
    outcome(a)
}
