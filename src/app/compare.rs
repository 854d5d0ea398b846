//! `compare`: the seed paper's Table 4 as one job (see [`crate::experiment::compare`]).

use std::path::{Path, PathBuf};

use super::experiment::{clean, open_out, JobArgs};
use super::{fail_once, init_logging, init_threads, report_error};
use crate::comm::{self, Collective, Groups};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// TOML config shared by every method (data, space, search and selection protocol); each
    /// method sets `search.strategy` and, after a `+`, `select.criterion`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Methods, comma-separated: a strategy (darts-1st, darts-2nd, gdas, snas, setn,
    /// random-nas, enas, random) with an optional selection criterion after `+` (magnitude,
    /// drop, darts-if, darts-im, darts-pt), e.g. `darts-1st+darts-im,gdas,random`. Methods with
    /// the same strategy share its searched supernet.
    #[arg(long, value_name = "LIST", required = true)]
    pub methods: String,
    /// Seeds, e.g. `1,2,3`: every method runs once per seed.
    #[arg(long, value_name = "S1,S2,…", default_value = "1")]
    pub seeds: String,
    /// A `groundtruth` output directory: each selection's scores are ranked against its
    /// trained architectures (Kendall τ, column `tau_groundtruth`).
    #[arg(long, value_name = "DIR")]
    pub groundtruth: Option<PathBuf>,
    #[command(flatten)]
    pub job: JobArgs,
    /// `--resume` or `--resume auto`: complete --out, running only the searches and selections
    /// without a result (unfinished ones continue from their checkpoints). Repeat the flags.
    #[arg(long, num_args = 0..=1, default_missing_value = "auto", value_name = "auto")]
    pub resume: Option<String>,
}

/// One work unit of `compare`.
enum CompareUnit {
    Search { cfg: Box<Config>, dir: PathBuf },
    Select { sets: Vec<String>, run: PathBuf, dir: PathBuf },
}

