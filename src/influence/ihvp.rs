//! Inverse-Hessian-vector products `H⁻¹v` behind one interface.
//!
//! | solver | operator | cost |
//! |---|---|---|
//! | `identity` | I | none |
//! | `neumann` | γ Σ_{k≤K} (I − γ(H+λI))^k (Lemma 1 with its γ factor) | K all-reduced HVPs |
//! | `sherman-morrison` | F⁻¹, F = ηI + (1/N) Σ g_j g_jᵀ, Lemma 2's sequential recursion | O(N²P) BLAS-2 |
//! | `woodbury` | the same F⁻¹ in batched form | one Gram GEMM, O(N²P) |
//! | `cg` | (H + λI)⁻¹ by conjugate gradients | one HVP per iteration |
//! | `exact` | dense F or H + λI, solved in f64 (small models only) | P HVPs or a P×P matrix |
//! | `kfac` | per-layer Kronecker factors of the Fisher + λI ([`super::kfac`]) | one pass over the N batches, an eigendecomposition per layer |
//! | `ekfac` | the same eigenbasis, eigenvalues fitted to per-sample gradients | two passes |

use tch::{Kind, Tensor};

use super::fisher::{all_gather_coords, coord_range, ShardedGrads, ShermanMorrison, Woodbury};
use super::flat::{dot, norm};
use super::kfac::Kfac;
use super::probe::{Probe, Timings};
use crate::config::{Curvature, DampingRule, SelectConfig};
use crate::error::{Error, Result};

/// What a solve reports besides its result.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SolveInfo {
    /// HVPs or iterations used.
    pub iterations: usize,
    /// CG: the relative residual ‖(H+λI)x − v‖/‖v‖ reached.
    pub residual: Option<f64>,
    /// The damping used (λ, or η of the Fisher solvers), after `select.damping_rule`.
    pub damping: Option<f64>,
}

enum Method {
    Identity,
    Neumann {
        gamma: f64,
        k: usize,
        damping: f64,
        curvature: Curvature,
    },
    Cg {
        damping: f64,
        tol: f64,
        max_iter: usize,
        curvature: Curvature,
    },
    Woodbury(Woodbury),
    ShermanMorrison(ShermanMorrison),
    /// LU factors and pivots of a dense matrix (f64), the same on every rank.
    Dense(Tensor, Tensor),
    /// K-FAC or EK-FAC, held whole by every rank.
    Kfac(Box<Kfac>),
}

/// An IHVP solver for one probe.
pub struct Solver {
    kind: Method,
    pub name: String,
    /// The damping used (λ, or η of the Fisher solvers), after `select.damping_rule`.
    pub damping: f64,
}

/// Whether a solver needs the Fisher's gradient samples.
pub fn needs_fisher(cfg: &SelectConfig) -> bool {
    matches!(cfg.ihvp, crate::config::Ihvp::Woodbury | crate::config::Ihvp::ShermanMorrison)
        || (cfg.ihvp == crate::config::Ihvp::Exact && cfg.exact_matrix == crate::config::ExactMatrix::Fisher)
}

impl Solver {
    /// Build the solver; `samples` are this rank's Fisher gradient samples `(j, g_j)` when
    /// already computed (DARTS-IM's first pass yields them), else they are computed here.
    pub fn build(cfg: &SelectConfig, probe: &Probe, samples: Option<Vec<(usize, Tensor)>>) -> Result<Self> {
        let fisher = || fisher_samples(cfg, probe, samples);
        Self::with_fisher(cfg, probe, fisher, None)
    }

    /// The solver of `cfg` on a prefix of shared Fisher samples (ablations over N): `shared`
    /// holds all samples of the largest N and their Gram; this solver takes the leading `n`.
    pub fn build_prefix(cfg: &SelectConfig, probe: &Probe, shared: &SharedFisher) -> Result<Self> {
        let n = probe.n_batches();
        let gram = shared.gram.as_ref().map(|k| k.narrow(0, 0, n as i64).narrow(1, 0, n as i64).copy());
        Self::with_fisher(cfg, probe, || Ok(shared.grads.prefix(n)), gram)
    }

