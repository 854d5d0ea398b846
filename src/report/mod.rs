//! Run outputs: `metrics.jsonl`, `report.json`, `genotype.txt`, the resolved `config.toml`.
//! Only the coordinator writes; whole files are written atomically, `metrics.jsonl` line by line.

pub mod benchmark;
pub mod figures;
pub mod plot;
pub mod records;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::loss::Tally;
use crate::search::{EpochStats, StepStats};
use crate::space::ScoreTable;
use crate::space::{Genotype, SpaceSpec};

/// Versions and layout of a run, recorded in `config.toml` under `[run]` and in `report.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RunInfo {
    pub dartsif_dist: String,
    pub tch: String,
    pub libtorch: String,
    pub mpi_library: String,
    pub comm_backend: String,
    pub world_size: usize,
    pub threads_per_rank: usize,
    pub micro_batch: usize,
    pub seed: u64,
}

impl RunInfo {
    pub fn collect(cfg: &Config, backend: &str, world: usize) -> Self {
        RunInfo {
            dartsif_dist: env!("CARGO_PKG_VERSION").into(),
            tch: env!("DARTSIF_TCH_VERSION").into(),
            libtorch: env!("DARTSIF_LIBTORCH_VERSION").into(),
            mpi_library: crate::comm::mpi_library_version().unwrap_or_else(|| "none".into()),
            comm_backend: backend.into(),
            world_size: world,
            threads_per_rank: tch::get_num_threads() as usize,
            micro_batch: cfg.micro_batch(world),
            seed: cfg.seed,
        }
    }
}

/// An append-only JSON-lines file.
/// An append-only JSON-lines file.
pub struct JsonLines {
    path: PathBuf,
    file: std::fs::File,
}

impl JsonLines {
    pub fn create(path: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(JsonLines { path, file })
    }

    /// Continue the file of a resumed run, keeping the lines `keep` accepts (the run writes the
    /// others again).
    pub fn resume(path: PathBuf, keep: impl Fn(&serde_json::Value) -> bool) -> Result<Self> {
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let kept: String = old
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| keep(&v)))
            .map(|l| format!("{l}\n"))
            .collect();
        write_atomic(&path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        Ok(JsonLines { path, file })
    }

    pub fn line(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{v}").and_then(|_| self.file.flush()).map_err(|e| Error::io(&self.path, e))
    }
}

/// The search's JSON-lines records: `metrics.jsonl` (`"kind"` = `step`, `epoch` or `test`),
/// and the per-epoch history `alphas.jsonl` (α of every cell type) and `genotypes.jsonl`.
pub struct Metrics {
    metrics: JsonLines,
    alphas: JsonLines,
    genotypes: JsonLines,
}

impl Metrics {
    pub fn create(dir: &Path) -> Result<Self> {
        Ok(Metrics {
            metrics: JsonLines::create(dir.join("metrics.jsonl"))?,
            alphas: JsonLines::create(dir.join("alphas.jsonl"))?,
            genotypes: JsonLines::create(dir.join("genotypes.jsonl"))?,
        })
    }

    /// Continue the records of a resumed run: keep the step lines before `global_step` and the
    /// epoch lines (and history) before `epoch`.
    pub fn resume(dir: &Path, global_step: usize, epoch: usize) -> Result<Self> {
        let before =
            |key: &str, limit: usize, v: &serde_json::Value| v[key].as_u64().is_some_and(|x| (x as usize) < limit);
        Ok(Metrics {
            metrics: JsonLines::resume(dir.join("metrics.jsonl"), |v| match v["kind"].as_str() {
                Some("step") => before("global_step", global_step, v),
                Some("epoch") => before("epoch", epoch, v),
                _ => false,
            })?,
            alphas: JsonLines::resume(dir.join("alphas.jsonl"), |v| before("epoch", epoch, v))?,
            genotypes: JsonLines::resume(dir.join("genotypes.jsonl"), |v| before("epoch", epoch, v))?,
        })
    }

    fn line(&mut self, v: serde_json::Value) -> Result<()> {
        self.metrics.line(v)
    }

    /// The architecture parameters (by state-file name) and the magnitude genotype after `epoch`.
    pub fn history(
        &mut self,
        epoch: usize,
        alphas: serde_json::Map<String, serde_json::Value>,
        genotype: &Genotype,
    ) -> Result<()> {
        self.alphas.line(json!({"epoch": epoch, "alphas": alphas}))?;
        self.genotypes.line(records::line_value(&records::GenotypeLine {
            epoch,
            genotype: genotype.to_string(),
            genotype_json: genotype.clone(),
        }))
    }

    pub fn step(&mut self, s: &StepStats) -> Result<()> {
        let mut v = serde_json::to_value(s).expect("serialisable");
        v["kind"] = json!("step");
        self.line(v)
    }

    pub fn epoch(&mut self, e: &EpochStats) -> Result<()> {
        let mut v = serde_json::to_value(e).expect("serialisable");
        v["kind"] = json!("epoch");
        self.line(v)
    }

    pub fn test(&mut self, t: &Tally) -> Result<()> {
        self.line(json!({"kind": "test", "test_loss": t.loss(), "test_acc": t.acc(), "count": t.count}))
    }
}

