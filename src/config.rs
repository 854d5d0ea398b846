//! Run configuration: a TOML file, `--set key=value` overrides, typed and validated before
//! anything is written.
//!
//! Every section rejects unknown keys; errors name the file (or `--set`) and the dotted key.
//! The resolved config is written to each run directory as `config.toml`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The embedded default: a small synthetic search that finishes in minutes on two cores.
pub const DEMO_TOML: &str = include_str!("../configs/demo.toml");

/// A range error of the final config is the file's when the file alone has it; otherwise the
/// first `--set` after which it appears is named (not the file it did not come from).
fn blame_override(path: Option<&Path>, text: &str, overrides: &[String], e: Error) -> Error {
    let Error::Config { key, .. } = &e else { return e };
    let fails_at = |n: usize| {
        Config::with_overrides(path, text, &overrides[..n])
            .is_some_and(|c| matches!(c.validate("-"), Err(Error::Config { key: k, .. }) if &k == key))
    };
    if overrides.is_empty() || fails_at(0) {
        return e;
    }
    match (1..=overrides.len()).find(|&n| fails_at(n)) {
        Some(n) => match e {
            Error::Config { key, msg, .. } => Error::config(format!("--set {}", overrides[n - 1]), key, msg),
            other => other,
        },
        None => e,
    }
}

/// Configs stored by earlier versions wrote 0 for "all" training and "none" test images.
fn legacy_counts(table: &mut toml::Table) {
    if let Some(toml::Value::Table(d)) = table.get_mut("data") {
        for (key, was) in [("train_size", "all"), ("test_size", "none")] {
            if d.get(key).and_then(toml::Value::as_integer) == Some(0) {
                d.insert(key.into(), toml::Value::String(was.into()));
            }
        }
    }
}

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

/// The embedded demo's `[data]` sizes (4,096 images of 16×16, …) belong to its synthetic task:
/// with `--set data.dataset=…` naming another dataset they are dropped, so that dataset's own
/// defaults apply (all its images at their own size), except the keys the user `--set` too.
fn scope_demo_data(table: &mut toml::Table, overrides: &[String]) {
    let Some(toml::Value::Table(data)) = table.get_mut("data") else { return };
    if data.get("dataset").and_then(|v| v.as_str()).is_none_or(|d| d == "synthetic") {
        return;
    }
    let demo: toml::Table = DEMO_TOML.parse().expect("the embedded demo config parses");
    let Some(toml::Value::Table(demo_data)) = demo.get("data") else { return };
    let set_by_user = |key: &str| {
        overrides.iter().any(|ov| ov.split_once('=').is_some_and(|(k, _)| k.trim() == format!("data.{key}")))
    };
    for key in demo_data.keys().filter(|k| *k != "dataset") {
        if !set_by_user(key) {
            data.remove(key);
        }
    }
}

