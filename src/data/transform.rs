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

/// torchvision's `ColorJitter(brightness, contrast, saturation, hue)` (DARTS's ImageNet training:
/// 0.4, 0.4, 0.4, 0.2) on interleaved 8-bit RGB: factors drawn uniformly from
/// [max(0, 1 − x), 1 + x] (hue: a shift in [−x, x] of a turn), the four adjustments in a random
/// order, each one's result back in 8 bits, as Pillow's `ImageEnhance` does between them:
/// brightness blends with black, contrast with the mean grey level, saturation with each pixel's
/// grey level (ITU-R 601 luma, Pillow's `L`), hue rotates the HSV hue. Same distribution as the
/// reference's PIL path; not bit-equal to Pillow (which truncates where this rounds).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

/// Pillow's `L` of an RGB pixel: (299 R + 587 G + 114 B) / 1000, rounded.
fn luma(p: &[u8]) -> f32 {
    ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114 + 500) / 1000) as f32
}

fn to_byte(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

impl ColorJitter {
    pub fn is_off(&self) -> bool {
        *self == ColorJitter::default()
    }

    /// Jitter `rgb` (interleaved, 3 bytes per pixel) with draws from `rng`.
    pub fn apply(&self, rgb: &mut [u8], rng: &mut SplitMix64) {
        let mut order = [0usize, 1, 2, 3];
        rng.shuffle(&mut order);
        let factor = |x: f32, rng: &mut SplitMix64| {
            let lo = (1.0 - x).max(0.0);
            lo + (1.0 + x - lo) * rng.next_f64() as f32
        };
        let b = (self.brightness > 0.0).then(|| factor(self.brightness, rng));
        let c = (self.contrast > 0.0).then(|| factor(self.contrast, rng));
        let s = (self.saturation > 0.0).then(|| factor(self.saturation, rng));
        let h = (self.hue > 0.0).then(|| self.hue * (2.0 * rng.next_f64() as f32 - 1.0));
        for op in order {
            match (op, b, c, s, h) {
                (0, Some(b), ..) => brighten(rgb, b),
                (1, _, Some(c), ..) => contrast(rgb, c),
                (2, _, _, Some(s), _) => saturate(rgb, s),
                (3, _, _, _, Some(h)) => rgb.chunks_exact_mut(3).for_each(|p| shift_hue(p, h)),
                _ => {}
            }
        }
    }
}

/// Blend with black: every byte times `b`.
fn brighten(rgb: &mut [u8], b: f32) {
    rgb.iter_mut().for_each(|v| *v = to_byte(*v as f32 * b));
}

/// Blend with the image's mean grey level (the mean luma, rounded).
fn contrast(rgb: &mut [u8], c: f32) {
    let n = (rgb.len() / 3).max(1);
    let mean = (rgb.chunks_exact(3).map(luma).sum::<f32>() / n as f32).round();
    rgb.iter_mut().for_each(|v| *v = to_byte(mean + c * (*v as f32 - mean)));
}

/// Blend each pixel with its own grey level.
fn saturate(rgb: &mut [u8], s: f32) {
    for p in rgb.chunks_exact_mut(3) {
        let l = luma(p);
        p.iter_mut().for_each(|v| *v = to_byte(l + s * (*v as f32 - l)));
    }
}

/// Rotate the hue of one RGB pixel by `shift` turns (HSV; value and saturation kept).
fn shift_hue(p: &mut [u8], shift: f32) {
    let [r, g, b] = [p[0] as f32, p[1] as f32, p[2] as f32];
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    if d == 0.0 {
        return; // grey: no hue
    }
    let h6 = if max == r {
        (g - b) / d
    } else if max == g {
        (b - r) / d + 2.0
    } else {
        (r - g) / d + 4.0
    };
    let h = ((h6 / 6.0 + shift) % 1.0 + 1.0) % 1.0;
    // Back from (h, s = d / max, v = max).
    let x = h * 6.0;
    let k = |n: f32| {
        let t = (n + x) % 6.0;
        max - d * t.min(4.0 - t).clamp(0.0, 1.0)
    };
    let out = [k(5.0), k(3.0), k(1.0)];
    for (v, o) in p.iter_mut().zip(out) {
        *v = to_byte(o);
    }
}

#[cfg(test)]
mod jitter_tests {
    use super::*;

    fn only(brightness: f32, contrast: f32, saturation: f32, hue: f32) -> ColorJitter {
        ColorJitter { brightness, contrast, saturation, hue }
    }

    #[test]
    fn hue_rotates_and_keeps_value_and_saturation() {
        // A third of a turn: red → green → blue → red (HSV hue 0°, 120°, 240°).
        let mut p = [255u8, 0, 0];
        shift_hue(&mut p, 1.0 / 3.0);
        assert_eq!(p, [0, 255, 0]);
        shift_hue(&mut p, 1.0 / 3.0);
        assert_eq!(p, [0, 0, 255]);
        shift_hue(&mut p, -2.0 / 3.0);
        assert_eq!(p, [255, 0, 0]);
        // Orange (hue 30°, V 200, S 1) turned by 90° is pure green at the same value.
        let mut p = [200u8, 100, 0];
        shift_hue(&mut p, 0.25);
        assert_eq!(p, [0, 200, 0]);
        // Grey has no hue.
        let mut g = [90u8, 90, 90];
        shift_hue(&mut g, 0.3);
        assert_eq!(g, [90, 90, 90]);
    }

    #[test]
    fn each_adjustment_blends_as_pillow_does() {
        // Luma (299·200 + 587·100 + 114·0 + 500) / 1000 = 119 (integer, rounded).
        assert_eq!(luma(&[200, 100, 0]), 119.0);
        // Saturation 0: the grey image; 0.5: halfway, 119 + 0.5·(200 − 119) = 159.5 → 160, ….
        let mut p = [200u8, 100, 0];
        saturate(&mut p, 0.0);
        assert_eq!(p, [119, 119, 119]);
        let mut p = [200u8, 100, 0];
        saturate(&mut p, 0.5);
        assert_eq!(p, [160, 110, 60]);
        // Contrast 0.5 of black and grey-200 pixels: their mean luma 100, each halfway to it.
        let mut img = [0u8, 0, 0, 200, 200, 200];
        contrast(&mut img, 0.5);
        assert_eq!(img, [50, 50, 50, 150, 150, 150]);
        // Brightness 1.5, clipped at 255.
        let mut img = [100u8, 200, 0];
        brighten(&mut img, 1.5);
        assert_eq!(img, [150, 255, 0]);
    }

    #[test]
    fn factors_cover_their_ranges_and_off_is_the_identity() {
        // Brightness 0.4 on a flat grey 100: one factor b ∈ [0.6, 1.4] per draw, every pixel 100·b.
        let (mut lo, mut hi, mut sum) = (255u8, 0u8, 0f64);
        for i in 0..2000u64 {
            let mut img = vec![100u8; 12];
            only(0.4, 0.0, 0.0, 0.0).apply(&mut img, &mut SplitMix64::keyed(&[i]));
            assert!(img.iter().all(|&v| v == img[0]));
            lo = lo.min(img[0]);
            hi = hi.max(img[0]);
            sum += img[0] as f64;
        }
        assert!((60..=62).contains(&lo) && (138..=140).contains(&hi), "{lo} {hi}");
        assert!((sum / 2000.0 - 100.0).abs() < 1.5, "mean {}", sum / 2000.0);
        // Contrast and saturation leave a flat grey image alone; hue too.
        let mut img = vec![77u8; 30];
        only(0.0, 0.4, 0.4, 0.5).apply(&mut img, &mut SplitMix64::keyed(&[1]));
        assert_eq!(img, vec![77u8; 30]);
        // Contrast: pixels move away from (or towards) the mean luma, linearly in their distance.
        let mut img = vec![0u8, 0, 0, 200, 200, 200];
        only(0.0, 0.4, 0.0, 0.0).apply(&mut img, &mut SplitMix64::keyed(&[5]));
        let (a, b) = (img[0] as f32, img[3] as f32);
        assert!((a + b - 200.0).abs() <= 1.0 && (60.0..=140.0).contains(&(b - a)), "{img:?}");
    }
}
