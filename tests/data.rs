//! Real-data readers on small files written by the tests (nothing is downloaded): images,
//! labels, splits and subsets exactly; augmentation independent of ranks; bad data refused
//! with one line naming the file, and nothing written.

mod common;

use std::path::Path;

use common::{assert_ok, stderr};
use dartsif::config::Config;
use dartsif::data::fixtures::{self, image, wnid};
use dartsif::data::{
    self, open_imagenet16, AugKey, Cifar, CifarFormat, Dataset, HostBatch, ImageFolder, Normalize, Subset,
};

/// Normalised value of byte `b` in channel `c`.
fn norm(n: &Normalize, c: usize, b: u8) -> f32 {
    (b as f32 / 255.0 - n.mean[c]) / n.std[c]
}

fn check_images(ds: &dyn Dataset, n: &Normalize, side: usize, want: impl Fn(usize) -> (usize, i64)) {
    let per = 3 * side * side;
    let mut out = vec![0f32; per];
    for i in 0..ds.len() {
        let (src, label) = want(i);
        assert_eq!(ds.fill(i, None, &mut out).unwrap(), label, "label of sample {i}");
        let img = image(src, side);
        for (k, (&o, &b)) in out.iter().zip(&img).enumerate() {
            let w = norm(n, k / (side * side), b);
            assert!((o - w).abs() < 1e-5, "sample {i} byte {k}: {o} vs {w}");
        }
    }
}

#[test]
fn cifar10_binary_and_python_read_the_same_images() {
    let label = |i: usize| ((i * 3) % 10) as u8;
    for format in [CifarFormat::Binary, CifarFormat::Python] {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_cifar(dir.path(), format, Cifar::Ten, 23, 7, label).unwrap();
        let ds = Cifar::Ten.open(dir.path(), None, Normalize::NB201_CIFAR10).unwrap();
        assert_eq!(
            (ds.len(), ds.train_len(), ds.num_classes(), ds.image_shape()),
            (30, 23, 10, [3, 32, 32]),
            "{format:?}"
        );
        check_images(&ds, &Normalize::NB201_CIFAR10, 32, |i| (i, label(i) as i64));
    }
}

#[test]
fn cifar100_fine_labels_in_both_formats() {
    let label = |i: usize| ((i * 7) % 100) as u8;
    for format in [CifarFormat::Binary, CifarFormat::Python] {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join(if format == CifarFormat::Binary { "cifar-100-binary" } else { "cifar-100-python" });
        std::fs::create_dir(&sub).unwrap();
        fixtures::write_cifar(&sub, format, Cifar::Hundred, 12, 5, label).unwrap();
        // The usual subfolder is found from the parent directory.
        let ds = Cifar::Hundred.open(dir.path(), Some(format), Normalize::DARTS_CIFAR100).unwrap();
        assert_eq!((ds.len(), ds.train_len(), ds.num_classes()), (17, 12, 100));
        check_images(&ds, &Normalize::DARTS_CIFAR100, 32, |i| (i, label(i) as i64));
    }
}

#[test]
fn imagenet16_120_keeps_labels_1_to_120_as_0_to_119() {
    let dir = tempfile::tempdir().unwrap();
    // Stored labels cycle over 1..=1000 in steps of 97: some ≤ 120, most above.
    let stored = |i: usize| (1 + (i * 97) % 1000) as i64;
    fixtures::write_imagenet16(dir.path(), 40, 12, stored).unwrap();
    let ds = open_imagenet16(dir.path(), 120).unwrap();
    let kept: Vec<usize> = (0..52).filter(|&i| stored(i) <= 120).collect();
    let train_kept = kept.iter().filter(|&&i| i < 40).count();
    assert!(train_kept > 0 && kept.len() > train_kept, "the fixture keeps train and val images");
    assert_eq!(
        (ds.len(), ds.train_len(), ds.num_classes(), ds.image_shape()),
        (kept.len(), train_kept, 120, [3, 16, 16])
    );
    check_images(&ds, &Normalize::NB201_IMAGENET16, 16, |i| (kept[i], stored(kept[i]) - 1));
    let all = open_imagenet16(dir.path(), 1000).unwrap();
    assert_eq!(all.len(), 52);
}

