//! Supernets: networks whose every searchable choice is a weighted mixture, with the mixing
//! weights passed in from outside so that criteria can differentiate with respect to them.

pub(crate) mod darts;
pub(crate) mod nb1shot1;
pub(crate) mod nb201;
pub mod state;

pub use crate::ops::dual::{Dual, Seeds};
pub use crate::ops::{BnMode, ParamSet};
pub use darts::{DartsConfig, DartsSupernet};
pub use nb1shot1::{Nb1Shot1Config, Nb1Shot1Supernet};
pub use nb201::{Nb201Config, Nb201Supernet};

use tch::{Kind, Tensor};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ops::layers;
use crate::space::{Family, SpaceSpec};

/// A weight-sharing supernet.
pub trait Supernet {
    /// Its search space: ops, cell types, edges.
    fn spec(&self) -> &SpaceSpec;
    /// Trainable weights θ and BatchNorm buffers.
    fn params(&self) -> &ParamSet;
    /// Logits for images `x`, mixing ops with `weights` (one `[edges, ops]` table per cell type,
    /// rows summing to one for softmax mixing; any values are allowed, e.g. an op zeroed) —
    /// or, with a `path`, computing only the op `path[t][e]` on edge e of table t (an edge whose
    /// entry is none is off), scaled by its weight; every other op of a computed edge adds its
    /// weight as a scalar (GDAS's straight-through: value zero, gradient to the mixing weights)
    /// when the weights require gradient. A space without path savings mixes every op with
    /// the weights masked to the path ([`masked_to_path`]: the same values).
    /// By default the tangent forward without tangents ([`Supernet::dual`]), which a supernet
    /// without one must replace.
    fn forward_on(&self, x: &Tensor, weights: &[Tensor], path: Option<&Path>, bn: BnMode) -> Tensor {
        let plain = self.dual(&Dual::constant(x.shallow_clone()), weights, &[], path, bn, &Seeds::none());
        plain.expect("a supernet without a tangent forward implements forward_on").x
    }
    /// Logits mixing every op ([`Supernet::forward_on`] without a path).
    fn forward(&self, x: &Tensor, weights: &[Tensor], bn: BnMode) -> Tensor {
        self.forward_on(x, weights, None, bn)
    }
    /// Logits of a path ([`Supernet::forward_on`]).
    fn forward_path(&self, x: &Tensor, weights: &[Tensor], path: &Path, bn: BnMode) -> Tensor {
        self.forward_on(x, weights, Some(path), bn)
    }
    /// The forward with tangents ([`crate::ops::dual`]): logits and their tangent along the
    /// mixing weights' tangents `dweights` (one per table, None: zero) and the weights' tangents
    /// `seeds`; without tangents exactly the ops of [`Supernet::forward_on`]. The segments run
    /// one after the other ([`Supernet::dual_segment`]); None where the supernet has none (no
    /// tangent forward).
    fn dual(
        &self,
        x: &Dual,
        weights: &[Tensor],
        dweights: &[Option<Tensor>],
        path: Option<&Path>,
        bn: BnMode,
        seeds: &Seeds,
    ) -> Option<Dual> {
        let mut h = vec![x.shallow_clone()];
        for k in 0..self.segments() {
            h = self.dual_segment(k, &h, weights, dweights, path, bn, seeds);
        }
        (self.segments() > 0).then(|| h.swap_remove(0))
    }
    /// The tangent forward's segments (0: the supernet has no tangent forward): the stem, each
    /// cell or block, the head. Recomputing one segment from its saved inputs is what lets
    /// second derivatives keep one segment's graph at a time (`select.recompute = "cells"`).
    fn segments(&self) -> usize {
        0
    }
    /// Segment `k` of [`Supernet::dual`]: the state after segment k from the state `h` before it
    /// (segment 0 reads `[images]`, the last returns `[logits]`; in between, what the next
    /// segment reads — one tensor for a chain of cells, the two previous cells' outputs for
    /// DARTS). Without tangents, exactly the ops of a plain forward.
    #[allow(clippy::too_many_arguments)]
    fn dual_segment(
        &self,
        _k: usize,
        _h: &[Dual],
        _weights: &[Tensor],
        _dweights: &[Option<Tensor>],
        _path: Option<&Path>,
        _bn: BnMode,
        _seeds: &Seeds,
    ) -> Vec<Dual> {
        unreachable!("dual_segment on a supernet without segments")
    }
    /// Logits mixing every op and their tangent by forward mode ([`Supernet::dual`]); the logits
    /// are [`Supernet::forward`]'s. None where the supernet has no tangent forward: callers then
    /// take the double-backward route.
    fn forward_tangent(
        &self,
        x: &Tensor,
        weights: &[Tensor],
        dweights: &[Option<Tensor>],
        seeds: &Seeds,
        bn: BnMode,
    ) -> Option<Dual> {
        self.dual(&Dual::constant(x.shallow_clone()), weights, dweights, None, bn, seeds)
    }
    /// Whether [`Supernet::dual`] is implemented.
    fn has_tangents(&self) -> bool {
        self.segments() > 0
    }
}