pub use crate::comm::CommKind;

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
    pub device: String,
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
    /// `pc-darts`, `nb1shot1-s1`, `nb1shot1-s2` or `nb1shot1-s3`.
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset: `synthetic` (built in, deterministic from the seed), `cifar10`, `cifar100`,
    /// `imagenet16-120`, `imagenet16` (all 1000 classes) or `imagenet` (ILSVRC folders).
    #[serde(default = "d_dataset")]
    pub dataset: String,
    /// Directory of the dataset files (real datasets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// CIFAR file format: `auto`, `binary` (`*.bin`) or `python` (pickled batches).
    #[serde(default = "d_format")]
    pub format: String,
    /// Normalisation constants: `nb201` (AutoDL's) or `darts` (DARTS/darts-pt's).
    #[serde(default = "d_normalize")]
    pub normalize: String,
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
    pub split: String,
    /// The split file (`cifar-split.txt`, `cifar100-test-split.txt`, …) for `split = "file"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_file: Option<PathBuf>,
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
    /// gradient through one unrolled θ step, its mixed term by DARTS's finite difference) or
    /// `darts-2nd-exact` (the same with the mixed term by double backward).
    #[serde(default = "d_strategy")]
    pub strategy: String,
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
    pub order: String,
    /// Steps per epoch; 0 = one pass over the θ half (drop-last).
    #[serde(default)]
    pub steps_per_epoch: usize,
    #[serde(default)]
    pub weights: SgdConfig,
    #[serde(default)]
    pub arch: AdamConfig,
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
    pub criterion: String,
    /// IHVP solver: `identity`, `neumann`, `sherman-morrison`, `woodbury`, `cg` or `exact`.
    #[serde(default = "d_ihvp")]
    pub ihvp: String,
    /// Number of fixed evaluation batches N (drawn from the validation half, no augmentation).
    #[serde(default = "d_n")]
    pub n: usize,
    /// Images per evaluation batch; 0 = search.batch_size.
    #[serde(default)]
    pub batch_size: usize,
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
    /// What `exact` forms densely: `fisher` (ηI + GGᵀ/N) or `hessian` (H + λI).
    #[serde(default = "d_exact_matrix")]
    pub exact_matrix: String,
    /// `exact` refuses models with more weights than this (a dense P×P matrix in f64).
    #[serde(default = "d_exact_max")]
    pub exact_max_params: usize,
    /// DARTS-IM sign: `paper` (I_M = −BᵀH⁻¹B1, argmax) or `negated`.
    #[serde(default = "d_im_sign")]
    pub im_sign: String,
    /// Fisher samples: per-batch gradients (`batch`, as the paper) or per-sample (`sample`,
    /// needs `bn = "running"`).
    #[serde(default = "d_fisher_samples")]
    pub fisher_samples: String,
    /// BatchNorm during selection: `batch` statistics (buffers untouched) or `running`.
    #[serde(default = "d_bn")]
    pub bn: String,
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
    pub hess_data: String,
    /// Arithmetic of the selection: `f32` (as trained) or `f64` (the supernet is converted;
    /// exact to ~1e-12 on small models).
    #[serde(default = "d_precision")]
    pub precision: String,
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
    pub pt_rule: String,
    /// `darts-pt`: tuning epochs between decisions (DARTS-PT: 5).
    #[serde(default = "d_pt_interval")]
    pub pt_interval: usize,
    /// `darts-pt`: θ learning rate of the tuning (0 = the search's / 10, as DARTS-PT).
    #[serde(default)]
    pub pt_lr: f64,
    /// `darts-pt`: `constant` (DARTS-PT's NB201 version), `cosine` to the search's lr_min (its
    /// DARTS version), or `auto` (constant for NB201, cosine otherwise).
    #[serde(default = "d_pt_schedule")]
    pub pt_schedule: String,
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
    #[serde(default = "d_aux_weight")]
    pub auxiliary_weight: f64,
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
    pub action: String,
    /// The rank that acts.
    #[serde(default)]
    pub rank: usize,
    /// `search` (at global step `at_step`), `select` (at round `at_step` of the candidate
    /// loop of `drop`/`darts-if`), `train` (at global step `at_step`) or `experiment` (before
    /// the `at_step`-th work unit of `ablate` or architecture of `groundtruth`, counted over
    /// all groups).
    #[serde(default = "d_fault_phase")]
    pub phase: String,
    /// The global search step or selection round (0-based) at which it acts.
    #[serde(default)]
    pub at_step: usize,
}

