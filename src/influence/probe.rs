//! Exact autograd primitives at fixed (θ, w), averaged over a fixed set of evaluation batches.
//!
//! `w` is the leaf of every architecture derivative: the post-softmax mixing weights by default
//! (raw α for the authors' computation). Every primitive is a mean over the N evaluation
//! batches: each rank computes its batches (batch j belongs to rank j mod W), the sums are
//! all-reduced, and the result is divided by N — so it is the same for any number of ranks up to
//! rounding. Mixed and Hessian products are exact: by reverse over forward where the supernet
//! has a tangent forward, else by double backward (`probe/tangent.rs`):
//!
//! | primitive | value |
//! |---|---|
//! | [`Probe::loss`] | L |
//! | [`Probe::grad_theta`] | ∇θ L |
//! | [`Probe::grad_leaf`] | ∇w L |
//! | [`Probe::hvp`] | H u = ∇θ(∇θL · u) |
//! | [`Probe::mixed`] | B v = ∇θ(∇wL · v) |
//! | [`Probe::mixed_t`] | Bᵀ u = ∇w(∇θL · u) |

use std::cell::Cell;
use std::time::Instant;

use tch::{Kind, Tensor};

use super::flat::{defined_or_zeros, flatten, split_like};
use crate::comm::Collective;
use crate::config::FisherLabels;
use crate::data::{epoch_order, make_batch, Dataset, Stream};
use crate::error::{Error, Result};
use crate::loss::{cross_entropy, fisher_targets};
use crate::supernet::{BnMode, Supernet};

mod curvature;
mod recompute;
mod tangent;

use tangent::Wrt;

/// Wall-clock time spent per kind of work.
#[derive(Debug, Default)]
pub struct Timings {
    /// Forward passes, backward and double-backward passes.
    pub autograd: Cell<f64>,
    /// IHVP linear algebra: Gram matrices, factorisations, solves.
    pub linalg: Cell<f64>,
    /// Time inside collectives.
    pub comm: Cell<f64>,
}

impl Timings {
    pub fn add<T>(cell: &Cell<f64>, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        cell.set(cell.get() + t.elapsed().as_secs_f64());
        out
    }
}

/// The N fixed evaluation batches: global lists of dataset indices, drawn once from a seed.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub batches: Vec<Vec<usize>>,
}

impl EvalSet {
    /// N disjoint batches of `m` indices from `pool` (the α/validation half), seeded.
    pub fn draw(seed: u64, stream: Stream, draw: usize, pool: &[usize], n: usize, m: usize) -> Result<Self> {
        if n * m > pool.len() {
            return Err(Error::config(
                "select",
                "select.n",
                format!(
                    "{n} batches of {m} need {} images but the pool they are drawn from has {}: the largest N \
                     that fits is {} (or lower select.batch_size, the images per batch)",
                    n * m,
                    pool.len(),
                    pool.len() / m.max(1)
                ),
            ));
        }
        let order = epoch_order(seed, stream, draw, pool);
        Ok(EvalSet { batches: (0..n).map(|j| order[j * m..(j + 1) * m].to_vec()).collect() })
    }

    /// The batches as (images in `kind`, labels) tensors.
    pub fn materialize(&self, data: &dyn Dataset, kind: Kind, d: tch::Device) -> Result<Vec<(Tensor, Tensor)>> {
        self.batches.iter().map(|idx| load_batch(data, idx, kind, d)).collect()
    }
}

/// An evaluation batch, without augmentation.
fn load_batch(data: &dyn Dataset, idx: &[usize], kind: Kind, d: tch::Device) -> Result<(Tensor, Tensor)> {
    let (x, y) = make_batch(data, idx, None, d)?;
    Ok((x.to_kind(kind), y))
}

/// Per-batch gradient samples `(j, g_j)` of this rank.
pub type Samples = Vec<(usize, Tensor)>;

/// How the architecture leaf maps to mixing weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// w = softmax(α), the recommended leaf (paper.md §10 A1).
    Mixing,
    /// Raw logits α (softmax inside the forward), as the authors' code does.
    Raw,
}

