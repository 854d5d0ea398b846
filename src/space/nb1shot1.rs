//! NAS-Bench-1Shot1 search spaces 1–3 (automl/nasbench-1shot1, spaces.md §4): choice blocks
//! whose op and (for the searched ones) parents are chosen, and the NAS-Bench-101 cell
//! (adjacency matrix + op list) they stand for.

use serde::{Deserialize, Serialize};

use super::SpaceSpec;

/// The ops of a choice block, in α column order.
pub const NB1SHOT1_OPS: [&str; 3] = ["maxpool3x3", "conv3x3-bn-relu", "conv1x1-bn-relu"];

/// The shape of one of the three spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nb1Shot1Layout {
    pub space: u8,
    /// Choice blocks (NB101 nodes 1..=steps).
    pub steps: usize,
    /// Parents of nodes 1..=steps.
    pub parents: Vec<usize>,
    /// Parents of the output node.
    pub output_parents: usize,
    /// The first blocks, whose parents are fixed (all earlier nodes) and carry no α.
    pub fixed_blocks: usize,
}

impl Nb1Shot1Layout {
    /// Space 1, 2 or 3 (`num_parents_per_node` of the reference `search_space_*.py`).
    pub fn space(n: u8) -> Self {
        match n {
            1 => Nb1Shot1Layout { space: 1, steps: 4, parents: vec![1, 2, 2, 2], output_parents: 2, fixed_blocks: 2 },
            2 => Nb1Shot1Layout { space: 2, steps: 4, parents: vec![1, 1, 2, 2], output_parents: 3, fixed_blocks: 1 },
            3 => {
                Nb1Shot1Layout { space: 3, steps: 5, parents: vec![1, 1, 1, 2, 2], output_parents: 2, fixed_blocks: 1 }
            }
            other => unreachable!("NAS-Bench-1Shot1 has spaces 1-3, not {other}"),
        }
    }

    /// The NB101 index of node `i` of the space's own graph (input 0, blocks 1..=steps, output
    /// steps+1): spaces 1 and 2 have 4 blocks and get an unused node 5 inserted, as the
    /// reference's `upscale_to_nasbench_format`.
    fn nb101_index(&self, i: usize) -> usize {
        if self.steps == 4 && i >= 5 {
            i + 1
        } else {
            i
        }
    }
}

/// A NAS-Bench-101 cell: the 7×7 upper-triangular adjacency matrix and the op of each node
/// (`input`, …, `output`), as `nasbench.api.ModelSpec(matrix, ops)` takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nb1Shot1Genotype {
    pub matrix: Vec<Vec<u8>>,
    pub ops: Vec<String>,
}

/// Indices of the `k` best scores (ties: the lower index), in increasing index order.
fn top_k(row: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a])); // stable
    let mut keep = idx[..k.min(row.len())].to_vec();
    keep.sort_unstable();
    keep
}

impl Nb1Shot1Genotype {
    /// The reference derivation (spaces.md §4.5) on a score per table entry: `scores[0]` the
    /// blocks' ops, `scores[1]` the output's inputs, `scores[2..]` the searched blocks' inputs.
    /// Each block takes its best op; each searched node and the output their best-scoring
    /// parents; edges are then collected backwards from the output, so nodes that do not reach
    /// it are left unconnected.
    pub fn from_scores(layout: &Nb1Shot1Layout, scores: &[Vec<Vec<f64>>]) -> Self {
        let k = layout.steps;
        let out = k + 1;
        let mut parents: Vec<Vec<usize>> = vec![vec![]; k + 2];
        for b in 0..k {
            parents[b + 1] = if b < layout.fixed_blocks {
                (0..=b).collect()
            } else {
                top_k(&scores[2 + b - layout.fixed_blocks][0], layout.parents[b])
            };
        }
        parents[out] = top_k(&scores[1][0], layout.output_parents);
        let n = layout.nb101_index(out) + 1;
        let mut matrix = vec![vec![0u8; n]; n];
        let mut stack = vec![out];
        let mut seen = vec![false; k + 2];
        while let Some(node) = stack.pop() {
            if std::mem::replace(&mut seen[node], true) {
                continue;
            }
            for &p in &parents[node] {
                matrix[layout.nb101_index(p)][layout.nb101_index(node)] = 1;
                stack.push(p);
            }
        }
        let mut ops = vec!["input".to_string()];
        for row in &scores[0][..k] {
            ops.push(NB1SHOT1_OPS[top_k(row, 1)[0]].to_string());
        }
        if k == 4 {
            ops.push("conv1x1-bn-relu".into()); // the unused node 5
        }
        ops.push("output".into());
        Nb1Shot1Genotype { matrix, ops }
    }

