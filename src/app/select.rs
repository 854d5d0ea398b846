//! `dartsif-dist select` and `inspect fidelity`: a searched supernet's selection (one run or
//! one per seed), DARTS-PT's progressive selection, and the fidelity of criteria.

use std::path::{Path, PathBuf};

use super::experiment;
use super::search::Progress;
use super::{fail_once, finish, init_logging, init_threads, open_run, prepare_out_dir, report_error};
use crate::comm::{self, Collective};
use crate::config::Config;
use crate::data;
use crate::error::{Error, Result};
use crate::influence::{Resumable, Subject};
use crate::report::{self, Metrics};
use crate::search::{SearchState, Searcher};
use crate::select;

#[derive(Debug, clap::Args)]
pub struct FidelityArgs {
    /// Run directory of a `search`.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// SGD steps of fine-tuning after each removal (the cap with --until-grad-norm).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Fine-tuning learning rate; default search.weights.lr / 10 (as DARTS-PT's projection).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Fine-tune until converged: until the norm of the mean of each 10 steps' mini-batch
    /// gradients falls below this, with --steps as the cap (the influence function predicts
    /// the loss after θ is re-optimised, not after a fixed few steps).
    #[arg(long, value_name = "TOL")]
    pub until_grad_norm: Option<f64>,
    /// Criteria to score, comma-separated (default: all): magnitude, drop, darts-if/IHVP
    /// (identity, neumann, sherman-morrison, woodbury, cg, exact; cg-ggn, exact-ggn: the
    /// Gauss–Newton curvature; kfac, ekfac, kfac-mc, ekfac-mc: factored by layer, -mc on the
    /// true Fisher by Monte Carlo), darts-im/IHVP/SIGN (the configured select.ihvp, cg-ggn or
    /// the factored ones; paper or negated), e.g. `--criteria drop,darts-if/ekfac`.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub criteria: Vec<String>,
    /// Reuse the actual ΔL measured by an earlier `inspect fidelity` of the same run (its
    /// fidelity.json; same --steps, --lr and --until-grad-norm) instead of measuring it again.
    #[arg(long, value_name = "FILE")]
    pub actual: Option<PathBuf>,
    #[command(flatten)]
    pub set: super::Overrides,
    /// Output directory to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// Run directory of a `search` (its config.toml and supernet.safetensors are read).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// magnitude | drop | darts-if | darts-im | darts-pt  (select.criterion)
    #[arg(long)]
    pub criterion: Option<String>,
    /// identity | neumann | sherman-morrison | woodbury | cg | exact | kfac | ekfac  (select.ihvp)
    #[arg(long)]
    pub ihvp: Option<String>,
    /// Number of evaluation batches N (select.n)
    #[arg(long)]
    pub n: Option<usize>,
    /// Neumann step γ (select.gamma)
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Neumann terms K (select.k)
    #[arg(long)]
    pub k: Option<usize>,
    /// Fisher damping η (select.eta)
    #[arg(long)]
    pub eta: Option<f64>,
    /// DARTS-IM sign: paper | negated (select.im_sign)
    #[arg(long = "im-sign")]
    pub im_sign: Option<String>,
    /// Reproduce the authors' DARTS-IM computation (select.faithful)
    #[arg(long)]
    pub faithful: bool,
    #[command(flatten)]
    pub set: super::Overrides,
    #[command(flatten)]
    pub dir: super::RunOut,
}

impl SelectArgs {
    /// The flags as `select.*` overrides, before the explicit `--set`s.
    fn overrides(&self) -> Vec<String> {
        let mut o = Vec::new();
        let q = |s: &str| format!("{s:?}");
        if let Some(v) = &self.criterion {
            o.push(format!("select.criterion={}", q(v)));
        }
        if let Some(v) = &self.ihvp {
            o.push(format!("select.ihvp={}", q(v)));
        }
        if let Some(v) = self.n {
            o.push(format!("select.n={v}"));
        }
        if let Some(v) = self.gamma {
            o.push(format!("select.gamma={v:e}"));
        }
        if let Some(v) = self.k {
            o.push(format!("select.k={v}"));
        }
        if let Some(v) = self.eta {
            o.push(format!("select.eta={v:e}"));
        }
        if let Some(v) = &self.im_sign {
            o.push(format!("select.im_sign={}", q(v)));
        }
        if self.faithful {
            o.push("select.faithful=true".into());
        }
        o.extend(self.set.iter().cloned());
        o
    }
}

