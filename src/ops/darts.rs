//! The DARTS space's building blocks, shared by the search supernet ([`crate::supernet`]) and
//! the evaluation network ([`crate::network`]): the candidate ops (quark0/darts
//! `operations.py`), the cells' input preprocessing, the stem and the cells' channel plan.

use std::cell::OnceCell;

use tch::Tensor;

use super::dual::{Dual, Seeds};
use super::layers::{BatchNorm, BnMode, Builder, Conv, ReluConvBn};

/// The stem before the cells, giving the first cell its two inputs.
pub(crate) enum Stem {
    /// CIFAR: Conv3×3(3→c) and an affine BatchNorm (`stem.0`, `stem.1`), full resolution; both
    /// inputs of the first cell are its output.
    Cifar { conv: Conv, bn: BatchNorm },
    /// ImageNet (DARTS's `NetworkImageNet`, PC-DARTS's `model_search_imagenet.py`): `stem0` =
    /// Conv3×3 s2 (3→c/2), BN, ReLU, Conv3×3 s2 (c/2→c), BN; `stem1` = ReLU, Conv3×3 s2
    /// (c→c), BN. 224 px become 56 (`stem0`, the first cell's s0) and 28 (`stem1`, its s1), so
    /// the first cell's s0 is reduced (a FactorizedReduce).
    /// The three (conv, BN) pairs in order.
    ImageNet(Box<[(Conv, BatchNorm); 3]>),
}

impl Stem {
    /// The stem of `kind` with `c` output channels (search: 3C; evaluation: CIFAR 3C, ImageNet C).
    pub(crate) fn new(b: &mut Builder, kind: crate::config::StemKind, c: i64) -> Self {
        match kind {
            crate::config::StemKind::Cifar => b.scope("stem", |b| Stem::Cifar {
                conv: b.conv("0", 3, c, 3, 1, 1, 1, 1),
                bn: b.batch_norm("1", c, true),
            }),
            crate::config::StemKind::ImageNet => {
                let (conv0, bn0, conv1, bn1) = b.scope("stem0", |b| {
                    (
                        b.conv("0", 3, c / 2, 3, 2, 1, 1, 1),
                        b.batch_norm("1", c / 2, true),
                        b.conv("3", c / 2, c, 3, 2, 1, 1, 1),
                        b.batch_norm("4", c, true),
                    )
                });
                let (conv2, bn2) = b.scope("stem1", |b| (b.conv("1", c, c, 3, 2, 1, 1, 1), b.batch_norm("2", c, true)));
                Stem::ImageNet(Box::new([(conv0, bn0), (conv1, bn1), (conv2, bn2)]))
            }
        }
    }

    /// Whether the first cell's s0 has twice its s1's resolution.
    pub(crate) fn reduces(&self) -> bool {
        matches!(self, Stem::ImageNet(_))
    }

    /// The first cell's inputs (s0, s1).
    pub(crate) fn forward(&self, x: &Tensor, bn: BnMode) -> (Tensor, Tensor) {
        let (s0, s1) = self.dual(&Dual::constant(x.shallow_clone()), bn, &Seeds::none());
        (s0.x, s1.x)
    }

    /// [`Stem::forward`] with tangents.
    pub(crate) fn dual(&self, x: &Dual, bn: BnMode, seeds: &Seeds) -> (Dual, Dual) {
        match self {
            Stem::Cifar { conv, bn: norm } => {
                let s = norm.dual(&conv.dual(x, seeds), bn, seeds);
                (s.shallow_clone(), s)
            }
            Stem::ImageNet(l) => {
                let h = l[0].1.dual(&l[0].0.dual(x, seeds), bn, seeds).relu();
                let s0 = l[1].1.dual(&l[1].0.dual(&h, seeds), bn, seeds);
                let s1 = l[2].1.dual(&l[2].0.dual(&s0.relu(), seeds), bn, seeds);
                (s0, s1)
            }
        }
    }
}

/// Channels and reductions of one DARTS cell (search and evaluation alike).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CellShape {
    /// Channels of the cell's inputs: two cells back, and the previous cell.
    pub c_pp: i64,
    pub c_p: i64,
    /// The cell's own channels C (each node's).
    pub c: i64,
    /// A reduction cell (stride 2 on the edges from its inputs, 2C).
    pub reduction: bool,
    /// The previous cell reduced (preprocess0 is then a FactorizedReduce).
    pub reduction_prev: bool,
    /// Channels of the cell's output (the concatenated nodes × C).
    pub c_out: i64,
}

