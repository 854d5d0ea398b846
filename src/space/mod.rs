//! Search spaces: their ops, cell types and edges, and the genotypes derived from them.

mod darts;
mod nb201;

pub use darts::{darts_edges, DartsGenotype, DARTS_OPS};
pub use nb201::{nb201_edge, Nb201Genotype, NB201_OPS};

use serde::{Deserialize, Serialize};

/// One kind of cell whose edges share one architecture table (`[edges, ops]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellType {
    /// Name in reports (`cell`; `normal`/`reduce` for DARTS).
    pub name: String,
    /// Name of the α tensor in state files (AutoDL/DARTS names).
    pub alpha_name: String,
    /// Edge labels in row order, e.g. `1<-0`.
    pub edges: Vec<String>,
}

/// A search space as the rest of the program sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceSpec {
    pub name: String,
    /// Candidate ops in α column order.
    pub ops: Vec<String>,
    pub cells: Vec<CellType>,
}

impl SpaceSpec {
    pub fn nb201() -> Self {
        SpaceSpec {
            name: "nb201".into(),
            ops: NB201_OPS.iter().map(|s| s.to_string()).collect(),
            cells: vec![CellType {
                name: "cell".into(),
                alpha_name: "arch_parameters".into(),
                edges: (0..6)
                    .map(|e| {
                        let (i, j) = nb201_edge(e);
                        format!("{i}<-{j}")
                    })
                    .collect(),
            }],
        }
    }

    /// DARTS: normal and reduction cells, 14 edges × 8 ops each.
    pub fn darts() -> Self {
        let cell =
            |name: &str, alpha: &str| CellType { name: name.into(), alpha_name: alpha.into(), edges: darts_edges() };
        SpaceSpec {
            name: "darts".into(),
            ops: DARTS_OPS.iter().map(|s| s.to_string()).collect(),
            cells: vec![cell("normal", "alphas_normal"), cell("reduce", "alphas_reduce")],
        }
    }

    /// Shapes of the α tables, one per cell type.
    pub fn alpha_shapes(&self) -> Vec<[i64; 2]> {
        self.cells.iter().map(|c| [c.edges.len() as i64, self.ops.len() as i64]).collect()
    }

    /// Column of `none`, if the space has it.
    pub fn none_index(&self) -> Option<usize> {
        self.ops.iter().position(|o| o == "none")
    }
}

/// A discrete architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Genotype {
    Nb201(Nb201Genotype),
    Darts(DartsGenotype),
}

impl std::fmt::Display for Genotype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Genotype::Nb201(g) => g.fmt(f),
            Genotype::Darts(g) => g.fmt(f),
        }
    }
}

/// Derive the genotype from a score per (cell type, edge, op): higher is better. `scores[c][e][o]`.
/// NB201: the best op per edge, `none` excluded. DARTS: per node the two incoming edges with the
/// best non-`none` score, each with its best non-`none` op.
pub fn derive_genotype(spec: &SpaceSpec, scores: &[Vec<Vec<f64>>]) -> Genotype {
    match spec.name.as_str() {
        "nb201" => Genotype::Nb201(Nb201Genotype::from_scores(&scores[0], spec.none_index())),
        "darts" => Genotype::Darts(DartsGenotype::from_scores(&scores[0], &scores[1], spec.none_index())),
        other => unreachable!("no genotype rule for space {other}"),
    }
}
