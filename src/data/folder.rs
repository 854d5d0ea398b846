//! ImageNet in the ILSVRC folder layout (`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`), decoded on
//! demand with torchvision's transforms: `RandomResizedCrop(size)` + horizontal flip for
//! training, `Resize(size·256/224)` + `CenterCrop(size)` otherwise; ImageNet normalisation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::imageops;
use image::RgbImage;
use rayon::prelude::*;

use super::packed::{self, Packed};
use super::transform::{AugKey, ColorJitter, Normalize};
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

/// An image folder dataset: training images, then validation images — decoded from the JPEG
/// tree, or read from a packed, pre-resized copy of it (`dartsif-dist prepare`).
#[derive(Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub wnids: Vec<String>,
    items: Vec<(Item, u32)>,
    packed: Option<Packed>,
    pub train: usize,
    size: usize,
    normalize: Normalize,
    /// Colour jitter of training crops (off by default; DARTS's ImageNet training uses it).
    pub jitter: ColorJitter,
    skip_bad: bool,
    skipped: AtomicUsize,
}

/// Where an image comes from.
#[derive(Debug, Clone)]
enum Item {
    File(PathBuf),
    Record(usize),
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

/// The class folders of `root/train` (sorted), after checking that `train/` and `val/` exist.
pub(crate) fn class_names(root: &Path) -> Result<Vec<String>> {
    for d in [root.join("train"), root.join("val")] {
        if !d.is_dir() {
            return Err(Error::data(&d, "missing: an ImageNet folder needs train/<wnid>/ and val/<wnid>/"));
        }
    }
    let train_dir = root.join("train");
    let wnids: Vec<String> = list_dir(&train_dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from))
        .collect();
    if wnids.is_empty() {
        return Err(Error::data(&train_dir, "no class folders"));
    }
    Ok(wnids)
}

/// The JPEG files of class `wnid` in `root/<split>` (sorted); `total` classes, for the message.
pub(crate) fn class_files(root: &Path, split: &str, wnid: &str, total: usize) -> Result<Vec<PathBuf>> {
    let cd = root.join(split).join(wnid);
    if !cd.is_dir() {
        return Err(Error::data(
            &cd,
            format!("class folder {wnid} is missing ({} has {total} classes)", root.join("train").display()),
        ));
    }
    let files: Vec<PathBuf> = list_dir(&cd)?.into_iter().filter(|p| is_jpeg(p)).collect();
    if files.is_empty() {
        return Err(Error::data(&cd, "no .JPEG files in this class folder"));
    }
    Ok(files)
}

/// The classes a subset keeps, as indices into `wnids` in name order (all when `classes` is 0).
fn choose_classes(wnids: &[String], subset: Subset, origin: &Path) -> Result<Vec<usize>> {
    let total = wnids.len();
    if subset.classes == 0 {
        return Ok((0..total).collect());
    }
    if subset.classes > total {
        return Err(Error::data(
            origin,
            format!("data.subset_classes = {} but there are only {total} classes", subset.classes),
        ));
    }
    let mut names = wnids.to_vec();
    SplitMix64::keyed(&[subset.seed, Stream::Subset as u64, 0]).shuffle(&mut names);
    names.truncate(subset.classes);
    names.sort();
    Ok(names.iter().map(|n| wnids.iter().position(|w| w == n).expect("a listed class")).collect())
}

/// The images of (kept) class `c` that a subset keeps: a seeded fraction, in listing order.
fn choose_images<T: Clone>(items: Vec<T>, fraction: f64, seed: u64, c: usize) -> Vec<T> {
    if fraction >= 1.0 {
        return items;
    }
    let keep = ((items.len() as f64 * fraction).ceil() as usize).max(1);
    let mut idx: Vec<usize> = (0..items.len()).collect();
    SplitMix64::keyed(&[seed, Stream::Subset as u64, 1, c as u64]).shuffle(&mut idx);
    idx.truncate(keep);
    idx.sort_unstable();
    idx.into_iter().map(|i| items[i].clone()).collect()
}

/// Decode the JPEG at `path` to RGB.
pub(crate) fn decode_jpeg(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::data(path, format!("cannot read: {e}")))?;
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        // The decoder's messages may end in a line break: one line, as every error.
        .map_err(|e| {
            Error::data(
                path,
                format!("cannot decode JPEG: {}", e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")),
            )
        })?;
    Ok(img.to_rgb8())
}

/// The region `(x, y, width, height)` of `img` resized to `nw × nh`: bilinear with Pillow's
/// antialiasing (what torchvision's PIL transforms do), by fast_image_resize.
fn resize_region(img: &RgbImage, region: (f64, f64, f64, f64), nw: u32, nh: u32) -> RgbImage {
    use fast_image_resize as fr;
    let src = fr::images::ImageRef::new(img.width(), img.height(), img.as_raw(), fr::PixelType::U8x3)
        .expect("an RGB image's buffer");
    let mut dst = fr::images::Image::new(nw, nh, fr::PixelType::U8x3);
    let (x, y, w, h) = region;
    let opts =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear)).crop(x, y, w, h);
    fr::Resizer::new().resize(&src, &mut dst, &opts).expect("same pixel type, a crop inside the image");
    RgbImage::from_raw(nw, nh, dst.into_vec()).expect("nw·nh·3 bytes")
}

/// torchvision's `Resize(short)`: the shorter side to `short`, the longer one scaled and
/// truncated, bilinear (antialiased); an image already that size is returned as it is.
pub fn resize_short(img: &RgbImage, short: u32) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let (nw, nh) = if w <= h {
        (short, (short as u64 * h as u64 / w as u64) as u32)
    } else {
        ((short as u64 * w as u64 / h as u64) as u32, short)
    };
    if (nw, nh) == (w, h) {
        return img.clone();
    }
    resize_region(img, (0.0, 0.0, w as f64, h as f64), nw, nh)
}