/// Autograd primitives of one supernet state on one evaluation set.
pub struct Probe<'a> {
    pub net: &'a dyn Supernet,
    pub comm: &'a dyn Collective,
    /// θ (the supernet's parameter tensors).
    pub params: Vec<Tensor>,
    /// The architecture leaf per table (requires grad; detached from α).
    pub leaf: Vec<Tensor>,
    pub leaf_kind: Leaf,
    /// The rest of the forward's inputs, held fixed: PC-DARTS's β̃ (mixing leaf) or raw β
    /// (raw leaf).
    context: Vec<Tensor>,
    /// The N batches' index lists, and their tensors (inputs in the model's kind) where
    /// materialised: this rank's own batches always, all of them after [`Probe::load_all`].
    eval: EvalSet,
    batches: Vec<Option<(Tensor, Tensor)>>,
    pub bn: BnMode,
    /// Images per autograd graph (`select.micro_batch`; 0 = the whole batch): each batch's
    /// derivatives are summed over micro-batches of this size, each carrying its share m_k/m
    /// of the batch's mean loss. Exact only where BatchNorm does not couple the images
    /// (running statistics); the config refuses it with batch statistics.
    pub micro: usize,
    /// Second derivatives by reverse over forward where the supernet has a tangent forward
    /// (true unless turned off, e.g. to compare with double backward).
    pub forward_mode: bool,
    /// Reverse over forward recomputing one segment (stem, cell, head) at a time
    /// (`select.recompute = "cells"`): one segment's graph in memory, one tangent forward more.
    pub recompute: bool,
    pub timings: &'a Timings,
}