fn d_keep() -> usize {
    3
}
fn d_fault_phase() -> String {
    "search".into()
}
fn d_fault() -> String {
    "none".into()
}
fn d_seed() -> u64 {
    2
}
fn d_device() -> String {
    "auto".into()
}
fn d_comm() -> CommKind {
    CommKind::Auto
}
fn d_space() -> String {
    "nb201".into()
}
fn d_channels() -> usize {
    16
}
fn d_cells() -> usize {
    5
}
fn d_dataset() -> String {
    "synthetic".into()
}
fn d_format() -> String {
    "auto".into()
}
fn d_normalize() -> String {
    "nb201".into()
}
fn d_split() -> String {
    "halves".into()
}
fn d_weights_split() -> String {
    "train".into()
}
fn d_arch_split() -> String {
    "valid".into()
}
fn d_one() -> f64 {
    1.0
}
fn d_prefetch() -> usize {
    2
}
fn d_all() -> Count {
    Count::All
}
fn d_none() -> Count {
    Count::None
}
fn d_noise() -> f64 {
    3.0
}
fn d_strategy() -> String {
    "darts-1st".into()
}
fn d_epochs() -> usize {
    50
}
fn d_batch() -> usize {
    64
}
fn d_order() -> String {
    "alpha-first".into()
}
fn d_lr() -> f64 {
    0.025
}
fn d_lr_min() -> f64 {
    0.001
}
fn d_momentum() -> f64 {
    0.9
}
fn d_wd() -> f64 {
    3e-4
}
fn d_clip() -> f64 {
    5.0
}
fn d_alr() -> f64 {
    3e-4
}
fn d_beta1() -> f64 {
    0.5
}
fn d_beta2() -> f64 {
    0.999
}
fn d_awd() -> f64 {
    1e-3
}
fn d_init_std() -> f64 {
    1e-3
}
fn d_criterion() -> String {
    "darts-im".into()
}
fn d_ihvp() -> String {
    "woodbury".into()
}
fn d_n() -> usize {
    30
}
fn d_gamma() -> f64 {
    1e-3
}
fn d_k() -> usize {
    3
}
fn d_eta() -> f64 {
    5e-4
}
fn d_cg_tol() -> f64 {
    1e-6
}
fn d_cg_iters() -> usize {
    100
}
fn d_exact_matrix() -> String {
    "fisher".into()
}
fn d_exact_max() -> usize {
    20_000
}
fn d_im_sign() -> String {
    "paper".into()
}
fn d_fisher_samples() -> String {
    "batch".into()
}
fn d_hess_data() -> String {
    "val".into()
}
fn d_pt_rule() -> String {
    "accuracy".into()
}
fn d_pt_interval() -> usize {
    5
}
fn d_pt_schedule() -> String {
    "auto".into()
}
fn d_precision() -> String {
    "f32".into()
}
fn d_bn() -> String {
    "batch".into()
}
fn d_log_every() -> usize {
    10
}
fn d_true() -> bool {
    true
}