    /// The chosen columns per (table, row) of `spec`'s tables: each block's op, and the parents
    /// of the output and of each searched node (none for a node left unconnected).
    pub(crate) fn chosen_entries(&self, spec: &SpaceSpec) -> Vec<Vec<Vec<usize>>> {
        let layout = match spec.family {
            super::Family::Nb1Shot1(n) => Nb1Shot1Layout::space(n),
            _ => unreachable!("a 1Shot1 genotype belongs to a 1Shot1 space"),
        };
        let k = layout.steps;
        let parents_of = |node: usize| -> Vec<Vec<usize>> {
            let j = layout.nb101_index(node);
            vec![(0..node).filter(|&p| self.matrix[layout.nb101_index(p)][j] == 1).collect()]
        };
        let mut out = vec![(0..k)
            .map(|b| NB1SHOT1_OPS.iter().position(|o| *o == self.ops[b + 1]).into_iter().collect())
            .collect()];
        out.push(parents_of(k + 1));
        for b in layout.fixed_blocks..k {
            out.push(parents_of(b + 1));
        }
        out
    }

    /// Parents of every node (NB101 indexing), for reports and tests.
    pub fn parents(&self) -> Vec<Vec<usize>> {
        let n = self.matrix.len();
        (0..n).map(|j| (0..j).filter(|&i| self.matrix[i][j] == 1).collect()).collect()
    }
}

impl std::fmt::Display for Nb1Shot1Genotype {
    /// `ModelSpec(matrix=[[0, 1, …], …], ops=['input', …, 'output'])`: paste it after
    /// `from nasbench.api import ModelSpec`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: Vec<String> = self
            .matrix
            .iter()
            .map(|r| format!("[{}]", r.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")))
            .collect();
        let ops: Vec<String> = self.ops.iter().map(|o| format!("'{o}'")).collect();
        write!(f, "ModelSpec(matrix=[{}], ops=[{}])", rows.join(", "), ops.join(", "))
    }
}

impl std::str::FromStr for Nb1Shot1Genotype {
    type Err = String;

