//! `ablate`, `groundtruth`, `report`, and the multi-seed forms of `search` and `select`.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{fail_once, init_logging, init_threads, prepare_out_dir, report_error};
use crate::comm::{self, Collective};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::experiment::{ablation, groundtruth, Sweep};
use crate::fsutil::write_atomic;
use crate::stats;

#[derive(Debug, clap::Args)]
pub struct AblateArgs {
    /// Run directory of a `search` (or of `search --seeds`: every seed is swept).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// A swept setting, `key=v1,v2,…` (repeatable): `n`, `ihvp`, `gamma`, `k`, `eta`,
    /// `damping`, `criterion`, any `select.*` or dotted config key, or `seed` (runs of a
    /// multi-seed search).
    #[arg(long = "sweep", value_name = "KEY=V1,V2,…", required = true)]
    pub sweep: Vec<String>,
    #[command(flatten)]
    pub job: JobArgs,
    /// `--resume` or `--resume auto`: complete --out, running only the combinations without a
    /// record in `OUT/checkpoints` (what a requeued Slurm job does). Repeat the original flags.
    #[arg(long, num_args = 0..=1, default_missing_value = "auto", value_name = "auto")]
    pub resume: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct GroundtruthArgs {
    /// TOML config: data and the `[train]` protocol each architecture is trained with.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub set: super::Overrides,
    /// The cell space (NAS-Bench-201 cells).
    #[arg(long, default_value = "nb201")]
    pub space: String,
    /// Free edges, e.g. `1<-0,2<-1,3<-2` (default: all six).
    #[arg(long)]
    pub edges: Option<String>,
    /// Ops of the free edges, e.g. `skip_connect,nor_conv_3x3` (default: all but `none`).
    #[arg(long)]
    pub ops: Option<String>,
    /// Op of the other edges.
    #[arg(long, default_value = "none")]
    pub fill: String,
    /// A `scores.json` of a selection on this space: report its Kendall τ (repeatable).
    #[arg(long = "scores", value_name = "FILE")]
    pub scores: Vec<PathBuf>,
    /// Ranks per architecture (0: one architecture per rank at a time).
    #[arg(long = "ranks-per-job", default_value_t = 0)]
    pub ranks_per_job: usize,
    /// Output directory to create (with --resume: the one to complete).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// `--resume` or `--resume auto`: complete --out, training only the architectures without
    /// a result there (what a requeued Slurm job does).
    #[arg(long, num_args = 0..=1, default_missing_value = "auto", value_name = "auto")]
    pub resume: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct TrackArgs {
    /// Run directory of a `search` whose epoch-end checkpoints are kept (`checkpoint.keep`).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Every this many epochs (as `select.track_every` counts them).
    #[arg(long, default_value_t = 1)]
    pub every: usize,
    #[command(flatten)]
    pub job: JobArgs,
}

/// What every batch job takes besides its own flags.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub set: super::Overrides,
    /// Ranks per work unit (0: as many groups as units, up to one per rank).
    #[arg(long = "ranks-per-job", default_value_t = 0)]
    pub ranks_per_job: usize,
    /// Output directory to create (with --resume: the one to complete).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run, selection, ablation or ground-truth directory.
    pub dir: PathBuf,
}

/// Remove an output directory this command created, on the coordinator, after a failure —
/// unless it holds finished work (`keep`: records or results) that `--resume` can continue.
pub(super) fn clean(comm: &dyn Collective, out: &Path, existed: bool, keep: &str) {
    let finished = std::fs::read_dir(out.join(keep)).map(|mut d| d.next().is_some()).unwrap_or(false);
    if comm.is_coordinator() && !existed && !finished {
        let _ = std::fs::remove_dir_all(out);
    }
}

/// The output directory of a resumable batch job: created (empty or new) for a fresh start, or
/// reopened with `resume`; `records` is the sub-directory of finished work. Collective.
pub(super) fn open_out(comm: &dyn Collective, out: &Path, resume: bool, records: &str) -> Result<()> {
    if !(resume && out.is_dir()) {
        prepare_out_dir(comm, out)?;
    }
    comm::on_coordinator(comm, || {
        // The marker of a stop being resumed from.
        let _ = std::fs::remove_file(out.join("STOPPED"));
        for d in ["logs", records] {
            std::fs::create_dir_all(out.join(d)).map_err(|e| Error::io(out.join(d), e))?;
        }
        Ok(())
    })
}

/// Figures are a view of the tables: a failure to draw one is a warning, not a failed job.
fn render(dir: &Path) {
    if let Err(e) = crate::report::figures::render_dir(dir) {
        tracing::warn!("figures of {}: {e} (the tables are written; `dartsif-dist report` retries)", dir.display());
    }
}

pub fn ablate_main(a: &AblateArgs) -> i32 {
    let plan = || -> Result<(Vec<Sweep>, Vec<ablation::Combo>)> {
        if let Some(r) = a.resume.as_deref().filter(|r| *r != "auto") {
            return Err(Error::config("--resume", "resume", format!("ablate resumes with `auto` only (got {r:?})")));
        }
        let sweeps = a.sweep.iter().map(|s| Sweep::parse(s)).collect::<Result<Vec<_>>>()?;
        let combos = ablation::plan(&a.run, &sweeps, &a.job.set)?;
        Ok((sweeps, combos))
    };
    let (sweeps, combos) = match plan() {
        Ok(p) => p,
        Err(e) => return fail_once(&e),
    };
    let comm = match super::start(&combos[0].cfg, |_, _| Ok(())) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let existed = a.job.out.exists();
    let resume = a.resume.is_some();
    let stop = super::watch_signals();
    let run = || -> Result<()> {
        open_out(comm.as_ref(), &a.job.out, resume, "checkpoints")?;
        init_threads(&combos[0].cfg, comm.as_ref());
        init_logging(comm.as_ref(), &a.job.out);
        let records = ablation::run(comm.as_ref(), &combos, a.job.ranks_per_job, &a.job.out, resume, Some(&stop))?;
        comm::on_coordinator(comm.as_ref(), || {
            if records.len() != combos.len() {
                return Err(Error::Invalid(format!("{} of {} combinations have results", records.len(), combos.len())));
            }
            let doc = ablation::tables(&combos, &sweeps, &records, &a.job.out)?;
            render(&a.job.out);
            print_summary(&doc);
            Ok(())
        })
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            if !resume && !matches!(e, Error::Path { .. } | Error::Stopped { .. }) {
                clean(comm.as_ref(), &a.job.out, existed, "checkpoints");
            }
            super::mark_stopped(comm.as_ref(), &a.job.out, &e);
            report_error(comm.as_ref(), &e)
        }
    }
}

