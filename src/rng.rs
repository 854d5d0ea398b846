//! Small counter-based random numbers for data order and synthetic data.
//!
//! Everything random on the data side is a pure function of (seed, purpose, index), so results
//! do not depend on the number of ranks or threads.

/// SplitMix64 (Steele, Lea & Flood 2014): a fast 64-bit generator with good statistical quality,
/// used here for permutations and synthetic pixels.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream keyed by several words (seed, purpose, index, ...).
    pub fn keyed(words: &[u64]) -> Self {
        let mut s = 0x243F_6A88_85A3_08D3u64;
        for &w in words {
            s = mix64(s ^ w.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        SplitMix64(s)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (n > 0), by rejection (no modulo bias).
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// In-place Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_value() {
        // SplitMix64 seeded with state 0: first output 0xE220A8397B1DCDAF (the published
        // reference sequence of Vigna's splitmix64.c).
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn shuffle_is_a_permutation_and_keyed() {
        let mut a: Vec<u32> = (0..100).collect();
        SplitMix64::keyed(&[1, 2]).shuffle(&mut a);
        let mut b: Vec<u32> = (0..100).collect();
        SplitMix64::keyed(&[1, 3]).shuffle(&mut b);
        assert_ne!(a, b);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn normal_moments() {
        let mut r = SplitMix64::keyed(&[9]);
        let xs: Vec<f64> = (0..20000).map(|_| r.normal()).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
        // Standard errors: mean 1/sqrt(20000) = 0.007, variance sqrt(2/20000) = 0.01.
        assert!(m.abs() < 0.03, "{m}");
        assert!((v - 1.0).abs() < 0.04, "{v}");
    }
}
