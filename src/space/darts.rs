//! The DARTS space (spaces.md §1): ops, edges, and the genotype in the text form that DARTS
//! training scripts paste into `genotypes.py`.

use serde::{Deserialize, Serialize};

/// DARTS's `PRIMITIVES`, in α column order.
pub const DARTS_OPS: [&str; 8] = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
];

/// Edge labels in α row order: node m (state m+2) from each earlier state j: `2<-0, 2<-1,
/// 3<-0, 3<-1, 3<-2, …, 5<-4` (states 0 and 1 are the cell inputs).
pub fn darts_edges() -> Vec<String> {
    (0..4).flat_map(|m| (0..m + 2).map(move |j| format!("{}<-{j}", m + 2))).collect()
}

/// A DARTS cell pair: for each of the 4 nodes two `(op, input state)` pairs, and the states
/// concatenated as the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DartsGenotype {
    pub normal: Vec<(String, usize)>,
    pub normal_concat: Vec<usize>,
    pub reduce: Vec<(String, usize)>,
    pub reduce_concat: Vec<usize>,
}

impl DartsGenotype {
    /// DARTS's `genotype()` on a score table per cell type (`[14][ops]`, higher is better,
    /// columns named by `ops`): for node m, the two incoming edges with the best non-`none`
    /// score (ties: the earlier edge), each with its best non-`none` op (ties: the earlier op).
    pub fn from_scores(normal: &[Vec<f64>], reduce: &[Vec<f64>], ops: &[String]) -> Self {
        let none = ops.iter().position(|o| o == "none");
        let parse = |w: &[Vec<f64>]| -> Vec<(String, usize)> {
            let best = |row: &[f64]| -> (usize, f64) {
                let mut b: Option<(usize, f64)> = None;
                for (k, &v) in row.iter().enumerate() {
                    if Some(k) != none && b.is_none_or(|(_, bv)| v > bv) {
                        b = Some((k, v));
                    }
                }
                b.expect("a non-none op")
            };
            let mut out = Vec::new();
            let mut start = 0;
            for m in 0..4 {
                let n = m + 2;
                let mut js: Vec<usize> = (0..n).collect();
                js.sort_by(|&a, &b| best(&w[start + b]).1.total_cmp(&best(&w[start + a]).1)); // stable
                for &j in &js[..2] {
                    out.push((ops[best(&w[start + j]).0].clone(), j));
                }
                start += n;
            }
            out
        };
        DartsGenotype {
            normal: parse(normal),
            normal_concat: vec![2, 3, 4, 5],
            reduce: parse(reduce),
            reduce_concat: vec![2, 3, 4, 5],
        }
    }
}

impl std::fmt::Display for DartsGenotype {
    /// `Genotype(normal=[('sep_conv_3x3', 0), …], normal_concat=[2, 3, 4, 5], reduce=[…],
    /// reduce_concat=[2, 3, 4, 5])`, as Python prints DARTS's namedtuple.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs =
            |v: &[(String, usize)]| v.iter().map(|(o, j)| format!("('{o}', {j})")).collect::<Vec<_>>().join(", ");
        let list = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
        write!(
            f,
            "Genotype(normal=[{}], normal_concat=[{}], reduce=[{}], reduce_concat=[{}])",
            pairs(&self.normal),
            list(&self.normal_concat),
            pairs(&self.reduce),
            list(&self.reduce_concat)
        )
    }
}

impl std::str::FromStr for DartsGenotype {
    type Err = String;

    /// Parses the printed form, with either quote, any spacing, and `range(a, b)` concats.
    fn from_str(s: &str) -> Result<Self, String> {
        let t: String = s.chars().filter(|c| !c.is_whitespace()).collect::<String>().replace('"', "'");
        let body = t
            .strip_prefix("Genotype(")
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("not a DARTS genotype (expected Genotype(normal=..., ...)): {s:?}"))?;
        let field = |name: &str| -> Result<&str, String> {
            let key = format!("{name}=");
            let mut from = 0;
            // The key at the top level: preceded by `(`-start or a comma.
            while let Some(p) = body[from..].find(&key) {
                let at = from + p;
                if at == 0 || body.as_bytes()[at - 1] == b',' {
                    let rest = &body[at + key.len()..];
                    let end = if rest.starts_with('[') {
                        rest.find(']').map(|e| e + 1)
                    } else if rest.starts_with("range(") {
                        rest.find(')').map(|e| e + 1)
                    } else {
                        None
                    };
                    return end.map(|e| &rest[..e]).ok_or_else(|| format!("{name}: expected a list or range(…)"));
                }
                from = at + key.len();
            }
            Err(format!("missing {name}"))
        };
        let pairs = |name: &str| -> Result<Vec<(String, usize)>, String> {
            let v = field(name)?;
            let inner = &v[1..v.len() - 1];
            let mut out = Vec::new();
            for item in inner.split("),").map(|x| x.trim_start_matches('(').trim_end_matches(')')) {
                if item.is_empty() {
                    continue;
                }
                let (op, j) = item.split_once(',').ok_or_else(|| format!("{name}: bad pair {item:?}"))?;
                let op = op.trim_matches('\'');
                if !DARTS_OPS.contains(&op) || op == "none" {
                    return Err(format!("{name}: unknown op {op:?}"));
                }
                let j: usize = j.parse().map_err(|_| format!("{name}: bad input index {j:?}"))?;
                let node = out.len() / 2;
                if j >= node + 2 {
                    return Err(format!("{name}: node {node} cannot take state {j} (only 0..{})", node + 1));
                }
                out.push((op.to_string(), j));
            }
            if out.len() != 8 {
                return Err(format!("{name}: {} pairs, expected 8 (two per node)", out.len()));
            }
            Ok(out)
        };
        let concat = |name: &str| -> Result<Vec<usize>, String> {
            let v = field(name)?;
            if let Some(r) = v.strip_prefix("range(").and_then(|r| r.strip_suffix(')')) {
                let (a, b) = r.split_once(',').ok_or_else(|| format!("{name}: bad range"))?;
                let (a, b): (usize, usize) = (
                    a.parse().map_err(|_| format!("{name}: bad range"))?,
                    b.parse().map_err(|_| format!("{name}: bad range"))?,
                );
                return Ok((a..b).collect());
            }
            v[1..v.len() - 1]
                .split(',')
                .filter(|x| !x.is_empty())
                .map(|x| x.parse().map_err(|_| format!("{name}: bad index {x:?}")))
                .collect()
        };
        Ok(DartsGenotype {
            normal: pairs("normal")?,
            normal_concat: concat("normal_concat")?,
            reduce: pairs("reduce")?,
            reduce_concat: concat("reduce_concat")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DARTS_V2 (`genotypes.DARTS`) as printed in spaces.md §1.6.
    pub const DARTS_V2: &str = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])";

