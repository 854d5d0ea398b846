//! Opening the configured dataset and its search split.

use std::path::Path;

use super::{
    open_imagenet16, split_indices, Cifar, CifarFormat, Dataset, ImageFolder, Normalize, SearchSplit, Subset, Synthetic,
};
use crate::config::Config;
use crate::error::{Error, Result};

/// The dataset of a run with its search split and held-out test indices.
pub struct Source {
    pub data: Box<dyn Dataset + Send>,
    pub split: SearchSplit,
    pub test: Vec<usize>,
    /// One line for the logs.
    pub summary: String,
}

/// Open `cfg.data`, resolving `num_classes` and `image_size` from the files (they must agree
/// with the config where it sets them) and checking the batch size against the split.
pub fn open(cfg: &mut Config) -> Result<Source> {
    let d = &cfg.data;
    // Messages name the data and the key: "cifar10 at /data/cifar: data.test_size: …".
    let origin = match &d.root {
        Some(r) => format!("{} at {}", d.dataset, r.display()),
        None => d.dataset.to_string(),
    };
    let bad = |key: &str, msg: String| Error::config(&origin, format!("data.{key}"), msg);
    let root = || -> Result<&Path> {
        d.root.as_deref().ok_or_else(|| bad("root", format!("required for dataset {:?}", d.dataset)))
    };
    let normalize =
        |nb201: Normalize, darts: Normalize| if d.normalize == crate::config::Normalize::Darts { darts } else { nb201 };
    // The training images' classes, where the listing gives them (ImageNet folders).
    let mut class_labels: Option<Vec<u32>> = None;
    let data: Box<dyn Dataset + Send> = match d.dataset {
        crate::config::DatasetKind::Synthetic => {
            // Resolved to numbers by the config (all = 50,000 + 10,000).
            let n = d.train_size.of(50_000) + d.test_size.of(10_000);
            Box::new(Synthetic::new(cfg.seed, n, d.num_classes, d.image_size, d.noise))
        }
        crate::config::DatasetKind::Cifar10 | crate::config::DatasetKind::Cifar100 => {
            let (kind, norm) = if d.dataset == crate::config::DatasetKind::Cifar10 {
                (Cifar::Ten, normalize(Normalize::NB201_CIFAR10, Normalize::DARTS_CIFAR10))
            } else {
                (Cifar::Hundred, normalize(Normalize::NB201_CIFAR100, Normalize::DARTS_CIFAR100))
            };
            let format = match d.format {
                crate::config::CifarFormat::Binary => Some(CifarFormat::Binary),
                crate::config::CifarFormat::Python => Some(CifarFormat::Python),
                crate::config::CifarFormat::Auto => None,
            };
            let mut ds = kind.open(root()?, format, norm)?;
            ds.transform.cutout = d.cutout;
            Box::new(ds)
        }
        crate::config::DatasetKind::ImageNet16_120 | crate::config::DatasetKind::ImageNet16 => {
            let classes = if d.dataset == crate::config::DatasetKind::ImageNet16 { 1000 } else { 120 };
            let mut ds = open_imagenet16(root()?, classes)?;
            ds.transform.cutout = d.cutout;
            Box::new(ds)
        }
        crate::config::DatasetKind::ImageNet => {
            let size = if d.image_size == 0 { 224 } else { d.image_size };
            let subset = Subset { classes: d.subset_classes, fraction: d.subset_fraction, seed: cfg.seed };
            let mut folder = ImageFolder::open(root()?, size, subset, d.skip_bad_images)?;
            let [brightness, contrast, saturation, hue] = d.color_jitter.map(|x| x as f32);
            folder.jitter = super::ColorJitter { brightness, contrast, saturation, hue };
            class_labels = Some(folder.train_labels());
            Box::new(folder)
        }
    };
    // The training set comes first in every dataset, then the test set (synthetic: the first
    // train_size samples train, the next test_size test).
    let synthetic = cfg.data.dataset == crate::config::DatasetKind::Synthetic;
    let (all_train, n_all) =
        if synthetic { (cfg.data.train_size.of(50_000), data.len()) } else { (data.train_len(), data.len()) };
    let n_test_all = n_all - all_train;
    let n_train = match cfg.data.train_size.of(all_train) {
        n if n <= all_train => n,
        n => return Err(bad("train_size", format!("{n} exceeds the {all_train} training images"))),
    };
    if cfg.data.split != crate::config::SplitKind::Halves && n_train != all_train {
        return Err(bad("train_size", format!("must be \"all\" with data.split = \"{}\"", cfg.data.split)));
    }

    // Classes and image size: from the data; an explicit config value must agree.
    let (classes, [_, h, _]) = (data.num_classes(), data.image_shape());
    for (key, set, have) in [("num_classes", cfg.data.num_classes, classes), ("image_size", cfg.data.image_size, h)] {
        if set != 0 && set != have {
            return Err(bad(key, format!("{set} disagrees with the data ({} has {have})", cfg.data.dataset)));
        }
    }
    cfg.data.num_classes = classes;
    cfg.data.image_size = h;

    let split = match cfg.data.split {
        crate::config::SplitKind::File => {
            let file = cfg
                .data
                .split_file
                .clone()
                .ok_or_else(|| bad("split_file", "required with data.split = \"file\"".into()))?;
            let take = |key: &str| -> Result<Vec<usize>> {
                if key == "all" {
                    return Ok((0..n_train).collect()); // the whole training set
                }
                let (idx, test) = split_indices(&file, key)?;
                let (offset, limit) = if test { (n_train, n_test_all) } else { (0, n_train) };
                if let Some(&i) = idx.iter().find(|&&i| i >= limit) {
                    return Err(Error::data(
                        &file,
                        format!(
                            "split {key:?}: index {i} is outside the {} set of {limit} images",
                            if test { "test" } else { "training" }
                        ),
                    ));
                }
                Ok(idx.into_iter().map(|i| i + offset).collect())
            };
            SearchSplit { weights: take(&cfg.data.weights_split)?, arch: take(&cfg.data.arch_split)? }
        }
        crate::config::SplitKind::Halves => SearchSplit::halves(n_train),
        crate::config::SplitKind::PerClass => {
            let labels = class_labels.ok_or_else(|| bad("split", "\"per-class\" needs ImageNet folders".into()))?;
            SearchSplit::per_class(&labels, cfg.data.weights_fraction, cfg.data.arch_fraction, cfg.seed)
                .map_err(|e| bad("weights_fraction", e))?
        }
    };
    let n_test = cfg.data.test_size.of(n_test_all);
    if n_test > n_test_all {
        return Err(bad("test_size", format!("{n_test} exceeds the {n_test_all} test images")));
    }
    let test: Vec<usize> = (all_train..all_train + n_test).collect();
    let half = split.weights.len().min(split.arch.len());
    if cfg.search.batch_size > half {
        return Err(Error::config(
            &origin,
            "search.batch_size",
            format!(
                "{} is larger than the search split (θ {} / α {} images)",
                cfg.search.batch_size,
                split.weights.len(),
                split.arch.len()
            ),
        ));
    }
    let summary = format!(
        "data: {} ({} classes, {}×{}×{}), θ split {} images, α split {} images, test {}",
        cfg.data.dataset,
        classes,
        data.image_shape()[0],
        h,
        data.image_shape()[2],
        split.weights.len(),
        split.arch.len(),
        test.len()
    );
    Ok(Source { data, split, test, summary })
}
