//! Second derivatives on one piece of a batch, by reverse over forward where the supernet has a
//! tangent forward ([`crate::supernet::Supernet::forward_tangent`]), else by double backward.
//!
//! Reverse over forward: one forward carries the tangent of every value along the direction d
//! (over θ, over the leaf w, or both), giving L̇ = ∇L · d; one backward of L̇ gives ∇(∇L · d).
//! Double backward builds ∇L with its graph kept and differentiates through that backward: a
//! first-order backward recorded, then a backward of the forward and of the recorded backward —
//! about twice the work. Both compute the same derivative (tests/influence.rs compares them in
//! f64 to 1e-10).

use tch::Tensor;

use super::{Leaf, Piece, Probe};
use crate::influence::flat::{defined_or_zeros, flatten, graph_dot};
use crate::supernet::Seeds;

/// Which derivatives a piece's product is taken in.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Wrt {
    Theta,
    Leaf,
}

impl Probe<'_> {
    /// First derivatives with the graph kept, on a piece of a batch: (∇θ L, ∇w L) as per-tensor
    /// lists.
    pub(super) fn first_derivatives(&self, p: &Piece) -> (Vec<Tensor>, Vec<Tensor>) {
        let l = self.piece_loss(p, &self.weights_of(&self.leaf));
        let inputs: Vec<Tensor> = self.params.iter().chain(&self.leaf).map(|t| t.shallow_clone()).collect();
        let mut gt = defined_or_zeros(Tensor::run_backward(&[&l], &inputs, true, true), &inputs);
        let gw = gt.split_off(self.params.len());
        (gt, gw)
    }

    /// ∇θ L with the graph kept, on a piece of a batch (no ∇w: HVPs and Bᵀu need only this,
    /// and the w-gradient's reductions would double-backward for nothing).
    pub(super) fn theta_derivatives(&self, p: &Piece) -> Vec<Tensor> {
        let l = self.piece_loss(p, &self.weights_of(&self.leaf));
        defined_or_zeros(Tensor::run_backward(&[&l], &self.params, true, true), &self.params)
    }

    /// Second derivative of the scalar `s` (built on a kept graph) with respect to `wrt`, flat.
    pub(super) fn second(&self, s: &Tensor, wrt: &[Tensor]) -> Tensor {
        self.second_keep(s, wrt, false)
    }

    /// [`Probe::second`], keeping the graph for further products when `keep`.
    pub(super) fn second_keep(&self, s: &Tensor, wrt: &[Tensor], keep: bool) -> Tensor {
        if !s.requires_grad() {
            // ∇ did not depend on `wrt` at all (e.g. a direction orthogonal to every used entry).
            return flatten(wrt).zeros_like();
        }
        flatten(&defined_or_zeros(Tensor::run_backward(&[s], wrt, keep, false), wrt))
    }

    /// Tangents of the forward's mixing weights along a leaf direction `v` (per leaf table):
    /// the leaf itself for mixing-weight leaves, J v of the softmax for raw leaves (the tiny
    /// Jacobian product by the double-vjp trick, in the weights alone).
    pub(super) fn weight_tangents(&self, v: Option<&[Tensor]>) -> Vec<Option<Tensor>> {
        let tables = self.weights_of(&self.leaf).len();
        let Some(v) = v else { return (0..tables).map(|_| None).collect() };
        match self.leaf_kind {
            Leaf::Mixing => (0..tables).map(|t| v.get(t).map(|x| x.shallow_clone())).collect(),
            Leaf::Raw => {
                let w = self.weights_of(&self.leaf);
                let r: Vec<Tensor> = w.iter().map(|t| t.zeros_like().set_requires_grad(true)).collect();
                let jt_r =
                    defined_or_zeros(Tensor::run_backward(&[graph_dot(&w, &r)], &self.leaf, false, true), &self.leaf);
                let jv = Tensor::run_backward(&[graph_dot(&jt_r, v)], &r, false, false);
                jv.into_iter().map(|t| t.defined().then_some(t)).collect()
            }
        }
    }

    /// The logits of images `x` (graph to θ) and J u, their tangent along θ-direction `u`
    /// (detached), by one tangent forward; None without forward mode.
    pub(super) fn logits_and_jvp(&self, x: &Tensor, u: &[Tensor]) -> Option<(Tensor, Option<Tensor>)> {
        if !self.uses_forward_mode() {
            return None;
        }
        let w = self.weights_of(&self.leaf);
        let dw: Vec<Option<Tensor>> = w.iter().map(|_| None).collect();
        let out = self.net.forward_tangent(x, &w, &dw, &Seeds::of(&self.params, u), self.bn)?;
        Some((out.x, out.dx.map(|d| d.detach())))
    }

    /// (L, L̇) on a piece, L̇ = ∇L · (v over the leaf, u over θ) by one tangent forward; None
    /// where the supernet has none (or forward mode is off). L̇ is None when the direction
    /// reaches no logit.
    fn tangent_loss(&self, p: &Piece, v: Option<&[Tensor]>, u: Option<&[Tensor]>) -> Option<(Tensor, Option<Tensor>)> {
        if !self.uses_forward_mode() {
            return None;
        }
        let seeds = u.map_or_else(Seeds::none, |u| Seeds::of(&self.params, u));
        let dw = self.weight_tangents(v);
        let out = self.net.forward_tangent(&p.x, &self.weights_of(&self.leaf), &dw, &seeds, self.bn)?;
        let l = p.loss_of(&out.x);
        let ld = out.dx.map(|dz| {
            // ∇_z L with its graph (a backward through the loss alone), then ⟨∇_z L, ż⟩.
            let gz = Tensor::run_backward(&[&l], &[&out.x], true, true).remove(0);
            (gz * dz).sum(l.kind())
        });
        Some((l, ld))
    }

    /// ∇(∇L · (v, u)) in θ or in the leaf, on a piece.
    pub(super) fn piece_product(&self, p: &Piece, v: Option<&[Tensor]>, u: Option<&[Tensor]>, wrt: Wrt) -> Tensor {
        let target = match wrt {
            Wrt::Theta => &self.params,
            Wrt::Leaf => &self.leaf,
        };
        if self.recomputes() {
            return self.recomputed_product(p, v, u, wrt, false).1;
        }
        if let Some((_, ld)) = self.tangent_loss(p, v, u) {
            return match ld {
                Some(ld) => self.second(&ld, target),
                None => flatten(target).zeros_like(),
            };
        }
        let (gt, gw) = if v.is_some() { self.first_derivatives(p) } else { (self.theta_derivatives(p), vec![]) };
        let s = match (v, u) {
            (Some(v), Some(u)) => graph_dot(&gw, v) + graph_dot(&gt, u),
            (Some(v), None) => graph_dot(&gw, v),
            (None, Some(u)) => graph_dot(&gt, u),
            (None, None) => return flatten(target).zeros_like(),
        };
        self.second(&s, target)
    }

    /// Bᵀu_c = ∇w(∇θL · u_c) on a piece for several u_c; by double backward one first-derivative
    /// graph serves them all, by reverse over forward each u_c takes its own tangent forward
    /// (the primal forward is recomputed: tangents are not batched).
    pub(super) fn piece_mixed_t_many(&self, p: &Piece, us: &[&[Tensor]]) -> Vec<Tensor> {
        if self.uses_forward_mode() {
            return us.iter().map(|u| self.piece_product(p, None, Some(u), Wrt::Leaf)).collect();
        }
        let gt = self.theta_derivatives(p);
        us.iter().enumerate().map(|(k, u)| self.second_keep(&graph_dot(&gt, u), &self.leaf, k + 1 < us.len())).collect()
    }

    /// The gradient ∇θL (detached, when `want_grad`) and B v = ∇θ(∇wL · v) on a piece: DARTS-IM's
    /// first pass (the Fisher sample comes with the product).
    pub(super) fn piece_grad_and_mixed(&self, p: &Piece, v: &[Tensor], want_grad: bool) -> (Option<Tensor>, Tensor) {
        if self.recomputes() {
            return self.recomputed_product(p, Some(v), None, Wrt::Theta, want_grad);
        }
        if let Some((l, ld)) = self.tangent_loss(p, Some(v), None) {
            let g = want_grad.then(|| {
                flatten(&defined_or_zeros(Tensor::run_backward(&[&l], &self.params, true, false), &self.params))
            });
            let bv = match ld {
                Some(ld) => self.second(&ld, &self.params),
                None => flatten(&self.params).zeros_like(),
            };
            return (g, bv);
        }
        let (gt, gw) = self.first_derivatives(p);
        let g = want_grad.then(|| flatten(&gt).detach());
        (g, self.second(&graph_dot(&gw, v), &self.params))
    }

    /// Whether products go by reverse over forward: forward mode on and a supernet with a
    /// tangent forward.
    pub fn uses_forward_mode(&self) -> bool {
        self.forward_mode && self.net.has_tangents()
    }
}
