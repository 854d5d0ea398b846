//! The NAS-Bench-201 search supernet (AutoDL-Projects `TinyNetworkDarts`, bias-free convs as in
//! the paper and DARTS-PT; spaces.md §3).
//!
//! Stem Conv3×3(3→C)+BN, then N search cells at C, a ResNet reduction block to 2C, N cells, a
//! reduction block to 4C, N cells, BN+ReLU, global average pooling and a linear classifier.
//! Every search cell has 4 nodes and 6 edges; each edge mixes the 5 NB201 ops with the external
//! mixing weights `w[edge, op]` (one 6×5 table shared by all cells). Search BatchNorm is
//! non-affine. Parameter names match AutoDL's state dict.

use std::cell::OnceCell;

use tch::Tensor;

use super::{left_out, EdgeOps, Path, Supernet};
use crate::ops::dual::{Dual, Seeds};
use crate::ops::layers::{BatchNorm, BnMode, Builder, Conv, Linear, ReluConvBn};
use crate::ops::nb201::ResBlock;
use crate::space::{nb201_edge, SpaceSpec, NB201_OPS};

/// Configuration of the NB201 supernet.
#[derive(Debug, Clone, Copy)]
pub struct Nb201Config {
    /// Initial channels C (16 in the benchmark).
    pub channels: i64,
    /// Search cells per stage N (5 in the benchmark).
    pub cells_per_stage: usize,
    pub num_classes: i64,
}

enum Op {
    None,
    Skip,
    Conv(ReluConvBn),
    AvgPool,
}

impl Op {
    /// The op on node `x`; the node's ReLU and pooling are computed once for every edge
    /// leaving it (the same tensors each time: one autograd node instead of up to six).
    fn forward(&self, x: &Source, bn: BnMode, seeds: &Seeds) -> Option<Dual> {
        match self {
            Op::None => None,
            Op::Skip => Some(x.x.shallow_clone()),
            Op::Conv(c) => Some(c.dual_relued(x.relu.get_or_init(|| x.x.relu()), bn, seeds)),
            Op::AvgPool => Some(x.pool.get_or_init(|| x.x.avg_pool(3, 1, 1)).shallow_clone()),
        }
    }
}

/// A cell node and what its outgoing edges share of it.
struct Source {
    x: Dual,
    relu: OnceCell<Dual>,
    pool: OnceCell<Dual>,
}

impl Source {
    fn new(x: Dual) -> Self {
        Source { x, relu: OnceCell::new(), pool: OnceCell::new() }
    }
}

struct SearchCell {
    /// `edges[e][o]`, edges in NB201 row order (`1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2`).
    edges: Vec<Vec<Op>>,
}

impl SearchCell {
    fn new(b: &mut Builder, c: i64) -> Self {
        let edges = b.scope("edges", |b| {
            (0..6)
                .map(|e| {
                    let (i, j) = nb201_edge(e);
                    b.scope(format!("{i}<-{j}"), |b| {
                        NB201_OPS
                            .iter()
                            .enumerate()
                            .map(|(o, &name)| match name {
                                "none" => Op::None,
                                "skip_connect" => Op::Skip,
                                "nor_conv_1x1" => Op::Conv(ReluConvBn::new(b, &o.to_string(), c, c, 1, 1, 0, false)),
                                "nor_conv_3x3" => Op::Conv(ReluConvBn::new(b, &o.to_string(), c, c, 3, 1, 1, false)),
                                "avg_pool_3x3" => Op::AvgPool,
                                other => unreachable!("unknown NB201 op {other}"),
                            })
                            .collect()
                    })
                })
                .collect()
        });
        SearchCell { edges }
    }

