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
use crate::space::ScoreTable;
use crate::supernet::table_of;
use crate::supernet::{BnMode, Supernet};

/// What is scored: a trained supernet with its α, the data and its search split, under a
/// config, on these ranks. Shared by every entry point of selection and its checks.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    pub cfg: &'a Config,
    pub comm: &'a dyn Collective,
    pub net: &'a dyn Supernet,
    pub alphas: &'a [Tensor],
    pub data: &'a dyn Dataset,
    pub split: &'a crate::data::SearchSplit,
}

impl<'a> Subject<'a> {
    /// The same subject under another config.
    pub fn with_cfg(self, cfg: &'a Config) -> Self {
        Subject { cfg, ..self }
    }
}

/// Everything a criterion needs.
pub struct Context<'a> {
    pub cfg: &'a Config,
    pub net: &'a dyn Supernet,
    pub alphas: &'a [Tensor],
    pub comm: &'a dyn Collective,
    pub data: &'a dyn Dataset,
    /// Indices of the validation (α) half.
    pub val: &'a [usize],
    /// Indices of the training (θ) half, for `select.hess_data = "train"`.
    pub train: &'a [usize],
    pub timings: &'a Timings,
    /// Rows fixed by earlier progressive decisions (DARTS-PT with an influence rule): the leaf
    /// is the projected mixing weights.
    pub projection: Option<&'a crate::supernet::Projection>,
}

