//! Augmentation and normalisation of 8-bit images, as in the reference code, but drawn from
//! `(seed, epoch, index)` alone so that a sample looks the same on any rank and thread.

use crate::data::Stream;
use crate::rng::SplitMix64;

/// Key of one augmentation draw: the training augmentation of sample `index` in `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AugKey {
    pub seed: u64,
    pub epoch: usize,
}

impl AugKey {
    /// The random stream of sample `index`.
    pub fn rng(&self, index: usize) -> SplitMix64 {
        SplitMix64::keyed(&[self.seed, Stream::Augment as u64, self.epoch as u64, index as u64])
    }
}

/// Per-channel normalisation constants (of pixel values scaled to [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// AutoDL (NAS-Bench-201) CIFAR-10: mean [125.3, 123.0, 113.9]/255, std [63.0, 62.1, 66.7]/255.
    pub const NB201_CIFAR10: Normalize = Normalize::from_255([125.3, 123.0, 113.9], [63.0, 62.1, 66.7]);
    /// AutoDL CIFAR-100: mean [129.3, 124.1, 112.4]/255, std [68.2, 65.4, 70.4]/255.
    pub const NB201_CIFAR100: Normalize = Normalize::from_255([129.3, 124.1, 112.4], [68.2, 65.4, 70.4]);
    /// AutoDL ImageNet16: mean [122.68, 116.66, 104.01]/255, std [63.22, 61.26, 65.09]/255.
    pub const NB201_IMAGENET16: Normalize = Normalize::from_255([122.68, 116.66, 104.01], [63.22, 61.26, 65.09]);
    /// DARTS CIFAR-10 (`utils._data_transforms_cifar10`).
    pub const DARTS_CIFAR10: Normalize =
        Normalize { mean: [0.491_399_68, 0.482_158_27, 0.446_531_24], std: [0.247_032_33, 0.243_485_05, 0.261_587_68] };
    /// darts-pt CIFAR-100.
    pub const DARTS_CIFAR100: Normalize = Normalize { mean: [0.5071, 0.4865, 0.4409], std: [0.2673, 0.2564, 0.2762] };
    /// torchvision ImageNet.
    pub const IMAGENET: Normalize = Normalize { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

    const fn from_255(mean: [f32; 3], std: [f32; 3]) -> Normalize {
        Normalize {
            mean: [mean[0] / 255.0, mean[1] / 255.0, mean[2] / 255.0],
            std: [std[0] / 255.0, std[1] / 255.0, std[2] / 255.0],
        }
    }

    /// `(scale, bias)` of channel `c` such that `out = byte · scale + bias`.
    fn affine(&self, c: usize) -> (f32, f32) {
        (1.0 / (255.0 * self.std[c]), -self.mean[c] / self.std[c])
    }
}

/// The small-image training pipeline: random horizontal flip, random crop of the zero-padded
/// image (`RandomCrop(size, padding=pad)`), normalisation, then optional cutout (DARTS's
/// `Cutout(length)`, applied after normalisation). Without a key: normalisation only.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    pub normalize: Normalize,
    pub pad: usize,
    pub flip: bool,
    pub cutout: usize,
}

