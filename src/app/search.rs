//! `dartsif-dist search`: the bi-level search of a run directory (or one per seed), its
//! progress and tracking observers, and the selection after it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::experiment;
use super::select::{run_progressive, select_and_report};
use super::{fail_once, finish, init_logging, open_run, out_has_results, prepare_out_dir, start_or_resume};
use crate::comm::{self, Collective};
use crate::config::Config;
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::influence::{Resumable, Subject};
use crate::loss::Tally;
use crate::report::{self, Metrics, RunInfo};
use crate::search::sampling::{self, Mix};
use crate::search::{Candidate, EpochStats, Observer, SearchState, Searcher, StepStats};
use crate::select;
use crate::space::ScoreTable;

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub cfg: super::ConfigArgs,
    #[command(flatten)]
    pub dir: super::RunOut,
    /// Search once per seed as one job (`--seeds 1,2,3`): ranks split into per-seed groups,
    /// runs in `OUT/seed-S`, and `OUT/seeds.{json,csv}` with mean ± std over seeds.
    #[arg(long, value_name = "S1,S2,…")]
    pub seeds: Option<String>,
    /// With --seeds: ranks per seed (0: as many groups as seeds, up to one per rank).
    #[arg(long = "ranks-per-job", default_value_t = 0)]
    pub ranks_per_job: usize,
}

pub fn search_main(args: &SearchArgs) -> i32 {
    if let Some(list) = &args.seeds {
        return search_seeds_main(args, list);
    }
    // Input errors are the same on every rank: print them once.
    let config = match (&args.cfg.config, &args.dir.resume) {
        (None, Some(_)) => {
            let own = args.dir.out.join("config.toml");
            if !own.is_file() {
                let msg = "not a run directory to resume (no config.toml; pass --config to start it)".into();
                return fail_once(&Error::Path { path: args.dir.out.clone(), msg });
            }
            Some(own)
        }
        (c, _) => c.clone(),
    };
    let (cfg, comm) = match super::start_loaded(Config::load(config.as_deref(), &args.cfg.set), Config::check_world) {
        Ok(x) => x,
        Err(status) => return status,
    };
    let (existed, stop) = args.dir.begin();
    let outcome = run_search(&cfg, comm.as_ref(), &args.dir.out, args.dir.resume.as_deref(), Some(&stop));
    // A run stopped by bad input (say an undecodable image met mid-epoch) leaves nothing
    // behind; failures of a valid run keep their logs. Never a directory that holds a
    // checkpoint or a searched supernet (an error in the selection after the search, say).
    let kept = out_has_results(&args.dir.out);
    finish(comm.as_ref(), &args.dir.out, !existed && args.dir.resume.is_none(), outcome, |e| {
        e.exit_code() == 2 && !matches!(e, Error::Path { .. }) && !kept
    })
}

