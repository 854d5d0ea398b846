//! `ablate`: every combination of swept selection settings on one or several searched
//! supernets, as one job. Combinations that differ only in DARTS-IM solver settings (N, the
//! IHVP method, γ, K, η, damping, sign) on the same run form one work unit and share its
//! expensive parts ([`Context::darts_im_many`]); other combinations are units of their own.
//! Units run in rank groups; each group's coordinator writes `combos/<i>/scores.json` and
//! the world's coordinator the tables `ablation.{json,csv}`, `ablation-summary.csv` (mean ±
//! std over seeds) and the figures.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{product, seed_runs, Sweep};
use crate::comm::{Collective, Groups};
use crate::config::{Config, SelectConfig};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::influence::{Context, Subject, Timings};
use crate::report::records::{AblationRecord, AblationRow, AblationSummary, SummaryStat, SweepRecord};
use crate::select::{self, Selection};
use crate::space::SpaceSpec;
use crate::stats::{kendall_tau, mean_std, pm, population_std};

/// One combination.
#[derive(Debug, Clone)]
pub struct Combo {
    pub index: usize,
    /// The swept (key, value) pairs, in sweep order (`seed` included when runs are seeded).
    pub labels: Vec<(String, String)>,
    pub seed: Option<u64>,
    pub run: PathBuf,
    pub cfg: Config,
}

/// What a combination produced (sent from group coordinators to the world's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub index: usize,
    /// The combination's settings and resolved config (checked on `--resume`).
    pub labels: Vec<(String, String)>,
    pub config: String,
    pub criterion: String,
    pub genotype: String,
    pub magnitude_genotype: String,
    /// Scores flattened (cell, edge, op); −∞ where not scored.
    pub scores: Vec<f64>,
    /// softmax(α) flattened the same way.
    pub mixing: Vec<f64>,
    /// Fraction of rows whose best op (excluding `none`) is α's.
    pub agree_alpha: f64,
    /// Mean over rows of Kendall τ between the criterion's and softmax(α)'s ranking of the ops.
    pub tau_alpha: f64,
    /// Benchmark columns and values of the genotype, when a table is configured and has it.
    pub benchmark: Vec<(String, f64)>,
    pub shared: bool,
    /// The work unit's wall time (data, supernet, shared passes) divided by its combinations.
    pub seconds_amortized: f64,
    pub group: usize,
    pub ranks: usize,
}

/// The combinations of `sweeps` on the run(s) in `run` (one run, or every `seed-S` of a
/// multi-seed search; a `seed` sweep picks among those), each config being the run's with
/// `sets` and the combination's values applied. Every combination's config is validated here,
/// before anything runs.
pub fn plan(run: &Path, sweeps: &[Sweep], sets: &[String]) -> Result<Vec<Combo>> {
    if sweeps.is_empty() {
        return Err(Error::config("ablate", "--sweep", "give at least one --sweep key=v1,v2,…"));
    }
    let mut keys = std::collections::HashSet::new();
    if let Some(s) = sweeps.iter().find(|s| !keys.insert(s.path.clone())) {
        return Err(Error::config(format!("--sweep {}", s.key), "sweep", "this key is swept twice"));
    }
    let seed_sweep = sweeps.iter().find(|s| s.key == "seed");
    let seeds: Option<Vec<u64>> = seed_sweep.map(|s| s.values.iter().map(|v| v.parse().expect("checked")).collect());
    let runs = seed_runs(run, seeds.as_deref())?;
    let others: Vec<&Sweep> = sweeps.iter().filter(|s| s.key != "seed").collect();
    let mut combos = Vec::new();
    for (seed, dir) in &runs {
        for values in product(&others) {
            let mut overrides = sets.to_vec();
            let mut labels = Vec::new();
            if let Some(s) = seed {
                labels.push(("seed".to_string(), s.to_string()));
            }
            for (sw, v) in others.iter().zip(&values) {
                overrides.push(format!("{}={v}", sw.path));
                labels.push((sw.key.clone(), v.clone()));
            }
            // A value the config refuses is blamed on its --sweep, not on the run's config.
            let cfg = select::open_searched(dir, &overrides).map_err(|e| match e {
                Error::Config { origin, key, msg } => {
                    let swept = others.iter().zip(&values).find(|(sw, v)| origin == format!("--set {}={v}", sw.path));
                    match swept {
                        Some((sw, v)) => {
                            Error::config(format!("--sweep {}", sw.key), key, format!("{msg} (value {v})"))
                        }
                        None => Error::Config { origin, key, msg },
                    }
                }
                other => other,
            })?;
            if cfg.select.criterion == crate::config::Criterion::DartsPt {
                return Err(Error::config(
                    "ablate",
                    "select.criterion",
                    "darts-pt fine-tunes the supernet: run it with `select`, not `ablate`",
                ));
            }
            combos.push(Combo { index: combos.len(), labels, seed: *seed, run: dir.clone(), cfg });
        }
    }
    Ok(combos)
}