#[test]
fn jpeg_folders_classes_subsets_and_transforms() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_jpeg_folder(dir.path(), 5, 4, 2, 40, 30).unwrap();
    std::fs::write(dir.path().join("train").join(wnid(0)).join("notes.txt"), "not an image").unwrap();
    let all = ImageFolder::open(dir.path(), 16, Subset { classes: 0, fraction: 1.0, seed: 1 }, false).unwrap();
    assert_eq!((all.len(), all.train_len(), all.num_classes(), all.image_shape()), (30, 20, 5, [3, 16, 16]));
    // Flat-colour JPEGs: every output pixel is the colour (JPEG rounding: within 3 levels), in
    // both the test view and the augmented view; labels follow the sorted class folders.
    let n = Normalize::IMAGENET;
    let mut out = vec![0f32; 3 * 16 * 16];
    for i in [0usize, 7, 19, 20, 29] {
        let (c, k) = if i < 20 { (i / 4, i % 4) } else { ((i - 20) / 2, (i - 20) % 2) };
        let rgb = fixtures::flat_colour(c, k);
        for aug in [None, Some(AugKey { seed: 4, epoch: 2 })] {
            assert_eq!(all.fill(i, aug, &mut out).unwrap(), c as i64);
            for (j, &o) in out.iter().enumerate() {
                let ch = j / 256;
                let tol = 3.0 / 255.0 / n.std[ch];
                assert!((o - norm(&n, ch, rgb[ch])).abs() <= tol, "image {i} channel {ch}: {o}");
            }
        }
    }
    // Subsets: 3 of 5 classes chosen with the seed, half of each class's training images.
    let sub = ImageFolder::open(dir.path(), 16, Subset { classes: 3, fraction: 0.5, seed: 9 }, false).unwrap();
    assert_eq!((sub.num_classes(), sub.train_len(), sub.len()), (3, 6, 12));
    let again = ImageFolder::open(dir.path(), 16, Subset { classes: 3, fraction: 0.5, seed: 9 }, false).unwrap();
    assert_eq!(sub.wnids, again.wnids);
    assert!(sub.wnids.windows(2).all(|w| w[0] < w[1]));
    for i in 0..sub.len() {
        let label = sub.fill(i, None, &mut out).unwrap() as usize;
        let parent = std::path::PathBuf::from(sub.source_of(i));
        let parent = parent.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(sub.wnids[label], parent);
    }
    let other = ImageFolder::open(dir.path(), 16, Subset { classes: 3, fraction: 0.5, seed: 10 }, false).unwrap();
    let paths = |d: &ImageFolder| (0..d.len()).map(|i| d.source_of(i)).collect::<Vec<_>>();
    assert_ne!(paths(&sub), paths(&other), "another seed, another subset");
}

