//! Instructions whose map accesses `of_core` does not compute (VSIB gathers, maskmovdqu's
//! masked store to [rdi], segment pushes and far returns on a stack inside the map) are still
//! recognised as register accesses when they fault inside the map: `emulate` refuses them with
//! a reason (the handler prints it) instead of calling the fault not ours (which would chain it
//! as an ordinary segfault), and leaves them to the previous handler when the fault is outside
//! the map.

use of_core::emulate::{EmulationError, emulate};
use of_core::{Machine, RegisterFile};

fn run(bytes: &[u8], rsp: u64, fault: u64) -> Result<(), EmulationError> {
    let ip = 0x10_0000;
    let (instr, offsets) = of_core::decode::decode(bytes, ip).expect("decodes");
    let mut rf = RegisterFile {
        rip: ip,
        ..Default::default()
    };
    rf.gpr[4] = rsp; // rsp
    rf.gpr[7] = 0; // rdi: maskmovdqu stores to [rdi]
    let before = rf.clone();
    let r = emulate(&mut rf, &instr, bytes, &offsets, Some(fault));
    assert_eq!(
        rf.rip(),
        before.rip(),
        "a refused instruction changes nothing"
    );
    assert_eq!(rf.gpr, before.gpr);
    r
}

const GATHER: &[u8] = &[0xc4, 0xe2, 0x69, 0x90, 0x04, 0x0d, 0x10, 0, 0, 0]; // vpgatherdd xmm0, [xmm1+0x10], xmm2
const MASKMOVDQU: &[u8] = &[0x66, 0x0f, 0xf7, 0xca]; // maskmovdqu xmm1, xmm2
const PUSH_FS: &[u8] = &[0x0f, 0xa0]; // push fs
const RETF: &[u8] = &[0xcb]; // retf

#[test]
fn faults_inside_the_map_are_refused_with_a_reason() {
    for (name, bytes, rsp, fault) in [
        ("vpgatherdd", GATHER, 0x7fff_0000u64, 0x10u64),
        ("maskmovdqu", MASKMOVDQU, 0x7fff_0000, 0x4),
        ("push fs", PUSH_FS, 0x40, 0x38),
        ("retf", RETF, 0x40, 0x40),
    ] {
        match run(bytes, rsp, fault) {
            Err(EmulationError::Unsupported(why)) => assert!(!why.is_empty(), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn faults_outside_the_map_are_not_ours() {
    for (name, bytes, rsp, fault) in [
        ("vpgatherdd", GATHER, 0x7fff_0000u64, 0x800u64),
        ("maskmovdqu", MASKMOVDQU, 0x7fff_0000, 0x900),
        ("push fs", PUSH_FS, 0x7fff_0000, 0x7ffe_fff8),
    ] {
        match run(bytes, rsp, fault) {
            Err(EmulationError::NotOurs(_)) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}
