//! The default of every config key that has one (serde's `default = "…"` functions).

use super::*;

pub(super) fn d_keep() -> usize {
    3
}
pub(super) fn d_fault_phase() -> FaultPhase {
    FaultPhase::Search
}
pub(super) fn d_fault() -> FaultAction {
    FaultAction::None
}
pub(super) fn d_seed() -> u64 {
    2
}
pub(super) fn d_device() -> DeviceChoice {
    DeviceChoice::Auto
}
pub(super) fn d_comm() -> CommKind {
    CommKind::Auto
}
pub(super) fn d_stem() -> StemKind {
    StemKind::Cifar
}
pub(super) fn d_space() -> String {
    "nb201".into()
}
pub(super) fn d_channels() -> usize {
    16
}
pub(super) fn d_cells() -> usize {
    5
}
pub(super) fn d_dataset() -> DatasetKind {
    DatasetKind::Synthetic
}
pub(super) fn d_format() -> CifarFormat {
    CifarFormat::Auto
}
pub(super) fn d_normalize() -> Normalize {
    Normalize::Nb201
}
pub(super) fn d_split() -> SplitKind {
    SplitKind::Halves
}
pub(super) fn d_weights_split() -> String {
    "train".into()
}
pub(super) fn d_arch_split() -> String {
    "valid".into()
}
pub(super) fn d_one() -> f64 {
    1.0
}
pub(super) fn d_prefetch() -> usize {
    2
}
pub(super) fn d_all() -> Count {
    Count::All
}
pub(super) fn d_none() -> Count {
    Count::None
}
pub(super) fn d_noise() -> f64 {
    3.0
}
pub(super) fn d_strategy() -> Strategy {
    Strategy::Darts1st
}
pub(super) fn d_enas_steps() -> usize {
    50
}
pub(super) fn d_enas_aggregate() -> usize {
    20
}
pub(super) fn d_enas_lr() -> f64 {
    1e-3
}
pub(super) fn d_enas_eps() -> f64 {
    1e-3
}
pub(super) fn d_enas_entropy() -> f64 {
    1e-4
}
pub(super) fn d_enas_decay() -> f64 {
    0.99
}
pub(super) fn d_enas_tanh() -> f64 {
    2.5
}
pub(super) fn d_enas_temperature() -> f64 {
    5.0
}
pub(super) fn d_enas_hidden() -> usize {
    32
}
pub(super) fn d_tau_max() -> f64 {
    10.0
}
pub(super) fn d_tau_min() -> f64 {
    0.1
}
pub(super) fn d_candidates() -> usize {
    100
}
pub(super) fn d_epochs() -> usize {
    50
}
pub(super) fn d_batch() -> usize {
    64
}
pub(super) fn d_order() -> StepOrder {
    StepOrder::AlphaFirst
}
pub(super) fn d_lr() -> f64 {
    0.025
}
pub(super) fn d_schedule() -> LrSchedule {
    LrSchedule::Cosine
}
pub(super) fn d_tenth() -> f64 {
    0.1
}
pub(super) fn d_arch_fraction() -> f64 {
    0.025
}
pub(super) fn d_lr_gamma() -> f64 {
    0.97
}
pub(super) fn d_lr_min() -> f64 {
    0.001
}
pub(super) fn d_momentum() -> f64 {
    0.9
}
pub(super) fn d_wd() -> f64 {
    3e-4
}
pub(super) fn d_clip() -> f64 {
    5.0
}
pub(super) fn d_alr() -> f64 {
    3e-4
}
pub(super) fn d_beta1() -> f64 {
    0.5
}
pub(super) fn d_beta2() -> f64 {
    0.999
}
pub(super) fn d_awd() -> f64 {
    1e-3
}
pub(super) fn d_init_std() -> f64 {
    1e-3
}
/// `drop`: of every criterion measured against the actual effect of removing an op (README,
/// "Does a criterion predict what removing an op does?"), the one that predicts it best.
pub(super) fn d_criterion() -> Criterion {
    Criterion::Drop
}
pub(super) fn d_ihvp() -> Ihvp {
    Ihvp::Woodbury
}
pub(super) fn d_n() -> usize {
    30
}
pub(super) fn d_gamma() -> f64 {
    1e-3
}
pub(super) fn d_k() -> usize {
    3
}
pub(super) fn d_eta() -> f64 {
    5e-4
}
pub(super) fn d_cg_tol() -> f64 {
    1e-6
}
pub(super) fn d_cg_iters() -> usize {
    100
}
pub(super) fn d_damping_rule() -> DampingRule {
    DampingRule::Auto
}
pub(super) fn d_damping_fraction() -> f64 {
    0.1
}
pub(super) fn d_curvature() -> Curvature {
    Curvature::Hessian
}
pub(super) fn d_exact_matrix() -> ExactMatrix {
    ExactMatrix::Fisher
}
pub(super) fn d_exact_max() -> usize {
    20_000
}
pub(super) fn d_im_sign() -> ImSign {
    ImSign::Paper
}
pub(super) fn d_fisher_labels() -> FisherLabels {
    FisherLabels::Data
}
pub(super) fn d_fisher_samples() -> FisherSamples {
    FisherSamples::Batch
}
pub(super) fn d_hess_data() -> HessData {
    HessData::Val
}
pub(super) fn d_pt_rule() -> PtRule {
    PtRule::Accuracy
}
pub(super) fn d_pt_interval() -> usize {
    5
}
pub(super) fn d_pt_schedule() -> PtSchedule {
    PtSchedule::Auto
}
pub(super) fn d_search_precision() -> SearchPrecision {
    SearchPrecision::F32
}

pub(super) fn d_precision() -> Precision {
    Precision::F32
}
pub(super) fn d_bn() -> BnStats {
    BnStats::Batch
}
pub(super) fn d_products() -> Products {
    Products::ReverseOverForward
}
pub(super) fn d_recompute() -> Recompute {
    Recompute::None
}
pub(super) fn d_log_every() -> usize {
    10
}
pub(super) fn d_true() -> bool {
    true
}

pub(super) fn d_train_epochs() -> usize {
    600
}
pub(super) fn d_train_batch() -> usize {
    96
}
pub(super) fn d_train_channels() -> usize {
    36
}
pub(super) fn d_train_layers() -> usize {
    20
}
pub(super) fn d_aux_weight() -> f64 {
    0.4
}
pub(super) fn d_drop_path() -> f64 {
    0.2
}
pub(super) fn d_train_sgd() -> SgdConfig {
    SgdConfig { lr_min: 0.0, ..SgdConfig::default() }
}
