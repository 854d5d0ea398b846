//! Search spaces: their architecture tables (rows of mixed choices, columns of candidates), how
//! the architecture parameters become mixing weights, and the genotypes derived from scores.

mod darts;
mod nb1shot1;
mod nb201;

pub mod scores;

pub use darts::{darts_edges, DartsGenotype, DARTS_OPS};
pub use nb1shot1::{Nb1Shot1Genotype, Nb1Shot1Layout, NB1SHOT1_OPS};
pub use nb201::{nb201_edge, Nb201Genotype, NB201_OPS};
pub use scores::{magnitude_genotype, magnitude_scores, ScoreTable};

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// One architecture table: every row is one mixed choice (an edge's ops, a choice block's ops,
/// a node's inputs), its columns the candidates, its row weights `softmax(α_row)` (times the edge
/// weight in PC-DARTS). Influence criteria remove one (table, row, column) entry at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchTable {
    /// Name in reports (`cell`; `normal`/`reduce` for DARTS; `ops`/`output`/`inputs3` for
    /// NAS-Bench-1Shot1).
    pub name: String,
    /// Name of the α tensor in state files (AutoDL/DARTS/1Shot1 names).
    pub alpha_name: String,
    /// Row labels, e.g. the edge `1<-0`.
    pub edges: Vec<String>,
    /// Column labels in α column order: op names, or parent nodes for input tables.
    pub ops: Vec<String>,
}

impl ArchTable {
    /// Column of `none`, if the table has it (removing a zero op changes nothing).
    pub fn none_index(&self) -> Option<usize> {
        self.ops.iter().position(|o| o == "none")
    }
}

/// An architecture parameter that is not itself a table of removable entries (PC-DARTS's β).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraParam {
    pub name: String,
    pub shape: Vec<i64>,
}

/// How α becomes the weights that the supernet's forward takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mixing {
    /// `softmax` of every table row.
    Softmax,
    /// PC-DARTS: table `c` (α) and extra parameter `c` (β, one entry per row): row weights are
    /// `β̃_e · softmax(α_e)` with `β̃` the softmax of β over each node's incoming edges
    /// (`nodes` lists each node's row range). The forward also takes `β̃` (the bypassed
    /// channels' weight), after the tables.
    EdgeNormalised { nodes: Vec<(usize, usize)> },
}

/// The family a space belongs to: what builds its supernet and derives its genotype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    Nb201,
    /// DARTS, its 7-op variant without `none` (DARTS-PT's s5), and PC-DARTS.
    Darts,
    /// NAS-Bench-1Shot1 search space 1, 2 or 3.
    Nb1Shot1(u8),
}

/// A search space as the rest of the program sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceSpec {
    /// The config's `space.name`.
    pub name: String,
    pub family: Family,
    /// The architecture tables, in the order of the mixing weights the forward takes.
    pub cells: Vec<ArchTable>,
    /// Further architecture parameters, stored after the tables' α.
    pub extra: Vec<ExtraParam>,
    pub mixing: Mixing,
}

impl SpaceSpec {
    pub fn nb201() -> Self {
        SpaceSpec {
            name: "nb201".into(),
            family: Family::Nb201,
            cells: vec![ArchTable {
                name: "cell".into(),
                alpha_name: "arch_parameters".into(),
                edges: (0..6)
                    .map(|e| {
                        let (i, j) = nb201_edge(e);
                        format!("{i}<-{j}")
                    })
                    .collect(),
                ops: names(&NB201_OPS),
            }],
            extra: vec![],
            mixing: Mixing::Softmax,
        }
    }

    /// DARTS: normal and reduction cells, 14 edges × 8 ops each.
    pub fn darts() -> Self {
        Self::darts_with("darts", &DARTS_OPS)
    }

    /// DARTS without `none` (DARTS-PT's s5): 14 edges × 7 ops.
    pub fn darts_s5() -> Self {
        Self::darts_with("darts-s5", &DARTS_OPS[1..])
    }

    fn darts_with(name: &str, ops: &[&str]) -> Self {
        let cell = |name: &str, alpha: &str| ArchTable {
            name: name.into(),
            alpha_name: alpha.into(),
            edges: darts_edges(),
            ops: names(ops),
        };
        SpaceSpec {
            name: name.into(),
            family: Family::Darts,
            cells: vec![cell("normal", "alphas_normal"), cell("reduce", "alphas_reduce")],
            extra: vec![],
            mixing: Mixing::Softmax,
        }
    }

    /// PC-DARTS: DARTS's tables plus the edge weights β (`betas_normal`, `betas_reduce`).
    pub fn pc_darts() -> Self {
        let mut s = Self::darts_with("pc-darts", &DARTS_OPS);
        s.extra = ["betas_normal", "betas_reduce"]
            .iter()
            .map(|n| ExtraParam { name: n.to_string(), shape: vec![14] })
            .collect();
        s.mixing = Mixing::EdgeNormalised { nodes: (0..4).map(|m| (m * (m + 3) / 2, (m + 1) * (m + 4) / 2)).collect() };
        s
    }

