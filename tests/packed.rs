//! `dartsif-dist prepare`: the packed store's pixels are the JPEG folder's, resized, bit for bit;
//! reading through it gives the folder's evaluation view exactly; damage is refused by
//! checksum; an interrupted prepare resumes; bad input is one line, exit 2; 1 and 2 ranks
//! write the same bytes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_ok, bin, output_within, stderr, stdout};
use dartsif::data::fixtures::{self, wnid};
use dartsif::data::packed::{self, Manifest, Packed};
use dartsif::data::{Dataset, ImageFolder, Subset};

/// 3 classes, 5 training and 2 validation images each; landscape and portrait sizes mixed.
fn tree(root: &Path) {
    let size = |k: usize| [(50, 40), (30, 45), (64, 48), (40, 40), (37, 61)][k % 5];
    fixtures::write_textured_jpeg_folder(root, 3, 5, 2, size).unwrap();
}

fn prepare(args: &[&str]) -> std::process::Output {
    output_within(Command::new(bin()).arg("prepare").args(args).env("DARTSIF_LOG", "warn"), 120)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The expected record, computed here: decode with the `image` crate, then the shorter side
/// to `short` (the longer one scaled and truncated, as torchvision's `Resize`) with
/// fast_image_resize's bilinear filter (Pillow's), called directly.
fn expected(path: &Path, short: u32) -> image::RgbImage {
    use fast_image_resize as fr;
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = (img.width(), img.height());
    let (nw, nh) = if w <= h { (short, short * h / w) } else { (short * w / h, short) };
    if (nw, nh) == (w, h) {
        return img;
    }
    let src = fr::images::ImageRef::new(w, h, img.as_raw(), fr::PixelType::U8x3).unwrap();
    let mut dst = fr::images::Image::new(nw, nh, fr::PixelType::U8x3);
    let opts = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    fr::Resizer::new().resize(&src, &mut dst, &opts).unwrap();
    image::RgbImage::from_raw(nw, nh, dst.into_vec()).unwrap()
}

fn all() -> Subset {
    Subset { classes: 0, fraction: 1.0, seed: 0 }
}

#[test]
fn packed_pixels_are_the_resized_jpegs_and_the_evaluation_view_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("tree"), dir.path().join("packed"));
    tree(&src);
    // Shards of 4: the 15 training images in 4 shards (the last of 3), the 6 validation ones in 2.
    let o = prepare(&["--src", &s(&src), "--out", &s(&out), "--short-side", "24", "--shard-images", "4"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("packed 15 train + 6 val images (0 left out) in 6 shards"), "{}", stdout(&o));
    let store = Packed::open(&out).unwrap();
    assert_eq!((store.len(), store.train_len()), (21, 15));
    let files: Vec<&str> = store.manifest.shards.iter().map(|m| m.file.as_str()).collect();
    assert_eq!(
        files,
        ["train-00000.bin", "train-00001.bin", "train-00002.bin", "train-00003.bin", "val-00000.bin", "val-00001.bin"]
    );
    // Record i is image i of the listing (class by class, names sorted), resized: bit-equal.
    let mut i = 0;
    for split in ["train", "val"] {
        for c in 0..3 {
            let per = if split == "train" { 5 } else { 2 };
            for k in 0..per {
                let jpeg = src.join(split).join(wnid(c)).join(format!("{}_{k}.JPEG", wnid(c)));
                let want = expected(&jpeg, 24);
                let got = store.read(i).unwrap();
                assert_eq!((got.width(), got.height()), (want.width(), want.height()), "record {i}");
                assert!(got.as_raw() == want.as_raw(), "record {i} ({}) differs from its resized JPEG", jpeg.display());
                assert_eq!(store.label(i), c as u32);
                i += 1;
            }
        }
    }
    // Through the dataset: at crop 21, the evaluation view resizes to round(21·256/224) = 24, the
    // packed short side, then centre-crops; so the packed store gives the folder's view exactly,
    // with the same labels, the same subsets and the same split sizes.
    for subset in [all(), Subset { classes: 2, fraction: 0.5, seed: 3 }] {
        let jpeg = ImageFolder::open(&src, 21, subset, false).unwrap();
        let pack = ImageFolder::open(&out, 21, subset, false).unwrap();
        assert_eq!(pack.packed_short_side(), Some(24));
        assert_eq!((pack.len(), pack.train_len(), &pack.wnids), (jpeg.len(), jpeg.train_len(), &jpeg.wnids));
        assert_eq!(pack.train_labels(), jpeg.train_labels());
        let (mut a, mut b) = (vec![0f32; 3 * 21 * 21], vec![0f32; 3 * 21 * 21]);
        for i in 0..pack.len() {
            assert_eq!(pack.fill(i, None, &mut a).unwrap(), jpeg.fill(i, None, &mut b).unwrap());
            assert!(a == b, "image {i}: {} and {} differ", pack.source_of(i), jpeg.source_of(i));
        }
    }
    // The training view: a random-resized crop of the stored image, a function of the seed.
    let pack = ImageFolder::open(&out, 16, all(), false).unwrap();
    let key = Some(dartsif::data::AugKey { seed: 5, epoch: 1 });
    let (mut a, mut b) = (vec![0f32; 3 * 16 * 16], vec![0f32; 3 * 16 * 16]);
    pack.fill(3, key, &mut a).unwrap();
    pack.fill(3, key, &mut b).unwrap();
    assert!(a == b && a.iter().all(|v| v.is_finite()));
    // Colour jitter (DARTS's ImageNet training): the same crop, other colours, as deterministic;
    // the evaluation view untouched.
    let mut jit = ImageFolder::open(&out, 16, all(), false).unwrap();
    jit.jitter = dartsif::data::ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.2 };
    let (mut c, mut d) = (vec![0f32; 3 * 16 * 16], vec![0f32; 3 * 16 * 16]);
    jit.fill(3, key, &mut c).unwrap();
    jit.fill(3, key, &mut d).unwrap();
    assert!(c == d && c != a);
    jit.fill(3, None, &mut c).unwrap();
    pack.fill(3, None, &mut d).unwrap();
    assert!(c == d);

    // A search reads the store when data.root points at it.
    let run = dir.path().join("run");
    let root = format!("data.root=\"{}\"", out.display());
    let sets = [
        "data.dataset=\"imagenet\"",
        root.as_str(),
        "data.image_size=16",
        "data.num_classes=0",
        "data.train_size=\"all\"",
        "data.test_size=\"none\"",
        "search.batch_size=4",
        "search.micro_batch=4",
        "search.epochs=1",
        "search.steps_per_epoch=2",
    ];
    assert_ok(&common::search(0, &run, &sets));

    // `--verify` reads every byte.
    let o = prepare(&["--verify", &s(&out)]);
    assert_ok(&o);
    assert!(stdout(&o).starts_with("ok: 6 shards, 21 images"), "{}", stdout(&o));
}

