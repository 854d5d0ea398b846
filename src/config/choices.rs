//! The closed sets of values of the config, as enums (read and written by name).

use crate::choice::choice;

choice! {
    /// A dataset (`data.dataset`).
    pub enum DatasetKind {
        /// Built in, deterministic from the seed.
        Synthetic = "synthetic",
        Cifar10 = "cifar10",
        Cifar100 = "cifar100",
        /// NAS-Bench-201's 120-class ImageNet 16×16.
        ImageNet16_120 = "imagenet16-120",
        /// ImageNet 16×16, all 1000 classes.
        ImageNet16 = "imagenet16",
        /// ILSVRC folders.
        ImageNet = "imagenet",
    }
}

choice! {
    /// CIFAR file format (`data.format`).
    pub enum CifarFormat { Auto = "auto", Binary = "binary", Python = "python" }
}

choice! {
    /// Normalisation constants (`data.normalize`): AutoDL's or DARTS/darts-pt's.
    pub enum Normalize { Nb201 = "nb201", Darts = "darts" }
}

choice! {
    /// How the training images split into θ and α halves (`data.split`).
    pub enum SplitKind {
        /// DARTS: the first half trains θ, the second α.
        Halves = "halves",
        /// NAS-Bench-201's split files.
        File = "file",
        /// Class-balanced random subsets, `data.weights_fraction` of each class for θ and
        /// `data.arch_fraction` for α (PC-DARTS's ImageNet search: 0.1 and 0.025).
        PerClass = "per-class",
    }
}

choice! {
    /// The search strategy (`search.strategy`).
    pub enum Strategy {
        /// First-order DARTS.
        Darts1st = "darts-1st",
        /// Second order: the α gradient through one unrolled θ step, its mixed term by DARTS's
        /// finite difference.
        Darts2nd = "darts-2nd",
        /// Second order with the mixed term by double backward.
        Darts2ndExact = "darts-2nd-exact",
        /// GDAS (Dong & Yang 2019): one op per edge drawn by Gumbel-max from α at temperature
        /// τ, only that op computed, straight-through gradient to α; genotype = argmax α.
        Gdas = "gdas",
        /// SNAS (Xie et al. 2019): every op mixed with Gumbel-softmax (concrete) weights at
        /// temperature τ; genotype = argmax α.
        Snas = "snas",
        /// SETN (Dong & Yang 2019): θ on uniformly drawn single paths, α as first-order DARTS;
        /// the genotype is the best on validation batches of the `search.candidates` most
        /// probable architectures under softmax(α).
        Setn = "setn",
        /// Random search with weight sharing (Li & Talwalkar 2019): θ on uniformly drawn
        /// single paths, no α; the best of `search.candidates` random architectures on
        /// validation batches.
        RandomNas = "random-nas",
        /// ENAS (Pham et al. 2018, NB201's protocol): θ on single paths drawn by an LSTM
        /// controller, the controller trained by REINFORCE on validation accuracy after each
        /// epoch; the best of `search.candidates` controller samples on validation batches.
        Enas = "enas",
        /// The random baseline: one uniformly drawn architecture per seed, nothing trained.
        Random = "random",
    }
}

impl Strategy {
    /// Whether α is trained (by gradient).
    pub fn trains_alpha(self) -> bool {
        !matches!(self, Strategy::RandomNas | Strategy::Enas | Strategy::Random)
    }

    /// Second-order DARTS (the α gradient through an unrolled θ step).
    pub fn second_order(self) -> bool {
        matches!(self, Strategy::Darts2nd | Strategy::Darts2ndExact)
    }

    /// Whether the θ steps compute one op per edge (a sampled path).
    pub fn single_path(self) -> bool {
        matches!(self, Strategy::Gdas | Strategy::Setn | Strategy::RandomNas | Strategy::Enas)
    }

    /// Whether the genotype is the best of sampled candidates on validation batches.
    pub fn picks_candidates(self) -> bool {
        matches!(self, Strategy::Setn | Strategy::RandomNas | Strategy::Enas)
    }

