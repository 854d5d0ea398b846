//! Figures of a run directory, from its tables alone (`dartsif-dist report DIR` re-renders them):
//!
//! | table | figure |
//! |---|---|
//! | `scores.json` | `scores.{svg,png}`: the criterion's scores per table (edge × op) next to softmax(α); `disagreement.{svg,png}`: per edge, Kendall τ between the criterion's and α's ranking of the ops |
//! | `ablation.json` | `ablation-<key>.{svg,png}`: the metric against each numeric swept key |
//! | `tracking.jsonl` (+ `genotypes.jsonl`) | `tracking.{svg,png}`: over epochs, the benchmark accuracy of each selection, or how many choices differ from the final one |
//! | `groundtruth.json` | `groundtruth-<k>.{svg,png}`: architecture score vs test accuracy per criterion |
//!
//! Sub-directories (`seed-*`, `combos/*`) are rendered too.

use std::path::{Path, PathBuf};

use super::plot::{Figure, Heatmap, Series};
use crate::error::{Error, Result};
use crate::stats::kendall_tau;

use super::records::read_record;

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.to_path_buf(), e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Path {
                path: path.to_path_buf(),
                msg: format!("line {}: not a valid record: {e}", i + 1),
            })
        })
        .collect()
}

/// Render every figure whose table is in `dir` (and its sub-directories); returns the files.
pub fn render_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::Path { path: dir.to_path_buf(), msg: "no such directory".into() });
    }
    let mut out = Vec::new();
    if dir.join("scores.json").is_file() {
        out.extend(scores_figures(dir)?);
    }
    if dir.join("ablation.json").is_file() {
        out.extend(ablation_figures(&read_record(&dir.join("ablation.json"))?, dir)?);
    }
    if dir.join("tracking.jsonl").is_file() {
        out.extend(tracking_figure(dir)?);
    }
    if dir.join("groundtruth.json").is_file() {
        out.extend(groundtruth_figures(dir)?);
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir.to_path_buf(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir() && !matches!(p.file_name().and_then(|n| n.to_str()), Some("checkpoints" | "logs" | "archs"))
        })
        .collect();
    subs.sort();
    for s in subs {
        out.extend(render_dir(&s)?);
    }
    Ok(out)
}

/// The cells, edges and ops of a `scores.json`, with scores and (when present) mixing weights
/// as `[cell][edge][op]`.
struct Scores {
    criterion: String,
    cells: Vec<(String, Vec<String>, Vec<String>)>,
    scores: Vec<Vec<Vec<f64>>>,
    mixing: Option<Vec<Vec<Vec<f64>>>>,
}

fn load_scores(path: &Path) -> Result<Scores> {
    let doc: super::records::ScoresRecord = read_record(path)?;
    let mut cells: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    let mut scores: Vec<Vec<Vec<f64>>> = Vec::new();
    for r in &doc.scores {
        let (c, e, o) = (r.cell.as_str(), r.edge.as_str(), r.op.as_str());
        let s = r.score.unwrap_or(f64::NEG_INFINITY);
        let ci = match cells.iter().position(|(n, _, _)| n == c) {
            Some(i) => i,
            None => {
                cells.push((c.to_string(), Vec::new(), Vec::new()));
                scores.push(Vec::new());
                cells.len() - 1
            }
        };
        let (_, edges, ops) = &mut cells[ci];
        let ei = match edges.iter().position(|x| x == e) {
            Some(i) => i,
            None => {
                edges.push(e.to_string());
                scores[ci].push(Vec::new());
                edges.len() - 1
            }
        };
        if !ops.iter().any(|x| x == o) {
            ops.push(o.to_string());
        }
        scores[ci][ei].push(s);
    }
    let mixing = (!doc.mixing.is_empty()).then_some(doc.mixing);
    Ok(Scores { criterion: doc.criterion, cells, scores, mixing })
}

