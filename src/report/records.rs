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
    pub benchmark: Option<Value>,
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
