//! `compare`: the seed paper's Table 4 as one batch job. Methods are a search strategy with an
//! optional selection criterion (`darts-1st+darts-im`, `gdas`, `random`); every (method, seed)
//! is a unit, methods that differ only in the criterion share one searched supernet, and the
//! table reports mean ± std over seeds of every benchmark column (population std, as the
//! paper), or the supernet's accuracies without a benchmark table.
//!
//! Layout of the output directory: `search/<strategy>/seed-S` (one search per strategy and
//! seed), `select/<strategy>+<criterion>/seed-S` (one selection per such method and seed),
//! `compare.{csv,json,md}` and `compare.svg`/`.png`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::{Criterion, Strategy};
use crate::error::{Error, Result};
use crate::report::records::{read_record, DerivedRecord, ReportRecord, ScoresRecord};
use crate::stats;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Method {
    pub name: String,
    pub strategy: Strategy,
    pub criterion: Option<Criterion>,
}

/// Parse `--methods darts-1st+darts-im,gdas,…`: strategies and criteria by their config names.
pub fn parse_methods(list: &str) -> Result<Vec<Method>> {
    let bad = |msg: String| Error::config("--methods", "methods", msg);
    let mut out: Vec<Method> = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(bad(format!("an empty method in {list:?}")));
        }
        let (s, c) = match item.split_once('+') {
            Some((s, c)) => (s, Some(c)),
            None => (item, None),
        };
        let strategy: Strategy = s.parse().map_err(|e: String| bad(format!("{item:?}: {e}")))?;
        let criterion =
            c.map(|c| c.parse::<Criterion>().map_err(|e: String| bad(format!("{item:?}: {e}")))).transpose()?;
        if strategy == Strategy::Random && criterion.is_some() {
            return Err(bad(format!("{item:?}: the random baseline trains no supernet to select on")));
        }
        let name = match criterion {
            Some(c) => format!("{strategy}+{c}"),
            None => strategy.to_string(),
        };
        if out.iter().any(|m| m.name == name) {
            return Err(bad(format!("{name:?} is listed twice")));
        }
        out.push(Method { name, strategy, criterion });
    }
    Ok(out)
}

/// The strategies to search, once each, in the order the methods first name them.
pub fn strategies(methods: &[Method]) -> Vec<Strategy> {
    let mut v: Vec<Strategy> = Vec::new();
    for m in methods {
        if !v.contains(&m.strategy) {
            v.push(m.strategy);
        }
    }
    v
}

pub fn search_dir(out: &Path, strategy: Strategy, seed: u64) -> PathBuf {
    out.join("search").join(strategy.to_string()).join(format!("seed-{seed}"))
}

pub fn select_dir(out: &Path, method: &Method, seed: u64) -> PathBuf {
    out.join("select").join(&method.name).join(format!("seed-{seed}"))
}

/// Where a method's result for `seed` is, and whether it is finished: the search's
/// `report.json`, or the selection's `scores.json`.
pub fn result_file(out: &Path, method: &Method, seed: u64) -> PathBuf {
    match method.criterion {
        None => search_dir(out, method.strategy, seed).join("report.json"),
        Some(_) => select_dir(out, method, seed).join("scores.json"),
    }
}

/// The accuracy of a method's derived architecture on its supernet (`derived/<method>/seed-S.json`).
pub fn derived_file(out: &Path, method: &Method, seed: u64) -> PathBuf {
    out.join("derived").join(&method.name).join(format!("seed-{seed}.json"))
}

/// One (method, seed): the genotype and its numbers by column.
#[derive(Debug, Clone)]
struct Row {
    method: String,
    seed: u64,
    genotype: String,
    values: Vec<(String, f64)>,
}

/// A ground truth to rank criteria against: the trained architectures and their cell space.
pub type GroundTruth = (Vec<super::groundtruth::Truth>, super::groundtruth::CellSpace);

