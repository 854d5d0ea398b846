//! `track`: a criterion scored on the epoch-end checkpoints of a search after the fact (what
//! `select.track_every` does during one), the checkpoints spread over rank groups.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::comm::{Collective, Groups};
use crate::config::{Config, SelectConfig};
use crate::error::{Error, Result};
use crate::influence::{Context, Subject, Timings};
use crate::search::SearchState;

/// One tracked selection: after `epoch`, with N = `n` when several were tracked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tracked {
    pub epoch: usize,
    pub n: Option<usize>,
    pub criterion: String,
    pub genotype: String,
    /// The genotype as JSON text (the structure `tracking.jsonl` records).
    pub genotype_json: String,
}

/// The epoch-end checkpoints of `run` (the state after epoch e is the checkpoint of epoch
/// e + 1 at step 0), every `every`-th epoch as `track_every` counts them: `(epoch, dir)`.
pub fn epoch_checkpoints(run: &Path, every: usize) -> Result<Vec<(usize, PathBuf)>> {
    let root = run.join("checkpoints");
    let mut out = Vec::new();
    for dir in crate::checkpoint::store::list(&root) {
        let meta = crate::search::checkpoint::read_meta(&dir)?;
        if meta.kind == "search" && meta.step == 0 && meta.epoch > 0 && meta.epoch % every.max(1) == 0 {
            out.push((meta.epoch - 1, dir));
        }
    }
    if out.is_empty() {
        return Err(Error::Path {
            path: root,
            msg: format!(
                "no epoch-end checkpoint{} (keep more with checkpoint.keep, or track during the search with select.track_every)",
                if every > 1 { format!(" at a multiple of {every} epochs") } else { String::new() }
            ),
        });
    }
    Ok(out)
}

/// The configured criterion on the supernet of `state` as it stands after `epoch` (every N of
/// `select.track_n` at once, the DARTS-IM work shared); the genotypes are agreed by all ranks.
pub fn score(
    cfg: &Config,
    comm: &dyn Collective,
    state: &SearchState,
    data: &dyn crate::data::Dataset,
    split: &crate::data::SearchSplit,
    epoch: usize,
) -> Result<Vec<Tracked>> {
    let timings = Timings::default();
    let subject = Subject { cfg, comm, net: state.net.as_ref(), alphas: &state.alphas, data, split };
    let ctx = Context::new(subject, &timings);
    let (ns, outcomes) = if cfg.select.track_n.is_empty() {
        (vec![None], vec![ctx.run()?])
    } else {
        let settings: Vec<SelectConfig> =
            cfg.select.track_n.iter().map(|&n| SelectConfig { n, ..cfg.select.clone() }).collect();
        (cfg.select.track_n.iter().map(|&n| Some(n)).collect(), ctx.darts_im_many(&settings)?)
    };
    ns.into_iter()
        .zip(outcomes)
        .map(|(n, o)| {
            let g = crate::select::coordinate(comm, state.net.spec(), &o.table)?;
            tracing::info!("tracking: after epoch {epoch}, {} selects {g}", o.table.criterion);
            Ok(Tracked {
                epoch,
                n,
                criterion: o.table.criterion,
                genotype: g.to_string(),
                genotype_json: serde_json::to_string(&g).expect("json"),
            })
        })
        .collect()
}

impl Tracked {
    /// The record's line in `tracking.jsonl` (with its benchmark entry when a table is set).
    pub fn line(&self, benchmark_table: Option<&Path>) -> Result<serde_json::Value> {
        Ok(crate::report::records::line_value(&crate::report::records::TrackingLine {
            epoch: self.epoch,
            n: self.n,
            criterion: self.criterion.clone(),
            genotype: self.genotype.clone(),
            genotype_json: serde_json::from_str(&self.genotype_json).expect("written as JSON"),
            benchmark: crate::report::benchmark::entry(benchmark_table, &self.genotype)?,
        }))
    }
}

/// Score every checkpoint of `list` with `cfg`'s criterion (every N of `select.track_n` at
/// once), checkpoints as work units in rank groups; all records on the world's coordinator.
pub fn run(
    world: &dyn Collective,
    cfg: &Config,
    list: &[(usize, PathBuf)],
    ranks_per_unit: usize,
) -> Result<Vec<Tracked>> {
    let groups = Groups::split(world, list.len(), ranks_per_unit)?;
    let mut cfg = cfg.clone();
    let source = crate::data::open(&mut cfg)?;
    let kind = crate::select::selection_kind(&cfg);
    let mut mine = Vec::new();
    let mut failure = None;
    for (k, (epoch, dir)) in list.iter().enumerate().filter(|(k, _)| groups.runs(*k)) {
        let comm = groups.comm.as_ref();
        let scored = (|| -> Result<Vec<Tracked>> {
            let mut state = SearchState::new(&cfg, comm, kind)?;
            crate::search::checkpoint::load_search(dir, &mut state)?;
            score(&cfg, comm, &state, source.data.as_ref(), &source.split, *epoch)
        })();
        match scored {
            Ok(t) => mine.extend(t),
            Err(e) => {
                failure = Some(format!("checkpoint {} (unit {k}): {e}", dir.display()));
                break;
            }
        }
    }
    // No stops here: scoring a checkpoint is short, and `track` is rerun whole.
    groups.conclude(world, failure, false, || Error::Invalid("unreachable: no stop".into()))?;
    let mut all = groups.gather(world, &mine)?;
    all.sort_by_key(|t| (t.epoch, t.n));
    Ok(all)
}
