//! The DARTS search supernet (quark0/darts `cnn/model_search.py`, spaces.md §1): 8 candidate
//! ops, normal and reduction cells with their own α (14 edges each, 4 intermediate nodes, the
//! concatenation of the 4 nodes as output), a ×3 stem, `layers` cells with reductions at
//! `layers/3` and `2·layers/3`; BatchNorm without affine parameters inside cells and after the
//! pools of each mixed op. Parameter names follow the reference state dict
//! (`cells.0._ops.0._ops.4.op.1.weight`, `cells.2.preprocess0.conv_1.weight`, …).
//!
//! The same network serves DARTS-PT's 7-op space (no `none`) and PC-DARTS (spaces.md §2): with
//! `partial = K` every mixed op runs on the first C/K channels of its input, the others bypass
//! it (max-pooled 2×2 on reduction edges), the two are concatenated and channel-shuffled in K
//! groups, and each edge's output is scaled by its normalised edge weight β̃. The mixing weights
//! passed in are then the effective weights β̃·softmax(α) followed by β̃ itself (the bypass's
//! weight), so that removing an op leaves the bypass untouched.

use tch::Tensor;

use super::layers::{avg_pool, BatchNorm, BnMode, Builder, Conv, Linear, ReluConvBn};
use super::{left_out, EdgeOps, Path, Supernet};
use crate::space::{Mixing, SpaceSpec};

/// Size of a DARTS supernet.
#[derive(Debug, Clone, Copy)]
pub struct DartsConfig {
    /// Initial channels C (16 in the search).
    pub channels: i64,
    /// Cells (8 in the search).
    pub layers: usize,
    pub num_classes: i64,
}

/// PC-DARTS's K: ops see the first C/K channels.
const PARTIAL_K: i64 = 4;

const STEPS: usize = 4;
const MULTIPLIER: i64 = 4;
const STEM_MULTIPLIER: i64 = 3;

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

    pub(crate) fn forward(&self, x: &Tensor, bn: BnMode) -> Tensor {
        let x = x.relu();
        let shifted = x.narrow(2, 1, x.size()[2] - 1).narrow(3, 1, x.size()[3] - 1);
        let y = Tensor::cat(&[self.conv_1.forward(&x), self.conv_2.forward(&shifted)], 1);
        self.bn.forward(&y, bn)
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
    /// The search network's op (non-affine, BN after pools).
    fn new(b: &mut Builder, name: &str, c: i64, stride: i64) -> Op {
        Op::build(b, name, c, stride, false)
    }

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
        let norm = |n: &Option<BatchNorm>, y: Tensor| match n {
            Some(n) => n.forward(&y, bn),
            None => y,
        };
        Some(match self {
            Op::Zero => return None,
            Op::MaxPool { stride, bn: n } => norm(n, x.max_pool2d([3, 3], [*stride, *stride], [1, 1], [1, 1], false)),
            Op::AvgPool { stride, bn: n } => norm(n, avg_pool(x, 3, *stride, 1)),
            Op::Identity => x.shallow_clone(),
            Op::Reduce(fr) => fr.forward(x, bn),
            Op::Sep { dw1, pw1, bn1, dw2, pw2, bn2 } => {
                let h = bn1.forward(&pw1.forward(&dw1.forward(&x.relu())), bn);
                bn2.forward(&pw2.forward(&dw2.forward(&h.relu())), bn)
            }
            Op::Dil { dw, pw, bn: norm } => norm.forward(&pw.forward(&dw.forward(&x.relu())), bn),
        })
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
    pub(crate) fn new(b: &mut Builder, c_pp: i64, c_p: i64, c: i64, reduction_prev: bool, affine: bool) -> Self {
        let pre0 = if reduction_prev {
            Pre0::Reduce(b.scope("preprocess0", |b| FactorizedReduce::new(b, c_pp, c, affine)))
        } else {
            Pre0::Plain(ReluConvBn::new(b, "preprocess0", c_pp, c, 1, 1, 0, affine))
        };
        Preprocess { pre0, pre1: ReluConvBn::new(b, "preprocess1", c_p, c, 1, 1, 0, affine) }
    }

    /// The cell's two input states.
    pub(crate) fn forward(&self, s0: &Tensor, s1: &Tensor, bn: BnMode) -> Vec<Tensor> {
        let s0 = match &self.pre0 {
            Pre0::Reduce(fr) => fr.forward(s0, bn),
            Pre0::Plain(p) => p.forward(s0, bn),
        };
        vec![s0, self.pre1.forward(s1, bn)]
    }
}

