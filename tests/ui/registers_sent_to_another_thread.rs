fn main() {
    let r = of::map_registers().unwrap();
    std::thread::spawn(move || {
        let _ = r.rax.load();
    });
}
