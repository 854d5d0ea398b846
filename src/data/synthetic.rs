//! A built-in, learnable synthetic image task.
//!
//! Each class owns a pattern: the sum of three colour gratings with class-specific integer
//! frequencies and orientations. A sample of class k is its class pattern with a random
//! translation (phase) and amplitude per grating, plus Gaussian pixel noise. Telling classes
//! apart needs frequency- and orientation-selective filters (what convolutions learn), while the
//! noise keeps the task from being trivial. Everything is a pure function of (seed, index).

use super::{AugKey, Dataset};
use crate::error::Result;
use crate::rng::SplitMix64;

const GRATINGS: usize = 3;

#[derive(Debug, Clone)]
struct Grating {
    /// Spatial frequency in cycles per image along x and y.
    fx: f64,
    fy: f64,
    /// Per-channel colour weights.
    color: [f64; 3],
}

/// The synthetic dataset: `len` samples of `classes` classes, 3 × side × side.
#[derive(Debug, Clone)]
pub struct Synthetic {
    seed: u64,
    len: usize,
    classes: usize,
    side: usize,
    noise: f64,
    patterns: Vec<[Grating; GRATINGS]>,
}

impl Synthetic {
    pub fn new(seed: u64, len: usize, classes: usize, side: usize, noise: f64) -> Self {
        let patterns = (0..classes)
            .map(|k| {
                let mut r = SplitMix64::keyed(&[seed, 0x5EED_C1A5, k as u64]);
                std::array::from_fn(|_| {
                    let freq = 1.0 + r.below(4) as f64; // 1..=4 cycles per image
                    let theta = r.next_f64() * std::f64::consts::PI;
                    let n = (r.normal(), r.normal(), r.normal());
                    let norm = (n.0 * n.0 + n.1 * n.1 + n.2 * n.2).sqrt().max(1e-6);
                    Grating {
                        fx: freq * theta.cos(),
                        fy: freq * theta.sin(),
                        color: [n.0 / norm * 1.7, n.1 / norm * 1.7, n.2 / norm * 1.7],
                    }
                })
            })
            .collect();
        Synthetic { seed, len, classes, side, noise, patterns }
    }

    /// Label of a sample: classes are balanced and interleaved by index.
    pub fn label(&self, index: usize) -> usize {
        index % self.classes
    }
}

impl Dataset for Synthetic {
    fn len(&self) -> usize {
        self.len
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn image_shape(&self) -> [usize; 3] {
        [3, self.side, self.side]
    }
    /// Synthetic images carry their own per-index variation (translation, amplitude, noise);
    /// the training augmentation does not apply to them.
    fn fill(&self, index: usize, _aug: Option<AugKey>, out: &mut [f32]) -> Result<i64> {
        let k = self.label(index);
        let s = self.side;
        let mut r = SplitMix64::keyed(&[self.seed, 0xDA7A, index as u64]);
        let phases: [(f64, f64); GRATINGS] =
            std::array::from_fn(|_| (r.next_f64() * std::f64::consts::TAU, 0.6 + 0.8 * r.next_f64()));
        let two_pi = std::f64::consts::TAU;
        for y in 0..s {
            for x in 0..s {
                let (u, v) = (x as f64 / s as f64, y as f64 / s as f64);
                let mut px = [0f64; 3];
                for (g, &(phase, amp)) in self.patterns[k].iter().zip(&phases) {
                    let val = amp * (two_pi * (g.fx * u + g.fy * v) + phase).sin();
                    for c in 0..3 {
                        px[c] += g.color[c] * val;
                    }
                }
                for (c, p) in px.iter().enumerate() {
                    out[c * s * s + y * s + x] = (p + self.noise * r.normal()) as f32;
                }
            }
        }
        Ok(k as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_index_keyed() {
        let d = Synthetic::new(3, 100, 10, 8, 1.0);
        let (mut a, mut b, mut c) = (vec![0f32; 192], vec![0f32; 192], vec![0f32; 192]);
        assert_eq!(d.fill(17, None, &mut a).unwrap(), 7);
        d.fill(17, None, &mut b).unwrap();
        d.fill(27, None, &mut c).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn classes_are_separable_by_a_linear_probe_on_the_pattern() {
        // Without noise, a matched filter (the phase-invariant energy at each class's grating
        // frequencies, weighted by the grating colours) recovers the label: the class signal is
        // there to be learned, and translation does not hide it.
        let d = Synthetic::new(1, 400, 4, 16, 0.0);
        let mut correct = 0;
        for i in 0..40 {
            let mut img = vec![0f32; 3 * 256];
            let label = d.fill(i, None, &mut img).unwrap() as usize;
            let best = (0..4)
                .map(|k| {
                    let e: f64 = d.patterns[k]
                        .iter()
                        .map(|g| {
                            let (mut re, mut im) = (0.0, 0.0);
                            for y in 0..16 {
                                for x in 0..16 {
                                    let p: f64 = (0..3).map(|c| g.color[c] * img[c * 256 + y * 16 + x] as f64).sum();
                                    let a = std::f64::consts::TAU * (g.fx * x as f64 / 16.0 + g.fy * y as f64 / 16.0);
                                    re += p * a.cos();
                                    im += p * a.sin();
                                }
                            }
                            (re * re + im * im).sqrt()
                        })
                        .sum();
                    (k, e)
                })
                .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap())
                .unwrap()
                .0;
            correct += (best == label) as usize;
        }
        // 4 classes: chance is 10/40. The matched filter should be right most of the time.
        assert!(correct >= 30, "{correct}/40");
    }
}