    /// NAS-Bench-1Shot1 space `n` (1, 2 or 3): the choice blocks' ops, the output's inputs, and
    /// the inputs of every block whose parents are searched.
    pub fn nb1shot1(n: u8) -> Self {
        let layout = Nb1Shot1Layout::space(n);
        let k = layout.steps;
        let parents = |count: usize| (0..count).map(|p| p.to_string()).collect::<Vec<_>>();
        let mut cells = vec![
            ArchTable {
                name: "ops".into(),
                alpha_name: "alphas_mixed_op".into(),
                edges: (1..=k).map(|b| format!("node{b}")).collect(),
                ops: names(&NB1SHOT1_OPS),
            },
            ArchTable {
                name: "output".into(),
                alpha_name: "alphas_output".into(),
                edges: vec!["output".into()],
                ops: parents(k + 1),
            },
        ];
        for (i, b) in (layout.fixed_blocks..k).enumerate() {
            cells.push(ArchTable {
                name: format!("inputs{}", b + 1),
                alpha_name: format!("alphas_inputs.{i}"),
                edges: vec![format!("node{}", b + 1)],
                ops: parents(b + 1),
            });
        }
        SpaceSpec {
            name: format!("nb1shot1-s{n}"),
            family: Family::Nb1Shot1(n),
            cells,
            extra: vec![],
            mixing: Mixing::Softmax,
        }
    }

    /// The space named in a config, if known.
    pub fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "nb201" => Self::nb201(),
            "darts" => Self::darts(),
            "darts-s5" => Self::darts_s5(),
            "pc-darts" => Self::pc_darts(),
            "nb1shot1-s1" => Self::nb1shot1(1),
            "nb1shot1-s2" => Self::nb1shot1(2),
            "nb1shot1-s3" => Self::nb1shot1(3),
            "pc-nb1shot1-s1" => Self::pc_nb1shot1(1),
            "pc-nb1shot1-s2" => Self::pc_nb1shot1(2),
            "pc-nb1shot1-s3" => Self::pc_nb1shot1(3),
            _ => return None,
        })
    }

    /// The names `space.name` accepts.
    pub const NAMES: [&'static str; 10] = [
        "nb201",
        "darts",
        "darts-s5",
        "pc-darts",
        "nb1shot1-s1",
        "nb1shot1-s2",
        "nb1shot1-s3",
        "pc-nb1shot1-s1",
        "pc-nb1shot1-s2",
        "pc-nb1shot1-s3",
    ];

    /// PC-DARTS on NAS-Bench-1Shot1 space `n` (nasbench-1shot1 `optimizers/pc_darts`): the
    /// same tables as [`Self::nb1shot1`]; the choice blocks' ops run on a quarter of the
    /// channels (no β: the input weights already exist).
    pub fn pc_nb1shot1(n: u8) -> Self {
        let mut s = Self::nb1shot1(n);
        s.name = format!("pc-nb1shot1-s{n}");
        s
    }

    /// Channels a choice block's or edge's ops see: 1 (all) or PC-DARTS's 4 (a quarter).
    pub fn partial_channels(&self) -> i64 {
        if self.name.starts_with("pc-") {
            4
        } else {
            1
        }
    }

    /// Shapes of all architecture parameters: the tables' α, then the extra ones.
    pub fn alpha_shapes(&self) -> Vec<Vec<i64>> {
        self.cells
            .iter()
            .map(|c| vec![c.edges.len() as i64, c.ops.len() as i64])
            .chain(self.extra.iter().map(|e| e.shape.clone()))
            .collect()
    }

    /// State-file names of all architecture parameters, in [`Self::alpha_shapes`] order.
    pub fn alpha_names(&self) -> Vec<String> {
        self.cells.iter().map(|c| c.alpha_name.clone()).chain(self.extra.iter().map(|e| e.name.clone())).collect()
    }

    /// The forward's weights from the architecture parameters: one table per [`ArchTable`]
    /// (differentiable in every parameter), then the space's further inputs (PC-DARTS's `β̃`).
    pub fn mixing(&self, alphas: &[Tensor]) -> Vec<Tensor> {
        let n = self.cells.len();
        match &self.mixing {
            Mixing::Softmax => alphas[..n].iter().map(|a| a.softmax(-1, a.kind())).collect(),
            Mixing::EdgeNormalised { nodes } => {
                let betas: Vec<Tensor> = alphas[n..]
                    .iter()
                    .map(|b| {
                        let parts: Vec<Tensor> = nodes
                            .iter()
                            .map(|&(s, e)| b.narrow(0, s as i64, (e - s) as i64).softmax(0, b.kind()))
                            .collect();
                        Tensor::cat(&parts, 0)
                    })
                    .collect();
                let mut out: Vec<Tensor> =
                    alphas[..n].iter().zip(&betas).map(|(a, b)| a.softmax(-1, a.kind()) * b.unsqueeze(1)).collect();
                out.extend(betas);
                out
            }
        }
    }

    /// The mixing weights of the tables only (the leaf of the influence criteria and the
    /// magnitude scores).
    pub fn table_weights(&self, alphas: &[Tensor]) -> Vec<Tensor> {
        let mut w = self.mixing(alphas);
        w.truncate(self.cells.len());
        w
    }
}