/// The split file's indices become the θ and α sets; `test:` indexes the test set.
#[test]
fn nb201_split_files_and_halves() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_cifar(dir.path(), CifarFormat::Binary, Cifar::Ten, 20, 10, |i| (i % 10) as u8).unwrap();
    let split = dir.path().join("split.txt");
    std::fs::write(&split, r#"{"train": ["int", [0, 5, 7, 19]], "xvalid": ["int", [9, 0, 3, 4]]}"#).unwrap();
    let root = dir.path().display().to_string();
    let sets = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "data.dataset=\"cifar10\"".to_string(),
            format!("data.root=\"{root}\""),
            "data.num_classes=0".into(),
            "data.image_size=0".into(),
            "data.train_size=\"all\"".into(),
            "data.test_size=\"none\"".into(),
            "search.batch_size=4".into(),
            "search.micro_batch=0".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut cfg = Config::load(
        None,
        &sets(&[
            &format!("data.split_file=\"{}\"", split.display()),
            "data.split=\"file\"",
            "data.arch_split=\"test:xvalid\"",
        ]),
    )
    .unwrap();
    let src = data::open(&mut cfg).unwrap();
    assert_eq!(src.split.weights, vec![0, 5, 7, 19]);
    assert_eq!(src.split.arch, vec![29, 20, 23, 24]);
    assert_eq!((cfg.data.num_classes, cfg.data.image_size), (10, 32));

    let mut cfg = Config::load(None, &sets(&["data.train_size=12", "data.test_size=3"])).unwrap();
    let src = data::open(&mut cfg).unwrap();
    assert_eq!(src.split.weights, (0..6).collect::<Vec<_>>());
    assert_eq!(src.split.arch, (6..12).collect::<Vec<_>>());
    assert_eq!(src.test, vec![20, 21, 22]);

    // Out-of-range split indices name the file and the key.
    std::fs::write(&split, r#"{"train": [0, 20], "valid": [1]}"#).unwrap();
    let mut cfg =
        Config::load(None, &sets(&[&format!("data.split_file=\"{}\"", split.display()), "data.split=\"file\""]))
            .unwrap();
    let e = data::open(&mut cfg).err().unwrap().to_string();
    assert!(e.contains("split.txt") && e.contains("\"train\": index 20 is outside the training set of 20"), "{e}");
    // A config value that disagrees with the data.
    let mut cfg = Config::load(None, &sets(&["data.num_classes=100"])).unwrap();
    let e = data::open(&mut cfg).err().unwrap().to_string();
    assert!(e.contains("data.num_classes: 100 disagrees with the data (cifar10 has 10)"), "{e}");
}

/// Each rank decodes only its shard, and the shards of an augmented global batch are exactly
/// the slices of the batch decoded whole (augmentation keyed by (seed, epoch, index)).
#[test]
fn augmented_shards_equal_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_cifar(dir.path(), CifarFormat::Binary, Cifar::Ten, 40, 5, |i| (i % 10) as u8).unwrap();
    let ds = Cifar::Ten.open(dir.path(), None, Normalize::DARTS_CIFAR10).unwrap();
    let global = [17usize, 3, 38, 0, 21, 9, 30, 12];
    let key = Some(AugKey { seed: 7, epoch: 3 });
    let whole = HostBatch::load(&ds, &global, key).unwrap();
    let per = 3 * 32 * 32;
    for world in [2usize, 4] {
        for r in 0..world {
            let mine = data::shard(&global, r, world);
            let part = HostBatch::load(&ds, mine, key).unwrap();
            let lo = r * mine.len();
            assert_eq!(part.pixels, whole.pixels[lo * per..(lo + mine.len()) * per], "world {world} rank {r}");
            assert_eq!(part.labels, whole.labels[lo..lo + mine.len()]);
        }
    }
    // And it is an augmentation: the view differs from the test view for most images.
    let plain = HostBatch::load(&ds, &global, None).unwrap();
    let differ =
        (0..8).filter(|&i| whole.pixels[i * per..(i + 1) * per] != plain.pixels[i * per..(i + 1) * per]).count();
    assert!(differ >= 4, "{differ}");
}

/// `search` on CIFAR-10 files under 1 and 2 ranks (with and without the prefetch thread): the
/// same images after augmentation, so the same α to rounding (only summation order differs).
#[test]
fn search_on_cifar_files_is_rank_independent() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_cifar(dir.path(), CifarFormat::Binary, Cifar::Ten, 128, 16, |i| (i % 10) as u8).unwrap();
    let root = format!("data.root=\"{}\"", dir.path().display());
    let sets = [
        "data.dataset=\"cifar10\"",
        &root,
        "data.train_size=\"all\"",
        "data.test_size=16",
        "data.image_size=0",
        "data.num_classes=0",
        "search.epochs=1",
        "search.steps_per_epoch=2",
    ];
    let mut alphas = Vec::new();
    for np in [1, 2] {
        let out = dir.path().join(format!("run{np}"));
        // The 2-rank run also decodes in the training loop instead of the prefetch thread.
        let mut sets = sets.to_vec();
        if np == 2 {
            sets.push("data.prefetch=0");
        }
        let o = common::search(np, &out, &sets);
        assert_ok(&o);
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
        let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
        assert!(cfg.contains("image_size = 32") && cfg.contains("num_classes = 10"), "resolved values are recorded");
        alphas.push(report["edges"].clone());
    }
    let flat = |v: &serde_json::Value| -> Vec<f64> {
        let mut out = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
            match v {
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
                serde_json::Value::Number(n) => out.push(n.as_f64().unwrap()),
                _ => {}
            }
        }
        walk(v, &mut out);
        out
    };
    let (a, b) = (flat(&alphas[0]), flat(&alphas[1]));
    assert!(!a.is_empty() && a.len() == b.len());
    let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(max < 1e-5, "α differs by {max} between 1 and 2 ranks");
}

