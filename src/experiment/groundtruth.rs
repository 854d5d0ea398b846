//! `groundtruth`: train every architecture of a small NAS-Bench-201 cell space from scratch
//! (the `[train]` protocol, one architecture per rank group at a time) and write a table in the
//! benchmark format, so a criterion can be checked (Kendall τ) where no benchmark exists.
//!
//! The space: the NB201 cell with the `edges` free over `ops` and every other edge fixed to
//! `fill` — e.g. the chain 1←0, 2←1, 3←2 over three ops, others `none`: 27 architectures.

use std::path::{Path, PathBuf};

use crate::comm::{Collective, Groups};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::report::records::GroundTruthRecord;
use crate::space::{nb201_edge, Genotype, Nb201Genotype, NB201_OPS};
use crate::stats::kendall_tau;

/// Which NB201 cells to enumerate.
#[derive(Debug, Clone, PartialEq)]
pub struct CellSpace {
    /// Free edges (NB201 row indices).
    pub edges: Vec<usize>,
    /// Op indices each free edge ranges over.
    pub ops: Vec<usize>,
    /// The op of every other edge.
    pub fill: usize,
}

fn edge_name(e: usize) -> String {
    let (i, j) = nb201_edge(e);
    format!("{i}<-{j}")
}

impl CellSpace {
    /// From `--edges 1<-0,2<-1` (default: all six), `--ops a,b` (default: every op but
    /// `none`) and `--fill` (an op name).
    pub fn parse(edges: Option<&str>, ops: Option<&str>, fill: &str) -> Result<Self> {
        let op = |flag: &str, name: &str| {
            NB201_OPS.iter().position(|&o| o == name.trim()).ok_or_else(|| {
                Error::config(
                    flag,
                    flag.trim_start_matches('-'),
                    format!("unknown NB201 op {:?} (ops: {})", name.trim(), NB201_OPS.join(", ")),
                )
            })
        };
        let edges: Vec<usize> = match edges {
            None => (0..6).collect(),
            Some(list) => list
                .split(',')
                .map(|e| {
                    (0..6).find(|&k| edge_name(k) == e.trim()).ok_or_else(|| {
                        Error::config(
                            "--edges",
                            "edges",
                            format!(
                                "unknown NB201 edge {:?} (edges: {})",
                                e.trim(),
                                (0..6).map(edge_name).collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<_>>()?,
        };
        let ops: Vec<usize> = match ops {
            None => (1..NB201_OPS.len()).collect(),
            Some(list) => list.split(',').map(|o| op("--ops", o)).collect::<Result<_>>()?,
        };
        for (flag, v) in [("--edges", &edges), ("--ops", &ops)] {
            let mut seen = std::collections::HashSet::new();
            if let Some(x) = v.iter().find(|x| !seen.insert(**x)) {
                let what = if flag == "--edges" { edge_name(*x) } else { NB201_OPS[*x].to_string() };
                return Err(Error::config(flag, flag.trim_start_matches('-'), format!("{what} is listed twice")));
            }
        }
        let fill = op("--fill", fill)?;
        let count = (ops.len() as f64).powi(edges.len() as i32);
        if count > 100_000.0 {
            return Err(Error::config(
                "--edges",
                "edges",
                format!("{} ops on {} edges make {count} architectures (at most 100000)", ops.len(), edges.len()),
            ));
        }
        Ok(CellSpace { edges, ops, fill })
    }

    /// Every architecture, the last free edge varying fastest.
    pub fn architectures(&self) -> Vec<Nb201Genotype> {
        let total = self.ops.len().pow(self.edges.len() as u32);
        (0..total)
            .map(|mut i| {
                let mut ops = vec![self.fill; 6];
                for &e in self.edges.iter().rev() {
                    ops[e] = self.ops[i % self.ops.len()];
                    i /= self.ops.len();
                }
                Nb201Genotype { ops }
            })
            .collect()
    }
}

pub use crate::report::records::{Tau, Truth};

/// Train every architecture of `space` in rank groups (`ranks_per_arch` ranks each; 0: one
/// group per rank). Finished architectures are recorded in `out/archs/<i>.json` by their
/// group's coordinator; with `resume`, those already there are not trained again; a signal
/// (`stop`) stops every group before its next architecture. Returns all results on the world's
/// coordinator (empty elsewhere).
pub fn run(
    world: &dyn Collective,
    cfg: &Config,
    space: &CellSpace,
    ranks_per_arch: usize,
    out: &Path,
    resume: bool,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Vec<Truth>> {
    let archs = space.architectures();
    let dir = out.join("archs");
    let mut cfg = cfg.clone();
    let source = crate::data::open(&mut cfg)?;
    if source.test.is_empty() {
        return Err(Error::config(
            "config",
            "data.test_size",
            "groundtruth reports test accuracy: the data needs a test set (every training image is trained on)",
        ));
    }
    // The coordinator reads earlier results (each must be of its architecture) and decides
    // what is left; every rank gets the same list.
    let decided: Option<super::Decision<Truth>> = world.is_coordinator().then(|| {
        let (mut todo, mut kept) = (Vec::new(), Vec::new());
        for (i, a) in archs.iter().enumerate() {
            let path = dir.join(format!("{i}.json"));
            match resume.then(|| std::fs::read_to_string(&path).ok()).flatten() {
                None => todo.push(i),
                Some(text) => {
                    let t: Truth = serde_json::from_str(&text)
                        .map_err(|e| format!("{}: unreadable result: {e}", path.display()))?;
                    if t.arch != a.to_string() {
                        return Err(format!(
                            "{}: the result of {} where {a} was expected (another --edges/--ops/--fill?)",
                            path.display(),
                            t.arch
                        ));
                    }
                    kept.push(t);
                }
            }
        }
        Ok((todo, kept))
    });
    let todo = crate::comm::broadcast_value(world, 0, decided.as_ref().map(|d| d.clone().map(|(t, _)| t)).as_ref())?
        .map_err(|msg| Error::Path { path: dir.clone(), msg })?;
    let kept = decided.and_then(|d| d.ok()).map(|(_, k)| k).unwrap_or_default();
    let groups = Groups::split(world, todo.len().max(1), ranks_per_arch)?;
    let (w, t) = (groups.comm.size(), &cfg.train);
    let micro = if t.micro_batch == 0 { t.batch_size / w } else { t.micro_batch };
    if t.batch_size % w != 0 || micro == 0 || (t.batch_size / w) % micro != 0 {
        return Err(Error::config(
            "config",
            "train.batch_size",
            format!("{} must split into {w} equal shards (the ranks of a group) of whole micro-batches", t.batch_size),
        ));
    }
    tracing::info!(
        "groundtruth: {} architectures ({} to train) in {} rank groups of {w}",
        archs.len(),
        todo.len(),
        groups.count
    );
    let train = crate::train::training_indices(&source);
    let mut failure = None;
    let mut stopped = false;
    let mut mine = Vec::new();
    let fault = &cfg.fault;
    let mut progress = crate::progress::Progress::new(
        format!("groundtruth: architectures of rank group {}", groups.index),
        "architectures",
        todo.iter().enumerate().filter(|(k, _)| groups.runs(*k)).count() as u64,
        world.is_coordinator(),
        true,
    );
    for (k, &i) in todo.iter().enumerate().filter(|(k, _)| groups.runs(*k)) {
        if fault.phase == crate::config::FaultPhase::Experiment && fault.at_step == k && fault.rank == world.rank() {
            crate::control::inject(fault.action, stop);
        }
        // SIGTERM/SIGUSR1: stop between architectures (finished ones are on disk).
        if crate::control::agree_stop(groups.comm.as_ref(), stop)? {
            stopped = true;
            break;
        }
        let outcome = train_one(groups.comm.as_ref(), &cfg, &source, &train, &archs[i]).and_then(|r| {
            let (acc, loss, tr_acc, tr_loss, weights, seconds) = r;
            let t = Truth {
                index: i,
                arch: archs[i].to_string(),
                test_acc: acc,
                test_loss: loss,
                train_acc: tr_acc,
                train_loss: tr_loss,
                weights,
                seconds,
                group: groups.index,
            };
            tracing::info!("groundtruth: [{}/{}] {} test accuracy {acc:.4}", k + 1, todo.len(), t.arch);
            if groups.comm.is_coordinator() {
                write_atomic(&dir.join(format!("{i}.json")), serde_json::to_string(&t).expect("json").as_bytes())?;
            }
            Ok(t)
        });
        // A coordinator-only write may fail: the group agrees before its next collective.
        let bad = groups.comm.any(outcome.is_err())?;
        progress.inc(1);
        match outcome {
            Ok(t) if !bad => mine.push(t),
            Ok(_) => {
                failure = Some(format!("architecture {i} ({}): failed on its group's coordinator", archs[i]));
                break;
            }
            Err(e) => {
                failure = Some(format!("architecture {i} ({}): {e}", archs[i]));
                break;
            }
        }
    }
    progress.finish();
    groups.conclude(world, failure, stopped, || Error::Stopped {
        at: "between architectures".into(),
        checkpoint: format!("{} (finished architectures; continue with --resume)", dir.display()),
    })?;
    let mut all = groups.gather(world, &mine)?;
    all.extend(kept);
    all.sort_by_key(|t| t.index);
    Ok(all)
}

type Trained = (f64, f64, f64, f64, usize, f64);

fn train_one(
    comm: &dyn Collective,
    cfg: &Config,
    source: &crate::data::Source,
    train: &[usize],
    arch: &Nb201Genotype,
) -> Result<Trained> {
    let t0 = std::time::Instant::now();
    let t = &cfg.train;
    tch::manual_seed(cfg.seed as i64);
    let genotype = Genotype::Nb201(arch.clone());
    let net = crate::network::build(
        &genotype,
        crate::network::NetworkConfig {
            channels: t.channels as i64,
            layers: t.layers,
            num_classes: cfg.data.num_classes as i64,
            auxiliary: false,
            stem: crate::config::StemKind::Cifar,
        },
        tch::Kind::Float,
        comm.device(),
    )?;
    comm.broadcast_tensors(0, &net.params().tensors)?;
    let weights = net.params().count();
    let n = net.params().tensors.len();
    let opt = crate::optim::Sgd::new(t.weights.clone(), n);
    let mut state = crate::train::TrainState { net, opt, epoch: 0, step: 0, partial: [0.0; 3] };
    let trainer = crate::train::Trainer {
        cfg,
        comm,
        data: source.data.as_ref(),
        train: train.to_vec(),
        test: source.test.clone(),
        genotype: genotype.to_string(),
        checkpoints: None,
        stop: None,
    };
    let mut last = None;
    while state.epoch < t.epochs {
        last = Some(trainer.epoch(&mut state)?);
    }
    let e = last.ok_or_else(|| Error::config("config", "train.epochs", "must be at least 1"))?;
    let (acc, loss) = match (e.test_acc, e.test_loss) {
        (Some(a), Some(l)) => (a, l),
        _ => {
            let (v, _) = trainer.evaluate(&state, &source.split.arch)?;
            (v.acc(), v.loss())
        }
    };
    Ok((acc, loss, e.train_acc, e.train_loss, weights, t0.elapsed().as_secs_f64()))
}

/// Write `groundtruth.tsv` (the benchmark-table format: `select.benchmark_table` reads it),
/// `groundtruth.csv` and `groundtruth.json` (with the τ of each scored criterion).
pub fn write(out: &Path, truths: &[Truth], taus: &[Tau]) -> Result<()> {
    // Accuracies in % as in NAS-Bench-201's table (`launch/nb201-table`); the CSV keeps fractions.
    let mut tsv = String::from("arch\ttest_acc\ttrain_acc\ttest_loss\n");
    let header = ["index", "arch", "test_acc", "test_loss", "train_acc", "train_loss", "weights", "seconds", "group"];
    let mut rows = Vec::new();
    for t in truths {
        tsv.push_str(&format!("{}\t{}\t{}\t{}\n", t.arch, 100.0 * t.test_acc, 100.0 * t.train_acc, t.test_loss));
        rows.push(vec![
            t.index.to_string(),
            t.arch.to_string(),
            t.test_acc.to_string(),
            t.test_loss.to_string(),
            t.train_acc.to_string(),
            t.train_loss.to_string(),
            t.weights.to_string(),
            t.seconds.to_string(),
            t.group.to_string(),
        ]);
    }
    write_atomic(&out.join("groundtruth.tsv"), tsv.as_bytes())?;
    write_atomic(&out.join("groundtruth.csv"), crate::fsutil::csv_text(&header, &rows).as_bytes())?;
    let doc = GroundTruthRecord { architectures: truths.to_vec(), kendall_tau: taus.to_vec() };
    crate::report::records::write_record(&out.join("groundtruth.json"), &doc)
}

/// The trained architectures of a `groundtruth` output directory (its `groundtruth.json`) and
/// the cell space they span: the free edges are those whose op varies, each ranging over the
/// ops seen on it.
pub fn read_truths(dir: &Path) -> Result<(Vec<Truth>, CellSpace)> {
    let path = dir.join("groundtruth.json");
    let bad = |msg: String| Error::Path { path: path.clone(), msg };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let doc: GroundTruthRecord =
        serde_json::from_str(&text).map_err(|e| bad(format!("not the groundtruth.json of a groundtruth run: {e}")))?;
    let truths = doc.architectures;
    let archs: Vec<Nb201Genotype> = truths
        .iter()
        .map(|t| t.arch.parse().map_err(|e: String| bad(format!("{}: {e}", t.arch))))
        .collect::<Result<_>>()?;
    let first = archs.first().ok_or_else(|| bad("no architectures".into()))?;
    let edges: Vec<usize> = (0..6).filter(|&e| archs.iter().any(|a| a.ops[e] != first.ops[e])).collect();
    let mut ops: Vec<usize> = archs.iter().flat_map(|a| edges.iter().map(|&e| a.ops[e])).collect();
    ops.sort_unstable();
    ops.dedup();
    let fill = (0..6).find(|e| !edges.contains(e)).map_or(0, |e| first.ops[e]);
    Ok((truths, CellSpace { edges, ops, fill }))
}

/// A `scores.json` read for [`tau`]: the criterion and score by (edge, op).
pub struct ScoresFile {
    pub path: PathBuf,
    pub criterion: String,
    table: std::collections::HashMap<(String, String), f64>,
}

impl ScoresFile {
    /// Read `path` and check it scores every (free edge, op) of `space` (checked before any
    /// training, so a wrong file costs nothing).
    pub fn load(path: &Path, space: &CellSpace) -> Result<Self> {
        let bad = |msg: String| Error::Path { path: path.to_path_buf(), msg };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let doc: crate::report::records::ScoresRecord =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a scores.json: {e}")))?;
        let table: std::collections::HashMap<(String, String), f64> =
            doc.scores.into_iter().map(|r| ((r.edge, r.op), r.score.unwrap_or(f64::NEG_INFINITY))).collect();
        for &e in &space.edges {
            for &o in &space.ops {
                if !table.contains_key(&(edge_name(e), NB201_OPS[o].to_string())) {
                    return Err(bad(format!(
                        "no score for edge {} op {} (scores of an NB201 selection are needed)",
                        edge_name(e),
                        NB201_OPS[o]
                    )));
                }
            }
        }
        Ok(ScoresFile { path: path.to_path_buf(), criterion: doc.criterion, table })
    }
}

/// Score each architecture by the sum of its free edges' op scores from a `scores.json`
/// (`select`'s output on an NB201 supernet), and take τ against test accuracy.
pub fn tau(scores: &ScoresFile, space: &CellSpace, truths: &[Truth]) -> Result<Tau> {
    let mut points = Vec::new();
    for t in truths {
        let g: Nb201Genotype = t.arch.parse().map_err(|e: String| Error::Invalid(format!("{}: {e}", t.arch)))?;
        let s: f64 = space.edges.iter().map(|&e| scores.table[&(edge_name(e), NB201_OPS[g.ops[e]].to_string())]).sum();
        points.push((s, t.test_acc));
    }
    // Architectures whose score is not finite (an unscored op, e.g. `none` under DARTS-IF) have
    // no rank: τ and the count cover the others.
    points.retain(|p| p.0.is_finite() && p.1.is_finite());
    let (a, b): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    Ok(Tau {
        scores: scores.path.clone(),
        criterion: scores.criterion.clone(),
        tau: kendall_tau(&a, &b),
        architectures: points.len(),
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_of_three_ops_has_27_cells() {
        let s =
            CellSpace::parse(Some("1<-0,2<-1,3<-2"), Some("skip_connect,nor_conv_3x3,avg_pool_3x3"), "none").unwrap();
        assert_eq!(s.edges, vec![0, 2, 5]);
        let a = s.architectures();
        assert_eq!(a.len(), 27);
        let distinct: std::collections::HashSet<String> = a.iter().map(|g| g.to_string()).collect();
        assert_eq!(distinct.len(), 27);
        assert_eq!(a[0].to_string(), "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|");
        assert_eq!(a[1].ops[5], 3);
        assert_eq!(CellSpace::parse(None, None, "none").unwrap().architectures().len(), 4096);
        assert!(CellSpace::parse(Some("4<-0"), None, "none").is_err());
        assert!(CellSpace::parse(None, Some("conv9"), "none").is_err());
        assert!(CellSpace::parse(None, Some("none,none"), "none").is_err());
    }
}
