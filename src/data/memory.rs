//! Small-image datasets held in memory as bytes: CIFAR-10/100 (binary and python versions) and
//! ImageNet16 (NAS-Bench-201's downsampled ImageNet), each read as its reference loader does.
//!
//! Images are stored CHW (the files' own layout: a red, a green, then a blue plane per image);
//! the training set comes first, then the test set, in file order.

use std::path::{Path, PathBuf};

use super::pickle::{self, Value};
use super::transform::{AugKey, Normalize, Transform};
use super::Dataset;
use crate::error::{Error, Result};

/// Decoded images and labels of one dataset: `train` images, then `test` images.
#[derive(Debug, Clone)]
pub struct InMemory {
    pub name: String,
    pub shape: [usize; 3],
    pub classes: usize,
    pub train: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<i64>,
    pub transform: Transform,
}

impl InMemory {
    fn new(name: &str, shape: [usize; 3], classes: usize, normalize: Normalize, pad: usize) -> Self {
        InMemory {
            name: name.into(),
            shape,
            classes,
            train: 0,
            pixels: Vec::new(),
            labels: Vec::new(),
            transform: Transform { normalize, pad, flip: true, cutout: 0 },
        }
    }

    pub fn test(&self) -> usize {
        self.labels.len() - self.train
    }

    fn per_image(&self) -> usize {
        self.shape.iter().product()
    }

    /// Append images `(record, label, CHW bytes)` straight from the file's buffer, checking
    /// each label; `describe` names a record in messages.
    fn push<'b>(
        &mut self,
        path: &Path,
        images: impl Iterator<Item = (usize, i64, &'b [u8])>,
        describe: impl Fn(usize) -> String,
    ) -> Result<()> {
        let per = self.per_image();
        for (i, label, pixels) in images {
            debug_assert_eq!(pixels.len(), per);
            if label < 0 || label as usize >= self.classes {
                return Err(Error::data(
                    path,
                    format!("{}: label {label} is outside 0..{} ({})", describe(i), self.classes, self.name),
                ));
            }
            self.labels.push(label);
            self.pixels.extend_from_slice(pixels);
        }
        Ok(())
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn train_len(&self) -> usize {
        self.train
    }
    fn fill(&self, index: usize, aug: Option<AugKey>, out: &mut [f32]) -> Result<i64> {
        let per = self.per_image();
        let img = &self.pixels[index * per..(index + 1) * per];
        self.transform.apply(img, self.shape, aug.map(|k| (k, index)), out);
        Ok(self.labels[index])
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::data(path, format!("cannot read: {e}")))
}

/// The first of `candidates` (directories) that contains `probe`.
fn find_dir(root: &Path, candidates: &[&str], probe: &str) -> Option<PathBuf> {
    std::iter::once(root.to_path_buf()).chain(candidates.iter().map(|c| root.join(c))).find(|d| d.join(probe).is_file())
}

/// CIFAR variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar {
    Ten,
    Hundred,
}

/// On-disk format of a CIFAR directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarFormat {
    Binary,
    Python,
}

impl Cifar {
    fn classes(self) -> usize {
        match self {
            Cifar::Ten => 10,
            Cifar::Hundred => 100,
        }
    }

    /// (binary train files, binary test file, python train files, python test file, subfolders)
    fn layout(self) -> (Vec<String>, &'static str, Vec<String>, &'static str, [&'static str; 2]) {
        match self {
            Cifar::Ten => (
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
                "test_batch.bin",
                (1..=5).map(|i| format!("data_batch_{i}")).collect(),
                "test_batch",
                ["cifar-10-batches-bin", "cifar-10-batches-py"],
            ),
            Cifar::Hundred => (
                vec!["train.bin".into()],
                "test.bin",
                vec!["train".into()],
                "test",
                ["cifar-100-binary", "cifar-100-python"],
            ),
        }
    }

    /// Read CIFAR from `root` (or its usual subfolder), detecting the format unless given.
    pub fn open(self, root: &Path, format: Option<CifarFormat>, normalize: Normalize) -> Result<InMemory> {
        let name = match self {
            Cifar::Ten => "cifar10",
            Cifar::Hundred => "cifar100",
        };
        let (bin_train, bin_test, py_train, py_test, subs) = self.layout();
        let bin = find_dir(root, &subs, bin_test);
        let py = find_dir(root, &subs, py_test);
        let (dir, format) = match (format, bin, py) {
            (Some(CifarFormat::Binary) | None, Some(d), _) => (d, CifarFormat::Binary),
            (Some(CifarFormat::Python) | None, _, Some(d)) => (d, CifarFormat::Python),
            (f, _, _) => {
                let want = match f {
                    Some(CifarFormat::Binary) => bin_test.to_string(),
                    Some(CifarFormat::Python) => py_test.to_string(),
                    None => format!("{bin_test} or {py_test}"),
                };
                return Err(Error::data(
                    root,
                    format!("no {name} files here: expected {want} in it or in {}/ or {}/", subs[0], subs[1]),
                ));
            }
        };
        let mut ds = InMemory::new(name, [3, 32, 32], self.classes(), normalize, 4);
        let (train, test) = match format {
            CifarFormat::Binary => (bin_train, bin_test),
            CifarFormat::Python => (py_train, py_test),
        };
        // A partial copy is refused by name: the halves split and NAS-Bench-201's split files
        // index the whole training set in file order, so a missing file would shift them.
        let missing: Vec<&str> = train.iter().map(|s| s.as_str()).filter(|f| !dir.join(f).is_file()).collect();
        if !missing.is_empty() {
            return Err(Error::data(
                &dir,
                format!(
                    "missing {}: all {} training files are needed (the search split and NAS-Bench-201's split \
                     files index the training images in file order); to use fewer images, set data.train_size",
                    missing.join(", "),
                    train.len()
                ),
            ));
        }
        for f in train.iter().map(|s| s.as_str()).chain([test]) {
            let path = dir.join(f);
            match format {
                CifarFormat::Binary => self.read_binary(&mut ds, &path)?,
                CifarFormat::Python => read_pickled(&mut ds, &path, self.label_key(), Label::Class)?,
            }
            if f != test {
                ds.train = ds.labels.len();
            }
        }
        Ok(ds)
    }

    fn label_key(self) -> &'static str {
        match self {
            Cifar::Ten => "labels",
            Cifar::Hundred => "fine_labels",
        }
    }

