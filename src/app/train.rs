//! `dartsif-dist train`: an architecture from scratch in a run directory.

use std::path::{Path, PathBuf};

use super::{fail_once, finish, init_logging, init_threads, start_or_resume};
use crate::comm::Collective;
use crate::config::Config;
use crate::data;
use crate::error::{Error, Result};
use crate::report::{self, RunInfo};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The architecture: its text (a DARTS `Genotype(...)` or an NB201 arch string) or a file
    /// holding it, such as a run's genotype.txt. With --resume: the run's own by default.
    #[arg(long, value_name = "GENOTYPE|FILE")]
    pub genotype: Option<String>,
    #[command(flatten)]
    pub cfg: super::ConfigArgs,
    #[command(flatten)]
    pub dir: super::RunOut,
}

/// The genotype of `--genotype`: the text itself, or the file it names.
pub fn parse_genotype(arg: &str) -> Result<crate::space::Genotype> {
    use crate::space::{DartsGenotype, Genotype, Nb1Shot1Genotype, Nb201Genotype};
    let path = Path::new(arg);
    let (text, source) = if path.is_file() {
        let t = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        (t, path.display().to_string())
    } else {
        (arg.to_string(), "--genotype".to_string())
    };
    let text = text.trim();
    let parsed = if text.starts_with("Genotype(") {
        text.parse::<DartsGenotype>().map(Genotype::Darts)
    } else if text.starts_with("ModelSpec(") {
        text.parse::<Nb1Shot1Genotype>().map(Genotype::Nb1Shot1)
    } else if text.starts_with('|') {
        text.parse::<Nb201Genotype>().map(Genotype::Nb201)
    } else {
        Err("expected a DARTS Genotype(...), an NB201 arch string |op~0|+..., or a file holding one".into())
    };
    parsed.map_err(|msg| Error::config(&source, "genotype", msg))
}

pub fn train_main(args: &TrainArgs) -> i32 {
    let own = |file: &str| -> std::result::Result<Option<PathBuf>, Error> {
        let p = args.dir.out.join(file);
        if p.is_file() {
            Ok(Some(p))
        } else {
            let msg = format!("not a training run to resume (no {file}; pass --config and --genotype to start it)");
            Err(Error::Path { path: args.dir.out.clone(), msg })
        }
    };
    let resuming = args.dir.resume.is_some();
    let config = match (&args.cfg.config, resuming) {
        (None, true) => match own("config.toml") {
            Ok(p) => p,
            Err(e) => return fail_once(&e),
        },
        (c, _) => c.clone(),
    };
    let genotype_arg = match (&args.genotype, resuming) {
        (Some(g), _) => g.clone(),
        (None, true) => match own("genotype.txt") {
            Ok(p) => p.expect("exists").display().to_string(),
            Err(e) => return fail_once(&e),
        },
        (None, false) => {
            return fail_once(&Error::config("--genotype", "genotype", "required (the architecture to train)"))
        }
    };
    let cfg = match Config::load(config.as_deref(), &args.cfg.set) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    let genotype = match parse_genotype(&genotype_arg) {
        Ok(g) => g,
        Err(e) => return fail_once(&e),
    };
    let comm = match super::start(&cfg, Config::check_fault) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let (existed, stop) = args.dir.begin();
    let outcome = run_train(&cfg, comm.as_ref(), &genotype, &args.dir.out, args.dir.resume.as_deref(), Some(&stop));
    finish(comm.as_ref(), &args.dir.out, !existed && !resuming, outcome, |e| {
        e.exit_code() == 2 && !matches!(e, Error::Path { .. })
    })
}

