// A typed view whose bytes leave the map: a post-monomorphisation const error, which only a
// build (not `cargo check`) reports; the pass cases make trybuild build.
fn main() {
    let v = of::RegU64::<0x800>::new();
    let _ = v.load();
}