/// The selection of a result file: a search's `report.json` (criterion, genotype and benchmark
/// entry) or a selection's `scores.json`.
pub fn result_of(path: &Path) -> Result<ScoresRecord> {
    if path.file_name().is_some_and(|n| n == "report.json") {
        let r: ReportRecord = read_record(path)?;
        Ok(ScoresRecord { criterion: r.criterion, genotype: r.genotype, benchmark: r.benchmark, ..Default::default() })
    } else {
        read_record(path)
    }
}

fn row(out: &Path, m: &Method, seed: u64, truth: Option<&GroundTruth>) -> Result<Row> {
    let report: ReportRecord = read_record(&search_dir(out, m.strategy, seed).join("report.json"))?;
    let result = result_of(&result_file(out, m, seed))?;
    let mut values: Vec<(String, f64)> =
        result.benchmark.iter().flat_map(|b| b.values()).map(|(k, x)| (format!("bench:{k}"), x)).collect();
    // The derived architecture on the supernet's shared weights (single path).
    let derived = derived_file(out, m, seed);
    if derived.is_file() {
        let d: DerivedRecord = read_record(&derived)?;
        if d.val_acc.is_finite() {
            values.push(("derived_val_acc".into(), d.val_acc));
        }
    }
    // A selection's scores against the ground truth: Kendall τ-b of the architectures' summed
    // scores and their test accuracy (`groundtruth --scores` computes the same).
    if let (Some((truths, space)), Some(_)) = (truth, m.criterion) {
        let scores = super::groundtruth::ScoresFile::load(&select_dir(out, m, seed).join("scores.json"), space)?;
        values.push(("tau_groundtruth".into(), super::groundtruth::tau(&scores, space, truths)?.tau));
    }
    // The supernet's own numbers (the same for every criterion on one search).
    values.extend(report.final_val_acc().map(|x| ("supernet_val_acc".to_string(), x)));
    values.extend(report.test.map(|t| t.acc).filter(|x| x.is_finite()).map(|x| ("supernet_test_acc".to_string(), x)));
    Ok(Row { method: m.name.clone(), seed, genotype: result.genotype, values })
}