fn names(ops: &[&str]) -> Vec<String> {
    ops.iter().map(|s| s.to_string()).collect()
}

/// A discrete architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Genotype {
    Nb201(Nb201Genotype),
    Darts(DartsGenotype),
    Nb1Shot1(Nb1Shot1Genotype),
}

impl std::fmt::Display for Genotype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Genotype::Nb201(g) => g.fmt(f),
            Genotype::Darts(g) => g.fmt(f),
            Genotype::Nb1Shot1(g) => g.fmt(f),
        }
    }
}

/// Derive the genotype from a score per (table, row, column): higher is better.
/// NB201: the best op per edge, `none` excluded. DARTS: per node the two incoming edges with the
/// best non-`none` score, each with its best non-`none` op. NAS-Bench-1Shot1: the best op per
/// choice block and the best-scoring parents of every searched node and of the output.
pub fn derive_genotype(spec: &SpaceSpec, scores: &[Vec<Vec<f64>>]) -> Genotype {
    match spec.family {
        Family::Nb201 => Genotype::Nb201(Nb201Genotype::from_scores(&scores[0], spec.cells[0].none_index())),
        Family::Darts => Genotype::Darts(DartsGenotype::from_scores(&scores[0], &scores[1], &spec.cells[0].ops)),
        Family::Nb1Shot1(n) => Genotype::Nb1Shot1(Nb1Shot1Genotype::from_scores(&Nb1Shot1Layout::space(n), scores)),
    }
}

/// The chosen columns per (table, row): one op per kept edge, none for an edge the genotype
/// drops (DARTS keeps two incoming edges per node), the chosen parents for 1Shot1 input rows.
pub fn chosen_entries(spec: &SpaceSpec, g: &Genotype) -> Vec<Vec<Vec<usize>>> {
    match g {
        Genotype::Nb201(n) => vec![n.ops.iter().map(|&o| vec![o]).collect()],
        Genotype::Darts(d) => [&d.normal, &d.reduce]
            .iter()
            .zip(&spec.cells)
            .map(|(pairs, table)| {
                let mut row = vec![vec![]; 14];
                for (k, (op, j)) in pairs.iter().enumerate() {
                    let m = k / 2; // node m's rows start at m(m+3)/2
                    row[m * (m + 3) / 2 + j] = table.ops.iter().position(|o| o == op).into_iter().collect();
                }
                row
            })
            .collect(),
        Genotype::Nb1Shot1(g) => g.chosen_entries(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// PC-DARTS mixing: row e of table c is softmax(α_e)·β̃_e, with β̃ normalised per node
    /// (rows 0–1, 2–4, 5–8, 9–13); the table therefore sums to 1 over each node's rows.
    #[test]
    fn pc_darts_effective_weights() {
        let spec = SpaceSpec::pc_darts();
        tch::manual_seed(3);
        let alphas: Vec<Tensor> =
            spec.alpha_shapes().iter().map(|s| Tensor::randn(s.as_slice(), (Kind::Double, tch::Device::Cpu))).collect();
        let w = spec.mixing(&alphas);
        assert_eq!(w.len(), 4);
        let row_sums = w[0].sum_dim_intlist(1, false, Kind::Double);
        assert!((row_sums - &w[2]).abs().max().double_value(&[]) < 1e-15);
        for (s, e) in [(0, 2), (2, 5), (5, 9), (9, 14)] {
            let node = w[1].narrow(0, s, e - s).sum(Kind::Double).double_value(&[]);
            assert!((node - 1.0).abs() < 1e-12, "{node}");
        }
        // Entry (3, 5) by hand: exp(α35)/Σ_o exp(α3o) · exp(β3)/(exp(β2)+exp(β3)+exp(β4)).
        let (a, b) = (&alphas[0], &alphas[2]);
        let sm = a.get(3).exp().get(5).double_value(&[]) / a.get(3).exp().sum(Kind::Double).double_value(&[]);
        let bt = b.get(3).exp().double_value(&[]) / b.narrow(0, 2, 3).exp().sum(Kind::Double).double_value(&[]);
        assert!((w[0].double_value(&[3, 5]) - sm * bt).abs() < 1e-15);
    }

    #[test]
    fn table_shapes_of_every_space() {
        // α sizes of NAS-Bench-1Shot1 (spaces.md §4.3): 24, 26, 35.
        for (n, size) in [(1, 24), (2, 26), (3, 35)] {
            let s = SpaceSpec::nb1shot1(n);
            assert_eq!(s.alpha_shapes().iter().map(|v| v.iter().product::<i64>()).sum::<i64>(), size);
        }
        assert_eq!(SpaceSpec::darts_s5().alpha_shapes(), vec![vec![14, 7], vec![14, 7]]);
        assert_eq!(
            SpaceSpec::pc_darts().alpha_names(),
            ["alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"]
        );
        for name in SpaceSpec::NAMES {
            assert_eq!(SpaceSpec::by_name(name).unwrap().name, name);
        }
    }
}
