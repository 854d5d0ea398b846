//! Training a selected architecture from scratch (`dartsif-dist train`), data-parallel like the
//! search: DARTS's evaluation protocol (quark0/darts `train.py`, spaces.md §1.7) by default —
//! all training images (both search halves), cutout, drop-path ramped as p·epoch/epochs on
//! non-identity ops, the auxiliary head's loss weighted 0.4, SGD with cosine annealing per
//! epoch and gradient clipping — and the test set evaluated with running BatchNorm statistics
//! after every epoch. Global batches are sharded contiguously over ranks as in the search; the
//! BatchNorm running buffers follow rank 0 (as DDP's broadcast buffers).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::checkpoint::{check_same, pinned, read_json, store, stored_config, write_json, Stored, META, STATE};
use crate::comm::Collective;
use crate::config::Config;
use crate::data::{epoch_order, global_batch, make_batch, shard, AugKey, Dataset, Stream};
use crate::device::on_host;
use crate::error::{Error, Result};
use crate::loss::{cross_entropy, cross_entropy_smoothed, Tally};
use crate::network::Network;
use crate::optim::{clip_grad_norm, Sgd};
use crate::supernet::BnMode;

/// Training indices of a from-scratch run: both search halves, never test images (NB201's
/// CIFAR-100 / ImageNet16-120 splits take α from the test set: `test:xvalid`), sorted.
pub fn training_indices(source: &crate::data::Source) -> Vec<usize> {
    let n_train = source.data.train_len();
    let mut train: Vec<usize> =
        source.split.weights.iter().chain(&source.split.arch).copied().filter(|&i| i < n_train).collect();
    train.sort_unstable();
    train.dedup();
    train
}

/// One epoch's record (`metrics.jsonl`, `"kind": "epoch"`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainEpoch {
    pub epoch: usize,
    pub lr: f64,
    pub drop_path: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
    /// Top-5 accuracy on the test set (ImageNet's second number).
    pub test_top5: Option<f64>,
    pub seconds: f64,
    /// Seconds this rank spent in all-reduces.
    pub reduce_s: f64,
}

/// The trainer's state: the network, its optimiser and the position (epochs done, steps done
/// in the current epoch and that epoch's partial loss/correct/count sums). Data order,
/// augmentation and drop-path masks are keyed by (seed, epoch, step), so this is all a resumed
/// run needs to continue bit-identically.
pub struct TrainState {
    pub net: Box<dyn Network>,
    pub opt: Sgd,
    pub epoch: usize,
    pub step: usize,
    pub partial: [f64; 3],
}

pub struct Trainer<'a> {
    pub cfg: &'a Config,
    pub comm: &'a dyn Collective,
    pub data: &'a dyn Dataset,
    /// Training indices (every image of the search's two halves).
    pub train: Vec<usize>,
    pub test: Vec<usize>,
    /// The genotype's text (recorded in checkpoints).
    pub genotype: String,
    /// Where the coordinator writes checkpoints (`None`: none).
    pub checkpoints: Option<std::path::PathBuf>,
    /// Raised by SIGTERM/SIGUSR1: all ranks stop at the next step after a checkpoint.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

