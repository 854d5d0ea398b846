//! The NAS-Bench-1Shot1 search supernet (automl/nasbench-1shot1 `optimizers/darts/
//! model_search.py`, spaces.md §4): NAS-Bench-101-style cells of choice blocks, every cell
//! normal, one input per cell. Block b sums its inputs (its own 1×1 projection of the cell
//! input and the earlier blocks' outputs), weighted by softmax of its input α where the space
//! searches its parents, and mixes the 3 ops on the sum; the cell output is the weighted input
//! projection plus the concatenation of the weighted block outputs. Convolutions are
//! Conv → BN → ReLU with the repository's BatchNorm momentum 0.997 (TensorFlow's value read with
//! PyTorch's meaning: the running statistics are almost the last batch's).

use tch::Tensor;

use super::Supernet;
use crate::ops::layers::{BatchNorm, BnMode, Builder, Conv, Linear, ReluConvBn};
use crate::space::{Nb1Shot1Layout, SpaceSpec};

/// BatchNorm momentum of every ConvBnRelu (the repository's `BN_MOMENTUM`).
const BN_MOMENTUM: f64 = 0.997;

/// Size of a 1Shot1 supernet.
#[derive(Debug, Clone, Copy)]
pub struct Nb1Shot1Config {
    /// Search space 1, 2 or 3.
    pub space: u8,
    /// Initial channels (16).
    pub channels: i64,
    /// Cells (9); channels double, after a 2×2 max-pool, at layers/3 and 2·layers/3.
    pub layers: usize,
    pub num_classes: i64,
    /// 1, or PC-DARTS's 4: a choice block's ops see the first C/4 channels, the rest bypass
    /// them, and the halves are channel-shuffled in 4 groups (`optimizers/pc_darts`).
    pub partial: i64,
}

/// Conv (bias-free) → BatchNorm (affine, momentum 0.997) → ReLU, as `op.0`, `op.1`.
struct ConvBnRelu {
    conv: Conv,
    bn: BatchNorm,
}

impl ConvBnRelu {
    fn new(b: &mut Builder, name: &str, cin: i64, cout: i64, k: i64, pad: i64) -> Self {
        b.scope(name, |b| {
            b.scope("op", |b| ConvBnRelu {
                conv: b.conv("0", cin, cout, k, 1, pad, 1, 1),
                bn: b.batch_norm_momentum("1", cout, true, BN_MOMENTUM),
            })
        })
    }

    fn forward(&self, x: &Tensor, bn: BnMode) -> Tensor {
        self.bn.forward(&self.conv.forward(x), bn).relu()
    }
}

/// The ops of one choice block: max-pool 3×3 (no BatchNorm), conv 3×3, conv 1×1.
struct MixedOp {
    conv3: ConvBnRelu,
    conv1: ConvBnRelu,
    partial: i64,
}

impl MixedOp {
    fn forward(&self, x: &Tensor, w: &Tensor, bn: BnMode) -> Tensor {
        let c = x.size()[1];
        let part = if self.partial > 1 { x.narrow(1, 0, c / self.partial) } else { x.shallow_clone() };
        let mixed = part.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false) * w.get(0)
            + self.conv3.forward(&part, bn) * w.get(1)
            + self.conv1.forward(&part, bn) * w.get(2);
        if self.partial == 1 {
            return mixed;
        }
        // PC-DARTS: [ops on C/K, bypass of the rest], channel_shuffle(K): (N, K, C/K, H, W) →
        // transpose(1, 2) → (N, C, H, W).
        let k = self.partial;
        let y = Tensor::cat(&[mixed, x.narrow(1, c / k, c - c / k)], 1);
        let s = y.size();
        y.view([s[0], k, s[1] / k, s[2], s[3]]).transpose(1, 2).contiguous().view([s[0], s[1], s[2], s[3]])
    }
}

struct Cell {
    layout: Nb1Shot1Layout,
    /// `_input_projections`: one per block, then the input→output one.
    projections: Vec<ConvBnRelu>,
    blocks: Vec<MixedOp>,
}

impl Cell {
    fn new(b: &mut Builder, layout: &Nb1Shot1Layout, c_in: i64, c: i64, partial: i64) -> Self {
        let k = layout.steps;
        let cp = c / partial;
        let blocks = b.scope("_choice_blocks", |b| {
            (0..k)
                .map(|i| {
                    b.scope(format!("{i}.mixed_op._ops"), |b| MixedOp {
                        conv3: ConvBnRelu::new(b, "1", cp, cp, 3, 1),
                        conv1: ConvBnRelu::new(b, "2", cp, cp, 1, 0),
                        partial,
                    })
                })
                .collect()
        });
        let projections = b.scope("_input_projections", |b| {
            let mut p: Vec<ConvBnRelu> = (0..k).map(|i| ConvBnRelu::new(b, &i.to_string(), c_in, c, 1, 0)).collect();
            p.push(ConvBnRelu::new(b, &k.to_string(), c_in, c * k as i64, 1, 0));
            p
        });
        Cell { layout: layout.clone(), projections, blocks }
    }