/// The mixing weights with every op off `path` zeroed (tables other than `[edges, ops]` kept).
pub fn masked_to_path(weights: &[Tensor], path: &Path) -> Vec<Tensor> {
    weights
        .iter()
        .enumerate()
        .map(|(t, w)| match path.get(t) {
            Some(rows) if w.dim() == 2 => {
                let c = w.size()[1] as usize;
                let mut m = vec![0.0; rows.len() * c];
                for (e, o) in rows.iter().enumerate() {
                    if let Some(o) = o {
                        m[e * c + o] = 1.0;
                    }
                }
                let m = Tensor::from_slice(&m).view([rows.len() as i64, c as i64]);
                w * m.to_kind(w.kind()).to_device(w.device())
            }
            _ => w.shallow_clone(),
        })
        .collect()
}

/// One op per edge of every architecture table (`path[table][edge]`; none: the edge is off).
pub type Path = Vec<Vec<Option<usize>>>;

/// How an edge is computed in a path forward: every op (no path), one op, or not at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum EdgeOps {
    All,
    One(usize),
    Off,
}

impl EdgeOps {
    pub(crate) fn of(path: Option<&[Option<usize>]>, edge: usize) -> Self {
        match path {
            None => EdgeOps::All,
            Some(p) => p.get(edge).copied().flatten().map_or(EdgeOps::Off, EdgeOps::One),
        }
    }
}

/// Sum of the weights of the ops a path leaves out on an edge, as GDAS adds them (value zero
/// for its hard weights; skipped when the weights carry no gradient, as for fixed paths).
pub(crate) fn left_out(row: &Tensor, ops: usize, chosen: usize) -> Option<Tensor> {
    if !row.requires_grad() {
        return None;
    }
    (0..ops).filter(|&o| o != chosen).map(|o| row.get(o as i64)).reduce(|a, b| a + b)
}