    fn with_fisher(
        cfg: &SelectConfig,
        probe: &Probe,
        fisher: impl FnOnce() -> Result<ShardedGrads>,
        gram: Option<Tensor>,
    ) -> Result<Self> {
        let t = probe.timings;
        let p = probe.n_params();
        let rule = cfg.damping_rule == DampingRule::MeanEigenvalue;
        // λ of the curvature-product solvers (their curvature: exact's matrix, else select.curvature).
        let lambda = |curvature: Curvature| -> Result<f64> {
            Ok(if rule { cfg.damping_fraction * mean_eigenvalue(probe, curvature)? } else { cfg.damping })
        };
        // η of the Fisher solvers.
        let eta = |grads: &ShardedGrads| -> Result<f64> {
            Ok(if rule { cfg.damping_fraction * fisher_mean_eigenvalue(probe.comm, grads)? } else { cfg.eta })
        };
        let mut damping = 0.0;
        let kind = match cfg.ihvp {
            crate::config::Ihvp::Identity => Method::Identity,
            crate::config::Ihvp::Neumann => {
                damping = lambda(cfg.curvature)?;
                Method::Neumann { gamma: cfg.gamma, k: cfg.k, damping, curvature: cfg.curvature }
            }
            crate::config::Ihvp::Cg => {
                damping = lambda(cfg.curvature)?;
                Method::Cg { damping, tol: cfg.cg_tol, max_iter: cfg.cg_max_iter, curvature: cfg.curvature }
            }
            crate::config::Ihvp::Woodbury => {
                let grads = fisher()?;
                damping = eta(&grads)?;
                Method::Woodbury(match gram {
                    Some(k) => Woodbury::from_gram(grads, k, damping, t)?,
                    None => Woodbury::new(probe.comm, grads, damping, t)?,
                })
            }
            crate::config::Ihvp::ShermanMorrison => {
                let grads = fisher()?;
                damping = eta(&grads)?;
                Method::ShermanMorrison(ShermanMorrison::new(probe.comm, grads, damping, t)?)
            }
            crate::config::Ihvp::Kfac | crate::config::Ihvp::Ekfac => {
                let k = Kfac::build(cfg, probe, cfg.ihvp == crate::config::Ihvp::Ekfac)?;
                damping = k.damping;
                Method::Kfac(Box::new(k))
            }
            crate::config::Ihvp::Exact => {
                if p > cfg.exact_max_params {
                    return Err(Error::config(
                        "select",
                        "select.ihvp",
                        format!(
                            "exact forms a dense {p}×{p} matrix, above select.exact_max_params = {}; use woodbury, sherman-morrison, neumann or cg",
                            cfg.exact_max_params
                        ),
                    ));
                }
                let m = match cfg.exact_matrix {
                    crate::config::ExactMatrix::Fisher => {
                        let grads = fisher()?;
                        damping = eta(&grads)?;
                        dense_fisher(probe, grads, damping)?
                    }
                    crate::config::ExactMatrix::Hessian => {
                        damping = lambda(Curvature::Hessian)?;
                        dense_hessian(probe, damping)?
                    }
                    crate::config::ExactMatrix::Ggn => {
                        damping = lambda(Curvature::Ggn)?;
                        dense_ggn(probe, damping)?
                    }
                };
                let (lu, piv) = Timings::add(&t.linalg, || Tensor::linalg_lu_factor(&m, true));
                Method::Dense(lu, piv)
            }
        };
        Ok(Solver { kind, name: cfg.ihvp.to_string(), damping })
    }

    /// What scores.json reports about the curvature beyond [`SolveInfo`]: K-FAC's blocks,
    /// factor memory and per-rank times; null for the other solvers.
    pub fn curvature_info(&self) -> serde_json::Value {
        match &self.kind {
            Method::Kfac(k) => serde_json::to_value(&k.info).unwrap_or(serde_json::Value::Null),
            _ => serde_json::Value::Null,
        }
    }

    /// The K-FAC operator, for `kfac`/`ekfac` solvers.
    pub fn kfac(&self) -> Option<&Kfac> {
        match &self.kind {
            Method::Kfac(k) => Some(k),
            _ => None,
        }
    }

    /// H⁻¹v for a full-length v that is the same on every rank (collective).
    pub fn solve(&self, probe: &Probe, v: &Tensor) -> Result<(Tensor, SolveInfo)> {
        let (x, mut info) = self.solve_inner(probe, v)?;
        info.damping = (!matches!(self.kind, Method::Identity)).then_some(self.damping);
        Ok((x, info))
    }