    /// Binary records: CIFAR-10 `<label><3072 bytes>`, CIFAR-100 `<coarse><fine><3072 bytes>`.
    fn read_binary(self, ds: &mut InMemory, path: &Path) -> Result<()> {
        let bytes = read(path)?;
        let head = match self {
            Cifar::Ten => 1,
            Cifar::Hundred => 2,
        };
        let rec = head + 3072;
        if bytes.is_empty() || bytes.len() % rec != 0 {
            return Err(Error::data(
                path,
                format!(
                    "{} bytes is not a whole number of {rec}-byte records (truncated, or not the {} binary version?)",
                    bytes.len(),
                    ds.name
                ),
            ));
        }
        ds.pixels.reserve(bytes.len() / rec * 3072);
        // The last label byte is the class (CIFAR-100: the fine label).
        let images = bytes.chunks_exact(rec).enumerate().map(|(i, r)| (i, r[head - 1] as i64, &r[head..]));
        ds.push(path, images, |i| format!("record {i} (byte offset {})", i * rec))
    }
}

/// What a stored label means.
enum Label {
    Class(i64),
    /// A valid label outside the chosen class subset: the image is left out.
    Drop,
    Bad,
}

/// A pickled batch `{data: uint8 [n, C·H·W], <label_key>: [n ints]}` (CIFAR python version,
/// ImageNet16); `map` interprets each stored label.
fn read_pickled(ds: &mut InMemory, path: &Path, label_key: &str, map: impl Fn(i64) -> Label) -> Result<()> {
    let bytes = read(path)?;
    let v = pickle::loads(&bytes).map_err(|e| Error::data(path, format!("not a readable pickle: {e}")))?;
    let field = |key: &str| -> Result<&Value> {
        v.get(key).ok_or_else(|| Error::data(path, format!("the pickled dict has no {key:?} entry")))
    };
    let data = field("data")?.ndarray().map_err(|e| Error::data(path, format!("\"data\": {e}")))?;
    let pixels = data.as_u8().map_err(|e| Error::data(path, format!("\"data\": {e}")))?;
    let labels = field(label_key)?.to_ints().map_err(|e| Error::data(path, format!("{label_key:?}: {e}")))?;
    let per = ds.per_image();
    if data.shape.len() != 2 || data.shape[1] != per || data.shape[0] != labels.len() {
        return Err(Error::data(
            path,
            format!(
                "\"data\" has shape {:?} for {} labels; expected [{}, {per}]",
                data.shape,
                labels.len(),
                labels.len()
            ),
        ));
    }
    if let Some(i) = labels.iter().position(|&l| matches!(map(l), Label::Bad)) {
        return Err(Error::data(path, format!("record {i}: label {} is not a label of {}", labels[i], ds.name)));
    }
    let images = labels.iter().enumerate().filter_map(|(i, &l)| match map(l) {
        Label::Class(c) => Some((i, c, &pixels[i * per..(i + 1) * per])),
        _ => None,
    });
    ds.push(path, images, |i| format!("record {i}"))
}

/// ImageNet16 (Chrabaszcz et al.'s 16×16 downsampled ImageNet, as NAS-Bench-201 uses it):
/// `train_data_batch_1..10` and `val_data`, labels 1..=1000; `classes` = 120 keeps labels
/// 1..=120 as 0..=119 (ImageNet16-120: 151,700 training and 6,000 validation images).
pub fn open_imagenet16(root: &Path, classes: usize) -> Result<InMemory> {
    let dir = find_dir(root, &["ImageNet16", "imagenet16"], "val_data")
        .ok_or_else(|| Error::data(root, "no ImageNet16 files here: expected val_data in it or in ImageNet16/"))?;
    let name = if classes == 1000 { "imagenet16".to_string() } else { format!("imagenet16-{classes}") };
    let mut ds = InMemory::new(&name, [3, 16, 16], classes, Normalize::NB201_IMAGENET16, 2);
    let files: Vec<String> = (1..=10).map(|i| format!("train_data_batch_{i}")).chain(["val_data".into()]).collect();
    for f in &files {
        // Labels 1..=1000 are valid; those above `classes` are left out.
        let map = |l: i64| match l {
            l if (1..=classes as i64).contains(&l) => Label::Class(l - 1),
            1..=1000 => Label::Drop,
            _ => Label::Bad,
        };
        read_pickled(&mut ds, &dir.join(f), "labels", map)?;
        if f != "val_data" {
            ds.train = ds.labels.len();
        }
    }
    Ok(ds)
}