/// Flip one byte of `path` at `at`.
fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_damaged_shard_is_refused_by_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("tree"), dir.path().join("packed"));
    tree(&src);
    assert_ok(&prepare(&["--src", &s(&src), "--out", &s(&out), "--short-side", "20", "--shard-images", "8"]));
    let store = Packed::open(&out).unwrap();
    let second = store.manifest.shards[1].clone();
    drop(store);
    // One byte inside record 2 of train-00001.bin (offset = records 0 and 1, plus a bit).
    let bin = out.join(&second.file);
    let idx = std::fs::read(out.join(second.index_file())).unwrap();
    let e2 = packed::Entry::decode(&idx[2 * packed::ENTRY..3 * packed::ENTRY]);
    flip(&bin, e2.offset + 7);
    let ds = ImageFolder::open(&out, 16, all(), false).unwrap();
    let mut buf = vec![0f32; 3 * 16 * 16];
    let err = ds.fill(8 + 2, None, &mut buf).unwrap_err().to_string();
    assert!(err.contains("train-00001.bin record 2: CRC-32 mismatch"), "{err}");
    assert!(ds.fill(8 + 1, None, &mut buf).is_ok(), "the neighbouring record is intact");
    let o = prepare(&["--verify", &s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim().lines().last().unwrap(),
        format!(
            "error: {}: CRC-32 differs from the manifest's: the shard is damaged (prepare it again)",
            bin.display()
        )
    );
    flip(&bin, e2.offset + 7);
    assert_ok(&prepare(&["--verify", &s(&out)]));
    // A damaged index, or a truncated shard, stops the store from opening.
    let idx_path = out.join(second.index_file());
    flip(&idx_path, 5);
    let err = Packed::open(&out).unwrap_err().to_string();
    assert!(err.contains("train-00001.idx") && err.contains("CRC-32 differs"), "{err}");
    flip(&idx_path, 5);
    let b = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &b[..b.len() - 1]).unwrap();
    let err = Packed::open(&out).unwrap_err().to_string();
    assert!(err.contains("truncated or damaged"), "{err}");
}

fn manifest(out: &Path) -> Manifest {
    packed::read_json(&out.join(packed::MANIFEST)).unwrap()
}