/// Build the supernet named in the config, initialised from `seed`, on `device`.
pub fn build(cfg: &Config, seed: u64, kind: Kind, device: tch::Device) -> Result<Box<dyn Supernet>> {
    let (channels, classes, layers) = (cfg.space.channels as i64, cfg.data.num_classes as i64, cfg.space.layers);
    let spec = SpaceSpec::by_name(&cfg.space.name)
        .ok_or_else(|| Error::config("config", "space.name", format!("unknown search space {:?}", cfg.space.name)))?;
    let construct = || -> Box<dyn Supernet> {
        match spec.family {
            Family::Nb201 => Box::new(Nb201Supernet::new(
                Nb201Config { channels, cells_per_stage: cfg.space.cells_per_stage, num_classes: classes },
                kind,
            )),
            Family::Darts => Box::new(DartsSupernet::new(
                DartsConfig {
                    channels,
                    layers,
                    num_classes: classes,
                    stem: cfg.space.stem,
                    partial: cfg.space.partial_k(),
                },
                spec.clone(),
                kind,
            )),
            Family::Nb1Shot1(space) => Box::new(Nb1Shot1Supernet::new(
                Nb1Shot1Config { space, channels, layers, num_classes: classes, partial: spec.partial_channels() },
                kind,
            )),
        }
    };
    let sizes = if matches!(spec.family, Family::Nb201) {
        format!("space.channels = {channels}, space.cells_per_stage = {}", cfg.space.cells_per_stage)
    } else {
        format!("space.channels = {channels}, space.layers = {layers}")
    };
    // The weights' size first, allocating nothing: a supernet that cannot be trained here is
    // refused before any memory is touched (training holds weights, gradients and momentum).
    let need = layers::count_only(|| construct().params().bytes);
    layers::check_fits(need, "space.channels", &sizes)?;
    tch::manual_seed(seed as i64);
    let net = construct();
    net.params().check_allocated("space.channels", &sizes)?;
    net.params().to_device(device);
    Ok(net)
}

/// Rows of the mixing tables fixed by progressive decisions (DARTS-PT's "projected" weights): a
/// decided edge mixes with the one-hot of its op, a removed edge with zeros; every other row
/// keeps its mixing weights (and its gradient to α).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Projection {
    /// (table, row, fixed row values).
    pub fixed: Vec<(usize, usize, Vec<f64>)>,
}

impl Projection {
    pub fn is_fixed(&self, table: usize, row: usize) -> bool {
        self.fixed.iter().any(|(t, r, _)| (*t, *r) == (table, row))
    }

    /// Fix (or re-fix) a row.
    pub fn set(&mut self, table: usize, row: usize, values: Vec<f64>) {
        self.fixed.retain(|(t, r, _)| (*t, *r) != (table, row));
        self.fixed.push((table, row, values));
    }

    /// The forward's weights with the fixed rows substituted (`w·keep + fixed`, so the free rows
    /// stay differentiable).
    pub fn apply(&self, mut w: Vec<Tensor>) -> Vec<Tensor> {
        for (t, table) in w.iter_mut().enumerate() {
            let rows: Vec<&(usize, usize, Vec<f64>)> = self.fixed.iter().filter(|f| f.0 == t).collect();
            if rows.is_empty() {
                continue;
            }
            let (n, c) = (table.size()[0], table.size()[1]);
            let mut keep = vec![1.0; (n * c) as usize];
            let mut fixed = vec![0.0; (n * c) as usize];
            for (_, r, values) in rows {
                for (o, v) in values.iter().enumerate() {
                    keep[r * c as usize + o] = 0.0;
                    fixed[r * c as usize + o] = *v;
                }
            }
            let opts = (table.kind(), table.device());
            let keep = Tensor::from_slice(&keep).view([n, c]).to_kind(opts.0).to_device(opts.1);
            let fixed = Tensor::from_slice(&fixed).view([n, c]).to_kind(opts.0).to_device(opts.1);
            *table = &*table * keep + fixed;
        }
        w
    }
}