/// Write the resolved config with a `[run]` table; loading it again reproduces the run.
pub fn write_config(dir: &Path, cfg: &Config, run: &RunInfo) -> Result<()> {
    let mut text = String::from("# Resolved configuration of this run (dartsif-dist search --config <this file>).\n");
    text.push_str(&cfg.to_toml());
    text.push_str("\n[run]\n");
    text.push_str(&toml::to_string(run).expect("serialisable"));
    write_atomic(&dir.join("config.toml"), text.as_bytes())
}

/// `genotype.txt`: the genotype in its space's native text form, one line.
pub fn write_genotype(dir: &Path, g: &Genotype) -> Result<()> {
    write_atomic(&dir.join("genotype.txt"), format!("{g}\n").as_bytes())
}

/// `scores.json`, `scores.csv` and `genotype.txt` of a selection.
pub fn write_selection(cfg: &Config, spec: &SpaceSpec, sel: &crate::select::Selection, out: &Path) -> Result<()> {
    let t = &sel.table;
    let mut rows = Vec::new();
    let header: Vec<&str> =
        ["cell", "edge", "op", "score"].into_iter().chain(t.term_names.iter().map(String::as_str)).collect();
    let mut cells = Vec::new();
    let num = |x: f64| crate::fsutil::csv_num(x, |x| format!("{x:e}"));
    for (c, cell) in spec.cells.iter().enumerate() {
        for (e, edge) in cell.edges.iter().enumerate() {
            for (o, op) in cell.ops.iter().enumerate() {
                let score = t.scores[c][e][o];
                let terms: Vec<f64> = t.terms.get(c).map(|x| x[e][o].clone()).unwrap_or_default();
                rows.push(records::ScoreRow {
                    cell: cell.name.clone(),
                    edge: edge.clone(),
                    op: op.clone(),
                    score: score.is_finite().then_some(score),
                    terms: t
                        .term_names
                        .iter()
                        .zip(&terms)
                        .map(|(n, v)| (n.clone(), v.is_finite().then_some(*v)))
                        .collect(),
                });
                let mut row = vec![cell.name.clone(), edge.clone(), op.clone(), num(score)];
                row.extend(terms.iter().map(|&v| num(v)));
                cells.push(row);
            }
        }
    }
    let s = &cfg.select;
    let doc = records::ScoresRecord {
        benchmark: benchmark::entry(s.benchmark_table.as_deref(), &sel.genotype.to_string())?,
        criterion: t.criterion.clone(),
        diagnostics: sel.diagnostics.clone(),
        eval_batch_size: cfg.select_batch(),
        eval_batches: s.n,
        genotype: sel.genotype.to_string(),
        ihvp: s.ihvp.to_string(),
        mixing: sel.mixing.clone(),
        scores: rows,
        settings: serde_json::to_value(s).expect("serialisable"),
        timing: sel.timing.clone(),
    };
    records::write_record(&out.join("scores.json"), &doc)?;
    write_atomic(&out.join("scores.csv"), crate::fsutil::csv_text(&header, &cells).as_bytes())?;
    write_genotype(out, &sel.genotype)?;
    Ok(())
}

/// `report.json`: per edge α, softmax(α), the chosen op, and the run's summary.
#[allow(clippy::too_many_arguments)]
pub fn write_report(
    dir: &Path,
    spec: &SpaceSpec,
    genotype: &Genotype,
    table: &ScoreTable,
    alpha: &[Vec<Vec<f64>>],
    softmax: &[Vec<Vec<f64>>],
    last_epoch: Option<&EpochStats>,
    test: Option<&Tally>,
    run: &RunInfo,
    benchmark: Option<records::BenchmarkEntry>,
) -> Result<()> {
    let chosen = crate::space::chosen_entries(spec, genotype);
    let mut edges = Vec::new();
    for (c, cell) in spec.cells.iter().enumerate() {
        for (e, label) in cell.edges.iter().enumerate() {
            let picked: Vec<&String> = chosen
                .get(c)
                .and_then(|v| v.get(e))
                .map(|v| v.iter().map(|&o| &cell.ops[o]).collect())
                .unwrap_or_default();
            edges.push(records::EdgeRecord {
                cell: cell.name.clone(),
                edge: label.clone(),
                ops: cell.ops.clone(),
                alpha: alpha[c][e].clone(),
                softmax: softmax[c][e].clone(),
                scores: table.scores[c][e].iter().map(|s| s.is_finite().then_some(*s)).collect(),
                // One op (or null) per edge; several parents for a 1Shot1 input row.
                chosen: match picked.len() {
                    0 => None,
                    1 => Some(records::Chosen::One(picked[0].clone())),
                    _ => Some(records::Chosen::Several(picked.into_iter().cloned().collect())),
                },
            });
        }
    }
    let rec = records::ReportRecord {
        space: spec.name.clone(),
        ops: spec.cells[0].ops.clone(),
        criterion: table.criterion.clone(),
        genotype: genotype.to_string(),
        genotype_json: genotype.clone(),
        edges,
        final_epoch: last_epoch.map(|e| serde_json::to_value(e).expect("serialisable")),
        test: test.map(|t| records::TestRecord { loss: t.loss(), acc: t.acc(), count: t.count }),
        benchmark,
        run: run.clone(),
    };
    records::write_record(&dir.join("report.json"), &rec)
}
