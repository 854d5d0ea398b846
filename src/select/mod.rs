//! Discretisation: from per-(cell, edge, op) scores to a genotype, decided by the coordinator
//! and broadcast so that every rank reports the same architecture.

use serde::{Deserialize, Serialize};

use crate::comm::{broadcast_value, Collective};
use crate::error::Result;
use crate::search::SearchState;
use crate::space::{derive_genotype, Genotype, SpaceSpec};

/// Scores of one criterion: `scores[cell][edge][op]`, higher = keep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreTable {
    pub criterion: String,
    pub scores: Vec<Vec<Vec<f64>>>,
}

/// Vanilla DARTS: the score of an op is its α (the softmax ranks the same).
pub fn magnitude_scores(state: &SearchState) -> ScoreTable {
    ScoreTable { criterion: "magnitude".into(), scores: state.alpha_table() }
}

/// The genotype vanilla DARTS would select from the current α.
pub fn magnitude_genotype(state: &SearchState) -> Genotype {
    derive_genotype(state.net.spec(), &magnitude_scores(state).scores)
}

/// The coordinator derives the genotype from its scores and broadcasts it.
pub fn coordinate(comm: &dyn Collective, spec: &SpaceSpec, table: &ScoreTable) -> Result<Genotype> {
    let mine = comm.is_coordinator().then(|| derive_genotype(spec, &table.scores));
    broadcast_value(comm, 0, mine.as_ref())
}
