//! Operation-selection criteria: a score per (cell type, edge, op), higher = keep.
//!
//! * `magnitude`: α (vanilla DARTS).
//! * `drop`: L(θ, ŵ_c) − L(θ, w), the loss change of removing op c (its mixing weight set to 0,
//!   no renormalisation), without re-optimising θ.
//! * `darts-if`: S_c = L(θ, ŵ_c) − L(θ, w) − ½ ĝ_cᵀH⁻¹ĝ_c, ĝ_c = ∇θL(θ, ŵ_c), one shared IHVP
//!   operator (paper.md §4.4). Candidates are split over ranks.
//! * `darts-im`: I_M = −BᵀH⁻¹B1 (sign `paper`) or +BᵀH⁻¹B1 (`negated`), one IHVP for all ops
//!   (paper.md §4.2); `faithful` reproduces the authors' raw-logit finite differences (§4.3).

use serde_json::json;
use tch::{Kind, Tensor};

use super::flat::{flatten, norm, split_like};
use super::ihvp::{needs_fisher, SolveInfo, Solver};
use super::probe::{EvalSet, Leaf, Probe, Timings};
use crate::comm::{broadcast_value, Collective};
use crate::config::Config;
use crate::data::{Dataset, Stream};
use crate::error::{Error, Result};
use crate::search::table_of;
use crate::select::ScoreTable;
use crate::supernet::{BnMode, Supernet};

/// Everything a criterion needs.
pub struct Context<'a> {
    pub cfg: &'a Config,
    pub net: &'a dyn Supernet,
    pub alphas: &'a [Tensor],
    pub comm: &'a dyn Collective,
    pub data: &'a dyn Dataset,
    /// Indices of the validation (α) half.
    pub val: &'a [usize],
    pub timings: &'a Timings,
}

/// A criterion's result: scores plus diagnostics for `scores.json`.
pub struct Outcome {
    pub table: ScoreTable,
    pub diagnostics: serde_json::Value,
}

/// One removable op: (cell type, edge, op).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub cell: usize,
    pub edge: usize,
    pub op: usize,
}

/// Every (cell, edge, op) except `none` (removing a zero op changes nothing).
pub fn candidates(net: &dyn Supernet) -> Vec<Candidate> {
    let spec = net.spec();
    let none = spec.none_index();
    let mut out = Vec::new();
    for (cell, ct) in spec.cells.iter().enumerate() {
        for edge in 0..ct.edges.len() {
            for op in 0..spec.ops.len() {
                if Some(op) != none {
                    out.push(Candidate { cell, edge, op });
                }
            }
        }
    }
    out
}

/// Mixing weights with candidate c's weight set to zero (no renormalisation).
pub fn remove_op(w: &[Tensor], c: Candidate) -> Vec<Tensor> {
    w.iter()
        .enumerate()
        .map(|(i, t)| {
            let t = t.detach().copy();
            if i == c.cell {
                let _ = t.get(c.edge as i64).get(c.op as i64).fill_(0.0);
            }
            t
        })
        .collect()
}

fn bn_mode(cfg: &Config) -> BnMode {
    if cfg.select.bn == "running" {
        BnMode::Eval
    } else {
        BnMode::BatchStats
    }
}