/// Runs `search` on broken data: exit 2, one line naming the file (and record), no run dir.
fn refused(dataset: &str, root: &Path, extra: &[&str], expect: &[&str]) {
    let out = root.join("out");
    let root_set = format!("data.root=\"{}\"", root.display());
    let ds = format!("data.dataset=\"{dataset}\"");
    let mut sets =
        vec![ds.as_str(), root_set.as_str(), "data.train_size=\"all\"", "data.image_size=0", "data.num_classes=0"];
    sets.extend_from_slice(extra);
    let o = common::search(0, &out, &sets);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    for e in expect {
        assert!(err.contains(e), "{e:?} not in {err}");
    }
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn bad_cifar_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fixtures::write_cifar(p, CifarFormat::Binary, Cifar::Ten, 50, 10, |i| (i % 10) as u8).unwrap();
    // Truncated: the last record of data_batch_3.bin loses 100 bytes.
    let f = p.join("data_batch_3.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    refused("cifar10", p, &[], &["data_batch_3.bin", "not a whole number of 3073-byte records"]);
    // Wrong record size: CIFAR-100 records (3074 bytes) in a CIFAR-10 file.
    let c100 = tempfile::tempdir().unwrap();
    fixtures::write_cifar(c100.path(), CifarFormat::Binary, Cifar::Hundred, 10, 3, |i| i as u8).unwrap();
    std::fs::copy(c100.path().join("train.bin"), &f).unwrap();
    refused("cifar10", p, &[], &["data_batch_3.bin", "30740 bytes is not a whole number of 3073-byte records"]);
    std::fs::write(&f, &bytes).unwrap();
    // Unknown label: record 4 of data_batch_2.bin says 12.
    let f = p.join("data_batch_2.bin");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[4 * 3073] = 12; // record 4 starts at byte 4 · 3073 = 12292 with its label
    std::fs::write(&f, &bytes).unwrap();
    refused("cifar10", p, &[], &["data_batch_2.bin", "record 4 (byte offset 12292)", "label 12 is outside 0..10"]);
    // A truncated pickle.
    let py = tempfile::tempdir().unwrap();
    fixtures::write_cifar(py.path(), CifarFormat::Python, Cifar::Ten, 10, 5, |i| (i % 10) as u8).unwrap();
    let f = py.path().join("data_batch_1");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    refused("cifar10", py.path(), &[], &["data_batch_1", "not a readable pickle", "truncated"]);
    // A partial copy (data_batch_4.bin and _5 missing) is refused naming them and why.
    let part = tempfile::tempdir().unwrap();
    fixtures::write_cifar(part.path(), CifarFormat::Binary, Cifar::Ten, 50, 10, |i| (i % 10) as u8).unwrap();
    std::fs::remove_file(part.path().join("data_batch_4.bin")).unwrap();
    std::fs::remove_file(part.path().join("data_batch_5.bin")).unwrap();
    refused(
        "cifar10",
        part.path(),
        &[],
        &["missing data_batch_4.bin, data_batch_5.bin: all 5 training files are needed", "set data.train_size"],
    );
    // No files at all.
    let empty = tempfile::tempdir().unwrap();
    refused("cifar10", empty.path(), &[], &["no cifar10 files here"]);
}

#[test]
fn bad_imagenet_folders_are_refused_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fixtures::write_jpeg_folder(p, 3, 4, 2, 24, 24).unwrap();
    // A missing validation class folder.
    let val1 = p.join("val").join(wnid(1));
    std::fs::rename(&val1, p.join("moved")).unwrap();
    refused("imagenet", p, &["data.image_size=16"], &[&wnid(1), "class folder", "is missing"]);
    std::fs::rename(p.join("moved"), &val1).unwrap();
    // An undecodable JPEG: stops the run, naming the file...
    let bad = p.join("train").join(wnid(2)).join(format!("{}_1.JPEG", wnid(2)));
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 this is not a JPEG").unwrap();
    let small = [
        "data.image_size=16",
        "search.batch_size=4",
        "search.micro_batch=4",
        "search.epochs=1",
        "search.steps_per_epoch=3",
        "data.test_size=\"none\"",
    ];
    refused("imagenet", p, &small, &[&format!("{}_1.JPEG", wnid(2)), "cannot decode JPEG"]);
    // ...or, with skip_bad_images, is replaced and counted.
    let out = p.join("out-skip");
    let root_set = format!("data.root=\"{}\"", p.display());
    let mut sets = vec![
        "data.dataset=\"imagenet\"",
        root_set.as_str(),
        "data.train_size=\"all\"",
        "data.num_classes=0",
        "data.skip_bad_images=true",
    ];
    sets.extend_from_slice(&small);
    // The bad image (index 9) is in the α half (images 6..12), which every step and the epoch's
    // validation read: the search completes and reports the replacements.
    let o = common::search(0, &out, &sets);
    assert_ok(&o);
    assert!(stderr(&o).contains("undecodable images were replaced by their successors"), "{}", stderr(&o));
    let ds = ImageFolder::open(p, 16, Subset { classes: 0, fraction: 1.0, seed: 0 }, true).unwrap();
    let mut buf = vec![0f32; 3 * 16 * 16];
    let i = (0..ds.len()).find(|&i| std::path::Path::new(&ds.source_of(i)) == bad).unwrap();
    assert_eq!(ds.fill(i, None, &mut buf).unwrap(), 2, "replaced by the next image of class 2");
    assert_eq!(ds.skipped(), 1);
}