pub fn compare_main(a: &CompareArgs) -> i32 {
    use crate::experiment::compare;
    let out = &a.job.out;
    let plan =
        || -> Result<(Vec<compare::Method>, Vec<u64>, Vec<(String, CompareUnit)>, Vec<(String, CompareUnit)>)> {
            if let Some(r) = a.resume.as_deref().filter(|r| *r != "auto") {
                return Err(Error::config(
                    "--resume",
                    "resume",
                    format!("compare resumes with `auto` only (got {r:?})"),
                ));
            }
            let methods = compare::parse_methods(&a.methods)?;
            if let Some(dir) = &a.groundtruth {
                crate::experiment::groundtruth::read_truths(dir)?;
            }
            let seeds = crate::experiment::parse_seeds(&a.seeds)?;
            let mut searches = Vec::new();
            for st in compare::strategies(&methods) {
                for &s in &seeds {
                    let mut sets = a.job.set.to_vec();
                    sets.extend([
                        format!("search.strategy=\"{st}\""),
                        format!("seed={s}"),
                        "select.after_search=false".into(),
                    ]);
                    let cfg = Config::load(a.config.as_deref(), &sets)?;
                    let dir = compare::search_dir(out, st, s);
                    searches.push((format!("search {st}, seed {s}"), CompareUnit::Search { cfg: Box::new(cfg), dir }));
                }
            }
            let mut selections = Vec::new();
            for m in methods.iter().filter(|m| m.criterion.is_some()) {
                let c = m.criterion.expect("filtered");
                let mut sets = a.job.set.to_vec();
                sets.push(format!("select.criterion=\"{c}\""));
                // Checked now against the method's strategy, before anything runs.
                let mut check = sets.clone();
                check.push(format!("search.strategy=\"{}\"", m.strategy));
                Config::load(a.config.as_deref(), &check)?;
                for &s in &seeds {
                    let (run, dir) = (compare::search_dir(out, m.strategy, s), compare::select_dir(out, m, s));
                    selections.push((
                        format!("select {}, seed {s}", m.name),
                        CompareUnit::Select { sets: sets.clone(), run, dir },
                    ));
                }
            }
            Ok((methods, seeds, searches, selections))
        };
    let (methods, seeds, searches, selections) = match plan() {
        Ok(p) => p,
        Err(e) => return fail_once(&e),
    };
    let first = match &searches[0].1 {
        CompareUnit::Search { cfg, .. } => cfg.as_ref().clone(),
        CompareUnit::Select { .. } => unreachable!("searches come first"),
    };
    let comm = match super::start(&first, |_, _| Ok(())) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let existed = out.exists();
    let resume = a.resume.is_some();
    let stop = super::watch_signals();
    super::quiet_results();
    let run = || -> Result<()> {
        open_out(comm.as_ref(), out, resume, "search")?;
        init_threads(&first, comm.as_ref());
        init_logging(comm.as_ref(), out);
        let plan_text = format!("methods = {:?}\nseeds = {:?}\n", a.methods, seeds);
        let mismatch: Option<String> = comm
            .is_coordinator()
            .then(|| {
                let own = out.join("compare-plan.toml");
                match std::fs::read_to_string(&own) {
                    Ok(t) if resume && t != plan_text => Some(format!(
                        "{}: was written for other methods or seeds: resume with the original ones",
                        own.display()
                    )),
                    _ => None,
                }
            })
            .flatten();
        if let Some(msg) = comm::broadcast_value(comm.as_ref(), 0, comm.is_coordinator().then_some(&mismatch))? {
            return Err(Error::config("--methods", "methods", msg));
        }
        comm::on_coordinator(comm.as_ref(), || write_atomic(&out.join("compare-plan.toml"), plan_text.as_bytes()))?;
        for (phase, units) in [("searches", &searches), ("selections", &selections)] {
            let finished = |u: &CompareUnit| match u {
                CompareUnit::Search { dir, .. } => dir.join("report.json").is_file(),
                CompareUnit::Select { dir, .. } => dir.join("scores.json").is_file(),
            };
            let mine: Option<Vec<usize>> =
                comm.is_coordinator().then(|| (0..units.len()).filter(|&i| !finished(&units[i].1)).collect());
            let todo: Vec<usize> = comm::broadcast_value(comm.as_ref(), 0, mine.as_ref())?;
            tracing::info!("compare: {} {phase}, {} to run", units.len(), todo.len());
            over_units(comm.as_ref(), todo.len(), a.job.ranks_per_job, out, &mut |g, k| {
                let (label, unit) = &units[todo[k]];
                tracing::info!("compare: {label}");
                match unit {
                    CompareUnit::Search { cfg, dir } => {
                        let from = dir.exists().then_some("auto");
                        super::search::run_search(cfg, g, dir, from, Some(&stop))
                    }
                    CompareUnit::Select { sets, run, dir } => {
                        let cfg = super::select::load_run(run, sets)?;
                        let from = dir.exists().then_some("auto");
                        super::select::run_select(&cfg, g, run, dir, from, Some(&stop))
                    }
                }
            })?;
        }
        // The derived architecture of every method with a supernet, on the supernet's shared
        // weights (its single path) over the validation half.
        let derived: Vec<(&compare::Method, u64)> = methods
            .iter()
            .filter(|m| m.strategy != crate::config::Strategy::Random)
            .flat_map(|m| seeds.iter().map(move |&s| (m, s)))
            .collect();
        let mine: Option<Vec<usize>> = comm.is_coordinator().then(|| {
            (0..derived.len()).filter(|&i| !compare::derived_file(out, derived[i].0, derived[i].1).is_file()).collect()
        });
        let todo: Vec<usize> = comm::broadcast_value(comm.as_ref(), 0, mine.as_ref())?;
        tracing::info!("compare: {} derived architectures to score", todo.len());
        over_units(comm.as_ref(), todo.len(), a.job.ranks_per_job, out, &mut |g, k| {
            let (m, s) = derived[todo[k]];
            let run = compare::search_dir(out, m.strategy, s);
            let cfg = super::select::load_run(&run, &a.job.set)?;
            let result = compare::result_file(out, m, s);
            let genotype = super::train::parse_genotype(&compare::result_of(&result)?.genotype)?;
            let t = derived_accuracy(&cfg, g, &run, &genotype)?;
            tracing::info!(
                "compare: {} seed {s}: {genotype} validation accuracy {:.4} (shared weights)",
                m.name,
                t.acc()
            );
            comm::on_coordinator(g, || {
                let file = compare::derived_file(out, m, s);
                let dir = file.parent().expect("a directory");
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.to_path_buf(), e))?;
                let doc = crate::report::records::DerivedRecord {
                    method: m.name.clone(),
                    seed: s,
                    genotype: genotype.to_string(),
                    val_loss: t.loss(),
                    val_acc: t.acc(),
                    images: t.count,
                };
                crate::report::records::write_record(&file, &doc)
            })
        })?;
        comm::on_coordinator(comm.as_ref(), || {
            let truth = a.groundtruth.as_deref().map(crate::experiment::groundtruth::read_truths).transpose()?;
            let doc = compare::tables(out, &methods, &seeds, truth.as_ref())?;
            if let Err(e) = compare::figure(&doc, out) {
                tracing::warn!("the figure of {}: {e} (the tables are written)", out.display());
            }
            print!(
                "{}",
                std::fs::read_to_string(out.join("compare.md")).map_err(|e| Error::io(out.join("compare.md"), e))?
            );
            Ok(())
        })
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            if !resume && !matches!(e, Error::Path { .. } | Error::Stopped { .. }) {
                clean(comm.as_ref(), out, existed, "search");
            }
            super::mark_stopped(comm.as_ref(), out, &e);
            report_error(comm.as_ref(), &e)
        }
    }
}

