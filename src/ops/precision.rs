//! Mixed precision of the first-order search steps (`search.precision = "bf16"`): inside a
//! [`guard`], convolutions and linear layers take bf16 operands (tensor cores on GPUs) and
//! return f32; everything else — BatchNorm, the mixture, the loss, the optimiser states and the
//! master weights — stays f32. This is autocast's rule for these layers, with the result cast back
//! at once so that nothing downstream changes precision. The influence criteria, the evaluation
//! passes and the second-order α step never run inside a guard.

use std::cell::Cell;

use tch::{Kind, Tensor};

thread_local! {
    static BF16: Cell<bool> = const { Cell::new(false) };
}

/// Restores the previous precision when dropped.
#[must_use]
pub struct Guard(bool);

/// bf16 convolutions and linear layers on this thread while the guard lives (`on`), or f32
/// (`!on`: the sections inside a bf16 step that must stay exact).
pub fn guard(on: bool) -> Guard {
    Guard(BF16.with(|b| b.replace(on)))
}

impl Drop for Guard {
    fn drop(&mut self) {
        BF16.with(|b| b.set(self.0));
    }
}

/// Whether the current thread computes convolutions and linear layers in bf16.
pub fn bf16() -> bool {
    BF16.with(Cell::get)
}

/// `f(x, w)` (a convolution or linear map), in bf16 when a guard says so and `x` is f32.
pub(crate) fn apply(x: &Tensor, w: &Tensor, f: impl FnOnce(&Tensor, &Tensor) -> Tensor) -> Tensor {
    if bf16() && x.kind() == Kind::Float {
        f(&x.to_kind(Kind::BFloat16), &w.to_kind(Kind::BFloat16)).to_kind(Kind::Float)
    } else {
        f(x, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside a guard a convolution is the f32 convolution of the bf16-rounded operands, rounded
    /// to bf16 (relative error ≤ 2⁻⁸ of bf16's 8-bit significand, plus the accumulation's); outside
    /// it is untouched f32. The reference is f64 arithmetic on the rounded operands.
    #[test]
    fn a_guard_rounds_the_operands_of_convolutions_to_bf16() {
        tch::manual_seed(3);
        let x = Tensor::randn([2, 3, 6, 6], (Kind::Float, tch::Device::Cpu));
        let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, tch::Device::Cpu));
        let conv = |x: &Tensor, w: &Tensor| x.conv2d(w, None::<&Tensor>, [1], [1], [1], 1);
        let round = |t: &Tensor| t.to_kind(Kind::BFloat16).to_kind(Kind::Double);
        let reference = conv(&round(&x), &round(&w));
        let exact = conv(&x.to_kind(Kind::Double), &w.to_kind(Kind::Double));
        let rel = |a: &Tensor, b: &Tensor| {
            (a.to_kind(Kind::Double) - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
        };
        let plain = apply(&x, &w, conv);
        assert_eq!(plain.kind(), Kind::Float);
        assert!(rel(&plain, &exact) < 1e-6, "f32 outside a guard: {}", rel(&plain, &exact));
        let mixed = {
            let _g = guard(true);
            assert!(bf16());
            let inner = {
                let _exact = guard(false);
                apply(&x, &w, conv)
            };
            assert!(inner.equal(&plain), "a nested f32 guard computes in f32");
            apply(&x, &w, conv)
        };
        assert!(!bf16(), "the guard restores f32");
        assert_eq!(mixed.kind(), Kind::Float);
        assert!(rel(&mixed, &reference) < 2f64.powi(-7), "bf16 vs rounded operands: {}", rel(&mixed, &reference));
        // bf16 operands move the result by far more than f32 rounding: the guard acted.
        assert!(rel(&mixed, &exact) > 1e-4, "{}", rel(&mixed, &exact));
    }
}