fn d_train_epochs() -> usize {
    600
}
fn d_train_batch() -> usize {
    96
}
fn d_train_channels() -> usize {
    36
}
fn d_train_layers() -> usize {
    20
}
fn d_aux_weight() -> f64 {
    0.4
}
fn d_drop_path() -> f64 {
    0.2
}
fn d_train_sgd() -> SgdConfig {
    SgdConfig { lr_min: 0.0, ..SgdConfig::default() }
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

impl Config {
    /// Load a config: `path` (or the embedded demo when `None`), then the `--set` overrides,
    /// then validation. Errors name the file or `--set` and the dotted key.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config> {
        let (source, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Path {
                    path: p.to_path_buf(),
                    msg: format!("cannot read config: {}", io_msg(&e)),
                })?;
                (p.display().to_string(), text)
            }
            None => ("<embedded demo config>".to_string(), DEMO_TOML.to_string()),
        };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| 1 + text[..s.start].matches('\n').count());
            // One line: toml's message may span several (e.g. a table defined twice).
            let msg = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(": ");
            match line {
                Some(l) => Error::config(&source, format!("line {l}"), format!("TOML syntax: {msg}")),
                None => Error::config(&source, "-", format!("TOML syntax: {msg}")),
            }
        })?;
        // A run directory's own config.toml (it carries `[run]`) may be from an earlier version.
        if table.contains_key("run") {
            legacy_counts(&mut table);
        }
        // File alone first, so a mistake in the file is reported against the file.
        Self::from_table(&table, &source)?;
        for ov in overrides {
            apply_override(&mut table, ov)?;
            Self::from_table(&table, &format!("--set {ov}"))?;
        }
        if path.is_none() {
            scope_demo_data(&mut table, overrides);
        }
        let cfg = Self::from_table(&table, &source)?;
        if let Err(e) = cfg.validate(&source) {
            return Err(blame_override(path, &text, overrides, e));
        }
        Ok(cfg)
    }

    /// The config of `text` with the first `n` overrides (the demo's data scoping included).
    fn with_overrides(path: Option<&Path>, text: &str, overrides: &[String]) -> Option<Config> {
        let mut table: toml::Table = text.parse().ok()?;
        for ov in overrides {
            apply_override(&mut table, ov).ok()?;
        }
        if path.is_none() {
            scope_demo_data(&mut table, overrides);
        }
        Self::from_table(&table, "").ok()
    }

    /// Parse and validate a config from TOML text (a checkpoint's stored config).
    pub fn from_toml_str(text: &str) -> Result<Config> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::config("stored config", "-", e.message().trim().to_string()))?;
        legacy_counts(&mut table);
        let cfg = Self::from_table(&table, "stored config")?;
        cfg.validate("stored config")?;
        Ok(cfg)
    }

    fn from_table(table: &toml::Table, source: &str) -> Result<Config> {
        let value = toml::Value::Table(table.clone());
        let mut cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let msg = inner.lines().next().unwrap_or("").trim().to_string();
            let (key, msg) = unknown_field_key(&key, &msg);
            Error::config(source, key, msg)
        })?;
        cfg.data.resolve_synthetic();
        if cfg.space.layers == 0 {
            cfg.space.layers = if cfg.space.name.starts_with("nb1shot1") { 9 } else { 8 };
        }
        Ok(cfg)
    }

    /// Range checks that serde cannot express. World-size checks live in [`Config::check_world`].
    pub fn validate(&self, source: &str) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::config(source, key, msg));
        if !["auto", "cpu", "cuda"].contains(&self.device.as_str()) {
            return bad("device", format!("unknown value {:?} (one of \"auto\", \"cpu\", \"cuda\")", self.device));
        }
        if crate::space::SpaceSpec::by_name(&self.space.name).is_none() {
            let known: Vec<String> = crate::space::SpaceSpec::NAMES.iter().map(|n| format!("{n:?}")).collect();
            return bad(
                "space.name",
                format!("unknown search space {:?} (known: {})", self.space.name, known.join(", ")),
            );
        }
        if self.space.name != "nb201" && !(3..=64).contains(&self.space.layers) {
            return bad("space.layers", format!("must be in 3..=64 (got {})", self.space.layers));
        }
        if self.space.name == "pc-darts" && self.select.criterion == "darts-pt" {
            return bad(
                "select.criterion",
                "darts-pt is not defined for PC-DARTS (its projection would leave the bypassed channels' edge weight)"
                    .into(),
            );
        }
        if self.space.name == "pc-darts" && self.space.channels % 4 != 0 {
            return bad(
                "space.channels",
                format!("PC-DARTS splits channels in 4 groups: must be a multiple of 4 (got {})", self.space.channels),
            );
        }
        if self.space.channels == 0 || self.space.channels > 4096 {
            return bad("space.channels", format!("must be in 1..=4096 (got {})", self.space.channels));
        }
        if self.space.cells_per_stage > 64 {
            return bad("space.cells_per_stage", format!("must be in 0..=64 (got {})", self.space.cells_per_stage));
        }
        self.data.validate(source)?;
        if !["none", "kill", "signal", "nan"].contains(&self.fault.action.as_str()) {
            return bad(
                "fault.action",
                format!("unknown value {:?} (known: \"none\", \"kill\", \"signal\", \"nan\")", self.fault.action),
            );
        }
        if !["search", "select", "train", "experiment"].contains(&self.fault.phase.as_str()) {
            return bad(
                "fault.phase",
                format!("must be \"search\", \"select\", \"train\" or \"experiment\" (got {:?})", self.fault.phase),
            );
        }
        if self.checkpoint.keep == 0 {
            return bad("checkpoint.keep", "must be at least 1 (disable with checkpoint.enabled = false)".into());
        }
        if !["darts-1st", "darts-2nd", "darts-2nd-exact"].contains(&self.search.strategy.as_str()) {
            return bad(
                "search.strategy",
                format!(
                    "unknown strategy {:?} (known: \"darts-1st\", \"darts-2nd\", \"darts-2nd-exact\")",
                    self.search.strategy
                ),
            );
        }
        if self.search.order != "alpha-first" && self.search.order != "weights-first" {
            return bad(
                "search.order",
                format!("must be \"alpha-first\" or \"weights-first\" (got {:?})", self.search.order),
            );
        }
        if self.search.epochs == 0 {
            return bad("search.epochs", "must be at least 1 (got 0)".into());
        }
        if self.search.batch_size == 0 {
            return bad("search.batch_size", "must be at least 1 (got 0)".into());
        }
        let half = self.data.train_size.of(0) / 2;
        // Real datasets: checked against the split when the data is opened.
        if self.data.dataset == "synthetic" && self.search.batch_size > half {
            return bad(
                "search.batch_size",
                format!(
                    "{} is larger than each half of the search split (data.train_size / 2 = {half})",
                    self.search.batch_size
                ),
            );
        }
        if self.search.micro_batch > self.search.batch_size {
            return bad(
                "search.micro_batch",
                format!("{} exceeds search.batch_size {}", self.search.micro_batch, self.search.batch_size),
            );
        }
        let w = &self.search.weights;
        positive(source, "search.weights.lr", w.lr)?;
        if !(w.lr_min >= 0.0 && w.lr_min <= w.lr) {
            return bad("search.weights.lr_min", format!("must be in [0, search.weights.lr] (got {})", w.lr_min));
        }
        unit_interval(source, "search.weights.momentum", w.momentum)?;
        non_negative(source, "search.weights.weight_decay", w.weight_decay)?;
        non_negative(source, "search.weights.grad_clip", w.grad_clip)?;
        if w.nesterov && w.momentum == 0.0 {
            return bad("search.weights.nesterov", "needs search.weights.momentum > 0".into());
        }
        let a = &self.search.arch;
        positive(source, "search.arch.lr", a.lr)?;
        unit_interval(source, "search.arch.beta1", a.beta1)?;
        unit_interval(source, "search.arch.beta2", a.beta2)?;
        non_negative(source, "search.arch.weight_decay", a.weight_decay)?;
        non_negative(source, "search.arch.init_std", a.init_std)?;
        if self.output.log_every == 0 {
            return bad("output.log_every", "must be at least 1 (got 0)".into());
        }
        self.select.validate(source)
    }

    /// Images per evaluation batch of the selection.
    pub fn select_batch(&self) -> usize {
        if self.select.batch_size == 0 {
            self.search.batch_size
        } else {
            self.select.batch_size
        }
    }

    /// Checks that depend on the number of ranks.
    /// `[fault]` must name a rank of this job (else the fault would silently never fire).
    pub fn check_fault(&self, world: usize) -> Result<()> {
        if self.fault.action != "none" && self.fault.rank >= world {
            let msg = format!("{} is not a rank of this {world}-rank job (0..={})", self.fault.rank, world - 1);
            return Err(Error::config("world size", "fault.rank", msg));
        }
        Ok(())
    }

    pub fn check_world(&self, world: usize) -> Result<()> {
        self.check_fault(world)?;
        let src = "world size";
        let b = self.search.batch_size;
        if world > b {
            return Err(Error::config(
                src,
                "search.batch_size",
                format!("{world} ranks exceed the global batch of {b}"),
            ));
        }
        if b % world != 0 {
            return Err(Error::config(src, "search.batch_size", format!("{b} is not divisible by the {world} ranks")));
        }
        let shard = b / world;
        let m = self.micro_batch(world);
        if shard % m != 0 {
            return Err(Error::config(
                src,
                "search.micro_batch",
                format!("{m} does not divide the per-rank shard of {shard} (search.batch_size {b} / {world} ranks)"),
            ));
        }
        Ok(())
    }

    /// Micro-batch size on `world` ranks.
    pub fn micro_batch(&self, world: usize) -> usize {
        if self.search.micro_batch == 0 {
            self.search.batch_size / world.max(1)
        } else {
            self.search.micro_batch
        }
    }

    /// Steps per epoch: `steps_per_epoch`, or one drop-last pass over the `n_weights` images
    /// of the θ split.
    pub fn steps_per_epoch(&self, n_weights: usize) -> usize {
        if self.search.steps_per_epoch > 0 {
            self.search.steps_per_epoch
        } else {
            (n_weights / self.search.batch_size).max(1)
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

pub const DATASETS: [&str; 6] = ["synthetic", "cifar10", "cifar100", "imagenet16-120", "imagenet16", "imagenet"];

impl DataConfig {
    /// The synthetic dataset's defaults for the keys that real datasets take from the files.
    fn resolve_synthetic(&mut self) {
        if self.dataset == "synthetic" {
            for (v, d) in [(&mut self.num_classes, 10), (&mut self.image_size, 32)] {
                if *v == 0 {
                    *v = d;
                }
            }
            // Counts of the generated images: "all" is 50,000 training and 10,000 test images.
            if self.train_size == Count::All {
                self.train_size = Count::N(50_000);
            }
            if self.test_size == Count::All {
                self.test_size = Count::N(10_000);
            }
        }
    }

    fn validate(&self, source: &str) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::config(source, format!("data.{key}"), msg));
        let one_of = |key: &str, v: &str, options: &[&str]| -> Result<()> {
            if options.contains(&v) {
                Ok(())
            } else {
                let list = options.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(", ");
                bad(key, format!("unknown value {v:?} (known: {list})"))
            }
        };
        one_of("dataset", &self.dataset, &DATASETS)?;
        one_of("format", &self.format, &["auto", "binary", "python"])?;
        one_of("normalize", &self.normalize, &["nb201", "darts"])?;
        one_of("split", &self.split, &["halves", "file"])?;
        if self.train_size == Count::None {
            return bad("train_size", "must be a number or \"all\" (got \"none\")".into());
        }
        let synthetic = self.dataset == "synthetic";
        if synthetic {
            if self.num_classes < 2 {
                return bad("num_classes", format!("must be at least 2 (got {})", self.num_classes));
            }
            if !(4..=1024).contains(&self.image_size) || self.image_size % 4 != 0 {
                return bad("image_size", format!("must be a multiple of 4 in 4..=1024 (got {})", self.image_size));
            }
            if self.train_size.of(0) < 2 {
                return bad("train_size", format!("must be at least 2 (got {})", self.train_size));
            }
            if self.split != "halves" {
                return bad("split", "the synthetic dataset uses \"halves\"".into());
            }
        } else if self.root.is_none() {
            return bad("root", format!("required for dataset {:?} (the directory of its files)", self.dataset));
        }
        if self.dataset == "imagenet" && self.image_size != 0 && !(16..=1024).contains(&self.image_size) {
            return bad("image_size", format!("must be in 16..=1024 for ImageNet crops (got {})", self.image_size));
        }
        if self.split == "file" && self.split_file.is_none() {
            return bad("split_file", "required with data.split = \"file\"".into());
        }
        if !(self.subset_fraction > 0.0 && self.subset_fraction <= 1.0) {
            return bad("subset_fraction", format!("must be in (0, 1] (got {})", self.subset_fraction));
        }
        if self.dataset != "imagenet" {
            let set = [
                ("subset_classes", self.subset_classes > 0),
                ("subset_fraction", self.subset_fraction < 1.0),
                ("skip_bad_images", self.skip_bad_images),
            ];
            if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
                return bad(key, format!("applies to dataset = \"imagenet\" only (got {:?})", self.dataset));
            }
        }
        // Each prefetched batch is a whole decoded batch in memory; a few hide decoding.
        if self.prefetch > 64 {
            return bad("prefetch", format!("must be at most 64 batches (got {})", self.prefetch));
        }
        if !(self.noise >= 0.0 && self.noise.is_finite()) {
            return bad("noise", format!("must be finite and ≥ 0 (got {})", self.noise));
        }
        Ok(())
    }
}

