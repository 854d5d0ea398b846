//! Supernets: networks whose every searchable choice is a weighted mixture, with the mixing
//! weights passed in from outside so that criteria can differentiate with respect to them.

pub(crate) mod darts;
pub mod layers;
pub(crate) mod nb201;

pub use darts::{DartsConfig, DartsSupernet};
pub use layers::{BnMode, ParamSet};
pub use nb201::{Nb201Config, Nb201Supernet};

use tch::{Kind, Tensor};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::space::SpaceSpec;

/// A weight-sharing supernet.
pub trait Supernet {
    /// Its search space: ops, cell types, edges.
    fn spec(&self) -> &SpaceSpec;
    /// Trainable weights θ and BatchNorm buffers.
    fn params(&self) -> &ParamSet;
    /// Logits for images `x`, mixing ops with `weights` (one `[edges, ops]` table per cell type,
    /// rows summing to one for softmax mixing; any values are allowed, e.g. an op zeroed).
    fn forward(&self, x: &Tensor, weights: &[Tensor], bn: BnMode) -> Tensor;
}

/// Build the supernet named in the config, initialised from `seed`.
pub fn build(cfg: &Config, seed: u64, kind: Kind) -> Result<Box<dyn Supernet>> {
    tch::manual_seed(seed as i64);
    match cfg.space.name.as_str() {
        "nb201" => Ok(Box::new(Nb201Supernet::new(
            Nb201Config {
                channels: cfg.space.channels as i64,
                cells_per_stage: cfg.space.cells_per_stage,
                num_classes: cfg.data.num_classes as i64,
            },
            kind,
        ))),
        "darts" => Ok(Box::new(DartsSupernet::new(
            DartsConfig {
                channels: cfg.space.channels as i64,
                layers: cfg.space.layers,
                num_classes: cfg.data.num_classes as i64,
            },
            kind,
        ))),
        other => Err(Error::config("config", "space.name", format!("unknown search space {other:?}"))),
    }
}

/// Mixing weights `softmax(α)` row-wise, one table per cell type.
pub fn mixing_weights(alphas: &[Tensor]) -> Vec<Tensor> {
    alphas.iter().map(|a| a.softmax(-1, a.kind())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        DartsSupernet::new(DartsConfig { channels: 16, layers: 8, num_classes: classes }, Kind::Float)
    }

    #[test]
    fn darts_parameter_counts_match_the_reference() {
        // spaces.md §1.4: the DARTS search network at C=16, 8 cells.
        assert_eq!(darts(10).params().count(), 1_930_618);
        assert_eq!(darts(100).params().count(), 1_953_748);
    }

    #[test]
    fn darts_names_shapes_and_forward() {
        let net = DartsSupernet::new(DartsConfig { channels: 4, layers: 3, num_classes: 5 }, Kind::Float);
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
        let alphas: Vec<Tensor> =
            net.spec().alpha_shapes().iter().map(|s| Tensor::zeros(s, (Kind::Float, tch::Device::Cpu))).collect();
        assert_eq!(alphas.len(), 2);
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let y = net.forward(&x, &mixing_weights(&alphas), BnMode::Train);
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
