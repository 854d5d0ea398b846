//! SGD and Adam with PyTorch's exact update rules, with state we own (for checkpoints and for
//! keeping ranks identical).

use tch::Tensor;

use crate::config::{AdamConfig, SgdConfig};

/// `torch.optim.SGD` (dampening 0): d = g + wd·p; buf = μ·buf + d (buf = d on the first step);
/// d = d + μ·buf (Nesterov) or buf; p -= lr·d.
#[derive(Debug)]
pub struct Sgd {
    pub cfg: SgdConfig,
    pub momentum_buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(cfg: SgdConfig, n_params: usize) -> Self {
        Sgd { cfg, momentum_buffers: (0..n_params).map(|_| None).collect() }
    }

    /// One step; a weight whose gradient is undefined (not in this step's graph, as the ops a
    /// single path skips) is left alone, its momentum included, as `torch.optim.SGD` skips a
    /// parameter whose `.grad` is None.
    pub fn step(&mut self, params: &[Tensor], grads: &[Tensor], lr: f64) {
        let _g = tch::no_grad_guard();
        let c = &self.cfg;
        for ((p, g), buf) in params.iter().zip(grads).zip(self.momentum_buffers.iter_mut()) {
            if !g.defined() {
                continue;
            }
            let mut d = if c.weight_decay != 0.0 { g + p * c.weight_decay } else { g.shallow_clone() };
            if c.momentum != 0.0 {
                let b = match buf.take() {
                    None => d.copy(),
                    Some(mut b) => {
                        let _ = b.g_mul_scalar_(c.momentum).g_add_(&d);
                        b
                    }
                };
                d = if c.nesterov { d + &b * c.momentum } else { b.shallow_clone() };
                *buf = Some(b);
            }
            let mut p = p.shallow_clone();
            let _ = p.g_sub_(&(d * lr));
        }
    }
}

/// `torch.optim.Adam` with coupled L2 weight decay (not AdamW), eps 1e-8 unless set.
#[derive(Debug)]
pub struct Adam {
    pub cfg: AdamConfig,
    pub eps: f64,
    pub step: u64,
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
}

impl Adam {
    pub const EPS: f64 = 1e-8;

    pub fn new(cfg: AdamConfig, params: &[Tensor]) -> Self {
        let _g = tch::no_grad_guard();
        Adam {
            cfg,
            eps: Self::EPS,
            step: 0,
            exp_avg: params.iter().map(|p| p.zeros_like()).collect(),
            exp_avg_sq: params.iter().map(|p| p.zeros_like()).collect(),
        }
    }

    pub fn step(&mut self, params: &[Tensor], grads: &[Tensor]) {
        let _g = tch::no_grad_guard();
        let c = &self.cfg;
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (((p, g), m), v) in params.iter().zip(grads).zip(self.exp_avg.iter_mut()).zip(self.exp_avg_sq.iter_mut()) {
            let g = if c.weight_decay != 0.0 { g + p * c.weight_decay } else { g.shallow_clone() };
            let _ = m.g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
            let _ = v.g_mul_scalar_(c.beta2).g_add_(&(&g * &g * (1.0 - c.beta2)));
            let denom = v.sqrt() / bc2.sqrt() + self.eps;
            let mut p = p.shallow_clone();
            let _ = p.g_sub_(&(m.shallow_clone() / denom * (c.lr / bc1)));
        }
    }
}

/// Scale gradients so their joint L2 norm is at most `max_norm` (`clip_grad_norm_`: coefficient
/// max_norm / (norm + 1e-6), applied when below one). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &[Tensor], max_norm: f64) -> f64 {
    let _g = tch::no_grad_guard();
    let grads: Vec<&Tensor> = grads.iter().filter(|g| g.defined()).collect();
    let total: f64 = grads.iter().map(|g| g.square().sum(tch::Kind::Double).double_value(&[])).sum::<f64>().sqrt();
    let coef = max_norm / (total + 1e-6);
    if max_norm > 0.0 && coef < 1.0 {
        for g in grads {
            let mut g = g.shallow_clone();
            let _ = g.g_mul_scalar_(coef);
        }
    }
    total
}

