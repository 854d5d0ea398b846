//! NAS-Bench-201: ops, edge order and the arch string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// NB201 candidate ops in α column order (spaces.md §3.1).
pub const NB201_OPS: [&str; 5] = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"];

/// Edge `e` (row of α) as (to-node i, from-node j): rows 0..6 are
/// `1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2`, i.e. e = i(i−1)/2 + j.
pub fn nb201_edge(e: usize) -> (usize, usize) {
    let mut i = 1;
    while (i + 1) * i / 2 <= e {
        i += 1;
    }
    (i, e - i * (i - 1) / 2)
}

/// An NB201 cell: one op index per edge in row order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nb201Genotype {
    pub ops: Vec<usize>,
}

impl Nb201Genotype {
    /// Best-scoring op per edge; `exclude` (the `none` column) is never chosen. Ties go to the
    /// lower op index.
    pub fn from_scores(scores: &[Vec<f64>], exclude: Option<usize>) -> Self {
        let ops = scores
            .iter()
            .map(|row| {
                let mut best: Option<(usize, f64)> = None;
                for (o, &s) in row.iter().enumerate() {
                    if Some(o) == exclude {
                        continue;
                    }
                    if best.is_none_or(|(_, b)| s > b) {
                        best = Some((o, s));
                    }
                }
                best.expect("an edge has a candidate op").0
            })
            .collect();
        Nb201Genotype { ops }
    }
}

impl fmt::Display for Nb201Genotype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = (1..4)
            .map(|i| {
                let parts: String =
                    (0..i).map(|j| format!("{}~{j}|", NB201_OPS[self.ops[i * (i - 1) / 2 + j]])).collect();
                format!("|{parts}")
            })
            .collect();
        write!(f, "{}", nodes.join("+"))
    }
}

impl FromStr for Nb201Genotype {
    type Err = String;

    /// Parse `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (AutoDL's `Structure.tostr()` format).
    fn from_str(s: &str) -> Result<Self, String> {
        let nodes: Vec<&str> = s.trim().split('+').collect();
        if nodes.len() != 3 {
            return Err(format!("NB201 arch string needs 3 nodes separated by '+', got {}", nodes.len()));
        }
        let mut ops = vec![usize::MAX; 6];
        for (n, node) in nodes.iter().enumerate() {
            let i = n + 1;
            let inner = node
                .strip_prefix('|')
                .and_then(|x| x.strip_suffix('|'))
                .ok_or_else(|| format!("node {i} must be written |op~j|...|, got {node:?}"))?;
            let items: Vec<&str> = inner.split('|').collect();
            if items.len() != i {
                return Err(format!("node {i} must have {i} inputs, got {}", items.len()));
            }
            for item in items {
                let (op, j) = item.split_once('~').ok_or_else(|| format!("expected op~input, got {item:?}"))?;
                let o = NB201_OPS.iter().position(|&x| x == op).ok_or_else(|| format!("unknown NB201 op {op:?}"))?;
                let j: usize = j.parse().map_err(|_| format!("bad input index in {item:?}"))?;
                if j >= i {
                    return Err(format!("node {i} cannot take input {j}"));
                }
                let e = i * (i - 1) / 2 + j;
                if ops[e] != usize::MAX {
                    return Err(format!("edge {i}<-{j} given twice"));
                }
                ops[e] = o;
            }
        }
        Ok(Nb201Genotype { ops })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_order_matches_autodl_sorted_keys() {
        let labels: Vec<String> = (0..6).map(|e| nb201_edge(e)).map(|(i, j)| format!("{i}<-{j}")).collect();
        assert_eq!(labels, ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]);
    }

    #[test]
    fn arch_string_round_trips_the_reference_example() {
        // spaces.md §3.4, arch index 9930.
        let s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|";
        let g: Nb201Genotype = s.parse().unwrap();
        assert_eq!(g.ops, vec![3, 3, 3, 1, 3, 3]);
        assert_eq!(g.to_string(), s);
    }

    #[test]
    fn every_genotype_round_trips() {
        // All 5^6 = 15,625 cells of the space.
        for code in 0..15_625usize {
            let ops: Vec<usize> = (0..6).map(|e| code / 5usize.pow(e as u32) % 5).collect();
            let g = Nb201Genotype { ops };
            assert_eq!(g.to_string().parse::<Nb201Genotype>().unwrap(), g);
            // JSON of the tagged genotype (report.json's genotype_json) round-trips too.
            let tagged = super::super::Genotype::Nb201(g);
            let json = serde_json::to_string(&tagged).unwrap();
            assert_eq!(serde_json::from_str::<super::super::Genotype>(&json).unwrap(), tagged);
        }
    }

    #[test]
    fn bad_strings_are_rejected() {
        assert!("|skip_connect~0|".parse::<Nb201Genotype>().is_err());
        assert!("|conv~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
            .parse::<Nb201Genotype>()
            .unwrap_err()
            .contains("unknown NB201 op"));
        assert!("|skip_connect~1|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
            .parse::<Nb201Genotype>()
            .is_err());
    }

    #[test]
    fn selection_excludes_none() {
        let scores = vec![vec![9.0, 1.0, 2.0, 0.5, 0.0]; 6];
        let g = Nb201Genotype::from_scores(&scores, Some(0));
        assert_eq!(g.ops, vec![2; 6]);
        assert_eq!(Nb201Genotype::from_scores(&scores, None).ops, vec![0; 6]);
    }
}