/// The shapes of `layers` cells after a stem of `c_stem` channels, starting at C = `channels`:
/// reduction cells (C doubled) at layers/3 and 2·layers/3 (DARTS's `model_search.py` and
/// `model.py`); `nodes(reduction)`: how many nodes a cell of that type concatenates;
/// `stem_reduces`: the first cell's s0 has twice the resolution of its s1 (the ImageNet stem).
pub(crate) fn cell_shapes(
    channels: i64,
    c_stem: i64,
    layers: usize,
    stem_reduces: bool,
    nodes: impl Fn(bool) -> usize,
) -> Vec<CellShape> {
    let (mut c_pp, mut c_p, mut c) = (c_stem, c_stem, channels);
    let mut reduction_prev = stem_reduces;
    let mut shapes = Vec::with_capacity(layers);
    for i in 0..layers {
        let reduction = i == layers / 3 || i == 2 * layers / 3;
        if reduction {
            c *= 2;
        }
        let c_out = nodes(reduction) as i64 * c;
        shapes.push(CellShape { c_pp, c_p, c, reduction, reduction_prev, c_out });
        reduction_prev = reduction;
        (c_pp, c_p) = (c_p, c_out);
    }
    shapes
}

/// ReLU → two 1×1 stride-2 convs (the second on the input shifted by one pixel) → concat → BN.
pub(crate) struct FactorizedReduce {
    conv_1: Conv,
    conv_2: Conv,
    bn: BatchNorm,
}

impl FactorizedReduce {
    pub(crate) fn new(b: &mut Builder, cin: i64, cout: i64, affine: bool) -> Self {
        FactorizedReduce {
            conv_1: b.conv("conv_1", cin, cout / 2, 1, 2, 0, 1, 1),
            conv_2: b.conv("conv_2", cin, cout / 2, 1, 2, 0, 1, 1),
            bn: b.batch_norm("bn", cout, affine),
        }
    }

    fn dual(&self, x: &Dual, bn: BnMode, seeds: &Seeds) -> Dual {
        self.dual_relued(&x.relu(), bn, seeds)
    }

    /// On `relu(x)` computed by the caller.
    fn dual_relued(&self, x: &Dual, bn: BnMode, seeds: &Seeds) -> Dual {
        let (h, w) = (x.x.size()[2], x.x.size()[3]);
        let shifted = x.linear_map(|t| t.narrow(2, 1, h - 1).narrow(3, 1, w - 1));
        let y = Dual::cat(&[self.conv_1.dual(x, seeds), self.conv_2.dual(&shifted, seeds)], 1);
        self.bn.dual(&y, bn, seeds)
    }
}

/// A DARTS op. The search network follows each pool with a non-affine BatchNorm; the
/// evaluation network has none there and affine BatchNorm elsewhere.
pub(crate) enum Op {
    /// `none`: exactly zero, so it contributes nothing to the mixture.
    Zero,
    MaxPool {
        stride: i64,
        bn: Option<BatchNorm>,
    },
    AvgPool {
        stride: i64,
        bn: Option<BatchNorm>,
    },
    Identity,
    Reduce(FactorizedReduce),
    /// ReLU, depthwise k×k (stride), 1×1, BN, ReLU, depthwise k×k, 1×1, BN.
    Sep {
        dw1: Conv,
        pw1: Conv,
        bn1: BatchNorm,
        dw2: Conv,
        pw2: Conv,
        bn2: BatchNorm,
    },
    /// ReLU, depthwise dilated k×k (stride), 1×1, BN.
    Dil {
        dw: Conv,
        pw: Conv,
        bn: BatchNorm,
    },
}

impl Op {
    /// `affine`: the evaluation network's op (affine BN, no BN after pools); else the search's.
    pub(crate) fn build(b: &mut Builder, name: &str, c: i64, stride: i64, affine: bool) -> Op {
        let sep = |b: &mut Builder, k: i64, pad: i64| {
            b.scope("op", |b| Op::Sep {
                dw1: b.conv("1", c, c, k, stride, pad, 1, c),
                pw1: b.conv("2", c, c, 1, 1, 0, 1, 1),
                bn1: b.batch_norm("3", c, affine),
                dw2: b.conv("5", c, c, k, 1, pad, 1, c),
                pw2: b.conv("6", c, c, 1, 1, 0, 1, 1),
                bn2: b.batch_norm("7", c, affine),
            })
        };
        let dil = |b: &mut Builder, k: i64, pad: i64| {
            b.scope("op", |b| Op::Dil {
                dw: b.conv("1", c, c, k, stride, pad, 2, c),
                pw: b.conv("2", c, c, 1, 1, 0, 1, 1),
                bn: b.batch_norm("3", c, affine),
            })
        };
        let pool_bn = |b: &mut Builder| (!affine).then(|| b.batch_norm("1", c, false));
        match name {
            "none" => Op::Zero,
            "max_pool_3x3" => Op::MaxPool { stride, bn: pool_bn(b) },
            "avg_pool_3x3" => Op::AvgPool { stride, bn: pool_bn(b) },
            "skip_connect" if stride == 1 => Op::Identity,
            "skip_connect" => Op::Reduce(FactorizedReduce::new(b, c, c, affine)),
            "sep_conv_3x3" => sep(b, 3, 1),
            "sep_conv_5x5" => sep(b, 5, 2),
            "dil_conv_3x3" => dil(b, 3, 2),
            "dil_conv_5x5" => dil(b, 5, 4),
            other => unreachable!("unknown DARTS op {other}"),
        }
    }