fn scores_figures(dir: &Path) -> Result<Vec<PathBuf>> {
    let s = load_scores(&dir.join("scores.json"))?;
    let mut panels = Vec::new();
    for (c, (name, edges, ops)) in s.cells.iter().enumerate() {
        panels.push(Heatmap {
            title: format!("{}: {name}", s.criterion),
            rows: edges.clone(),
            cols: ops.clone(),
            values: s.scores[c].clone(),
        });
        if let Some(m) = &s.mixing {
            panels.push(Heatmap {
                title: format!("softmax(α): {name}"),
                rows: edges.clone(),
                cols: ops.clone(),
                values: m[c].clone(),
            });
        }
    }
    let mut out =
        Figure::Heatmaps { title: format!("{} scores (red = keep)", s.criterion), panels }.save(&dir.join("scores"))?;
    if let Some(m) = &s.mixing {
        let (mut labels, mut values) = (Vec::new(), Vec::new());
        for (c, (name, edges, _)) in s.cells.iter().enumerate() {
            for (e, edge) in edges.iter().enumerate() {
                labels.push(if s.cells.len() > 1 { format!("{name} {edge}") } else { edge.clone() });
                values.push(kendall_tau(&s.scores[c][e], &m[c][e]));
            }
        }
        out.extend(
            Figure::Bars {
                title: format!("agreement of {} with α per edge", s.criterion),
                y_label: "Kendall τ (ops ranked by criterion vs by α)".into(),
                labels,
                values,
            }
            .save(&dir.join("disagreement"))?,
        );
    }
    Ok(out)
}

fn tracking_figure(dir: &Path) -> Result<Vec<PathBuf>> {
    /// A selection after an epoch: the tracked criterion's, or α's (magnitude).
    struct Tracked {
        epoch: usize,
        series: String,
        genotype: String,
        arch: crate::space::Genotype,
        benchmark: Option<super::records::BenchmarkEntry>,
    }
    let tracked: Vec<Tracked> = read_lines::<super::records::TrackingLine>(&dir.join("tracking.jsonl"))?
        .into_iter()
        .map(|l| Tracked {
            epoch: l.epoch,
            // One series per criterion, and per N where several were tracked (select.track_n).
            series: match l.n {
                Some(n) => format!("{} N={n}", l.criterion),
                None => l.criterion,
            },
            genotype: l.genotype,
            arch: l.genotype_json,
            benchmark: l.benchmark,
        })
        .collect();
    let magnitude: Vec<Tracked> = if dir.join("genotypes.jsonl").is_file() {
        read_lines::<super::records::GenotypeLine>(&dir.join("genotypes.jsonl"))?
            .into_iter()
            .map(|l| Tracked {
                epoch: l.epoch,
                series: "magnitude (α)".into(),
                genotype: l.genotype,
                arch: l.genotype_json,
                benchmark: None,
            })
            .collect()
    } else {
        Vec::new()
    };
    let spec = std::fs::read_to_string(dir.join("config.toml"))
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("space")?.get("name")?.as_str().map(String::from))
        .and_then(|n| crate::space::SpaceSpec::by_name(&n));
    let config = std::fs::read_to_string(dir.join("config.toml")).ok().and_then(|t| t.parse::<toml::Table>().ok());
    let dataset =
        config.as_ref().and_then(|t| t.get("data")?.get("dataset")?.as_str().map(String::from)).unwrap_or_default();
    // The run's benchmark table, for α's genotypes (genotypes.jsonl has no lookups).
    let table = config
        .as_ref()
        .and_then(|t| t.get("select")?.get("benchmark_table")?.as_str().map(PathBuf::from))
        .and_then(|p| crate::report::benchmark::BenchmarkTable::load(&p).ok());
    let bench_of = |v: &Tracked| -> Option<f64> {
        let acc = match v.benchmark.as_ref().and_then(|b| b.accuracy.clone()) {
            Some(a) => a,
            None => table.as_ref()?.lookup(&v.genotype)?,
        };
        let cols: Vec<String> = acc.keys().cloned().collect();
        *acc.get(&crate::report::benchmark::preferred_column(&cols, &dataset)?)?
    };
    let mut criteria: Vec<String> = Vec::new();
    for v in &tracked {
        if !criteria.contains(&v.series) {
            criteria.push(v.series.clone());
        }
    }
    let mut lists: Vec<(String, Vec<&Tracked>)> =
        criteria.iter().map(|c| (c.clone(), tracked.iter().filter(|v| v.series == *c).collect())).collect();
    lists.push(("magnitude (α)".into(), magnitude.iter().collect()));
    let use_bench = tracked.iter().all(|v| bench_of(v).is_some()) && !tracked.is_empty();
    let mut series = Vec::new();
    for (name, list) in &lists {
        let points: Vec<(f64, f64, f64)> = if use_bench {
            list.iter().filter_map(|v| Some((v.epoch as f64, bench_of(v)?, 0.0))).collect()
        } else {
            let Some(spec) = &spec else { continue };
            let Some(last) = list.last().map(|v| crate::space::chosen_entries(spec, &v.arch)) else { continue };
            list.iter()
                .map(|v| {
                    let e = crate::space::chosen_entries(spec, &v.arch);
                    let diff = e.iter().flatten().zip(last.iter().flatten()).filter(|(a, b)| a != b).count();
                    (v.epoch as f64, diff as f64, 0.0)
                })
                .collect()
        };
        if !points.is_empty() {
            series.push(Series { label: name.clone(), points });
        }
    }
    let y_label =
        if use_bench { "benchmark accuracy of the selection" } else { "choices differing from the final selection" };
    Figure::Lines {
        title: "selection during the search".into(),
        x_label: "epoch".into(),
        y_label: y_label.into(),
        log_x: false,
        connect: true,
        series,
    }
    .save(&dir.join("tracking"))
}