struct SearchCell {
    /// Whether this cell mixes with the reduction α.
    reduction: bool,
    /// PC-DARTS's K (1: every channel goes through the ops).
    partial: i64,
    pre: Preprocess,
    /// `edges[e][o]` in α row order: node 0 from s0, s1; node 1 from s0, s1, n0; …
    edges: Vec<Vec<Op>>,
}

impl SearchCell {
    #[allow(clippy::too_many_arguments)]
    fn new(
        b: &mut Builder,
        ops: &[String],
        partial: i64,
        c_pp: i64,
        c_p: i64,
        c: i64,
        reduction: bool,
        reduction_prev: bool,
    ) -> Self {
        let pre = Preprocess::new(b, c_pp, c_p, c, reduction_prev, false);
        let mut edges = Vec::new();
        b.scope("_ops", |b| {
            for i in 0..STEPS {
                for j in 0..2 + i {
                    let stride = if reduction && j < 2 { 2 } else { 1 };
                    let e = edges.len();
                    let ops = b.scope(e.to_string(), |b| {
                        b.scope("_ops", |b| {
                            ops.iter()
                                .enumerate()
                                .map(|(o, name)| b.scope(o.to_string(), |b| Op::new(b, name, c / partial, stride)))
                                .collect::<Vec<_>>()
                        })
                    });
                    edges.push(ops);
                }
            }
        });
        SearchCell { reduction, partial, pre, edges }
    }

    /// `w`: this cell type's 14×ops mixing weights; `beta`: PC-DARTS's β̃ (14), the weight of
    /// each edge's bypassed channels.
    /// `path`: the one op per edge to compute (all when none; PC-DARTS never passes one).
    fn forward(
        &self,
        s0: &Tensor,
        s1: &Tensor,
        w: &Tensor,
        beta: Option<&Tensor>,
        path: Option<&[Option<usize>]>,
        bn: BnMode,
    ) -> Tensor {
        let mut states = self.pre.forward(s0, s1, bn);
        let mut offset = 0;
        for _ in 0..STEPS {
            let mut node: Option<Tensor> = None;
            let mut scalars: Option<Tensor> = None;
            let add = |acc: &mut Option<Tensor>, term: Tensor| {
                *acc = Some(match acc.take() {
                    None => term,
                    Some(a) => a + term,
                })
            };
            for (j, h) in states.iter().enumerate() {
                let e = offset + j;
                let row = w.get(e as i64);
                let how = EdgeOps::of(path, e);
                if let EdgeOps::One(c) = how {
                    if let Some(s) = left_out(&row, self.edges[e].len(), c) {
                        add(&mut scalars, s);
                    }
                }
                let c = h.size()[1];
                let part = if self.partial > 1 { h.narrow(1, 0, c / self.partial) } else { h.shallow_clone() };
                let mut mixed: Option<Tensor> = None;
                for (o, op) in self.edges[e].iter().enumerate() {
                    if how == EdgeOps::Off || matches!(how, EdgeOps::One(c) if c != o) {
                        continue;
                    }
                    if let Some(out) = op.forward(&part, bn) {
                        add(&mut mixed, out * row.get(o as i64));
                    }
                }
                // A path may leave an edge with nothing computed (off, or `none` drawn).
                let Some(mut out) = mixed else { continue };
                if self.partial > 1 {
                    let k = self.partial;
                    let mut rest = h.narrow(1, c / k, c - c / k);
                    if out.size()[2] != h.size()[2] {
                        rest = rest.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
                    }
                    let beta = beta.expect("PC-DARTS mixing passes the edge weights");
                    let y = Tensor::cat(&[out, rest * beta.get(e as i64)], 1);
                    let s = y.size();
                    // channel_shuffle(y, K): (N, K, C/K, H, W) → transpose(1, 2) → (N, C, H, W).
                    out = y
                        .view([s[0], k, s[1] / k, s[2], s[3]])
                        .transpose(1, 2)
                        .contiguous()
                        .view([s[0], s[1], s[2], s[3]]);
                }
                add(&mut node, out);
            }
            offset += states.len();
            // A node with nothing computed (every input `none` or off) is zero, at the cell's
            // output resolution (a reduction cell halves it: ⌈h/2⌉ for its 3×3, stride-2 ops).
            let node = node.unwrap_or_else(|| {
                let s = states[1].size();
                let (h, wd) = if self.reduction { ((s[2] + 1) / 2, (s[3] + 1) / 2) } else { (s[2], s[3]) };
                Tensor::zeros([s[0], s[1], h, wd], (states[1].kind(), states[1].device()))
            });
            states.push(match scalars {
                Some(sc) => node + sc,
                None => node,
            });
        }
        Tensor::cat(&states[2..], 1)
    }
}

