// Seven values written to seven registers: the seventh store has no operand register left
// (the block writes the others), so `#[of::mapped]` must start a second asm block there; the
// read of rax after it would see whatever compiled code left in rax between the blocks.
#[of::mapped]
fn f(r: &mut of::Registers, a: u64) -> u64 {
    r.rax = a;
    r.rdx = a;
    r.rsi = a;
    r.rdi = a;
    r.r8 = a;
    r.r9 = a;
    r.r10 = a;
    r.r11 = a;
    let v = r.rax;
    v
}
fn main() {}
