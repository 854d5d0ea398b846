//! ImageNet in the ILSVRC folder layout (`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`), decoded on
//! demand with torchvision's transforms: `RandomResizedCrop(size)` + horizontal flip for
//! training, `Resize(size·256/224)` + `CenterCrop(size)` otherwise; ImageNet normalisation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::imageops::{self, FilterType};
use image::RgbImage;
use rayon::prelude::*;

use super::transform::{AugKey, Normalize};
use super::{Dataset, Stream};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// Which images of a large folder dataset to use (PC-DARTS searched on 10 % of ImageNet).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Subset {
    /// Keep this many classes, chosen with the seed (0 = all).
    pub classes: usize,
    /// Keep this fraction of each class's training images, chosen with the seed.
    pub fraction: f64,
    pub seed: u64,
}

/// An image folder dataset: training images, then validation images.
#[derive(Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub wnids: Vec<String>,
    files: Vec<(PathBuf, u32)>,
    pub train: usize,
    size: usize,
    normalize: Normalize,
    skip_bad: bool,
    skipped: AtomicUsize,
}

fn is_jpeg(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpeg") || e.eq_ignore_ascii_case("jpg"))
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::data(dir, format!("cannot list: {e}")))?;
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

impl ImageFolder {
    /// List `root/train` and `root/val`. Every training class needs a validation folder.
    pub fn open(root: &Path, size: usize, subset: Subset, skip_bad: bool) -> Result<Self> {
        let train_dir = root.join("train");
        let val_dir = root.join("val");
        for d in [&train_dir, &val_dir] {
            if !d.is_dir() {
                return Err(Error::data(d, "missing: an ImageNet folder needs train/<wnid>/ and val/<wnid>/"));
            }
        }
        let mut wnids: Vec<String> = list_dir(&train_dir)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from))
            .collect();
        if wnids.is_empty() {
            return Err(Error::data(&train_dir, "no class folders"));
        }
        let total = wnids.len();
        if subset.classes > 0 {
            if subset.classes > total {
                return Err(Error::data(
                    &train_dir,
                    format!("data.subset_classes = {} but there are only {total} classes", subset.classes),
                ));
            }
            SplitMix64::keyed(&[subset.seed, Stream::Subset as u64, 0]).shuffle(&mut wnids);
            wnids.truncate(subset.classes);
            wnids.sort();
        }
        let list_class = |dir: &Path, c: usize, fraction: f64| -> Result<Vec<(PathBuf, u32)>> {
            let cd = dir.join(&wnids[c]);
            if !cd.is_dir() {
                return Err(Error::data(
                    &cd,
                    format!("class folder {} is missing ({} has {total} classes)", wnids[c], train_dir.display()),
                ));
            }
            let mut files: Vec<PathBuf> = list_dir(&cd)?.into_iter().filter(|p| is_jpeg(p)).collect();
            if files.is_empty() {
                return Err(Error::data(&cd, "no .JPEG files in this class folder"));
            }
            if fraction < 1.0 {
                let keep = ((files.len() as f64 * fraction).ceil() as usize).max(1);
                let mut idx: Vec<usize> = (0..files.len()).collect();
                SplitMix64::keyed(&[subset.seed, Stream::Subset as u64, 1, c as u64]).shuffle(&mut idx);
                idx.truncate(keep);
                idx.sort_unstable();
                files = idx.into_iter().map(|i| files[i].clone()).collect();
            }
            Ok(files.into_iter().map(|f| (f, c as u32)).collect())
        };
        let per_class = |dir: &Path, fraction: f64| -> Result<Vec<(PathBuf, u32)>> {
            let lists: Vec<Vec<(PathBuf, u32)>> =
                (0..wnids.len()).into_par_iter().map(|c| list_class(dir, c, fraction)).collect::<Result<_>>()?;
            Ok(lists.into_iter().flatten().collect())
        };
        let mut files = per_class(&train_dir, subset.fraction)?;
        let train = files.len();
        files.extend(per_class(&val_dir, 1.0)?);
        Ok(ImageFolder {
            root: root.to_path_buf(),
            wnids,
            files,
            train,
            size,
            normalize: Normalize::IMAGENET,
            skip_bad,
            skipped: AtomicUsize::new(0),
        })
    }

    /// The class of every training image, in index order (from the listing: nothing decoded).
    pub fn train_labels(&self) -> Vec<u32> {
        self.files[..self.train].iter().map(|(_, c)| *c).collect()
    }

    pub fn path(&self, index: usize) -> &Path {
        &self.files[index].0
    }

    fn decode(&self, index: usize) -> Result<RgbImage> {
        let path = &self.files[index].0;
        let bytes = std::fs::read(path).map_err(|e| Error::data(path, format!("cannot read: {e}")))?;
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
            .map_err(|e| Error::data(path, format!("cannot decode JPEG: {e}")))?;
        Ok(img.to_rgb8())
    }

    /// torchvision `RandomResizedCrop.get_params` (scale 0.08–1, ratio 3/4–4/3), then resize.
    fn random_resized_crop(&self, img: &RgbImage, rng: &mut SplitMix64) -> RgbImage {
        let (w, h) = (img.width() as f64, img.height() as f64);
        let area = w * h;
        let (lr0, lr1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
        let mut crop = None;
        for _ in 0..10 {
            let target = area * (0.08 + 0.92 * rng.next_f64());
            let ratio = (lr0 + (lr1 - lr0) * rng.next_f64()).exp();
            let cw = (target * ratio).sqrt().round();
            let ch = (target / ratio).sqrt().round();
            if cw >= 1.0 && ch >= 1.0 && cw <= w && ch <= h {
                let y = rng.below((h - ch) as u64 + 1);
                let x = rng.below((w - cw) as u64 + 1);
                crop = Some((x as u32, y as u32, cw as u32, ch as u32));
                break;
            }
        }
        let (x, y, cw, ch) = crop.unwrap_or_else(|| {
            // Fallback: the central crop of the clamped aspect ratio.
            let r = w / h;
            let (cw, ch) = if r < 0.75 {
                (w, (w / 0.75).round())
            } else if r > 4.0 / 3.0 {
                ((h * 4.0 / 3.0).round(), h)
            } else {
                (w, h)
            };
            (((w - cw) / 2.0) as u32, ((h - ch) / 2.0) as u32, cw as u32, ch as u32)
        });
        let s = self.size as u32;
        imageops::resize(&imageops::crop_imm(img, x, y, cw, ch).to_image(), s, s, FilterType::Triangle)
    }

    /// `Resize(round(size·256/224))` of the shorter side, then `CenterCrop(size)`.
    fn resize_center_crop(&self, img: &RgbImage) -> RgbImage {
        let short = (self.size as f64 * 256.0 / 224.0).round() as u32;
        let (w, h) = (img.width(), img.height());
        let (nw, nh) = if w <= h {
            (short, (short as u64 * h as u64 / w as u64) as u32)
        } else {
            ((short as u64 * w as u64 / h as u64) as u32, short)
        };
        let r = imageops::resize(img, nw, nh, FilterType::Triangle);
        let s = self.size as u32;
        let (x, y) = (((nw - s) as f64 / 2.0).round() as u32, ((nh - s) as f64 / 2.0).round() as u32);
        imageops::crop_imm(&r, x, y, s, s).to_image()
    }

    fn write(&self, img: &RgbImage, flip: bool, out: &mut [f32]) {
        let s = self.size;
        for c in 0..3 {
            let (scale, bias) =
                (1.0 / (255.0 * self.normalize.std[c]), -self.normalize.mean[c] / self.normalize.std[c]);
            for y in 0..s {
                for x in 0..s {
                    let sx = if flip { s - 1 - x } else { x };
                    out[c * s * s + y * s + x] = img.get_pixel(sx as u32, y as u32)[c] as f32 * scale + bias;
                }
            }
        }
    }

    /// Images skipped because they could not be decoded (with `skip_bad`).
    pub fn skipped(&self) -> usize {
        self.skipped.load(Ordering::Relaxed)
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn num_classes(&self) -> usize {
        self.wnids.len()
    }
    fn image_shape(&self) -> [usize; 3] {
        [3, self.size, self.size]
    }
    fn train_len(&self) -> usize {
        self.train
    }
    fn fill(&self, index: usize, aug: Option<AugKey>, out: &mut [f32]) -> Result<i64> {
        // With skip_bad, an undecodable image is replaced by the next decodable one of the
        // same split (deterministically), and counted.
        let (lo, hi) = if index < self.train { (0, self.train) } else { (self.train, self.files.len()) };
        let mut i = index;
        let img = loop {
            match self.decode(i) {
                Ok(img) => break img,
                Err(e) if !self.skip_bad => return Err(e),
                Err(e) => {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("skipped: {e}");
                    i = if i + 1 == hi { lo } else { i + 1 };
                    if i == index {
                        return Err(Error::data(&self.root, "no image of this split can be decoded"));
                    }
                }
            }
        };
        match aug {
            Some(key) => {
                let mut rng = key.rng(index);
                let flip = rng.below(2) == 1;
                let crop = self.random_resized_crop(&img, &mut rng);
                self.write(&crop, flip, out);
            }
            None => self.write(&self.resize_center_crop(&img), false, out),
        }
        Ok(self.files[i].1 as i64)
    }
    fn skipped(&self) -> usize {
        ImageFolder::skipped(self)
    }
}