/// A 2-D tensor as rows of f64.
pub fn table_of(t: &Tensor) -> Vec<Vec<f64>> {
    let t = crate::device::host(&t.to_kind(Kind::Double)).contiguous();
    let (r, c) = (t.size()[0] as usize, t.size()[1] as usize);
    let v: Vec<f64> = Vec::try_from(&t.reshape([-1])).expect("double tensor");
    (0..r).map(|i| v[i * c..(i + 1) * c].to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counting without allocating gives the bytes the real build allocates: NB201 at the
    /// benchmark size has 1,686,106 weights (spaces.md) in f32, plus its BatchNorm buffers.
    #[test]
    fn counted_bytes_are_the_allocated_bytes() {
        let cfg = Config::load(None, &["space.channels=16".into(), "space.cells_per_stage=5".into()]).unwrap();
        let counted = layers::count_only(|| build(&cfg, 1, Kind::Float, tch::Device::Cpu).unwrap().params().bytes);
        let net = build(&cfg, 1, Kind::Float, tch::Device::Cpu).unwrap();
        let p = net.params();
        assert_eq!(p.count(), 1_686_106);
        let real: usize = p.tensors.iter().chain(&p.buffers).map(|t| t.numel() * 4).sum();
        assert_eq!(counted, real as u64);
        assert!(counted > 1_686_106 * 4);
    }

    fn nb201(classes: i64) -> Nb201Supernet {
        Nb201Supernet::new(Nb201Config { channels: 16, cells_per_stage: 5, num_classes: classes }, Kind::Float)
    }

    #[test]
    fn nb201_parameter_counts_match_the_reference() {
        // spaces.md §3.3 / §8: bias-free search supernet, C=16, N=5.
        assert_eq!(nb201(10).params().count(), 1_686_106);
        assert_eq!(nb201(100).params().count(), 1_691_956);
        assert_eq!(nb201(120).params().count(), 1_693_256);
    }

    fn darts(classes: i64) -> DartsSupernet {
        DartsSupernet::new(
            DartsConfig {
                channels: 16,
                layers: 8,
                num_classes: classes,
                stem: crate::config::StemKind::Cifar,
                partial: 4,
            },
            SpaceSpec::darts(),
            Kind::Float,
        )
    }

    #[test]
    fn darts_parameter_counts_match_the_reference() {
        // spaces.md §1.4: the DARTS search network at C=16, 8 cells.
        assert_eq!(darts(10).params().count(), 1_930_618);
        assert_eq!(darts(100).params().count(), 1_953_748);
        // §5.1 / §8: DARTS-PT's s5 (no `none`, which has no weights) has the same count.
        let c16 =
            DartsConfig { channels: 16, layers: 8, num_classes: 10, stem: crate::config::StemKind::Cifar, partial: 4 };
        assert_eq!(DartsSupernet::new(c16, SpaceSpec::darts_s5(), Kind::Float).params().count(), 1_930_618);
        // §2.4 / §8: PC-DARTS, ops on C/4 channels.
        assert_eq!(DartsSupernet::new(c16, SpaceSpec::pc_darts(), Kind::Float).params().count(), 299_578);
    }

    /// Standard-normal α of `spec` (f64 leaves with gradients), as the forward tests use.
    fn leaf_alphas(spec: &SpaceSpec) -> Vec<Tensor> {
        spec.alpha_shapes()
            .iter()
            .map(|s| Tensor::randn(s.as_slice(), (Kind::Double, tch::Device::Cpu)).set_requires_grad(true))
            .collect()
    }

    #[test]
    fn pc_darts_imagenet_search_network_size_and_forward() {
        use crate::config::StemKind;
        // PC-DARTS's ImageNet search (model_search_imagenet.py: C = 16, 8 cells, 1000 classes,
        // ops on C/2 channels, the stems' BatchNorms affine and the cells' not): 956,512
        // weights by the layer formulas of that file (stems 3·24·9 + 48 + 24·48·9 + 96 +
        // 48·48·9 + 96, each cell's 1×1 preprocessing and its 14 edges' convolutions on C/2,
        // the classifier 256·1000 + 1000). The same formulas give spaces.md's 299,578
        // (PC-DARTS, CIFAR stem, K = 4) and 1,930,618 (DARTS) checked above.
        let cfg = DartsConfig { channels: 16, layers: 8, num_classes: 1000, stem: StemKind::ImageNet, partial: 2 };
        let net = DartsSupernet::new(cfg, SpaceSpec::pc_darts(), Kind::Float);
        assert_eq!(net.params().count(), 956_512);
        for n in ["stem0.0.weight", "stem0.4.weight", "stem1.1.weight", "cells.0.preprocess0.conv_1.weight"] {
            assert!(net.params().names.contains(&n.to_string()), "{n}");
        }
        // Three stride-2 convolutions: 32 px reach the cells at 4 (s0 at 8); gradients reach α.
        let small = DartsConfig { channels: 4, layers: 3, num_classes: 5, ..cfg };
        for spec in [SpaceSpec::darts(), SpaceSpec::pc_darts()] {
            let net = DartsSupernet::new(small, spec, Kind::Double);
            let alphas = leaf_alphas(net.spec());
            let x = Tensor::randn([2, 3, 32, 32], (Kind::Double, tch::Device::Cpu));
            let y = net.forward(&x, &net.spec().mixing(&alphas), BnMode::Train);
            assert_eq!(y.size(), [2, 5]);
            y.sum(Kind::Double).backward();
            assert!(alphas[0].grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
        }
    }

    #[test]
    fn nb1shot1_parameter_counts_match_the_reference() {
        // spaces.md §4.3 / §8: C=16, 9 cells.
        for (space, count) in [(1, 1_101_402), (2, 1_101_402), (3, 1_509_594)] {
            let net = Nb1Shot1Supernet::new(
                Nb1Shot1Config { space, channels: 16, layers: 9, num_classes: 10, partial: 1 },
                Kind::Float,
            );
            assert_eq!(net.params().count(), count, "space {space}");
            // PC-DARTS on it (spaces.md §2.1, the 1Shot1 port): each choice block's conv 3×3
            // and 1×1 (bias-free) with their affine BatchNorms shrink from c to c/4 channels,
            // 10c² + 4c → 10(c/4)² + 4(c/4), i.e. by 10·(15/16)c² + 3c per block; cells 0–2
            // at c = 16, 3–5 at 32, 6–8 at 64.
            let steps = crate::space::Nb1Shot1Layout::space(space).steps;
            let saved: usize = [16usize, 32, 64].iter().map(|&c| 3 * steps * (150 * c * c / 16 + 3 * c)).sum();
            let pc = Nb1Shot1Supernet::new(
                Nb1Shot1Config { space, channels: 16, layers: 9, num_classes: 10, partial: 4 },
                Kind::Float,
            );
            assert_eq!(pc.params().count(), count - saved, "PC-DARTS, space {space}");
            assert_eq!(pc.spec().name, format!("pc-nb1shot1-s{space}"));
        }
    }

    /// PC-DARTS and 1Shot1 forwards: shapes, and gradients reaching every α entry (besides
    /// `none`, which softmax couples to its row anyway) and every β.
    #[test]
    fn pc_darts_and_nb1shot1_forward() {
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Double, tch::Device::Cpu));
        let pc =
            DartsConfig { channels: 8, layers: 3, num_classes: 5, stem: crate::config::StemKind::Cifar, partial: 4 };
        let nb = Nb1Shot1Config { space: 2, channels: 4, layers: 3, num_classes: 5, partial: 1 };
        let pc_nb = Nb1Shot1Config { partial: 4, ..nb };
        let nets: Vec<Box<dyn Supernet>> = vec![
            Box::new(DartsSupernet::new(pc, SpaceSpec::pc_darts(), Kind::Double)),
            Box::new(Nb1Shot1Supernet::new(nb, Kind::Double)),
            Box::new(Nb1Shot1Supernet::new(pc_nb, Kind::Double)),
        ];
        for net in nets {
            let alphas = leaf_alphas(net.spec());
            let y = net.forward(&x, &net.spec().mixing(&alphas), BnMode::Train);
            assert_eq!(y.size(), [2, 5]);
            y.sum(Kind::Double).backward();
            for (a, t) in alphas.iter().zip(net.spec().cells.iter()) {
                let g = a.grad();
                let none = t.none_index();
                for e in 0..t.edges.len() as i64 {
                    for o in 0..t.ops.len() as i64 {
                        if Some(o as usize) != none {
                            assert!(g.double_value(&[e, o]).abs() > 0.0, "{} ({e}, {o})", t.name);
                        }
                    }
                }
            }
            // β gets gradient through both the ops and the bypass.
            for b in alphas.iter().skip(net.spec().cells.len()) {
                assert!(b.grad().abs().min().double_value(&[]) > 0.0);
            }
        }
    }

    #[test]
    fn darts_names_shapes_and_forward() {
        let cfg =
            DartsConfig { channels: 4, layers: 3, num_classes: 5, stem: crate::config::StemKind::Cifar, partial: 4 };
        let net = DartsSupernet::new(cfg, SpaceSpec::darts(), Kind::Float);
        let names = &net.params().names;
        assert_eq!(names[0], "stem.0.weight");
        for n in [
            "cells.0.preprocess0.op.1.weight",
            "cells.0._ops.0._ops.4.op.1.weight",   // sep_conv_3x3 depthwise
            "cells.0._ops.13._ops.7.op.2.weight",  // dil_conv_5x5 pointwise
            "cells.1._ops.0._ops.3.conv_1.weight", // reduction: skip is FactorizedReduce
            "cells.2.preprocess0.conv_2.weight",   // after a reduction
        ] {
            assert!(names.contains(&n.to_string()), "{n}");
        }
        assert!(net.params().buffer_names.contains(&"cells.0._ops.2._ops.1.1.running_mean".to_string()));
        let alphas: Vec<Tensor> = net
            .spec()
            .alpha_shapes()
            .iter()
            .map(|s| Tensor::zeros(s.as_slice(), (Kind::Float, tch::Device::Cpu)))
            .collect();
        assert_eq!(alphas.len(), 2);
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let y = net.forward(&x, &net.spec().mixing(&alphas), BnMode::Train);
        assert_eq!(y.size(), [2, 5]);
    }

    #[test]
    fn nb201_names_follow_autodl_state_dict() {
        let net = nb201(10);
        let names = &net.params().names;
        assert_eq!(names[0], "stem.0.weight");
        assert!(names.contains(&"cells.0.edges.1<-0.3.op.1.weight".to_string()));
        assert!(names.contains(&"cells.5.conv_a.op.2.weight".to_string()));
        assert!(names.contains(&"cells.11.downsample.1.weight".to_string()));
        assert_eq!(names.last().unwrap(), "classifier.bias");
        assert!(net.params().buffer_names.contains(&"cells.0.edges.3<-2.2.op.2.running_mean".to_string()));
    }

    #[test]
    fn pytorch_initialisation_bounds() {
        // Conv U(±1/sqrt(fan_in)): the stem has fan_in 3·3·3 = 27, bound 0.19245.
        let net = nb201(10);
        let stem = &net.params().tensors[0];
        let max = stem.abs().max().double_value(&[]);
        assert!(max <= 1.0 / 27f64.sqrt() + 1e-7 && max > 0.15, "{max}");
        // BatchNorm weight is one (tch's default would be U(0, 1)).
        let bn_w = &net.params().tensors[1];
        assert_eq!(bn_w.min().double_value(&[]), 1.0);
    }

    #[test]
    fn forward_shapes_and_mixing_gradients() {
        let net = Nb201Supernet::new(Nb201Config { channels: 4, cells_per_stage: 1, num_classes: 3 }, Kind::Float);
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let w = Tensor::full([6, 5], 0.2, (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let y = net.forward(&x, &[w.shallow_clone()], BnMode::BatchStats);
        assert_eq!(y.size(), vec![2, 3]);
        y.sum(Kind::Float).backward();
        let g = w.grad();
        // The `none` column gets an exactly-zero gradient; every other op a non-zero one.
        assert_eq!(g.select(1, 0).abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert!(g.narrow(1, 1, 4).abs().min().double_value(&[]) > 0.0);
    }
}
