//! Small dataset files in every supported on-disk format, with known contents: for the tests,
//! the data benchmark, and trying real-data configs without downloading anything.
//!
//! Pixel `(c, y, x)` of image `i` is [`pixel`]; the label of image `i` is given by the caller.

use std::path::Path;

use super::Cifar;
use super::CifarFormat;
use crate::error::{Error, Result};

/// The byte at channel `c`, row `y`, column `x` of image `i` (distinct across neighbours).
pub fn pixel(i: usize, c: usize, y: usize, x: usize) -> u8 {
    ((i * 37 + c * 101 + y * 7 + x * 3) % 256) as u8
}

/// CHW bytes of image `i` at `side`.
pub fn image(i: usize, side: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(3 * side * side);
    for c in 0..3 {
        for y in 0..side {
            for x in 0..side {
                v.push(pixel(i, c, y, x));
            }
        }
    }
    v
}

/// Images `0..n` in `files` consecutive ranges (the last ones may be short or empty).
fn spread(n: usize, files: usize) -> Vec<std::ops::Range<usize>> {
    let per = n.div_ceil(files);
    (0..files).map(|k| (k * per).min(n)..((k + 1) * per).min(n)).collect()
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// CIFAR files in `dir` in `format` (binary, or the "python" pickled batches): `train` images spread over the training files (CIFAR-10: 5 batches; CIFAR-100: one
/// train file), then `test` images; image i (counting the test images after the training ones)
/// has label `label(i)` (CIFAR-100: fine label, coarse = fine/5).
pub fn write_cifar(
    dir: &Path,
    format: CifarFormat,
    kind: Cifar,
    train: usize,
    test: usize,
    label: impl Fn(usize) -> u8,
) -> Result<()> {
    match format {
        CifarFormat::Binary => cifar_binary(dir, kind, (train, test), &label),
        CifarFormat::Python => cifar_python(dir, kind, (train, test), &label),
    }
}

fn cifar_binary(dir: &Path, kind: Cifar, (train, test): (usize, usize), label: &dyn Fn(usize) -> u8) -> Result<()> {
    let record = |i: usize| -> Vec<u8> {
        let mut r = match kind {
            Cifar::Ten => vec![label(i)],
            Cifar::Hundred => vec![label(i) / 5, label(i)],
        };
        r.extend(image(i, 32));
        r
    };
    let files: Vec<(String, std::ops::Range<usize>)> = match kind {
        Cifar::Ten => {
            let mut v: Vec<_> = spread(train, 5)
                .into_iter()
                .enumerate()
                .map(|(k, r)| (format!("data_batch_{}.bin", k + 1), r))
                .collect();
            v.push(("test_batch.bin".into(), train..train + test));
            v
        }
        Cifar::Hundred => vec![("train.bin".into(), 0..train), ("test.bin".into(), train..train + test)],
    };
    for (name, range) in files {
        let bytes: Vec<u8> = range.flat_map(record).collect();
        write(&dir.join(name), &bytes)?;
    }
    Ok(())
}

/// A Python 2 `cPickle` (protocol 2) dict `{'data': uint8 array [n, per], <label_key>: [ints]}`,
/// laid out as the CIFAR "python" files are.
pub fn pickle_batch(pixels: &[u8], per: usize, labels: &[i64], label_key: &str) -> Vec<u8> {
    let n = labels.len();
    assert_eq!(pixels.len(), n * per);
    let mut b: Vec<u8> = b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85U\x01b\x87Rq\x04(K\x01".to_vec();
    for d in [n, per] {
        b.push(b'J');
        b.extend_from_slice(&(d as i32).to_le_bytes());
    }
    b.extend_from_slice(b"\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T");
    b.extend_from_slice(&(pixels.len() as u32).to_le_bytes());
    b.extend_from_slice(pixels);
    b.extend_from_slice(b"tbU");
    b.push(label_key.len() as u8);
    b.extend_from_slice(label_key.as_bytes());
    b.extend_from_slice(b"](");
    for &l in labels {
        b.push(b'J');
        b.extend_from_slice(&(l as i32).to_le_bytes());
    }
    b.extend_from_slice(b"eu.");
    b
}

fn cifar_python(dir: &Path, kind: Cifar, (train, test): (usize, usize), label: &dyn Fn(usize) -> u8) -> Result<()> {
    let batch = |range: std::ops::Range<usize>| -> Vec<u8> {
        let pixels: Vec<u8> = range.clone().flat_map(|i| image(i, 32)).collect();
        let labels: Vec<i64> = range.map(|i| label(i) as i64).collect();
        let key = if kind == Cifar::Ten { "labels" } else { "fine_labels" };
        pickle_batch(&pixels, 3072, &labels, key)
    };
    match kind {
        Cifar::Ten => {
            for (k, range) in spread(train, 5).into_iter().enumerate() {
                write(&dir.join(format!("data_batch_{}", k + 1)), &batch(range))?;
            }
            write(&dir.join("test_batch"), &batch(train..train + test))
        }
        Cifar::Hundred => {
            write(&dir.join("train"), &batch(0..train))?;
            write(&dir.join("test"), &batch(train..train + test))
        }
    }
}

/// ImageNet16 files in `dir`: `train` images over `train_data_batch_1..10`, then `val`
/// images in `val_data`, 16×16, with stored (1-based) labels `label(i)`.
pub fn write_imagenet16(dir: &Path, train: usize, val: usize, label: impl Fn(usize) -> i64) -> Result<()> {
    let batch = |range: std::ops::Range<usize>| -> Vec<u8> {
        let pixels: Vec<u8> = range.clone().flat_map(|i| image(i, 16)).collect();
        let labels: Vec<i64> = range.map(&label).collect();
        pickle_batch(&pixels, 768, &labels, "labels")
    };
    for (k, range) in spread(train, 10).into_iter().enumerate() {
        write(&dir.join(format!("train_data_batch_{}", k + 1)), &batch(range))?;
    }
    write(&dir.join("val_data"), &batch(train..train + val))
}

/// An ILSVRC-style folder: `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` for `classes` classes
/// (`n0000000k`), `w × h` images of one flat colour per image ([`flat_colour`]).
pub fn write_jpeg_folder(
    dir: &Path,
    classes: usize,
    train_per_class: usize,
    val_per_class: usize,
    w: u32,
    h: u32,
) -> Result<()> {
    for (split, per) in [("train", train_per_class), ("val", val_per_class)] {
        for c in 0..classes {
            let d = dir.join(split).join(wnid(c));
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            for k in 0..per {
                let rgb = flat_colour(c, k);
                let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
                let path = d.join(format!("{}_{k}.JPEG", wnid(c)));
                img.save_with_format(&path, image::ImageFormat::Jpeg)
                    .map_err(|e| Error::data(&path, format!("cannot encode JPEG: {e}")))?;
            }
        }
    }
    Ok(())
}

/// The class folder name of class `c`.
pub fn wnid(c: usize) -> String {
    format!("n{c:08}")
}

/// The colour of image `k` of class `c` in [`write_jpeg_folder`].
pub fn flat_colour(c: usize, k: usize) -> [u8; 3] {
    [(40 + (50 * c) % 200) as u8, (60 + (30 * k) % 180) as u8, 128]
}

/// An ILSVRC-style folder of photo-like JPEGs (smooth gradients plus seeded pixel noise,
/// quality 75; at 500×375 about 60–100 KB, as ImageNet's): `classes` classes, `train_per_class`
/// and `val_per_class` images each. Image k of a class is `size(k)` (width, height), so that
/// portrait and landscape images can be mixed. Flat-colour images would decode and resize
/// unrealistically fast, and would make a pixel-exact comparison trivial.
pub fn write_textured_jpeg_folder(
    dir: &Path,
    classes: usize,
    train_per_class: usize,
    val_per_class: usize,
    size: impl Fn(usize) -> (u32, u32),
) -> Result<()> {
    for (s, (split, per)) in [("train", train_per_class), ("val", val_per_class)].into_iter().enumerate() {
        for c in 0..classes {
            let d = dir.join(split).join(wnid(c));
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            for k in 0..per {
                let (w, h) = size(k);
                let mut x = ((s * 1_000_000 + c * 1000 + k) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let img = image::RgbImage::from_fn(w, h, |px, py| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let n = (x % 64) as u32;
                    image::Rgb([
                        ((px / 2 + n + 40 * c as u32) % 256) as u8,
                        ((py / 2 + n) % 256) as u8,
                        (((px + py) / 4 + n + 17 * k as u32) % 256) as u8,
                    ])
                });
                let path = d.join(format!("{}_{k}.JPEG", wnid(c)));
                let f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
                let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(f), 75);
                enc.encode_image(&img).map_err(|e| Error::data(&path, format!("cannot encode JPEG: {e}")))?;
            }
        }
    }
    Ok(())
}