/// The config a record is checked against on `--resume`: the resolved config without its fault
/// injection (a test's or drill's interruption is not a different experiment).
pub fn settled_config(cfg: &Config) -> String {
    let mut c = cfg.clone();
    c.fault = Default::default();
    c.to_toml()
}

/// A config with the solver settings of DARTS-IM blanked: combinations with equal keys share.
fn share_key(c: &Combo) -> Option<String> {
    let s = &c.cfg.select;
    if s.criterion != crate::config::Criterion::DartsIm
        || s.faithful
        || s.fisher_samples != crate::config::FisherSamples::Batch
    {
        return None;
    }
    let mut cfg = c.cfg.clone();
    let d = SelectConfig::default();
    let t = &mut cfg.select;
    (t.n, t.ihvp, t.gamma, t.k, t.eta, t.damping, t.im_sign) = (d.n, d.ihvp, d.gamma, d.k, d.eta, d.damping, d.im_sign);
    (t.cg_tol, t.cg_max_iter, t.exact_matrix) = (d.cg_tol, d.cg_max_iter, d.exact_matrix);
    Some(format!("{}\n{}", c.run.display(), cfg.to_toml()))
}

/// Work units: lists of combination indices.
pub fn units(combos: &[Combo]) -> Vec<Vec<usize>> {
    let mut out: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    for c in combos {
        match share_key(c) {
            Some(k) => match out.iter_mut().find(|(key, _)| key.as_deref() == Some(k.as_str())) {
                Some((_, v)) => v.push(c.index),
                None => out.push((Some(k), vec![c.index])),
            },
            None => out.push((None, vec![c.index])),
        }
    }
    out.into_iter().map(|(_, v)| v).collect()
}