/// The accuracy of `genotype` computed by the supernet of `run` with its single path (shared
/// weights, batch statistics) over the validation half of the run's split.
fn derived_accuracy(
    cfg: &Config,
    comm: &dyn Collective,
    run: &Path,
    genotype: &crate::space::Genotype,
) -> Result<crate::loss::Tally> {
    use crate::search::sampling;
    let (net, alphas) = crate::select::load_searched(cfg, run, comm.device())?;
    let mut cfg = cfg.clone();
    let source = crate::data::open(&mut cfg)?;
    let searcher = crate::search::Searcher {
        cfg: &cfg,
        comm,
        data: source.data.as_ref(),
        split: source.split.clone(),
        checkpoints: None,
        stop: None,
    };
    let spec = net.spec().clone();
    let path = sampling::genotype_path(&spec, genotype);
    let w = sampling::one_hot(&spec, &path, alphas[0].kind(), alphas[0].device());
    searcher.evaluate_with(net.as_ref(), &w, Some(&path), &source.split.arch)
}

/// Run `each(group, k)` for units k = 0..count in rank groups; every rank learns whether any
/// unit failed or stopped on a signal (a stop anywhere is a stop of the job: exit 3, requeue,
/// resume). This rank's own error keeps its kind (and exit status).
pub fn over_units(
    world: &dyn Collective,
    count: usize,
    ranks_per_job: usize,
    out: &Path,
    each: &mut dyn FnMut(&dyn Collective, usize) -> Result<()>,
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let groups = Groups::split(world, count, ranks_per_job)?;
    tracing::info!("{count} units in {} rank groups; this rank runs group {}", groups.count, groups.index);
    let mut failure: Option<Error> = None;
    for u in (0..count).filter(|&u| groups.runs(u)) {
        if let Err(e) = each(groups.comm.as_ref(), u) {
            failure = Some(e);
            break;
        }
    }
    let stopped = matches!(failure, Some(Error::Stopped { .. }));
    let message = failure.as_ref().filter(|_| !stopped).map(|e| e.to_string());
    let concluded = groups.conclude(world, message, stopped, || Error::Stopped {
        at: "a unit of another rank group".into(),
        checkpoint: format!("{}/…/checkpoints", out.display()),
    });
    if let Some(e) = failure {
        return Err(e);
    }
    concluded
}
