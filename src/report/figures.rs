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

use serde_json::Value;

use super::plot::{Figure, Heatmap, Series};
use crate::error::{Error, Result};
use crate::stats::kendall_tau;

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.to_path_buf(), e))?;
    serde_json::from_str(&text).map_err(|e| Error::Path { path: path.to_path_buf(), msg: format!("not JSON: {e}") })
}

/// A typed record from a JSON file (one line naming the file and what is wrong otherwise).
fn read_record<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.to_path_buf(), e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Path { path: path.to_path_buf(), msg: format!("not a valid record: {e}") })
}

fn read_lines(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.to_path_buf(), e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::Path { path: path.to_path_buf(), msg: format!("line {}: not JSON: {e}", i + 1) })
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
        out.extend(ablation_figures(&read_json(&dir.join("ablation.json"))?, dir)?);
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
    let tracked = read_lines(&dir.join("tracking.jsonl"))?;
    let magnitude =
        if dir.join("genotypes.jsonl").is_file() { read_lines(&dir.join("genotypes.jsonl"))? } else { Vec::new() };
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
    let bench_of = |v: &Value| -> Option<f64> {
        let found;
        let acc = match v["benchmark"]["accuracy"].as_object() {
            Some(a) => a,
            None => {
                found = table.as_ref()?.lookup(v["genotype"].as_str()?)?;
                found.as_object()?
            }
        };
        let cols: Vec<String> = acc.keys().cloned().collect();
        acc.get(&crate::report::benchmark::preferred_column(&cols, &dataset)?)?.as_f64()
    };
    // One series per criterion, and per N where several were tracked (select.track_n).
    let name = |v: &Value| match v["n"].as_u64() {
        Some(n) => format!("{} N={n}", v["criterion"].as_str().unwrap_or("?")),
        None => v["criterion"].as_str().unwrap_or("?").to_string(),
    };
    let mut criteria: Vec<String> = Vec::new();
    for v in &tracked {
        let c = name(v);
        if !criteria.contains(&c) {
            criteria.push(c);
        }
    }
    let mut lists: Vec<(String, Vec<&Value>)> =
        criteria.iter().map(|c| (c.clone(), tracked.iter().filter(|v| name(v) == *c).collect())).collect();
    lists.push(("magnitude (α)".into(), magnitude.iter().collect()));
    let use_bench = tracked.iter().all(|v| bench_of(v).is_some()) && !tracked.is_empty();
    let mut series = Vec::new();
    for (name, list) in &lists {
        let points: Vec<(f64, f64, f64)> = if use_bench {
            list.iter().filter_map(|v| Some((v["epoch"].as_f64()?, bench_of(v)?, 0.0))).collect()
        } else {
            let Some(spec) = &spec else { continue };
            let entries = |v: &Value| -> Option<Vec<Vec<Vec<usize>>>> {
                let g: crate::space::Genotype = serde_json::from_value(v["genotype_json"].clone()).ok()?;
                Some(crate::space::chosen_entries(spec, &g))
            };
            let Some(last) = list.last().and_then(|v| entries(v)) else { continue };
            list.iter()
                .filter_map(|v| {
                    let e = entries(v)?;
                    let diff = e.iter().flatten().zip(last.iter().flatten()).filter(|(a, b)| a != b).count();
                    Some((v["epoch"].as_f64()?, diff as f64, 0.0))
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
    let doc = read_json(&dir.join("groundtruth.json"))?;
    let mut out = Vec::new();
    for (k, t) in doc["kendall_tau"].as_array().cloned().unwrap_or_default().iter().enumerate() {
        let points: Vec<(f64, f64, f64)> = t["points"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?, 0.0))).collect())
            .unwrap_or_default();
        let criterion = t["criterion"].as_str().unwrap_or("?");
        let fig = Figure::Lines {
            title: format!("{criterion}: Kendall τ = {:.3}", t["tau"].as_f64().unwrap_or(f64::NAN)),
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
pub fn ablation_figures(doc: &serde_json::Value, out: &Path) -> Result<Vec<PathBuf>> {
    let sweeps: Vec<(String, Vec<String>)> = doc["sweeps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    let vals = s["values"].as_array()?.iter().filter_map(|v| v.as_str().map(String::from)).collect();
                    Some((s["key"].as_str()?.to_string(), vals))
                })
                .collect()
        })
        .unwrap_or_default();
    let summary = doc["summary"].as_array().cloned().unwrap_or_default();
    let bench = summary.first().and_then(|s| {
        let cols: Vec<String> =
            s["metrics"].as_object()?.keys().filter_map(|k| k.strip_prefix("bench:").map(String::from)).collect();
        let c = super::benchmark::preferred_column(&cols, doc["dataset"].as_str().unwrap_or(""))?;
        Some(format!("bench:{c}"))
    });
    let metric = bench
        .filter(|b| summary.iter().all(|s| s["metrics"][b.as_str()]["mean"].is_number()))
        .unwrap_or_else(|| "tau_ref".to_string());
    let mut written = Vec::new();
    for (key, values) in &sweeps {
        if key == "seed" || values.len() < 2 || values.iter().any(|v| v.parse::<f64>().is_err()) {
            continue;
        }
        let mut series: Vec<Series> = Vec::new();
        for s in &summary {
            let labels = s["labels"].as_object().cloned().unwrap_or_default();
            let Some(x) = labels.get(key).and_then(|v| v.as_str()).and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let name: Vec<String> = labels
                .iter()
                .filter(|(k, _)| *k != key)
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            let name = if name.is_empty() { metric.clone() } else { name.join(" ") };
            let m = &s["metrics"][metric.as_str()];
            // One seed: no spread to draw.
            let Some(y) = m["mean"].as_f64() else { continue };
            let e = m["std"].as_f64().unwrap_or(0.0);
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
