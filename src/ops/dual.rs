//! Forward-mode derivatives of the layers: every value carries its directional derivative
//! (tangent) along a direction in the weights θ, in the mixing weights w, or both.
//!
//! The tangents are ordinary tensors built by ordinary (recorded) ops, so one reverse pass over
//! a tangent L̇ = ∇L · d gives a mixed second derivative ∇(∇L · d): *reverse over forward*.
//! The influence probe uses it for H u, B v and Bᵀ u — one tangent forward and one backward per
//! batch instead of a backward with its graph kept and a backward through that backward.
//!
//! A missing tangent (`None`) is an exact zero: a layer before every seeded weight computes no
//! tangent at all.

use std::collections::HashMap;

use tch::Tensor;

use super::layers::{avg_pool, BatchNorm, BnMode, Conv, Linear, ReluConvBn};

/// A value and its tangent (None: zero).
pub struct Dual {
    pub x: Tensor,
    pub dx: Option<Tensor>,
}

/// Tangents of the weights θ along the direction: one per weight tensor, found by the tensor's
/// storage (every handle of a weight shares it).
#[derive(Default)]
pub struct Seeds {
    by_storage: HashMap<usize, Tensor>,
}

impl Seeds {
    /// No θ direction: tangents start at the mixing weights only.
    pub fn none() -> Self {
        Seeds::default()
    }

    /// Tangent `dirs[i]` for weight `params[i]`.
    pub fn of(params: &[Tensor], dirs: &[Tensor]) -> Self {
        assert_eq!(params.len(), dirs.len(), "one tangent per weight tensor");
        let by_storage = params.iter().zip(dirs).map(|(p, d)| (p.data_ptr() as usize, d.shallow_clone())).collect();
        Seeds { by_storage }
    }

    fn get(&self, p: &Tensor) -> Option<&Tensor> {
        if self.by_storage.is_empty() {
            return None;
        }
        self.by_storage.get(&(p.data_ptr() as usize))
    }
}

/// a + b for tangents, None as zero.
pub fn add(a: Option<Tensor>, b: Option<Tensor>) -> Option<Tensor> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Per-channel vector as an NCHW broadcast shape.
fn channel(t: &Tensor, dim: usize) -> Tensor {
    let mut shape = vec![1i64; dim];
    shape[1] = -1;
    t.view(shape.as_slice())
}

impl Dual {
    /// A value with zero tangent.
    pub fn constant(x: Tensor) -> Self {
        Dual { x, dx: None }
    }

    pub fn shallow_clone(&self) -> Self {
        Dual { x: self.x.shallow_clone(), dx: self.dx.as_ref().map(|t| t.shallow_clone()) }
    }

    /// Apply a linear map to the value and the tangent alike.
    pub fn linear_map(&self, f: impl Fn(&Tensor) -> Tensor) -> Self {
        Dual { x: f(&self.x), dx: self.dx.as_ref().map(&f) }
    }

    pub fn relu(&self) -> Self {
        // relu' is the step function: the tangent passes where the input is positive (the same
        // mask relu's own backward applies; its derivative in the input is zero a.e.).
        Dual { x: self.x.relu(), dx: self.dx.as_ref().map(|d| self.x.threshold_backward(d, 0.0)) }
    }

    pub fn avg_pool(&self, k: i64, stride: i64, pad: i64) -> Self {
        self.linear_map(|t| avg_pool(t, k, stride, pad))
    }

    /// PyTorch's `MaxPool2d(k, stride, pad)`; the tangent is read at each window's argmax.
    pub fn max_pool(&self, k: i64, stride: i64, pad: i64) -> Self {
        let Some(d) = &self.dx else {
            return Dual::constant(self.x.max_pool2d([k, k], [stride, stride], [pad, pad], [1, 1], false));
        };
        let (y, idx) = self.x.max_pool2d_with_indices([k, k], [stride, stride], [pad, pad], [1, 1], false);
        let dy = d.flatten(2, -1).gather(2, &idx.flatten(2, -1), false).view_as(&y);
        Dual { x: y, dx: Some(dy) }
    }

