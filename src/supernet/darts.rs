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

use super::{left_out, EdgeOps, Path, Supernet};
use crate::config::StemKind;
use crate::ops::darts::{cell_shapes, CellShape, Input, Op, Preprocess, Stem};
use crate::ops::dual::{Dual, Seeds};
use crate::ops::layers::{BnMode, Builder, Linear};
use crate::space::{Mixing, SpaceSpec};

/// Size of a DARTS supernet.
#[derive(Debug, Clone, Copy)]
pub struct DartsConfig {
    /// Initial channels C (16 in the search).
    pub channels: i64,
    /// Cells (8 in the search).
    pub layers: usize,
    pub num_classes: i64,
    /// The stem: CIFAR's, or ImageNet's three stride-2 convolutions.
    pub stem: StemKind,
    /// PC-DARTS's K, ops see the first C/K channels (the CIFAR search: 4; ImageNet: 2).
    pub partial: i64,
}

const STEPS: usize = 4;
/// Intermediate nodes concatenated into a cell's output.
const MULTIPLIER: usize = 4;
const STEM_MULTIPLIER: i64 = 3;

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
    fn new(b: &mut Builder, ops: &[String], partial: i64, shape: CellShape) -> Self {
        let CellShape { c, reduction, .. } = shape;
        let pre = Preprocess::new(b, shape, false);
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
                                .map(|(o, name)| {
                                    b.scope(o.to_string(), |b| Op::build(b, name, c / partial, stride, false))
                                })
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
    /// each edge's bypassed channels; `dw`, `dbeta`: their tangents (none: zero).
    /// `path`: the one op per edge to compute (all when none; PC-DARTS never passes one).
    /// Without tangents, exactly the ops of a plain forward.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        s0: &Dual,
        s1: &Dual,
        (w, dw): (&Tensor, Option<&Tensor>),
        (beta, dbeta): (Option<&Tensor>, Option<&Tensor>),
        path: Option<&[Option<usize>]>,
        bn: BnMode,
        seeds: &Seeds,
    ) -> Dual {
        let mut states = self.pre.dual(s0, s1, bn, seeds);
        let mut inputs: Vec<Input> = Vec::with_capacity(STEPS + 2);
        let mut offset = 0;
        for _ in 0..STEPS {
            let mut node: Option<Dual> = None;
            let mut scalars: Option<Dual> = None;
            let add = |acc: &mut Option<Dual>, term: Dual| {
                *acc = Some(match acc.take() {
                    None => term,
                    Some(a) => a.plus(term),
                })
            };
            // Each state's part read by the ops (PC-DARTS: its first C/K channels), its ReLU
            // and pooling, shared by all edges leaving it.
            while inputs.len() < states.len() {
                let h = &states[inputs.len()];
                let c = h.x.size()[1];
                inputs.push(Input::new(if self.partial > 1 {
                    h.linear_map(|t| t.narrow(1, 0, c / self.partial))
                } else {
                    h.shallow_clone()
                }));
            }
            for (j, h) in states.iter().enumerate() {
                let e = offset + j;
                let row = w.get(e as i64);
                let drow = dw.map(|d| d.get(e as i64));
                let how = EdgeOps::of(path, e);
                if let EdgeOps::One(c) = how {
                    if let Some(s) = left_out(&row, self.edges[e].len(), c) {
                        let ds = drow.as_ref().and_then(|d| {
                            (0..self.edges[e].len()).filter(|&o| o != c).map(|o| d.get(o as i64)).reduce(|a, b| a + b)
                        });
                        add(&mut scalars, Dual { x: s, dx: ds });
                    }
                }
                let c = h.x.size()[1];
                let mut mixed: Option<Dual> = None;
                for (o, op) in self.edges[e].iter().enumerate() {
                    if how == EdgeOps::Off || matches!(how, EdgeOps::One(c) if c != o) {
                        continue;
                    }
                    if let Some(out) = op.dual(&inputs[j], bn, seeds) {
                        add(&mut mixed, out.scale(&row.get(o as i64), drow.as_ref().map(|d| d.get(o as i64)).as_ref()));
                    }
                }
                // A path may leave an edge with nothing computed (off, or `none` drawn).
                let Some(mut out) = mixed else { continue };
                if self.partial > 1 {
                    let k = self.partial;
                    let mut rest = h.linear_map(|t| t.narrow(1, c / k, c - c / k));
                    if out.x.size()[2] != h.x.size()[2] {
                        rest = rest.max_pool(2, 2, 0);
                    }
                    let beta = beta.expect("PC-DARTS mixing passes the edge weights");
                    let rest = rest.scale(&beta.get(e as i64), dbeta.map(|d| d.get(e as i64)).as_ref());
                    let y = Dual::cat(&[out, rest], 1);
                    let s = y.x.size();
                    // channel_shuffle(y, K): (N, K, C/K, H, W) → transpose(1, 2) → (N, C, H, W).
                    out = y.linear_map(|t| {
                        t.view([s[0], k, s[1] / k, s[2], s[3]])
                            .transpose(1, 2)
                            .contiguous()
                            .view([s[0], s[1], s[2], s[3]])
                    });
                }
                add(&mut node, out);
            }
            offset += states.len();
            // A node with nothing computed (every input `none` or off) is zero, at the cell's
            // output resolution (a reduction cell halves it: ⌈h/2⌉ for its 3×3, stride-2 ops).
            let node = node.unwrap_or_else(|| {
                let s = states[1].x.size();
                let (h, wd) = if self.reduction { ((s[2] + 1) / 2, (s[3] + 1) / 2) } else { (s[2], s[3]) };
                Dual::constant(Tensor::zeros([s[0], s[1], h, wd], (states[1].x.kind(), states[1].x.device())))
            });
            states.push(match scalars {
                Some(sc) => node.plus(sc),
                None => node,
            });
        }
        Dual::cat(&states[2..], 1)
    }
}