    pub(crate) fn is_identity(&self) -> bool {
        matches!(self, Op::Identity)
    }

    pub(crate) fn forward(&self, x: &Tensor, bn: BnMode) -> Option<Tensor> {
        self.dual(&Input::new(Dual::constant(x.shallow_clone())), bn, &Seeds::none()).map(|y| y.x)
    }

    /// The op on a state whose ReLU and pooling are shared by every op and edge reading it
    /// (computed once: one autograd node instead of one per op, which the second derivatives of
    /// a selection pay for again), with tangents ([`crate::ops::dual`]; none: the plain ops).
    pub(crate) fn dual(&self, x: &Input, bn: BnMode, seeds: &Seeds) -> Option<Dual> {
        let norm = |n: &Option<BatchNorm>, y: Dual| match n {
            Some(n) => n.dual(&y, bn, seeds),
            None => y,
        };
        Some(match self {
            Op::Zero => return None,
            Op::MaxPool { stride, bn: n } => norm(n, x.pooled(&x.max, *stride, |s| x.x.max_pool(3, s, 1))),
            Op::AvgPool { stride, bn: n } => norm(n, x.pooled(&x.avg, *stride, |s| x.x.avg_pool(3, s, 1))),
            Op::Identity => x.x.shallow_clone(),
            Op::Reduce(fr) => fr.dual_relued(x.relu(), bn, seeds),
            Op::Sep { dw1, pw1, bn1, dw2, pw2, bn2 } => {
                let h = bn1.dual(&pw1.dual(&dw1.dual(x.relu(), seeds), seeds), bn, seeds);
                bn2.dual(&pw2.dual(&dw2.dual(&h.relu(), seeds), seeds), bn, seeds)
            }
            Op::Dil { dw, pw, bn: norm } => norm.dual(&pw.dual(&dw.dual(x.relu(), seeds), seeds), bn, seeds),
        })
    }
}

/// A state as the ops of its outgoing edges read it, with what they share computed once.
pub(crate) struct Input {
    pub(crate) x: Dual,
    relu: OnceCell<Dual>,
    /// (stride, pooled): every edge leaving a state has the same stride; another stride is
    /// computed afresh.
    max: OnceCell<(i64, Dual)>,
    avg: OnceCell<(i64, Dual)>,
}

impl Input {
    pub(crate) fn new(x: Dual) -> Self {
        Input { x, relu: OnceCell::new(), max: OnceCell::new(), avg: OnceCell::new() }
    }

    fn relu(&self) -> &Dual {
        self.relu.get_or_init(|| self.x.relu())
    }

    fn pooled(&self, cell: &OnceCell<(i64, Dual)>, stride: i64, pool: impl Fn(i64) -> Dual) -> Dual {
        let (s, t) = cell.get_or_init(|| (stride, pool(stride)));
        if *s == stride {
            t.shallow_clone()
        } else {
            pool(stride)
        }
    }
}

/// A cell's input preprocessing (search and evaluation cells alike): `preprocess0` is a
/// FactorizedReduce after a reduction cell, else ReLU-1×1 conv-BN; `preprocess1` is always the
/// latter.
pub(crate) struct Preprocess {
    pre0: Pre0,
    pre1: ReluConvBn,
}

enum Pre0 {
    Reduce(FactorizedReduce),
    Plain(ReluConvBn),
}

impl Preprocess {
    pub(crate) fn new(b: &mut Builder, shape: CellShape, affine: bool) -> Self {
        let CellShape { c_pp, c_p, c, reduction_prev, .. } = shape;
        let pre0 = if reduction_prev {
            Pre0::Reduce(b.scope("preprocess0", |b| FactorizedReduce::new(b, c_pp, c, affine)))
        } else {
            Pre0::Plain(ReluConvBn::new(b, "preprocess0", c_pp, c, 1, 1, 0, affine))
        };
        Preprocess { pre0, pre1: ReluConvBn::new(b, "preprocess1", c_p, c, 1, 1, 0, affine) }
    }

    /// The cell's two input states.
    pub(crate) fn forward(&self, s0: &Tensor, s1: &Tensor, bn: BnMode) -> Vec<Tensor> {
        let none = Seeds::none();
        let (s0, s1) = (Dual::constant(s0.shallow_clone()), Dual::constant(s1.shallow_clone()));
        self.dual(&s0, &s1, bn, &none).into_iter().map(|s| s.x).collect()
    }

    /// [`Preprocess::forward`] with tangents.
    pub(crate) fn dual(&self, s0: &Dual, s1: &Dual, bn: BnMode, seeds: &Seeds) -> Vec<Dual> {
        let s0 = match &self.pre0 {
            Pre0::Reduce(fr) => fr.dual(s0, bn, seeds),
            Pre0::Plain(p) => p.dual(s0, bn, seeds),
        };
        vec![s0, self.pre1.dual(s1, bn, seeds)]
    }
}