/// The shipped real-data presets open the fixture files once their paths are set.
#[test]
fn shipped_real_data_configs_open_fixture_data() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let c10 = p.join("c10");
    let c100 = p.join("c100");
    let i16 = p.join("i16");
    for d in [&c10, &c100, &i16] {
        std::fs::create_dir(d).unwrap();
    }
    fixtures::write_cifar(&c10, CifarFormat::Binary, Cifar::Ten, 300, 20, |i| (i % 10) as u8).unwrap();
    fixtures::write_cifar(&c100, CifarFormat::Binary, Cifar::Hundred, 200, 120, |i| (i % 100) as u8).unwrap();
    fixtures::write_imagenet16(&i16, 500, 200, |i| (1 + i % 120) as i64).unwrap();
    let c10_split = p.join("cifar-split.txt");
    std::fs::write(
        &c10_split,
        format!(
            r#"{{"train": ["int", {:?}], "valid": ["int", {:?}]}}"#,
            (0..150).collect::<Vec<_>>(),
            (150..300).collect::<Vec<_>>()
        ),
    )
    .unwrap();
    let x_split = p.join("test-split.txt");
    std::fs::write(
        &x_split,
        format!(
            r#"{{"xvalid": ["int", {:?}], "xtest": ["int", {:?}]}}"#,
            (0..100).collect::<Vec<_>>(),
            (100..200).collect::<Vec<_>>()
        ),
    )
    .unwrap();
    // DARTS's preset: halves of the training set.
    let sets = [format!("data.root=\"{}\"", c10.display()), "data.test_size=\"none\"".into()];
    for (file, space, batch) in [
        ("darts-cifar10.toml", "darts", 64),
        ("pc-darts-cifar10.toml", "pc-darts", 256),
        ("nb1shot1-cifar10.toml", "nb1shot1-s3", 96),
        ("darts-train-cifar10.toml", "nb201", 64), // train-only: [train] batch 96
        ("darts-pt-nb201-cifar10.toml", "nb201", 64),
        ("darts-pt-s5-cifar10.toml", "darts-s5", 64),
    ] {
        let mut cfg = Config::load(Some(&common::repo().join("configs").join(file)), &sets).unwrap();
        assert_eq!((cfg.space.name.as_str(), cfg.search.batch_size), (space, batch));
        if file == "darts-train-cifar10.toml" {
            assert_eq!((cfg.train.batch_size, cfg.train.epochs, cfg.data.cutout), (96, 600, 16));
        }
        cfg.search.batch_size = 64; // the fixture's halves have 150 images
        let src = data::open(&mut cfg).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((src.split.weights.len(), src.split.arch.len(), src.split.arch[0]), (150, 150, 150));
    }
    for (file, root, split, weights, arch) in [
        ("nb201-cifar10.toml", &c10, &c10_split, 150, 150),
        ("nb201-cifar100.toml", &c100, &x_split, 200, 100),
        ("nb201-imagenet16-120.toml", &i16, &x_split, 500, 100),
        ("nb201-authors-cifar10.toml", &c10, &c10_split, 150, 150),
    ] {
        let sets = [
            format!("data.root=\"{}\"", root.display()),
            format!("data.split_file=\"{}\"", split.display()),
            "data.test_size=\"none\"".into(),
        ];
        let mut cfg = Config::load(Some(&common::repo().join("configs").join(file)), &sets).unwrap();
        let src = data::open(&mut cfg).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((src.split.weights.len(), src.split.arch.len()), (weights, arch), "{file}");
        assert!(src.split.arch.iter().all(|&i| i < src.data.len()));
    }
}