impl ImageFolder {
    /// List `root/train` and `root/val` (every training class needs a validation folder), or
    /// open the packed store at `root` (one with `packed.json`, from `dartsif-dist prepare`).
    /// A subset is the same images either way.
    pub fn open(root: &Path, size: usize, subset: Subset, skip_bad: bool) -> Result<Self> {
        let (wnids, per_class, packed) = if packed::is_packed(root) {
            let store = Packed::open(root)?;
            let all = &store.manifest.plan.wnids;
            let keep = choose_classes(all, subset, root)?;
            let mut train: Vec<Vec<Item>> = vec![Vec::new(); all.len()];
            let mut val: Vec<Vec<Item>> = vec![Vec::new(); all.len()];
            for i in 0..store.len() {
                let lists = if i < store.train_len() { &mut train } else { &mut val };
                lists[store.label(i) as usize].push(Item::Record(i));
            }
            let per_class: Vec<(Vec<Item>, Vec<Item>)> =
                keep.iter().map(|&o| (std::mem::take(&mut train[o]), std::mem::take(&mut val[o]))).collect();
            let wnids = keep.iter().map(|&o| all[o].clone()).collect();
            (wnids, per_class, Some(store))
        } else {
            let all = class_names(root)?;
            let keep = choose_classes(&all, subset, &root.join("train"))?;
            let total = all.len();
            let per_class: Vec<(Vec<Item>, Vec<Item>)> = keep
                .par_iter()
                .map(|&o| -> Result<_> {
                    let files = |split| -> Result<Vec<Item>> {
                        Ok(class_files(root, split, &all[o], total)?.into_iter().map(Item::File).collect())
                    };
                    Ok((files("train")?, files("val")?))
                })
                .collect::<Result<_>>()?;
            (keep.iter().map(|&o| all[o].clone()).collect(), per_class, None)
        };
        let mut items: Vec<(Item, u32)> = Vec::new();
        let mut vals: Vec<(Item, u32)> = Vec::new();
        for (c, (train, val)) in per_class.into_iter().enumerate() {
            items.extend(choose_images(train, subset.fraction, subset.seed, c).into_iter().map(|i| (i, c as u32)));
            vals.extend(val.into_iter().map(|i| (i, c as u32)));
        }
        let train = items.len();
        items.extend(vals);
        Ok(ImageFolder {
            root: root.to_path_buf(),
            wnids,
            items,
            packed,
            train,
            size,
            normalize: Normalize::IMAGENET,
            jitter: ColorJitter::default(),
            skip_bad,
            skipped: AtomicUsize::new(0),
        })
    }

    /// The class of every training image, in index order (from the listing: nothing decoded).
    pub fn train_labels(&self) -> Vec<u32> {
        self.items[..self.train].iter().map(|(_, c)| *c).collect()
    }

    /// Where image `index` comes from: its file, or its packed shard and record.
    pub fn source_of(&self, index: usize) -> String {
        match &self.items[index].0 {
            Item::File(p) => p.display().to_string(),
            Item::Record(r) => self.packed.as_ref().expect("a packed store").describe(*r),
        }
    }

    /// Whether the images come from a packed store, and its short side.
    pub fn packed_short_side(&self) -> Option<u32> {
        self.packed.as_ref().map(|p| p.manifest.plan.short_side)
    }

    fn decode(&self, index: usize) -> Result<RgbImage> {
        match &self.items[index].0 {
            Item::File(path) => decode_jpeg(path),
            Item::Record(r) => self.packed.as_ref().expect("a packed store").read(*r),
        }
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
        resize_region(img, (x as f64, y as f64, cw as f64, ch as f64), s, s)
    }

    /// `Resize(round(size·256/224))` of the shorter side, then `CenterCrop(size)`.
    fn resize_center_crop(&self, img: &RgbImage) -> RgbImage {
        let r = resize_short(img, (self.size as f64 * 256.0 / 224.0).round() as u32);
        let (nw, nh) = (r.width(), r.height());
        let s = self.size as u32;
        let (x, y) = (((nw - s) as f64 / 2.0).round() as u32, ((nh - s) as f64 / 2.0).round() as u32);
        imageops::crop_imm(&r, x, y, s, s).to_image()
    }

    fn write(&self, img: &RgbImage, flip: bool, out: &mut [f32]) {
        let s = self.size;
        let raw = img.as_raw();
        for c in 0..3 {
            let (scale, bias) =
                (1.0 / (255.0 * self.normalize.std[c]), -self.normalize.mean[c] / self.normalize.std[c]);
            for (y, row) in out[c * s * s..(c + 1) * s * s].chunks_exact_mut(s).enumerate() {
                let src = &raw[y * s * 3..(y + 1) * s * 3];
                for (x, o) in row.iter_mut().enumerate() {
                    let sx = if flip { s - 1 - x } else { x };
                    *o = src[sx * 3 + c] as f32 * scale + bias;
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
        self.items.len()
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
        let (lo, hi) = if index < self.train { (0, self.train) } else { (self.train, self.items.len()) };
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
                let mut crop = self.random_resized_crop(&img, &mut rng);
                if !self.jitter.is_off() {
                    // After the crop's draws: crops are the same with and without jitter.
                    self.jitter.apply(&mut crop, &mut rng);
                }
                self.write(&crop, flip, out);
            }
            None => self.write(&self.resize_center_crop(&img), false, out),
        }
        Ok(self.items[i].1 as i64)
    }
    fn skipped(&self) -> usize {
        ImageFolder::skipped(self)
    }
}