    /// Concatenation along `dim` (a zero tangent filled in where a part has none).
    pub fn cat(parts: &[Dual], dim: i64) -> Self {
        let x = Tensor::cat(&parts.iter().map(|p| p.x.shallow_clone()).collect::<Vec<_>>(), dim);
        let dx = parts.iter().any(|p| p.dx.is_some()).then(|| {
            let ds: Vec<Tensor> =
                parts.iter().map(|p| p.dx.as_ref().map_or_else(|| p.x.zeros_like(), |d| d.shallow_clone())).collect();
            Tensor::cat(&ds, dim)
        });
        Dual { x, dx }
    }

    /// The value times a scalar mixing weight (w, ẇ).
    pub fn scale(&self, w: &Tensor, dw: Option<&Tensor>) -> Self {
        let dx = match (&self.dx, dw) {
            (Some(d), Some(dw)) => Some((d * w).addcmul(&self.x, dw)),
            (Some(d), None) => Some(d * w),
            (None, Some(dw)) => Some(&self.x * dw),
            (None, None) => None,
        };
        Dual { x: &self.x * w, dx }
    }

    pub fn plus(self, other: Dual) -> Self {
        Dual { x: self.x + other.x, dx: add(self.dx, other.dx) }
    }
}

impl Conv {
    /// conv(x, W) and its tangent conv(ẋ, W) + conv(x, Ẇ).
    pub fn dual(&self, x: &Dual, seeds: &Seeds) -> Dual {
        let y = self.forward(&x.x);
        let dx = add(x.dx.as_ref().map(|d| self.apply(d, &self.w)), seeds.get(&self.w).map(|dw| self.apply(&x.x, dw)));
        Dual { x: y, dx }
    }
}

impl Linear {
    /// x Wᵀ + b and its tangent ẋ Wᵀ + x Ẇᵀ + ḃ.
    pub fn dual(&self, x: &Dual, seeds: &Seeds) -> Dual {
        let (w, b) = self.weights();
        let y = self.forward(&x.x);
        let dx = add(
            add(x.dx.as_ref().map(|d| d.matmul(&w.tr())), seeds.get(w).map(|dw| x.x.matmul(&dw.tr()))),
            seeds.get(b).map(|db| db.shallow_clone()),
        );
        Dual { x: y, dx }
    }
}

impl BatchNorm {
    /// The normalisation (the same fused op as [`BatchNorm::forward`]) and its tangent.
    ///
    /// With batch statistics, x̂ = (x − μ)/σ over (N, H, W) and σ² the biased variance plus eps:
    /// d x̂ = (ẋ − mean ẋ − x̂ · mean(ẋ x̂)) / σ. With running statistics d x̂ = ẋ / σ_run. Then
    /// ẏ = γ d x̂ + γ̇ x̂ + β̇.
    pub fn dual(&self, x: &Dual, mode: BnMode, seeds: &Seeds) -> Dual {
        let (gamma, beta) = self.affine();
        let dgamma = gamma.and_then(|g| seeds.get(g));
        let dbeta = beta.and_then(|b| seeds.get(b));
        let dim = x.x.dim();
        if let (BnMode::BatchStats, Some(d), false) = (mode, &x.dx, super::tap::active()) {
            // y and γ J ẋ by one autograd function with a hand-written backward.
            let (y, dy) = native::bn_dual(&x.x, d, gamma, beta, self.eps());
            let xhat = dgamma.map(|_| self.batch_xhat(&x.x));
            return Dual { x: y.shallow_clone(), dx: finish(Some(dy), xhat, dgamma, dbeta, &y, dim) };
        }
        let y = self.forward(&x.x, mode);
        if x.dx.is_none() && dgamma.is_none() && dbeta.is_none() {
            return Dual { x: y, dx: None };
        }
        let (xhat, dxhat) = match mode {
            BnMode::Eval => {
                let (rm, rv) = self.running();
                let inv = channel(&(rv + self.eps()).rsqrt(), dim);
                let xhat = dgamma.map(|_| (&x.x - channel(rm, dim)) * &inv);
                (xhat, x.dx.as_ref().map(|d| d * &inv))
            }
            BnMode::Train | BnMode::BatchStats => {
                let dxhat = x.dx.as_ref().map(|d| self.batch_stats_tangent(&x.x, &y, d));
                let xhat = dgamma.map(|_| self.batch_xhat(&x.x));
                return Dual { x: y.shallow_clone(), dx: finish(dxhat, xhat, dgamma, dbeta, &y, dim) };
            }
        };
        let dxhat = dxhat.map(|d| match gamma {
            Some(g) => d * channel(g, dim),
            None => d,
        });
        Dual { x: y.shallow_clone(), dx: finish(dxhat, xhat, dgamma, dbeta, &y, dim) }
    }
}