fn groundtruth_figures(dir: &Path) -> Result<Vec<PathBuf>> {
    let doc: super::records::GroundTruthRecord = read_record(&dir.join("groundtruth.json"))?;
    let mut out = Vec::new();
    for (k, t) in doc.kendall_tau.iter().enumerate() {
        let points: Vec<(f64, f64, f64)> = t.points.iter().map(|&(x, y)| (x, y, 0.0)).collect();
        let criterion = &t.criterion;
        let fig = Figure::Lines {
            title: format!("{criterion}: Kendall τ = {:.3}", t.tau),
            x_label: format!("architecture score ({criterion}, sum over free edges)"),
            y_label: "test accuracy (trained from scratch)".into(),
            log_x: false,
            connect: false,
            series: vec![Series { label: criterion.to_string(), points }],
        };
        out.extend(fig.save(&dir.join(format!("groundtruth-{k}")))?);
    }
    Ok(out)
}

/// Figures of an `ablation.json`: for each numeric swept key with several values, the metric
/// (a benchmark's first test column when every row has it, else `tau_ref`) against that key,
/// one line per setting of the other non-seed keys, mean ± std over seeds.
pub fn ablation_figures(doc: &super::records::AblationRecord, out: &Path) -> Result<Vec<PathBuf>> {
    let dataset = doc.dataset.map(|d| d.to_string()).unwrap_or_default();
    let bench = doc.summary.first().and_then(|s| {
        let cols: Vec<String> = s.metrics.keys().filter_map(|k| k.strip_prefix("bench:").map(String::from)).collect();
        let c = super::benchmark::preferred_column(&cols, &dataset)?;
        Some(format!("bench:{c}"))
    });
    let metric = bench
        .filter(|b| doc.summary.iter().all(|s| s.metrics.get(b).is_some_and(|m| m.mean.is_some())))
        .unwrap_or_else(|| "tau_ref".to_string());
    let mut written = Vec::new();
    for sweep in &doc.sweeps {
        let (key, values) = (&sweep.key, &sweep.values);
        if key == "seed" || values.len() < 2 || values.iter().any(|v| v.parse::<f64>().is_err()) {
            continue;
        }
        let mut series: Vec<Series> = Vec::new();
        for s in &doc.summary {
            let Some(x) = s.labels.get(key).and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let name: Vec<String> =
                s.labels.iter().filter(|(k, _)| *k != key).map(|(k, v)| format!("{k}={v}")).collect();
            let name = if name.is_empty() { metric.clone() } else { name.join(" ") };
            // One seed: no spread to draw.
            let Some(m) = s.metrics.get(&metric) else { continue };
            let Some(y) = m.mean else { continue };
            let e = m.std.unwrap_or(0.0);
            match series.iter_mut().find(|q| q.label == name) {
                Some(q) => q.points.push((x, y, e)),
                None => series.push(Series { label: name, points: vec![(x, y, e)] }),
            }
        }
        let xs: Vec<f64> = values.iter().filter_map(|v| v.parse().ok()).collect();
        let log_x = xs.iter().all(|&x| x > 0.0)
            && xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max) / xs.iter().cloned().fold(f64::INFINITY, f64::min)
                >= 100.0;
        let fig = Figure::Lines {
            title: format!("{metric} vs {key} (mean ± std over seeds)"),
            x_label: key.clone(),
            y_label: metric.clone(),
            log_x,
            connect: true,
            series,
        };
        written.extend(fig.save(&out.join(format!("ablation-{}", key.replace('.', "_"))))?);
    }
    Ok(written)
}