    /// `w`: the tables `[ops, output, inputs…]`.
    fn forward(&self, s0: &Tensor, w: &[Tensor], bn: BnMode) -> Tensor {
        let k = self.layout.steps;
        let mut states: Vec<Tensor> = Vec::with_capacity(k);
        for b in 0..k {
            let proj = self.projections[b].forward(s0, bn);
            let input = if b < self.layout.fixed_blocks {
                states.iter().fold(proj, |acc, s| acc + s)
            } else {
                let wi = w[2 + b - self.layout.fixed_blocks].get(0);
                states.iter().enumerate().fold(proj * wi.get(0), |acc, (i, s)| acc + s * wi.get(i as i64 + 1))
            };
            states.push(self.blocks[b].forward(&input, &w[0].get(b as i64), bn));
        }
        let wo = w[1].get(0);
        let weighted: Vec<Tensor> = states.iter().enumerate().map(|(b, s)| s * wo.get(b as i64 + 1)).collect();
        self.projections[k].forward(s0, bn) * wo.get(0) + Tensor::cat(&weighted, 1)
    }
}

/// The NAS-Bench-1Shot1 search supernet.
pub struct Nb1Shot1Supernet {
    spec: SpaceSpec,
    stem: ConvBnRelu,
    cells: Vec<Cell>,
    /// Cells preceded by the 2×2 max-pool (stride 2, padding 1: 32 → 17 → 9).
    downsample: [usize; 2],
    postprocess: ReluConvBn,
    classifier: Linear,
    params: super::ParamSet,
}

impl Nb1Shot1Supernet {
    /// Build with PyTorch's initialisation from libtorch's global generator (seed it first).
    pub fn new(cfg: Nb1Shot1Config, kind: tch::Kind) -> Self {
        let layout = Nb1Shot1Layout::space(cfg.space);
        let steps = layout.steps as i64;
        let mut b = Builder::new(kind);
        let mut c_curr = cfg.channels;
        let stem = ConvBnRelu::new(&mut b, "stem", 3, c_curr, 3, 1);
        let downsample = [cfg.layers / 3, 2 * cfg.layers / 3];
        let mut c_prev = c_curr;
        let mut cells = Vec::new();
        for i in 0..cfg.layers {
            if downsample.contains(&i) {
                c_curr *= 2;
            }
            let c_in = if i == 0 { c_prev } else { c_prev * steps };
            cells.push(b.scope(format!("cells.{i}"), |b| Cell::new(b, &layout, c_in, c_curr, cfg.partial)));
            c_prev = c_curr;
        }
        let postprocess = ReluConvBn::new(&mut b, "postprocess", c_prev * steps, c_curr, 1, 1, 0, false);
        let classifier = b.linear("classifier", c_prev, cfg.num_classes);
        Nb1Shot1Supernet {
            spec: if cfg.partial > 1 { SpaceSpec::pc_nb1shot1(cfg.space) } else { SpaceSpec::nb1shot1(cfg.space) },
            stem,
            cells,
            downsample,
            postprocess,
            classifier,
            params: b.finish(),
        }
    }
}

impl Supernet for Nb1Shot1Supernet {
    fn spec(&self) -> &SpaceSpec {
        &self.spec
    }

    fn params(&self) -> &super::ParamSet {
        &self.params
    }

    /// `weights`: `[ops (steps×3), output (1×(steps+1)), inputs of each searched block (1×n)]`,
    /// shared by every cell.
    fn forward_on(&self, x: &Tensor, weights: &[Tensor], path: Option<&super::Path>, bn: BnMode) -> Tensor {
        if let Some(p) = path {
            return self.forward(x, &super::masked_to_path(weights, p), bn);
        }
        let mut s = self.stem.forward(x, bn);
        for (i, cell) in self.cells.iter().enumerate() {
            if self.downsample.contains(&i) {
                s = s.max_pool2d([2, 2], [2, 2], [1, 1], [1, 1], false);
            }
            s = cell.forward(&s, weights, bn);
        }
        let h = self.postprocess.forward(&s, bn).mean_dim([2i64, 3].as_slice(), false, s.kind());
        self.classifier.forward(&h)
    }
}