#[test]
fn an_interrupted_prepare_resumes_and_bad_input_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("tree"), dir.path().join("packed"));
    tree(&src);
    let args = |out: &PathBuf| {
        vec![
            "--src".to_string(),
            s(&src),
            "--out".into(),
            s(out),
            "--short-side".into(),
            "20".into(),
            "--shard-images".into(),
            "4".into(),
        ]
    };
    let run = |a: &[String]| prepare(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ok(&run(&args(&out)));
    let whole = manifest(&out);
    // As if killed while writing train-00002: no manifest, that shard's record gone, a
    // half-written temporary left behind.
    std::fs::remove_file(out.join(packed::MANIFEST)).unwrap();
    std::fs::remove_file(out.join("train-00002.json")).unwrap();
    std::fs::write(out.join(".train-00002.bin.tmp-1"), b"half").unwrap();
    let err = ImageFolder::open(&out, 16, all(), false).unwrap_err().to_string();
    assert!(err.contains("incomplete") && err.contains("--resume"), "{err}");
    // A fresh prepare into it is refused; --resume finishes it, keeping the complete shards.
    let o = run(&args(&out));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("add --resume"), "{}", stderr(&o));
    let mut resume = args(&out);
    resume.push("--resume".into());
    let o = output_within(Command::new(bin()).arg("prepare").args(&resume).env("DARTSIF_LOG", "info"), 120);
    assert_ok(&o);
    assert!(stderr(&o).contains("rank 0: 5 shard(s) already complete, kept"), "{}", stderr(&o));
    assert!(!out.join(".train-00002.bin.tmp-1").exists(), "the half-written file is removed");
    let again = manifest(&out);
    assert_eq!(again.shards, whole.shards, "the same bytes");
    // --resume with another setting is refused, naming it.
    let mut other = resume.clone();
    other[5] = "24".into();
    let o = run(&other);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--resume: the short side (--short-side) differs"), "{}", stderr(&o));

    // Bad input: one line, exit 2, nothing written.
    let fresh = dir.path().join("fresh");
    for (extra, want) in [
        (vec!["--short-side", "8"], "error: invalid value '8' for '--short-side <PIXELS>'"),
        (vec!["--shard-images", "0"], "error: invalid value '0' for '--shard-images <N>'"),
    ] {
        let mut a = vec!["--src", src.to_str().unwrap(), "--out", fresh.to_str().unwrap()];
        a.extend(extra);
        let o = prepare(&a);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).trim().starts_with(want) && stderr(&o).trim().lines().count() == 1, "{}", stderr(&o));
        assert!(!fresh.exists());
    }
    let o = prepare(&["--src", &s(&dir.path().join("nowhere")), "--out", &s(&fresh)]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("nowhere/train: missing"), "{}", stderr(&o));
    assert!(!fresh.exists());
    // An undecodable JPEG stops a fresh prepare, naming it (nothing kept before a first shard)…
    let bad = src.join("train").join(wnid(0)).join(format!("{}_1.JPEG", wnid(0)));
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not a JPEG").unwrap();
    let o = prepare(&["--src", &s(&src), "--out", &s(&fresh), "--short-side", "20"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.trim().lines().count() == 1 && e.contains(&format!("{}_1.JPEG: cannot decode JPEG", wnid(0))), "{e}");
    assert!(!fresh.exists());
    // …or, with --skip-bad, is left out and listed.
    let o = prepare(&["--src", &s(&src), "--out", &s(&fresh), "--short-side", "20", "--skip-bad"]);
    assert_ok(&o);
    let m = manifest(&fresh);
    assert_eq!((m.train_images, m.val_images), (14, 6));
    assert!(
        m.shards[0].skipped[0].starts_with(&format!("train/{}/{}_1.JPEG: ", wnid(0), wnid(0))),
        "{:?}",
        m.shards[0].skipped
    );
    let ds = ImageFolder::open(&fresh, 16, all(), false).unwrap();
    assert_eq!(ds.train_labels(), [0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
}

/// Ranks share the shards (shard k on rank k mod W) and write the same bytes as one process.
#[test]
fn two_and_three_ranks_write_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    tree(&src);
    let mut stores = Vec::new();
    for np in [0usize, 2, 3] {
        let out = dir.path().join(format!("packed-{np}"));
        let args = ["--src", &s(&src), "--out", &s(&out), "--short-side", "20", "--shard-images", "4"];
        let o = if np == 0 {
            prepare(&args)
        } else {
            output_within(
                Command::new(common::repo().join("launch/mpirun"))
                    .args(["-np", &np.to_string()])
                    .arg(bin())
                    .arg("prepare")
                    .args(args)
                    .env("DARTSIF_LOG", "warn"),
                180,
            )
        };
        assert_ok(&o);
        stores.push(manifest(&out).shards);
    }
    assert_eq!(stores[0], stores[1]);
    assert_eq!(stores[0], stores[2]);
    // An undecodable JPEG in shard 1 (rank 1's): the whole job ends with one message and status 2.
    let bad = src.join("train").join(wnid(1)).join(format!("{}_0.JPEG", wnid(1)));
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not a JPEG").unwrap();
    for np in [2usize, 3] {
        let out = dir.path().join(format!("bad-{np}"));
        let o = output_within(
            Command::new(common::repo().join("launch/mpirun"))
                .args(["-np", &np.to_string()])
                .arg(bin())
                .args(["prepare", "--src", &s(&src), "--out", &s(&out), "--short-side", "20", "--shard-images", "4"])
                .env("DARTSIF_LOG", "warn"),
            180,
        );
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let text = stderr(&o);
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{}", stderr(&o));
        assert!(
            errors[0].contains(&format!("{}_0.JPEG: cannot decode JPEG", wnid(1)))
                && errors[0].contains("on rank 1 of"),
            "{}",
            errors[0]
        );
    }
}