/// The DARTS search supernet.
pub struct DartsSupernet {
    spec: SpaceSpec,
    stem: Stem,
    cells: Vec<SearchCell>,
    classifier: Linear,
    params: super::ParamSet,
}

impl DartsSupernet {
    /// Build with PyTorch's initialisation from libtorch's global generator (seed it first).
    /// `spec`: DARTS, its 7-op variant or PC-DARTS (its ops; partial channels for PC-DARTS).
    pub fn new(cfg: DartsConfig, spec: SpaceSpec, kind: tch::Kind) -> Self {
        let partial = match spec.mixing {
            Mixing::EdgeNormalised { .. } => cfg.partial,
            Mixing::Softmax => 1,
        };
        let mut b = Builder::new(kind);
        let c_stem = STEM_MULTIPLIER * cfg.channels;
        let stem = Stem::new(&mut b, cfg.stem, c_stem);
        let shapes = cell_shapes(cfg.channels, c_stem, cfg.layers, stem.reduces(), |_| MULTIPLIER);
        let cells: Vec<SearchCell> = shapes
            .iter()
            .enumerate()
            .map(|(i, &shape)| {
                b.scope(format!("cells.{i}"), |b| SearchCell::new(b, &spec.cells[0].ops, partial, shape))
            })
            .collect();
        let c_last = shapes.last().map_or(c_stem, |s| s.c_out);
        let classifier = b.linear("classifier", c_last, cfg.num_classes);
        DartsSupernet { spec, stem, cells, classifier, params: b.finish() }
    }
}

impl Supernet for DartsSupernet {
    fn spec(&self) -> &SpaceSpec {
        &self.spec
    }

    fn params(&self) -> &super::ParamSet {
        &self.params
    }

    /// The stem, each cell, the head.
    fn segments(&self) -> usize {
        self.cells.len() + 2
    }

    /// The two previous cells' outputs between segments. `weights`: `[normal (14×ops), reduce
    /// (14×ops)]`, then for PC-DARTS `[β̃ normal (14), β̃ reduce (14)]`. Without tangents, the
    /// ops of a plain forward.
    fn dual_segment(
        &self,
        k: usize,
        h: &[Dual],
        weights: &[Tensor],
        dweights: &[Option<Tensor>],
        path: Option<&Path>,
        bn: BnMode,
        seeds: &Seeds,
    ) -> Vec<Dual> {
        if k == 0 {
            let (s0, s1) = self.stem.dual(&h[0], bn, seeds);
            return vec![s0, s1];
        }
        let Some(cell) = self.cells.get(k - 1) else {
            let pooled = h[1].linear_map(|t| t.adaptive_avg_pool2d([1, 1]).flatten(1, -1));
            return vec![self.classifier.dual(&pooled, seeds)];
        };
        let tangent = |t: usize| dweights.get(t).and_then(|d| d.as_ref());
        let t = cell.reduction as usize;
        let p = path.map(|p| p[t].as_slice());
        let out =
            cell.forward(&h[0], &h[1], (&weights[t], tangent(t)), (weights.get(2 + t), tangent(2 + t)), p, bn, seeds);
        vec![h[1].shallow_clone(), out]
    }
}