/// An undecodable image that only one of two ranks reads, in the middle of a search or a
/// training run: that rank names it and ends the job (the other may be waiting in a
/// collective), under a time limit so that a hang fails the test.
#[test]
fn a_bad_image_read_by_one_of_two_ranks_ends_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fixtures::write_jpeg_folder(p, 3, 4, 2, 24, 24).unwrap();
    let bad = p.join("train").join(wnid(1)).join(format!("{}_2.JPEG", wnid(1)));
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 this is not a JPEG").unwrap();
    let root_set = format!("data.root=\"{}\"", p.display());
    let data = ["data.dataset=\"imagenet\"", root_set.as_str(), "data.image_size=16", "data.num_classes=0"];
    let genotype = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|";
    for command in ["search", "train"] {
        let out = p.join(format!("out-{command}"));
        let mut cmd = std::process::Command::new(common::repo().join("launch/mpirun"));
        cmd.args(["-np", "2"]).arg(common::bin()).arg(command).arg("--out").arg(&out);
        let mut sets: Vec<&str> = data.to_vec();
        if command == "search" {
            sets.extend(["search.batch_size=4", "search.micro_batch=2", "search.epochs=2", "data.test_size=\"none\""]);
        } else {
            cmd.args(["--genotype", genotype]);
            sets.extend([
                "search.batch_size=4",
                "search.micro_batch=2",
                "train.batch_size=4",
                "train.micro_batch=2",
                "train.epochs=2",
                "train.channels=4",
                "train.layers=1",
                "data.test_size=\"none\"",
            ]);
        }
        for s in sets {
            cmd.args(["--set", s]);
        }
        let o = common::output_within(cmd.env("DARTSIF_LOG", "warn"), 180);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{command}: {err}");
        assert!(err.contains(&format!("{}_2.JPEG", wnid(1))) && err.contains("cannot decode JPEG"), "{command}: {err}");
        assert!(err.contains(" of 2; ending the job)"), "{command}: {err}");
    }
}

