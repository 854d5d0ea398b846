//! NAS-Bench-201's discrete network (AutoDL `TinyNetwork` with `InferCell`): the genotype's op on
//! every edge (affine BatchNorm), the same ResNet blocks and head as the supernet.

use tch::Tensor;

use super::{Network, NetworkConfig};
use crate::ops::layers::{avg_pool, BatchNorm, Builder, Conv, Linear, ReluConvBn};
use crate::ops::nb201::ResBlock;
use crate::space::{nb201_edge, Nb201Genotype, NB201_OPS};
use crate::supernet::{BnMode, ParamSet};

enum Op {
    Zero,
    Identity,
    Conv(ReluConvBn),
    AvgPool,
}

struct Cell {
    /// One op per edge in row order (`1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2`).
    edges: Vec<Op>,
}

impl Cell {
    fn new(b: &mut Builder, g: &Nb201Genotype, c: i64) -> Self {
        let edges = b.scope("layers", |b| {
            g.ops
                .iter()
                .enumerate()
                .map(|(k, &o)| match NB201_OPS[o] {
                    "none" => Op::Zero,
                    "skip_connect" => Op::Identity,
                    "nor_conv_1x1" => Op::Conv(ReluConvBn::new(b, &k.to_string(), c, c, 1, 1, 0, true)),
                    "nor_conv_3x3" => Op::Conv(ReluConvBn::new(b, &k.to_string(), c, c, 3, 1, 1, true)),
                    _ => Op::AvgPool,
                })
                .collect()
        });
        Cell { edges }
    }

    fn forward(&self, x: &Tensor, bn: BnMode) -> Tensor {
        let mut nodes = vec![x.shallow_clone()];
        for i in 1..4 {
            let mut acc: Option<Tensor> = None;
            for j in 0..i {
                let e = i * (i - 1) / 2 + j;
                debug_assert_eq!(nb201_edge(e), (i, j));
                let h = &nodes[j];
                let out = match &self.edges[e] {
                    Op::Zero => None,
                    Op::Identity => Some(h.shallow_clone()),
                    Op::Conv(c) => Some(c.forward(h, bn)),
                    Op::AvgPool => Some(avg_pool(h, 3, 1, 1)),
                };
                if let Some(o) = out {
                    acc = Some(match acc {
                        None => o,
                        Some(a) => a + o,
                    });
                }
            }
            nodes.push(acc.unwrap_or_else(|| nodes[0].zeros_like()));
        }
        nodes.pop().expect("four nodes")
    }
}

enum Block {
    Cell(Cell),
    Res(ResBlock),
}

/// The discrete NB201 network of a genotype.
pub struct Nb201Network {
    stem_conv: Conv,
    stem_bn: BatchNorm,
    blocks: Vec<Block>,
    last_bn: BatchNorm,
    classifier: Linear,
    params: ParamSet,
}

impl Nb201Network {
    /// `cfg.layers` is N, the cells per stage.
    pub fn new(g: &Nb201Genotype, cfg: NetworkConfig, kind: tch::Kind) -> Self {
        let mut b = Builder::new(kind);
        let c = cfg.channels;
        let (stem_conv, stem_bn) = b.scope("stem", |b| (b.conv("0", 3, c, 3, 1, 1, 1, 1), b.batch_norm("1", c, true)));
        let stages = [c, 2 * c, 4 * c];
        let mut blocks = Vec::new();
        let mut idx = 0usize;
        for (s, &ch) in stages.iter().enumerate() {
            if s > 0 {
                blocks.push(Block::Res(b.scope(format!("cells.{idx}"), |b| ResBlock::new(b, stages[s - 1], ch))));
                idx += 1;
            }
            for _ in 0..cfg.layers {
                blocks.push(Block::Cell(b.scope(format!("cells.{idx}"), |b| Cell::new(b, g, ch))));
                idx += 1;
            }
        }
        let last_bn = b.scope("lastact", |b| b.batch_norm("0", 4 * c, true));
        let classifier = b.linear("classifier", 4 * c, cfg.num_classes);
        Nb201Network { stem_conv, stem_bn, blocks, last_bn, classifier, params: b.finish() }
    }
}

impl Network for Nb201Network {
    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn forward(&self, x: &Tensor, bn: BnMode, _drop_path: f64) -> (Tensor, Option<Tensor>) {
        let mut h = self.stem_bn.forward(&self.stem_conv.forward(x), bn);
        for block in &self.blocks {
            h = match block {
                Block::Cell(cell) => cell.forward(&h, bn),
                Block::Res(res) => res.forward(&h, bn),
            };
        }
        let h = self.last_bn.forward(&h, bn).relu().adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        (self.classifier.forward(&h), None)
    }
}
