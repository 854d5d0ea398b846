//! Reverse over forward with one segment's graph at a time (`select.recompute = "cells"`).
//!
//! The tangent forward of [`super::tangent`] keeps the graph of the whole network — values and
//! tangents of every cell — until its backward; that graph is what a selection's peak memory
//! is. Here the forward runs without a graph and keeps only the state between segments (the
//! stem, each cell or block, the head: [`crate::supernet::Supernet::dual_segment`]), value and
//! tangent. The backward then goes from the head to the stem, one segment at a time: the
//! segment is recomputed from its saved inputs with its graph, and its outputs' gradients are
//! pulled back to its weights and to its inputs, which are the previous segment's outputs.
//! Gradient checkpointing (Chen et al. 2016, "Training deep nets with sublinear memory cost"),
//! on the tangent forward: memory is one segment's graph plus the saved states, time one
//! tangent forward more. The derivatives are the same to rounding (tests/influence.rs compares
//! them with double backward in f64).

use tch::Tensor;

use super::tangent::Wrt;
use super::{Piece, Probe};
use crate::influence::flat::{defined_or_zeros, flatten, graph_dot};
use crate::supernet::{BnMode, Dual, Seeds};

/// The gradient at a segment boundary, per state tensor: of its value and of its tangent (None:
/// zero).
type Pullback = Vec<(Option<Tensor>, Option<Tensor>)>;

impl Probe<'_> {
    /// Whether second derivatives recompute segment by segment: asked for, by forward mode, and
    /// with BatchNorm buffers left alone (a recomputed training-mode BatchNorm would update them
    /// twice).
    pub(super) fn recomputes(&self) -> bool {
        self.recompute && self.uses_forward_mode() && self.bn != BnMode::Train
    }

    /// (∇θL when `want_grad`, ∇(∇L · (v over the leaf, u over θ)) in θ or in the leaf), flat, on
    /// a piece, keeping one segment's graph at a time.
    pub(super) fn recomputed_product(
        &self,
        p: &Piece,
        v: Option<&[Tensor]>,
        u: Option<&[Tensor]>,
        wrt: Wrt,
        want_grad: bool,
    ) -> (Option<Tensor>, Tensor) {
        let seeds = u.map_or_else(Seeds::none, |u| Seeds::of(&self.params, u));
        let dw = self.weight_tangents(v);
        // The mixing weights as leaves of their own (derivatives in w are pulled back to the
        // probe's leaf at the end, through the softmax for a raw leaf).
        let w_graph = self.weights_of(&self.leaf);
        let w: Vec<Tensor> = w_graph.iter().map(|t| t.detach().set_requires_grad(wrt == Wrt::Leaf)).collect();
        let run = |k: usize, h: &[Dual]| self.net.dual_segment(k, h, &w, &dw, None, self.bn, &seeds);
        let segments = self.net.segments();

        // Forward without a graph: the state before every segment, value and tangent.
        let mut states: Vec<Vec<Dual>> = vec![vec![Dual::constant(p.x.shallow_clone())]];
        tch::no_grad(|| {
            for k in 0..segments {
                let next = run(k, &states[k]);
                states.push(next.iter().map(detached).collect());
            }
        });
        let logits = states.pop().expect("the head's output").swap_remove(0);

        // The loss and L̇ = ⟨∇z L, ż⟩ on the logits z: L̇'s gradient is (∇²z L ż, ∇z L).
        let z = logits.x.set_requires_grad(true);
        let l = p.loss_of(&z);
        let gz = Tensor::run_backward(&[&l], &[&z], true, true).remove(0);
        let mut pull_ld: Pullback = vec![match &logits.dx {
            Some(dz) => {
                let hz = Tensor::run_backward(&[(&gz * dz).sum(l.kind())], &[&z], false, false).remove(0);
                (Some(hz), Some(gz.detach()))
            }
            None => (None, None),
        }];
        let mut pull_l: Option<Pullback> = want_grad.then(|| vec![(Some(gz.detach()), None)]);

        let targets: &[Tensor] = match wrt {
            Wrt::Theta => &self.params,
            Wrt::Leaf => &w,
        };
        let mut product: Vec<Option<Tensor>> = targets.iter().map(|_| None).collect();
        let mut grad: Vec<Option<Tensor>> = self.params.iter().map(|_| None).collect();
        for k in (0..segments).rev() {
            let saved = states.pop().expect("one state per segment");
            // The segment's inputs as leaves (the images need no derivative).
            let inputs: Vec<Dual> = saved
                .iter()
                .map(|d| Dual {
                    x: if k == 0 { d.x.shallow_clone() } else { d.x.detach().set_requires_grad(true) },
                    dx: d.dx.as_ref().map(|t| t.detach().set_requires_grad(true)),
                })
                .collect();
            let out = run(k, &inputs);
            let leaves: Vec<&Tensor> =
                if k == 0 { vec![] } else { inputs.iter().flat_map(|d| std::iter::once(&d.x).chain(&d.dx)).collect() };
            if let Some(pl) = pull_l.take() {
                let values: Vec<&Tensor> = if k == 0 { vec![] } else { inputs.iter().map(|d| &d.x).collect() };
                let (g, back) = pull(&out, &pl, &self.params, &values, true);
                add_into(&mut grad, g);
                pull_l = Some(back.into_iter().map(|b| (b, None)).collect());
            }
            let (g, back) = pull(&out, &pull_ld, targets, &leaves, false);
            add_into(&mut product, g);
            let mut back = back.into_iter();
            pull_ld = inputs
                .iter()
                .map(|d| (back.next().flatten(), d.dx.as_ref().and_then(|_| back.next().flatten())))
                .collect();
        }

        let dense = |acc: Vec<Option<Tensor>>, like: &[Tensor]| -> Vec<Tensor> {
            acc.into_iter().zip(like).map(|(a, t)| a.unwrap_or_else(|| t.zeros_like())).collect()
        };
        let grad = want_grad.then(|| flatten(&dense(grad, &self.params)));
        let product = dense(product, targets);
        let product = match wrt {
            Wrt::Theta => flatten(&product),
            // Through the map from the leaf (which always requires grad) to the mixing weights
            // (identity for a mixing leaf).
            Wrt::Leaf => {
                let g = Tensor::run_backward(&[graph_dot(&w_graph, &product)], &self.leaf, false, false);
                flatten(&defined_or_zeros(g, &self.leaf))
            }
        };
        (grad, product)
    }
}