/// Write `compare.csv` (one row per method and seed, then mean/std/pstd rows per method),
/// `compare.json` and `compare.md` (Table 4's layout: a row per method, `mean ± pstd` per
/// column), and the figure. Returns the JSON document.
pub fn tables(out: &Path, methods: &[Method], seeds: &[u64], truth: Option<&GroundTruth>) -> Result<Value> {
    let mut rows: Vec<Row> = Vec::new();
    for m in methods {
        for &s in seeds {
            rows.push(row(out, m, s, truth)?);
        }
    }
    // Columns in first-seen order, benchmark columns first.
    let mut columns: Vec<String> = Vec::new();
    for r in &rows {
        for (k, _) in &r.values {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    columns.sort_by_key(|c| !c.starts_with("bench:"));
    let get = |r: &Row, k: &str| r.values.iter().find(|(n, _)| n == k).map_or(f64::NAN, |(_, x)| *x);
    let num = |x: f64| crate::fsutil::csv_num(x, |x| x.to_string());
    let header: Vec<String> =
        ["method", "seed", "genotype"].map(String::from).into_iter().chain(columns.iter().cloned()).collect();
    let mut csv_rows: Vec<Vec<String>> = Vec::new();
    let mut doc_methods = Vec::new();
    let mut md = format!("| Method | {} |\n|---|{}\n", columns.join(" | "), "---|".repeat(columns.len()));
    for m in methods {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.method == m.name).collect();
        for r in &mine {
            let mut line = vec![r.method.clone(), r.seed.to_string(), r.genotype.clone()];
            line.extend(columns.iter().map(|k| num(get(r, k))));
            csv_rows.push(line);
        }
        let mut summary = serde_json::Map::new();
        let (mut mean_row, mut std_row, mut pstd_row, mut cells) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for k in &columns {
            let xs: Vec<f64> = mine.iter().map(|r| get(r, k)).collect();
            let (mean, std) = stats::mean_std(&xs);
            let pstd = stats::population_std(&xs);
            summary.insert(
                k.clone(),
                json!({
                    "mean": mean.is_finite().then_some(mean),
                    "std": std.is_finite().then_some(std),
                    "pstd": pstd.is_finite().then_some(pstd),
                    "seeds": xs.iter().filter(|x| x.is_finite()).count(),
                }),
            );
            mean_row.push(num(mean));
            std_row.push(num(std));
            pstd_row.push(num(pstd));
            cells.push(stats::pm(mean, pstd));
        }
        for (label, vals) in [("mean", mean_row), ("std", std_row), ("pstd", pstd_row)] {
            let mut line = vec![m.name.clone(), label.to_string(), String::new()];
            line.extend(vals);
            csv_rows.push(line);
        }
        md.push_str(&format!("| {} | {} |\n", m.name, cells.join(" | ")));
        let genotypes: std::collections::BTreeSet<&str> = mine.iter().map(|r| r.genotype.as_str()).collect();
        doc_methods.push(json!({
            "method": m.name,
            "strategy": m.strategy.to_string(),
            "criterion": m.criterion.map(|c| c.to_string()),
            "seeds": mine.iter().map(|r| json!({
                "seed": r.seed,
                "genotype": r.genotype,
                "values": r.values.iter().map(|(k, x)| (k.clone(), json!(x))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
            "summary": summary,
            "distinct_genotypes": genotypes.len(),
        }));
    }
    md.push_str(&format!(
        "\nMean ± population std over seeds {} (as the seed paper's Table 4). bench: the benchmark \
         table's columns; derived_val_acc: the selected architecture on the supernet's shared \
         weights; tau_groundtruth: Kendall τ of a selection's scores against the ground truth; \
         supernet_*: the supernet itself after the search.\n",
        seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    ));
    let doc = json!({ "seeds": seeds, "columns": columns, "methods": doc_methods, "std": "population (as the seed paper's Table 4)" });
    crate::fsutil::write_atomic(&out.join("compare.csv"), crate::fsutil::csv_text(&header, &csv_rows).as_bytes())?;
    crate::fsutil::write_atomic(
        &out.join("compare.json"),
        serde_json::to_string_pretty(&doc).expect("json").as_bytes(),
    )?;
    crate::fsutil::write_atomic(&out.join("compare.md"), md.as_bytes())?;
    Ok(doc)
}

/// The figure of `compare.json`: each method's mean of the first column (a benchmark column
/// when there is one).
pub fn figure(doc: &Value, out: &Path) -> Result<Vec<PathBuf>> {
    let Some(col) = doc["columns"].as_array().and_then(|c| c.first()).and_then(Value::as_str) else {
        return Ok(Vec::new());
    };
    let methods = doc["methods"].as_array().cloned().unwrap_or_default();
    let labels: Vec<String> = methods.iter().map(|m| m["method"].as_str().unwrap_or("").to_string()).collect();
    let values: Vec<f64> = methods.iter().map(|m| m["summary"][col]["mean"].as_f64().unwrap_or(f64::NAN)).collect();
    crate::report::plot::Figure::Bars {
        title: format!("{} (mean over seeds)", col.trim_start_matches("bench:")),
        y_label: col.trim_start_matches("bench:").to_string(),
        labels,
        values,
    }
    .save(&out.join("compare"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_and_share_searches() {
        let m = parse_methods("darts-1st+darts-im, darts-1st+magnitude,gdas,random").unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].name, "darts-1st+darts-im");
        assert_eq!(m[0].criterion, Some(Criterion::DartsIm));
        assert_eq!(m[2].criterion, None);
        assert_eq!(strategies(&m), [Strategy::Darts1st, Strategy::Gdas, Strategy::Random]);
        let e = |s: &str| parse_methods(s).unwrap_err().to_string();
        assert!(e("gdas,gdas").contains("\"gdas\" is listed twice"), "{}", e("gdas,gdas"));
        assert!(e("random+drop").contains("the random baseline trains no supernet"));
        assert!(e("darts-3rd").contains("darts-3rd"));
        assert!(e("gdas+best").contains("best"));
        assert!(e("gdas,").contains("an empty method"));
    }
}
