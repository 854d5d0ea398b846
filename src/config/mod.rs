//! Run configuration: a TOML file, `--set key=value` overrides, typed and validated before
//! anything is written.
//!
//! Every section rejects unknown keys; errors name the file (or `--set`) and the dotted key.
//! The resolved config is written to each run directory as `config.toml`. This module holds
//! the types and their defaults; [`load`] reads, merges and checks them.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The embedded default: a small synthetic search that finishes in minutes on two cores.
pub const DEMO_TOML: &str = include_str!("../../configs/demo.toml");

mod choices;
mod defaults;
mod load;

pub use crate::control::FaultAction;
pub use crate::device::DeviceChoice;
pub use choices::*;
use defaults::*;

pub use crate::comm::CommKind;

/// A number of images: a positive count, `"all"`, or `"none"` (`data.test_size`). A bare 0 is
/// refused: it meant "all" for one key and "none" for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    All,
    None,
    N(usize),
}

impl Count {
    /// How many, out of `all` available.
    pub fn of(self, all: usize) -> usize {
        match self {
            Count::All => all,
            Count::None => 0,
            Count::N(n) => n,
        }
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::All => f.write_str("all"),
            Count::None => f.write_str("none"),
            Count::N(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Count {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Count::N(n) => s.serialize_u64(*n as u64),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of images, \"all\" or \"none\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Count, E> {
                match v {
                    0 => Err(E::custom("0 is ambiguous: write \"all\" or \"none\"")),
                    v if v < 0 => Err(E::custom(format!("must be a positive number, \"all\" or \"none\" (got {v})"))),
                    v => Ok(Count::N(v as usize)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Count, E> {
                self.visit_i64(v.min(i64::MAX as u64) as i64)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Count, E> {
                match v {
                    "all" => Ok(Count::All),
                    "none" => Ok(Count::None),
                    other => Err(E::custom(format!("expected a number, \"all\" or \"none\" (got {other:?})"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seed of everything: initialisation, data order, synthetic data.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Collective backend.
    #[serde(default = "d_comm")]
    pub comm: CommKind,
    /// `auto` (this rank's GPU when libtorch sees one, else the CPU), `cpu` or `cuda` (one rank
    /// per GPU, the GPU of the rank's node-local index).
    #[serde(default = "d_device")]
    pub device: DeviceChoice,
    /// Intra-op threads of libtorch per rank; 0 = libtorch's default.
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub space: SpaceConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub search: SearchConfig,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub select: SelectConfig,
    /// Training a selected architecture from scratch (`dartsif-dist train`).
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Fault injection for tests (never set in production configs).
    #[serde(default)]
    pub fault: FaultConfig,
    /// The `[run]` record that a run directory's `config.toml` carries (versions, world size);
    /// accepted and ignored on input, so that file can be passed back as `--config`.
    #[serde(default, skip_serializing)]
    pub run: Option<toml::Table>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpaceConfig {
    /// Search space: `nb201`, `darts`, `darts-s5` (DARTS without `none`, DARTS-PT's s5),
    /// `pc-darts`, `nb1shot1-s1`, `nb1shot1-s2`, `nb1shot1-s3` or PC-DARTS on those,
    /// `pc-nb1shot1-s1` … `-s3`.
    #[serde(default = "d_space")]
    pub name: String,
    /// Initial channels C.
    #[serde(default = "d_channels")]
    pub channels: usize,
    /// Search cells per stage N (NB201: 5).
    #[serde(default = "d_cells")]
    pub cells_per_stage: usize,
    /// DARTS family and 1Shot1: cells in the network (0 = the reference's: 8 for DARTS, 9 for
    /// 1Shot1), reductions (1Shot1: down-sampling) at layers/3 and 2·layers/3.
    #[serde(default)]
    pub layers: usize,
    /// DARTS family: `cifar` (one 3×3 convolution) or `imagenet` (three stride-2 ones, 224 px
    /// to 28, as PC-DARTS searches ImageNet).
    #[serde(default = "d_stem", skip_serializing_if = "StemKind::is_cifar")]
    pub stem: StemKind,
    /// PC-DARTS (`pc-darts`): K, the ops see 1/K of the channels (0 = the reference's CIFAR
    /// K = 4; its ImageNet search uses 2).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub partial: usize,
}

impl SpaceConfig {
    /// PC-DARTS's K (1 for other spaces).
    pub fn partial_k(&self) -> i64 {
        match (self.name.starts_with("pc-"), self.partial) {
            (false, _) => 1,
            (true, 0) => 4,
            (true, k) => k as i64,
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_d_tenth(x: &f64) -> bool {
    *x == defaults::d_tenth()
}

fn is_d_arch_fraction(x: &f64) -> bool {
    *x == defaults::d_arch_fraction()
}

fn all_zero(x: &[f64; 4]) -> bool {
    *x == [0.0; 4]
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset: `synthetic` (built in, deterministic from the seed), `cifar10`, `cifar100`,
    /// `imagenet16-120`, `imagenet16` (all 1000 classes) or `imagenet` (ILSVRC folders).
    #[serde(default = "d_dataset")]
    pub dataset: DatasetKind,
    /// Directory of the dataset files (real datasets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// CIFAR file format: `auto`, `binary` (`*.bin`) or `python` (pickled batches).
    #[serde(default = "d_format")]
    pub format: CifarFormat,
    /// Normalisation constants: `nb201` (AutoDL's) or `darts` (DARTS/darts-pt's).
    #[serde(default = "d_normalize")]
    pub normalize: Normalize,
    /// Number of classes (0 = from the data; synthetic: 10). Real datasets must agree.
    #[serde(default)]
    pub num_classes: usize,
    /// Image side in pixels (0 = the data's own; synthetic: 32; ImageNet folders: the crop
    /// size, 224).
    #[serde(default)]
    pub image_size: usize,
    /// Training images used: a number or `"all"` (synthetic: 50,000). With `split = "halves"`
    /// the first half trains θ and the second half α (DARTS's 50/50, in file order).
    #[serde(default = "d_all")]
    pub train_size: Count,
    /// Images of the test set evaluated after the search (the first ones): a number, `"all"`
    /// (synthetic: 10,000) or `"none"`.
    #[serde(default = "d_none")]
    pub test_size: Count,
    /// `halves` (DARTS) or `file` (NAS-Bench-201's split files).
    #[serde(default = "d_split")]
    pub split: SplitKind,
    /// The split file (`cifar-split.txt`, `cifar100-test-split.txt`, …) for `split = "file"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_file: Option<PathBuf>,
    /// `split = "per-class"`: the fraction of each class's training images that trains θ.
    #[serde(default = "d_tenth", skip_serializing_if = "is_d_tenth")]
    pub weights_fraction: f64,
    /// `split = "per-class"`: the fraction of each class's training images that trains α.
    #[serde(default = "d_arch_fraction", skip_serializing_if = "is_d_arch_fraction")]
    pub arch_fraction: f64,
    /// Key of the θ indices in the split file; a `test:` prefix indexes the test set, and
    /// `all` means the whole training set (NB201's CIFAR-100 and ImageNet16-120 searches).
    #[serde(default = "d_weights_split")]
    pub weights_split: String,
    /// Key of the α indices (NB201: `valid` for CIFAR-10, `test:xvalid` for CIFAR-100 and
    /// ImageNet16-120).
    #[serde(default = "d_arch_split")]
    pub arch_split: String,
    /// Training augmentation of θ and α batches (flip + padded random crop; ImageNet:
    /// random-resized crop + flip), drawn from (seed, epoch, index).
    #[serde(default = "d_true")]
    pub augment: bool,
    /// Cutout square side for augmented batches (0 = off; DARTS's final training uses 16).
    #[serde(default)]
    pub cutout: usize,
    /// ImageNet folders: keep this many classes, chosen with the seed (0 = all).
    #[serde(default)]
    pub subset_classes: usize,
    /// ImageNet folders: keep this fraction of each class's training images (PC-DARTS: 0.1).
    #[serde(default = "d_one")]
    pub subset_fraction: f64,
    /// ImageNet folders: replace an undecodable JPEG by the next one and count it, instead of
    /// stopping with an error.
    #[serde(default)]
    pub skip_bad_images: bool,
    /// ImageNet folders: torchvision's `ColorJitter` of training crops, `[brightness, contrast,
    /// saturation, hue]` (DARTS's ImageNet training: `[0.4, 0.4, 0.4, 0.2]`); zeros = off.
    #[serde(default, skip_serializing_if = "all_zero")]
    pub color_jitter: [f64; 4],
    /// Batches decoded ahead by a background thread (0 = decode in the training loop; at most 64).
    #[serde(default = "d_prefetch")]
    pub prefetch: usize,
    /// Synthetic data: standard deviation of the pixel noise added to the class pattern.
    #[serde(default = "d_noise")]
    pub noise: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Search strategy: `darts-1st` (first-order DARTS), `darts-2nd` (second order: the α
    /// gradient through one unrolled θ step, its mixed term by DARTS's finite difference),
    /// `darts-2nd-exact` (the same with the mixed term by double backward), `gdas`, `snas`,
    /// `setn`, `random-nas` or `random` (see [`Strategy`]).
    #[serde(default = "d_strategy")]
    pub strategy: Strategy,
    /// α is updated from this epoch on (PC-DARTS: 15); before it only θ trains.
    #[serde(default)]
    pub arch_start_epoch: usize,
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Global batch size (split evenly over ranks).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// BatchNorm statistics and forward passes use micro-batches of this size; each rank's
    /// shard (batch_size / ranks) must be a multiple of it. 0 = the whole shard, as in DDP.
    /// Set it to make results independent of the number of ranks.
    #[serde(default)]
    pub micro_batch: usize,
    /// `alpha-first` (DARTS, darts-pt) or `weights-first` (NB201's AutoDL scripts).
    #[serde(default = "d_order")]
    pub order: StepOrder,
    /// Steps per epoch; 0 = one pass over the θ half (drop-last).
    #[serde(default)]
    pub steps_per_epoch: usize,
    /// GDAS and SNAS: the Gumbel temperature of epoch e is
    /// `tau_max − (tau_max − tau_min) · e / (epochs − 1)` (GDAS's linear schedule, AutoDL
    /// `search-cell.py`: 10 → 0.1).
    #[serde(default = "d_tau_max")]
    pub tau_max: f64,
    #[serde(default = "d_tau_min")]
    pub tau_min: f64,
    /// SETN and random-nas: architectures scored on validation batches at the end of the
    /// search (one batch each; AutoDL's `select_num` 100).
    #[serde(default = "d_candidates")]
    pub candidates: usize,
    #[serde(default)]
    pub weights: SgdConfig,
    #[serde(default)]
    pub arch: AdamConfig,
    #[serde(default)]
    pub enas: EnasConfig,
    /// `bf16`: convolutions and linear layers of first-order steps in bfloat16, the rest in f32
    /// (second-order α steps, evaluations and influence too; [`crate::ops::precision`]).
    #[serde(default = "d_search_precision")]
    pub precision: SearchPrecision,
}

/// ENAS's controller and its REINFORCE training (`search.enas`; defaults: AutoDL's NB201
/// `search-cell.py` and `search_model_enas_utils.py`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnasConfig {
    /// Controller updates after each epoch (`train_steps` 50).
    #[serde(default = "d_enas_steps")]
    pub controller_steps: usize,
    /// Samples per update, each scored on one validation batch (`num_aggregate` 20).
    #[serde(default = "d_enas_aggregate")]
    pub aggregate: usize,
    /// Adam: lr 1e-3, eps 1e-3, betas (0.5, 0.999).
    #[serde(default = "d_enas_lr")]
    pub lr: f64,
    #[serde(default = "d_enas_eps")]
    pub eps: f64,
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    /// The reward is accuracy + entropy_weight · entropy (1e-4).
    #[serde(default = "d_enas_entropy")]
    pub entropy_weight: f64,
    /// The baseline moves toward each reward by (1 − decay) (0.99).
    #[serde(default = "d_enas_decay")]
    pub baseline_decay: f64,
    /// The controller's gradient norm is clipped at this (5).
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
    /// Logits are `tanh_constant · tanh(z / temperature)` (2.5, 5).
    #[serde(default = "d_enas_tanh")]
    pub tanh_constant: f64,
    #[serde(default = "d_enas_temperature")]
    pub temperature: f64,
    /// LSTM size (32, two layers).
    #[serde(default = "d_enas_hidden")]
    pub hidden: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Cosine schedule floor, reached after the last epoch (stepped per epoch).
    #[serde(default = "d_lr_min")]
    pub lr_min: f64,
    #[serde(default = "d_momentum")]
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Clip the total gradient norm of θ to this value (0 = off).
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
    /// Per-epoch schedule: `cosine` (to `lr_min`), `exponential` (×`gamma` per epoch) or
    /// `linear` (PC-DARTS's ImageNet training).
    #[serde(default = "d_schedule", skip_serializing_if = "LrSchedule::is_cosine")]
    pub schedule: LrSchedule,
    /// `exponential`: the factor per epoch.
    #[serde(default = "d_lr_gamma", skip_serializing_if = "is_d_lr_gamma")]
    pub gamma: f64,
    /// Linear warm-up: epoch e < W uses the schedule's lr·(e+1)/W (PC-DARTS at batch 1024: 5).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_epochs: usize,
}

impl SgdConfig {
    /// Checks of the schedule keys under `prefix` (`search.weights`, `train.weights`).
    pub fn check_schedule(&self, source: &str, prefix: &str, epochs: usize) -> crate::error::Result<()> {
        let bad = |k: &str, msg: String| Err(crate::error::Error::config(source, format!("{prefix}.{k}"), msg));
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            return bad("gamma", format!("must be in (0, 1] (got {})", self.gamma));
        }
        if self.warmup_epochs > epochs {
            return bad("warmup_epochs", format!("{} exceeds the {epochs} epochs", self.warmup_epochs));
        }
        Ok(())
    }
}

fn is_d_lr_gamma(g: &f64) -> bool {
    *g == defaults::d_lr_gamma()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    #[serde(default = "d_alr")]
    pub lr: f64,
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    /// Coupled L2 (Adam's weight_decay, not AdamW).
    #[serde(default = "d_awd")]
    pub weight_decay: f64,
    /// α is initialised as `init_std · randn`.
    #[serde(default = "d_init_std")]
    pub init_std: f64,
}

/// Operation selection after the search (`dartsif-dist select`, or `after_search = true`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    /// `magnitude`, `drop`, `darts-if`, `darts-im`, or `darts-pt` (progressive decisions with
    /// fine-tuning, DARTS-PT; its rule is `pt_rule`).
    #[serde(default = "d_criterion")]
    pub criterion: Criterion,
    /// IHVP solver: `identity`, `neumann`, `sherman-morrison`, `woodbury`, `cg` or `exact`.
    #[serde(default = "d_ihvp")]
    pub ihvp: Ihvp,
    /// Number of fixed evaluation batches N (drawn from the validation half, no augmentation).
    #[serde(default = "d_n")]
    pub n: usize,
    /// Images per evaluation batch; 0 = search.batch_size.
    #[serde(default)]
    pub batch_size: usize,
    /// Images per autograd graph within an evaluation batch (0 = the whole batch): derivatives
    /// are summed over micro-batches, so peak memory follows this size. Needs `bn = "running"`,
    /// where the split is exact.
    #[serde(default)]
    pub micro_batch: usize,
    /// Neumann step γ (needs 0 < γ < 2/λmax).
    #[serde(default = "d_gamma")]
    pub gamma: f64,
    /// Neumann terms K.
    #[serde(default = "d_k")]
    pub k: usize,
    /// Fisher damping η (the supernet's weight decay in the paper).
    #[serde(default = "d_eta")]
    pub eta: f64,
    /// Damping λ added to the Hessian for `neumann`, `cg` and `exact` with `exact_matrix = "hessian"`.
    #[serde(default)]
    pub damping: f64,
    /// CG: relative residual tolerance and iteration limit.
    #[serde(default = "d_cg_tol")]
    pub cg_tol: f64,
    #[serde(default = "d_cg_iters")]
    pub cg_max_iter: usize,
    /// What `exact` forms densely: `fisher` (ηI + GGᵀ/N), `hessian` (H + λI) or `ggn`
    /// (Jᵀ H_z J + λI).
    #[serde(default = "d_exact_matrix")]
    pub exact_matrix: ExactMatrix,
    /// `auto` (kfac/ekfac: select.damping when > 0, else `mean-eigenvalue`; `fixed` for the
    /// others), `fixed`
    /// (select.damping, select.eta) or `mean-eigenvalue` (select.damping_fraction ×
    /// trace(C)/P of the solver's curvature C); the value used is in scores.json.
    #[serde(default = "d_damping_rule")]
    pub damping_rule: DampingRule,
    /// The fraction of the mean eigenvalue under `damping_rule = "mean-eigenvalue"`.
    #[serde(default = "d_damping_fraction")]
    pub damping_fraction: f64,
    /// The curvature of `neumann` and `cg`: `hessian` (H + λI) or `ggn` (the generalised
    /// Gauss–Newton matrix Jᵀ H_z J + λI, positive semi-definite).
    #[serde(default = "d_curvature")]
    pub curvature: Curvature,
    /// `exact` refuses models with more weights than this (a dense P×P matrix in f64).
    #[serde(default = "d_exact_max")]
    pub exact_max_params: usize,
    /// DARTS-IM sign: `paper` (I_M = −BᵀH⁻¹B1, argmax) or `negated`.
    #[serde(default = "d_im_sign")]
    pub im_sign: ImSign,
    /// Fisher samples: per-batch gradients (`batch`, as the paper) or per-sample (`sample`,
    /// needs `bn = "running"`).
    #[serde(default = "d_fisher_samples")]
    pub fisher_samples: FisherSamples,
    /// Labels of the Fisher's gradients (the Fisher solvers' samples, `kfac`/`ekfac`'s
    /// factors): `data` (the empirical Fisher) or `sampled` from the model's predictive
    /// distribution (the true Fisher by Monte Carlo; per-batch samples are then scaled by √m so
    /// that F estimates the per-sample Fisher, as a mean of m independent zero-mean gradients
    /// has covariance F/m).
    #[serde(default = "d_fisher_labels")]
    pub fisher_labels: FisherLabels,
    /// BatchNorm during selection: `batch` statistics (buffers untouched) or `running`.
    #[serde(default = "d_bn")]
    pub bn: BnStats,
    /// Second derivatives by `reverse-over-forward` (NB201 and DARTS-family supernets;
    /// NAS-Bench-1Shot1's falls back to double backward) or `double-backward`: the same values to
    /// rounding.
    #[serde(default = "d_products")]
    pub products: Products,
    /// `cells`: reverse over forward keeps one segment's graph (stem, cell, head) at a time,
    /// recomputing it in the backward — peak memory of a second derivative a fraction of
    /// `none`'s, one tangent forward more per product, the same values (NB201 and DARTS-family
    /// supernets; others keep the whole graph).
    #[serde(default = "d_recompute")]
    pub recompute: Recompute,
    /// Reproduce the authors' DARTS-IM computation: raw-logit leaf, central finite differences
    /// of radius 1e-2/‖v‖, per-batch chains (neumann, identity), freshly drawn batches per pass
    /// (sherman-morrison, woodbury).
    #[serde(default)]
    pub faithful: bool,
    /// Multiplies the empirical Fisher's data term: F = ηI + s·(1/N)Σ g gᵀ. Per-batch gradients
    /// make a Fisher about m (the batch size) times too small (paper.md §10 A6); s = m corrects
    /// it. It changes the balance of DARTS-IF's two terms, not DARTS-IM's ranking.
    #[serde(default = "d_one")]
    pub fisher_scale: f64,
    /// DARTS-IF: use ĝ_c − g₀ (g₀ = ∇θL at the unperturbed α) in the quadratic term, since
    /// the validation gradient does not vanish at θ* (paper.md §10 A5). Off: the poster's formula.
    #[serde(default)]
    pub if_center_grad: bool,
    /// Where H (the Fisher) and B come from: `val` (the reference code: the α half) or `train`
    /// (the θ half, as the bi-level influence argument has it; paper.md §10 A4). DARTS-IF's
    /// loss changes stay on the validation batches.
    #[serde(default = "d_hess_data")]
    pub hess_data: HessData,
    /// Arithmetic of the selection: `f32` (as trained) or `f64` (the supernet is converted;
    /// exact to ~1e-12 on small models).
    #[serde(default = "d_precision")]
    pub precision: Precision,
    /// Run the selection right after `search`, into the run directory's `select/`.
    #[serde(default)]
    pub after_search: bool,
    /// Track the criterion during `search`: every this many epochs, score the current supernet
    /// and record the genotype it selects in `tracking.jsonl` (0 = off).
    #[serde(default)]
    pub track_every: usize,
    /// With `track_every` and DARTS-IM: track for each of these N at once (the seed paper's
    /// Fig. 7), the work shared as in `ablate`; empty = `select.n` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub track_n: Vec<usize>,
    /// A benchmark table (`launch/nb201-table`: arch → accuracies) to look every selected
    /// architecture up in; its row goes into scores.json / report.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark_table: Option<PathBuf>,
    /// `darts-pt`: the per-edge decision rule: `accuracy` (DARTS-PT: keep the op whose masking
    /// lowers validation accuracy most), `loss`, `darts-if` or `darts-im`.
    #[serde(default = "d_pt_rule")]
    pub pt_rule: PtRule,
    /// `darts-pt`: tuning epochs between decisions (DARTS-PT: 5).
    #[serde(default = "d_pt_interval")]
    pub pt_interval: usize,
    /// `darts-pt`: θ learning rate of the tuning (0 = the search's / 10, as DARTS-PT).
    #[serde(default)]
    pub pt_lr: f64,
    /// `darts-pt`: `constant` (DARTS-PT's NB201 version), `cosine` to the search's lr_min (its
    /// DARTS version), or `auto` (constant for NB201, cosine otherwise).
    #[serde(default = "d_pt_schedule")]
    pub pt_schedule: PtSchedule,
}

/// `dartsif-dist train`: DARTS's evaluation protocol by default (quark0/darts `train.py`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "d_train_epochs")]
    pub epochs: usize,
    /// Global batch size (split evenly over ranks).
    #[serde(default = "d_train_batch")]
    pub batch_size: usize,
    /// BatchNorm micro-batch (0 = each rank's whole shard).
    #[serde(default)]
    pub micro_batch: usize,
    /// Initial channels (DARTS CIFAR: 36; NB201: 16).
    #[serde(default = "d_train_channels")]
    pub channels: usize,
    /// DARTS: cells (20); NB201: cells per stage (5).
    #[serde(default = "d_train_layers")]
    pub layers: usize,
    /// DARTS: the auxiliary head after cell 2·layers/3, its loss weighted by `auxiliary_weight`.
    #[serde(default = "d_true")]
    pub auxiliary: bool,
    /// DARTS: `cifar` (`NetworkCIFAR`) or `imagenet` (`NetworkImageNet`'s two-stage stem and its
    /// auxiliary head).
    #[serde(default = "d_stem", skip_serializing_if = "StemKind::is_cifar")]
    pub stem: StemKind,
    #[serde(default = "d_aux_weight")]
    pub auxiliary_weight: f64,
    /// Label smoothing ε of the training loss: targets (1 − ε)·one-hot + ε/classes (DARTS's and
    /// PC-DARTS's ImageNet training: 0.1); evaluation uses plain cross-entropy.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub label_smoothing: f64,
    /// Drop-path probability at the last epoch, ramped linearly from 0 (DARTS: 0.2).
    #[serde(default = "d_drop_path")]
    pub drop_path: f64,
    /// SGD (DARTS: lr 0.025 → 0 cosine, momentum 0.9, wd 3e-4, grad-clip 5).
    #[serde(default = "d_train_sgd")]
    pub weights: SgdConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Write a step line to metrics.jsonl every this many steps (epoch lines always).
    #[serde(default = "d_log_every")]
    pub log_every: usize,
    /// Show a progress bar on rank 0 when stderr is a terminal.
    #[serde(default = "d_true")]
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write checkpoints (`DIR/checkpoints/step-N/`) at every epoch end and on SIGTERM/SIGUSR1.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// Also every this many steps (0 = epoch ends only).
    #[serde(default)]
    pub every_steps: usize,
    /// Keep the newest this many checkpoints.
    #[serde(default = "d_keep")]
    pub keep: usize,
    /// Selection (`drop`, `darts-if`): a progress checkpoint every this many rounds of the
    /// candidate loop (one candidate per rank each; 0 = only on SIGTERM/SIGUSR1).
    #[serde(default)]
    pub select_every: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// `none`, `kill` (SIGKILL itself), `signal` (SIGTERM itself) or `nan` (a NaN loss).
    #[serde(default = "d_fault")]
    pub action: FaultAction,
    /// The rank that acts.
    #[serde(default)]
    pub rank: usize,
    /// `search` (at global step `at_step`), `controller` (ENAS: after the controller's update
    /// `at_step`, counted over epochs), `select` (at round `at_step` of the candidate
    /// loop of `drop`/`darts-if`), `train` (at global step `at_step`) or `experiment` (before
    /// the `at_step`-th work unit of `ablate` or architecture of `groundtruth`, counted over
    /// all groups).
    #[serde(default = "d_fault_phase")]
    pub phase: FaultPhase,
    /// The global search step or selection round (0-based) at which it acts.
    #[serde(default)]
    pub at_step: usize,
}

macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                toml::Value::Table(Default::default()).try_into().expect("all fields have defaults")
            }
        }
    )*};
}
default_from_serde!(
    Config,
    EnasConfig,
    TrainConfig,
    SpaceConfig,
    DataConfig,
    SearchConfig,
    SgdConfig,
    AdamConfig,
    OutputConfig,
    SelectConfig,
    CheckpointConfig,
    FaultConfig
);

impl DataConfig {
    /// The side of the images the network sees: `image_size`, or the dataset's own (ImageNet16:
    /// 16; ImageNet folders: the 224 px crop; CIFAR and synthetic: 32).
    pub fn side(&self) -> usize {
        match (self.image_size, self.dataset) {
            (0, DatasetKind::ImageNet16 | DatasetKind::ImageNet16_120) => 16,
            (0, DatasetKind::ImageNet) => 224,
            (0, _) => 32,
            (s, _) => s,
        }
    }
}
