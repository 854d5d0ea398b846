// Batch-statistics BatchNorm with its forward-mode tangent, as one autograd function with a
// hand-written backward (`ops::dual` calls it through `dartsif_bn_dual`).
//
// Forward: y = γ x̂ + β (libtorch's fused op) and the tangent t = γ J ẋ, where per channel
// J = (I − 11ᵀ/n − x̂x̂ᵀ/n)/σ, computed by libtorch's fused BatchNorm backward (J is symmetric).
//
// Backward, for cotangents ȳ of y and v of t (sums per channel over N, H, W; c = mean(ẋ x̂)):
//   ∇ẋ = γ J v
//   ∇x = γ J (ȳ − c v/σ) − γ/(nσ) · [Σ(v ẋ̂) x̂ + Σ(v x̂) ẋ̂],   ẋ̂ = J ẋ
//   ∇γ = Σ ȳ x̂ + Σ v ẋ̂,   ∇β = Σ ȳ
// The second line is t's dependence on x: ẋ̂ = (a − x̂ c)/σ with a = ẋ − mean ẋ, so
// δẋ̂ = −ẋ̂ mean(x̂ δ)/σ − (c Jδ + x̂ mean(a Jδ))/σ, and J a = ẋ̂. libtorch's own derivative of its
// BatchNorm backward is a general double backward of some twenty full-size kernels; this one
// reuses x̂ and ẋ̂ and costs two fused BatchNorm backwards and four per-channel reductions
// (`cargo bench --bench influence -- dual-ops`, README). The backward itself is not
// differentiable again: reverse over forward takes one backward through the tangents.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstring>
#include <string>

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

thread_local std::string last_error;

std::vector<int64_t> reduced_dims(const Tensor& t) {
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < t.dim(); ++d) dims.push_back(d);
    return dims;
}

// A per-channel vector [C] as a broadcast shape [1, C, 1, ...].
Tensor channel(const Tensor& c, int64_t dim) {
    std::vector<int64_t> shape(dim, 1);
    shape[1] = -1;
    return c.view(shape);
}

Tensor per_channel_dot(const Tensor& a, const Tensor& b) {
    return (a * b).sum(reduced_dims(a));
}

std::optional<Tensor> opt(const Tensor& t) {
    return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

struct BnDual : public torch::autograd::Function<BnDual> {
    // The affine weights as optionals: an absent one is then no input at all (an undefined tensor
    // input would be asked for its device).
    static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& dx,
                                 const std::optional<Tensor>& gamma_opt, const std::optional<Tensor>& beta_opt,
                                 double eps) {
        const Tensor gamma = gamma_opt.value_or(Tensor()), beta = beta_opt.value_or(Tensor());
        auto [y, mean, invstd] = at::native_batch_norm(x, opt(gamma), opt(beta), std::nullopt, std::nullopt, true, 0.0, eps);
        Tensor dxhat = std::get<0>(at::native_batch_norm_backward(dx, x, std::nullopt, std::nullopt, std::nullopt, mean,
                                                                  invstd, true, eps, {true, false, false}));
        Tensor t = gamma.defined() ? dxhat * channel(gamma, x.dim()) : dxhat;
        // Non-affine: y is x̂ itself and alive downstream, so it is kept instead of recomputed.
        ctx->save_for_backward({x, dx, gamma, mean, invstd, dxhat, gamma.defined() ? Tensor() : y});
        ctx->saved_data["eps"] = eps;
        // An unused output's cotangent stays undefined instead of a tensor of zeros: a backward
        // of L alone (DARTS-IM's Fisher sample) then costs what the plain BatchNorm's does.
        ctx->set_materialize_grads(false);
        return {y, t};
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        TORCH_CHECK(!at::GradMode::is_enabled(),
                    "dartsif bn_dual: the BatchNorm tangent's backward is not differentiable again "
                    "(reverse over forward takes one backward)");
        auto saved = ctx->get_saved_variables();
        const Tensor &x = saved[0], &dx = saved[1], &gamma = saved[2], &mean = saved[3], &invstd = saved[4],
                     &dxhat = saved[5];
        const double eps = ctx->saved_data["eps"].toDouble();
        const int64_t dim = x.dim();
        const double n = static_cast<double>(x.numel() / x.size(1));
        const Tensor &gy = grads[0], &v = grads[1];
        const bool want_x = ctx->needs_input_grad(0), want_dx = ctx->needs_input_grad(1);
        const bool want_gamma = gamma.defined() && ctx->needs_input_grad(2);
        const bool want_beta = gamma.defined() && ctx->needs_input_grad(3);  // affine: both or neither
        Tensor xhat = saved[6].defined() ? saved[6] : (x - channel(mean, dim)) * channel(invstd, dim);
        Tensor gx, gdx, ggamma, gbeta;
        auto bn_backward = [&](const Tensor& g) {
            return std::get<0>(at::native_batch_norm_backward(g, x, opt(gamma), std::nullopt, std::nullopt, mean,
                                                              invstd, true, eps, {true, false, false}));
        };
        Tensor svh, svx;
        if (v.defined()) {
            svh = per_channel_dot(v, dxhat);
            if (want_dx) gdx = bn_backward(v);
        }
        if (want_x && (gy.defined() || v.defined())) {
            Tensor g = gy;
            if (v.defined()) {
                Tensor c = per_channel_dot(dx, xhat) / n;
                Tensor k = channel(-(c * invstd), dim);
                g = g.defined() ? gy.addcmul(v, k) : v * k;
            }
            gx = bn_backward(g);
            if (v.defined()) {
                svx = per_channel_dot(v, xhat);
                Tensor scale = invstd / n;
                if (gamma.defined()) scale = scale * gamma;
                gx.addcmul_(xhat, channel(-(scale * svh), dim)).addcmul_(dxhat, channel(-(scale * svx), dim));
            }
        }
        if (want_gamma) {
            if (gy.defined()) ggamma = per_channel_dot(gy, xhat);
            if (v.defined()) ggamma = ggamma.defined() ? ggamma + svh : svh;
        }
        if (want_beta && gy.defined()) gbeta = gy.sum(reduced_dims(gy));
        return {gx, gdx, ggamma, gbeta, Tensor()};
    }
};

}  // namespace

extern "C" {

// y and t for x, ẋ and the optional affine weights (null: none). Returns 0 and sets *y, *t to
// new tensors, or 1 with the message in `dartsif_last_error`.
int dartsif_bn_dual(const at::Tensor* x, const at::Tensor* dx, const at::Tensor* gamma, const at::Tensor* beta,
                    double eps, at::Tensor** y, at::Tensor** t) {
    try {
        auto out = BnDual::apply(*x, *dx, gamma ? std::optional<Tensor>(*gamma) : std::nullopt,
                                 beta ? std::optional<Tensor>(*beta) : std::nullopt, eps);
        *y = new at::Tensor(out[0]);
        *t = new at::Tensor(out[1]);
        return 0;
    } catch (const std::exception& e) {
        last_error = e.what();
        return 1;
    }
}

// The message of this thread's last failed call (valid until the next call).
const char* dartsif_last_error() {
    return last_error.c_str();
}
}
