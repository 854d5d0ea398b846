//! The final choice of SETN, random-nas and ENAS: candidate architectures scored with the
//! shared weights on validation batches.

use serde::Serialize;
use tch::Tensor;

use super::sampling::{self, Mix};
use super::SearchState;
use super::Searcher;
use crate::config::Strategy;
use crate::data::{epoch_order, global_batch, Stream};
use crate::error::{Error, Result};
use crate::supernet::Path;

/// One architecture scored at the end of a SETN or random-nas search.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub genotype: String,
    /// Σ log softmax(α) over edges (SETN's ranking).
    pub log_prob: Option<f64>,
    pub val_loss: f64,
    pub val_acc: f64,
    #[serde(skip)]
    pub path: Path,
}

impl Searcher<'_> {
    /// SETN's and random-nas's final choice: `search.candidates` architectures — SETN's most
    /// probable under softmax(α), random-nas's drawn uniformly — each scored with the shared
    /// weights on one validation batch (batch i of a fixed order of the α half, wrapping), the
    /// most accurate kept (the first on ties: for SETN the more probable). AutoDL
    /// `search-cell.py` `get_best_arch`. Returns the candidates in scoring order and the index
    /// of the chosen one.
    pub fn pick_candidate(&self, state: &SearchState) -> Result<(Vec<Candidate>, usize)> {
        let cfg = self.cfg;
        let spec = state.net.spec();
        let k = cfg.search.candidates;
        let mut cands: Vec<Candidate> = match cfg.search.strategy {
            Strategy::Setn if spec.family != crate::space::Family::Nb201 => {
                // The DARTS space is too large to enumerate: draws from softmax(α), distinct.
                let softmax = state.softmax_table();
                let mut rng = crate::rng::SplitMix64::keyed(&[cfg.seed, sampling::CANDIDATES]);
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                let mut tries = 0;
                while out.len() < k && tries < 100 * k {
                    tries += 1;
                    let (path, lp) = sampling::draw_darts(spec, &softmax, &mut rng);
                    if seen.insert(path.clone()) {
                        let genotype = sampling::path_genotype(spec, &path).to_string();
                        out.push(Candidate { genotype, log_prob: Some(lp), val_loss: 0.0, val_acc: 0.0, path });
                    }
                }
                out.sort_by(|a, b| b.log_prob.unwrap_or(0.0).total_cmp(&a.log_prob.unwrap_or(0.0)));
                out
            }
            Strategy::Setn => sampling::most_probable(&state.softmax_table()[0], k)
                .into_iter()
                .map(|(arch, lp)| {
                    let path: Path = vec![arch.into_iter().map(Some).collect()];
                    let genotype = sampling::path_genotype(spec, &path).to_string();
                    Candidate { genotype, log_prob: Some(lp), val_loss: 0.0, val_acc: 0.0, path }
                })
                .collect(),
            Strategy::Enas => {
                let c =
                    state.controller.as_ref().ok_or_else(|| Error::Invalid("ENAS without its controller".into()))?;
                (0..k)
                    .map(|i| {
                        let arch =
                            c.sample(&mut crate::rng::SplitMix64::keyed(&[cfg.seed, sampling::CANDIDATES, i as u64]));
                        let path: Path = vec![arch.into_iter().map(Some).collect()];
                        let genotype = sampling::path_genotype(spec, &path).to_string();
                        Candidate { genotype, log_prob: None, val_loss: 0.0, val_acc: 0.0, path }
                    })
                    .collect()
            }
            _ => sampling::random_candidates(spec, cfg.seed, k)
                .into_iter()
                .map(|path| {
                    let genotype = sampling::path_genotype(spec, &path).to_string();
                    Candidate { genotype, log_prob: None, val_loss: 0.0, val_acc: 0.0, path }
                })
                .collect(),
        };
        let b = cfg.search.batch_size.min(self.split.arch.len()).max(1);
        let order = epoch_order(cfg.seed, Stream::Candidates, 0, &self.split.arch);
        let batches = (order.len() / b).max(1);
        let mut progress = crate::progress::Progress::new(
            format!("{} candidates", cfg.search.strategy),
            "architectures",
            cands.len() as u64,
            self.comm.is_coordinator(),
            false,
        );
        let alphas: Vec<Tensor> = state.alphas.iter().map(|a| a.detach()).collect();
        for (i, c) in cands.iter_mut().enumerate() {
            let batch = global_batch(&order, i % batches, b);
            let (w, path) = Mix::Single(c.path.clone()).weights(state.net.as_ref(), &state.projection, &alphas);
            let t = self.evaluate_with(state.net.as_ref(), &w, path.as_ref(), &batch)?;
            (c.val_loss, c.val_acc) = (t.loss(), t.acc());
            if let Some(line) = progress.tick(1) {
                tracing::info!("{line}");
            }
        }
        let best =
            cands.iter().enumerate().fold(0, |best, (i, c)| if c.val_acc > cands[best].val_acc { i } else { best });
        Ok((cands, best))
    }
}
