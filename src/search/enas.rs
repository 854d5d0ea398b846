//! ENAS's controller (Pham et al. 2018) as NAS-Bench-201 runs it (AutoDL
//! `search_model_enas_utils.py`): a two-layer LSTM that emits one op per edge, each step's
//! input the embedding of the op it drew before (the first a learned vector), logits
//! `tanh_constant · tanh(W h / temperature)`; trained by REINFORCE with reward = validation
//! accuracy + entropy_weight · entropy and a moving-average baseline.
//!
//! The controller is tiny and lives on the host in f32, replicated on every rank: draws are
//! keyed by (seed, purpose, index), rewards are all-reduced accuracies, and rank 0's weights
//! are broadcast after every update, so every rank samples the same architectures.

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::sampling::Mix;
use super::{SearchState, Searcher};
use crate::config::{AdamConfig, EnasConfig};
use crate::data::{epoch_order, global_batch, Stream};
use crate::error::Result;
use crate::optim::{clip_grad_norm, Adam};
use crate::rng::SplitMix64;
use crate::supernet::Path;

/// Purpose keys of the controller's draws.
pub(crate) const INIT: u64 = 0x454E_4153; // "ENAS"
pub(crate) const TRAIN: u64 = 0x5452_4149; // "TRAI"

/// The controller's weights (PyTorch's names) and its optimiser.
pub struct Controller {
    pub names: Vec<String>,
    pub params: Vec<Tensor>,
    pub opt: Adam,
    /// The REINFORCE baseline (none before the first reward).
    pub baseline: Option<f64>,
    cfg: EnasConfig,
    edges: usize,
    ops: usize,
}

/// One drawn architecture with its log-probability and entropy (graphs to the weights when
/// drawn with gradient).
pub struct Draw {
    pub arch: Vec<usize>,
    pub log_prob: Tensor,
    pub entropy: Tensor,
}

/// A copy of the controller's state (weights, Adam's moments and step, the baseline).
pub(super) struct ControllerSnapshot {
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    adam_step: u64,
    baseline: Option<f64>,
}

impl Controller {
    pub(super) fn snapshot(&self) -> ControllerSnapshot {
        let copy = |v: &[Tensor]| v.iter().map(|t| t.detach().copy()).collect();
        ControllerSnapshot {
            params: copy(&self.params),
            exp_avg: copy(&self.opt.exp_avg),
            exp_avg_sq: copy(&self.opt.exp_avg_sq),
            adam_step: self.opt.step,
            baseline: self.baseline,
        }
    }

    /// Back to `s`, in place (the weights keep their identity).
    pub(super) fn restore(&mut self, s: &ControllerSnapshot) {
        tch::no_grad(|| {
            let pairs =
                [(&self.params, &s.params), (&self.opt.exp_avg, &s.exp_avg), (&self.opt.exp_avg_sq, &s.exp_avg_sq)];
            for (dst, src) in pairs {
                for (d, v) in dst.iter().zip(src) {
                    d.shallow_clone().copy_(v);
                }
            }
        });
        self.opt.step = s.adam_step;
        self.baseline = s.baseline;
    }

    /// Weights initialised as PyTorch's modules do (U(±1/√hidden) for the LSTM and the
    /// prediction bias), then the reference's U(±0.1) for the first input, layer 0's LSTM
    /// weights, the embedding and the prediction weight; drawn on the host from `seed`.
    pub fn new(cfg: &EnasConfig, edges: usize, ops: usize, seed: u64) -> Self {
        let h = cfg.hidden as i64;
        let mut rng = SplitMix64::keyed(&[seed, INIT]);
        let mut uniform = |shape: &[i64], bound: f64| -> Tensor {
            let n: i64 = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32).collect();
            Tensor::from_slice(&v).view(shape).set_requires_grad(true)
        };
        let k = 1.0 / (h as f64).sqrt();
        let mut named: Vec<(String, Tensor)> = vec![("input_vars".into(), uniform(&[1, 1, h], 0.1))];
        for l in 0..2 {
            let w = if l == 0 { 0.1 } else { k };
            named.push((format!("w_lstm.weight_ih_l{l}"), uniform(&[4 * h, h], w)));
            named.push((format!("w_lstm.weight_hh_l{l}"), uniform(&[4 * h, h], w)));
            named.push((format!("w_lstm.bias_ih_l{l}"), uniform(&[4 * h], k)));
            named.push((format!("w_lstm.bias_hh_l{l}"), uniform(&[4 * h], k)));
        }
        named.push(("w_embd.weight".into(), uniform(&[ops as i64, h], 0.1)));
        named.push(("w_pred.weight".into(), uniform(&[ops as i64, h], 0.1)));
        named.push(("w_pred.bias".into(), uniform(&[ops as i64], k)));
        let (names, params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let adam = AdamConfig { lr: cfg.lr, beta1: cfg.beta1, beta2: cfg.beta2, weight_decay: 0.0, init_std: 0.0 };
        let mut opt = Adam::new(adam, &params);
        opt.eps = cfg.eps;
        Controller { names, params, opt, baseline: None, cfg: cfg.clone(), edges, ops }
    }

