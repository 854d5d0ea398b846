//! The resumable state of a candidate-by-candidate selection (`drop`, `darts-if`): the terms
//! scored so far, in a [`crate::checkpoint::store`] directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{check_same, pinned, read_json, store, stored_config, write_json};
use crate::config::Config;
use crate::error::Result;

/// Progress of the candidate loop of a `drop`/`darts-if` selection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SelectMeta {
    pub kind: String,
    pub criterion: String,
    /// (candidate index, loss change, quadratic term) of every candidate scored so far.
    pub records: Vec<(usize, f64, f64)>,
    pub world_size: usize,
    /// The resolved config of the selection (TOML).
    pub config: String,
}

const PROGRESS: &str = "progress.json";

/// Write a selection progress checkpoint under `root`, keeping the newest `keep`; its step is
/// the number of candidates scored.
pub fn save_select(root: &Path, meta: &SelectMeta, keep: usize) -> Result<PathBuf> {
    store::commit(root, meta.records.len() as u64, keep, |dir| write_json(dir, PROGRESS, meta))
}

/// Read a verified selection checkpoint and check it against `cfg`: the criterion's settings,
/// the seed, the space and the data must be those of the checkpoint (the world size may
/// differ: each candidate is scored by one rank alone).
pub fn load_select(dir: &Path, cfg: &Config) -> Result<SelectMeta> {
    store::verify(dir)?;
    let meta: SelectMeta = read_json(dir, PROGRESS, "a selection checkpoint")?;
    let old = stored_config(&meta.config, &dir.join(PROGRESS))?;
    let settings = |c: &Config| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pinned(c, 1)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("search.") && *k != "world size")
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let table = toml::Value::try_from(&c.select).expect("select config serialises");
        if let toml::Value::Table(t) = table {
            for (k, val) in t {
                if k != "after_search" {
                    v.push((format!("select.{k}"), val.to_string()));
                }
            }
        }
        v
    };
    check_same(settings(&old), settings(cfg), dir, "resume with the same setting or start a new selection")?;
    Ok(meta)
}
