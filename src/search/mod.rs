//! Bi-level supernet search (first-order DARTS), data-parallel over ranks.
//!
//! Each step: an α step on a batch of the α half (Adam on ∇α L_val) and a θ step on a batch of
//! the θ half (SGD, momentum, weight decay, grad-clip), in the configured order. Each rank
//! computes its shard of every global batch in micro-batches, gradients of θ and of α are summed
//! over ranks in one flat all-reduce, and every rank applies the same update, so θ and α stay
//! identical on all ranks (checked at every epoch end).

mod candidates;
pub mod checkpoint;
pub mod enas;
mod evaluate;
mod feed;
pub mod sampling;

pub use candidates::Candidate;
pub use enas::ControllerStats;
pub use feed::Feed;

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::comm::Collective;
use crate::config::Config;
use crate::config::Strategy;
use crate::data::{epoch_order, global_batch, shard, AugKey, Dataset, SearchSplit, Stream};
use crate::error::{Error, Result};
use crate::supernet::{BnMode, Projection, Supernet};
use sampling::{Mix, Phase};

/// SNAS clips the α gradient's norm at 10 (SNAS-Series `train_search.py`).
const SNAS_ARCH_CLIP: f64 = 10.0;

mod unrolled;
use crate::control::{agree_step, inject};
use crate::loss::Tally;
use crate::optim::{clip_grad_norm, Adam, Sgd};
use crate::supernet::table_of;
pub use unrolled::MixedProduct;

/// The searchable state: supernet weights θ, architecture α, both optimisers, and the position.
pub struct SearchState {
    pub net: Box<dyn Supernet>,
    /// The architecture parameters: one α table per architecture table, then any extra ones.
    pub alphas: Vec<Tensor>,
    pub weight_opt: Sgd,
    pub arch_opt: Adam,
    /// Epochs completed.
    pub epoch: usize,
    /// Progress inside epoch `epoch` when resuming from a mid-epoch checkpoint.
    pub progress: Option<EpochProgress>,
    /// Rows fixed by progressive selection (empty in a search).
    pub projection: Projection,
    /// ENAS's controller (its optimiser and baseline).
    pub controller: Option<enas::Controller>,
}

/// Steps done in the current epoch and the partial sums of its statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochProgress {
    pub step: usize,
    pub train: [f64; 3],
    pub arch: [f64; 3],
    pub seconds: f64,
}

impl SearchState {
    /// Fresh state: θ with PyTorch's initialisation and α = init_std·randn, both from `seed`,
    /// then broadcast from rank 0 so every rank starts from identical values.
    pub fn new(cfg: &Config, comm: &dyn Collective, kind: Kind) -> Result<Self> {
        let net = crate::supernet::build(cfg, cfg.seed, kind, comm.device())?;
        let device = net.params().tensors[0].device();
        let alphas: Vec<Tensor> = {
            let _g = tch::no_grad_guard();
            net.spec()
                .alpha_shapes()
                .iter()
                .map(|s| {
                    // Drawn on the host: the same α on every device for one seed.
                    (Tensor::randn(s.as_slice(), (kind, tch::Device::Cpu)) * cfg.search.arch.init_std)
                        .to_device(device)
                        .set_requires_grad(true)
                })
                .collect()
        };
        comm.broadcast_tensors(0, &net.params().tensors)?;
        comm.broadcast_tensors(0, &alphas)?;
        let weight_opt = Sgd::new(cfg.search.weights.clone(), net.params().tensors.len());
        let arch_opt = Adam::new(cfg.search.arch.clone(), &alphas);
        let controller = (cfg.search.strategy == Strategy::Enas).then(|| {
            let t = &net.spec().cells[0];
            enas::Controller::new(&cfg.search.enas, t.edges.len(), t.ops.len(), cfg.seed)
        });
        if let Some(c) = &controller {
            comm.broadcast_tensors(0, &c.params)?;
        }
        Ok(SearchState {
            net,
            alphas,
            weight_opt,
            arch_opt,
            epoch: 0,
            progress: None,
            projection: Projection::default(),
            controller,
        })
    }