/// PC-DARTS's ImageNet search data: class-balanced random subsets (10 % of each class for θ,
/// 2.5 % for α), disjoint, keyed by the seed alone (every rank computes the same).
#[test]
fn per_class_subsets_are_balanced_disjoint_and_keyed() {
    let dir = tempfile::tempdir().unwrap();
    // 3 classes × 40 training images: round(40·0.1) = 4 for θ and round(40·0.025) = 1 for α.
    fixtures::write_jpeg_folder(dir.path(), 3, 40, 1, 8, 8).unwrap();
    let load = |seed: u64, extra: &[&str]| {
        let mut sets: Vec<String> = vec![
            "data.dataset=\"imagenet\"".into(),
            format!("data.root=\"{}\"", dir.path().display()),
            "data.image_size=16".into(),
            "data.split=\"per-class\"".into(),
            "search.batch_size=1".into(),
            "search.micro_batch=0".into(),
            format!("seed={seed}"),
        ];
        sets.extend(extra.iter().map(|s| s.to_string()));
        let mut cfg = Config::load(None, &sets).unwrap();
        data::open(&mut cfg)
    };
    let src = load(5, &[]).unwrap();
    let (w, a) = (&src.split.weights, &src.split.arch);
    assert_eq!((w.len(), a.len()), (12, 3));
    // Training images are listed class by class, 40 each: index / 40 is the class.
    for c in 0..3 {
        assert_eq!(w.iter().filter(|&&i| i / 40 == c).count(), 4, "θ of class {c}");
        assert_eq!(a.iter().filter(|&&i| i / 40 == c).count(), 1, "α of class {c}");
    }
    assert!(w.iter().all(|i| !a.contains(i)), "θ and α overlap");
    assert_eq!(load(5, &[]).unwrap().split.weights, *w, "the same seed, the same subsets");
    assert_ne!(load(6, &[]).unwrap().split.weights, *w, "another seed, another subset");
    // The ImageNet presets on the fixture: PC-DARTS's search (the 10 % / 2.5 % subsets, K = 2,
    // the ImageNet stem, warm-up) and DARTS's evaluation (all training images, the validation
    // images as the test set).
    let root = format!("data.root=\"{}\"", dir.path().display());
    let preset = |file: &str, extra: &[String]| {
        let sets: Vec<String> = [root.clone(), "data.image_size=32".into()].into_iter().chain(extra.to_vec()).collect();
        let mut cfg = Config::load(Some(&common::repo().join("configs").join(file)), &sets).unwrap();
        let src = data::open(&mut cfg).unwrap_or_else(|e| panic!("{file}: {e}"));
        (cfg, src)
    };
    let (cfg, src) = preset("pc-darts-imagenet.toml", &["search.batch_size=2".into()]);
    assert_eq!((src.split.weights.len(), src.split.arch.len()), (12, 3));
    assert_eq!((cfg.space.partial_k(), cfg.search.weights.warmup_epochs, cfg.search.arch_start_epoch), (2, 5, 35));
    let (cfg, src) = preset("darts-train-imagenet.toml", &["search.batch_size=2".into()]);
    assert_eq!((dartsif::train::training_indices(&src).len(), src.test.len()), (120, 3));
    assert_eq!((cfg.train.label_smoothing, cfg.train.weights.gamma, cfg.train.layers), (0.1, 0.97, 14));
    // train_imagenet.py (DARTS and PC-DARTS): ColorJitter(brightness=0.4, contrast=0.4,
    // saturation=0.4, hue=0.2) on training crops; train_search_imagenet.py (PC-DARTS): none.
    assert_eq!(cfg.data.color_jitter, [0.4, 0.4, 0.4, 0.2]);
    let (search, _) = preset("pc-darts-imagenet.toml", &["search.batch_size=2".into()]);
    assert_eq!(search.data.color_jitter, [0.0; 4]);
    // Classes too small for one image each way (1 image each after a 2.5 % subset): refused.
    let e = load(5, &["data.subset_fraction=0.025"]).err().unwrap().to_string();
    assert!(e.contains("data.weights_fraction") && e.contains("too few"), "{e}");
}