/// Checkpointing of the long candidate loop of `drop` and `darts-if`: progress checkpoints at
/// round boundaries, a stop on SIGTERM/SIGUSR1, and the candidates already scored by an
/// interrupted run.
#[derive(Default)]
pub struct Resumable<'a> {
    /// Where the coordinator writes progress checkpoints (`None`: nowhere).
    pub dir: Option<std::path::PathBuf>,
    /// Rounds between checkpoints (0: only when stopping).
    pub every: usize,
    pub keep: usize,
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
    /// (candidate, loss change, quadratic term) from the checkpoint being resumed.
    pub done: Vec<(usize, f64, f64)>,
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
    let mut out = Vec::new();
    for (cell, ct) in spec.cells.iter().enumerate() {
        let none = ct.none_index();
        for edge in 0..ct.edges.len() {
            for op in 0..ct.ops.len() {
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
    if cfg.select.bn == crate::config::BnStats::Running {
        BnMode::Eval
    } else {
        BnMode::BatchStats
    }
}

impl<'a> Context<'a> {
    /// A context on the search split's halves (validation: α's; train: θ's), no projection.
    pub fn new(s: Subject<'a>, timings: &'a Timings) -> Self {
        let Subject { cfg, comm, net, alphas, data, split } = s;
        Context { cfg, net, alphas, comm, data, val: &split.arch, train: &split.weights, timings, projection: None }
    }
}

impl Context<'_> {
    fn eval_set(&self, stream: Stream, draw: usize) -> Result<EvalSet> {
        EvalSet::draw(self.cfg.seed, stream, draw, self.val, self.cfg.select.n, self.cfg.select_batch())
    }

    /// With `select.hess_data = "train"`, the N batches of the θ half that H (the Fisher) and B
    /// are taken from (paper.md §10 A4); `None`: the validation batches, as the reference code.
    fn hess_set(&self) -> Result<Option<EvalSet>> {
        if self.cfg.select.hess_data != crate::config::HessData::Train {
            return Ok(None);
        }
        EvalSet::draw(self.cfg.seed, Stream::EvalBatches, 0, self.train, self.cfg.select.n, self.cfg.select_batch())
            .map(Some)
    }

    fn probe(&self, eval: &EvalSet, leaf: Leaf) -> Result<Probe<'_>> {
        let mut p =
            Probe::new(self.net, self.alphas, self.comm, self.data, eval, leaf, bn_mode(self.cfg), self.timings)?
                .with_micro_batch(self.cfg.select.micro_batch);
        p.forward_mode = self.cfg.select.products == crate::config::Products::ReverseOverForward;
        p.recompute = self.cfg.select.recompute == crate::config::Recompute::Cells;
        if p.recompute && self.net.segments() == 0 && self.comm.is_coordinator() {
            tracing::warn!(
                "select.recompute = \"cells\": the {} supernet has no segments to recompute; its second \
                 derivatives keep the whole graph",
                self.cfg.space.name
            );
        }
        if let Some(proj) = self.projection {
            p.project(proj);
        }
        Ok(p)
    }

    fn empty_table(&self, fill: f64) -> Vec<Vec<Vec<f64>>> {
        let spec = self.net.spec();
        spec.cells.iter().map(|c| vec![vec![fill; c.ops.len()]; c.edges.len()]).collect()
    }

    /// Scores of the configured criterion.
    pub fn run(&self) -> Result<Outcome> {
        self.run_resumable(&Resumable::default())
    }

    /// Scores of the configured criterion, with the candidate loop checkpointed as `res` says.
    pub fn run_resumable(&self, res: &Resumable) -> Result<Outcome> {
        match self.cfg.select.criterion {
            crate::config::Criterion::Magnitude => Ok(Outcome {
                // softmax(α) (PC-DARTS: β̃·softmax(α)): DARTS ranks edges across rows by it.
                table: ScoreTable::plain(
                    "magnitude",
                    {
                        let a: Vec<Tensor> =
                            self.alphas.iter().map(|a| a.detach().to_kind(tch::Kind::Double)).collect();
                        let mut w = self.projection.cloned().unwrap_or_default().apply(self.net.spec().mixing(&a));
                        w.truncate(self.net.spec().cells.len());
                        w
                    }
                    .iter()
                    .map(table_of)
                    .collect(),
                ),
                diagnostics: json!({}),
            }),
            crate::config::Criterion::Drop => self.removal_scores(false, res),
            crate::config::Criterion::DartsIf => self.removal_scores(true, res),
            crate::config::Criterion::DartsIm if self.cfg.select.faithful => self.darts_im_faithful(),
            crate::config::Criterion::DartsIm => self.darts_im(),
            crate::config::Criterion::DartsPt => Err(Error::config(
                "select",
                "select.criterion",
                "darts-pt trains the supernet: it runs as a progressive selection, not as scores",
            )),
        }
    }

    /// `drop` and `darts-if`: candidates split over ranks (the i-th remaining candidate on rank
    /// i mod W), each scanned over all N batches; the quadratic terms are taken in rounds of one
    /// vector per rank. Each candidate's terms are computed by one rank alone, so they do not
    /// depend on which rank or round computes them: a resumed loop scores the remaining ones.
    fn removal_scores(&self, influence: bool, res: &Resumable) -> Result<Outcome> {
        let eval = self.eval_set(Stream::EvalBatches, 0)?;
        let mut probe = self.probe(&eval, Leaf::Mixing)?;
        // Each candidate is scanned over all N batches by one rank.
        probe.load_all(self.data)?;
        // The Fisher (or Hessian) of the quadratic term: on the validation batches, or on the
        // training half's with hess_data = "train".
        let hess_eval = if influence { self.hess_set()? } else { None };
        let hprobe = hess_eval.as_ref().map(|e| self.probe(e, Leaf::Mixing)).transpose()?;
        let hp = hprobe.as_ref().unwrap_or(&probe);
        let solver = if influence { Some(Solver::build(&self.cfg.select, hp, None)?) } else { None };
        let cands = candidates(self.net);
        let (rank, world) = (self.comm.rank(), self.comm.size());
        let w0 = probe.base_weights();
        // g₀ for `if_center_grad` (ĝ_c − g₀ in the quadratic term).
        let (l0, g0) = if influence && self.cfg.select.if_center_grad {
            let (l, g) = probe.grad_theta_local(&w0);
            (l, Some(g))
        } else {
            (probe.loss_local(&w0), None)
        };
        let done: std::collections::BTreeSet<usize> = res.done.iter().map(|r| r.0).collect();
        let todo: Vec<usize> = (0..cands.len()).filter(|i| !done.contains(i)).collect();
        let mut mine: Vec<(usize, f64, f64)> = Vec::new();
        let rounds = todo.len().div_ceil(world);
        let name = if influence { "darts-if" } else { "drop" };
        let mut progress = crate::progress::Progress::new(
            format!("{name}: candidates ({} of {} left, {world} per round)", todo.len(), cands.len()),
            "rounds",
            rounds as u64,
            self.comm.is_coordinator(),
            true,
        );
        for round in 0..rounds {
            let f = &self.cfg.fault;
            let poison = f.phase == crate::config::FaultPhase::Select
                && f.at_step == round
                && f.rank == rank
                && crate::control::inject(f.action, res.stop);
            let i = todo.get(round * world + rank).copied();
            let w = i.map(|i| remove_op(&w0, cands[i]));
            let (lc, g) = match (&w, influence) {
                (Some(w), true) => {
                    let (l, g) = probe.grad_theta_local(w);
                    (
                        Some(l),
                        Some(match &g0 {
                            Some(g0) => g - g0,
                            None => g,
                        }),
                    )
                }
                (Some(w), false) => (Some(probe.loss_local(w)), None),
                (None, _) => (None, None),
            };
            let q = match &solver {
                Some(s) => s.quad_own(hp, g.as_ref())?,
                None => None,
            };
            let mut bad = None;
            if let (Some(i), Some(lc)) = (i, lc) {
                let lc = if poison { f64::NAN } else { lc };
                if !(lc.is_finite() && q.unwrap_or(0.0).is_finite()) {
                    bad = Some(i);
                }
                mine.push((i, lc - l0, q.unwrap_or(0.0)));
            }
            // Round boundary, on every rank together: a non-finite term stops the selection
            // before it can reach a checkpoint; a signal stops it after one.
            let local_stop = res.stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
            // [stop, then one slot per rank holding its failed candidate + 1]: a sum gathers
            // them, so that every rank names the same candidate (the lowest rank's) even when
            // several ranks fail in one round.
            let mut flags = vec![0.0; 1 + world];
            flags[0] = local_stop as u8 as f64;
            flags[1 + rank] = bad.map_or(0.0, |i| (i + 1) as f64);
            if world > 1 {
                Timings::add(&self.timings.comm, || self.comm.all_reduce_sum_f64(&mut flags))?;
            }
            if let Some(&first) = flags[1..].iter().find(|&&f| f > 0.0) {
                let c = cands[first as usize - 1];
                let spec = self.net.spec();
                return Err(Error::NonFinite {
                    quantity: format!("{} term (loss after removal or ĝᵀH⁻¹ĝ)", self.cfg.select.criterion),
                    at: format!(
                        "selection round {round}: cell {}, edge {}, op {}",
                        spec.cells[c.cell].name, spec.cells[c.cell].edges[c.edge], spec.cells[c.cell].ops[c.op]
                    ),
                });
            }
            progress.inc(1);
            let stop = flags[0] > 0.0;
            let due = res.every > 0 && (round + 1) % res.every == 0 && round + 1 < rounds;
            if stop || (due && res.dir.is_some()) {
                let written = match &res.dir {
                    Some(dir) => {
                        let all = self.gather_records(&mine, &res.done)?;
                        self.save_progress(dir, res.keep, all)?
                    }
                    None => "none (checkpoints are off)".into(),
                };
                if stop {
                    return Err(Error::Stopped { at: format!("selection round {}", round + 1), checkpoint: written });
                }
            }
        }
        progress.finish();
        let records = self.gather_records(&mine, &res.done)?;
        let table = if self.comm.is_coordinator() {
            let mut scores = self.empty_table(f64::NEG_INFINITY);
            let mut terms: Vec<Vec<Vec<Vec<f64>>>> = scores
                .iter()
                .map(|c| c.iter().map(|e| vec![vec![f64::NAN; if influence { 2 } else { 1 }]; e.len()]).collect())
                .collect();
            for &(i, drop, q) in &records {
                let c = cands[i];
                scores[c.cell][c.edge][c.op] = if influence { drop - 0.5 * q } else { drop };
                terms[c.cell][c.edge][c.op] = if influence { vec![drop, q] } else { vec![drop] };
            }
            let name = if influence { "darts-if" } else { "drop" };
            let term_names =
                if influence { vec!["loss_change".into(), "quad".into()] } else { vec!["loss_change".into()] };
            Some(ScoreTable { criterion: name.into(), scores, term_names, terms })
        } else {
            None
        };
        let table = broadcast_value(self.comm, 0, table.as_ref())?;
        let curvature = solver.as_ref().map_or(serde_json::Value::Null, |s| s.curvature_info());
        let damping = solver.as_ref().map(|s| s.damping);
        Ok(Outcome {
            table,
            diagnostics: json!({"baseline_loss": l0, "candidates": cands.len(), "damping": damping, "curvature": curvature}),
        })
    }

    /// Every rank's records plus `done`, on the coordinator (empty elsewhere), sorted.
    fn gather_records(&self, mine: &[(usize, f64, f64)], done: &[(usize, f64, f64)]) -> Result<Vec<(usize, f64, f64)>> {
        let bytes = postcard::to_stdvec(mine).map_err(|e| Error::Comm(e.to_string()))?;
        let all = Timings::add(&self.timings.comm, || self.comm.gather_bytes(0, &bytes))?;
        let mut out = done.to_vec();
        for b in &all {
            let recs: Vec<(usize, f64, f64)> = postcard::from_bytes(b).map_err(|e| Error::Comm(e.to_string()))?;
            out.extend(recs);
        }
        out.sort_by_key(|r| r.0);
        Ok(out)
    }

    /// The coordinator writes a selection progress checkpoint; all ranks learn the outcome.
    fn save_progress(&self, dir: &std::path::Path, keep: usize, records: Vec<(usize, f64, f64)>) -> Result<String> {
        let saved = crate::checkpoint::commit_on_coordinator(self.comm, || {
            let meta = super::saved::SelectMeta {
                kind: "select".into(),
                criterion: self.cfg.select.criterion.to_string(),
                records,
                world_size: self.comm.size(),
                config: self.cfg.to_toml(),
            };
            super::saved::save_select(dir, &meta, keep)
        })?;
        Ok(saved.display().to_string())
    }

    fn im_sign(&self) -> f64 {
        if self.cfg.select.im_sign == crate::config::ImSign::Negated {
            1.0
        } else {
            -1.0
        }
    }

    /// Matrix-free DARTS-IM on the mixing weights: u = B1 (with the Fisher samples from the
    /// same double-backward pass), z = IHVP(u), I_M = ∓Bᵀz — the one-setting case of
    /// [`Context::darts_im_many`]. Per-sample or sampled-label Fisher samples need their own passes.
    fn darts_im(&self) -> Result<Outcome> {
        let own_pass = self.cfg.select.fisher_samples == crate::config::FisherSamples::Sample
            || self.cfg.select.fisher_labels == crate::config::FisherLabels::Sampled;
        if !(needs_fisher(&self.cfg.select) && own_pass) {
            return Ok(self.darts_im_many(std::slice::from_ref(&self.cfg.select))?.remove(0));
        }
        // B and H from the same N batches: validation, or the θ half's (hess_data = "train").
        let eval = match self.hess_set()? {
            Some(e) => e,
            None => self.eval_set(Stream::EvalBatches, 0)?,
        };
        let probe = self.probe(&eval, Leaf::Mixing)?;
        let u = probe.mixed(&flatten(&probe.leaf).ones_like())?;
        let solver = Solver::build(&self.cfg.select, &probe, None)?;
        let (z, info) = solver.solve(&probe, &u)?;
        let im = probe.mixed_t(&z)? * self.im_sign();
        let table = self.leaf_table("darts-im", &probe, &im);
        Ok(Outcome {
            table,
            diagnostics: json!({"norm_B1_mixing": norm(&u), "norm_ihvp": norm(&z), "solve": info, "curvature": solver.curvature_info()}),
        })
    }

    /// DARTS-IM for several solver settings at once (an ablation over N, the IHVP method, γ, K,
    /// η, …): `settings` differ from `self.cfg.select` only in solver fields. The expensive parts
    /// are computed once: the evaluation set is drawn for the largest N (draws are
    /// prefix-consistent, so its first n batches are a run's with N = n); one double-backward
    /// pass gives every batch's B_j·1 and Fisher sample, summed into u_n for each N; the samples
    /// are exchanged once and their Gram formed once, each Woodbury solver taking its leading
    /// N×N block; and one first-derivative graph per batch serves all the Bᵀz products. Each
    /// result equals a separate run with that setting up to floating-point rounding.
    pub fn darts_im_many(&self, settings: &[crate::config::SelectConfig]) -> Result<Vec<Outcome>> {
        let n_max = settings.iter().map(|s| s.n).max().unwrap_or(0);
        let pool = if self.cfg.select.hess_data == crate::config::HessData::Train { self.train } else { self.val };
        let eval = EvalSet::draw(self.cfg.seed, Stream::EvalBatches, 0, pool, n_max, self.cfg.select_batch())?;
        let probe = self.probe(&eval, Leaf::Mixing)?;
        let mut ns: Vec<usize> = settings.iter().map(|s| s.n).collect();
        ns.sort_unstable();
        ns.dedup();
        let fisher = settings.iter().any(needs_fisher);
        let (samples, us) = probe.batch_grads_and_mixed_ones_prefixes(&ns, fisher)?;
        let woodbury = settings.iter().any(|s| s.ihvp == crate::config::Ihvp::Woodbury);
        let shared = if fisher {
            Some(super::ihvp::SharedFisher::new(&self.cfg.select, &probe, samples, woodbury)?)
        } else {
            None
        };
        let mut zs = Vec::new();
        let mut infos = Vec::new();
        for s in settings {
            let p = probe.prefix(s.n);
            let solver = match &shared {
                Some(sh) if needs_fisher(s) => Solver::build_prefix(s, &p, sh)?,
                _ => Solver::build(s, &p, None)?,
            };
            let u = &us[ns.binary_search(&s.n).expect("listed")];
            let (z, info) = solver.solve(&p, u)?;
            infos.push((norm(u), norm(&z), info, solver.curvature_info()));
            zs.push((s.n, z));
        }
        let bt = probe.mixed_t_prefixes(&zs)?;
        Ok(settings
            .iter()
            .zip(bt)
            .zip(infos)
            .map(|((s, b), (nu, nz, info, curvature))| {
                let sign = if s.im_sign == crate::config::ImSign::Negated { 1.0 } else { -1.0 };
                Outcome {
                    table: self.leaf_table("darts-im", &probe, &(b * sign)),
                    diagnostics: json!({"norm_B1_mixing": nu, "norm_ihvp": nz, "solve": info, "shared": settings.len() > 1, "curvature": curvature}),
                }
            })
            .collect())
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
        let (im, norm_b1_raw, info) = match sel.ihvp {
            crate::config::Ihvp::Neumann | crate::config::Ihvp::Identity => {
                // Per-batch chains on the fixed batches, averaged (data-parallel over batches).
                let probe = self.probe(&eval, Leaf::Raw)?;
                let mut s_sum = ones.zeros_like();
                let mut u_sum = Tensor::zeros([probe.n_params() as i64], (probe.kind(), probe.device()));
                for j in probe.own_batches().collect::<Vec<_>>() {
                    let u = fd_b1(&probe, j, &probe, j);
                    u_sum += &u;
                    // The authors' Neumann returns Σ_{k≤K} (I − γH_j)^k u (V_0 = u, no γ factor).
                    let z = if sel.ihvp == crate::config::Ihvp::Neumann {
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
            crate::config::Ihvp::ShermanMorrison | crate::config::Ihvp::Woodbury => {
                // Fresh draws: + pass, − pass, Fisher, Bᵀ + pass, Bᵀ − pass.
                let sets: Vec<EvalSet> =
                    (1..=5).map(|d| self.eval_set(Stream::FaithfulDraw, d)).collect::<Result<_>>()?;
                let probes: Vec<Probe> = sets.iter().map(|e| self.probe(e, Leaf::Raw)).collect::<Result<_>>()?;
                let own: Vec<usize> = probes[0].own_batches().collect();
                let mut u = Tensor::zeros([probes[0].n_params() as i64], (probes[0].kind(), probes[0].device()));
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