impl Context<'_> {
    fn eval_set(&self, stream: Stream, draw: usize) -> Result<EvalSet> {
        EvalSet::draw(self.cfg.seed, stream, draw, self.val, self.cfg.select.n, self.cfg.select_batch())
    }

    fn probe(&self, eval: &EvalSet, leaf: Leaf) -> Result<Probe<'_>> {
        Probe::new(self.net, self.alphas, self.comm, self.data, eval, leaf, bn_mode(self.cfg), self.timings)
    }

    fn empty_table(&self, fill: f64) -> Vec<Vec<Vec<f64>>> {
        let spec = self.net.spec();
        spec.cells.iter().map(|c| vec![vec![fill; spec.ops.len()]; c.edges.len()]).collect()
    }

    /// Scores of the configured criterion.
    pub fn run(&self) -> Result<Outcome> {
        match self.cfg.select.criterion.as_str() {
            "magnitude" => Ok(Outcome {
                table: ScoreTable::plain("magnitude", self.alphas.iter().map(|a| table_of(&a.detach())).collect()),
                diagnostics: json!({}),
            }),
            "drop" => self.removal_scores(false),
            "darts-if" => self.removal_scores(true),
            "darts-im" if self.cfg.select.faithful => self.darts_im_faithful(),
            "darts-im" => self.darts_im(),
            other => Err(Error::config("select", "select.criterion", format!("unknown criterion {other:?}"))),
        }
    }

    /// `drop` and `darts-if`: candidates split over ranks (candidate i on rank i mod W), each
    /// scanned over all N batches; the quadratic terms are taken in rounds of one vector per rank.
    fn removal_scores(&self, influence: bool) -> Result<Outcome> {
        let eval = self.eval_set(Stream::EvalBatches, 0)?;
        let mut probe = self.probe(&eval, Leaf::Mixing)?;
        // Each candidate is scanned over all N batches by one rank.
        probe.load_all(self.data)?;
        let solver = if influence { Some(Solver::build(&self.cfg.select, &probe, None)?) } else { None };
        let cands = candidates(self.net);
        let (rank, world) = (self.comm.rank(), self.comm.size());
        let w0 = probe.base_weights();
        let l0 = probe.loss_local(&w0);
        let mut mine: Vec<(usize, f64, f64)> = Vec::new();
        for round in 0..cands.len().div_ceil(world) {
            let i = round * world + rank;
            let c = cands.get(i).copied();
            let w = c.map(|c| remove_op(&w0, c));
            let (lc, g) = match (&w, influence) {
                (Some(w), true) => {
                    let (l, g) = probe.grad_theta_local(w);
                    (Some(l), Some(g))
                }
                (Some(w), false) => (Some(probe.loss_local(w)), None),
                (None, _) => (None, None),
            };
            let q = match &solver {
                Some(s) => s.quad_own(&probe, g.as_ref())?,
                None => None,
            };
            if let Some(lc) = lc {
                mine.push((i, lc - l0, q.unwrap_or(0.0)));
            }
        }
        let bytes = postcard::to_stdvec(&mine).map_err(|e| Error::Comm(e.to_string()))?;
        let all = Timings::add(&self.timings.comm, || self.comm.gather_bytes(0, &bytes))?;
        let table = if self.comm.is_coordinator() {
            let mut scores = self.empty_table(f64::NEG_INFINITY);
            let mut terms: Vec<Vec<Vec<Vec<f64>>>> = scores
                .iter()
                .map(|c| c.iter().map(|e| vec![vec![f64::NAN; if influence { 2 } else { 1 }]; e.len()]).collect())
                .collect();
            for b in &all {
                let recs: Vec<(usize, f64, f64)> = postcard::from_bytes(b).map_err(|e| Error::Comm(e.to_string()))?;
                for (i, drop, q) in recs {
                    let c = cands[i];
                    scores[c.cell][c.edge][c.op] = if influence { drop - 0.5 * q } else { drop };
                    terms[c.cell][c.edge][c.op] = if influence { vec![drop, q] } else { vec![drop] };
                }
            }
            let name = if influence { "darts-if" } else { "drop" };
            let term_names =
                if influence { vec!["loss_change".into(), "quad".into()] } else { vec!["loss_change".into()] };
            Some(ScoreTable { criterion: name.into(), scores, term_names, terms })
        } else {
            None
        };
        let table = broadcast_value(self.comm, 0, table.as_ref())?;
        Ok(Outcome { table, diagnostics: json!({"baseline_loss": l0, "candidates": cands.len()}) })
    }

    fn im_sign(&self) -> f64 {
        if self.cfg.select.im_sign == "negated" {
            1.0
        } else {
            -1.0
        }
    }

    /// Matrix-free DARTS-IM on the mixing weights: u = B1 (with the Fisher samples from the
    /// same double-backward pass), z = IHVP(u), I_M = ∓Bᵀz.
    fn darts_im(&self) -> Result<Outcome> {
        let eval = self.eval_set(Stream::EvalBatches, 0)?;
        let probe = self.probe(&eval, Leaf::Mixing)?;
        let per_batch_fisher = needs_fisher(&self.cfg.select) && self.cfg.select.fisher_samples == "batch";
        let (samples, u) = if per_batch_fisher {
            let (g, u) = probe.batch_grads_and_mixed_ones()?;
            (Some(g), u)
        } else {
            (None, probe.mixed(&flatten(&probe.leaf).ones_like())?)
        };
        let solver = Solver::build(&self.cfg.select, &probe, samples)?;
        let (z, info) = solver.solve(&probe, &u)?;
        let s = probe.mixed_t(&z)?;
        let im = s * self.im_sign();
        let table = self.leaf_table("darts-im", &probe, &im);
        Ok(Outcome { table, diagnostics: json!({"norm_B1_mixing": norm(&u), "norm_ihvp": norm(&z), "solve": info}) })
    }

    fn leaf_table(&self, name: &str, probe: &Probe, flat_scores: &Tensor) -> ScoreTable {
        let per_cell = split_like(flat_scores, &probe.leaf);
        ScoreTable::plain(name, per_cell.iter().map(table_of).collect())
    }

    /// The authors' computation (paper.md §3, §4.3): raw-logit leaf, central finite differences
    /// of radius 1e-2/‖v‖; `neumann`/`identity` run the whole chain per batch and average;
    /// the Fisher solvers draw fresh batches for the + pass, the − pass, the Fisher, and the two
    /// Bᵀ passes. Also reports ‖B·1‖ on raw logits (zero in exact arithmetic) next to ‖B·1‖ on
    /// the mixing weights.
    fn darts_im_faithful(&self) -> Result<Outcome> {
        let sel = &self.cfg.select;
        let eval = self.eval_set(Stream::EvalBatches, 0)?;
        let exact = self.probe(&eval, Leaf::Mixing)?;
        let norm_b1_mixing = norm(&exact.mixed(&flatten(&exact.leaf).ones_like())?);
        let alpha_leaf: Vec<Tensor> = self.alphas.iter().map(|a| a.detach().to_kind(exact.kind())).collect();
        let ones = flatten(&alpha_leaf).ones_like();
        let r_alpha = 1e-2 / norm(&ones);
        let shift = |sign: f64| -> Vec<Tensor> {
            split_like(&(&flatten(&alpha_leaf) + &ones * (sign * r_alpha)), &alpha_leaf)
                .iter()
                .map(|t| t.copy())
                .collect()
        };
        let (plus, minus) = (shift(1.0), shift(-1.0));
        let fd_b1 = |probe: &Probe, j_plus: usize, probe_minus: &Probe, j_minus: usize| -> Tensor {
            let (gp, _) = probe.batch_grads_at(j_plus, &plus, None);
            let (gm, _) = probe_minus.batch_grads_at(j_minus, &minus, None);
            (gp - gm) / (2.0 * r_alpha)
        };
        let fd_bt = |probe: &Probe, j_plus: usize, probe_minus: &Probe, j_minus: usize, z: &Tensor| -> Tensor {
            let zn = norm(z);
            if zn == 0.0 {
                // Bᵀ0 = 0 (the radius 1e-2/‖z‖ would be infinite).
                return ones.zeros_like();
            }
            let r = 1e-2 / zn;
            let (_, gp) = probe.batch_grads_at(j_plus, &alpha_leaf, Some(&(z * r)));
            let (_, gm) = probe_minus.batch_grads_at(j_minus, &alpha_leaf, Some(&(z * -r)));
            (gp - gm) / (2.0 * r)
        };
        let n = sel.n as f64;
        let (im, norm_b1_raw, info) = match sel.ihvp.as_str() {
            "neumann" | "identity" => {
                // Per-batch chains on the fixed batches, averaged (data-parallel over batches).
                let probe = self.probe(&eval, Leaf::Raw)?;
                let mut s_sum = ones.zeros_like();
                let mut u_sum = Tensor::zeros([probe.n_params() as i64], (probe.kind(), tch::Device::Cpu));
                for j in probe.own_batches().collect::<Vec<_>>() {
                    let u = fd_b1(&probe, j, &probe, j);
                    u_sum += &u;
                    // The authors' Neumann returns Σ_{k≤K} (I − γH_j)^k u (V_0 = u, no γ factor).
                    let z = if sel.ihvp == "neumann" {
                        let mut term = u.copy();
                        let mut acc = u.copy();
                        for _ in 0..sel.k {
                            term = &term - probe.hvp_on(j, &term) * sel.gamma;
                            acc += &term;
                        }
                        acc
                    } else {
                        u
                    };
                    s_sum += fd_bt(&probe, j, &probe, j, &z);
                }
                let both = [s_sum, u_sum];
                Timings::add(&self.timings.comm, || self.comm.all_reduce_sum_tensors(&both))?;
                (&both[0] / n * self.im_sign(), norm(&(&both[1] / n)), SolveInfo::default())
            }
            "sherman-morrison" | "woodbury" => {
                // Fresh draws: + pass, − pass, Fisher, Bᵀ + pass, Bᵀ − pass.
                let sets: Vec<EvalSet> =
                    (1..=5).map(|d| self.eval_set(Stream::FaithfulDraw, d)).collect::<Result<_>>()?;
                let probes: Vec<Probe> = sets.iter().map(|e| self.probe(e, Leaf::Raw)).collect::<Result<_>>()?;
                let own: Vec<usize> = probes[0].own_batches().collect();
                let mut u = Tensor::zeros([probes[0].n_params() as i64], (probes[0].kind(), tch::Device::Cpu));
                for &j in &own {
                    u += fd_b1(&probes[0], j, &probes[1], j);
                }
                Timings::add(&self.timings.comm, || self.comm.all_reduce_sum_tensors(std::slice::from_ref(&u)))?;
                let u = u / n;
                let solver = Solver::build(sel, &probes[2], None)?;
                let (z, info) = solver.solve(&probes[2], &u)?;
                let mut s = ones.zeros_like();
                for &j in &own {
                    s += fd_bt(&probes[3], j, &probes[4], j, &z);
                }
                Timings::add(&self.timings.comm, || self.comm.all_reduce_sum_tensors(std::slice::from_ref(&s)))?;
                (s / n * self.im_sign(), norm(&u), info)
            }
            other => {
                return Err(Error::config(
                    "select",
                    "select.ihvp",
                    format!("--faithful reproduces neumann, identity, sherman-morrison and woodbury, not {other:?}"),
                ))
            }
        };
        let per_cell = split_like(&im.to_kind(Kind::Double), &alpha_leaf);
        let table = ScoreTable::plain("darts-im-faithful", per_cell.iter().map(table_of).collect());
        Ok(Outcome {
            table,
            diagnostics: json!({
                "norm_B1_raw_logits": norm_b1_raw,
                "norm_B1_mixing": norm_b1_mixing,
                "note": "on raw logits B·1 = 0 exactly (softmax is shift-invariant): the faithful I_M is finite-difference and batch noise",
                "solve": info,
            }),
        })
    }
}

/// Flat scores as f64 (for tests).
pub fn flat_scores(t: &ScoreTable) -> Vec<f64> {
    t.scores.iter().flatten().flatten().copied().collect()
}
