//! A small, seedable PRNG (SplitMix64) for shuffles and splits, so results are reproducible
//! across platforms and crate upgrades.
//!
//! Written here rather than taken from `rand_xoshiro` because every stream it draws is part of
//! a saved result: the demo data the project ships, the frozen test split every evaluation and
//! every store's run-cache refer to, and the training order behind the published benchmark
//! numbers. A different generator would redraw all of them (on the 150k benchmark a change of
//! training seed alone moves test accuracy by about 0.1 point), so the stream is pinned by its
//! unit test. `rand_xoshiro` seeds its generators with this very SplitMix64.

/// SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// A generator from a seed and a string (e.g. a class code), so each class gets its own
    /// stream that does not depend on the others.
    pub fn keyed(seed: u64, key: &str) -> Self {
        let h = blake3::hash(key.as_bytes());
        let k = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
        Rng::new(seed ^ k)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_pinned() {
        // Saved results depend on these exact values; see the module doc.
        let mut r = Rng::new(42);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            first,
            [
                2_949_826_092_126_892_291,
                5_139_283_748_462_763_858,
                6_349_198_060_258_255_764
            ]
        );
    }

    #[test]
    fn deterministic_and_roughly_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            counts[a.below(4)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }
}