fn print_summary(doc: &crate::report::records::AblationRecord) {
    for s in &doc.summary {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let metrics: Vec<String> =
            s.metrics.iter().filter(|(k, _)| *k != "seconds").map(|(k, v)| format!("{k} {}", v.text)).collect();
        println!("{}  ({} seeds)  {}", labels.join(" "), s.seeds, metrics.join("  "));
    }
}

pub fn groundtruth_main(a: &GroundtruthArgs) -> i32 {
    let prepared = || -> Result<(Config, groundtruth::CellSpace, Vec<groundtruth::ScoresFile>)> {
        if a.space != "nb201" {
            return Err(Error::config(
                "--space",
                "space",
                format!("groundtruth enumerates NAS-Bench-201 cells (nb201), not {:?}", a.space),
            ));
        }
        if let Some(r) = a.resume.as_deref().filter(|r| *r != "auto") {
            return Err(Error::config(
                "--resume",
                "resume",
                format!("groundtruth resumes with `auto` only (got {r:?})"),
            ));
        }
        let cfg = Config::load(a.config.as_deref(), &a.set)?;
        let space = groundtruth::CellSpace::parse(a.edges.as_deref(), a.ops.as_deref(), &a.fill)?;
        let scores = a.scores.iter().map(|p| groundtruth::ScoresFile::load(p, &space)).collect::<Result<Vec<_>>>()?;
        let own = a.out.join("config.toml");
        if a.resume.is_some() && own.is_file() {
            let text = std::fs::read_to_string(&own).map_err(|e| Error::io(own.clone(), e))?;
            if text != crate::experiment::ablation::settled_config(&cfg) {
                return Err(Error::Path {
                    path: own,
                    msg: "was written with another config: resume with the original --config and --set".into(),
                });
            }
        }
        Ok((cfg, space, scores))
    };
    let (cfg, space, scores) = match prepared() {
        Ok(p) => p,
        Err(e) => return fail_once(&e),
    };
    let comm = match super::start(&cfg, |_, _| Ok(())) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let existed = a.out.exists();
    let resume = a.resume.is_some();
    let stop = super::watch_signals();
    let run = || -> Result<()> {
        open_out(comm.as_ref(), &a.out, resume, "archs")?;
        init_threads(&cfg, comm.as_ref());
        init_logging(comm.as_ref(), &a.out);
        comm::on_coordinator(comm.as_ref(), || {
            write_atomic(&a.out.join("config.toml"), crate::experiment::ablation::settled_config(&cfg).as_bytes())
        })?;
        let truths = groundtruth::run(comm.as_ref(), &cfg, &space, a.ranks_per_job, &a.out, resume, Some(&stop))?;
        comm::on_coordinator(comm.as_ref(), || {
            if truths.len() != space.architectures().len() {
                return Err(Error::Invalid(format!(
                    "{} of {} architectures have results",
                    truths.len(),
                    space.architectures().len()
                )));
            }
            groundtruth::write(&a.out, &truths, &[])?;
            let taus = scores.iter().map(|s| groundtruth::tau(s, &space, &truths)).collect::<Result<Vec<_>>>()?;
            groundtruth::write(&a.out, &truths, &taus)?;
            render(&a.out);
            let best = truths.iter().max_by(|x, y| x.test_acc.total_cmp(&y.test_acc));
            if let Some(b) = best {
                println!("{} architectures; best {} test accuracy {:.4}", truths.len(), b.arch, b.test_acc);
            }
            for t in &taus {
                println!(
                    "Kendall tau {:+.4}  {} ({}, {} architectures)",
                    t.tau,
                    t.criterion,
                    t.scores.display(),
                    t.architectures
                );
            }
            Ok(())
        })
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            if !resume && !matches!(e, Error::Path { .. } | Error::Stopped { .. }) {
                clean(comm.as_ref(), &a.out, existed, "archs");
            }
            super::mark_stopped(comm.as_ref(), &a.out, &e);
            report_error(comm.as_ref(), &e)
        }
    }
}