    fn p(&self, name: &str) -> &Tensor {
        &self.params[self.names.iter().position(|n| n == name).expect("a controller weight")]
    }

    /// One LSTM layer step (PyTorch's gate order i, f, g, o).
    fn cell(&self, l: usize, x: &Tensor, h: &Tensor, c: &Tensor) -> (Tensor, Tensor) {
        let gates = x.matmul(&self.p(&format!("w_lstm.weight_ih_l{l}")).tr())
            + self.p(&format!("w_lstm.bias_ih_l{l}"))
            + h.matmul(&self.p(&format!("w_lstm.weight_hh_l{l}")).tr())
            + self.p(&format!("w_lstm.bias_hh_l{l}"));
        let g = gates.chunk(4, 1);
        let (i, f, gg, o) = (g[0].sigmoid(), g[1].sigmoid(), g[2].tanh(), g[3].sigmoid());
        let c = f * c + i * gg;
        let h = o * c.tanh();
        (h, c)
    }

    /// Draw an architecture: at each edge an op from the controller's distribution by inverse
    /// CDF on a uniform from `rng` (`greedy`: the most probable op instead).
    pub fn draw(&self, rng: &mut SplitMix64, greedy: bool) -> Draw {
        let hdim = self.cfg.hidden as i64;
        let zeros = || Tensor::zeros([1, hdim], (Kind::Float, Device::Cpu));
        let (mut h, mut c) = ([zeros(), zeros()], [zeros(), zeros()]);
        let mut input = self.p("input_vars").view([1, hdim]);
        let mut arch = Vec::with_capacity(self.edges);
        let mut log_prob = Tensor::zeros([], (Kind::Float, Device::Cpu));
        let mut entropy = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for _ in 0..self.edges {
            let mut x = input;
            for l in 0..2 {
                let (hn, cn) = self.cell(l, &x, &h[l], &c[l]);
                x = hn.shallow_clone();
                (h[l], c[l]) = (hn, cn);
            }
            let z = x.matmul(&self.p("w_pred.weight").tr()) + self.p("w_pred.bias");
            let logits = (z / self.cfg.temperature).tanh() * self.cfg.tanh_constant;
            let logp = logits.log_softmax(-1, Kind::Float).view([-1]);
            let probs: Vec<f64> = Vec::try_from(&logp.detach().exp().to_kind(Kind::Double)).expect("probabilities");
            let op = if greedy {
                (0..self.ops).fold(0, |b, o| if probs[o] > probs[b] { o } else { b })
            } else {
                let u = rng.next_f64() * probs.iter().sum::<f64>();
                let mut acc = 0.0;
                (0..self.ops)
                    .find(|&o| {
                        acc += probs[o];
                        u < acc
                    })
                    .unwrap_or(self.ops - 1)
            };
            log_prob = log_prob + logp.get(op as i64);
            entropy = entropy - (logp.exp() * &logp).sum(Kind::Float);
            input = self.p("w_embd.weight").get(op as i64).view([1, hdim]);
            arch.push(op);
        }
        Draw { arch, log_prob, entropy }
    }

    /// A draw without gradient (θ steps, candidates).
    pub fn sample(&self, rng: &mut SplitMix64) -> Vec<usize> {
        let _g = tch::no_grad_guard();
        self.draw(rng, false).arch
    }

    /// The most probable op at every step, feeding each back.
    pub fn greedy(&self) -> Vec<usize> {
        let _g = tch::no_grad_guard();
        self.draw(&mut SplitMix64::keyed(&[0]), true).arch
    }

    /// The REINFORCE loss of one draw scored `accuracy` (in [0, 1]), to be summed over
    /// `aggregate` draws: reward r = accuracy + w·H, baseline b ← b − (1 − decay)(b − r)
    /// (the first baseline is the accuracy itself), loss = −log p · (r − b) / aggregate. As in
    /// the reference the entropy is not detached: it enters through r and b. Returns the loss
    /// and (reward, new baseline).
    pub fn reinforce(&mut self, d: &Draw, accuracy: f64) -> (Tensor, f64, f64) {
        let e = &self.cfg;
        let reward = &d.entropy * e.entropy_weight + accuracy;
        let baseline = match self.baseline {
            None => Tensor::from(accuracy as f32),
            Some(b) => (&reward - b) * (1.0 - e.baseline_decay) + b,
        };
        let loss = -(&d.log_prob) * (&reward - &baseline) / e.aggregate as f64;
        let (r, b) = (reward.double_value(&[]), baseline.double_value(&[]));
        self.baseline = Some(b);
        (loss, r, b)
    }
}