    #[test]
    fn darts_v2_round_trips_byte_for_byte() {
        let g: DartsGenotype = DARTS_V2.parse().unwrap();
        assert_eq!(g.normal[7], ("dil_conv_3x3".to_string(), 2));
        assert_eq!(g.to_string(), DARTS_V2);
        // The search's own printing: range(2, 6) and double quotes are accepted too.
        let alt = DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)").replace('\'', "\"");
        assert_eq!(alt.parse::<DartsGenotype>().unwrap(), g);
    }

    #[test]
    fn bad_genotypes_are_rejected() {
        let short = DARTS_V2.replacen("('sep_conv_3x3', 0), ", "", 1);
        assert!(short.parse::<DartsGenotype>().unwrap_err().contains("7 pairs"));
        let bad_op = DARTS_V2.replacen("sep_conv_3x3", "conv_9x9", 1);
        assert!(bad_op.parse::<DartsGenotype>().unwrap_err().contains("unknown op"));
        let bad_in = DARTS_V2.replacen("('sep_conv_3x3', 1)", "('sep_conv_3x3', 4)", 1);
        assert!(bad_in.parse::<DartsGenotype>().unwrap_err().contains("node 0 cannot take state 4"));
    }

    /// parse(print(g)) == g and JSON round trips for 2,000 random valid genotypes (seeded).
    #[test]
    fn random_genotypes_round_trip_as_text_and_json() {
        let mut r = crate::rng::SplitMix64::keyed(&[42]);
        for _ in 0..2000 {
            let mut cell = || -> Vec<(String, usize)> {
                (0..8)
                    .map(|k| {
                        let op = DARTS_OPS[1 + r.below(7) as usize].to_string();
                        (op, r.below((k / 2 + 2) as u64) as usize)
                    })
                    .collect()
            };
            let g = DartsGenotype {
                normal: cell(),
                normal_concat: vec![2, 3, 4, 5],
                reduce: cell(),
                reduce_concat: vec![2, 3, 4, 5],
            };
            assert_eq!(g.to_string().parse::<DartsGenotype>().unwrap(), g);
            let json = serde_json::to_string(&g).unwrap();
            assert_eq!(serde_json::from_str::<DartsGenotype>(&json).unwrap(), g);
        }
    }

    /// Scores built to give DARTS_V2 back: the chosen (edge, op) pairs score high, the first
    /// chosen edge of a node higher than the second; `none` scores highest of all and is ignored.
    #[test]
    fn derivation_recovers_a_planted_genotype() {
        let g: DartsGenotype = DARTS_V2.parse().unwrap();
        let plant = |pairs: &[(String, usize)]| -> Vec<Vec<f64>> {
            let mut w = vec![vec![0.01; 8]; 14];
            let mut start = 0;
            for m in 0..4 {
                for (rank, (op, j)) in pairs[2 * m..2 * m + 2].iter().enumerate() {
                    let k = DARTS_OPS.iter().position(|o| o == op).unwrap();
                    w[start + j][k] = 0.9 - 0.1 * rank as f64;
                }
                for row in &mut w[start..start + m + 2] {
                    row[0] = 5.0; // none
                }
                start += m + 2;
            }
            w
        };
        let ops: Vec<String> = DARTS_OPS.iter().map(|s| s.to_string()).collect();
        let got = DartsGenotype::from_scores(&plant(&g.normal), &plant(&g.reduce), &ops);
        assert_eq!(got, g);
        // The 7-op space (no `none` column): the same scores without column 0.
        let drop0 = |w: Vec<Vec<f64>>| -> Vec<Vec<f64>> { w.into_iter().map(|r| r[1..].to_vec()).collect() };
        let got7 = DartsGenotype::from_scores(&drop0(plant(&g.normal)), &drop0(plant(&g.reduce)), &ops[1..]);
        assert_eq!(got7, g);
        assert_eq!(darts_edges().len(), 14);
        assert_eq!(darts_edges()[..3], ["2<-0", "2<-1", "3<-0"]);
    }
}