    /// Whether a temperature τ is annealed (`search.tau_max` → `search.tau_min`).
    pub fn has_temperature(self) -> bool {
        matches!(self, Strategy::Gdas | Strategy::Snas)
    }
}

choice! {
    /// Which of the two updates of a search step comes first (`search.order`).
    pub enum StepOrder {
        /// DARTS, darts-pt.
        AlphaFirst = "alpha-first",
        /// NB201's AutoDL scripts.
        WeightsFirst = "weights-first",
    }
}

choice! {
    /// The selection criterion (`select.criterion`).
    pub enum Criterion {
        Magnitude = "magnitude",
        Drop = "drop",
        DartsIf = "darts-if",
        DartsIm = "darts-im",
        /// Progressive decisions with fine-tuning (DARTS-PT; its rule is `select.pt_rule`).
        DartsPt = "darts-pt",
    }
}

choice! {
    /// The IHVP solver (`select.ihvp`).
    pub enum Ihvp {
        Identity = "identity",
        Neumann = "neumann",
        ShermanMorrison = "sherman-morrison",
        Woodbury = "woodbury",
        Cg = "cg",
        Exact = "exact",
        /// K-FAC: per-layer Kronecker factors of the Fisher (module `influence::kfac`).
        Kfac = "kfac",
        /// EK-FAC: K-FAC's eigenbasis with eigenvalues re-fitted to per-sample gradients.
        Ekfac = "ekfac",
    }
}

choice! {
    /// What the `exact` solver forms densely (`select.exact_matrix`): ηI + GGᵀ/N (the empirical
    /// Fisher of the gradient samples), H + λI, or the generalised Gauss–Newton matrix + λI.
    pub enum ExactMatrix { Fisher = "fisher", Hessian = "hessian", Ggn = "ggn" }
}

choice! {
    /// How the damping of a solver is set (`select.damping_rule`).
    pub enum DampingRule {
        /// Each solver's own default: for `kfac` and `ekfac` (whose factors are singular off the
        /// samples' span) `select.damping` when set (> 0), else `mean-eigenvalue`; `fixed` for
        /// the others.
        Auto = "auto",
        /// `select.damping` (λ of neumann, cg, exact-hessian/ggn) and `select.eta` (η of the
        /// Fisher solvers) as given.
        Fixed = "fixed",
        /// `select.damping_fraction` × the curvature's mean eigenvalue trace(C)/P (Kronfluence's
        /// heuristic): for the empirical Fisher ‖G‖²_F/(N·P) from the gradient samples, for the
        /// Hessian or GGN a Hutchinson estimate with 8 Rademacher probes.
        MeanEigenvalue = "mean-eigenvalue",
    }
}

choice! {
    /// The curvature whose products the iterative solvers (`neumann`, `cg`) use
    /// (`select.curvature`).
    pub enum Curvature {
        /// The Hessian H of the loss in θ (indefinite away from a minimum).
        Hessian = "hessian",
        /// The generalised Gauss–Newton matrix Jᵀ H_z J, for softmax cross-entropy the true
        /// Fisher: positive semi-definite, right in every direction the logits move.
        Ggn = "ggn",
    }
}

choice! {
    /// DARTS-IM's sign (`select.im_sign`): the paper's I_M = −BᵀH⁻¹B1 (argmax) or negated.
    pub enum ImSign { Paper = "paper", Negated = "negated" }
}

choice! {
    /// The Fisher's samples (`select.fisher_samples`): per-batch or per-sample gradients.
    pub enum FisherSamples { Batch = "batch", Sample = "sample" }
}

choice! {
    /// The labels of the Fisher's gradients (`select.fisher_labels`): the data's (the empirical
    /// Fisher) or drawn from the model's predictive distribution (a Monte-Carlo estimate of the
    /// true Fisher, for softmax cross-entropy the Gauss–Newton matrix).
    pub enum FisherLabels { Data = "data", Sampled = "sampled" }
}

choice! {
    /// BatchNorm during a selection (`select.bn`): batch statistics or the running buffers.
    pub enum BnStats { Batch = "batch", Running = "running" }
}

