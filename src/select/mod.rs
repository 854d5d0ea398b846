//! Discretisation: from per-(cell, edge, op) scores to a genotype, decided by the coordinator
//! and broadcast so that every rank reports the same architecture; [`fidelity`] checks criteria
//! against the actual effect of removing each op.

pub mod fidelity;
pub mod progressive;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::Tensor;

use crate::checkpoint::write_atomic;
use crate::comm::{broadcast_value, Collective};
use crate::config::Config;
use crate::data::{Dataset, SearchSplit};
use crate::error::{Error, Result};
use crate::influence::{Context, Resumable, Timings};
use crate::search::SearchState;
use crate::space::{derive_genotype, Genotype, SpaceSpec};
use crate::supernet::Supernet;

/// A search run's config (`DIR/config.toml` with `overrides`), after checking that the run
/// finished (its `supernet.safetensors` exists): for commands that read a searched supernet.
pub fn open_searched(run: &Path, overrides: &[String]) -> Result<Config> {
    let cfg_path = run.join("config.toml");
    if !cfg_path.is_file() {
        return Err(Error::Path { path: run.to_path_buf(), msg: "not a run directory (no config.toml)".into() });
    }
    let cfg = Config::load(Some(&cfg_path), overrides)?;
    let state = run.join("supernet.safetensors");
    if !state.is_file() {
        return Err(Error::Path { path: state, msg: "no supernet state (the search did not finish?)".into() });
    }
    Ok(cfg)
}

/// The searched supernet and α of a run, in the selection's precision (`select.precision`).
pub fn load_searched(cfg: &Config, run: &Path) -> Result<(Box<dyn Supernet>, Vec<Tensor>)> {
    let kind = selection_kind(cfg);
    let net = crate::supernet::build(cfg, cfg.seed, kind)?;
    let alphas: Vec<Tensor> =
        net.spec().alpha_shapes().iter().map(|s| Tensor::zeros(s, (kind, crate::device::compute()))).collect();
    crate::checkpoint::load_supernet(net.as_ref(), &alphas, &run.join("supernet.safetensors"))?;
    Ok((net, alphas))
}

/// The selection's precision (`select.precision`).
pub fn selection_kind(cfg: &Config) -> tch::Kind {
    if cfg.select.precision == "f64" {
        tch::Kind::Double
    } else {
        tch::Kind::Float
    }
}

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

/// Vanilla DARTS: the score of an op is its mixing weight softmax(α) (DARTS ranks a node's
/// incoming edges by it; within an edge it ranks as α does).
pub fn magnitude_scores(state: &SearchState) -> ScoreTable {
    ScoreTable::plain("magnitude", state.softmax_table())
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

/// What a selection produced.
pub struct Selection {
    pub table: ScoreTable,
    pub genotype: Genotype,
    pub diagnostics: serde_json::Value,
    pub timing: serde_json::Value,
    /// The mixing weights softmax(α) per table (β̃·softmax(α) for PC-DARTS), shown next to the
    /// scores in `scores.json` and its heatmap.
    pub mixing: Vec<Vec<Vec<f64>>>,
}

/// softmax(α) per architecture table, as nested vectors.
pub fn mixing_table(spec: &SpaceSpec, alphas: &[Tensor]) -> Vec<Vec<Vec<f64>>> {
    spec.table_weights(&alphas.iter().map(|a| a.detach().to_kind(tch::Kind::Double)).collect::<Vec<_>>())
        .iter()
        .map(crate::search::table_of)
        .collect()
}

/// Score every op with the configured criterion, derive the genotype on the coordinator, and
/// (rank 0) write `scores.json`, `scores.csv` and `genotype.txt` into `out`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    cfg: &Config,
    comm: &dyn Collective,
    net: &dyn Supernet,
    alphas: &[Tensor],
    data: &dyn Dataset,
    split: &SearchSplit,
    out: &Path,
    res: &Resumable,
) -> Result<Selection> {
    let timings = Timings::default();
    let t0 = std::time::Instant::now();
    let ctx = Context::new(cfg, net, alphas, comm, data, split, &timings);
    let outcome = ctx.run_resumable(res)?;
    for (c, cell) in outcome.table.scores.iter().enumerate() {
        for (e, row) in cell.iter().enumerate() {
            if row.iter().any(|s| s.is_nan() || *s == f64::INFINITY) {
                return Err(Error::NonFinite {
                    quantity: format!("{} score", outcome.table.criterion),
                    at: format!("cell {}, edge {}", net.spec().cells[c].name, net.spec().cells[c].edges[e]),
                });
            }
        }
    }
    let genotype = coordinate(comm, net.spec(), &outcome.table)?;
    let total = t0.elapsed().as_secs_f64();
    let rss = peak_rss_per_rank(comm)?;
    let timing = json!({
        "total_s": total,
        "autograd_s": timings.autograd.get(),
        "ihvp_linalg_s": timings.linalg.get(),
        "communication_s": timings.comm.get(),
        "ranks": comm.size(),
        "peak_rss_mb_per_rank": rss,
    });
    let mixing = mixing_table(net.spec(), alphas);
    let sel = Selection { table: outcome.table, genotype, diagnostics: outcome.diagnostics, timing, mixing };
    if comm.is_coordinator() {
        write_outputs(cfg, net.spec(), &sel, out)?;
    }
    Ok(sel)
}