/// A value and tangent without their graphs.
fn detached(d: &Dual) -> Dual {
    Dual { x: d.x.detach(), dx: d.dx.as_ref().map(|t| t.detach()) }
}

/// Pull the gradient `at` the segment's outputs `out` back to `targets` and to the segment's
/// input `leaves` (values only when `values_only`): Σ ⟨out, at⟩ differentiated, the graph kept
/// for a second pull when `values_only` (the gradient of L comes first, then of L̇). None where
/// nothing was reached.
fn pull(
    out: &[Dual],
    at: &Pullback,
    targets: &[Tensor],
    leaves: &[&Tensor],
    values_only: bool,
) -> (Vec<Option<Tensor>>, Vec<Option<Tensor>>) {
    let mut terms: Vec<Tensor> = Vec::new();
    for (o, (gx, gdx)) in out.iter().zip(at) {
        if let Some(g) = gx {
            terms.push((&o.x * g).sum(g.kind()));
        }
        if let (Some(t), Some(g), false) = (&o.dx, gdx, values_only) {
            terms.push((t * g).sum(g.kind()));
        }
    }
    let none = |n: usize| (0..n).map(|_| None).collect::<Vec<_>>();
    let Some(root) = terms.into_iter().reduce(|a, b| a + b).filter(|r| r.requires_grad()) else {
        return (none(targets.len()), none(leaves.len()));
    };
    let inputs: Vec<Tensor> = targets.iter().chain(leaves.iter().copied()).map(|t| t.shallow_clone()).collect();
    let mut g: Vec<Option<Tensor>> = Tensor::run_backward(&[root], &inputs, values_only, false)
        .into_iter()
        .map(|t| t.defined().then_some(t))
        .collect();
    let back = g.split_off(targets.len());
    (g, back)
}

fn add_into(acc: &mut [Option<Tensor>], g: Vec<Option<Tensor>>) {
    for (a, g) in acc.iter_mut().zip(g) {
        if let Some(g) = g {
            *a = Some(match a.take() {
                Some(s) => s + g,
                None => g,
            });
        }
    }
}
