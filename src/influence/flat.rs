//! θ-sized and w-sized vectors as flat 1-D tensors, and conversions to per-tensor lists.

use tch::{Kind, Tensor};

/// Concatenate tensors into one flat vector.
pub fn flatten(ts: &[Tensor]) -> Tensor {
    Tensor::cat(&ts.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
}

/// Views of `flat` shaped like `like` (no copy).
pub fn split_like(flat: &Tensor, like: &[Tensor]) -> Vec<Tensor> {
    let mut off = 0i64;
    like.iter()
        .map(|t| {
            let n = t.numel() as i64;
            let v = flat.narrow(0, off, n).view(t.size().as_slice());
            off += n;
            v
        })
        .collect()
}

/// Gradients returned by the autograd engine, with zeros where an input was not reached.
pub fn defined_or_zeros(grads: Vec<Tensor>, inputs: &[Tensor]) -> Vec<Tensor> {
    grads.into_iter().zip(inputs).map(|(g, x)| if g.defined() { g } else { x.zeros_like() }).collect()
}

/// Σ_i ⟨a_i, b_i⟩ as a 0-dim tensor that stays in the autograd graph.
pub fn graph_dot(a: &[Tensor], b: &[Tensor]) -> Tensor {
    a.iter().zip(b).map(|(x, y)| (x * y).sum(x.kind())).reduce(|s, t| s + t).expect("non-empty")
}

/// ⟨a, b⟩ in f64.
pub fn dot(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) * b.to_kind(Kind::Double)).sum(Kind::Double).double_value(&[])
}

/// ‖a‖₂ in f64.
pub fn norm(a: &Tensor) -> f64 {
    dot(a, a).sqrt()
}
