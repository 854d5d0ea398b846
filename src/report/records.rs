//! The JSON records of the run outputs, as types shared by their writer and their readers
//! (figures, `report`, experiments). Fields are declared in the order they are written
//! (alphabetical, as serde_json's maps write them), so the files are unchanged by the types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One op's row of `scores.json`: its score (null when not finite) and the criterion's terms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreRow {
    pub cell: String,
    pub edge: String,
    pub op: String,
    pub score: Option<f64>,
    #[serde(default)]
    pub terms: BTreeMap<String, Option<f64>>,
}

/// `scores.json`: a selection's scores per (cell, edge, op), its settings and diagnostics.
/// Readers need only `criterion`, `scores` and `mixing`; the rest defaults when absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScoresRecord {
    #[serde(default)]
    pub benchmark: Option<BenchmarkEntry>,
    pub criterion: String,
    #[serde(default)]
    pub diagnostics: Value,
    #[serde(default)]
    pub eval_batch_size: usize,
    #[serde(default)]
    pub eval_batches: usize,
    #[serde(default)]
    pub genotype: String,
    #[serde(default)]
    pub ihvp: String,
    /// softmax(α) (PC-DARTS: β̃·softmax(α)) per `[cell][edge][op]`; empty when not recorded.
    #[serde(default)]
    pub mixing: Vec<Vec<Vec<f64>>>,
    pub scores: Vec<ScoreRow>,
    /// The `[select]` settings (`SelectConfig`, as written).
    #[serde(default)]
    pub settings: Value,
    #[serde(default)]
    pub timing: Value,
}

/// Write `rec` as pretty JSON to `path`, atomically. Through a `Value`, whose maps are sorted:
/// keys come out alphabetically whatever the declaration order, as the files have always been
/// written (a non-finite number is `null`).
pub fn write_record<T: Serialize>(path: &std::path::Path, rec: &T) -> crate::error::Result<()> {
    let v = serde_json::to_value(rec).expect("serialisable");
    crate::fsutil::write_atomic(path, serde_json::to_string_pretty(&v).expect("json").as_bytes())
}

/// `rec` as one line's value (sorted keys, as [`write_record`]).
pub fn line_value<T: Serialize>(rec: &T) -> Value {
    serde_json::to_value(rec).expect("serialisable")
}

/// A typed record from a JSON file (one line naming the file and what is wrong otherwise).
pub fn read_record<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> crate::error::Result<T> {
    use crate::error::Error;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.to_path_buf(), e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Path { path: path.to_path_buf(), msg: format!("not a valid record: {e}") })
}

/// A number written as `null` when not finite, read back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The `benchmark` entry of a record (`select.benchmark_table`): the table, the architecture
/// looked up and its row by column (null when the table lacks it; a value that is not finite is
/// null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkEntry {
    pub table: String,
    pub arch: String,
    pub accuracy: Option<BTreeMap<String, Option<f64>>>,
}

impl BenchmarkEntry {
    /// The row's finite values by column.
    pub fn values(&self) -> impl Iterator<Item = (&str, f64)> {
        self.accuracy.iter().flatten().filter_map(|(k, v)| Some((k.as_str(), (*v)?)))
    }
}

/// One line of `genotypes.jsonl`: α's (magnitude) genotype after a search epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenotypeLine {
    pub epoch: usize,
    pub genotype: String,
    pub genotype_json: crate::space::Genotype,
}

/// One line of `tracking.jsonl`: the criterion's selection on the supernet after an epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrackingLine {
    pub epoch: usize,
    /// The N of the record, where several were tracked (`select.track_n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    pub criterion: String,
    pub genotype: String,
    pub genotype_json: crate::space::Genotype,
    pub benchmark: Option<BenchmarkEntry>,
}

/// The op (or the parents, for a NAS-Bench-1Shot1 input row) an edge keeps in `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Chosen {
    One(String),
    Several(Vec<String>),
}

/// One edge of `report.json`: its ops, α, softmax(α), the criterion's scores (null where not
/// finite) and what the genotype keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeRecord {
    pub cell: String,
    pub edge: String,
    pub ops: Vec<String>,
    pub alpha: Vec<f64>,
    pub softmax: Vec<f64>,
    pub scores: Vec<Option<f64>>,
    pub chosen: Option<Chosen>,
}