/// ENAS's controller training of one epoch.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ControllerStats {
    /// Means over the epoch's draws.
    pub accuracy: f64,
    pub reward: f64,
    pub entropy: f64,
    /// The baseline after the last draw.
    pub baseline: f64,
    pub draws: usize,
}

impl Searcher<'_> {
    /// ENAS after each epoch's θ steps: `controller_steps` updates of `aggregate` draws, each
    /// scored on one validation batch with the shared weights (all-reduced accuracy; batch i of
    /// an epoch-keyed order of the α half, wrapping), REINFORCE losses summed, the gradient's
    /// norm clipped, one Adam step; rank 0's weights then broadcast.
    ///
    /// The controller's phase of `epoch` (REINFORCE on the θ of the epoch's end). A stop raised
    /// on any rank is agreed after each of its updates; the controller is then put back as it
    /// was before the phase and `None` returned, so that a checkpoint taken now repeats the whole
    /// phase on resume and ends where an uninterrupted search ends (its draws are keyed by epoch
    /// and index, and θ is not changed here).
    pub(super) fn train_controller(&self, state: &mut SearchState, epoch: usize) -> Result<Option<ControllerStats>> {
        let cfg = self.cfg;
        let e = &cfg.search.enas;
        let b = cfg.search.batch_size.min(self.split.arch.len()).max(1);
        let order = epoch_order(cfg.seed, Stream::Controller, epoch, &self.split.arch);
        let batches = (order.len() / b).max(1);
        let total = e.controller_steps * e.aggregate;
        let mut progress = crate::progress::Progress::new(
            format!("epoch {epoch}: controller"),
            "draws",
            total as u64,
            self.comm.is_coordinator(),
            false,
        );
        let (mut acc_sum, mut reward_sum, mut entropy_sum) = (0.0, 0.0, 0.0);
        let _g = tch::no_grad_guard();
        let alphas: Vec<Tensor> = state.alphas.iter().map(|a| a.detach()).collect();
        drop(_g);
        let before = state.controller.as_ref().expect("ENAS has a controller").snapshot();
        for step in 0..e.controller_steps {
            let mut grads: Option<Vec<Tensor>> = None;
            for k in 0..e.aggregate {
                let i = step * e.aggregate + k;
                let ctl = state.controller.as_mut().expect("ENAS has a controller");
                let mut rng = SplitMix64::keyed(&[cfg.seed, TRAIN, u64::MAX - epoch as u64, i as u64]);
                let d = ctl.draw(&mut rng, false);
                let path: Path = vec![d.arch.iter().map(|&o| Some(o)).collect()];
                let (w, p) = Mix::Single(path).weights(state.net.as_ref(), &state.projection, &alphas);
                let batch = global_batch(&order, i % batches, b);
                let acc = self.evaluate_with(state.net.as_ref(), &w, p.as_ref(), &batch)?.acc();
                let ctl = state.controller.as_mut().expect("ENAS has a controller");
                let (loss, reward, _) = ctl.reinforce(&d, acc);
                let g = Tensor::run_backward(&[loss], &ctl.params, false, false);
                grads = Some(match grads {
                    None => g,
                    Some(a) => a.iter().zip(&g).map(|(a, b)| a + b).collect(),
                });
                acc_sum += acc;
                reward_sum += reward;
                entropy_sum += d.entropy.double_value(&[]);
                if let Some(line) = progress.tick(1) {
                    tracing::info!("{line}");
                }
            }
            let ctl = state.controller.as_mut().expect("ENAS has a controller");
            let g = grads.expect("aggregate ≥ 1");
            clip_grad_norm(&g, e.grad_clip);
            let params: Vec<Tensor> = ctl.params.iter().map(Tensor::shallow_clone).collect();
            ctl.opt.step(&params, &g);
            self.comm.broadcast_tensors(0, &ctl.params)?;
            let f = &cfg.fault;
            if f.phase == crate::config::FaultPhase::Controller
                && f.at_step == epoch * e.controller_steps + step
                && f.rank == self.comm.rank()
            {
                crate::control::inject(f.action, self.stop);
            }
            if step + 1 < e.controller_steps && crate::control::agree_stop(self.comm, self.stop)? {
                tracing::info!(
                    "stop requested during epoch {epoch}'s controller phase (update {} of {}): it restarts on resume",
                    step + 1,
                    e.controller_steps
                );
                state.controller.as_mut().expect("ENAS has a controller").restore(&before);
                return Ok(None);
            }
        }
        let ctl = state.controller.as_ref().expect("ENAS has a controller");
        let n = total as f64;
        Ok(Some(ControllerStats {
            accuracy: acc_sum / n,
            reward: reward_sum / n,
            entropy: entropy_sum / n,
            baseline: ctl.baseline.unwrap_or(f64::NAN),
            draws: total,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EnasConfig {
        EnasConfig::default()
    }

    #[test]
    fn draws_are_keyed_and_probabilities_sum_to_one() {
        let c = Controller::new(&cfg(), 6, 5, 1);
        assert_eq!(
            c.params.iter().map(Tensor::numel).sum::<usize>(),
            32 + 2 * (2 * 128 * 32 + 2 * 128) + 2 * 5 * 32 + 5
        );
        let a = c.sample(&mut SplitMix64::keyed(&[1, 2]));
        assert_eq!(a, c.sample(&mut SplitMix64::keyed(&[1, 2])));
        assert_eq!(a.len(), 6);
        assert!(a.iter().all(|&o| o < 5));
        // Near initialisation the logits are within ±2.5·tanh(small): the entropy of each step
        // is close to ln 5, and the draws cover every op over many samples.
        let d = c.draw(&mut SplitMix64::keyed(&[3]), false);
        let h = d.entropy.double_value(&[]);
        assert!(h > 6.0 * 5f64.ln() * 0.95 && h <= 6.0 * 5f64.ln() + 1e-5, "{h}");
        let mut seen = [false; 5];
        for i in 0..50 {
            for o in c.sample(&mut SplitMix64::keyed(&[4, i])) {
                seen[o] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    /// The baseline and reward by hand: decay 0.99, entropy weight 1e-4. First draw: the
    /// baseline is the accuracy 0.5, so r − b = 1e-4·H. Second draw (accuracy 0.7):
    /// b = 0.5 + 0.01·(0.7 + 1e-4·H₂ − 0.5).
    #[test]
    fn the_baseline_moves_as_computed_by_hand() {
        let mut c = Controller::new(&cfg(), 6, 5, 1);
        let d1 = c.draw(&mut SplitMix64::keyed(&[7, 1]), false);
        let h1 = d1.entropy.double_value(&[]);
        let (loss, r, b) = c.reinforce(&d1, 0.5);
        assert!((r - (0.5 + 1e-4 * h1)).abs() < 1e-7);
        assert!((b - 0.5).abs() < 1e-7);
        let lp1 = d1.log_prob.double_value(&[]);
        // r − b ≈ 1e-3 is a difference of two f32 numbers near 0.5 (rounding 3e-8): relative
        // error up to ~1e-4.
        let want = -lp1 * 1e-4 * h1 / 20.0;
        assert!((loss.double_value(&[]) - want).abs() < 2e-4 * want.abs(), "{} vs {want}", loss.double_value(&[]));
        let d2 = c.draw(&mut SplitMix64::keyed(&[7, 2]), false);
        let h2 = d2.entropy.double_value(&[]);
        let (_, r2, b2) = c.reinforce(&d2, 0.7);
        assert!((r2 - (0.7 + 1e-4 * h2)).abs() < 1e-7);
        assert!((b2 - (0.5 + 0.01 * (0.7 + 1e-4 * h2 - 0.5))).abs() < 1e-7, "{b2}");
        assert_eq!(c.baseline, Some(b2));
    }

    /// REINFORCE moves the controller toward a rewarded architecture: rewarding only draws
    /// whose first op is 3 raises that op's probability.
    #[test]
    fn reinforce_learns_a_rewarded_op() {
        let mut cfg = cfg();
        cfg.lr = 0.05;
        let mut c = Controller::new(&cfg, 6, 5, 2);
        let p3 = |c: &Controller| {
            let n = 400;
            (0..n).filter(|&i| c.sample(&mut SplitMix64::keyed(&[99, i]))[0] == 3).count() as f64 / n as f64
        };
        let before = p3(&c);
        for step in 0..30u64 {
            let mut grads: Option<Vec<Tensor>> = None;
            for k in 0..20u64 {
                let d = c.draw(&mut SplitMix64::keyed(&[5, step, k]), false);
                let acc = if d.arch[0] == 3 { 1.0 } else { 0.0 };
                let (loss, _, _) = c.reinforce(&d, acc);
                let g = Tensor::run_backward(&[loss], &c.params, false, false);
                grads = Some(match grads {
                    None => g,
                    Some(a) => a.iter().zip(&g).map(|(a, b)| a + b).collect(),
                });
            }
            let g = grads.unwrap();
            crate::optim::clip_grad_norm(&g, 5.0);
            let params: Vec<Tensor> = c.params.iter().map(Tensor::shallow_clone).collect();
            c.opt.step(&params, &g);
        }
        let after = p3(&c);
        assert!(after > before + 0.3, "P(op 3 on edge 0): {before} → {after}");
    }
}
