//! `.init_array` auto-mapping: this test binary never calls `map_registers()`, yet page 0 is
//! the register map when its tests run. With `--features auto-map` the entry is `of`'s own;
//! without it, this file's `of::auto_map!()`.

#[cfg(not(feature = "auto-map"))]
of::auto_map!();

#[test]
fn page_0_is_the_register_map_before_main() {
    let local = 0u8;
    let here = &local as *const u8 as u64;
    // Without the handler this load would kill the process with SIGSEGV.
    let sp = of::RegU64::<0x20, of::Special>::new_special().load();
    // (a leaf's locals may sit in the red zone just below rsp)
    assert!(
        sp.abs_diff(here) < 1 << 16,
        "rsp {sp:#x} vs a local at {here:#x}"
    );
}

#[test]
fn threads_started_later_are_mapped_too() {
    let sp = std::thread::spawn(|| {
        let local = 0u8;
        let here = &local as *const u8 as u64;
        (of::RegU64::<0x20, of::Special>::new_special().load(), here)
    })
    .join()
    .unwrap();
    assert!(sp.0.abs_diff(sp.1) < 1 << 16, "{sp:x?}");
}