impl Trainer<'_> {
    fn micro(&self) -> usize {
        let t = &self.cfg.train;
        if t.micro_batch == 0 {
            t.batch_size / self.comm.size()
        } else {
            t.micro_batch
        }
    }

    /// Steps per epoch (drop-last passes over the training images).
    pub fn steps(&self) -> usize {
        (self.train.len() / self.cfg.train.batch_size).max(1)
    }

    /// The coordinator checkpoints `state`; every rank learns the outcome.
    fn checkpoint(&self, state: &TrainState) -> Result<Option<std::path::PathBuf>> {
        let Some(root) = &self.checkpoints else { return Ok(None) };
        let meta = TrainMeta {
            kind: "train".into(),
            epoch: state.epoch,
            step: state.step,
            global_step: state.epoch * self.steps() + state.step,
            train: state.partial,
            world_size: self.comm.size(),
            genotype: self.genotype.clone(),
            config: self.cfg.to_toml(),
        };
        crate::checkpoint::commit_on_coordinator(self.comm, || save_train(root, state, &meta, self.cfg.checkpoint.keep))
            .map(Some)
    }

    /// Train epoch `state.epoch` from step `state.step`; returns its record (test metrics when
    /// there is a test set) and checkpoints at its end. A signal stops every rank at a step
    /// boundary after a checkpoint (`Error::Stopped`).
    pub fn epoch(&self, state: &mut TrainState) -> Result<TrainEpoch> {
        let t0 = std::time::Instant::now();
        let reduce0 = self.comm.reduce_seconds();
        let (cfg, t) = (self.cfg, &self.cfg.train);
        let (rank, world) = (self.comm.rank(), self.comm.size());
        let epoch = state.epoch;
        let lr = crate::optim::epoch_lr(&t.weights, epoch, t.epochs);
        let drop = t.drop_path * epoch as f64 / t.epochs as f64;
        let order = epoch_order(cfg.seed, Stream::TrainOrder, epoch, &self.train);
        let steps = self.steps();
        let m = self.micro();
        let aug = cfg.data.augment.then_some(AugKey { seed: cfg.seed, epoch });
        let params: Vec<Tensor> = state.net.params().tensors.iter().map(|p| p.shallow_clone()).collect();
        let mut tally = Tally::default();
        for step in state.step..steps {
            // Drop-path masks: a generator per (seed, epoch, step, rank).
            let key =
                crate::rng::SplitMix64::keyed(&[cfg.seed, 0x7452, epoch as u64, step as u64, rank as u64]).next_u64();
            tch::manual_seed((key >> 1) as i64);
            let f = &cfg.fault;
            let poison = f.phase == crate::config::FaultPhase::Train
                && f.at_step == epoch * steps + step
                && f.rank == rank
                && crate::control::inject(f.action, self.stop);
            let batch = global_batch(&order, step, t.batch_size);
            let mine = shard(&batch, rank, world);
            let scale = m as f64 / batch.len() as f64;
            let mut grads: Option<Vec<Tensor>> = None;
            for chunk in mine.chunks(m) {
                // This rank's own images: a decoding error is its alone (the others would wait).
                let (x, y) = make_batch(self.data, chunk, aug, self.comm.device())
                    .map_err(|e| crate::comm::fail_alone(self.comm, e))?;
                let x = x.to_kind(params[0].kind());
                let (logits, aux) = state.net.forward(&x, BnMode::Train, drop);
                let mut loss = cross_entropy_smoothed(&logits, &y, t.label_smoothing);
                let value = if poison { f64::NAN } else { loss.double_value(&[]) };
                tally.add(&logits, &y, value);
                if let Some(a) = aux {
                    loss += cross_entropy_smoothed(&a, &y, t.label_smoothing) * t.auxiliary_weight;
                }
                let g = Tensor::run_backward(&[loss * scale], &params, false, false);
                grads = Some(match grads {
                    None => g,
                    Some(acc) => acc.iter().zip(&g).map(|(a, b)| a + b).collect(),
                });
            }
            let grads = grads.expect("a shard has at least one micro-batch");
            self.comm.all_reduce_sum_tensors(&grads)?;
            clip_grad_norm(&grads, t.weights.grad_clip);
            state.opt.step(&params, &grads, lr);
            let mut sums = std::mem::take(&mut tally).as_array();
            self.comm.all_reduce_sum_f64(&mut sums)?;
            if !sums[0].is_finite() {
                return Err(Error::NonFinite {
                    quantity: "training loss".into(),
                    at: format!("epoch {epoch}, step {step}"),
                });
            }
            for (p, s) in state.partial.iter_mut().zip(sums) {
                *p += s;
            }
            state.step = step + 1;
            let stop = crate::control::agree_stop(self.comm, self.stop)?;
            let every = cfg.checkpoint.every_steps;
            let due = every > 0 && (epoch * steps + step + 1) % every == 0 && step + 1 < steps;
            if stop || due {
                let dir = self.checkpoint(state)?;
                if stop {
                    return Err(Error::stopped(format!("epoch {epoch}, step {}", step + 1), dir.as_deref()));
                }
            }
        }
        let train = Tally::from_array(state.partial);
        self.comm.broadcast_tensors(0, &state.net.params().buffers)?;
        let (test, top5) = if self.test.is_empty() {
            (None, None)
        } else {
            let (t, top5) = self.evaluate(state, &self.test)?;
            (Some(t), Some(top5))
        };
        state.epoch += 1;
        state.step = 0;
        state.partial = [0.0; 3];
        self.checkpoint(state)?;
        Ok(TrainEpoch {
            epoch,
            lr,
            drop_path: drop,
            train_loss: train.loss(),
            train_acc: train.acc(),
            test_loss: test.map(|t| t.loss()),
            test_acc: test.map(|t| t.acc()),
            test_top5: top5,
            seconds: t0.elapsed().as_secs_f64(),
            reduce_s: self.comm.reduce_seconds() - reduce0,
        })
    }

    /// Loss and (top-1) accuracy with running BatchNorm statistics, micro-batches dealt to
    /// ranks; and the top-5 accuracy.
    pub fn evaluate(&self, state: &TrainState, indices: &[usize]) -> Result<(Tally, f64)> {
        let _g = tch::no_grad_guard();
        let (rank, world) = (self.comm.rank(), self.comm.size());
        let mut tally = Tally::default();
        let mut top5 = 0.0;
        for chunk in indices.chunks(self.micro()).skip(rank).step_by(world) {
            let (x, y) = make_batch(self.data, chunk, None, self.comm.device())
                .map_err(|e| crate::comm::fail_alone(self.comm, e))?;
            let (logits, _) = state.net.forward(&x.to_kind(Kind::Float), BnMode::Eval, 0.0);
            let loss = cross_entropy(&logits, &y).double_value(&[]);
            tally.add(&logits, &y, loss);
            top5 += Tally::top_k_correct(&logits, &y, 5);
        }
        let [l, c, n] = tally.as_array();
        let mut t = [l, c, n, top5];
        self.comm.all_reduce_sum_f64(&mut t)?;
        Ok((Tally::from_array([t[0], t[1], t[2]]), t[3] / t[2].max(1.0)))
    }
}