impl<'a> Probe<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        net: &'a dyn Supernet,
        alphas: &[Tensor],
        comm: &'a dyn Collective,
        data: &dyn Dataset,
        eval: &EvalSet,
        leaf_kind: Leaf,
        bn: BnMode,
        timings: &'a Timings,
    ) -> Result<Self> {
        let kind = net.params().tensors[0].kind();
        let base: Vec<Tensor> = alphas.iter().map(|a| a.detach().to_kind(kind)).collect();
        let mut leaf = match leaf_kind {
            Leaf::Mixing => net.spec().mixing(&base),
            Leaf::Raw => base,
        };
        let context: Vec<Tensor> = leaf.split_off(net.spec().cells.len()).iter().map(|t| t.detach()).collect();
        let leaf = leaf.into_iter().map(|t| t.detach().set_requires_grad(true)).collect();
        let (rank, world) = (comm.rank(), comm.size());
        // Data-parallel primitives read only this rank's batches: decode just those.
        let batches = eval
            .batches
            .iter()
            .enumerate()
            .map(|(j, idx)| (j % world == rank).then(|| load_batch(data, idx, kind, comm.device())).transpose())
            .collect::<Result<_>>()
            .map_err(|e| crate::comm::fail_alone(comm, e))?;
        Ok(Probe {
            net,
            comm,
            params: net.params().tensors.iter().map(|t| t.shallow_clone()).collect(),
            leaf,
            leaf_kind,
            context,
            eval: eval.clone(),
            batches,
            bn,
            micro: 0,
            forward_mode: true,
            recompute: false,
            timings,
        })
    }

    /// Compute every derivative in micro-batches of `m` images (0 = whole batches): peak memory
    /// follows the micro-batch, not the batch. The caller checks that BatchNorm uses running
    /// statistics, where the split is exact.
    pub fn with_micro_batch(mut self, m: usize) -> Self {
        self.micro = m;
        self
    }

    /// Move a mixing-weight leaf to the projected weights (fixed rows substituted). The raw-logit
    /// leaf of the faithful mode has no projected form and is left as it is.
    pub fn project(&mut self, proj: &crate::supernet::Projection) {
        if self.leaf_kind == Leaf::Mixing {
            self.leaf = proj
                .apply(self.leaf.iter().map(|t| t.detach()).collect())
                .into_iter()
                .map(|t| t.detach().set_requires_grad(true))
                .collect();
        }
    }

    /// Materialise every batch on this rank, for work split by candidates rather than by data
    /// (the `*_local` primitives).
    pub fn load_all(&mut self, data: &dyn Dataset) -> Result<()> {
        let kind = self.kind();
        for (b, idx) in self.batches.iter_mut().zip(&self.eval.batches) {
            if b.is_none() {
                *b = Some(load_batch(data, idx, kind, self.comm.device())?);
            }
        }
        Ok(())
    }

    /// Images per evaluation batch.
    pub fn batch_size(&self) -> usize {
        self.eval.batches.first().map_or(0, |b| b.len())
    }

    /// Number of evaluation batches N.
    pub fn n_batches(&self) -> usize {
        self.batches.len()
    }

    /// Number of weights P.
    pub fn n_params(&self) -> usize {
        self.params.iter().map(|t| t.numel()).sum()
    }

    pub fn kind(&self) -> Kind {
        self.params[0].kind()
    }

    /// The device of θ, where every quantity of the probe lives.
    pub fn device(&self) -> tch::Device {
        self.params[0].device()
    }

    /// Batches this rank computes in shared (data-parallel) primitives: j ≡ rank (mod W).
    pub fn own_batches(&self) -> impl Iterator<Item = usize> + '_ {
        (self.comm.rank()..self.batches.len()).step_by(self.comm.size())
    }

    /// Mixing weights for a leaf value.
    pub fn weights_of(&self, leaf: &[Tensor]) -> Vec<Tensor> {
        let all: Vec<Tensor> = leaf.iter().chain(&self.context).map(|t| t.shallow_clone()).collect();
        match self.leaf_kind {
            Leaf::Mixing => all,
            Leaf::Raw => self.net.spec().mixing(&all),
        }
    }

    /// The mixing weights at the probe's leaf, detached (for building modified weights).
    pub fn base_weights(&self) -> Vec<Tensor> {
        self.weights_of(&self.leaf).iter().map(|t| t.detach()).collect()
    }

    fn batch_loss(&self, j: usize, w: &[Tensor]) -> Tensor {
        let (x, y) = self.batch(j);
        cross_entropy(&self.net.forward(x, w, self.bn), y)
    }

    /// Batch j as the micro-batches its derivatives are computed on ([`Probe::micro`]); one
    /// piece, the batch itself, when it is not split.
    fn pieces(&self, j: usize) -> Vec<Piece> {
        let (x, y) = self.batch(j);
        let m = x.size()[0];
        let step = if self.micro == 0 { m } else { self.micro as i64 };
        if step >= m {
            return vec![Piece { x: x.shallow_clone(), y: y.shallow_clone(), share: None, batch: m }];
        }
        (0..m)
            .step_by(step as usize)
            .map(|s| {
                let len = step.min(m - s);
                Piece { x: x.narrow(0, s, len), y: y.narrow(0, s, len), share: Some(len as f64 / m as f64), batch: m }
            })
            .collect()
    }

    /// The piece's part of its batch's mean loss.
    fn piece_loss(&self, p: &Piece, w: &[Tensor]) -> Tensor {
        p.loss_of(&self.net.forward(&p.x, w, self.bn))
    }

    /// Sum over ranks, divided by N.
    fn mean_over_batches(&self, t: Tensor) -> Result<Tensor> {
        let t = t.contiguous();
        Timings::add(&self.timings.comm, || self.comm.all_reduce_sum_tensors(std::slice::from_ref(&t)))?;
        Ok(t / self.n_batches() as f64)
    }

    fn mean_scalar(&self, x: f64) -> Result<f64> {
        let mut v = [x];
        Timings::add(&self.timings.comm, || self.comm.all_reduce_sum_f64(&mut v))?;
        Ok(v[0] / self.n_batches() as f64)
    }

    /// L at mixing weights `w` (None: the probe's leaf), mean over the N batches.
    pub fn loss(&self, w: Option<&[Tensor]>) -> Result<f64> {
        let base = self.base_weights();
        let w = w.unwrap_or(&base);
        let local = Timings::add(&self.timings.autograd, || {
            let _g = tch::no_grad_guard();
            self.own_batches().map(|j| self.batch_loss(j, w).double_value(&[])).sum::<f64>()
        });
        self.mean_scalar(local)
    }

    /// (L, ∇θ L) at mixing weights `w` (None: the leaf), data-parallel.
    pub fn grad_theta(&self, w: Option<&[Tensor]>) -> Result<(f64, Tensor)> {
        let base = self.base_weights();
        let w = w.unwrap_or(&base);
        let (loss, g) = Timings::add(&self.timings.autograd, || {
            let mut loss = 0.0;
            let mut acc = Tensor::zeros([self.n_params() as i64], (self.kind(), self.device()));
            for j in self.own_batches() {
                for p in self.pieces(j) {
                    let l = self.piece_loss(&p, w);
                    loss += l.double_value(&[]);
                    let g = defined_or_zeros(Tensor::run_backward(&[&l], &self.params, false, false), &self.params);
                    acc += flatten(&g);
                }
            }
            (loss, acc)
        });
        Ok((self.mean_scalar(loss)?, self.mean_over_batches(g)?))
    }

    /// (L, ∇θ L) over all N batches on this rank alone, in batch order (no communication):
    /// for work split by candidates rather than by data (after [`Probe::load_all`]).
    pub fn grad_theta_local(&self, w: &[Tensor]) -> (f64, Tensor) {
        Timings::add(&self.timings.autograd, || {
            let mut loss = 0.0;
            let mut acc = Tensor::zeros([self.n_params() as i64], (self.kind(), self.device()));
            for j in 0..self.n_batches() {
                for p in self.pieces(j) {
                    let l = self.piece_loss(&p, w);
                    loss += l.double_value(&[]);
                    let g = defined_or_zeros(Tensor::run_backward(&[&l], &self.params, false, false), &self.params);
                    acc += flatten(&g);
                }
            }
            let n = self.n_batches() as f64;
            (loss / n, acc / n)
        })
    }

    /// L over all N batches on this rank alone (no communication).
    pub fn loss_local(&self, w: &[Tensor]) -> f64 {
        Timings::add(&self.timings.autograd, || {
            let _g = tch::no_grad_guard();
            (0..self.n_batches()).map(|j| self.batch_loss(j, w).double_value(&[])).sum::<f64>()
                / self.n_batches() as f64
        })
    }

    /// ∇w L at the leaf.
    pub fn grad_leaf(&self) -> Result<Tensor> {
        let g = Timings::add(&self.timings.autograd, || {
            let mut acc = flatten(&self.leaf).zeros_like();
            for j in self.own_batches() {
                for p in self.pieces(j) {
                    let l = self.piece_loss(&p, &self.weights_of(&self.leaf));
                    acc +=
                        flatten(&defined_or_zeros(Tensor::run_backward(&[&l], &self.leaf, false, false), &self.leaf));
                }
            }
            acc
        });
        self.mean_over_batches(g)
    }

    /// H u, mean over the N batches (u is flat over θ).
    pub fn hvp(&self, u: &Tensor) -> Result<Tensor> {
        let us = split_like(u, &self.params);
        let h = Timings::add(&self.timings.autograd, || {
            let mut acc = u.zeros_like();
            for j in self.own_batches() {
                for p in self.pieces(j) {
                    acc += self.piece_product(&p, None, Some(&us), Wrt::Theta);
                }
            }
            acc
        });
        self.mean_over_batches(h)
    }

    /// The logits of batch j at the probe's leaf, with the graph to θ (for Jacobian products).
    pub fn logits(&self, j: usize) -> Tensor {
        self.logits_of(self.batch(j).0)
    }

    /// The logits of images x at the probe's leaf.
    fn logits_of(&self, x: &Tensor) -> Tensor {
        self.net.forward(x, &self.weights_of(&self.leaf), self.bn)
    }

    /// H_j u on batch j alone (no communication): the authors' per-batch Neumann chains.
    pub fn hvp_on(&self, j: usize, u: &Tensor) -> Tensor {
        let us = split_like(u, &self.params);
        Timings::add(&self.timings.autograd, || {
            let mut acc = u.zeros_like();
            for p in self.pieces(j) {
                acc += self.piece_product(&p, None, Some(&us), Wrt::Theta);
            }
            acc
        })
    }

    /// B v = ∇θ(∇w L · v), mean over the N batches (v is flat over the leaf).
    pub fn mixed(&self, v: &Tensor) -> Result<Tensor> {
        let vs = split_like(v, &self.leaf);
        let out = Timings::add(&self.timings.autograd, || {
            let mut acc = Tensor::zeros([self.n_params() as i64], (self.kind(), self.device()));
            for j in self.own_batches() {
                for p in self.pieces(j) {
                    acc += self.piece_product(&p, Some(&vs), None, Wrt::Theta);
                }
            }
            acc
        });
        self.mean_over_batches(out)
    }

    /// Bᵀ u = ∇w(∇θ L · u), mean over the N batches (u is flat over θ).
    pub fn mixed_t(&self, u: &Tensor) -> Result<Tensor> {
        let us = split_like(u, &self.params);
        let out = Timings::add(&self.timings.autograd, || {
            let mut acc = flatten(&self.leaf).zeros_like();
            for j in self.own_batches() {
                for p in self.pieces(j) {
                    acc += self.piece_product(&p, None, Some(&us), Wrt::Leaf);
                }
            }
            acc
        });
        self.mean_over_batches(out)
    }

    /// The same probe on its first `n` batches (tensors shared): what a selection with N = n
    /// sees, since evaluation sets are prefix-consistent ([`EvalSet::draw`]).
    pub fn prefix(&self, n: usize) -> Probe<'a> {
        let n = n.min(self.batches.len());
        Probe {
            net: self.net,
            comm: self.comm,
            params: self.params.iter().map(|t| t.shallow_clone()).collect(),
            leaf: self.leaf.iter().map(|t| t.shallow_clone()).collect(),
            leaf_kind: self.leaf_kind,
            context: self.context.iter().map(|t| t.shallow_clone()).collect(),
            eval: EvalSet { batches: self.eval.batches[..n].to_vec() },
            batches: self.batches[..n]
                .iter()
                .map(|b| b.as_ref().map(|(x, y)| (x.shallow_clone(), y.shallow_clone())))
                .collect(),
            bn: self.bn,
            micro: self.micro,
            forward_mode: self.forward_mode,
            recompute: self.recompute,
            timings: self.timings,
        }
    }

    /// Progress over this rank's batches, reported by the coordinator (its own share).
    fn progress(&self, what: &str) -> crate::progress::Progress {
        let mine = self.own_batches().count() as u64;
        let what = if self.comm.size() > 1 { format!("{what}, rank 0's batches") } else { what.to_string() };
        crate::progress::Progress::new(what, "batches", mine, self.comm.is_coordinator(), true)
    }

    /// DARTS-IM's first pass for one or several N: one double backward per batch gives the
    /// Fisher sample g_j (at no extra cost) and B_j·1; returns this rank's samples and, for each n in
    /// `ns`, u_n = (1/n) Σ_{j<n} B_j·1 — each summed in the order a run with N = n sums it.
    /// `keep_grads`: whether the samples are wanted (a Fisher solver); without, none are kept.
    pub fn batch_grads_and_mixed_ones_prefixes(
        &self,
        ns: &[usize],
        keep_grads: bool,
    ) -> Result<(Samples, Vec<Tensor>)> {
        let ones: Vec<Tensor> = self.leaf.iter().map(|t| t.ones_like()).collect();
        let zeros = || Tensor::zeros([self.n_params() as i64], (self.kind(), self.device()));
        let (grads, sums) = Timings::add(&self.timings.autograd, || {
            let mut grads = Vec::new();
            let mut sums: Vec<Tensor> = ns.iter().map(|_| zeros()).collect();
            let mut progress = self.progress("darts-im pass 1 of 2 (B·1 and Fisher samples, double backward)");
            for j in self.own_batches() {
                let mut gj: Option<Tensor> = None;
                let mut uj: Option<Tensor> = None;
                for p in self.pieces(j) {
                    let (g, u) = self.piece_grad_and_mixed(&p, &ones, keep_grads);
                    if let Some(g) = g {
                        gj = Some(match gj {
                            Some(acc) => acc + g,
                            None => g,
                        });
                    }
                    uj = Some(match uj {
                        Some(acc) => acc + u,
                        None => u,
                    });
                }
                if let Some(g) = gj {
                    grads.push((j, g));
                }
                let uj = uj.expect("a batch has at least one piece");
                for (s, &n) in sums.iter_mut().zip(ns) {
                    if j < n {
                        *s += &uj;
                    }
                }
                progress.inc(1);
            }
            progress.finish();
            (grads, sums)
        });
        Timings::add(&self.timings.comm, || self.comm.all_reduce_sum_tensors(&sums))?;
        Ok((grads, sums.iter().zip(ns).map(|(s, &n)| s / n as f64).collect()))
    }

    /// Bᵀz_c = ∇w(∇θL · z_c) averaged over the first n_c batches, for every `(n_c, z_c)`: one
    /// first-derivative graph per batch serves every vector whose N covers that batch.
    pub fn mixed_t_prefixes(&self, zs: &[(usize, Tensor)]) -> Result<Vec<Tensor>> {
        let split: Vec<Vec<Tensor>> = zs.iter().map(|(_, z)| split_like(z, &self.params)).collect();
        let sums = Timings::add(&self.timings.autograd, || {
            let mut sums: Vec<Tensor> = zs.iter().map(|_| flatten(&self.leaf).zeros_like()).collect();
            let mut progress = self.progress("darts-im pass 2 of 2 (Bᵀz, double backward)");
            for j in self.own_batches() {
                let users: Vec<usize> = (0..zs.len()).filter(|&c| j < zs[c].0).collect();
                progress.inc(1);
                if users.is_empty() {
                    continue;
                }
                let dirs: Vec<&[Tensor]> = users.iter().map(|&c| split[c].as_slice()).collect();
                for p in self.pieces(j) {
                    for (bt_z, &c) in self.piece_mixed_t_many(&p, &dirs).into_iter().zip(&users) {
                        sums[c] += bt_z;
                    }
                }
            }
            progress.finish();
            sums
        });
        Timings::add(&self.timings.comm, || self.comm.all_reduce_sum_tensors(&sums))?;
        Ok(sums.iter().zip(zs).map(|(s, (n, _))| s / *n as f64).collect())
    }

    /// The per-batch gradients g_j = ∇θ L_j of this rank's batches (the Fisher's samples),
    /// with the data's labels or labels drawn from the model ([`fisher_targets`]).
    pub fn batch_grads(&self, labels: FisherLabels) -> Vec<(usize, Tensor)> {
        Timings::add(&self.timings.autograd, || {
            let w = self.base_weights();
            self.own_batches()
                .map(|j| {
                    let (x, y) = self.batch(j);
                    let pieces = self.pieces(j);
                    if pieces.len() == 1 {
                        let z = self.net.forward(x, &w, self.bn);
                        let l = cross_entropy(&z, &fisher_targets(labels, j, &z, y));
                        let g = defined_or_zeros(Tensor::run_backward(&[&l], &self.params, false, false), &self.params);
                        return (j, flatten(&g));
                    }
                    // Split (running statistics): the labels of the whole batch, then its pieces.
                    let targets = match labels {
                        FisherLabels::Data => y.shallow_clone(),
                        FisherLabels::Sampled => {
                            let _g = tch::no_grad_guard();
                            fisher_targets(labels, j, &self.net.forward(x, &w, self.bn), y)
                        }
                    };
                    let mut acc = Tensor::zeros([self.n_params() as i64], (self.kind(), self.device()));
                    let mut at = 0;
                    for p in &pieces {
                        let n = p.x.size()[0];
                        let piece = Piece { x: p.x.shallow_clone(), y: targets.narrow(0, at, n), ..*p };
                        at += n;
                        let l = self.piece_loss(&piece, &w);
                        let g = defined_or_zeros(Tensor::run_backward(&[&l], &self.params, false, false), &self.params);
                        acc += flatten(&g);
                    }
                    (j, acc)
                })
                .collect()
        })
    }

    /// Per-sample gradients of this rank's batches (the Fisher's samples when
    /// `select.fisher_samples = "sample"`). Each sample is its own forward, so BatchNorm must
    /// not use batch statistics: the probe's BN mode must be running statistics.
    pub fn sample_grads(&self, labels: FisherLabels) -> Result<Vec<(usize, Tensor)>> {
        if self.bn != BnMode::Eval {
            return Err(Error::config(
                "select",
                "select.fisher_samples",
                "\"sample\" needs select.bn = \"running\" (batch statistics of one image are undefined)",
            ));
        }
        let m = self.batch_size();
        Ok(Timings::add(&self.timings.autograd, || {
            let w = self.base_weights();
            let mut out = Vec::new();
            for j in self.own_batches() {
                let (x, y) = self.batch(j);
                let targets = match labels {
                    FisherLabels::Data => y.shallow_clone(),
                    // Eval-mode BatchNorm: the batch's logits are each sample's own.
                    FisherLabels::Sampled => {
                        let _g = tch::no_grad_guard();
                        fisher_targets(labels, j, &self.net.forward(x, &w, self.bn), y)
                    }
                };
                for i in 0..m {
                    let xi = x.narrow(0, i as i64, 1);
                    let yi = targets.narrow(0, i as i64, 1);
                    let l = cross_entropy(&self.net.forward(&xi, &w, self.bn), &yi);
                    let g = defined_or_zeros(Tensor::run_backward(&[&l], &self.params, false, false), &self.params);
                    out.push((j * m + i, flatten(&g)));
                }
            }
            out
        }))
    }

    /// ∇θ L_j and ∇w L_j at an explicit raw-logit or θ perturbation, on batch j alone (the
    /// authors' finite differences). `theta_shift` is added to θ for the call; θ is restored after.
    pub fn batch_grads_at(&self, j: usize, leaf: &[Tensor], theta_shift: Option<&Tensor>) -> (Tensor, Tensor) {
        Timings::add(&self.timings.autograd, || {
            let saved: Option<Vec<Tensor>> = theta_shift.map(|d| {
                let _g = tch::no_grad_guard();
                let saved = self.params.iter().map(|p| p.detach().copy()).collect();
                for (p, dp) in self.params.iter().zip(split_like(d, &self.params)) {
                    let mut p = p.shallow_clone();
                    let _ = p.g_add_(&dp);
                }
                saved
            });
            let leaf: Vec<Tensor> = leaf.iter().map(|t| t.detach().set_requires_grad(true)).collect();
            let l = self.batch_loss(j, &self.weights_of(&leaf));
            let inputs: Vec<Tensor> = self.params.iter().chain(&leaf).map(|t| t.shallow_clone()).collect();
            let g = defined_or_zeros(Tensor::run_backward(&[&l], &inputs, false, false), &inputs);
            if let Some(saved) = saved {
                let _g = tch::no_grad_guard();
                for (p, s) in self.params.iter().zip(&saved) {
                    let mut p = p.shallow_clone();
                    p.copy_(s);
                }
            }
            let (gt, gw) = g.split_at(self.params.len());
            (flatten(gt), flatten(gw))
        })
    }

    /// Batch j's (inputs, labels); it must be materialised on this rank.
    pub fn batch(&self, j: usize) -> (&Tensor, &Tensor) {
        let (x, y) = self.batches[j].as_ref().unwrap_or_else(|| {
            panic!("evaluation batch {j} is not loaded on rank {}: call Probe::load_all first", self.comm.rank())
        });
        (x, y)
    }
}

/// A micro-batch of an evaluation batch ([`Probe::pieces`]).
struct Piece {
    x: Tensor,
    y: Tensor,
    /// Its share m_k/m of the batch's mean loss; None for the whole batch (no rescaling, so an
    /// unsplit run computes exactly what it always did).
    share: Option<f64>,
    /// The whole batch's size m.
    batch: i64,
}

impl Piece {
    /// The piece's part of its batch's mean loss, from its logits.
    fn loss_of(&self, logits: &Tensor) -> Tensor {
        let l = cross_entropy(logits, &self.y);
        match self.share {
            Some(s) => l * s,
            None => l,
        }
    }
}