    /// The forward's weights for architecture parameters `alphas` (the space's mixing, with the
    /// projection's fixed rows).
    pub fn weights(&self, alphas: &[Tensor]) -> Vec<Tensor> {
        self.projection.apply(self.net.spec().mixing(alphas))
    }

    /// softmax(α) per cell type (computed in f64), as nested vectors `[cell][edge][op]`.
    /// The genotype vanilla DARTS would select from the current α.
    pub fn magnitude_genotype(&self) -> crate::space::Genotype {
        crate::space::magnitude_genotype(self.net.spec(), self.softmax_table())
    }

    pub fn softmax_table(&self) -> Vec<Vec<Vec<f64>>> {
        self.net
            .spec()
            .table_weights(&self.alphas.iter().map(|a| a.detach().to_kind(Kind::Double)).collect::<Vec<_>>())
            .iter()
            .map(table_of)
            .collect()
    }

    /// α per architecture table as nested vectors.
    pub fn alpha_table(&self) -> Vec<Vec<Vec<f64>>> {
        self.alphas[..self.net.spec().cells.len()].iter().map(|a| table_of(&a.detach())).collect()
    }

    /// Every architecture parameter by its state-file name, as JSON (tables as rows, β as a list).
    pub fn alpha_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.net
            .spec()
            .alpha_names()
            .into_iter()
            .zip(&self.alphas)
            .map(|(n, a)| {
                let v = if a.dim() == 2 {
                    serde_json::json!(table_of(&a.detach()))
                } else {
                    serde_json::json!(
                        Vec::<f64>::try_from(&a.detach().to_kind(Kind::Double).reshape([-1])).expect("f64")
                    )
                };
                (n, v)
            })
            .collect()
    }
}

/// What one search step reports (global values, identical on every rank).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StepStats {
    pub epoch: usize,
    pub step: usize,
    pub global_step: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub arch_loss: f64,
    pub arch_acc: f64,
    pub grad_norm: f64,
}

/// What one epoch reports.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub arch_loss: f64,
    pub arch_acc: f64,
    /// Full pass over the α (validation) half.
    pub val_loss: f64,
    pub val_acc: f64,
    /// Mean entropy of softmax(α) over edges, in nats (log(#ops) is uniform).
    pub alpha_entropy: f64,
    /// The epoch's Gumbel temperature (GDAS, SNAS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tau: Option<f64>,
    /// ENAS's controller training after the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerStats>,
    /// Search images per second over all ranks: θ batches, plus α batches where the step has an
    /// α update of its own (not SNAS's joint step, random-nas or ENAS).
    pub images_per_s: f64,
    pub seconds: f64,
    /// Seconds of the epoch this rank (rank 0) spent in all-reduces.
    pub reduce_s: f64,
    /// GPU memory in use on this rank at the end of the epoch, MB (the caching allocator's
    /// reserved high-water mark plus the CUDA context; [`crate::device::memory_in_use_mb`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_mb: Option<f64>,
    pub genotype: String,
    /// The same architecture as a value (`genotypes.jsonl`).
    #[serde(skip)]
    pub arch: crate::space::Genotype,
}

/// Receives progress from [`run_search`].
pub trait Observer {
    fn step(&mut self, _s: &StepStats) -> Result<()> {
        Ok(())
    }
    fn epoch(&mut self, _e: &EpochStats, _state: &SearchState) -> Result<()> {
        Ok(())
    }
}

/// The bi-level search loop.
pub struct Searcher<'a> {
    pub cfg: &'a Config,
    pub comm: &'a dyn Collective,
    pub data: &'a dyn Dataset,
    pub split: SearchSplit,
    /// Where the coordinator writes checkpoints (`None`: no checkpoints).
    pub checkpoints: Option<std::path::PathBuf>,
    /// Raised by SIGTERM/SIGUSR1: every rank stops at the next step boundary, after a checkpoint.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

