//! Data-loading benchmark (not a test): `cargo bench --bench data [-- quick]`.
//!
//! Writes a CIFAR-10 binary set (10,000 training images) and an ILSVRC-style JPEG folder
//! (500×375 images, ImageNet's typical size) into a temporary directory, then measures
//! decoded, augmented images per second of `HostBatch::load` (batches of 256 and 64; each
//! image decoded, augmented — flip + padded crop, or random-resized crop + flip to 224 — and
//! normalised) on rayon pools of 1 and 2 threads.

use std::time::Instant;

use dartsif::data::fixtures;
use dartsif::data::{AugKey, Cifar, CifarFormat, Dataset, HostBatch, ImageFolder, Normalize, Subset};

fn rate(ds: &dyn Dataset, batch: usize, batches: usize, threads: usize) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let n = ds.train_len();
    pool.install(|| {
        let _ = HostBatch::load(ds, &(0..batch.min(n)).collect::<Vec<_>>(), None).unwrap(); // warm the page cache
        let t = Instant::now();
        for b in 0..batches {
            let idx: Vec<usize> = (0..batch).map(|i| (b * batch + i * 7919) % n).collect();
            let out = HostBatch::load(ds, &idx, Some(AugKey { seed: 1, epoch: b })).unwrap();
            std::hint::black_box(out);
        }
        (batches * batch) as f64 / t.elapsed().as_secs_f64()
    })
}

/// Photo-like JPEGs (smooth gradients plus pixel noise, quality 75: about 60–100 KB at
/// 500×375, as ImageNet's); flat-colour ones would decode unrealistically fast.
fn write_textured_jpegs(root: &std::path::Path, classes: usize, per: usize) {
    for split in ["train", "val"] {
        for c in 0..classes {
            let d = root.join(split).join(fixtures::wnid(c));
            std::fs::create_dir_all(&d).unwrap();
            for k in 0..(if split == "train" { per } else { 2 }) {
                let mut h = (c * 1000 + k) as u64 | 1;
                let img = image::RgbImage::from_fn(500, 375, |x, y| {
                    h ^= h << 13;
                    h ^= h >> 7;
                    h ^= h << 17;
                    let n = (h % 64) as u32;
                    image::Rgb([((x / 2 + n) % 256) as u8, ((y / 2 + n) % 256) as u8, (((x + y) / 4 + n) % 256) as u8])
                });
                let f = std::fs::File::create(d.join(format!("{k}.JPEG"))).unwrap();
                let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(f), 75);
                enc.encode_image(&img).unwrap();
            }
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let dir = tempfile::tempdir().unwrap();

    let cifar = dir.path().join("cifar");
    std::fs::create_dir(&cifar).unwrap();
    let n = if quick { 2_000 } else { 10_000 };
    fixtures::write_cifar(&cifar, CifarFormat::Binary, Cifar::Ten, n, 100, |i| (i % 10) as u8).unwrap();
    let t = Instant::now();
    let ds = Cifar::Ten.open(&cifar, None, Normalize::DARTS_CIFAR10).unwrap();
    println!("CIFAR-10 binary: {} images read in {:.3} s", ds.len(), t.elapsed().as_secs_f64());
    for threads in [1, 2] {
        let r = rate(&ds, 256, if quick { 4 } else { 40 }, threads);
        println!("CIFAR-10 binary, batch 256, {threads} thread(s): {r:9.0} images/s");
    }

    let jpeg = dir.path().join("imagenet");
    let (classes, per) = if quick { (4, 8) } else { (10, 40) };
    write_textured_jpegs(&jpeg, classes, per);
    let ds = ImageFolder::open(&jpeg, 224, Subset { classes: 0, fraction: 1.0, seed: 0 }, false).unwrap();
    for threads in [1, 2] {
        let r = rate(&ds, 64, if quick { 1 } else { 5 }, threads);
        println!("JPEG folder 500×375 → 224, batch 64, {threads} thread(s): {r:7.0} images/s");
    }
}