    /// `w`: the 6×5 mixing weights (`dw`: their tangent); `path`: the one op per edge to
    /// compute (all when none). Without tangents, exactly the ops of a plain forward.
    fn forward(
        &self,
        x: &Dual,
        w: &Tensor,
        dw: Option<&Tensor>,
        path: Option<&[Option<usize>]>,
        bn: BnMode,
        seeds: &Seeds,
    ) -> Dual {
        let mut nodes: Vec<Source> = vec![Source::new(x.shallow_clone())];
        for i in 1..4 {
            let mut acc: Option<Dual> = None;
            let mut scalars: Option<Dual> = None;
            let add = |acc: &mut Option<Dual>, term: Dual| {
                *acc = Some(match acc.take() {
                    None => term,
                    Some(a) => a.plus(term),
                })
            };
            for j in 0..i {
                let e = i * (i - 1) / 2 + j;
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
                for (o, op) in self.edges[e].iter().enumerate() {
                    if how == EdgeOps::Off || matches!(how, EdgeOps::One(c) if c != o) {
                        continue;
                    }
                    if let Some(out) = op.forward(&nodes[j], bn, seeds) {
                        add(&mut acc, out.scale(&row.get(o as i64), drow.as_ref().map(|d| d.get(o as i64)).as_ref()));
                    }
                }
            }
            // `none` contributes exactly zero; a node fed only by `none` would be all zeros.
            let node = acc.unwrap_or_else(|| Dual::constant(nodes[0].x.x.zeros_like()));
            nodes.push(Source::new(match scalars {
                Some(s) => node.plus(s),
                None => node,
            }));
        }
        nodes.pop().expect("four nodes").x
    }
}

enum Block {
    Cell(SearchCell),
    Res(ResBlock),
}

/// The NB201 search supernet.
pub struct Nb201Supernet {
    spec: SpaceSpec,
    stem_conv: Conv,
    stem_bn: BatchNorm,
    blocks: Vec<Block>,
    last_bn: BatchNorm,
    classifier: Linear,
    params: super::ParamSet,
}

impl Nb201Supernet {
    /// Build with PyTorch's initialisation from libtorch's global generator (seed it first).
    pub fn new(cfg: Nb201Config, kind: tch::Kind) -> Self {
        let mut b = Builder::new(kind);
        let c = cfg.channels;
        let (stem_conv, stem_bn) = b.scope("stem", |b| (b.conv("0", 3, c, 3, 1, 1, 1, 1), b.batch_norm("1", c, true)));
        let mut blocks = Vec::new();
        let n = cfg.cells_per_stage;
        let stages = [c, 2 * c, 4 * c];
        let mut idx = 0usize;
        for (s, &ch) in stages.iter().enumerate() {
            if s > 0 {
                blocks.push(Block::Res(b.scope(format!("cells.{idx}"), |b| ResBlock::new(b, stages[s - 1], ch))));
                idx += 1;
            }
            for _ in 0..n {
                blocks.push(Block::Cell(b.scope(format!("cells.{idx}"), |b| SearchCell::new(b, ch))));
                idx += 1;
            }
        }
        let last_bn = b.scope("lastact", |b| b.batch_norm("0", 4 * c, true));
        let classifier = b.linear("classifier", 4 * c, cfg.num_classes);
        Nb201Supernet { spec: SpaceSpec::nb201(), stem_conv, stem_bn, blocks, last_bn, classifier, params: b.finish() }
    }
}

impl Supernet for Nb201Supernet {
    fn spec(&self) -> &SpaceSpec {
        &self.spec
    }

    fn params(&self) -> &super::ParamSet {
        &self.params
    }

    /// The stem, each cell or residual block, the head.
    fn segments(&self) -> usize {
        self.blocks.len() + 2
    }

    /// One tensor between segments; without tangents, the ops of a plain forward.
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
        let (w, path) = (&weights[0], path.map(|p| p[0].as_slice()));
        let dw = dweights.first().and_then(|d| d.as_ref());
        let x = &h[0];
        let out = if k == 0 {
            self.stem_bn.dual(&self.stem_conv.dual(x, seeds), bn, seeds)
        } else if let Some(block) = self.blocks.get(k - 1) {
            match block {
                Block::Cell(cell) => cell.forward(x, w, dw, path, bn, seeds),
                Block::Res(res) => res.dual(x, bn, seeds),
            }
        } else {
            let h = self.last_bn.dual(x, bn, seeds).relu();
            let h = h.linear_map(|t| t.adaptive_avg_pool2d([1, 1]).flatten(1, -1));
            self.classifier.dual(&h, seeds)
        };
        vec![out]
    }
}
