// Every `of` 0.1 register method, in 0.1 style (safe calls on the `of::registers` constants).
// As in 0.1, a register keeps a value written through the map only until compiled code needs
// it, so each result is taken right after its store (no call in between) and printed at the
// end; tests/compat.rs recomputes them.
use of::registers::*;

fn main() {
    unsafe { of::map_registers(); }

    let a: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let b: u64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let mut out = [0u64; 13];

    R14.store(a);
    out[0] = R14.load();
    R14.store(a);
    out[1] = R14.add(b);
    R14.store(a);
    out[2] = R14.sub(b);
    R14.store(a);
    out[3] = R14.bitand(b);
    R14.store(a);
    out[4] = R14.bitor(b);
    R14.store(a);
    out[5] = R14.bitxor(b);

    R15.store(a);
    R15.add_assign(b);
    out[6] = R15.load();
    R15.store(a);
    R15.sub_assign(b);
    out[7] = R15.load();
    R15.store(a);
    R15.bitand_assign(b);
    out[8] = R15.load();
    R15.store(a);
    R15.bitor_assign(b);
    out[9] = R15.load();
    R15.store(a);
    R15.bitxor_assign(b);
    out[10] = R15.load();

    R11.store(a);
    R11.add_assign(b);
    out[11] = R11.load();
    out[12] = RFLAGS.load() & 0x2;

    let names = [
        "load", "add", "sub", "bitand", "bitor", "bitxor", "add_assign", "sub_assign",
        "bitand_assign", "bitor_assign", "bitxor_assign", "r11 add_assign", "rflags",
    ];
    for (name, v) in names.iter().zip(out) {
        println!("{name} {v}");
    }
}