pub fn track_main(a: &TrackArgs) -> i32 {
    let prepared = || -> Result<(Config, Vec<(usize, PathBuf)>)> {
        let own = a.run.join("config.toml");
        if !own.is_file() {
            return Err(Error::Path { path: a.run.clone(), msg: "not a run directory (no config.toml)".into() });
        }
        let cfg = Config::load(Some(&own), &a.job.set)?;
        if cfg.select.criterion == crate::config::Criterion::DartsPt {
            return Err(Error::config(
                "track",
                "select.criterion",
                "tracking scores a criterion as it stands; darts-pt trains",
            ));
        }
        if a.every == 0 {
            return Err(Error::config("--every", "every", "must be at least 1"));
        }
        Ok((cfg, crate::experiment::tracking::epoch_checkpoints(&a.run, a.every)?))
    };
    let (cfg, list) = match prepared() {
        Ok(p) => p,
        Err(e) => return fail_once(&e),
    };
    let comm = match super::start(&cfg, |_, _| Ok(())) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let existed = a.job.out.exists();
    let run = || -> Result<()> {
        prepare_out_dir(comm.as_ref(), &a.job.out)?;
        init_threads(&cfg, comm.as_ref());
        init_logging(comm.as_ref(), &a.job.out);
        let tracked = crate::experiment::tracking::run(comm.as_ref(), &cfg, &list, a.job.ranks_per_job)?;
        comm::on_coordinator(comm.as_ref(), || {
            // The tables the tracking figure reads: the records, the run's config and α's
            // genotypes over epochs.
            let mut lines = String::new();
            for t in &tracked {
                lines.push_str(&t.line(cfg.select.benchmark_table.as_deref())?.to_string());
                lines.push('\n');
            }
            write_atomic(&a.job.out.join("tracking.jsonl"), lines.as_bytes())?;
            write_atomic(&a.job.out.join("config.toml"), cfg.to_toml().as_bytes())?;
            if let Ok(g) = std::fs::read(a.run.join("genotypes.jsonl")) {
                write_atomic(&a.job.out.join("genotypes.jsonl"), &g)?;
            }
            render(&a.job.out);
            for t in &tracked {
                let n = t.n.map_or(String::new(), |n| format!(" N={n}"));
                println!("epoch {:>3}{n}  {}", t.epoch, t.genotype);
            }
            Ok(())
        })
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            if !matches!(e, Error::Path { .. }) {
                clean(comm.as_ref(), &a.job.out, existed, "nothing-finished");
            }
            report_error(comm.as_ref(), &e)
        }
    }
}

