fn main() {
    let mut r = of::map_registers().unwrap();
    println!("rsp = {:#x}", r.rsp.load());
    r.r8.store(40);
    r.r8 += 2;
    println!("r8 = {}", r.r8.load());
    r.eax.store(7);
    r.rax += 5;
    println!("rax = {}", r.rax.load());
    let s = of::snapshot().unwrap();
    println!("{:x?}", s);
}