impl BatchNorm {
    /// x̂ = (x − μ)/σ with batch statistics, recorded (γ̇'s term γ̇ x̂ needs it on the graph).
    fn batch_xhat(&self, x: &Tensor) -> Tensor {
        let (var, mean) = x.var_mean_correction([0i64, 2, 3].as_slice(), 0, true);
        (x - mean) * (var + self.eps()).rsqrt()
    }

    /// γ J ẋ for batch-statistics BatchNorm y = γ x̂(x) + β, given y from libtorch's fused op: J =
    /// (I − 11ᵀ/n − x̂x̂ᵀ/n)/σ per channel is symmetric, so the tangent is the vector–Jacobian
    /// product ∇_x⟨y, ẋ⟩ — one backward through the fused op alone, its graph created so that the
    /// tangent stays differentiable in x, γ and ẋ. libtorch's fused BatchNorm backward and its
    /// double backward replace the formula (ẋ − mean ẋ − x̂ · mean(ẋ x̂))/σ's eight recorded ops
    /// and their backwards; the graph they keep is smaller (benchmark process, DARTS-IM N = 3 on
    /// NB201: peak RSS 4.71 → 4.23 GB, same time). The engine follows only the paths from ⟨y, ẋ⟩
    /// to x: through the BatchNorm, not through ẋ, which is built from the layer's inputs and their
    /// tangents, never from x itself (`tests/influence.rs` compares every product with double
    /// backward in f64). Since `bn_dual.cpp`, this route serves only where that function does
    /// not (running statistics updated, K-FAC's recorded forward) and is the
    /// reference of its test.
    fn batch_stats_tangent(&self, x: &Tensor, y: &Tensor, dx: &Tensor) -> Tensor {
        let graph = y.requires_grad() || dx.requires_grad();
        tch::with_grad(|| {
            // An x without a graph (nothing before it is differentiated) gets a leaf of its own:
            // the tangent's dependence on x then ends there, as it would anyway.
            let (x, y) = if x.requires_grad() && y.requires_grad() {
                (x.shallow_clone(), y.shallow_clone())
            } else {
                let x = x.detach().set_requires_grad(true);
                let y = self.forward(&x, BnMode::BatchStats);
                (x, y)
            };
            let root = (&y * dx).sum(y.kind());
            // No graph for the tangent where nothing it depends on is differentiated (a forward
            // under `no_grad`: the recomputing route's first pass): libtorch's plain fused backward.
            let mut g = Tensor::run_backward(&[root], &[x], true, graph);
            g.pop().expect("one gradient per input")
        })
    }
}

/// `src/ops/bn_dual.cpp`: batch-statistics BatchNorm and its tangent as one libtorch autograd
/// function whose backward reuses x̂ and J ẋ (two fused BatchNorm backwards and four per-channel
/// reductions) instead of libtorch's general derivative of its BatchNorm backward.
mod native {
    use std::ffi::CStr;
    use std::os::raw::c_char;
    use tch::Tensor;
    use torch_sys::C_tensor;

    extern "C" {
        fn dartsif_bn_dual(
            x: *const C_tensor,
            dx: *const C_tensor,
            gamma: *const C_tensor,
            beta: *const C_tensor,
            eps: f64,
            y: *mut *mut C_tensor,
            t: *mut *mut C_tensor,
        ) -> i32;
        fn dartsif_last_error() -> *const c_char;
    }