pub fn report_main(a: &ReportArgs) -> i32 {
    match crate::report::figures::render_dir(&a.dir) {
        Ok(files) => {
            if files.is_empty() {
                eprintln!(
                    "error: {}: no tables to render (scores.json, ablation.json, tracking.jsonl, groundtruth.json)",
                    a.dir.display()
                );
                return 2;
            }
            for f in files {
                println!("{}", f.display());
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Run `each(group, seed, dir)` for every seed in rank groups (`out/seed-S`), then write
/// `out/seeds.{json,csv}` on the coordinator from each seed's `file` (`report.json` or
/// `scores.json`).
pub fn over_seeds(
    world: &dyn Collective,
    seeds: &[u64],
    ranks_per_job: usize,
    out: &Path,
    file: &str,
    each: &mut dyn FnMut(&dyn Collective, u64, &Path) -> Result<()>,
) -> Result<()> {
    tracing::info!("{} seeds in rank groups", seeds.len());
    super::compare::over_units(world, seeds.len(), ranks_per_job, out, &mut |g, u| {
        each(g, seeds[u], &out.join(format!("seed-{}", seeds[u])))
    })?;
    comm::on_coordinator(world, || seeds_table(out, seeds, file))
}

/// `seeds.json` / `seeds.csv`: each seed's genotype and numbers, then mean ± std.
fn seeds_table(out: &Path, seeds: &[u64], file: &str) -> Result<()> {
    let mut rows = Vec::new();
    let mut names: Vec<String> = Vec::new();
    use crate::report::records::{read_record, ReportRecord, ScoresRecord};
    for &s in seeds {
        let dir = out.join(format!("seed-{s}"));
        let mut m: Vec<(String, f64)> = Vec::new();
        let selection = if file == "report.json" {
            let r: ReportRecord = read_record(&dir.join(file))?;
            m.extend(r.final_val_acc().map(|x| ("supernet_val_acc".to_string(), x)));
            m.extend(r.test.map(|t| t.acc).filter(|x| x.is_finite()).map(|x| ("supernet_test_acc".to_string(), x)));
            // A search that selected after it (select.after_search): its criterion's selection
            // is the seed's result; the supernet's accuracies stay those of report.json.
            let after = dir.join("select").join("scores.json");
            if after.is_file() {
                read_record::<ScoresRecord>(&after)?
            } else {
                ScoresRecord {
                    criterion: r.criterion,
                    genotype: r.genotype,
                    benchmark: r.benchmark,
                    ..Default::default()
                }
            }
        } else {
            read_record::<ScoresRecord>(&dir.join(file))?
        };
        m.extend(selection.benchmark.iter().flat_map(|b| b.values()).map(|(k, x)| (format!("bench:{k}"), x)));
        for (k, _) in &m {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
        rows.push((s, selection.criterion, selection.genotype, m));
    }
    let get = |m: &[(String, f64)], k: &str| m.iter().find(|(n, _)| n == k).map_or(f64::NAN, |(_, x)| *x);
    let num = |x: f64| crate::fsutil::csv_num(x, |x| x.to_string());
    let header: Vec<String> =
        ["seed", "criterion", "genotype"].map(String::from).into_iter().chain(names.iter().cloned()).collect();
    let mut table: Vec<Vec<String>> = Vec::new();
    for (s, c, g, m) in &rows {
        let mut row = vec![s.to_string(), c.clone(), g.clone()];
        row.extend(names.iter().map(|k| num(get(m, k))));
        table.push(row);
    }
    let mut summary = serde_json::Map::new();
    let (mut texts, mut mrow, mut srow, mut prow) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in &names {
        let xs: Vec<f64> = rows.iter().map(|(_, _, _, m)| get(m, k)).collect();
        let (mean, std) = stats::mean_std(&xs);
        let pstd = stats::population_std(&xs);
        let n = xs.iter().filter(|x| x.is_finite()).count();
        summary.insert(
            k.clone(),
            json!({"mean": mean.is_finite().then_some(mean), "std": std.is_finite().then_some(std), "pstd": pstd.is_finite().then_some(pstd), "seeds": n, "text": stats::pm(mean, std)}),
        );
        texts.push(stats::pm(mean, std));
        mrow.push(num(mean));
        srow.push(num(std));
        prow.push(num(pstd));
    }
    // Numeric rows (a spreadsheet reads them): the sample std (blank for one seed) and the
    // population std the seed paper's tables report.
    for (label, cells) in [("mean", mrow), ("std", srow), ("pstd", prow)] {
        table.push([label.to_string(), String::new(), String::new()].into_iter().chain(cells).collect());
    }
    let means = texts;
    let doc = json!({
        "seeds": rows.iter().map(|(s, c, g, m)| json!({"seed": s, "criterion": c, "genotype": g, "metrics": m.iter().map(|(k, x)| (k.clone(), json!(x))).collect::<serde_json::Map<_, _>>()})).collect::<Vec<_>>(),
        "summary": summary,
    });
    write_atomic(&out.join("seeds.json"), serde_json::to_string_pretty(&doc).expect("json").as_bytes())?;
    write_atomic(&out.join("seeds.csv"), crate::fsutil::csv_text(&header, &table).as_bytes())?;
    for (k, t) in names.iter().zip(&means) {
        println!("{k}: {t} over {} seeds", rows.len());
    }
    Ok(())
}
