//! Prints the calling thread's register file, read through the map, as a table: the general
//! registers, rip, rflags, fs/gs base and mxcsr from one `of::snapshot()` (a single `asm!` block
//! of page-0 loads), then xmm0…xmm15 through the token's 128-bit views.

fn main() {
    let s = of::snapshot().expect("of: cannot map registers");
    let r = of::map_registers().expect("of: cannot map registers");
    println!("{:<8} {:>6}  {:>18}", "register", "offset", "value");
    for (i, name) in of::engine::regs::GPR_NAMES.iter().enumerate() {
        println!(
            "{name:<8} {:>#6x}  {:#018x}",
            8 * i,
            s.gpr.get_reg_of_index(i as u8)
        );
    }
    println!("{:<8} {:>#6x}  {:#018x}", "rip", 0x80, s.rip);
    println!("{:<8} {:>#6x}  {:#018x}", "rflags", 0x88, s.rflags);
    println!("{:<8} {:>#6x}  {:#018x}", "fs_base", 0x90, s.fs_base);
    println!("{:<8} {:>#6x}  {:#018x}", "gs_base", 0x98, s.gs_base);
    println!("{:<8} {:>#6x}  {:#010x}", "mxcsr", 0x200, s.mxcsr);
    for (i, x) in [
        r.xmm0.load(),
        r.xmm1.load(),
        r.xmm2.load(),
        r.xmm3.load(),
        r.xmm4.load(),
        r.xmm5.load(),
        r.xmm6.load(),
        r.xmm7.load(),
        r.xmm8.load(),
        r.xmm9.load(),
        r.xmm10.load(),
        r.xmm11.load(),
        r.xmm12.load(),
        r.xmm13.load(),
        r.xmm14.load(),
        r.xmm15.load(),
    ]
    .iter()
    .enumerate()
    {
        println!(
            "{:<8} {:>#6x}  {:#034x}",
            format!("xmm{i}"),
            0x100 + 16 * i,
            x
        );
    }
}