/// The DARTS search supernet.
pub struct DartsSupernet {
    spec: SpaceSpec,
    stem_conv: Conv,
    stem_bn: BatchNorm,
    cells: Vec<SearchCell>,
    classifier: Linear,
    params: super::ParamSet,
}

impl DartsSupernet {
    /// Build with PyTorch's initialisation from libtorch's global generator (seed it first).
    /// `spec`: DARTS, its 7-op variant or PC-DARTS (its ops; partial channels for PC-DARTS).
    pub fn new(cfg: DartsConfig, spec: SpaceSpec, kind: tch::Kind) -> Self {
        let partial = match spec.mixing {
            Mixing::EdgeNormalised { .. } => PARTIAL_K,
            Mixing::Softmax => 1,
        };
        let mut b = Builder::new(kind);
        let c = cfg.channels;
        let c_stem = STEM_MULTIPLIER * c;
        let (stem_conv, stem_bn) =
            b.scope("stem", |b| (b.conv("0", 3, c_stem, 3, 1, 1, 1, 1), b.batch_norm("1", c_stem, true)));
        let (mut c_pp, mut c_p, mut c_curr) = (c_stem, c_stem, c);
        let mut reduction_prev = false;
        let mut cells = Vec::new();
        let reductions = [cfg.layers / 3, 2 * cfg.layers / 3];
        for i in 0..cfg.layers {
            let reduction = reductions.contains(&i);
            if reduction {
                c_curr *= 2;
            }
            cells.push(b.scope(format!("cells.{i}"), |b| {
                SearchCell::new(b, &spec.cells[0].ops, partial, c_pp, c_p, c_curr, reduction, reduction_prev)
            }));
            reduction_prev = reduction;
            (c_pp, c_p) = (c_p, MULTIPLIER * c_curr);
        }
        let classifier = b.linear("classifier", c_p, cfg.num_classes);
        DartsSupernet { spec, stem_conv, stem_bn, cells, classifier, params: b.finish() }
    }
}

impl Supernet for DartsSupernet {
    fn spec(&self) -> &SpaceSpec {
        &self.spec
    }

    fn params(&self) -> &super::ParamSet {
        &self.params
    }

    /// `weights`: `[normal (14×ops), reduce (14×ops)]`, then for PC-DARTS `[β̃ normal (14),
    /// β̃ reduce (14)]`.
    fn forward(&self, x: &Tensor, weights: &[Tensor], bn: BnMode) -> Tensor {
        self.run(x, weights, None, bn)
    }

    fn forward_path(&self, x: &Tensor, weights: &[Tensor], path: &Path, bn: BnMode) -> Tensor {
        self.run(x, weights, Some(path), bn)
    }
}

impl DartsSupernet {
    fn run(&self, x: &Tensor, weights: &[Tensor], path: Option<&Path>, bn: BnMode) -> Tensor {
        let s = self.stem_bn.forward(&self.stem_conv.forward(x), bn);
        let (mut s0, mut s1) = (s.shallow_clone(), s);
        for cell in &self.cells {
            let t = cell.reduction as usize;
            let w = &weights[t];
            let p = path.map(|p| p[t].as_slice());
            let out = cell.forward(&s0, &s1, w, weights.get(2 + t), p, bn);
            (s0, s1) = (s1, out);
        }
        let h = s1.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        self.classifier.forward(&h)
    }
}
