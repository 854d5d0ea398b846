//! Final networks built from a genotype, for training from scratch: DARTS's `NetworkCIFAR`
//! (cells from the genotype, affine BatchNorm, drop-path, auxiliary head) and NAS-Bench-201's
//! discrete `TinyNetwork` (one op per edge). Parameter counts match the references (tests).

mod darts;
mod nb201;

pub use darts::DartsNetwork;
pub use nb201::Nb201Network;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::space::Genotype;
use crate::supernet::{BnMode, ParamSet};

/// A trainable network.
pub trait Network {
    fn params(&self) -> &ParamSet;
    /// Logits, and the auxiliary head's logits when the network has one and `bn` is training.
    /// `drop_path` is the probability of dropping each non-identity op's output per sample
    /// (DARTS's drop-path; 0 = off).
    fn forward(&self, x: &Tensor, bn: BnMode, drop_path: f64) -> (Tensor, Option<Tensor>);
}

/// Size of a final network.
#[derive(Debug, Clone, Copy)]
pub struct NetworkConfig {
    /// Initial channels (DARTS CIFAR: 36; NB201: 16).
    pub channels: i64,
    /// DARTS: cells (20); NB201: cells per stage (5).
    pub layers: usize,
    pub num_classes: i64,
    /// DARTS: the auxiliary head after cell 2·layers/3.
    pub auxiliary: bool,
    /// DARTS: `NetworkCIFAR`'s stem or `NetworkImageNet`'s.
    pub stem: crate::config::StemKind,
}

/// The network of `genotype` with PyTorch's initialisation (seed libtorch first), on `device`.
/// NAS-Bench-1Shot1 cells are NAS-Bench-101 cells, evaluated by looking them up in NAS-Bench-101
/// (spaces.md §4.5); building them is not offered.
pub fn build(genotype: &Genotype, cfg: NetworkConfig, kind: Kind, device: tch::Device) -> Result<Box<dyn Network>> {
    let construct =
        || -> Result<Box<dyn Network>> {
            Ok(match genotype {
                Genotype::Darts(g) => Box::new(DartsNetwork::new(g, cfg, kind)),
                Genotype::Nb201(_) if cfg.stem != crate::config::StemKind::Cifar => {
                    return Err(Error::config(
                        "config",
                        "train.stem",
                        "\"imagenet\" is a stem of DARTS networks, not NB201's",
                    ))
                }
                Genotype::Nb201(g) => Box::new(Nb201Network::new(g, cfg, kind)),
                Genotype::Nb1Shot1(_) => return Err(Error::config(
                    "genotype",
                    "genotype",
                    "a NAS-Bench-1Shot1 cell is evaluated in NAS-Bench-101 (nasbench.api.ModelSpec), not trained here",
                )),
            })
        };
    let sizes = format!("train.channels = {}, train.layers = {}", cfg.channels, cfg.layers);
    // Its size first, allocating nothing (training holds weights, gradients and momentum).
    let need = crate::ops::layers::count_only(|| construct().map(|n| n.params().bytes))?;
    crate::ops::layers::check_fits(need, "train.channels", &sizes)?;
    let net = construct()?;
    net.params().check_allocated("train.channels", &sizes)?;
    net.params().to_device(device);
    Ok(net)
}

/// Multiply-adds of one `side`×`side` image through `net` at evaluation (the auxiliary head,
/// used only in training, left out): convolutions and linear layers, as the papers' "FLOPs".
pub fn multiply_adds(net: &dyn Network, side: usize) -> f64 {
    let _g = tch::no_grad_guard();
    let p = &net.params().tensors[0];
    let x = Tensor::zeros([1, 3, side as i64, side as i64], (p.kind(), p.device()));
    crate::ops::layers::count_multiply_adds(|| net.forward(&x, BnMode::Eval, 0.0)).1
}