impl SelectConfig {
    pub fn validate(&self, source: &str) -> Result<()> {
        let one_of = |key: &str, v: &str, options: &[&str]| -> Result<()> {
            if options.contains(&v) {
                Ok(())
            } else {
                let list = options.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(", ");
                Err(Error::config(source, key, format!("unknown value {v:?} (one of {list})")))
            }
        };
        one_of("select.criterion", &self.criterion, &["magnitude", "drop", "darts-if", "darts-im", "darts-pt"])?;
        one_of("select.pt_rule", &self.pt_rule, &["accuracy", "loss", "darts-if", "darts-im"])?;
        one_of("select.pt_schedule", &self.pt_schedule, &["auto", "constant", "cosine"])?;
        if self.pt_interval == 0 {
            return Err(Error::config(source, "select.pt_interval", "must be at least 1 (got 0)"));
        }
        non_negative(source, "select.pt_lr", self.pt_lr)?;
        if self.track_every > 0 && self.criterion == "darts-pt" {
            return Err(Error::config(
                source,
                "select.track_every",
                "tracking scores a criterion as it stands; darts-pt trains",
            ));
        }
        if !self.track_n.is_empty() {
            if self.criterion != "darts-im" || self.faithful || self.fisher_samples != "batch" {
                return Err(Error::config(
                    source,
                    "select.track_n",
                    "tracks DARTS-IM for several N at once: needs select.criterion = \"darts-im\" (not faithful, batch Fisher samples)",
                ));
            }
            if let Some(n) = self.track_n.iter().find(|&&n| n == 0) {
                return Err(Error::config(source, "select.track_n", format!("every N must be at least 1 (got {n})")));
            }
        }
        one_of("select.ihvp", &self.ihvp, &["identity", "neumann", "sherman-morrison", "woodbury", "cg", "exact"])?;
        one_of("select.exact_matrix", &self.exact_matrix, &["fisher", "hessian"])?;
        one_of("select.im_sign", &self.im_sign, &["paper", "negated"])?;
        one_of("select.fisher_samples", &self.fisher_samples, &["batch", "sample"])?;
        one_of("select.bn", &self.bn, &["batch", "running"])?;
        one_of("select.precision", &self.precision, &["f32", "f64"])?;
        one_of("select.hess_data", &self.hess_data, &["val", "train"])?;
        if self.n == 0 {
            return Err(Error::config(source, "select.n", "must be at least 1 (got 0)"));
        }
        if self.k == 0 {
            return Err(Error::config(source, "select.k", "must be at least 1 (got 0)"));
        }
        positive(source, "select.gamma", self.gamma)?;
        positive(source, "select.eta", self.eta)?;
        positive(source, "select.fisher_scale", self.fisher_scale)?;
        non_negative(source, "select.damping", self.damping)?;
        positive(source, "select.cg_tol", self.cg_tol)?;
        if self.cg_max_iter == 0 {
            return Err(Error::config(source, "select.cg_max_iter", "must be at least 1 (got 0)"));
        }
        if self.fisher_samples == "sample" && self.bn != "running" {
            return Err(Error::config(
                source,
                "select.fisher_samples",
                "\"sample\" needs select.bn = \"running\" (batch statistics of one image are undefined)",
            ));
        }
        if self.faithful && self.criterion != "darts-im" {
            return Err(Error::config(source, "select.faithful", "the authors' computation exists for darts-im only"));
        }
        Ok(())
    }
}

