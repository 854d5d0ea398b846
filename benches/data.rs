//! Data-loading benchmark (not a test): `cargo bench --bench data [-- quick]`.
//!
//! Writes a CIFAR-10 binary set (10,000 training images) and an ILSVRC-style JPEG folder
//! (500×375 images, ImageNet's typical size) into a temporary directory, then measures
//! decoded, augmented images per second of `HostBatch::load` (batches of 256 and 64; each
//! image decoded, augmented — flip + padded crop, or random-resized crop + flip to 224 — and
//! normalised) on rayon pools of 1 and 2 threads; then packs the JPEG folder as `prepare` does
//! (short side 256 and 160) and measures reading from the packed stores the same way.

use std::time::Instant;

use dartsif::data::{fixtures, prepare};
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
    fixtures::write_textured_jpeg_folder(&jpeg, classes, per, 2, |_| (500, 375)).unwrap();
    let ds = ImageFolder::open(&jpeg, 224, Subset { classes: 0, fraction: 1.0, seed: 0 }, false).unwrap();
    let batches = if quick { 1 } else { 5 };
    for threads in [1, 2] {
        let r = rate(&ds, 64, batches, threads);
        println!("JPEG folder 500×375 → 224, batch 64, {threads} thread(s): {r:7.0} images/s");
    }

    // The same images packed by `prepare` (short side 256 and 160), read back the same way.
    for short in [256u32, 160] {
        let out = dir.path().join(format!("packed-{short}"));
        std::fs::create_dir(&out).unwrap();
        let t = Instant::now();
        let (plan, shards) = prepare::plan(&jpeg, short, 1024).unwrap();
        for s in &shards {
            prepare::write_shard(&jpeg, &out, s, &plan, false).unwrap();
        }
        let m = prepare::finalize(&out, &plan, &shards).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let n = m.train_images + m.val_images;
        println!(
            "prepare at short side {short}: {n} images in {secs:.2} s ({:.0} images/s, 2 threads), {:.1} KB per image",
            n as f64 / secs,
            m.bytes as f64 / n as f64 / 1e3
        );
        let ds = ImageFolder::open(&out, 224, Subset { classes: 0, fraction: 1.0, seed: 0 }, false).unwrap();
        for threads in [1, 2] {
            let r = rate(&ds, 64, batches * 4, threads);
            println!("packed, short side {short} → 224, batch 64, {threads} thread(s): {r:7.0} images/s");
        }
    }
}