/// Weights outside the auxiliary head (the count the papers report).
pub fn weights_without_auxiliary(net: &dyn Network) -> usize {
    let ps = net.params();
    ps.names.iter().zip(&ps.tensors).filter(|(n, _)| !n.starts_with("auxiliary_head.")).map(|(_, t)| t.numel()).sum()
}

/// DARTS's `drop_path`: zero each sample's `x` with probability `p`, scaling the kept ones by
/// 1/(1−p).
pub(crate) fn drop_path(x: Tensor, p: f64) -> Tensor {
    if p <= 0.0 {
        return x;
    }
    let keep = 1.0 - p;
    let mask = Tensor::empty([x.size()[0], 1, 1, 1], (x.kind(), x.device())).bernoulli_float_(keep);
    x / keep * mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StemKind;
    use crate::space::{DartsGenotype, Nb201Genotype};

    const DARTS_V2: &str = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])";

    #[test]
    fn darts_v2_at_c36_l20_has_the_reference_size() {
        // spaces.md §1.7: 3,349,342 weights without the auxiliary head, plus 476,426 for it.
        let g = Genotype::Darts(DARTS_V2.parse::<DartsGenotype>().unwrap());
        let cfg = NetworkConfig { channels: 36, layers: 20, num_classes: 10, auxiliary: false, stem: StemKind::Cifar };
        assert_eq!(build(&g, cfg, Kind::Float, tch::Device::Cpu).unwrap().params().count(), 3_349_342);
        let net = build(&g, NetworkConfig { auxiliary: true, ..cfg }, Kind::Float, tch::Device::Cpu).unwrap();
        assert_eq!(net.params().count() - 3_349_342, 476_426);
        // model.py's state-dict names (reductions at cells 6 and 13).
        for n in [
            "stem.0.weight",
            "cells.0.preprocess0.op.1.weight",
            "cells.0._ops.0.op.1.weight",
            "cells.7.preprocess0.conv_1.weight",
            "cells.6.preprocess1.op.1.weight",
            "auxiliary_head.features.2.weight",
            "auxiliary_head.classifier.bias",
            "classifier.weight",
        ] {
            assert!(net.params().names.contains(&n.to_string()), "{n}");
        }
    }

    #[test]
    fn darts_v2_imagenet_at_c48_l14_has_the_reference_size_and_shapes() {
        // DARTS's ImageNet evaluation of DARTS_V2 (train_imagenet.py: C = 48, 14 layers, 1000
        // classes) logs "param size = 4.718752MB" (utils.count_parameters_in_MB leaves the
        // auxiliary head out); the same number by the layer formulas of model.py: stems
        // 3·24·9 + 48 + 24·48·9 + 96 + 48·48·9 + 96, cells (preprocessing, ops), classifier
        // 768·1000 + 1000. The auxiliary head (ReLU, pool, 1×1 conv to 128, BN, 2×2 conv to
        // 768 without BN, linear) on the 768 channels after cell 9: 98,304 + 256 + 393,216 +
        // 769,000 = 1,260,776.
        let g = Genotype::Darts(DARTS_V2.parse::<DartsGenotype>().unwrap());
        let cfg =
            NetworkConfig { channels: 48, layers: 14, num_classes: 1000, auxiliary: false, stem: StemKind::ImageNet };
        assert_eq!(build(&g, cfg, Kind::Float, tch::Device::Cpu).unwrap().params().count(), 4_718_752);
        let net = build(&g, NetworkConfig { auxiliary: true, ..cfg }, Kind::Float, tch::Device::Cpu).unwrap();
        assert_eq!(net.params().count() - 4_718_752, 1_260_776);
        assert_eq!(weights_without_auxiliary(net.as_ref()), 4_718_752);
        // Multiply-adds of the convolutions and the classifier on one 224 px image, summed layer
        // by layer over model.py's output sizes (stems 112/56/28 px, cells 28, 14 after cell 4,
        // 7 after cell 9): 529,911,552. The DARTS paper reports 574 M without its convention
        // (BatchNorm, ReLU, pooling and the node sums add only 12 M more); both are under the
        // mobile setting's 600 M.
        assert_eq!(multiply_adds(net.as_ref(), 224), 529_911_552.0);
        for n in
            ["stem0.0.weight", "stem0.1.weight", "stem0.3.weight", "stem0.4.bias", "stem1.1.weight", "stem1.2.weight"]
        {
            assert!(net.params().names.contains(&n.to_string()), "{n}");
        }
        // The first cell's s0 comes from stem0 at twice s1's resolution: a FactorizedReduce.
        assert!(net.params().names.contains(&"cells.0.preprocess0.conv_1.weight".to_string()));
        assert!(!net.params().names.iter().any(|n| n.starts_with("auxiliary_head.features.6")));
        // A small one on 224 px: the stem gives 28 px, the cells 14 and 7, the auxiliary head
        // (on the 7×7 output of cell 2·layers/3, a reduction) one value per class.
        let cfg = NetworkConfig { channels: 8, layers: 5, num_classes: 7, auxiliary: true, stem: StemKind::ImageNet };
        let net = build(&g, cfg, Kind::Float, tch::Device::Cpu).unwrap();
        let x = Tensor::randn([2, 3, 224, 224], (Kind::Float, tch::Device::Cpu));
        let (logits, aux) = net.forward(&x, BnMode::Train, 0.0);
        assert_eq!(logits.size(), [2, 7]);
        assert_eq!(aux.expect("training with the head").size(), [2, 7]);
        // An NB201 cell has no ImageNet stem.
        let nb: Nb201Genotype =
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
                .parse()
                .unwrap();
        let e = build(&Genotype::Nb201(nb), cfg, Kind::Float, tch::Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("train.stem"), "{e}");
    }

    #[test]
    fn nb201_all_conv3x3_has_the_reference_size() {
        // spaces.md §3: the discrete NB201 network with every edge nor_conv_3x3, C=16, N=5.
        let g = Genotype::Nb201(Nb201Genotype { ops: vec![3; 6] });
        let cfg = NetworkConfig { channels: 16, layers: 5, num_classes: 10, auxiliary: false, stem: StemKind::Cifar };
        assert_eq!(build(&g, cfg, Kind::Float, tch::Device::Cpu).unwrap().params().count(), 1_531_546);
    }

    #[test]
    fn forward_shapes_aux_head_and_drop_path() {
        tch::manual_seed(0);
        let g = Genotype::Darts(DARTS_V2.parse::<DartsGenotype>().unwrap());
        let net = build(
            &g,
            NetworkConfig { channels: 4, layers: 5, num_classes: 7, auxiliary: true, stem: StemKind::Cifar },
            Kind::Float,
            tch::Device::Cpu,
        )
        .unwrap();
        let x = Tensor::randn([3, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
        let (y, aux) = net.forward(&x, BnMode::Train, 0.2);
        assert_eq!(y.size(), [3, 7]);
        assert_eq!(aux.expect("aux in training").size(), [3, 7]);
        let (_, aux) = net.forward(&x, BnMode::Eval, 0.0);
        assert!(aux.is_none());
        // drop_path keeps the mean: E[mask/keep] = 1.
        let ones = Tensor::ones([20000, 1, 1, 1], (Kind::Float, tch::Device::Cpu));
        let m = drop_path(ones, 0.2).mean(Kind::Double).double_value(&[]);
        assert!((m - 1.0).abs() < 0.03, "{m}");
        let g = Genotype::Nb201(Nb201Genotype { ops: vec![3, 1, 4, 2, 0, 3] });
        let net = build(
            &g,
            NetworkConfig { channels: 4, layers: 1, num_classes: 7, auxiliary: false, stem: StemKind::Cifar },
            Kind::Float,
            tch::Device::Cpu,
        )
        .unwrap();
        assert_eq!(net.forward(&x, BnMode::Train, 0.0).0.size(), [3, 7]);
    }
}
