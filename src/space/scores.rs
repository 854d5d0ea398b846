//! What a criterion says of every candidate op, and vanilla DARTS's criterion.

use serde::{Deserialize, Serialize};

use super::{derive_genotype, Genotype, SpaceSpec};

/// Scores of one criterion: `scores[cell][edge][op]`, higher = keep. Candidates a criterion
/// does not score (removing `none`) hold −∞. `terms[cell][edge][op][t]` are the parts of the
/// score named in `term_names` (e.g. DARTS-IF's loss change and quadratic term).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreTable {
    pub criterion: String,
    pub scores: Vec<Vec<Vec<f64>>>,
    #[serde(default)]
    pub term_names: Vec<String>,
    #[serde(default)]
    pub terms: Vec<Vec<Vec<Vec<f64>>>>,
}

impl ScoreTable {
    pub fn plain(criterion: &str, scores: Vec<Vec<Vec<f64>>>) -> Self {
        ScoreTable { criterion: criterion.into(), scores, term_names: Vec::new(), terms: Vec::new() }
    }
}

/// Vanilla DARTS: the score of an op is its mixing weight softmax(α) (`softmax`, per table):
/// DARTS ranks a node's incoming edges by it; within an edge it ranks as α does.
pub fn magnitude_scores(softmax: Vec<Vec<Vec<f64>>>) -> ScoreTable {
    ScoreTable::plain("magnitude", softmax)
}

/// The genotype vanilla DARTS would select from the mixing weights `softmax`.
pub fn magnitude_genotype(spec: &SpaceSpec, softmax: Vec<Vec<Vec<f64>>>) -> Genotype {
    derive_genotype(spec, &magnitude_scores(softmax).scores)
}