    /// Parses the printed form (either quote, any spacing); checks it is a NAS-Bench-101 cell
    /// of at most 7 nodes and 9 edges, upper triangular, `input` first and `output` last.
    fn from_str(s: &str) -> Result<Self, String> {
        let t: String = s.chars().filter(|c| !c.is_whitespace()).collect::<String>().replace('"', "'");
        let body = t
            .strip_prefix("ModelSpec(matrix=[")
            .and_then(|r| r.strip_suffix("])"))
            .ok_or_else(|| format!("not a NAS-Bench-101 cell (expected ModelSpec(matrix=[...], ops=[...])): {s:?}"))?;
        let (m, ops) = body.split_once("],ops=[").ok_or("expected ops=[...] after the matrix")?;
        let matrix: Vec<Vec<u8>> = m
            .strip_prefix('[')
            .and_then(|m| m.strip_suffix(']'))
            .ok_or("the matrix must be a list of rows")?
            .split("],[")
            .map(|row| {
                row.split(',')
                    .map(|x| match x {
                        "0" => Ok(0),
                        "1" => Ok(1),
                        other => Err(format!("matrix entries must be 0 or 1, got {other:?}")),
                    })
                    .collect()
            })
            .collect::<Result<_, _>>()?;
        let ops: Vec<String> = ops.split(',').map(|o| o.trim_matches('\'').to_string()).collect();
        let n = matrix.len();
        if !(2..=7).contains(&n) || matrix.iter().any(|r| r.len() != n) {
            return Err(format!("the matrix must be square with 2 to 7 nodes, got {n} rows"));
        }
        if ops.len() != n {
            return Err(format!("{} ops for {n} nodes", ops.len()));
        }
        if ops[0] != "input" || ops[n - 1] != "output" {
            return Err("ops must start with 'input' and end with 'output'".into());
        }
        if let Some(bad) = ops[1..n - 1].iter().find(|o| !NB1SHOT1_OPS.contains(&o.as_str())) {
            return Err(format!("unknown op {bad:?} (known: {})", NB1SHOT1_OPS.join(", ")));
        }
        for (i, r) in matrix.iter().enumerate() {
            if r[..=i].iter().any(|&x| x != 0) {
                return Err(format!("row {i} has an edge to an earlier node (the matrix must be upper triangular)"));
            }
        }
        let edges: usize = matrix.iter().flatten().map(|&x| x as usize).sum();
        if edges > 9 {
            return Err(format!("{edges} edges; NAS-Bench-101 allows at most 9"));
        }
        Ok(Nb1Shot1Genotype { matrix, ops })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores_for(layout: &Nb1Shot1Layout, r: &mut crate::rng::SplitMix64) -> Vec<Vec<Vec<f64>>> {
        let mut rnd = |n: usize| (0..n).map(|_| r.below(1000) as f64).collect::<Vec<_>>();
        let mut s = vec![(0..layout.steps).map(|_| rnd(3)).collect(), vec![rnd(layout.steps + 1)]];
        for b in layout.fixed_blocks..layout.steps {
            s.push(vec![rnd(b + 1)]);
        }
        s
    }

    /// A hand-made space-1 example: node3 takes {0, 2}, node4 {1, 3}, the output {3, 4}:
    /// collected from the output, every node reaches it; node 5 is the unused NB101 node.
    #[test]
    fn space_1_derivation_by_hand() {
        let l = Nb1Shot1Layout::space(1);
        let scores = vec![
            vec![vec![0., 1., 0.], vec![1., 0., 0.], vec![0., 0., 1.], vec![0., 1., 0.]],
            vec![vec![0., 0., 0., 5., 4.]],
            vec![vec![3., 1., 2.]],
            vec![vec![0., 3., 1., 2.]],
        ];
        let g = Nb1Shot1Genotype::from_scores(&l, &scores);
        assert_eq!(
            g.to_string(),
            "ModelSpec(matrix=[[0, 1, 1, 1, 0, 0, 0], [0, 0, 1, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0], \
             [0, 0, 0, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], \
             ops=['input', 'conv3x3-bn-relu', 'maxpool3x3', 'conv1x1-bn-relu', 'conv3x3-bn-relu', \
             'conv1x1-bn-relu', 'output'])"
        );
        assert_eq!(g.parents()[6], vec![3, 4]);
    }

    /// A node whose only path leads away from the output is dropped: space 3, output from
    /// {4, 5}, node 5 from {0, 4}, node 4 from {0, 3}, node 3 from {0}: nodes 1 and 2 are unused.
    #[test]
    fn unreachable_nodes_are_dropped() {
        let l = Nb1Shot1Layout::space(3);
        let scores = vec![
            vec![vec![1., 0., 0.]; 5],
            vec![vec![0., 0., 0., 0., 2., 3.]],
            vec![vec![1., 0.]],
            vec![vec![1., 0., 0.]],
            vec![vec![2., 0., 0., 1.]],
            vec![vec![2., 0., 0., 0., 1.]],
        ];
        let g = Nb1Shot1Genotype::from_scores(&l, &scores);
        assert_eq!(g.parents(), vec![vec![], vec![], vec![], vec![0], vec![0, 3], vec![0, 4], vec![4, 5]]);
        assert_eq!(g.ops.len(), 7);
    }

    /// parse(print(g)) == g, JSON too, and every derived cell is a valid NB101 spec (≤ 9 edges,
    /// as every space is built to satisfy) for 3,000 random score tables over the three spaces.
    #[test]
    fn random_derivations_round_trip() {
        let mut r = crate::rng::SplitMix64::keyed(&[7]);
        for i in 0..3000 {
            let l = Nb1Shot1Layout::space(1 + (i % 3) as u8);
            let g = Nb1Shot1Genotype::from_scores(&l, &scores_for(&l, &mut r));
            assert_eq!(g.to_string().parse::<Nb1Shot1Genotype>().unwrap(), g);
            let json = serde_json::to_string(&super::super::Genotype::Nb1Shot1(g.clone())).unwrap();
            assert_eq!(
                serde_json::from_str::<super::super::Genotype>(&json).unwrap(),
                super::super::Genotype::Nb1Shot1(g)
            );
        }
    }

    #[test]
    fn bad_cells_are_rejected() {
        let ok = "ModelSpec(matrix=[[0, 1], [0, 0]], ops=['input', 'output'])";
        assert!(ok.parse::<Nb1Shot1Genotype>().is_ok());
        let lower = "ModelSpec(matrix=[[0, 0], [1, 0]], ops=['input', 'output'])";
        assert!(lower.parse::<Nb1Shot1Genotype>().unwrap_err().contains("upper triangular"));
        let op = "ModelSpec(matrix=[[0, 1, 0], [0, 0, 1], [0, 0, 0]], ops=['input', 'conv5x5', 'output'])";
        assert!(op.parse::<Nb1Shot1Genotype>().unwrap_err().contains("unknown op"));
    }
}