/// `select --run DIR` on a multi-seed search: one selection per seed in rank groups.
pub fn select_seeds_main(args: &SelectArgs, runs: Vec<(Option<u64>, PathBuf)>) -> i32 {
    let prepared = || -> Result<Vec<(u64, PathBuf, Config)>> {
        runs.iter().map(|(s, dir)| Ok((s.expect("seeded"), dir.clone(), load_run(dir, &args.overrides())?))).collect()
    };
    let runs = match prepared() {
        Ok(p) => p,
        Err(e) => return fail_once(&e),
    };
    if args.dir.resume.is_some() {
        return fail_once(&Error::config(
            "--resume",
            "resume",
            "resume the selections of a multi-seed run one seed at a time (--run DIR/seed-S --out OUT/seed-S)",
        ));
    }
    let comm = match super::start(&runs[0].2, |_, _| Ok(())) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let (existed, stop) = args.dir.begin();
    let seeds: Vec<u64> = runs.iter().map(|r| r.0).collect();
    let run = || -> Result<()> {
        prepare_out_dir(comm.as_ref(), &args.dir.out)?;
        init_logging(comm.as_ref(), &args.dir.out);
        experiment::over_seeds(comm.as_ref(), &seeds, 0, &args.dir.out, "scores.json", &mut |g, s, dir| {
            let (_, run_dir, cfg) = runs.iter().find(|r| r.0 == s).expect("listed");
            run_select(cfg, g, run_dir, dir, None, Some(&stop))
        })?;
        if comm.is_coordinator() {
            if let Err(e) = crate::report::figures::render_dir(&args.dir.out) {
                tracing::warn!("figures of {}: {e} (`dartsif-dist report` retries)", args.dir.out.display());
            }
        }
        comm.barrier()
    };
    finish(comm.as_ref(), &args.dir.out, !existed, run(), |e| !matches!(e, Error::Path { .. } | Error::Stopped { .. }))
}

pub fn select_main(args: &SelectArgs) -> i32 {
    if !args.run.join("config.toml").is_file() && args.run.is_dir() {
        if let Ok(runs) = crate::experiment::seed_runs(&args.run, None) {
            if runs.iter().all(|r| r.0.is_some()) {
                return select_seeds_main(args, runs);
            }
        }
    }
    let (cfg, comm) = match super::start_loaded(load_run(&args.run, &args.overrides()), Config::check_fault) {
        Ok(x) => x,
        Err(status) => return status,
    };
    let (existed, stop) = args.dir.begin();
    let outcome = run_select(&cfg, comm.as_ref(), &args.run, &args.dir.out, args.dir.resume.as_deref(), Some(&stop));
    // A failed selection leaves nothing behind (it is cheap to rerun), unless it holds
    // progress checkpoints to resume from.
    let progress = !crate::checkpoint::store::list(&args.dir.out.join("checkpoints")).is_empty();
    finish(comm.as_ref(), &args.dir.out, !existed, outcome, |e| {
        !progress && !matches!(e, Error::Path { .. } | Error::Stopped { .. })
    })
}

pub fn load_run(run: &Path, overrides: &[String]) -> Result<Config> {
    select::open_searched(run, overrides)
}