impl Searcher<'_> {
    /// Run epochs `state.epoch..epochs`.
    pub fn run(&self, state: &mut SearchState, obs: &mut dyn Observer) -> Result<()> {
        while state.epoch < self.cfg.search.epochs {
            self.run_epoch(state, obs)?;
        }
        Ok(())
    }

    /// Run epoch `state.epoch` (from its saved progress when resuming), then evaluate, report
    /// and checkpoint it.
    pub fn run_epoch(&self, state: &mut SearchState, obs: &mut dyn Observer) -> Result<()> {
        let cfg = self.cfg;
        let steps = cfg.steps_per_epoch(self.split.weights.len());
        let b = cfg.search.batch_size;
        let alpha_first = cfg.search.order == crate::config::StepOrder::AlphaFirst;
        let strategy = cfg.search.strategy;
        let second_order = strategy.second_order();
        let (rank, world) = (self.comm.rank(), self.comm.size());
        let m = cfg.micro_batch(world);
        {
            let epoch = state.epoch;
            let resumed = state.progress.take();
            let first = resumed.map_or(0, |p| p.step);
            let earlier = std::time::Duration::from_secs_f64(resumed.map_or(0.0, |p| p.seconds));
            let t0 = std::time::Instant::now().checked_sub(earlier).unwrap_or_else(std::time::Instant::now);
            let reduce0 = self.comm.reduce_seconds();
            let lr = crate::optim::epoch_lr(&cfg.search.weights, epoch, cfg.search.epochs);
            let w_order = epoch_order(cfg.seed, Stream::WeightsOrder, epoch, &self.split.weights);
            let a_order = epoch_order(cfg.seed, Stream::ArchOrder, epoch, &self.split.arch);
            let batches: Vec<(Vec<usize>, Vec<usize>)> =
                (0..steps).map(|step| (global_batch(&w_order, step, b), global_batch(&a_order, step, b))).collect();
            // This rank's micro-batches of the epoch, in the order the steps consume them.
            let arch_on = epoch >= cfg.search.arch_start_epoch && strategy.trains_alpha();
            // SNAS is single-level: θ and α step together on the θ batch.
            let joint = arch_on && strategy == Strategy::Snas;
            let loads: Vec<Vec<usize>> = batches[first.min(steps)..]
                .iter()
                .flat_map(|(wb, ab)| match (arch_on && !joint, alpha_first && !second_order) {
                    (false, _) => vec![wb],
                    (true, true) => vec![ab, wb],
                    // Second order reads the θ batch first: the α step unrolls on it.
                    (true, false) => vec![wb, ab],
                })
                .flat_map(|g| shard(g, rank, world).chunks(m).map(<[usize]>::to_vec).collect::<Vec<_>>())
                .collect();
            let aug = cfg.data.augment.then_some(AugKey { seed: cfg.seed, epoch });
            let (mut train, mut arch) = match resumed {
                Some(p) => (Tally::from_array(p.train), Tally::from_array(p.arch)),
                None => (Tally::default(), Tally::default()),
            };
            std::thread::scope(|scope| -> Result<()> {
                let mut feed = Feed::start(scope, self.data, loads, aug, cfg.data.prefetch, self.comm.device());
                // The space (for the step's draws), once per epoch rather than per step.
                let spec = state.net.spec().clone();
                for (step, (wb, ab)) in batches.iter().enumerate().skip(first) {
                    let global_step = epoch * steps + step;
                    let poison = self.inject_fault(global_step);
                    // search.precision: the first-order steps' convolutions and linear layers.
                    let _precision =
                        crate::ops::precision::guard(cfg.search.precision == crate::config::SearchPrecision::Bf16);
                    // The step's draws (Gumbel noise, paths): keyed by the global step, so equal
                    // on every rank and after a resume.
                    let like = state.alphas[0].shallow_clone();
                    let wmix = match &state.controller {
                        // ENAS: the controller's draw of this step.
                        Some(c) => Mix::Single(vec![c
                            .sample(&mut crate::rng::SplitMix64::keyed(&[cfg.seed, enas::TRAIN, global_step as u64]))
                            .into_iter()
                            .map(Some)
                            .collect()]),
                        None => sampling::step_mix(cfg, &spec, Phase::Weights, epoch, global_step, &like),
                    };
                    let amix = || sampling::step_mix(cfg, &spec, Phase::Arch, epoch, global_step, &like);
                    let (t, a, gn) = if joint {
                        let micro = self.take(state, wb, &mut feed)?;
                        let shard = self.shard_of(&micro, wb.len());
                        let (t, gn) = self.joint_step(state, &shard, lr, &wmix)?;
                        (t, Tally::default(), gn)
                    } else if !arch_on {
                        // α frozen (before search.arch_start_epoch) or untrained: θ steps only.
                        let micro = self.take(state, wb, &mut feed)?;
                        let shard = self.shard_of(&micro, wb.len());
                        let (t, gn) = self.weight_step(state, &shard, lr, &wmix)?;
                        (t, Tally::default(), gn)
                    } else if second_order {
                        let micro = self.take(state, wb, &mut feed)?;
                        let shard = self.shard_of(&micro, wb.len());
                        if alpha_first {
                            let a = self.arch_step_unrolled(state, &shard, ab, &mut feed, lr)?;
                            let (t, gn) = self.weight_step(state, &shard, lr, &wmix)?;
                            (t, a, gn)
                        } else {
                            let (t, gn) = self.weight_step(state, &shard, lr, &wmix)?;
                            let a = self.arch_step_unrolled(state, &shard, ab, &mut feed, lr)?;
                            (t, a, gn)
                        }
                    } else if alpha_first {
                        let amix = amix();
                        let a = self.arch_step(state, ab, &mut feed, &amix)?;
                        let micro = self.take(state, wb, &mut feed)?;
                        let shard = self.shard_of(&micro, wb.len());
                        let (t, gn) = self.weight_step(state, &shard, lr, &wmix)?;
                        (t, a, gn)
                    } else {
                        let micro = self.take(state, wb, &mut feed)?;
                        let shard = self.shard_of(&micro, wb.len());
                        let (t, gn) = self.weight_step(state, &shard, lr, &wmix)?;
                        let amix = amix();
                        let a = self.arch_step(state, ab, &mut feed, &amix)?;
                        (t, a, gn)
                    };
                    let t = if poison { Tally { loss_sum: f64::NAN, ..t } } else { t };
                    // Non-finite values are agreed at the step boundary with the stop flag, so
                    // that every rank stops here together (a rank returning alone would leave
                    // the others waiting in the next collective).
                    let checks = [("training loss", t.loss()), ("α loss", a.loss()), ("gradient norm", gn)];
                    let bad = checks.map(|(name, v)| !v.is_finite() && !(name == "α loss" && a.count == 0.0));
                    // The observer writes metrics on the coordinator: its failure is agreed too.
                    let observed = if bad.contains(&true) {
                        Ok(())
                    } else {
                        obs.step(&StepStats {
                            epoch,
                            step,
                            global_step: epoch * steps + step,
                            lr,
                            train_loss: t.loss(),
                            train_acc: t.acc(),
                            arch_loss: a.loss(),
                            arch_acc: a.acc(),
                            grad_norm: gn,
                        })
                    };
                    let flags = [bad[0], bad[1], bad[2], observed.is_err()];
                    let (stop, bad) = agree_step(self.comm, self.stop, flags)?;
                    if let Some(k) = bad[..3].iter().position(|&n| n > 0) {
                        let ranks = if self.comm.size() > 1 {
                            format!(" (on {} of {} ranks)", bad[k], self.comm.size())
                        } else {
                            String::new()
                        };
                        return Err(Error::NonFinite {
                            quantity: checks[k].0.into(),
                            at: format!("epoch {epoch}, step {step}{ranks}"),
                        });
                    }
                    if bad[3] > 0 {
                        // This rank's own error, or word that another rank's observer failed
                        // (the coordinator, which prints its error).
                        observed?;
                        return Err(Error::Comm(format!(
                            "the coordinator failed recording epoch {epoch}, step {step} (see its message)"
                        )));
                    }
                    train = Tally::from_array(add3(train.as_array(), t.as_array()));
                    arch = Tally::from_array(add3(arch.as_array(), a.as_array()));
                    // Step boundary (agreed above): checkpoint when due.
                    let every = cfg.checkpoint.every_steps;
                    // (A periodic checkpoint at the epoch's last step is left to the epoch end.)
                    if stop || (every > 0 && (global_step + 1) % every == 0 && step + 1 < steps) {
                        let progress = EpochProgress {
                            step: step + 1,
                            train: train.as_array(),
                            arch: arch.as_array(),
                            seconds: t0.elapsed().as_secs_f64(),
                        };
                        let dir = self.checkpoint(state, epoch, Some(progress))?;
                        if stop {
                            return Err(Error::stopped(format!("epoch {epoch}, step {}", step + 1), dir.as_deref()));
                        }
                    }
                }
                Ok(())
            })?;
            // BatchNorm running buffers follow rank 0 (as DDP does), so state is identical.
            self.comm.broadcast_tensors(0, &state.net.params().buffers)?;
            self.check_in_sync(state)?;
            let train_seconds = t0.elapsed().as_secs_f64();
            let controller = match state.controller.is_some() {
                true => match self.train_controller(state, epoch)? {
                    Some(stats) => Some(stats),
                    None => {
                        // Stopped in the controller's phase (agreed by every rank): the
                        // checkpoint of the epoch's last θ step, from which the phase restarts.
                        let progress = EpochProgress {
                            step: steps,
                            train: train.as_array(),
                            arch: arch.as_array(),
                            seconds: train_seconds,
                        };
                        let dir = self.checkpoint(state, epoch, Some(progress))?;
                        return Err(Error::stopped(format!("epoch {epoch}, controller phase"), dir.as_deref()));
                    }
                },
                false => None,
            };
            let eval_mix = self.eval_mix(state, epoch);
            let val = self.evaluate_mix(state, &eval_mix, &self.split.arch)?;
            state.epoch += 1;
            // The epoch's architecture: what the epoch-end validation computed for the single-path
            // strategies without α (ENAS's most probable, random-nas's drawn path), else argmax α.
            let epoch_arch = match eval_mix {
                Mix::Single(path) if !strategy.trains_alpha() => sampling::path_genotype(state.net.spec(), &path),
                _ => state.magnitude_genotype(),
            };
            let genotype = epoch_arch.to_string();
            let stats = EpochStats {
                epoch,
                lr,
                train_loss: train.loss(),
                train_acc: train.acc(),
                arch_loss: arch.loss(),
                arch_acc: arch.acc(),
                val_loss: val.loss(),
                val_acc: val.acc(),
                alpha_entropy: alpha_entropy(&state.softmax_table()),
                tau: strategy.has_temperature().then(|| sampling::tau(cfg, epoch)),
                controller,
                // θ batches, and α batches where the step has an α update of its own.
                images_per_s: ((1 + usize::from(arch_on && !joint)) * steps * b) as f64 / train_seconds,
                seconds: t0.elapsed().as_secs_f64(),
                reduce_s: self.comm.reduce_seconds() - reduce0,
                device_mb: crate::device::memory_in_use_mb(self.comm.device()),
                genotype,
                arch: epoch_arch,
            };
            obs.epoch(&stats, state)?;
            self.checkpoint(state, state.epoch, None)?;
        }
        Ok(())
    }

    /// The coordinator writes a checkpoint of `state` at (`epoch`, `progress`); every rank
    /// learns the outcome, so a failed write stops all of them.
    fn checkpoint(
        &self,
        state: &SearchState,
        epoch: usize,
        progress: Option<EpochProgress>,
    ) -> Result<Option<std::path::PathBuf>> {
        let Some(root) = &self.checkpoints else { return Ok(None) };
        let steps = self.cfg.steps_per_epoch(self.split.weights.len());
        let p = progress.unwrap_or(EpochProgress { step: 0, train: [0.0; 3], arch: [0.0; 3], seconds: 0.0 });
        let meta = checkpoint::SearchMeta {
            kind: "search".into(),
            epoch,
            step: p.step,
            global_step: epoch * steps + p.step,
            adam_step: state.arch_opt.step,
            train: p.train,
            arch: p.arch,
            seconds: p.seconds,
            world_size: self.comm.size(),
            config: self.cfg.to_toml(),
            projection: state.projection.clone(),
            controller: state
                .controller
                .as_ref()
                .map(|c| checkpoint::ControllerMeta { adam_step: c.opt.step, baseline: c.baseline }),
        };
        crate::checkpoint::commit_on_coordinator(self.comm, || {
            checkpoint::save_search(root, state, &meta, self.cfg.checkpoint.keep)
        })
        .map(Some)
    }

    /// Fault injection (`[fault]`, for tests): act at `global_step` on the configured rank.
    /// Returns whether this step's loss must be poisoned with NaN.
    fn inject_fault(&self, global_step: usize) -> bool {
        let f = &self.cfg.fault;
        if f.phase != crate::config::FaultPhase::Search || f.at_step != global_step || f.rank != self.comm.rank() {
            return false;
        }
        inject(f.action, self.stop)
    }

    /// This rank's micro-batches of the global batch `batch`, in the order the feed yields them,
    /// with images in the model's kind.
    fn take(&self, state: &SearchState, batch: &[usize], feed: &mut Feed) -> Result<Vec<(Tensor, Tensor)>> {
        let (rank, world) = (self.comm.rank(), self.comm.size());
        let m = self.cfg.micro_batch(world);
        let kind = state.alphas[0].kind();
        // This rank's own images: a decoding error is its alone, and ends the job (the others
        // would wait in the next collective).
        shard(batch, rank, world)
            .chunks(m)
            .map(|_| feed.next_batch().map(|(x, y)| (x.to_kind(kind), y)))
            .collect::<Result<_>>()
            .map_err(|e| crate::comm::fail_alone(self.comm, e))
    }

    /// The micro-batches as a shard of a global batch of `len` images.
    fn shard_of<'b>(&self, micro: &'b [(Tensor, Tensor)], len: usize) -> unrolled::Shard<'b> {
        unrolled::Shard { micro, scale: self.cfg.micro_batch(self.comm.size()) as f64 / len as f64 }
    }

    /// One first-order α step on the validation batch.
    fn arch_step(&self, state: &mut SearchState, batch: &[usize], feed: &mut Feed, mix: &Mix) -> Result<Tally> {
        let micro = self.take(state, batch, feed)?;
        let shard = self.shard_of(&micro, batch.len());
        let (grads, tally) = unrolled::grads(
            state.net.as_ref(),
            &state.projection,
            &state.alphas,
            mix,
            self.comm,
            &shard,
            &state.alphas,
            BnMode::Train,
        )?;
        state.arch_opt.step(&state.alphas, &grads);
        Ok(tally)
    }

    /// One second-order α step (the unrolled weight step on `train`, spaces.md §1.8).
    fn arch_step_unrolled(
        &self,
        state: &mut SearchState,
        train: &unrolled::Shard,
        val: &[usize],
        feed: &mut Feed,
        lr: f64,
    ) -> Result<Tally> {
        // Second order stays in f32 under search.precision = "bf16".
        let _f32 = crate::ops::precision::guard(false);
        let vmicro = self.take(state, val, feed)?;
        let how = match self.cfg.search.strategy {
            crate::config::Strategy::Darts2ndExact => unrolled::MixedProduct::Exact,
            _ => unrolled::MixedProduct::FiniteDifference { r: 0.01 },
        };
        let (grads, tally) = unrolled::arch_grad(
            state.net.as_ref(),
            &state.projection,
            &state.alphas,
            self.comm,
            train,
            &self.shard_of(&vmicro, val.len()),
            &state.weight_opt.momentum_buffers,
            &self.cfg.search.weights,
            lr,
            how,
        )?;
        state.arch_opt.step(&state.alphas, &grads);
        Ok(tally)
    }

    /// One SGD step on this rank's shard of the training batch.
    fn weight_step(
        &self,
        state: &mut SearchState,
        shard: &unrolled::Shard,
        lr: f64,
        mix: &Mix,
    ) -> Result<(Tally, f64)> {
        let params = &state.net.params().tensors;
        let (grads, tally) = self.train_grads(state, shard, mix, params)?;
        let norm = clip_grad_norm(&grads, self.cfg.search.weights.grad_clip);
        state.weight_opt.step(params, &grads, lr);
        Ok((tally, norm))
    }

    /// Gradients with respect to `wrt` of the training loss on the micro-batches, summed over
    /// ranks (BatchNorm in training mode).
    fn train_grads(
        &self,
        state: &SearchState,
        shard: &unrolled::Shard,
        mix: &Mix,
        wrt: &[Tensor],
    ) -> Result<(Vec<Tensor>, Tally)> {
        let net = state.net.as_ref();
        unrolled::grads(net, &state.projection, &state.alphas, mix, self.comm, shard, wrt, BnMode::Train)
    }

    /// SNAS's single-level step: one backward on the θ batch gives the gradients of θ and α;
    /// θ's norm clipped at `search.weights.grad_clip`, α's at 10 (SNAS-Series
    /// `train_search.py`), then the SGD and Adam steps.
    fn joint_step(&self, state: &mut SearchState, shard: &unrolled::Shard, lr: f64, mix: &Mix) -> Result<(Tally, f64)> {
        let params = &state.net.params().tensors;
        let wrt: Vec<Tensor> = params.iter().chain(&state.alphas).map(Tensor::shallow_clone).collect();
        let (mut grads, tally) = self.train_grads(state, shard, mix, &wrt)?;
        let arch = grads.split_off(params.len());
        let norm = clip_grad_norm(&grads, self.cfg.search.weights.grad_clip);
        clip_grad_norm(&arch, SNAS_ARCH_CLIP);
        state.weight_opt.step(params, &grads, lr);
        state.arch_opt.step(&state.alphas, &arch);
        Ok((tally, norm))
    }

    /// Replicated state must be identical on all ranks: compare a checksum of θ and α.
    fn check_in_sync(&self, state: &SearchState) -> Result<()> {
        if self.comm.size() == 1 {
            return Ok(());
        }
        let _g = tch::no_grad_guard();
        let sum = |ts: &[Tensor]| {
            ts.iter().map(|t| t.to_kind(Kind::Double).abs().sum(Kind::Double).double_value(&[])).sum::<f64>()
        };
        let local = [sum(&state.net.params().tensors), sum(&state.alphas)];
        let bytes = postcard::to_stdvec(&local).map_err(|e| Error::Comm(e.to_string()))?;
        let all = self.comm.gather_bytes(0, &bytes)?;
        let mut verdict: Option<String> = None;
        for (r, b) in all.iter().enumerate() {
            let v: [f64; 2] = postcard::from_bytes(b).map_err(|e| Error::Comm(e.to_string()))?;
            if v != local {
                let what = if v[0] != local[0] { "weights θ" } else { "α" };
                verdict = Some(format!("rank {r} holds different {what} than rank 0 after epoch {}", state.epoch));
                break;
            }
        }
        let verdict: Option<String> =
            crate::comm::broadcast_value(self.comm, 0, self.comm.is_coordinator().then_some(&verdict))?;
        match verdict {
            Some(msg) => Err(Error::Comm(msg)),
            None => Ok(()),
        }
    }
}

fn add3(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// Mean over edges of the entropy of each softmax row, in nats.
pub fn alpha_entropy(softmax: &[Vec<Vec<f64>>]) -> f64 {
    let rows: Vec<&Vec<f64>> = softmax.iter().flatten().collect();
    let total: f64 = rows.iter().map(|r| -r.iter().filter(|&&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>()).sum();
    total / rows.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_uniform_rows_is_log_ops() {
        let u = vec![vec![vec![0.2; 5]; 6]];
        assert!((alpha_entropy(&u) - 5f64.ln()).abs() < 1e-12);
        let onehot = vec![vec![vec![1.0, 0.0, 0.0]; 2]];
        assert_eq!(alpha_entropy(&onehot), 0.0);
    }
}
