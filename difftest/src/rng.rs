//! A small seedable generator (SplitMix64) and the biased value distributions the engine uses.

/// SplitMix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number generators", 2014):
/// one 64-bit state word, good enough statistics for test-case generation, trivially seedable.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Derives an independent generator for a sub-stream (a form, an offset), so that a case
    /// can be replayed from `(seed, stream)` without running everything before it.
    pub fn stream(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    /// The next uniformly distributed 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// Picks one element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A register value: half the time uniform, otherwise one of the values where integer
    /// instructions change behaviour — 0, -1, sign bits and their neighbours at every width,
    /// single bits, small numbers (shift and rotate counts, bit offsets), with the bytes above
    /// the interesting width either kept random or cleared.
    pub fn value(&mut self) -> u64 {
        let special = match self.below(12) {
            0..=5 => return self.next_u64(),
            6 => 0,
            7 => u64::MAX,
            8 => {
                // A sign bit, maybe with its neighbours: 0x80, 0x7F, 0x8000_0000, ...
                let bit = self.pick(&[7u32, 15, 31, 63]);
                let v = 1u64 << bit;
                match self.below(3) {
                    0 => v,
                    1 => v - 1,
                    _ => v.wrapping_neg(),
                }
            }
            9 => 1u64 << self.below(64),
            10 => self.pick(&[
                0u64, 1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 255,
            ]),
            _ => self.below(72),
        };
        match self.below(3) {
            // The special value in the low bytes, random above (for 8/16/32-bit operands).
            0 => {
                let width = self.pick(&[8u32, 16, 32]);
                let mask = (1u64 << width) - 1;
                (self.next_u64() & !mask) | (special & mask)
            }
            _ => special,
        }
    }

    /// An immediate of `bits` bits (8, 16, 32 or 64), biased like [`Rng::value`].
    pub fn immediate(&mut self, bits: u32) -> u64 {
        let v = self.value();
        if bits >= 64 {
            v
        } else {
            v & ((1u64 << bits) - 1)
        }
    }

    /// Random input flags: the six status flags uniformly, DF set one time in four.
    pub fn flags(&mut self) -> u64 {
        let mut f = self.next_u64() & crate::model::STATUS;
        if self.one_in(4) {
            f |= crate::model::DF;
        }
        f
    }
}