/// `search --seeds`: one search per seed in rank groups.
pub fn search_seeds_main(args: &SearchArgs, list: &str) -> i32 {
    let prepared = || -> Result<(Vec<u64>, Vec<Config>)> {
        let seeds = crate::experiment::parse_seeds(list)?;
        if let Some(r) = args.dir.resume.as_deref().filter(|r| *r != "auto") {
            return Err(Error::config(
                "--resume",
                "resume",
                format!("with --seeds every seed resumes from its own newest checkpoint: use `auto` (got {r:?})"),
            ));
        }
        let config = match (&args.cfg.config, &args.dir.resume) {
            (None, Some(_)) => {
                let first = args.dir.out.join(format!("seed-{}", seeds[0])).join("config.toml");
                if !first.is_file() {
                    let msg = "not a multi-seed run to resume (pass --config to start it)".into();
                    return Err(Error::Path { path: args.dir.out.clone(), msg });
                }
                Some(first)
            }
            (c, _) => c.clone(),
        };
        let cfgs = seeds
            .iter()
            .map(|s| {
                let mut sets = args.cfg.set.to_vec();
                sets.push(format!("seed={s}"));
                Config::load(config.as_deref(), &sets)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((seeds, cfgs))
    };
    let (seeds, cfgs) = match prepared() {
        Ok(p) => p,
        Err(e) => return fail_once(&e),
    };
    let comm = match super::start(&cfgs[0], |_, _| Ok(())) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let (existed, stop) = args.dir.begin();
    let run = || -> Result<()> {
        let resume = args.dir.resume.is_some() && args.dir.out.is_dir();
        if !resume {
            prepare_out_dir(comm.as_ref(), &args.dir.out)?;
        }
        comm::on_coordinator(comm.as_ref(), || {
            let _ = std::fs::remove_file(args.dir.out.join("STOPPED"));
            std::fs::create_dir_all(args.dir.out.join("logs")).map_err(|e| Error::io(args.dir.out.join("logs"), e))
        })?;
        init_logging(comm.as_ref(), &args.dir.out);
        // Seeds already finished (their report, and their selection when one follows the
        // search) are not run again; the coordinator decides for all ranks.
        let finished = |s: u64| {
            let dir = args.dir.out.join(format!("seed-{s}"));
            let after = cfgs[seeds.iter().position(|&x| x == s).expect("listed")].select.after_search;
            dir.join("report.json").is_file() && (!after || dir.join("select").join("scores.json").is_file())
        };
        let mine: Option<Vec<u64>> =
            comm.is_coordinator().then(|| seeds.iter().copied().filter(|&s| resume && finished(s)).collect());
        let done: Vec<u64> = comm::broadcast_value(comm.as_ref(), 0, mine.as_ref())?;
        experiment::over_seeds(
            comm.as_ref(),
            &seeds,
            args.ranks_per_job,
            &args.dir.out,
            "report.json",
            &mut |g, s, dir| {
                if done.contains(&s) {
                    tracing::info!("seed {s}: finished earlier ({})", dir.display());
                    return Ok(());
                }
                let cfg = &cfgs[seeds.iter().position(|&x| x == s).expect("listed")];
                cfg.check_world(g.size())?;
                let resume = if dir.exists() { args.dir.resume.as_deref() } else { None };
                run_search(cfg, g, dir, resume, Some(&stop))
            },
        )
    };
    let outcome = run();
    // Bad input removes what this command created, unless a seed finished.
    let any_done = seeds.iter().any(|s| args.dir.out.join(format!("seed-{s}/report.json")).is_file());
    finish(comm.as_ref(), &args.dir.out, !existed && args.dir.resume.is_none(), outcome, |e| {
        e.exit_code() == 2 && !matches!(e, Error::Path { .. }) && !any_done
    })
}

pub(crate) struct Progress<'a> {
    pub(crate) metrics: Option<Metrics>,
    pub(crate) bar: indicatif::ProgressBar,
    /// Done/total, rate and ETA in the log every 30 s (a Slurm log has no bar).
    pub(crate) log: Option<crate::progress::Progress>,
    pub(crate) log_every: usize,
    pub(crate) last: Option<EpochStats>,
    pub(crate) track: Option<Tracker<'a>>,
}

/// `select.track_every`: the criterion on the supernet as it stands after every k-th epoch.
pub(crate) struct Tracker<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) comm: &'a dyn Collective,
    pub(crate) data: &'a dyn Dataset,
    pub(crate) split: &'a data::SearchSplit,
    /// `tracking.jsonl` (coordinator).
    pub(crate) lines: Option<report::JsonLines>,
}

impl Tracker<'_> {
    fn epoch(&mut self, epoch: usize, state: &SearchState) -> Result<()> {
        if (epoch + 1) % self.cfg.select.track_every != 0 {
            return Ok(());
        }
        let tracked = crate::experiment::tracking::score(self.cfg, self.comm, state, self.data, self.split, epoch)?;
        let (cfg, lines) = (self.cfg, &mut self.lines);
        comm::on_coordinator(self.comm, || {
            if let Some(l) = lines.as_mut() {
                for t in &tracked {
                    l.line(t.line(cfg.select.benchmark_table.as_deref())?)?;
                }
            }
            Ok(())
        })
    }
}