    fn solve_inner(&self, probe: &Probe, v: &Tensor) -> Result<(Tensor, SolveInfo)> {
        let t = probe.timings;
        match &self.kind {
            Method::Identity => Ok((v.shallow_clone(), SolveInfo::default())),
            Method::Woodbury(w) => Ok((w.solve(probe.comm, v, t)?, SolveInfo::default())),
            Method::ShermanMorrison(s) => Ok((s.solve(probe.comm, v, t)?, SolveInfo::default())),
            Method::Dense(lu, piv) => {
                let x = Timings::add(&t.linalg, || lu_solve(lu, piv, &v.to_kind(Kind::Double)).to_kind(v.kind()));
                Ok((x, SolveInfo::default()))
            }
            Method::Kfac(k) => Ok((k.solve(probe, v), SolveInfo::default())),
            Method::Neumann { gamma, k, damping, curvature } => neumann(probe, v, *gamma, *k, *damping, *curvature),
            Method::Cg { damping, tol, max_iter, curvature } => cg(probe, v, *damping, *tol, *max_iter, *curvature),
        }
    }

    /// `vᵀH⁻¹v` for this rank's vector, in a round where each rank brings at most one vector
    /// (collective: every rank calls it the same number of times). Returns this rank's value.
    pub fn quad_own(&self, probe: &Probe, mine: Option<&Tensor>) -> Result<Option<f64>> {
        let comm = probe.comm;
        let t = probe.timings;
        match &self.kind {
            Method::Identity => Ok(mine.map(|v| dot(v, v))),
            Method::Kfac(k) => Ok(mine.map(|v| dot(v, &k.solve(probe, v)))),
            Method::Dense(lu, piv) => Ok(mine.map(|v| {
                Timings::add(&t.linalg, || {
                    let v = v.to_kind(Kind::Double);
                    dot(&v, &lu_solve(lu, piv, &v))
                })
            })),
            Method::Woodbury(w) => {
                // Each rank sends every other rank that rank's coordinate slice of its vector;
                // then all quadratic forms of the round cost N·m + m all-reduced numbers.
                let (ws, r) = (comm.size(), comm.rank());
                let p = probe.n_params();
                let send: Vec<Vec<u8>> = (0..ws)
                    .map(|s| match mine {
                        None => Vec::new(),
                        Some(v) => {
                            let (lo, hi) = coord_range(p, s, ws);
                            let sl = v.narrow(0, lo as i64, (hi - lo) as i64).to_kind(Kind::Double).contiguous();
                            Vec::<f64>::try_from(&sl).expect("f64").iter().flat_map(|x| x.to_le_bytes()).collect()
                        }
                    })
                    .collect();
                let recv = Timings::add(&t.comm, || comm.all_to_all_bytes(send))?;
                let present: Vec<usize> = (0..ws).filter(|&s| !recv[s].is_empty()).collect();
                if present.is_empty() {
                    return Ok(None);
                }
                let rows: Vec<Tensor> = present
                    .iter()
                    .map(|&s| {
                        let vals: Vec<f64> =
                            recv[s].chunks(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
                        Tensor::from_slice(&vals).to_device(probe.device())
                    })
                    .collect();
                let q = w.quad_local_slices(comm, &Tensor::stack(&rows, 0), t)?;
                Ok(present.iter().position(|&s| s == r).map(|i| q[i]))
            }
            _ => {
                // Solvers built on collective HVPs or sharded factors: take the round's vectors
                // one at a time, from each owner, through the collective solve.
                let mut own = None;
                for s in 0..comm.size() {
                    let mut bytes = match (s == comm.rank(), mine) {
                        (true, Some(v)) => to_f64_bytes(v),
                        _ => Vec::new(),
                    };
                    Timings::add(&t.comm, || comm.broadcast_bytes(s, &mut bytes))?;
                    if bytes.is_empty() {
                        continue;
                    }
                    let v = from_f64_bytes(&bytes).to_device(probe.device()).to_kind(probe.kind());
                    let (x, _) = self.solve(probe, &v)?;
                    if s == comm.rank() {
                        own = Some(dot(&v, &x));
                    }
                }
                Ok(own)
            }
        }
    }
}

/// The Fisher's gradient samples, exchanged so each rank holds its coordinate slice of all of
/// them: `samples` when already computed (DARTS-IM's first pass), else computed here.
fn fisher_samples(cfg: &SelectConfig, probe: &Probe, samples: Option<Vec<(usize, Tensor)>>) -> Result<ShardedGrads> {
    let sampled = cfg.fisher_labels == crate::config::FisherLabels::Sampled;
    let per_batch = cfg.fisher_samples == crate::config::FisherSamples::Batch;
    let (own, n) = match samples {
        // DARTS-IM's first pass: per-batch gradients with the data's labels.
        Some(s) if !sampled => (s, probe.n_batches()),
        _ if !per_batch => {
            let s = probe.sample_grads(cfg.fisher_labels)?;
            let m = probe.batch_size();
            (s, probe.n_batches() * m)
        }
        _ => (probe.batch_grads(cfg.fisher_labels), probe.n_batches()),
    };
    // F = ηI + s·(1/N)Σ g gᵀ: scale each sample by √s; per-batch gradients of sampled labels
    // also by √m (their covariance is the per-sample Fisher over m).
    let scale = cfg.fisher_scale * if sampled && per_batch { probe.batch_size() as f64 } else { 1.0 };
    let own = if scale == 1.0 { own } else { own.into_iter().map(|(j, g)| (j, g * scale.sqrt())).collect() };
    ShardedGrads::exchange(probe.comm, own, n, probe.n_params(), probe.device(), probe.timings)
}

/// Fisher samples of the largest N and their Gram, shared by the solvers of an N-ablation.
pub struct SharedFisher {
    pub grads: ShardedGrads,
    /// GᵀG summed over ranks (Woodbury's; `None` when no Woodbury solver is built).
    pub gram: Option<Tensor>,
}

impl SharedFisher {
    pub fn new(cfg: &SelectConfig, probe: &Probe, samples: Vec<(usize, Tensor)>, with_gram: bool) -> Result<Self> {
        let grads = fisher_samples(cfg, probe, Some(samples))?;
        let gram = if with_gram { Some(grads.gram(probe.comm, probe.timings)?) } else { None };
        Ok(SharedFisher { grads, gram })
    }
}

/// Solve with LU factors from `linalg_lu_factor`.
fn lu_solve(lu: &Tensor, piv: &Tensor, v: &Tensor) -> Tensor {
    Tensor::linalg_lu_solve(lu, piv, &v.unsqueeze(1), true, false).squeeze_dim(1)
}

fn to_f64_bytes(v: &Tensor) -> Vec<u8> {
    Vec::<f64>::try_from(&v.to_kind(Kind::Double).contiguous())
        .expect("f64")
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect()
}

fn from_f64_bytes(b: &[u8]) -> Tensor {
    let vals: Vec<f64> = b.chunks(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
    Tensor::from_slice(&vals)
}

/// (C + λI)u through the probe, C the Hessian or the GGN.
fn damped_hvp(probe: &Probe, u: &Tensor, damping: f64, curvature: Curvature) -> Result<Tensor> {
    let h = match curvature {
        Curvature::Hessian => probe.hvp(u)?,
        Curvature::Ggn => probe.ggn_vp(u)?,
    };
    Ok(if damping != 0.0 { h + u * damping } else { h })
}

/// Lemma 1: V_0 = γv, V_k = (I − γA)V_{k−1}, H⁻¹v ≈ Σ_{k≤K} V_k with A = H + λI. Stops when a
/// term grows past 1.5× the first (γ ≥ 2/λmax, or strong negative curvature), suggesting γ.
fn neumann(
    probe: &Probe,
    v: &Tensor,
    gamma: f64,
    k: usize,
    damping: f64,
    curvature: Curvature,
) -> Result<(Tensor, SolveInfo)> {
    let mut term = v * gamma;
    let mut acc = term.copy();
    let first = norm(&term);
    for step in 1..=k {
        let a = damped_hvp(probe, &term, damping, curvature)?;
        term = &term - a * gamma;
        let nk = norm(&term);
        if !nk.is_finite() || nk > 1.5 * first {
            let lam = power_iteration(probe, v, damping, curvature, 20)?;
            return Err(Error::config(
                "select",
                "select.gamma",
                format!(
                    "the Neumann series diverges: ‖V_{step}‖ = {:.3e} · ‖V_0‖ with γ = {gamma}; power iteration gives |λ|max ≈ {lam:.4e}, \
                     so γ must stay below 2/|λ|max ≈ {:.3e} (try select.gamma = {:.3e}){}",
                    nk / first,
                    2.0 / lam,
                    1.0 / lam,
                    if damping == 0.0 { "; with negative curvature also raise select.damping" } else { "" }
                ),
            ));
        }
        acc += &term;
    }
    Ok((acc, SolveInfo { iterations: k, residual: None, damping: None }))
}

/// Largest |eigenvalue| of H + λI by power iteration from `start`.
pub fn power_iteration(probe: &Probe, start: &Tensor, damping: f64, curvature: Curvature, iters: usize) -> Result<f64> {
    let mut x = start / norm(start).max(1e-300);
    let mut lam = 0.0;
    for _ in 0..iters {
        let y = damped_hvp(probe, &x, damping, curvature)?;
        lam = norm(&y);
        if lam == 0.0 || !lam.is_finite() {
            break;
        }
        x = y / lam;
    }
    Ok(lam)
}

/// Conjugate gradients on (C + λI)x = v, C the Hessian or the GGN.
fn cg(
    probe: &Probe,
    v: &Tensor,
    damping: f64,
    tol: f64,
    max_iter: usize,
    curvature: Curvature,
) -> Result<(Tensor, SolveInfo)> {
    let vn = norm(v);
    let mut x = v.zeros_like();
    if vn == 0.0 {
        return Ok((x, SolveInfo { iterations: 0, residual: Some(0.0), damping: None }));
    }
    let mut r = v.copy();
    let mut p = r.copy();
    let mut rs = dot(&r, &r);
    let mut iters = 0;
    while iters < max_iter && rs.sqrt() / vn > tol {
        let ap = damped_hvp(probe, &p, damping, curvature)?;
        let pap = dot(&p, &ap);
        if pap <= 0.0 || !pap.is_finite() {
            return Err(Error::config(
                "select",
                "select.damping",
                format!("CG met non-positive curvature pᵀ(H+λI)p = {pap:.3e} at iteration {iters}: H + λI is not positive definite; raise select.damping (now {damping})"),
            ));
        }
        let a = rs / pap;
        x += &p * a;
        r -= ap * a;
        let rs_new = dot(&r, &r);
        p = &r + p * (rs_new / rs);
        rs = rs_new;
        iters += 1;
    }
    // The recursive residual drifts from the true one in floating point: report the true one.
    let true_r = norm(&(damped_hvp(probe, &x, damping, curvature)? - v)) / vn;
    Ok((x, SolveInfo { iterations: iters, residual: Some(true_r), damping: None }))
}

/// trace(C)/P of the Hessian or GGN by Hutchinson's estimator: the mean of uᵀCu over 8
/// Rademacher vectors u, drawn from a fixed key (the same on every rank: each product is
/// collective).
pub fn mean_eigenvalue(probe: &Probe, curvature: Curvature) -> Result<f64> {
    let p = probe.n_params();
    let mut rng = crate::rng::SplitMix64::keyed(&[0x4875_7463_6869_6e73, p as u64]);
    let probes = 8;
    let mut sum = 0.0;
    for _ in 0..probes {
        let signs: Vec<f64> = (0..p).map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 }).collect();
        let u = Tensor::from_slice(&signs).to_kind(probe.kind()).to_device(probe.device());
        sum += dot(&u, &damped_hvp(probe, &u, 0.0, curvature)?);
    }
    Ok(sum / (probes * p) as f64)
}

