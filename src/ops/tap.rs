//! Recording layer inputs and outputs during a forward pass, for curvature factored by layer
//! (K-FAC, EK-FAC): within [`tapped`], every weighted layer ([`super::layers::Conv`],
//! [`super::layers::Linear`], affine [`super::layers::BatchNorm`]) appends what it saw.

use std::cell::RefCell;

use tch::Tensor;

/// The geometry of a recorded layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TapLayer {
    /// 2-D convolution without bias (weight `[out, in/groups, k, k]`).
    Conv { k: i64, stride: i64, pad: i64, dil: i64, groups: i64 },
    /// Affine map with bias (weight `[out, in]`, bias `[out]`).
    Linear,
    /// BatchNorm's affine part `y = x̂·γ + β` (weight γ, bias β, per channel).
    BatchNorm,
}

/// One layer application during a tapped forward.
pub struct Tapped {
    pub layer: TapLayer,
    /// The layer's weight, then its bias where it has one (handles to the parameters).
    pub params: Vec<Tensor>,
    /// The layer's input, detached: the image of a convolution, the features of a linear map,
    /// the normalised x̂ of a BatchNorm.
    pub input: Tensor,
    /// The layer's output, in the autograd graph (its gradient is the layer's back-propagated
    /// signal).
    pub output: Tensor,
}

thread_local! {
    static TAP: RefCell<Option<Vec<Tapped>>> = const { RefCell::new(None) };
}

/// Run `f` (a forward pass) recording every weighted layer it applies, in order.
pub fn tapped<T>(f: impl FnOnce() -> T) -> (T, Vec<Tapped>) {
    let before = TAP.with(|t| t.borrow_mut().replace(Vec::new()));
    let out = f();
    let records = TAP.with(|t| std::mem::replace(&mut *t.borrow_mut(), before)).unwrap_or_default();
    (out, records)
}

/// Whether a tapped forward is in progress on this thread.
pub fn active() -> bool {
    TAP.with(|t| t.borrow().is_some())
}

/// Record a layer application (a no-op outside [`tapped`]).
pub fn record(layer: TapLayer, params: &[&Tensor], input: &Tensor, output: &Tensor) {
    TAP.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            v.push(Tapped {
                layer,
                params: params.iter().map(|p| p.shallow_clone()).collect(),
                input: input.detach(),
                output: output.shallow_clone(),
            });
        }
    });
}