impl Observer for Progress<'_> {
    fn step(&mut self, s: &StepStats) -> Result<()> {
        self.bar.inc(1);
        self.bar.set_message(format!("epoch {} loss {:.3} acc {:.3}", s.epoch, s.train_loss, s.train_acc));
        if let Some(line) = self.log.as_mut().and_then(|l| l.tick(1)) {
            self.bar.suspend(|| tracing::info!("{line}"));
        }
        if let Some(m) = &mut self.metrics {
            if s.global_step % self.log_every == 0 {
                m.step(s)?;
            }
        }
        Ok(())
    }

    fn epoch(&mut self, e: &EpochStats, state: &SearchState) -> Result<()> {
        self.bar.suspend(|| {
            tracing::info!(
                "epoch {:>3}  lr {:.5}{}  train {:.4}/{:.3}  val {:.4}/{:.3}  H(α) {:.4}  {:.0} img/s  all-reduce {:.2} s  {}",
                e.epoch,
                e.lr,
                e.tau.map_or(String::new(), |t| format!("  τ {t:.3}")),
                e.train_loss,
                e.train_acc,
                e.val_loss,
                e.val_acc,
                e.alpha_entropy,
                e.images_per_s,
                e.reduce_s,
                e.genotype
            );
            if let Some(mb) = e.device_mb {
                tracing::info!("epoch {:>3}  GPU memory in use: {mb:.0} MB", e.epoch);
            }
            if let Some(c) = &e.controller {
                tracing::info!(
                    "epoch {:>3}  controller: {} draws, accuracy {:.4}, reward {:.4}, entropy {:.3}, baseline {:.4}",
                    e.epoch,
                    c.draws,
                    c.accuracy,
                    c.reward,
                    c.entropy,
                    c.baseline
                );
            }
        });
        if let Some(m) = &mut self.metrics {
            m.epoch(e)?;
            m.history(e.epoch, state.alpha_json(), &e.arch)?;
        }
        if let Some(t) = &mut self.track {
            t.epoch(e.epoch, state)?;
        }
        self.last = Some(e.clone());
        Ok(())
    }
}