/// The `train` command: the genotype's network from scratch on all training images, the test
/// set after every epoch; `metrics.jsonl`, `model.safetensors`, `report.json`.
pub fn run_train(
    cfg: &Config,
    comm: &dyn Collective,
    genotype: &crate::space::Genotype,
    out: &Path,
    resume: Option<&str>,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let mut cfg = cfg.clone();
    let source = data::open(&mut cfg)?;
    let cfg = &cfg;
    let (world, t) = (comm.size(), &cfg.train);
    t.validate("config")?;
    let micro = if t.micro_batch == 0 { t.batch_size / world } else { t.micro_batch };
    if t.batch_size % world != 0 || micro == 0 || (t.batch_size / world) % micro != 0 {
        return Err(Error::config(
            "config",
            "train.batch_size",
            format!(
                "{} must split into {world} equal shards of whole micro-batches (train.micro_batch = {})",
                t.batch_size, t.micro_batch
            ),
        ));
    }
    let train = crate::train::training_indices(&source);
    if train.len() < t.batch_size {
        return Err(Error::config(
            "config",
            "train.batch_size",
            format!("{} is larger than the {} training images", t.batch_size, train.len()),
        ));
    }
    t.stem.check_image_size("config", "train.stem", cfg.data.side())?;
    // NetworkImageNet's auxiliary head pools the 7×7 (or 8×8) output of cell 2·layers/3 to 1×1.
    if t.auxiliary && t.stem == crate::config::StemKind::ImageNet && !matches!(cfg.data.side(), 224 | 256) {
        return Err(Error::config(
            "config",
            "train.auxiliary",
            format!(
                "the ImageNet auxiliary head needs 224 or 256 px images (data.image_size: {} px): set train.auxiliary = false",
                cfg.data.side()
            ),
        ));
    }
    // Built (seeded) before the run directory exists: a genotype it cannot build writes nothing.
    tch::manual_seed(cfg.seed as i64);
    let net = crate::network::build(
        genotype,
        crate::network::NetworkConfig {
            channels: t.channels as i64,
            layers: t.layers,
            num_classes: cfg.data.num_classes as i64,
            auxiliary: t.auxiliary,
            stem: t.stem,
        },
        tch::Kind::Float,
        comm.device(),
    )?;
    let from = start_or_resume(comm, out, resume)?;
    init_threads(cfg, comm);
    init_logging(comm, out);
    comm.broadcast_tensors(0, &net.params().tensors)?;
    let run = RunInfo::collect(cfg, comm.backend(), world);
    let coord = comm.is_coordinator();
    if coord && from.is_none() {
        report::write_config(out, cfg, &run)?;
        report::write_genotype(out, genotype)?;
    }
    tracing::info!("{}", source.summary);
    let weights = crate::network::weights_without_auxiliary(net.as_ref());
    let macs = crate::network::multiply_adds(net.as_ref(), cfg.data.side());
    tracing::info!(
        "train: {genotype}: {weights} weights ({} with the auxiliary head), {:.1} M multiply-adds per {side} px \
         image, {} epochs of {} training images, batch {}, {} ranks",
        net.params().count(),
        macs / 1e6,
        t.epochs,
        train.len(),
        t.batch_size,
        world,
        side = cfg.data.side()
    );
    let n = net.params().tensors.len();
    let opt = crate::optim::Sgd::new(t.weights.clone(), n);
    let mut state = crate::train::TrainState { net, opt, epoch: 0, step: 0, partial: [0.0; 3] };
    if let Some(dir) = &from {
        let meta = crate::train::load_train(dir, &mut state, cfg, &genotype.to_string(), world)?;
        tracing::info!("resumed from {} (epoch {}, step {})", dir.display(), meta.epoch, meta.step);
    }
    let trainer = crate::train::Trainer {
        cfg,
        comm,
        data: source.data.as_ref(),
        train,
        test: source.test.clone(),
        genotype: genotype.to_string(),
        checkpoints: cfg.checkpoint.enabled.then(|| out.join("checkpoints")),
        stop,
    };
    let path = out.join("metrics.jsonl");
    let done = state.epoch;
    let mut metrics = match (coord, &from) {
        (false, _) => None,
        (true, None) => Some(report::JsonLines::create(path)?),
        (true, Some(_)) => {
            Some(report::JsonLines::resume(path, |v| v["epoch"].as_u64().is_some_and(|e| (e as usize) < done))?)
        }
    };
    let mut last = None;
    while state.epoch < t.epochs {
        let e = trainer.epoch(&mut state)?;
        tracing::info!(
            "epoch {:>3}  lr {:.5}  drop-path {:.3}  train {:.4}/{:.3}  test {}  {:.1} s",
            e.epoch,
            e.lr,
            e.drop_path,
            e.train_loss,
            e.train_acc,
            e.test_acc.map_or("-".to_string(), |a| format!("{:.4}/{a:.4}", e.test_loss.unwrap_or(f64::NAN))),
            e.seconds
        );
        if let Some(m) = &mut metrics {
            let mut v = serde_json::to_value(&e).expect("serialisable");
            v["kind"] = serde_json::json!("epoch");
            m.line(v)?;
        }
        last = Some(e);
    }
    if coord {
        let named = state.net.params().named();
        let tensors: Vec<(String, tch::Tensor)> =
            named.into_iter().map(|(k, v)| (k, crate::device::on_host(&v))).collect();
        crate::fsutil::write_atomic_with(&out.join("model.safetensors"), |tmp| {
            Ok(tch::Tensor::write_safetensors(&tensors, tmp)?)
        })?;
        let report = crate::report::records::TrainReportRecord {
            genotype: genotype.to_string(),
            genotype_json: genotype.clone(),
            weights: state.net.params().count(),
            weights_without_auxiliary: weights,
            multiply_adds: macs,
            image_size: cfg.data.side(),
            final_epoch: last.as_ref().map(|e| serde_json::to_value(e).expect("serialisable")),
            run,
        };
        crate::report::records::write_record(&out.join("report.json"), &report)?;
        if let Some(e) = &last {
            println!(
                "test accuracy {} (top-5 {})",
                e.test_acc.map_or("-".into(), |a| format!("{a:.4}")),
                e.test_top5.map_or("-".into(), |a| format!("{a:.4}"))
            );
        }
    }
    comm.barrier()
}