/// A test-set pass in a record.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TestRecord {
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub acc: f64,
    /// Images (a float, as the tallies count them).
    pub count: f64,
}

/// `report.json`: a search's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportRecord {
    pub space: String,
    pub ops: Vec<String>,
    pub criterion: String,
    pub genotype: String,
    pub genotype_json: crate::space::Genotype,
    pub edges: Vec<EdgeRecord>,
    /// The last epoch's statistics, as in `metrics.jsonl` (`search::EpochStats`).
    pub final_epoch: Option<Value>,
    pub test: Option<TestRecord>,
    pub benchmark: Option<BenchmarkEntry>,
    pub run: super::RunInfo,
}

impl ReportRecord {
    /// The supernet's validation accuracy after the last epoch.
    pub fn final_val_acc(&self) -> Option<f64> {
        self.final_epoch.as_ref()?.get("val_acc")?.as_f64()
    }
}

/// One trained architecture of `groundtruth`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Truth {
    pub index: usize,
    pub arch: String,
    pub test_acc: f64,
    pub test_loss: f64,
    pub train_acc: f64,
    pub train_loss: f64,
    pub weights: usize,
    pub seconds: f64,
    pub group: usize,
}

/// Kendall τ between a criterion's architecture scores and the ground truth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tau {
    pub scores: std::path::PathBuf,
    pub criterion: String,
    /// τ-b between Σ over free edges of the chosen ops' scores and test accuracy.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau: f64,
    /// Architectures with a finite score (those τ is taken over).
    pub architectures: usize,
    /// (architecture score, test accuracy) pairs, for the figure.
    pub points: Vec<(f64, f64)>,
}

/// `groundtruth.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroundTruthRecord {
    pub architectures: Vec<Truth>,
    #[serde(default)]
    pub kendall_tau: Vec<Tau>,
}

/// A swept key of `ablation.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepRecord {
    /// The key as given (`n`, `ihvp`, `select.eta`, `seed`).
    pub key: String,
    /// The config key it sets (empty for `seed`).
    pub config_key: String,
    pub values: Vec<String>,
}

/// One combination of `ablation.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AblationRow {
    pub index: usize,
    pub labels: BTreeMap<String, String>,
    pub criterion: String,
    pub genotype: String,
    pub magnitude_genotype: String,
    pub shared: bool,
    pub group: usize,
    pub ranks: usize,
    /// Null where not finite.
    pub metrics: BTreeMap<String, Option<f64>>,
}

/// A metric over seeds: mean, sample and population std (null where undefined), the seeds with
/// a value, and `mean ± std` as text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummaryStat {
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub pstd: Option<f64>,
    pub n: usize,
    pub text: String,
}

/// One setting of the non-seed keys of `ablation.json`, over its seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AblationSummary {
    pub labels: BTreeMap<String, String>,
    pub seeds: usize,
    pub distinct_genotypes: usize,
    pub metrics: BTreeMap<String, SummaryStat>,
}

/// `ablation.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AblationRecord {
    pub dataset: Option<crate::config::DatasetKind>,
    pub sweeps: Vec<SweepRecord>,
    pub rows: Vec<AblationRow>,
    pub summary: Vec<AblationSummary>,
}

/// `compare`'s derived architecture of a (method, seed), scored on its supernet's shared
/// weights (`derived/<method>/seed-S.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DerivedRecord {
    pub method: String,
    pub seed: u64,
    pub genotype: String,
    #[serde(deserialize_with = "nan_if_null")]
    pub val_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub val_acc: f64,
    /// Images (a float, as the tallies count them).
    pub images: f64,
}

/// `train`'s `report.json`: the genotype's network after training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReportRecord {
    pub genotype: String,
    pub genotype_json: crate::space::Genotype,
    /// Every weight, the auxiliary head's included.
    pub weights: usize,
    /// The count the papers report (DARTS_V2 on ImageNet: 4.7 M).
    pub weights_without_auxiliary: usize,
    /// Convolutions' and linear layers' multiply-adds per image of `image_size` px (FLOPs as
    /// the papers count them; the mobile setting allows 600 M).
    pub multiply_adds: f64,
    pub image_size: usize,
    /// The last epoch's line of `metrics.jsonl` (`train::TrainEpoch`).
    pub final_epoch: Option<Value>,
    pub run: super::RunInfo,
}
