//! Discretisation: from per-(cell, edge, op) scores to a genotype, decided by the coordinator
//! and broadcast so that every rank reports the same architecture; [`fidelity`] checks criteria
//! against the actual effect of removing each op.

pub mod fidelity;
pub mod progressive;

use std::path::Path;

use serde_json::json;
use tch::Tensor;

use crate::comm::{broadcast_value, Collective};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::influence::{Context, Resumable, Subject, Timings};
use crate::space::{derive_genotype, Genotype, ScoreTable, SpaceSpec};
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

/// The searched supernet and α of a run, in the selection's precision (`select.precision`), on
/// `device`.
pub fn load_searched(cfg: &Config, run: &Path, device: tch::Device) -> Result<(Box<dyn Supernet>, Vec<Tensor>)> {
    let kind = selection_kind(cfg);
    let net = crate::supernet::build(cfg, cfg.seed, kind, device)?;
    let device = net.params().tensors[0].device();
    let alphas: Vec<Tensor> = net.spec().alpha_shapes().iter().map(|s| Tensor::zeros(s, (kind, device))).collect();
    crate::supernet::state::load_supernet(net.as_ref(), &alphas, &run.join("supernet.safetensors"))?;
    Ok((net, alphas))
}

/// The selection's precision (`select.precision`).
pub fn selection_kind(cfg: &Config) -> tch::Kind {
    if cfg.select.precision == crate::config::Precision::F64 {
        tch::Kind::Double
    } else {
        tch::Kind::Float
    }
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
        .map(crate::supernet::table_of)
        .collect()
}

/// Score every op with the configured criterion and derive the genotype on the coordinator
/// (every rank returns it); [`crate::report::write_selection`] writes the outputs.
pub fn run(subject: Subject, res: &Resumable) -> Result<Selection> {
    let Subject { comm, net, alphas, .. } = subject;
    let timings = Timings::default();
    let t0 = std::time::Instant::now();
    let ctx = Context::new(subject, &timings);
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
    let gpu = device_memory_per_rank(comm)?;
    let mut timing = json!({
        "total_s": total,
        "autograd_s": timings.autograd.get(),
        "ihvp_linalg_s": timings.linalg.get(),
        "communication_s": timings.comm.get(),
        "ranks": comm.size(),
        "peak_rss_mb_per_rank": rss,
    });
    if let Some(gpu) = gpu {
        timing["peak_device_mb_per_rank"] = json!(gpu);
    }
    let mixing = mixing_table(net.spec(), alphas);
    Ok(Selection { table: outcome.table, genotype, diagnostics: outcome.diagnostics, timing, mixing })
}

/// GPU memory in use on every rank in MB ([`crate::device::memory_in_use_mb`]: the caching
/// allocator's high-water mark plus the CUDA context), gathered on the coordinator; `None` when
/// the ranks compute on the CPU.
fn device_memory_per_rank(comm: &dyn Collective) -> Result<Option<Vec<f64>>> {
    if !comm.device().is_cuda() {
        return Ok(None);
    }
    let mine = crate::device::memory_in_use_mb(comm.device()).unwrap_or(f64::NAN);
    tracing::info!("GPU memory in use on this rank: {mine:.0} MB");
    gather_f64(comm, mine).map(Some)
}

/// One number of every rank, in rank order on the coordinator (empty elsewhere).
fn gather_f64(comm: &dyn Collective, mine: f64) -> Result<Vec<f64>> {
    let all = comm.gather_bytes(0, &mine.to_le_bytes())?;
    Ok(all.iter().filter_map(|b| Some(f64::from_le_bytes(b.as_slice().try_into().ok()?))).collect())
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
    gather_f64(comm, mine)
}
