//! A region site patched while threads run it with pointers to the region and to ordinary
//! memory, the patch's `int3` held for 20 ms (`of::engine::patch::set_int3_pause`, which
//! slows every patch in the process: hence a test binary of its own).

mod region_harness;

use of::region::Region;
use region_harness::*;

/// A region site that also runs on ordinary memory (`mov eax, dword ptr [rdi + 8]` in a
/// function called with either pointer, as a `memcpy` is), executed by several threads while
/// its patch holds the `int3` a long time: a thread that meets the `int3` with an ordinary
/// pointer is sent to the stub's copy of the instruction (the engine does not emulate ordinary
/// memory), and every load returns the right value.
#[test]
fn a_region_site_on_ordinary_memory_meets_the_patch_int3() {
    use iced_x86::code_asm::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    if !patching_on() {
        return;
    }
    const THREADS: usize = 4;
    // SAFETY: `Memory` only copies bytes and counts: async-signal-safe.
    let region = unsafe { Region::new_in_handler(LEN, memory()) }.unwrap();
    region.with_device(|d: &mut Memory| d.bytes[8..12].copy_from_slice(&7u32.to_le_bytes()));
    let mut buf = Box::new([0u8; LEN]);
    buf[8..12].copy_from_slice(&5u32.to_le_bytes());
    // load(rdi) = dword [rdi + 8] (3 bytes: a punned site).
    let mut a = CodeAssembler::new(64).unwrap();
    a.mov(eax, dword_ptr(rdi + 8)).unwrap();
    a.ret().unwrap();
    let page = place(&mut a);
    // SAFETY: the page holds the function assembled above.
    let load: extern "sysv64" fn(*const u8) -> u32 = unsafe { std::mem::transmute(page) };
    // SAFETY: our page; volatile reads of its first byte (the patch writes it last).
    let first = || unsafe { std::ptr::read_volatile(page) };
    let original = first();
    let trapped = of::engine::patch::stats().trapped;
    of::engine::patch::set_int3_pause(20_000);
    let (r, b) = (region.as_ptr() as usize, buf.as_ptr() as usize);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) || rounds < 1000 {
                    assert_eq!(load(r as *const u8), 7);
                    assert_eq!(load(b as *const u8), 5);
                    rounds += 1;
                }
            });
        }
        // Until the patch is complete, then a little longer.
        let t = std::time::Instant::now();
        while first() == original && t.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
    });
    of::engine::patch::set_int3_pause(0);
    let patched = first() != original;
    let met = of::engine::patch::stats().trapped - trapped;
    eprintln!(
        "region site on ordinary memory: {THREADS} threads, every load right; patched {patched}, \
         {met} executions met the int3 of the patch"
    );
    assert!(patched, "the site was not patched");
    assert!(met > 0, "no thread met the int3 (held 20 ms)");
}
