//! Experiments as batch jobs: ablations over selection settings ([`ablation`]), ground truth of
//! one's own by training every architecture of a small space ([`groundtruth`]), and the
//! statistics their tables report ([`stats`]). Independent work units run side by side in rank
//! groups ([`crate::comm::Groups`]).

pub mod ablation;
pub mod compare;
pub mod groundtruth;
pub mod tracking;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What the coordinator decides before a resumable batch job: the units left to run and the
/// records kept from an earlier run, or why the earlier records cannot be used.
pub(crate) type Decision<T> = std::result::Result<(Vec<usize>, Vec<T>), String>;

/// One `--sweep key=v1,v2,…`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// The key as given (`n`, `ihvp`, `select.eta`, `seed`).
    pub key: String,
    /// The config key it sets (`select.n`; empty for `seed`, which picks runs).
    pub path: String,
    pub values: Vec<String>,
}

impl Sweep {
    /// Parse `key=v1,v2,…`. A bare key is a `select.*` key (`n` → `select.n`); `seed` picks the
    /// runs of a multi-seed search (`DIR/seed-S`).
    pub fn parse(arg: &str) -> Result<Sweep> {
        let bad = |msg: String| Error::config(format!("--sweep {arg}"), "sweep", msg);
        let (key, vals) = arg.split_once('=').ok_or_else(|| bad("expected key=v1,v2,…".into()))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|p| p.is_empty()) {
            return Err(bad(format!("malformed key {key:?}")));
        }
        let values: Vec<String> = vals.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().any(|v| v.is_empty()) {
            return Err(bad("an empty value in the list".into()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(v) = values.iter().find(|v| !seen.insert(v.as_str())) {
            return Err(bad(format!("value {v:?} is listed twice")));
        }
        let path = match key {
            "seed" => {
                if let Some(v) = values.iter().find(|v| v.parse::<u64>().is_err()) {
                    return Err(bad(format!("seed {v:?} is not a non-negative integer")));
                }
                String::new()
            }
            k if k.contains('.') => k.to_string(),
            k => format!("select.{k}"),
        };
        Ok(Sweep { key: key.to_string(), path, values })
    }
}

/// Every combination of the sweeps' values, the last sweep varying fastest.
pub fn product(sweeps: &[&Sweep]) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    for s in sweeps {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                s.values.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push(v.clone());
                    p
                })
            })
            .collect();
    }
    out
}

/// The runs of a search directory: `[(None, DIR)]` for one run, or `[(Some(S), DIR/seed-S)]`
/// for a multi-seed search (`search --seeds`), restricted to `only` when given.
pub fn seed_runs(dir: &Path, only: Option<&[u64]>) -> Result<Vec<(Option<u64>, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir.to_path_buf(), e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let s = name.strip_prefix("seed-")?.parse::<u64>().ok()?;
            e.path().join("config.toml").is_file().then(|| (s, e.path()))
        })
        .collect();
    found.sort();
    match only {
        Some(seeds) => seeds
            .iter()
            .map(|s| {
                found.iter().find(|(f, _)| f == s).map(|(f, p)| (Some(*f), p.clone())).ok_or_else(|| Error::Path {
                    path: dir.join(format!("seed-{s}")),
                    msg: format!("no run of seed {s} here (run `search --seeds …` first)"),
                })
            })
            .collect(),
        None if found.is_empty() => Ok(vec![(None, dir.to_path_buf())]),
        None => Ok(found.into_iter().map(|(s, p)| (Some(s), p)).collect()),
    }
}

/// Parse `--seeds 1,2,3` (distinct non-negative integers).
pub fn parse_seeds(arg: &str) -> Result<Vec<u64>> {
    let seeds = arg
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::config("--seeds", "seeds", format!("{:?} is not a non-negative integer", v.trim())))
        })
        .collect::<Result<Vec<u64>>>()?;
    let mut seen = std::collections::HashSet::new();
    if let Some(s) = seeds.iter().find(|s| !seen.insert(**s)) {
        return Err(Error::config("--seeds", "seeds", format!("seed {s} is listed twice")));
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_parse_and_multiply() {
        let n = Sweep::parse("n=1,10,20").unwrap();
        assert_eq!((n.path.as_str(), n.values.len()), ("select.n", 3));
        let m = Sweep::parse("ihvp=woodbury,neumann").unwrap();
        assert_eq!(Sweep::parse("select.eta=1e-3").unwrap().path, "select.eta");
        let p = product(&[&n, &m]);
        assert_eq!(p.len(), 6);
        assert_eq!(p[1], vec!["1".to_string(), "neumann".to_string()]);
        for bad in ["n", "=1", "n=1,,2", "n=1,1", "seed=a", "a..b=1"] {
            assert!(Sweep::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_seeds("3, 1").unwrap(), vec![3, 1]);
        assert!(parse_seeds("1,1").is_err() && parse_seeds("x").is_err());
    }
}