    /// (γ x̂ + β, γ J ẋ) for batch statistics.
    pub fn bn_dual(
        x: &Tensor,
        dx: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f64,
    ) -> (Tensor, Tensor) {
        let ptr = |t: Option<&Tensor>| t.map_or(std::ptr::null(), |t| t.as_ptr());
        let (mut y, mut t) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: the pointers are live tch tensors (or null for an absent affine weight); on
        // success the function hands over two new tensors, which `Tensor::from_ptr` owns.
        unsafe {
            if dartsif_bn_dual(x.as_ptr(), dx.as_ptr(), ptr(gamma), ptr(beta), eps, &mut y, &mut t) != 0 {
                // As every tch op does on a libtorch error (shapes, kinds: programming errors).
                panic!("bn_dual: {}", CStr::from_ptr(dartsif_last_error()).to_string_lossy());
            }
            (Tensor::from_ptr(y), Tensor::from_ptr(t))
        }
    }
}

/// ẏ = γ d x̂ (given) + γ̇ x̂ + β̇.
fn finish(
    dy: Option<Tensor>,
    xhat: Option<Tensor>,
    dgamma: Option<&Tensor>,
    dbeta: Option<&Tensor>,
    y: &Tensor,
    dim: usize,
) -> Option<Tensor> {
    let mut dy = dy;
    if let (Some(dg), Some(xhat)) = (dgamma, &xhat) {
        dy = add(dy, Some(xhat * channel(dg, dim)));
    }
    if let Some(db) = dbeta {
        dy = add(dy, Some(channel(db, dim).expand_as(y)));
    }
    dy
}

impl ReluConvBn {
    /// [`ReluConvBn::forward_relued`] with tangents.
    pub fn dual_relued(&self, relu_x: &Dual, bn: BnMode, seeds: &Seeds) -> Dual {
        let (conv, norm) = self.parts();
        norm.dual(&conv.dual(relu_x, seeds), bn, seeds)
    }