pub fn fidelity_main(args: &FidelityArgs) -> i32 {
    let cfg = match load_run(&args.run, &args.set) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    if let Some(lr) = args.lr {
        if !(lr > 0.0 && lr.is_finite()) {
            return fail_once(&Error::config("--lr", "lr", format!("must be finite and > 0 (got {lr})")));
        }
    }
    if let Some(t) = args.until_grad_norm {
        if !(t > 0.0 && t.is_finite()) {
            return fail_once(&Error::config(
                "--until-grad-norm",
                "until-grad-norm",
                format!("must be finite and > 0 (got {t})"),
            ));
        }
    }
    let known = select::fidelity::criterion_labels(&cfg);
    if let Some(bad) = args.criteria.iter().find(|c| !known.contains(c)) {
        let msg = format!("unknown criterion {bad:?} (one of: {})", known.join(", "));
        return fail_once(&Error::config("--criteria", "criteria", msg));
    }
    let comm = match super::start(&cfg, |_, _| Ok(())) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let ft = select::fidelity::FineTune {
        steps: args.steps,
        lr: args.lr.unwrap_or(cfg.search.weights.lr / 10.0),
        until_grad_norm: args.until_grad_norm,
    };
    let run = || -> Result<()> {
        let mut cfg = cfg.clone();
        let source = data::open(&mut cfg)?;
        // Inputs first: nothing is written before the supernet file (and a measured ΔL to
        // reuse) have been read.
        let (net, alphas) = select::load_searched(&cfg, &args.run, comm.device())?;
        let measured = match &args.actual {
            Some(p) => {
                Some(select::fidelity::Measured::read(p, &select::fidelity::candidate_labels(net.as_ref()), &ft)?)
            }
            None => None,
        };
        prepare_out_dir(comm.as_ref(), &args.out)?;
        init_threads(&cfg, comm.as_ref());
        init_logging(comm.as_ref(), &args.out);
        // Each step of the report is written as soon as it is known (the ΔL, then every
        // criterion's row): a stopped or failed run keeps what it measured.
        let write = |report: &select::fidelity::FidelityReport| {
            comm::on_coordinator(comm.as_ref(), || {
                use crate::fsutil::write_atomic;
                write_atomic(&args.out.join("fidelity.csv"), report.summary_csv().as_bytes())?;
                write_atomic(&args.out.join("candidates.csv"), report.candidates_csv().as_bytes())?;
                write_atomic(
                    &args.out.join("fidelity.json"),
                    serde_json::to_string_pretty(report).expect("json").as_bytes(),
                )
            })
        };
        let (data, split) = (source.data.as_ref(), &source.split);
        let subject = Subject { cfg: &cfg, comm: comm.as_ref(), net: net.as_ref(), alphas: &alphas, data, split };
        let report = select::fidelity::run(subject, &ft, &args.criteria, measured, write)?;
        if comm.is_coordinator() {
            print!("{}", report.table());
        }
        comm.barrier()
    };
    match run() {
        Ok(()) => 0,
        Err(e) => report_error(comm.as_ref(), &e),
    }
}