/// The learning rate of epoch `epoch` of `epochs` under `w`'s schedule, then its linear
/// warm-up (epoch e < W: ×(e+1)/W, PC-DARTS's at batch sizes above 256).
pub fn epoch_lr(w: &crate::config::SgdConfig, epoch: usize, epochs: usize) -> f64 {
    use crate::config::LrSchedule;
    let (lr, e, n) = (w.lr, epoch as f64, epochs as f64);
    let base = match w.schedule {
        LrSchedule::Cosine => cosine_lr(lr, w.lr_min, epoch, epochs),
        LrSchedule::Exponential => lr * w.gamma.powi(epoch as i32),
        // PC-DARTS's `adjust_lr` (5 < E): the slope flattens for the last 5 epochs.
        LrSchedule::Linear if epochs <= 5 => lr * (n - e) / n,
        LrSchedule::Linear if epochs - epoch > 5 => lr * (n - 5.0 - e) / (n - 5.0),
        LrSchedule::Linear => lr * (n - e) / ((n - 5.0) * 5.0),
    };
    if epoch < w.warmup_epochs {
        base * (epoch + 1) as f64 / w.warmup_epochs as f64
    } else {
        base
    }
}

/// Per-epoch cosine schedule: epoch e of E uses lr_min + (lr − lr_min)(1 + cos(πe/E))/2.
pub fn cosine_lr(lr: f64, lr_min: f64, epoch: usize, epochs: usize) -> f64 {
    lr_min + (lr - lr_min) * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs as f64).cos()) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_slice(v).to_kind(Kind::Double)
    }

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        // p=1, g=2 twice, lr 0.1, μ 0.9, wd 0.5:
        // step 1: d = 2 + 0.5 = 2.5, buf = 2.5, p = 1 - 0.25 = 0.75
        // step 2: d = 2 + 0.375 = 2.375, buf = 0.9·2.5 + 2.375 = 4.625, p = 0.75 - 0.4625 = 0.2875
        let cfg = SgdConfig {
            lr: 0.1,
            lr_min: 0.0,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.5,
            grad_clip: 0.0,
            ..SgdConfig::default()
        };
        let mut opt = Sgd::new(cfg, 1);
        let p = t(&[1.0]);
        opt.step(&[p.shallow_clone()], &[t(&[2.0])], 0.1);
        opt.step(&[p.shallow_clone()], &[t(&[2.0])], 0.1);
        assert!((p.double_value(&[0]) - 0.2875).abs() < 1e-12);
    }

    #[test]
    fn sgd_nesterov_matches_hand_computation() {
        // p=1, g=1, μ 0.5, lr 1, no wd: step 1: buf = 1, d = 1 + 0.5 = 1.5, p = -0.5
        let cfg = SgdConfig {
            lr: 1.0,
            lr_min: 0.0,
            momentum: 0.5,
            nesterov: true,
            weight_decay: 0.0,
            grad_clip: 0.0,
            ..SgdConfig::default()
        };
        let mut opt = Sgd::new(cfg, 1);
        let p = t(&[1.0]);
        opt.step(&[p.shallow_clone()], &[t(&[1.0])], 1.0);
        assert!((p.double_value(&[0]) + 0.5).abs() < 1e-12);
    }

    #[test]
    fn adam_first_steps_match_hand_computation() {
        // Step 1 of Adam moves each coordinate by lr·sign(g) (up to eps): m̂ = g, v̂ = g².
        // With wd 0.1, p=2, g=1: g' = 1.2 → p = 2 - 0.01·1.2/(1.2 + 1e-8).
        let cfg = AdamConfig { lr: 0.01, beta1: 0.5, beta2: 0.999, weight_decay: 0.1, init_std: 0.0 };
        let p = t(&[2.0]);
        let mut opt = Adam::new(cfg, &[p.shallow_clone()]);
        opt.step(&[p.shallow_clone()], &[t(&[1.0])]);
        let expected = 2.0 - 0.01 * 1.2 / (1.2 + 1e-8);
        assert!((p.double_value(&[0]) - expected).abs() < 1e-12);
        // Step 2 with g=0 (g' = 0.1·p): m = 0.5·0.6 + 0.5·g', v = 0.999·0.00144 + 0.001·g'^2.
        let p1 = p.double_value(&[0]);
        opt.step(&[p.shallow_clone()], &[t(&[0.0])]);
        let g2 = 0.1 * p1;
        let m = 0.5 * (0.5 * 1.2) + 0.5 * g2;
        let v = 0.999 * (0.001 * 1.44) + 0.001 * g2 * g2;
        let (bc1, bc2) = (1.0 - 0.25, 1.0 - 0.999f64.powi(2));
        let expected = p1 - 0.01 / bc1 * m / (v.sqrt() / bc2.sqrt() + 1e-8);
        assert!((p.double_value(&[0]) - expected).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let g = [t(&[3.0]), t(&[4.0])];
        let n = clip_grad_norm(&g, 1.0);
        assert!((n - 5.0).abs() < 1e-12);
        let after = (g[0].double_value(&[0]).powi(2) + g[1].double_value(&[0]).powi(2)).sqrt();
        assert!((after - 5.0 / (5.0 + 1e-6)).abs() < 1e-9);
    }

    #[test]
    fn schedules_and_warm_up_by_hand() {
        let toml = |s: &str| -> crate::config::SgdConfig { toml::from_str(s).unwrap() };
        // DARTS ImageNet: 0.1·0.97^e; e = 2: 0.09409.
        let w = toml("lr = 0.1\nschedule = \"exponential\"\n");
        assert_eq!(epoch_lr(&w, 0, 250), 0.1);
        assert!((epoch_lr(&w, 2, 250) - 0.09409).abs() < 1e-15);
        // PC-DARTS ImageNet: lr 0.5 over 250 epochs, 5 of warm-up: e = 0 → 0.5·245/245·1/5 = 0.1;
        // e = 4 → 0.5·241/245·5/5; e = 100 → 0.5·145/245; e = 247 (last 5) → 0.5·3/(245·5).
        let w = toml("lr = 0.5\nschedule = \"linear\"\nwarmup_epochs = 5\n");
        assert!((epoch_lr(&w, 0, 250) - 0.1).abs() < 1e-15);
        assert!((epoch_lr(&w, 4, 250) - 0.5 * 241.0 / 245.0).abs() < 1e-15);
        assert!((epoch_lr(&w, 100, 250) - 0.5 * 145.0 / 245.0).abs() < 1e-15);
        assert!((epoch_lr(&w, 247, 250) - 0.5 * 3.0 / 1225.0).abs() < 1e-15);
        // Cosine with warm-up (PC-DARTS's ImageNet search: 0.5, 50 epochs): e = 1 → cos·2/5.
        let w = toml("lr = 0.5\nlr_min = 0.0\nwarmup_epochs = 5\n");
        assert!((epoch_lr(&w, 1, 50) - cosine_lr(0.5, 0.0, 1, 50) * 0.4).abs() < 1e-15);
        assert_eq!(epoch_lr(&w, 5, 50), cosine_lr(0.5, 0.0, 5, 50));
    }

    #[test]
    fn cosine_endpoints() {
        assert_eq!(cosine_lr(0.025, 0.001, 0, 50), 0.025);
        // DARTS: epoch e uses 0.001 + 0.024·(1+cos(πe/50))/2; e = 25 is the midpoint 0.013.
        assert!((cosine_lr(0.025, 0.001, 25, 50) - 0.013).abs() < 1e-12);
    }
}