    pub fn dual(&self, x: &Dual, bn: BnMode, seeds: &Seeds) -> Dual {
        self.dual_relued(&x.relu(), bn, seeds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layers::Builder;
    use tch::{Device, Kind};

    fn rel(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
    }

    /// The batch-statistics tangent is the directional derivative of libtorch's fused forward:
    /// the central difference (BN(x + εẋ) − BN(x − εẋ))/2ε in f64 (error O(ε²): about 1e-10
    /// relative at ε = 1e-5), with x on a graph and without one, affine and not. And it stays
    /// differentiable in ẋ: ∇_ẋ⟨ẏ, r⟩ = Jᵀr, which is the tangent along r since J is symmetric.
    #[test]
    fn batch_statistics_tangent_is_the_directional_derivative() {
        let opts = (Kind::Double, Device::Cpu);
        tch::manual_seed(3);
        for affine in [false, true] {
            let mut b = Builder::new(Kind::Double);
            let bn = b.batch_norm("bn", 3, affine);
            if let (Some(g), Some(beta)) = bn.affine() {
                tch::no_grad(|| {
                    g.shallow_clone().copy_(&(Tensor::rand([3], opts) + 0.5));
                    beta.shallow_clone().copy_(&Tensor::randn([3], opts));
                });
            }
            for graph in [true, false] {
                let x0 = Tensor::randn([4, 3, 5, 5], opts) * 2.0 + 1.0;
                let x = if graph { x0.set_requires_grad(true) * 1.0 } else { x0 };
                let d = Tensor::randn([4, 3, 5, 5], opts).set_requires_grad(true);
                let tangent = |dir: &Tensor| {
                    let dual = Dual { x: x.shallow_clone(), dx: Some(dir.shallow_clone()) };
                    bn.dual(&dual, BnMode::BatchStats, &Seeds::none()).dx.expect("a tangent")
                };
                let t = tangent(&d);
                let eps = 1e-5;
                let fd = tch::no_grad(|| {
                    let step = &d * eps;
                    (bn.forward(&(&x + &step), BnMode::BatchStats) - bn.forward(&(&x - &step), BnMode::BatchStats))
                        / (2.0 * eps)
                });
                let e = rel(&t.detach(), &fd);
                assert!(e < 1e-7, "affine {affine}, x on a graph {graph}: tangent vs central difference {e:e}");
                let r = Tensor::randn([4, 3, 5, 5], opts);
                let g = Tensor::run_backward(&[(&t * &r).sum(Kind::Double)], &[&d], true, false).remove(0);
                let e = rel(&g, &tangent(&r).detach());
                assert!(e < 1e-12, "affine {affine}, x on a graph {graph}: ∇ of the tangent in ẋ vs J r {e:e}");
            }
        }
    }

    /// The native function (`bn_dual.cpp`) against libtorch's own derivatives of the previous
    /// route (fused forward, the tangent as a BatchNorm backward with its graph created, so that
    /// its backward is libtorch's BatchNorm double backward), in f64: values, and the gradients
    /// in x, ẋ, γ, β of ⟨r₁, y⟩ + ⟨r₂, ẏ⟩ with either cotangent absent. Dropping either term of
    /// ∇x's second line, or Σ v ẋ̂ from ∇γ, fails here and in `tests/influence.rs`.
    #[test]
    fn native_batch_statistics_dual_matches_libtorch_double_backward() {
        let opts = (Kind::Double, Device::Cpu);
        tch::manual_seed(5);
        for affine in [false, true] {
            let mut b = Builder::new(Kind::Double);
            let bn = b.batch_norm("bn", 3, affine);
            let mut leaves: Vec<Tensor> = Vec::new();
            if let (Some(g), Some(beta)) = bn.affine() {
                tch::no_grad(|| {
                    g.shallow_clone().copy_(&(Tensor::rand([3], opts) + 0.5));
                    beta.shallow_clone().copy_(&Tensor::randn([3], opts));
                });
                leaves.extend([g.shallow_clone(), beta.shallow_clone()]);
            }
            let x0 = (Tensor::randn([4, 3, 5, 6], opts) * 2.0 + 1.0).set_requires_grad(true);
            let d = Tensor::randn([4, 3, 5, 6], opts).set_requires_grad(true);
            let (r1, r2) = (Tensor::randn([4, 3, 5, 6], opts), Tensor::randn([4, 3, 5, 6], opts));
            let mut inputs = vec![x0.shallow_clone(), d.shallow_clone()];
            inputs.extend(leaves.iter().map(|t| t.shallow_clone()));
            for (with_y, with_t) in [(true, true), (false, true), (true, false)] {
                let grads = |native: bool| {
                    let x = &x0 * 1.0;
                    let (y, t) = if native {
                        let out = bn.dual(
                            &Dual { x: x.shallow_clone(), dx: Some(d.shallow_clone()) },
                            BnMode::BatchStats,
                            &Seeds::none(),
                        );
                        (out.x, out.dx.expect("a tangent"))
                    } else {
                        let y = bn.forward(&x, BnMode::BatchStats);
                        let t = bn.batch_stats_tangent(&x, &y, &d);
                        (y, t)
                    };
                    let mut l = Tensor::zeros([], opts);
                    if with_y {
                        l = l + (&y * &r1).sum(Kind::Double);
                    }
                    if with_t {
                        l = l + (&t * &r2).sum(Kind::Double);
                    }
                    let g = Tensor::run_backward(&[l], &inputs, false, false);
                    let g: Vec<Tensor> =
                        g.into_iter().zip(&inputs).map(|(g, x)| if g.defined() { g } else { x.zeros_like() }).collect();
                    (y.detach(), t.detach(), g)
                };
                let (yn, tn, gn) = grads(true);
                let (yr, tr, gr) = grads(false);
                assert!(rel(&yn, &yr) < 1e-14 && rel(&tn, &tr) < 1e-12, "affine {affine}: values");
                for (k, (a, b)) in gn.iter().zip(&gr).enumerate() {
                    let scale = b.abs().max().double_value(&[]);
                    if scale == 0.0 {
                        assert_eq!(a.abs().max().double_value(&[]), 0.0, "affine {affine}: input {k} unreached");
                        continue;
                    }
                    let e = rel(a, b);
                    assert!(e < 1e-10, "affine {affine}, cotangents y {with_y} t {with_t}: input {k}: {e:e}");
                }
            }
            // A second derivative through the hand-written backward is refused, not wrong.
            let out = bn.dual(&Dual { x: &x0 * 1.0, dx: Some(d.shallow_clone()) }, BnMode::BatchStats, &Seeds::none());
            let l = (out.dx.expect("a tangent") * &r2).sum(Kind::Double);
            let err = Tensor::f_run_backward(&[l], &[&x0], true, true).expect_err("create_graph refused");
            assert!(err.to_string().contains("not differentiable again"), "{err}");
        }
    }
}