/// The whole `search` command on an initialised communicator.
pub fn run_search(
    cfg: &Config,
    comm: &dyn Collective,
    out: &Path,
    resume: Option<&str>,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let (cfg, source, from) = open_run(cfg, comm, out, resume)?;
    let cfg = &cfg;
    let coord = comm.is_coordinator();
    let run = RunInfo::collect(cfg, comm.backend(), comm.size());
    tracing::info!(
        "search: space {} C={} N={}, {} ranks ({}), micro-batch {}, {} threads per rank, libtorch {}",
        cfg.space.name,
        cfg.space.channels,
        cfg.space.cells_per_stage,
        comm.size(),
        comm.backend(),
        run.micro_batch,
        run.threads_per_rank,
        run.libtorch
    );
    if coord {
        report::write_config(out, cfg, &run)?;
    }

    if cfg.search.strategy == crate::config::Strategy::Random {
        return random_baseline(cfg, comm, out, &run);
    }
    tracing::info!("{}", source.summary);
    let data = source.data.as_ref();
    let mut state = SearchState::new(cfg, comm, tch::Kind::Float)?;
    tracing::info!("supernet: {} weights, α {:?}", state.net.params().count(), state.net.spec().alpha_shapes());
    let resumed_at = match &from {
        Some(dir) => {
            let meta = crate::search::checkpoint::resume_search(dir, cfg, comm.size(), &mut state)?;
            tracing::info!("resumed from {} (epoch {}, step {})", dir.display(), meta.epoch, meta.step);
            Some((meta.global_step, meta.epoch))
        }
        None => None,
    };

    let total = (cfg.search.epochs * cfg.steps_per_epoch(source.split.weights.len())) as u64;
    let bar = if coord && cfg.output.progress && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {elapsed_precise}<{eta_precise}  {msg}",
            )
            .expect("template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut progress = Progress {
        metrics: match (coord, resumed_at) {
            (false, _) => None,
            (true, None) => Some(Metrics::create(out)?),
            // Keep the lines written before the checkpoint; the run repeats those after it.
            (true, Some((step, epoch))) => Some(Metrics::resume(out, step, epoch)?),
        },
        bar,
        log: Some(
            crate::progress::Progress::new("search", "steps", total, coord, false)
                .resumed(resumed_at.map_or(0, |(step, _)| step as u64)),
        ),
        log_every: cfg.output.log_every,
        last: None,
        track: (cfg.select.track_every > 0)
            .then(|| -> Result<Tracker> {
                let path = out.join("tracking.jsonl");
                let lines = match (coord, resumed_at) {
                    (false, _) => None,
                    (true, None) => Some(report::JsonLines::create(path)?),
                    (true, Some((_, epoch))) => Some(report::JsonLines::resume(path, |v| {
                        v["epoch"].as_u64().is_some_and(|e| (e as usize) < epoch)
                    })?),
                };
                Ok(Tracker { cfg, comm, data, split: &source.split, lines })
            })
            .transpose()?,
    };
    let searcher = Searcher {
        cfg,
        comm,
        data: data as &dyn Dataset,
        split: source.split.clone(),
        checkpoints: cfg.checkpoint.enabled.then(|| out.join("checkpoints")),
        stop,
    };
    if let Err(e) = searcher.run(&mut state, &mut progress) {
        // A decoding error belongs to the rank that met it (each rank decodes its own shard):
        // that rank reports it and stops the job, so no rank waits in a collective.
        if matches!(e, Error::Data { .. }) && comm.size() > 1 {
            // A fresh run directory is this run's own (prepare_out_dir refuses a non-empty one);
            // a resumed run keeps its checkpoints.
            if resume.is_none() {
                let _ = std::fs::remove_dir_all(out);
            }
            return Err(crate::comm::fail_alone(comm, e));
        }
        return Err(e);
    }
    progress.bar.finish_and_clear();

    if data.skipped() > 0 {
        tracing::warn!(
            "{} undecodable images were replaced by their successors (data.skip_bad_images)",
            data.skipped()
        );
    }
    // The final architecture, and the forward the held-out test runs: the supernet with
    // softmax(α) (DARTS, SNAS) or the chosen architecture's single path (GDAS, SETN,
    // random-nas).
    let spec = state.net.spec().clone();
    let strategy = cfg.search.strategy;
    let (table, genotype, final_mix) = if strategy.picks_candidates() {
        let (cands, best) = searcher.pick_candidate(&state)?;
        let path = cands[best].path.clone();
        let genotype = sampling::path_genotype(&spec, &path);
        tracing::info!(
            "{strategy}: the best of {} candidates on validation batches: {genotype} (accuracy {:.4})",
            cands.len(),
            cands[best].val_acc
        );
        if coord {
            write_candidates(out, &cands, best)?;
        }
        let criterion = format!("{strategy}: best of {} by validation accuracy", cands.len());
        (ScoreTable::plain(&criterion, sampling::path_table(&spec, &path)), genotype, Mix::Single(path))
    } else {
        let table = crate::space::magnitude_scores(state.softmax_table());
        let genotype = select::coordinate(comm, &spec, &table)?;
        let mix = match strategy {
            crate::config::Strategy::Gdas => Mix::Single(sampling::genotype_path(&spec, &genotype)),
            _ => Mix::Soft,
        };
        (table, genotype, mix)
    };
    let test: Option<Tally> = if !source.test.is_empty() {
        let t = searcher.evaluate_mix(&state, &final_mix, &source.test)?;
        tracing::info!("held-out test: loss {:.4}, accuracy {:.4} on {} images", t.loss(), t.acc(), t.count);
        if let Some(m) = &mut progress.metrics {
            m.test(&t)?;
        }
        Some(t)
    } else {
        None
    };

    tracing::info!("selected genotype (criterion {}): {genotype}", table.criterion);
    if coord {
        report::write_genotype(out, &genotype)?;
        report::write_report(
            out,
            state.net.spec(),
            &genotype,
            &table,
            &state.alpha_table(),
            &state.softmax_table(),
            progress.last.as_ref(),
            test.as_ref(),
            &run,
            crate::report::benchmark::entry(cfg.select.benchmark_table.as_deref(), &genotype.to_string())?,
        )?;
        crate::supernet::state::save_supernet(state.net.as_ref(), &state.alphas, &out.join("supernet.safetensors"))?;
        super::print_result(&genotype.to_string());
    }
    comm.barrier()?;
    // A resumed search continues its selection too (from its checkpoint where it has one).
    let select_dir = |dir: &Path| -> Result<Option<PathBuf>> {
        if resume.is_some() && dir.exists() {
            start_or_resume(comm, dir, Some("auto"))
        } else {
            prepare_out_dir(comm, dir).map(|_| None)
        }
    };
    if cfg.select.after_search && cfg.select.criterion == crate::config::Criterion::DartsPt {
        let dir = out.join("select");
        let from = select_dir(&dir)?;
        run_progressive(cfg, comm, &source, out, &dir, from, stop)?;
    } else if cfg.select.after_search {
        let dir = out.join("select");
        select_dir(&dir)?;
        let (net, alphas) = if select::selection_kind(cfg) == tch::Kind::Float {
            (None, Vec::new())
        } else {
            let net = crate::supernet::build(cfg, cfg.seed, select::selection_kind(cfg), comm.device())?;
            let alphas: Vec<tch::Tensor> =
                state.alphas.iter().map(|a| a.detach().to_kind(select::selection_kind(cfg))).collect();
            let _g = tch::no_grad_guard();
            let (src, dst) = (state.net.params(), net.params());
            for (d, s) in dst.tensors.iter().zip(&src.tensors).chain(dst.buffers.iter().zip(&src.buffers)) {
                d.shallow_clone().copy_(s);
            }
            (Some(net), alphas)
        };
        let res = Resumable { stop, keep: cfg.checkpoint.keep, ..Default::default() };
        let subject =
            Subject { cfg, comm, net: state.net.as_ref(), alphas: &state.alphas, data, split: &searcher.split };
        match &net {
            Some(n) => select_and_report(Subject { net: n.as_ref(), alphas: &alphas, ..subject }, &dir, &res)?,
            None => select_and_report(subject, &dir, &res)?,
        }
    }
    if coord && out.join("tracking.jsonl").is_file() {
        if let Err(e) = report::figures::render_dir(out) {
            tracing::warn!("figures of {}: {e} (`dartsif-dist report` retries)", out.display());
        }
    }
    Ok(())
}