/// The `select` command: load a searched supernet and run the configured criterion.
pub fn run_select(
    cfg: &Config,
    comm: &dyn Collective,
    run: &Path,
    out: &Path,
    resume: Option<&str>,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<()> {
    // The searched supernet is read and checked before anything is written: a damaged
    // supernet.safetensors leaves no output directory behind.
    let (net, alphas) = select::load_searched(cfg, run, comm.device())?;
    let (cfg, source, from) = open_run(cfg, comm, out, resume)?;
    let cfg = &cfg;
    if cfg.select.criterion == crate::config::Criterion::DartsPt {
        drop((net, alphas));
        return run_progressive(cfg, comm, &source, run, out, from, stop);
    }
    let done = match from {
        Some(dir) => {
            let meta = crate::influence::saved::load_select(&dir, cfg)?;
            tracing::info!("resumed selection from {} ({} candidates scored)", dir.display(), meta.records.len());
            meta.records
        }
        None => Vec::new(),
    };
    tracing::info!("{}", source.summary);
    let res = Resumable {
        dir: cfg.checkpoint.enabled.then(|| out.join("checkpoints")),
        every: cfg.checkpoint.select_every,
        keep: cfg.checkpoint.keep,
        stop,
        done,
    };
    let (data, split) = (source.data.as_ref(), &source.split);
    select_and_report(Subject { cfg, comm, net: net.as_ref(), alphas: &alphas, data, split }, out, &res)
}

/// `select --criterion darts-pt`: progressive decisions with fine-tuning, from the run's
/// supernet or from a checkpoint of this selection.
pub fn run_progressive(
    cfg: &Config,
    comm: &dyn Collective,
    source: &data::Source,
    run: &Path,
    out: &Path,
    from: Option<PathBuf>,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let coord = comm.is_coordinator();
    let spec = crate::space::SpaceSpec::by_name(&cfg.space.name).expect("validated space");
    let tune = select::progressive::tune_config(cfg, &spec)?;
    let mut state = SearchState::new(&tune, comm, tch::Kind::Float)?;
    let resumed_at = match &from {
        Some(dir) => {
            let meta = crate::search::checkpoint::resume_search(dir, &tune, comm.size(), &mut state)?;
            tracing::info!("resumed darts-pt from {} (tuning epoch {}, step {})", dir.display(), meta.epoch, meta.step);
            Some((meta.global_step, meta.epoch, meta.step > 0))
        }
        None => {
            crate::supernet::state::load_supernet(
                state.net.as_ref(),
                &state.alphas,
                &run.join("supernet.safetensors"),
            )?;
            None
        }
    };
    tracing::info!(
        "select: darts-pt, rule {}, {} tuning epochs at lr {} ({} ranks)",
        cfg.select.pt_rule,
        tune.search.epochs,
        tune.search.weights.lr,
        comm.size()
    );
    let decisions_path = out.join("decisions.jsonl");
    let mut decisions = match (coord, resumed_at) {
        (false, _) => None,
        (true, None) => Some(report::JsonLines::create(decisions_path)?),
        // Decisions are made at the start of an epoch: a mid-epoch checkpoint has its epoch's.
        (true, Some((_, epoch, mid))) => Some(report::JsonLines::resume(decisions_path, |v| {
            v["epoch"].as_u64().is_some_and(|e| (e as usize) < epoch || (mid && e as usize == epoch))
        })?),
    };
    let mut progress = Progress {
        metrics: match (coord, resumed_at) {
            (false, _) => None,
            (true, None) => Some(Metrics::create(out)?),
            (true, Some((step, epoch, _))) => Some(Metrics::resume(out, step, epoch)?),
        },
        bar: indicatif::ProgressBar::hidden(),
        log: None,
        log_every: tune.output.log_every,
        last: None,
        track: None,
    };
    let searcher = Searcher {
        cfg: &tune,
        comm,
        data: source.data.as_ref(),
        split: source.split.clone(),
        checkpoints: cfg.checkpoint.enabled.then(|| out.join("checkpoints")),
        stop,
    };
    let table = select::progressive::run(&searcher, &mut state, &mut progress, &mut |v| match &mut decisions {
        Some(d) => d.line(v),
        None => Ok(()),
    })?;
    let genotype = select::coordinate(comm, state.net.spec(), &table)?;
    tracing::info!("selected genotype (criterion darts-pt): {genotype}");
    if coord {
        let sel = select::Selection {
            table,
            genotype: genotype.clone(),
            diagnostics: serde_json::json!({"rule": cfg.select.pt_rule, "tuning_epochs": tune.search.epochs}),
            timing: serde_json::json!({"total_s": t0.elapsed().as_secs_f64(), "ranks": comm.size()}),
            mixing: state.softmax_table(),
        };
        report::write_selection(cfg, state.net.spec(), &sel, out)?;
        super::print_result(&genotype.to_string());
    }
    comm.barrier()
}

pub fn select_and_report(subject: Subject, out: &Path, res: &Resumable) -> Result<()> {
    let Subject { cfg, comm, net, .. } = subject;
    let s = &cfg.select;
    // The IHVP solver only where the criterion uses one.
    let solver = if matches!(s.criterion, crate::config::Criterion::DartsIf | crate::config::Criterion::DartsIm) {
        format!(", ihvp {}", s.ihvp)
    } else {
        String::new()
    };
    tracing::info!(
        "select: criterion {}{}{solver}, N = {} batches of {}, {} ranks, {}",
        s.criterion,
        if s.faithful { " (faithful)" } else { "" },
        s.n,
        cfg.select_batch(),
        comm.size(),
        s.precision
    );
    let sel = select::run(subject, res)?;
    comm::on_coordinator(comm, || report::write_selection(cfg, net.spec(), &sel, out))?;
    tracing::info!("selected genotype (criterion {}): {}", sel.table.criterion, sel.genotype);
    tracing::info!("timing: {}", sel.timing);
    if comm.is_coordinator() {
        if let Err(e) = report::figures::render_dir(out) {
            tracing::warn!("figures of {}: {e} (`dartsif-dist report` retries)", out.display());
        }
        super::print_result(&sel.genotype.to_string());
    }
    comm.barrier()
}