/// Progress of `train`: the position (epoch, steps done in it, the epoch's partial sums) and
/// what fixes the computation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainMeta {
    pub kind: String,
    pub epoch: usize,
    pub step: usize,
    pub global_step: usize,
    pub train: [f64; 3],
    pub world_size: usize,
    pub genotype: String,
    /// The resolved config (TOML).
    pub config: String,
}

/// Write a training checkpoint: the network's weights and buffers (model.py's names), SGD's
/// momentum, and `meta`.
pub fn save_train(root: &Path, state: &TrainState, meta: &TrainMeta, keep: usize) -> Result<PathBuf> {
    let mut named: Vec<(String, Tensor)> =
        state.net.params().named().into_iter().map(|(n, t)| (n, on_host(&t))).collect();
    for (name, m) in state.net.params().names.iter().zip(&state.opt.momentum_buffers) {
        if let Some(m) = m {
            named.push((format!("optim.sgd.momentum.{name}"), on_host(m)));
        }
    }
    store::commit(root, meta.global_step as u64, keep, |dir| {
        Tensor::write_safetensors(&named, dir.join(STATE))?;
        write_json(dir, META, meta)
    })
}

/// Load a verified training checkpoint into `state`, refusing one of another genotype, seed,
/// data or protocol; returns its metadata.
pub fn load_train(dir: &Path, state: &mut TrainState, cfg: &Config, genotype: &str, world: usize) -> Result<TrainMeta> {
    store::verify(dir)?;
    let meta: TrainMeta = read_json(dir, META, "a training checkpoint")?;
    if meta.genotype != genotype {
        return Err(Error::config(
            "--resume",
            "genotype",
            format!("differs from the checkpoint's ({})", dir.display()),
        ));
    }
    let old = stored_config(&meta.config, &dir.join(META))?;
    let settings = |c: &Config, w: usize| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pinned(c, 1)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("search.") && !k.starts_with("space.") && *k != "world size")
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let toml::Value::Table(t) = toml::Value::try_from(&c.train).expect("train config serialises") {
            v.extend(
                t.into_iter().filter(|(k, _)| k != "weights").map(|(k, val)| (format!("train.{k}"), val.to_string())),
            );
        }
        if c.train.micro_batch == 0 {
            v.push(("world size".into(), w.to_string()));
        }
        v
    };
    check_same(settings(&old, meta.world_size), settings(cfg, world), dir, "resume with the same setting")?;
    let stored = Stored::read(&dir.join(STATE))?;
    let _g = tch::no_grad_guard();
    for (name, mut t) in state.net.params().named() {
        t.copy_(&stored.get(&name, &t)?);
    }
    let names = state.net.params().names.clone();
    let params: Vec<Tensor> = state.net.params().tensors.iter().map(|t| t.shallow_clone()).collect();
    for ((name, p), slot) in names.iter().zip(&params).zip(state.opt.momentum_buffers.iter_mut()) {
        let key = format!("optim.sgd.momentum.{name}");
        *slot = if stored.tensors.contains_key(&key) { Some(stored.get(&key, p)?) } else { None };
    }
    state.epoch = meta.epoch;
    state.step = meta.step;
    state.partial = meta.train;
    Ok(meta)
}
