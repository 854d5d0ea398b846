//! DARTS's evaluation network (`cnn/model.py` `NetworkCIFAR`, spaces.md §1.7): the genotype's
//! two ops per node with affine BatchNorm, drop-path on non-identity ops while training, and
//! the auxiliary head after cell 2·layers/3. Names follow the reference state dict.

use tch::Tensor;

use super::{drop_path, Network, NetworkConfig};
use crate::config::StemKind;
use crate::ops::darts::{cell_shapes, CellShape, Op, Preprocess, Stem};
use crate::ops::layers::{avg_pool, BatchNorm, Builder, Conv, Linear};
use crate::ops::{BnMode, ParamSet};
use crate::space::DartsGenotype;

struct Cell {
    pre: Preprocess,
    /// (op, input state) in genotype order: node m uses entries 2m and 2m+1.
    ops: Vec<(Op, usize)>,
    concat: Vec<usize>,
}

impl Cell {
    fn new(b: &mut Builder, pairs: &[(String, usize)], concat: &[usize], shape: CellShape) -> Self {
        let CellShape { c, reduction, .. } = shape;
        let pre = Preprocess::new(b, shape, true);
        let ops = b.scope("_ops", |b| {
            pairs
                .iter()
                .enumerate()
                .map(|(k, (name, j))| {
                    let stride = if reduction && *j < 2 { 2 } else { 1 };
                    (b.scope(k.to_string(), |b| Op::build(b, name, c, stride, true)), *j)
                })
                .collect()
        });
        Cell { pre, ops, concat: concat.to_vec() }
    }

    fn forward(&self, s0: &Tensor, s1: &Tensor, bn: BnMode, drop: f64) -> Tensor {
        let mut states = self.pre.forward(s0, s1, bn);
        for node in self.ops.chunks(2) {
            let mut sum: Option<Tensor> = None;
            for (op, j) in node {
                let h = op.forward(&states[*j], bn).expect("genotypes hold no `none`");
                let h = if bn == BnMode::Train && !op.is_identity() { drop_path(h, drop) } else { h };
                sum = Some(match sum {
                    None => h,
                    Some(s) => s + h,
                });
            }
            states.push(sum.expect("two ops per node"));
        }
        let out: Vec<&Tensor> = self.concat.iter().map(|&i| &states[i]).collect();
        Tensor::cat(&out, 1)
    }
}

/// The auxiliary head. CIFAR (`AuxiliaryHeadCIFAR`, for 8×8 inputs): ReLU, 5×5 average pool
/// (stride 3), 1×1 conv to 128, BN, ReLU, 2×2 conv to 768, BN, ReLU, linear. ImageNet
/// (`AuxiliaryHeadImageNet`, for the 7×7 inputs of 224 px images): the pool's stride is 2 and
/// the 768-channel BatchNorm is absent (the reference left it out, "for consistency with the
/// experiments in the paper").
struct AuxHead {
    conv1: Conv,
    bn1: BatchNorm,
    conv2: Conv,
    bn2: Option<BatchNorm>,
    stride: i64,
    classifier: Linear,
}

impl AuxHead {
    fn new(b: &mut Builder, c: i64, classes: i64, stem: StemKind) -> Self {
        let imagenet = stem == StemKind::ImageNet;
        let (conv1, bn1, conv2, bn2) = b.scope("features", |b| {
            (
                b.conv("2", c, 128, 1, 1, 0, 1, 1),
                b.batch_norm("3", 128, true),
                b.conv("5", 128, 768, 2, 1, 0, 1, 1),
                (!imagenet).then(|| b.batch_norm("6", 768, true)),
            )
        });
        let stride = if imagenet { 2 } else { 3 };
        AuxHead { conv1, bn1, conv2, bn2, stride, classifier: b.linear("classifier", 768, classes) }
    }

    fn forward(&self, x: &Tensor, bn: BnMode) -> Tensor {
        let h = avg_pool(&x.relu(), 5, self.stride, 0);
        let h = self.bn1.forward(&self.conv1.forward(&h), bn).relu();
        let h = self.conv2.forward(&h);
        let h = match &self.bn2 {
            Some(b2) => b2.forward(&h, bn),
            None => h,
        };
        self.classifier.forward(&h.relu().flatten(1, -1))
    }
}

/// DARTS's evaluation network for a genotype: `NetworkCIFAR`, or `NetworkImageNet` with the
/// ImageNet stem (`NetworkConfig::stem`).
pub struct DartsNetwork {
    stem: Stem,
    cells: Vec<Cell>,
    aux_after: usize,
    aux: Option<AuxHead>,
    classifier: Linear,
    params: ParamSet,
}

impl DartsNetwork {
    pub fn new(g: &DartsGenotype, cfg: NetworkConfig, kind: tch::Kind) -> Self {
        let mut b = Builder::new(kind);
        // NetworkCIFAR's stem has 3C channels, NetworkImageNet's C.
        let c_stem = if cfg.stem == StemKind::ImageNet { cfg.channels } else { 3 * cfg.channels };
        let stem = Stem::new(&mut b, cfg.stem, c_stem);
        let of =
            |reduction: bool| if reduction { (&g.reduce, &g.reduce_concat) } else { (&g.normal, &g.normal_concat) };
        let shapes = cell_shapes(cfg.channels, c_stem, cfg.layers, stem.reduces(), |r| of(r).1.len());
        let cells: Vec<Cell> = shapes
            .iter()
            .enumerate()
            .map(|(i, &shape)| {
                let (pairs, concat) = of(shape.reduction);
                b.scope(format!("cells.{i}"), |b| Cell::new(b, pairs, concat, shape))
            })
            .collect();
        let aux_after = 2 * cfg.layers / 3;
        let c_out = |i: usize| shapes.get(i).map_or(c_stem, |s| s.c_out);
        let aux = cfg
            .auxiliary
            .then(|| b.scope("auxiliary_head", |b| AuxHead::new(b, c_out(aux_after), cfg.num_classes, cfg.stem)));
        let classifier = b.linear("classifier", c_out(cfg.layers.saturating_sub(1)), cfg.num_classes);
        DartsNetwork { stem, cells, aux_after, aux, classifier, params: b.finish() }
    }
}

impl Network for DartsNetwork {
    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn forward(&self, x: &Tensor, bn: BnMode, drop: f64) -> (Tensor, Option<Tensor>) {
        let (mut s0, mut s1) = self.stem.forward(x, bn);
        let mut aux = None;
        for (i, cell) in self.cells.iter().enumerate() {
            let out = cell.forward(&s0, &s1, bn, drop);
            (s0, s1) = (s1, out);
            if i == self.aux_after && bn == BnMode::Train {
                aux = self.aux.as_ref().map(|a| a.forward(&s1, bn));
            }
        }
        let h = s1.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        (self.classifier.forward(&h), aux)
    }
}
