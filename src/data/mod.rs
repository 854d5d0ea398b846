//! Datasets, the search split, and sharded batches.
//!
//! A global batch is a list of dataset indices fixed by the seed; rank r materialises only its
//! contiguous shard `[r·B/W, (r+1)·B/W)`. Every per-sample computation is a function of the
//! index alone, so the global batch is the same for any number of ranks.

pub mod fixtures;
mod folder;
mod memory;
pub mod packed;
pub mod pickle;
pub mod prepare;
mod source;
mod split;
mod synthetic;
mod transform;

pub use folder::{resize_short, ImageFolder, Subset};
pub use memory::{open_imagenet16, Cifar, CifarFormat, InMemory};
pub use source::{open, Source};
pub use split::split_indices;
pub use synthetic::Synthetic;
pub use transform::{AugKey, ColorJitter, Normalize, Transform};

use rayon::prelude::*;
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::rng::SplitMix64;

/// A labelled image dataset with random access.
pub trait Dataset: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn num_classes(&self) -> usize;
    /// (channels, height, width) of the network input.
    fn image_shape(&self) -> [usize; 3];
    /// Write sample `index` into `out` (CHW, normalised) and return its label. `aug` applies
    /// the training augmentation drawn from (seed, epoch, index); `None` gives the test view.
    fn fill(&self, index: usize, aug: Option<AugKey>, out: &mut [f32]) -> Result<i64>;
    /// Samples `0..train_len()` form the training set, the rest the test set.
    fn train_len(&self) -> usize {
        self.len()
    }
    /// Samples replaced because they could not be decoded (datasets that allow it).
    fn skipped(&self) -> usize {
        0
    }
}

/// Decoded pixels and labels of a batch, before they become tensors.
pub struct HostBatch {
    pub shape: [usize; 4],
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
}

impl HostBatch {
    /// Decode `indices` in parallel (rayon).
    pub fn load(ds: &dyn Dataset, indices: &[usize], aug: Option<AugKey>) -> Result<Self> {
        let [c, h, w] = ds.image_shape();
        let per = c * h * w;
        let mut pixels = vec![0f32; indices.len() * per];
        let mut labels = vec![0i64; indices.len()];
        pixels.par_chunks_mut(per).zip(labels.par_iter_mut()).zip(indices.par_iter()).try_for_each(
            |((out, label), &idx)| -> Result<()> {
                *label = ds.fill(idx, aug, out)?;
                Ok(())
            },
        )?;
        Ok(HostBatch { shape: [indices.len(), c, h, w], pixels, labels })
    }

    /// `[n, C, H, W]` f32 images and `[n]` i64 labels on device `d`.
    pub fn tensors(&self, d: tch::Device) -> (Tensor, Tensor) {
        let s = self.shape.map(|d| d as i64);
        let x = Tensor::from_slice(&self.pixels).reshape(s);
        (x.to_device(d), Tensor::from_slice(&self.labels).to_kind(Kind::Int64).to_device(d))
    }
}

/// Build a batch tensor `[n, C, H, W]` (f32) and labels `[n]` (i64) for `indices`, decoding
/// samples in parallel, on device `d`; `aug` as in [`Dataset::fill`].
pub fn make_batch(
    ds: &dyn Dataset,
    indices: &[usize],
    aug: Option<AugKey>,
    d: tch::Device,
) -> Result<(Tensor, Tensor)> {
    Ok(HostBatch::load(ds, indices, aug)?.tensors(d))
}

/// The search split: indices (into the dataset) that train θ and those that train α (and
/// validate the supernet). DARTS's is the two halves of the training set.
#[derive(Debug, Clone)]
pub struct SearchSplit {
    pub weights: Vec<usize>,
    pub arch: Vec<usize>,
}

impl SearchSplit {
    pub fn halves(n: usize) -> Self {
        let half = n / 2;
        SearchSplit { weights: (0..half).collect(), arch: (half..2 * half).collect() }
    }