/// trace(GGᵀ/N)/P = ‖G‖²_F/(N·P), the empirical Fisher's mean eigenvalue, from the samples
/// (one sample's slice at a time in f64: no f64 copy of the whole store).
pub fn fisher_mean_eigenvalue(comm: &dyn crate::comm::Collective, grads: &ShardedGrads) -> Result<f64> {
    let local: f64 = (0..grads.n as i64)
        .map(|j| grads.g.get(j).to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]))
        .sum();
    let mut s = [local];
    comm.all_reduce_sum_f64(&mut s)?;
    Ok(s[0] / (grads.n * grads.p) as f64)
}

/// Jᵀ H_z J + λI formed densely (symmetrised), f64.
pub fn dense_ggn(probe: &Probe, damping: f64) -> Result<Tensor> {
    let g = probe.dense_ggn()?;
    let p = g.size()[0];
    Ok((&g + g.tr()) / 2.0 + Tensor::eye(p, (Kind::Double, g.device())) * damping)
}

/// H + λI formed densely (symmetrised), f64.
pub fn dense_hessian(probe: &Probe, damping: f64) -> Result<Tensor> {
    let h = probe.dense_hessian()?;
    let p = h.size()[0];
    Ok((&h + h.tr()) / 2.0 + Tensor::eye(p, (Kind::Double, h.device())) * damping)
}

/// ηI + (1/N) GGᵀ formed densely (f64) from the sharded samples.
fn dense_fisher(probe: &Probe, grads: ShardedGrads, eta: f64) -> Result<Tensor> {
    let rows: Vec<Tensor> = (0..grads.n as i64)
        .map(|j| {
            all_gather_coords(probe.comm, &grads.g.get(j), grads.p, probe.timings).map(|t| t.to_kind(Kind::Double))
        })
        .collect::<Result<_>>()?;
    let g = Tensor::stack(&rows, 0);
    let p = grads.p as i64;
    Ok(Timings::add(&probe.timings.linalg, || {
        g.tr().matmul(&g) / grads.n as f64 + Tensor::eye(p, (Kind::Double, g.device())) * eta
    }))
}