choice! {
    /// How second derivatives (H u, B v, Bᵀu) are taken (`select.products`): reverse over
    /// forward (one tangent forward, one backward) where the supernet has a tangent forward, or
    /// double backward (a backward with its graph kept, then a backward through it) everywhere.
    pub enum Products { ReverseOverForward = "reverse-over-forward", DoubleBackward = "double-backward" }
}

choice! {
    /// What reverse over forward keeps of the tangent forward's graph (`select.recompute`): all
    /// of it, or one segment (stem, cell, head) at a time, recomputed in the backward.
    pub enum Recompute { None = "none", Cells = "cells" }
}

choice! {
    /// Where H and B come from (`select.hess_data`): the α half or the θ half.
    pub enum HessData { Val = "val", Train = "train" }
}

choice! {
    /// The arithmetic of a selection (`select.precision`).
    pub enum Precision { F32 = "f32", F64 = "f64" }
}

choice! {
    /// The arithmetic of the first-order search steps (`search.precision`): `bf16` computes
    /// convolutions and linear layers in bfloat16 (autocast's rule), the rest in f32.
    pub enum SearchPrecision { F32 = "f32", Bf16 = "bf16" }
}

choice! {
    /// DARTS-PT's per-edge decision rule (`select.pt_rule`).
    pub enum PtRule { Accuracy = "accuracy", Loss = "loss", DartsIf = "darts-if", DartsIm = "darts-im" }
}

impl PtRule {
    /// The influence criterion the rule scores with; `None` for the masking rules.
    pub fn criterion(self) -> Option<Criterion> {
        match self {
            PtRule::DartsIf => Some(Criterion::DartsIf),
            PtRule::DartsIm => Some(Criterion::DartsIm),
            PtRule::Accuracy | PtRule::Loss => None,
        }
    }
}

choice! {
    /// DARTS-PT's tuning schedule (`select.pt_schedule`).
    pub enum PtSchedule { Auto = "auto", Constant = "constant", Cosine = "cosine" }
}

choice! {
    /// Where a fault acts (`fault.phase`).
    pub enum FaultPhase { Search = "search", Controller = "controller", Select = "select", Train = "train", Experiment = "experiment" }
}

choice! {
    /// The stem of a DARTS-family network (`space.stem`, `train.stem`).
    pub enum StemKind {
        /// One stride-1 3×3 convolution (CIFAR, 32 px).
        Cifar = "cifar",
        /// Three stride-2 3×3 convolutions, 224 px to 28 (DARTS's `NetworkImageNet`,
        /// PC-DARTS's ImageNet search).
        ImageNet = "imagenet",
    }
}

impl StemKind {
    /// The default, left out of written configs (they stay as they were).
    pub fn is_cifar(&self) -> bool {
        *self == StemKind::Cifar
    }

    /// `image_size` (the side the network sees) suits this stem: the ImageNet stem and the two
    /// reductions halve it five times, and a FactorizedReduce needs an even side each time.
    pub fn check_image_size(&self, source: &str, key: &str, image_size: usize) -> crate::error::Result<()> {
        if *self == StemKind::ImageNet && (image_size == 0 || image_size % 32 != 0) {
            return Err(crate::error::Error::config(
                source,
                key,
                format!("\"imagenet\" needs images whose side is a multiple of 32 (data.image_size: {image_size} px)"),
            ));
        }
        Ok(())
    }
}

choice! {
    /// The per-epoch learning-rate schedule of SGD (`search.weights.schedule`,
    /// `train.weights.schedule`).
    pub enum LrSchedule {
        /// lr_min + (lr − lr_min)(1 + cos(πe/E))/2 (DARTS, PC-DARTS's search).
        Cosine = "cosine",
        /// lr·γ^e (DARTS's ImageNet training: γ = 0.97).
        Exponential = "exponential",
        /// PC-DARTS's ImageNet training (`adjust_lr`): lr·(E−5−e)/(E−5), then a gentler slope
        /// lr·(E−e)/(5(E−5)) over the last 5 epochs.
        Linear = "linear",
    }
}

impl LrSchedule {
    /// The default, left out of written configs.
    pub fn is_cosine(&self) -> bool {
        *self == LrSchedule::Cosine
    }
}