/// `candidates.csv`: SETN's or random-nas's scored architectures in scoring order.
fn write_candidates(out: &Path, cands: &[Candidate], best: usize) -> Result<()> {
    let rows: Vec<Vec<String>> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                i.to_string(),
                c.genotype.clone(),
                c.log_prob.map_or(String::new(), |v| format!("{v:.6}")),
                crate::fsutil::csv_num(c.val_loss, |v| format!("{v:.6}")),
                format!("{:.6}", c.val_acc),
                (i == best).to_string(),
            ]
        })
        .collect();
    let text = crate::fsutil::csv_text(&["index", "genotype", "log_prob", "val_loss", "val_acc", "chosen"], &rows);
    crate::fsutil::write_atomic(&out.join("candidates.csv"), text.as_bytes())
}

/// The random baseline: one architecture drawn uniformly from (seed), nothing trained; its
/// benchmark accuracies looked up when `select.benchmark_table` is set.
fn random_baseline(cfg: &Config, comm: &dyn Collective, out: &Path, run: &RunInfo) -> Result<()> {
    let spec = crate::space::SpaceSpec::by_name(&cfg.space.name)
        .ok_or_else(|| Error::config("config", "space.name", format!("unknown search space {:?}", cfg.space.name)))?;
    let path = sampling::random_architecture(&spec, cfg.seed);
    let genotype = sampling::path_genotype(&spec, &path);
    let table = sampling::path_table(&spec, &path);
    tracing::info!("random baseline (seed {}): {genotype}", cfg.seed);
    if comm.is_coordinator() {
        report::write_genotype(out, &genotype)?;
        report::write_report(
            out,
            &spec,
            &genotype,
            &ScoreTable::plain("random", table.clone()),
            &table,
            &table,
            None,
            None,
            run,
            crate::report::benchmark::entry(cfg.select.benchmark_table.as_deref(), &genotype.to_string())?,
        )?;
        super::print_result(&genotype.to_string());
    }
    comm.barrier()
}