    /// Class-balanced random subsets (PC-DARTS's ImageNet search: 10 % of each class for θ,
    /// another 2.5 % for α): `labels[i]` is training image i's class; each class's images are
    /// shuffled with `seed` and the first round(n·`weights`) train θ, the next round(n·`arch`)
    /// α (at least one each). A function of the seed and the listing alone: every rank, at any
    /// rank count, takes the same. Errors name the class too small for its share.
    pub fn per_class(labels: &[u32], weights: f64, arch: f64, seed: u64) -> std::result::Result<Self, String> {
        let classes = labels.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, &c) in labels.iter().enumerate() {
            by_class[c as usize].push(i);
        }
        let (mut w, mut a) = (Vec::new(), Vec::new());
        for (c, mut idx) in by_class.into_iter().enumerate() {
            let n = idx.len();
            if n == 0 {
                continue;
            }
            let nw = ((n as f64 * weights).round() as usize).max(1);
            let na = ((n as f64 * arch).round() as usize).max(1);
            if nw + na > n {
                return Err(format!("class {c} has {n} training images, too few for {nw} (θ) + {na} (α)"));
            }
            crate::rng::SplitMix64::keyed(&[seed, Stream::Subset as u64, 2, c as u64]).shuffle(&mut idx);
            w.extend_from_slice(&idx[..nw]);
            a.extend_from_slice(&idx[nw..nw + na]);
        }
        w.sort_unstable();
        a.sort_unstable();
        Ok(SearchSplit { weights: w, arch: a })
    }
}

/// Purposes of random streams, so that different uses of one seed never share numbers.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    WeightsOrder = 1,
    ArchOrder = 2,
    /// The fixed evaluation batches of the influence criteria.
    EvalBatches = 3,
    /// Freshly drawn batches of the authors' reference computation (`--faithful`).
    FaithfulDraw = 4,
    /// Fine-tuning order and held-out evaluation of `inspect fidelity`.
    Fidelity = 5,
    /// Training augmentation of each sample (crop, flip, cutout), keyed by (epoch, index).
    Augment = 6,
    /// Class and image subsets of large datasets (ImageNet folders).
    Subset = 7,
    /// Data order of `train` (final training from scratch).
    TrainOrder = 8,
    /// Validation batches scoring SETN's and random-nas's candidate architectures.
    Candidates = 9,
    /// Validation batches scoring ENAS's controller draws, keyed by epoch.
    Controller = 10,
}

/// The order of `indices` in `epoch`, a pure function of (seed, stream, epoch).
pub fn epoch_order(seed: u64, stream: Stream, epoch: usize, indices: &[usize]) -> Vec<usize> {
    let mut v = indices.to_vec();
    SplitMix64::keyed(&[seed, stream as u64, epoch as u64]).shuffle(&mut v);
    v
}

/// Global batch `step` of an epoch order (wrapping around when the order is shorter).
pub fn global_batch(order: &[usize], step: usize, batch: usize) -> Vec<usize> {
    (0..batch).map(|i| order[(step * batch + i) % order.len()]).collect()
}

/// This rank's contiguous shard of a global batch (equal sizes; the caller checked divisibility).
pub fn shard(global: &[usize], rank: usize, world: usize) -> &[usize] {
    let per = global.len() / world;
    &global[rank * per..(rank + 1) * per]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_global_batch() {
        let order = epoch_order(5, Stream::WeightsOrder, 0, &(0..100).collect::<Vec<_>>());
        let g = global_batch(&order, 3, 12);
        let mut joined: Vec<usize> = (0..3).flat_map(|r| shard(&g, r, 3).to_vec()).collect();
        assert_eq!(joined, g);
        joined.sort();
        joined.dedup();
        assert_eq!(joined.len(), 12);
    }

    #[test]
    fn orders_differ_by_epoch_and_stream() {
        let idx: Vec<usize> = (0..50).collect();
        let a = epoch_order(1, Stream::WeightsOrder, 0, &idx);
        assert_eq!(a, epoch_order(1, Stream::WeightsOrder, 0, &idx));
        assert_ne!(a, epoch_order(1, Stream::WeightsOrder, 1, &idx));
        assert_ne!(a, epoch_order(1, Stream::ArchOrder, 0, &idx));
    }

    #[test]
    fn halves_are_disjoint() {
        let s = SearchSplit::halves(11);
        assert_eq!(s.weights, (0..5).collect::<Vec<_>>());
        assert_eq!(s.arch, (5..10).collect::<Vec<_>>());
    }
}