impl Transform {
    /// `img` is CHW bytes of `c × h × w`; `out` receives CHW f32 of the same shape.
    pub fn apply(&self, img: &[u8], [c, h, w]: [usize; 3], aug: Option<(AugKey, usize)>, out: &mut [f32]) {
        debug_assert_eq!(img.len(), c * h * w);
        debug_assert_eq!(out.len(), c * h * w);
        let Some((key, index)) = aug else {
            for ch in 0..c {
                let (s, b) = self.normalize.affine(ch % 3);
                let plane = ch * h * w..(ch + 1) * h * w;
                for (o, &p) in out[plane.clone()].iter_mut().zip(&img[plane]) {
                    *o = p as f32 * s + b;
                }
            }
            return;
        };
        let mut rng = key.rng(index);
        // The draws, always in this order and always made, so the stream layout is fixed.
        let flip = rng.below(2) == 1 && self.flip;
        let dy = rng.below(2 * self.pad as u64 + 1) as isize - self.pad as isize;
        let dx = rng.below(2 * self.pad as u64 + 1) as isize - self.pad as isize;
        for ch in 0..c {
            let (s, b) = self.normalize.affine(ch % 3);
            let src = &img[ch * h * w..(ch + 1) * h * w];
            let dst = &mut out[ch * h * w..(ch + 1) * h * w];
            for y in 0..h {
                let sy = y as isize + dy;
                let row = &mut dst[y * w..(y + 1) * w];
                if sy < 0 || sy >= h as isize {
                    row.fill(b); // padding: a zero byte, normalised
                    continue;
                }
                let srow = &src[sy as usize * w..(sy as usize + 1) * w];
                for (x, o) in row.iter_mut().enumerate() {
                    // Crop position x of the flipped image reads column w−1−(x+dx) of the source.
                    let fx = x as isize + dx;
                    *o = if fx < 0 || fx >= w as isize {
                        b
                    } else {
                        let sx = if flip { w - 1 - fx as usize } else { fx as usize };
                        srow[sx] as f32 * s + b
                    };
                }
            }
        }
        if self.cutout > 0 {
            let cy = rng.below(h as u64) as isize;
            let cx = rng.below(w as u64) as isize;
            let half = (self.cutout / 2) as isize;
            let (y1, y2) = ((cy - half).clamp(0, h as isize) as usize, (cy + half).clamp(0, h as isize) as usize);
            let (x1, x2) = ((cx - half).clamp(0, w as isize) as usize, (cx + half).clamp(0, w as isize) as usize);
            for ch in 0..c {
                for y in y1..y2 {
                    out[ch * h * w + y * w + x1..ch * h * w + y * w + x2].fill(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pad: usize, flip: bool, cutout: usize) -> Transform {
        // mean 0, std 1/255: out = byte exactly, so positions can be read back.
        let n = Normalize { mean: [0.0; 3], std: [1.0 / 255.0; 3] };
        Transform { normalize: n, pad, flip, cutout }
    }

    #[test]
    fn normalisation_matches_the_reference_constants() {
        let tr = Transform { normalize: Normalize::NB201_CIFAR10, pad: 0, flip: false, cutout: 0 };
        let mut out = [0f32; 3];
        tr.apply(&[255, 0, 128], [3, 1, 1], None, &mut out);
        // (255/255 − 125.3/255)/(63.0/255) = 129.7/63.0; (0 − 123.0)/62.1; (128 − 113.9)/66.7
        let want = [129.7 / 63.0, -123.0 / 62.1, 14.1 / 66.7];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-5, "{o} vs {w}");
        }
    }

    /// Every augmented image is a shifted (and maybe mirrored) copy of the source with
    /// zero padding, `RandomCrop(pad)` ∘ `RandomHorizontalFlip`; the draw depends on
    /// (seed, epoch, index) only, and all 2 × 5 × 5 outcomes occur.
    #[test]
    fn crops_and_flips_are_shifts_of_the_source() {
        let (h, w) = (5usize, 7usize);
        let img: Vec<u8> = (0..h * w).map(|i| (i + 1) as u8).collect(); // distinct, non-zero
        let expected = |flip: bool, dy: isize, dx: isize| -> Vec<f32> {
            let mut e = vec![0f32; h * w];
            for y in 0..h {
                for x in 0..w {
                    let (sy, fx) = (y as isize + dy, x as isize + dx);
                    if (0..h as isize).contains(&sy) && (0..w as isize).contains(&fx) {
                        let sx = if flip { w - 1 - fx as usize } else { fx as usize };
                        e[y * w + x] = img[sy as usize * w + sx] as f32;
                    }
                }
            }
            e
        };
        let tr = t(2, true, 0);
        let mut outcomes = std::collections::BTreeSet::new();
        for index in 0..400 {
            let key = AugKey { seed: 3, epoch: 1 };
            let mut out = vec![0f32; h * w];
            tr.apply(&img, [1, h, w], Some((key, index)), &mut out);
            let mut again = vec![0f32; h * w];
            tr.apply(&img, [1, h, w], Some((key, index)), &mut again);
            assert_eq!(out, again);
            let hits: Vec<(bool, isize, isize)> = [false, true]
                .into_iter()
                .flat_map(|f| (-2..=2).flat_map(move |dy| (-2..=2).map(move |dx| (f, dy, dx))))
                .filter(|&(f, dy, dx)| expected(f, dy, dx) == out)
                .collect();
            assert_eq!(hits.len(), 1, "index {index}: {hits:?}");
            outcomes.insert(hits[0]);
        }
        assert_eq!(outcomes.len(), 50, "400 draws cover every flip × shift");
        // Another epoch draws differently.
        let (mut a, mut b) = (vec![0f32; h * w], vec![0f32; h * w]);
        let differs = (0..20).any(|i| {
            tr.apply(&img, [1, h, w], Some((AugKey { seed: 3, epoch: 1 }, i)), &mut a);
            tr.apply(&img, [1, h, w], Some((AugKey { seed: 3, epoch: 2 }, i)), &mut b);
            a != b
        });
        assert!(differs);
    }

    #[test]
    fn cutout_zeroes_one_square_after_normalisation() {
        let img = vec![200u8; 3 * 8 * 8];
        let tr = Transform { normalize: Normalize::DARTS_CIFAR10, pad: 0, flip: false, cutout: 4 };
        let mut out = vec![0f32; 3 * 64];
        tr.apply(&img, [3, 8, 8], Some((AugKey { seed: 1, epoch: 0 }, 5)), &mut out);
        let zeros: Vec<usize> = (0..64).filter(|&i| out[i] == 0.0).collect();
        // A 4×4 square clipped at the border: 1..=16 pixels, identical in all channels.
        assert!(!zeros.is_empty() && zeros.len() <= 16, "{}", zeros.len());
        for ch in 1..3 {
            assert!(zeros.iter().all(|&i| out[ch * 64 + i] == 0.0));
        }
        let (s, b) = Normalize::DARTS_CIFAR10.affine(0);
        assert!(out.iter().take(64).all(|&v| v == 0.0 || (v - (200.0 * s + b)).abs() < 1e-6));
    }
}