fn positive(source: &str, key: &str, v: f64) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(Error::config(source, key, format!("must be finite and > 0 (got {v})")))
    }
}

fn non_negative(source: &str, key: &str, v: f64) -> Result<()> {
    if v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(Error::config(source, key, format!("must be finite and ≥ 0 (got {v})")))
    }
}

fn unit_interval(source: &str, key: &str, v: f64) -> Result<()> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::config(source, key, format!("must be in [0, 1) (got {v})")))
    }
}

fn io_msg(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The error path already ends in the offending key; shorten serde's unknown-field message.
fn unknown_field_key(path: &str, msg: &str) -> (String, String) {
    let key = if path.is_empty() || path == "." { "-".to_string() } else { path.to_string() };
    match msg.strip_prefix("unknown field `").and_then(|r| r.split_once('`')) {
        Some((_, expected)) => (key, format!("unknown key ({})", expected.trim_start_matches(',').trim())),
        None => (key, msg.to_string()),
    }
}

/// Apply `a.b.c=value`: the value is parsed as TOML (`0.1`, `true`, `"x"`, `[1, 2]`), and taken
/// as a plain string when it does not parse.
fn apply_override(table: &mut toml::Table, ov: &str) -> Result<()> {
    let (key, raw) =
        ov.split_once('=').ok_or_else(|| Error::config(format!("--set {ov}"), ov, "expected key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|p| p.is_empty()) {
        return Err(Error::config(format!("--set {ov}"), key, "malformed key"));
    }
    let raw = raw.trim();
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for (i, p) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(Error::config(format!("--set {ov}"), parts[..=i].join("."), "is a value, not a section")),
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, sets: &[&str]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::load(Some(&p), &sets)
    }

    /// The demo's synthetic sizes do not follow `--set data.dataset=…` to another dataset;
    /// what the user sets alongside does.
    #[test]
    fn demo_data_sizes_stay_with_the_synthetic_task() {
        let c = Config::load(None, &["data.dataset=\"cifar10\"".into(), "data.root=\"/d\"".into()]).unwrap();
        assert_eq!((c.data.train_size, c.data.test_size, c.data.image_size), (Count::All, Count::None, 0));
        assert_eq!((c.data.num_classes, c.data.noise), (0, 3.0));
        let sets = ["data.dataset=\"cifar10\"", "data.root=\"/d\"", "data.train_size=1000", "data.test_size=\"all\""];
        let c = Config::load(None, &sets.map(String::from)).unwrap();
        assert_eq!((c.data.train_size, c.data.test_size), (Count::N(1000), Count::All));
        // The demo itself keeps them; a config file is never changed.
        let c = Config::load(None, &[]).unwrap();
        assert_eq!((c.data.train_size, c.data.test_size, c.data.image_size), (Count::N(4096), Count::N(1024), 16));
        let c = load_str("[data]\ndataset = \"cifar10\"\nroot = \"/d\"\nimage_size = 16\n", &[]).unwrap();
        assert_eq!(c.data.image_size, 16);
    }

    /// A run directory's config.toml from an earlier version (0 = all / none) still reads.
    #[test]
    fn stored_configs_of_earlier_versions_keep_their_counts() {
        let text =
            "[data]\ndataset = \"cifar10\"\nroot = \"/d\"\ntrain_size = 0\ntest_size = 0\n[run]\nworld_size = 1\n";
        let c = Config::from_toml_str(text).unwrap();
        assert_eq!((c.data.train_size, c.data.test_size), (Count::All, Count::None));
        let c = load_str(text, &[]).unwrap();
        assert_eq!((c.data.train_size, c.data.test_size), (Count::All, Count::None));
    }

    /// A count is a number, "all" or "none"; 0 is refused; the written form reads back.
    #[test]
    fn counts_are_numbers_all_or_none() {
        let c = load_str("[data]\ntest_size = \"all\"\ntrain_size = 256\n", &[]).unwrap();
        assert_eq!((c.data.train_size, c.data.test_size), (Count::N(256), Count::N(10_000)));
        let e = load_str("[data]\ntest_size = 0\n", &[]).unwrap_err().to_string();
        assert!(e.ends_with("data.test_size: 0 is ambiguous: write \"all\" or \"none\""), "{e}");
        let e = load_str("[data]\ntrain_size = \"none\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("data.train_size: must be a number or \"all\""), "{e}");
        let e = load_str("[data]\ntrain_size = \"most\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("expected a number, \"all\" or \"none\" (got \"most\")"), "{e}");
        let c = load_str("[data]\ndataset = \"cifar10\"\nroot = \"/d\"\ntest_size = \"none\"\n", &[]).unwrap();
        let back = Config::from_toml_str(&c.to_toml()).unwrap();
        assert_eq!((back.data.train_size, back.data.test_size), (Count::All, Count::None));
    }

    #[test]
    fn demo_config_is_valid() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.space.name, "nb201");
    }

    #[test]
    fn track_n_needs_darts_im_and_positive_n() {
        let sets = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = Config::load(None, &sets(&["select.criterion=\"darts-im\"", "select.track_n=[1, 10]"])).unwrap();
        assert_eq!(ok.select.track_n, vec![1, 10]);
        let e = Config::load(None, &sets(&["select.criterion=\"magnitude\"", "select.track_n=[1]"])).unwrap_err();
        assert!(e.to_string().contains("select.track_n") && e.to_string().contains("darts-im"), "{e}");
        let e = Config::load(None, &sets(&["select.criterion=\"darts-im\"", "select.track_n=[0]"])).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_with_its_section() {
        let e = load_str("[search.weights]\nlrr = 0.1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("search.weights.lrr: unknown key"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = load_str("[search]\nepochs = \"ten\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("search.epochs"), "{e}");
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn out_of_range_names_the_key_and_value() {
        let e = load_str("", &["search.weights.lr=-1"]).unwrap_err().to_string();
        assert!(e.contains("search.weights.lr: must be finite and > 0 (got -1)"), "{e}");
    }

    #[test]
    fn override_from_set_is_blamed_on_set() {
        let e = load_str("", &["search.nope=1"]).unwrap_err().to_string();
        assert!(e.starts_with("--set search.nope=1: search.nope: unknown key"), "{e}");
    }

    #[test]
    fn overrides_parse_toml_values() {
        let c =
            load_str("", &["search.epochs=3", "search.weights.nesterov=true", "search.order=weights-first"]).unwrap();
        assert_eq!(c.search.epochs, 3);
        assert!(c.search.weights.nesterov);
        assert_eq!(c.search.order, "weights-first");
    }

    #[test]
    fn world_checks() {
        let c = load_str("[search]\nbatch_size = 32\nmicro_batch = 16\n", &[]).unwrap();
        assert!(c.check_world(2).is_ok());
        assert!(c.check_world(3).unwrap_err().to_string().contains("not divisible by the 3 ranks"));
        let e = c.check_world(4).unwrap_err().to_string();
        assert!(e.contains("search.micro_batch: 16 does not divide the per-rank shard of 8"), "{e}");
        assert!(c.check_world(64).unwrap_err().to_string().contains("64 ranks exceed the global batch of 32"));
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = Config::load(None, &["seed=7".to_string()]).unwrap();
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }
}
