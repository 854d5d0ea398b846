//! Curvature products beyond the Hessian: the generalised Gauss–Newton matrix (products and,
//! for small models, dense), and the dense Hessian.

use tch::{Kind, Tensor};

use super::Timings;
use super::{Piece, Probe};
use crate::error::Result;
use crate::influence::flat::{defined_or_zeros, flatten, graph_dot, split_like};

impl Probe<'_> {
    /// G u with G the generalised Gauss–Newton matrix Jᵀ H_z J (mean over the N batches): J the
    /// Jacobian of batch j's logits z in θ, H_z the Hessian of the mean cross-entropy in z,
    /// block-diagonal over the m samples, (diag pᵢ − pᵢpᵢᵀ)/m with pᵢ = softmax(zᵢ). For softmax
    /// cross-entropy G is the true Fisher: positive semi-definite, and curvature in every
    /// direction the logits move. Per batch: J u by one tangent forward (or, for a supernet
    /// without one, by the double-backward trick: the gradient of ⟨Jᵀr, u⟩ in a dummy r),
    /// H_z (J u) in closed form, Jᵀ(·) by one backward.
    pub fn ggn_vp(&self, u: &Tensor) -> Result<Tensor> {
        let us = split_like(u, &self.params);
        let g = Timings::add(&self.timings.autograd, || {
            let mut acc = u.zeros_like();
            for j in self.own_batches() {
                for p in self.pieces(j) {
                    acc += self.ggn_vp_on(&p, &us);
                }
            }
            acc
        });
        self.mean_over_batches(g)
    }

    /// The GGN formed densely (P×P, f64, mean over the N batches) from the logits' Jacobian:
    /// per batch, m·C backward passes (one per logit) and Jᵀ H_z J. For small models.
    pub fn dense_ggn(&self) -> Result<Tensor> {
        let p = self.n_params() as i64;
        let g = Timings::add(&self.timings.autograd, || {
            let mut acc = Tensor::zeros([p, p], (Kind::Double, self.device()));
            for piece in self.own_batches().flat_map(|j| self.pieces(j)) {
                let z = self.logits_of(&piece.x);
                let (m, c) = (z.size()[0], z.size()[1]);
                let mut rows = Vec::with_capacity((m * c) as usize);
                for i in 0..m {
                    for k in 0..c {
                        let zik = z.get(i).get(k);
                        rows.push(
                            flatten(&defined_or_zeros(
                                Tensor::run_backward(&[&zik], &self.params, true, false),
                                &self.params,
                            ))
                            .to_kind(Kind::Double),
                        );
                    }
                }
                let jac = Tensor::stack(&rows, 0);
                let prob = z.detach().to_kind(Kind::Double).softmax(-1, Kind::Double);
                // H_z J row block by row block: (diag pᵢ − pᵢpᵢᵀ)/m times sample i's C rows, m
                // the whole batch's size.
                let jb = jac.view([m, c, p]);
                let pj = (prob.unsqueeze(-1) * &jb).sum_dim_intlist(1, true, Kind::Double);
                let hj = (prob.unsqueeze(-1) * (&jb - pj)).view([m * c, p]) / piece.batch as f64;
                acc += jac.tr().matmul(&hj);
            }
            acc
        });
        self.mean_over_batches(g)
    }

    /// The piece's part of the batch's GGN product: H_z of the batch's mean loss is (diag pᵢ −
    /// pᵢpᵢᵀ)/m over the whole batch's m, whatever the piece.
    fn ggn_vp_on(&self, p: &Piece, us: &[Tensor]) -> Tensor {
        let m = p.batch as f64;
        let (z, ju) = match self.logits_and_jvp(&p.x, us) {
            // J u by forward mode (one tangent forward).
            Some((z, Some(ju))) => (z, ju),
            Some((_, None)) => return flatten(&self.params).zeros_like(),
            None => self.ggn_jvp_by_double_backward(&p.x, us),
        };
        if !ju.defined() {
            return flatten(&self.params).zeros_like();
        }
        let p = z.detach().softmax(-1, z.kind());
        let hju = (&p * &ju - &p * (&p * &ju).sum_dim_intlist(-1, true, z.kind())) / m;
        self.second(&(&z * hju.detach()).sum(z.kind()), &self.params)
    }

    /// The logits and J u by the double-backward trick: the gradient of ⟨Jᵀr, u⟩ in a dummy r
    /// (J u undefined when u reaches no logit).
    fn ggn_jvp_by_double_backward(&self, x: &Tensor, us: &[Tensor]) -> (Tensor, Tensor) {
        let z = self.logits_of(x);
        let r = z.zeros_like().set_requires_grad(true);
        let jt_r =
            defined_or_zeros(Tensor::run_backward(&[(&z * &r).sum(z.kind())], &self.params, true, true), &self.params);
        let dot = graph_dot(&jt_r, us);
        let ju = if dot.requires_grad() {
            Tensor::run_backward(&[&dot], &[&r], true, false).pop().expect("one input")
        } else {
            Tensor::new()
        };
        (z, ju)
    }

    /// The dense Hessian H (P×P, f64, mean over the N batches): per batch, one first-derivative
    /// graph and P double-backward passes of its entries (row i = ∇θ ∂L/∂θ_i). For small models.
    pub fn dense_hessian(&self) -> Result<Tensor> {
        let p = self.n_params() as i64;
        let h = Timings::add(&self.timings.autograd, || {
            let h = Tensor::zeros([p, p], (Kind::Double, self.device()));
            for piece in self.own_batches().flat_map(|j| self.pieces(j)) {
                let g = flatten(&self.theta_derivatives(&piece));
                for i in 0..p {
                    let gi = g.get(i);
                    let row = if gi.requires_grad() {
                        flatten(&defined_or_zeros(
                            Tensor::run_backward(&[&gi], &self.params, true, false),
                            &self.params,
                        ))
                    } else {
                        Tensor::zeros([p], (self.kind(), self.device()))
                    };
                    let mut hr = h.get(i);
                    hr += row.to_kind(Kind::Double);
                }
            }
            h
        });
        self.mean_over_batches(h)
    }
}
