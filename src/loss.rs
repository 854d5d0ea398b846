//! The loss and its tallies: cross-entropy in the logits' precision, and loss/accuracy sums
//! over a set of samples.

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::config::FisherLabels;

/// Mean cross-entropy, computed in the logits' precision (tch's `cross_entropy_for_logits`
/// computes in f32 even for f64 logits).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.log_softmax(-1, logits.kind()).nll_loss(labels)
}

/// Mean cross-entropy against label-smoothed targets (1 − ε)·one-hot + ε/K (DARTS's
/// `CrossEntropyLabelSmooth`): (1 − ε)·CE + ε·mean over classes of −log p; ε = 0 is
/// [`cross_entropy`].
pub fn cross_entropy_smoothed(logits: &Tensor, labels: &Tensor, eps: f64) -> Tensor {
    let logp = logits.log_softmax(-1, logits.kind());
    let ce = logp.nll_loss(labels);
    if eps == 0.0 {
        return ce;
    }
    let uniform = -logp.mean_dim(-1, false, logits.kind()).mean(logits.kind());
    ce * (1.0 - eps) + uniform * eps
}

/// Loss and accuracy summed over a (global) set of samples.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tally {
    pub loss_sum: f64,
    pub correct: f64,
    pub count: f64,
}

impl Tally {
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1.0)
    }
    pub fn acc(&self) -> f64 {
        self.correct / self.count.max(1.0)
    }
    pub(crate) fn add(&mut self, logits: &Tensor, labels: &Tensor, mean_loss: f64) {
        let n = labels.size()[0] as f64;
        self.loss_sum += mean_loss * n;
        self.correct +=
            logits.argmax(-1, false).eq_tensor(labels).to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        self.count += n;
    }
    /// Samples whose label is among the `k` largest logits (top-5 accuracy's numerator).
    pub fn top_k_correct(logits: &Tensor, labels: &Tensor, k: i64) -> f64 {
        let k = k.min(logits.size()[1]);
        let (_, idx) = logits.topk(k, -1, true, false);
        idx.eq_tensor(&labels.unsqueeze(1)).to_kind(Kind::Double).sum(Kind::Double).double_value(&[])
    }
    pub fn as_array(&self) -> [f64; 3] {
        [self.loss_sum, self.correct, self.count]
    }
    pub fn from_array(a: [f64; 3]) -> Self {
        Tally { loss_sum: a[0], correct: a[1], count: a[2] }
    }
}

/// Labels for batch j: the data's, or drawn from the model's predictive distribution softmax(z)
/// with a key per (batch, sample), the same on every rank.
pub fn fisher_targets(labels_from: FisherLabels, j: usize, z: &Tensor, y: &Tensor) -> Tensor {
    match labels_from {
        FisherLabels::Data => y.shallow_clone(),
        FisherLabels::Sampled => {
            let p = z.detach().to_kind(Kind::Double).softmax(-1, Kind::Double).to_device(tch::Device::Cpu);
            let (m, c) = (p.size()[0] as usize, p.size()[1] as usize);
            let probs = Vec::<f64>::try_from(p.reshape([-1])).expect("f64 probabilities");
            let drawn: Vec<i64> = (0..m)
                .map(|i| {
                    let mut rng = crate::rng::SplitMix64::keyed(&[0x4d43_4669_7368_6572, j as u64, i as u64]);
                    let u = rng.next_f64();
                    let row = &probs[i * c..(i + 1) * c];
                    let mut acc = 0.0;
                    row.iter()
                        .position(|&q| {
                            acc += q;
                            u < acc
                        })
                        .unwrap_or(c - 1) as i64
                })
                .collect();
            Tensor::from_slice(&drawn).to_device(y.device())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_smoothing_and_top_k_by_hand() {
        let rows: [[f64; 3]; 2] = [[1.0, 2.0, 3.0], [0.0, 0.5, 5.0]];
        let labels = [2i64, 0];
        let logits = Tensor::from_slice(&rows.concat()).reshape([2, 3]).to_kind(Kind::Double);
        let y = Tensor::from_slice(&labels);
        // Targets (1 − ε)·one-hot + ε/K, the loss −Σ t·log p averaged over the batch, in f64.
        let eps = 0.1;
        let want: f64 = rows
            .iter()
            .zip(labels)
            .map(|(r, l)| {
                let lse = r.iter().map(|v| v.exp()).sum::<f64>().ln();
                (0..3).map(|k| ((k == l as usize) as u8 as f64 * (1.0 - eps) + eps / 3.0) * (lse - r[k])).sum::<f64>()
            })
            .sum::<f64>()
            / 2.0;
        let got = cross_entropy_smoothed(&logits, &y, eps).double_value(&[]);
        assert!((got - want).abs() < 1e-14, "{got} vs {want}");
        let plain = cross_entropy(&logits, &y).double_value(&[]);
        assert_eq!(cross_entropy_smoothed(&logits, &y, 0.0).double_value(&[]), plain);
        // Top-2: row 0's label (2) is the largest; row 1's (0) is the smallest.
        assert_eq!(Tally::top_k_correct(&logits, &y, 2), 1.0);
        assert_eq!(Tally::top_k_correct(&logits, &y, 3), 2.0);
        assert_eq!(Tally::top_k_correct(&logits, &y, 5), 2.0);
    }
}