/// Peak resident memory (VmHWM) of every rank in MB, gathered on the coordinator (empty
/// elsewhere, or where /proc is unavailable).
fn peak_rss_per_rank(comm: &dyn Collective) -> Result<Vec<f64>> {
    let mine = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0);
    tracing::info!("peak resident memory of this rank: {mine:.0} MB");
    let all = comm.gather_bytes(0, &mine.to_le_bytes())?;
    Ok(all.iter().filter_map(|b| Some(f64::from_le_bytes(b.as_slice().try_into().ok()?))).collect())
}

/// `scores.json`, `scores.csv` and `genotype.txt` of a selection.
pub fn write_outputs(cfg: &Config, spec: &SpaceSpec, sel: &Selection, out: &Path) -> Result<()> {
    let t = &sel.table;
    let mut rows = Vec::new();
    let mut csv = String::from("cell,edge,op,score");
    for name in &t.term_names {
        csv.push(',');
        csv.push_str(name);
    }
    csv.push('\n');
    let num = |x: f64| if x.is_finite() { format!("{x:e}") } else { String::new() };
    for (c, cell) in spec.cells.iter().enumerate() {
        for (e, edge) in cell.edges.iter().enumerate() {
            for (o, op) in cell.ops.iter().enumerate() {
                let score = t.scores[c][e][o];
                let terms: Vec<f64> = t.terms.get(c).map(|x| x[e][o].clone()).unwrap_or_default();
                let mut named = serde_json::Map::new();
                for (n, v) in t.term_names.iter().zip(&terms) {
                    named.insert(n.clone(), json!(v.is_finite().then_some(*v)));
                }
                rows.push(json!({
                    "cell": cell.name, "edge": edge, "op": op,
                    "score": score.is_finite().then_some(score),
                    "terms": named,
                }));
                csv.push_str(&format!("{},{},{},{}", cell.name, edge, op, num(score)));
                for v in &terms {
                    csv.push(',');
                    csv.push_str(&num(*v));
                }
                csv.push('\n');
            }
        }
    }
    let s = &cfg.select;
    let doc = json!({
        "criterion": t.criterion,
        "ihvp": s.ihvp,
        "settings": s,
        "eval_batches": s.n,
        "eval_batch_size": cfg.select_batch(),
        "genotype": sel.genotype.to_string(),
        "benchmark": crate::report::benchmark::entry(s.benchmark_table.as_deref(), &sel.genotype.to_string())?,
        "scores": rows,
        "mixing": sel.mixing,
        "diagnostics": sel.diagnostics,
        "timing": sel.timing,
    });
    write_atomic(&out.join("scores.json"), serde_json::to_string_pretty(&doc).expect("json").as_bytes())?;
    write_atomic(&out.join("scores.csv"), csv.as_bytes())?;
    crate::report::write_genotype(out, &sel.genotype)?;
    Ok(())
}