/// Run every unit in rank groups; returns the records on the world's coordinator (empty
/// elsewhere). Group coordinators write `out/combos/<i>/` and, once a combination is done, its
/// record `out/checkpoints/combo-<i>.json`. With `resume`, units whose combinations all have a
/// record are skipped; SIGTERM/SIGUSR1 (`stop`) stops every group before its next unit.
pub fn run(
    world: &dyn Collective,
    combos: &[Combo],
    ranks_per_unit: usize,
    out: &Path,
    resume: bool,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Vec<Record>> {
    let ckpt = out.join("checkpoints");
    let all = units(combos);
    // The coordinator reads the records of an interrupted run (each must be of its
    // combination) and decides what is left; every rank gets the same list.
    let decided: Option<super::Decision<Record>> = world.is_coordinator().then(|| {
        let mut kept = Vec::new();
        let mut todo = Vec::new();
        for (u, members) in all.iter().enumerate() {
            let mut have = Vec::new();
            for &i in members {
                let path = ckpt.join(format!("combo-{i}.json"));
                let Some(text) = resume.then(|| std::fs::read_to_string(&path).ok()).flatten() else { break };
                let r: Record = serde_json::from_str(&text).map_err(|e| format!("{}: unreadable record: {e}", path.display()))?;
                if r.labels != combos[i].labels || r.config != settled_config(&combos[i].cfg) {
                    return Err(format!(
                        "{}: recorded for other settings than combination {i} {:?} (use a new --out, or repeat the original flags)",
                        path.display(),
                        combos[i].labels
                    ));
                }
                have.push(r);
            }
            if have.len() == members.len() {
                kept.extend(have);
            } else {
                todo.push(u);
            }
        }
        Ok((todo, kept))
    });
    let shared = crate::comm::broadcast_value(world, 0, decided.as_ref().map(|d| d.clone().map(|(t, _)| t)).as_ref())?;
    let todo = shared.map_err(|msg| Error::Path { path: ckpt.clone(), msg })?;
    let kept = decided.and_then(|d| d.ok()).map(|(_, k)| k).unwrap_or_default();
    let groups = Groups::split(world, todo.len().max(1), ranks_per_unit)?;
    tracing::info!(
        "ablate: {} combinations in {} work units ({} to run), {} rank groups of {} ranks; this rank is in group {}",
        combos.len(),
        all.len(),
        todo.len(),
        groups.count,
        world.size() / groups.count,
        groups.index
    );
    // Failures are agreed within the group after every unit (a coordinator-only write may
    // fail), and over the world at the end, so no rank is left waiting in a collective.
    let mut failure: Option<String> = None;
    let mut stopped = false;
    let mut mine = Vec::new();
    let fault = &combos[0].cfg.fault;
    let mut progress = crate::progress::Progress::new(
        format!("ablate: work units of rank group {}", groups.index),
        "units",
        todo.iter().enumerate().filter(|(k, _)| groups.runs(*k)).count() as u64,
        world.is_coordinator(),
        true,
    );
    for (k, &u) in todo.iter().enumerate().filter(|(k, _)| groups.runs(*k)) {
        if fault.phase == crate::config::FaultPhase::Experiment && fault.at_step == k && fault.rank == world.rank() {
            crate::control::inject(fault.action, stop);
        }
        if crate::control::agree_stop(groups.comm.as_ref(), stop)? {
            stopped = true;
            break;
        }
        let members = &all[u];
        let list: Vec<&Combo> = members.iter().map(|&i| &combos[i]).collect();
        let outcome = run_unit(groups.comm.as_ref(), groups.index, &list, out).and_then(|records| {
            if groups.comm.is_coordinator() {
                for r in &records {
                    let text = serde_json::to_string(r).expect("json");
                    write_atomic(&ckpt.join(format!("combo-{}.json", r.index)), text.as_bytes())?;
                }
            }
            Ok(records)
        });
        let bad = groups.comm.any(outcome.is_err())?;
        progress.inc(1);
        match outcome {
            Ok(records) if !bad => mine.extend(records),
            Ok(_) => {
                failure = Some(format!("work unit {k} (combinations {members:?}) failed on its coordinator"));
                break;
            }
            Err(e) => {
                failure = Some(format!("work unit {k} (combinations {members:?}): {e}"));
                break;
            }
        }
    }
    progress.finish();
    groups.conclude(world, failure, stopped, || Error::Stopped {
        at: "between work units".into(),
        checkpoint: format!("{} (finished combinations; continue with --resume)", ckpt.display()),
    })?;
    let mut records = groups.gather(world, &mine)?;
    records.extend(kept);
    records.sort_by_key(|r| r.index);
    Ok(records)
}

fn run_unit(comm: &dyn Collective, group: usize, list: &[&Combo], out: &Path) -> Result<Vec<Record>> {
    let t0 = std::time::Instant::now();
    let mut base = list[0].cfg.clone();
    let source = crate::data::open(&mut base)?;
    let (net, alphas) = select::load_searched(&base, &list[0].run, comm.device())?;
    let spec = net.spec().clone();
    let timings = Timings::default();
    let shared = list.len() > 1 || share_key(list[0]).is_some();
    let (data, split) = (source.data.as_ref(), &source.split);
    let subject = Subject { cfg: &base, comm, net: net.as_ref(), alphas: &alphas, data, split };
    let outcomes = if shared {
        let ctx = Context::new(subject, &timings);
        let settings: Vec<SelectConfig> = list.iter().map(|c| c.cfg.select.clone()).collect();
        ctx.darts_im_many(&settings)?
    } else {
        let mut cfg = list[0].cfg.clone();
        cfg.data = base.data.clone();
        let ctx = Context::new(subject.with_cfg(&cfg), &timings);
        vec![ctx.run()?]
    };
    let seconds = t0.elapsed().as_secs_f64() / list.len() as f64;
    let mixing = select::mixing_table(&spec, &alphas);
    let magnitude = crate::space::derive_genotype(&spec, &mixing);
    // Every collective first (the genotypes), then the coordinator's writes.
    let genotypes = outcomes.iter().map(|o| select::coordinate(comm, &spec, &o.table)).collect::<Result<Vec<_>>>()?;
    // The unit's combinations share their config outside `select`'s solver keys: one table.
    let table =
        base.select.benchmark_table.as_deref().map(crate::report::benchmark::BenchmarkTable::load).transpose()?;
    let mut records = Vec::new();
    for ((c, o), genotype) in list.iter().zip(outcomes).zip(genotypes) {
        let benchmark = match &table {
            Some(t) => t
                .lookup(&genotype.to_string())
                .map(|m| m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let rec = Record {
            index: c.index,
            labels: c.labels.clone(),
            config: settled_config(&c.cfg),
            criterion: o.table.criterion.clone(),
            genotype: genotype.to_string(),
            magnitude_genotype: magnitude.to_string(),
            scores: o.table.scores.iter().flatten().flatten().copied().collect(),
            mixing: mixing.iter().flatten().flatten().copied().collect(),
            agree_alpha: agreement(&spec, &o.table.scores, &mixing),
            tau_alpha: crate::stats::mean_row_tau(&o.table.scores, &mixing),
            benchmark,
            shared,
            seconds_amortized: seconds,
            group,
            ranks: comm.size(),
        };
        if comm.is_coordinator() {
            let dir = out.join("combos").join(c.index.to_string());
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.clone(), e))?;
            let sel = Selection {
                table: o.table,
                genotype,
                diagnostics: o.diagnostics,
                timing: json!({"seconds_amortized": seconds, "ranks": comm.size(), "shared": shared}),
                mixing: mixing.clone(),
            };
            crate::report::write_selection(&c.cfg, &spec, &sel, &dir)?;
            let labels: serde_json::Map<String, serde_json::Value> =
                c.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            write_atomic(&dir.join("combo.json"), serde_json::to_string_pretty(&labels).expect("json").as_bytes())?;
        }
        tracing::info!("ablate: combination {} {:?}: {}", c.index, c.labels, rec.genotype);
        records.push(rec);
    }
    Ok(records)
}

/// Fraction of rows (edges, choice blocks) where the criterion's best op, `none` excluded,
/// is also softmax(α)'s.
pub fn agreement(spec: &SpaceSpec, scores: &[Vec<Vec<f64>>], mixing: &[Vec<Vec<f64>>]) -> f64 {
    let (mut same, mut rows) = (0usize, 0usize);
    for (c, cell) in spec.cells.iter().enumerate() {
        let none = cell.none_index();
        let best = |row: &[f64]| {
            (0..row.len()).filter(|&o| Some(o) != none).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
        };
        for (s, m) in scores[c].iter().zip(&mixing[c]) {
            rows += 1;
            same += (best(s) == best(m)) as usize;
        }
    }
    same as f64 / rows.max(1) as f64
}

/// The metric columns of a record, with `tau_ref` filled in by [`tables`].
fn metrics(r: &Record, tau_ref: f64) -> Vec<(String, f64)> {
    let mut m = vec![
        ("tau_ref".to_string(), tau_ref),
        ("tau_alpha".to_string(), r.tau_alpha),
        ("agree_alpha".to_string(), r.agree_alpha),
    ];
    m.extend(r.benchmark.iter().map(|(k, v)| (format!("bench:{k}"), *v)));
    m.push(("seconds_amortized".to_string(), r.seconds_amortized));
    m
}

/// A record, its combination and its metric columns.
type Row<'a> = (&'a Record, &'a Combo, Vec<(String, f64)>);

/// Write `ablation.json`, `ablation.csv` and `ablation-summary.csv` (coordinator). `tau_ref`
/// is the Kendall τ between a combination's scores and those of the combination with the same
/// other settings and the largest N (1 for that one itself).
pub fn tables(combos: &[Combo], sweeps: &[Sweep], records: &[Record], out: &Path) -> Result<AblationRecord> {
    let label = |c: &Combo, key: &str| c.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let others = |c: &Combo, skip: &[&str]| -> Vec<(String, String)> {
        c.labels.iter().filter(|(k, _)| !skip.contains(&k.as_str())).cloned().collect()
    };
    // The swept key that sets N (`n` or `select.n`); without one, `tau_ref` is undefined.
    let n_key = sweeps.iter().find(|s| s.path == "select.n").map(|s| s.key.as_str());
    let mut rows: Vec<Row> = Vec::new();
    for r in records {
        let c = &combos[r.index];
        let tau_ref = match n_key {
            Some(k) => {
                let reference = records
                    .iter()
                    .filter(|q| others(&combos[q.index], &[k]) == others(c, &[k]))
                    .max_by_key(|q| combos[q.index].cfg.select.n)
                    .expect("the record itself");
                kendall_tau(&r.scores, &reference.scores)
            }
            None => f64::NAN,
        };
        rows.push((r, c, metrics(r, tau_ref)));
    }
    let metric_names: Vec<String> = {
        let mut names: Vec<String> = Vec::new();
        for (_, _, m) in &rows {
            for (k, _) in m {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
        names
    };
    let keys: Vec<String> =
        combos.first().map(|c| c.labels.iter().map(|(k, _)| k.clone()).collect()).unwrap_or_default();
    let num = |x: Option<f64>| x.filter(|v| v.is_finite()).map_or(String::new(), |v| format!("{v}"));
    let header: Vec<String> = ["index".to_string()]
        .into_iter()
        .chain(keys.iter().cloned())
        .chain(["criterion", "genotype", "magnitude_genotype", "shared"].map(String::from))
        .chain(metric_names.iter().cloned())
        .collect();
    let mut csv_rows = Vec::new();
    let mut json_rows = Vec::new();
    for (r, c, m) in &rows {
        let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        let mut row = vec![r.index.to_string()];
        row.extend(keys.iter().map(|k| label(c, k).unwrap_or_default()));
        row.extend([r.criterion.clone(), r.genotype.clone(), r.magnitude_genotype.clone(), r.shared.to_string()]);
        row.extend(metric_names.iter().map(|k| num(get(k))));
        csv_rows.push(row);
        json_rows.push(AblationRow {
            index: r.index,
            labels: c.labels.iter().cloned().collect(),
            criterion: r.criterion.clone(),
            genotype: r.genotype.clone(),
            magnitude_genotype: r.magnitude_genotype.clone(),
            shared: r.shared,
            group: r.group,
            ranks: r.ranks,
            metrics: m.iter().map(|(k, v)| (k.clone(), v.is_finite().then_some(*v))).collect(),
        });
    }
    // Mean ± std over seeds for each setting of the other keys.
    let mut summary = Vec::new();
    let mut done: Vec<Vec<(String, String)>> = Vec::new();
    let sheader: Vec<String> = keys
        .iter()
        .filter(|k| *k != "seed")
        .cloned()
        .chain(["seeds", "genotypes"].map(String::from))
        .chain(
            metric_names
                .iter()
                .flat_map(|k| [format!("{k}_mean"), format!("{k}_std"), format!("{k}_pstd"), format!("{k}_n")]),
        )
        .collect();
    let mut srows = Vec::new();
    for (_, c, _) in &rows {
        let setting = others(c, &["seed"]);
        if done.contains(&setting) {
            continue;
        }
        done.push(setting.clone());
        let members: Vec<&Row> = rows.iter().filter(|(_, q, _)| others(q, &["seed"]) == setting).collect();
        let mut ms = std::collections::BTreeMap::new();
        let mut cells = Vec::new();
        for k in &metric_names {
            let xs: Vec<f64> =
                members.iter().map(|(_, _, m)| m.iter().find(|(n, _)| n == k).map_or(f64::NAN, |(_, v)| *v)).collect();
            let (mean, std) = mean_std(&xs);
            let pstd = population_std(&xs);
            // Seeds with a value (a genotype missing from the benchmark table has none).
            let count = xs.iter().filter(|x| x.is_finite()).count();
            let some = |x: f64| x.is_finite().then_some(x);
            ms.insert(
                k.clone(),
                SummaryStat { mean: some(mean), std: some(std), pstd: some(pstd), n: count, text: pm(mean, std) },
            );
            cells.push(num(Some(mean)));
            cells.push(num(Some(std)));
            cells.push(num(Some(pstd)));
            cells.push(count.to_string());
        }
        let genotypes: Vec<&str> = members.iter().map(|(r, _, _)| r.genotype.as_str()).collect();
        let distinct = genotypes.iter().collect::<std::collections::BTreeSet<_>>().len();
        let mut row: Vec<String> = setting.iter().map(|(_, v)| v.clone()).collect();
        row.extend([members.len().to_string(), distinct.to_string()]);
        row.extend(cells);
        srows.push(row);
        summary.push(AblationSummary {
            labels: setting.into_iter().collect(),
            seeds: members.len(),
            distinct_genotypes: distinct,
            metrics: ms,
        });
    }
    let doc = AblationRecord {
        dataset: combos.first().map(|c| c.cfg.data.dataset),
        sweeps: sweeps
            .iter()
            .map(|s| SweepRecord { key: s.key.clone(), config_key: s.path.clone(), values: s.values.clone() })
            .collect(),
        rows: json_rows,
        summary,
    };
    crate::report::records::write_record(&out.join("ablation.json"), &doc)?;
    write_atomic(&out.join("ablation.csv"), crate::fsutil::csv_text(&header, &csv_rows).as_bytes())?;
    write_atomic(&out.join("ablation-summary.csv"), crate::fsutil::csv_text(&sheader, &srows).as_bytes())?;
    Ok(doc)
}
