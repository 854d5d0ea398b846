//! The damped empirical Fisher `F = ηI + (1/N) Σ_j g_j g_jᵀ` and its inverse, distributed by
//! parameter coordinates (paper.md §6, option 2).
//!
//! Each rank computes the gradients g_j of its own batches; one all-to-all then leaves rank r
//! with rows `[lo_r, hi_r)` of every g_j, so a rank stores N·P/W numbers. Everything the
//! inverse needs across ranks is small: the N×N Gram matrix, N-vectors of dot products, and
//! scalars. Two inverses are offered, equal in exact arithmetic:
//!
//! * [`Woodbury`]: `F⁻¹V = η⁻¹(V − G(NηI + GᵀG)⁻¹GᵀV)`, Gram and Cholesky solve in f64;
//! * [`ShermanMorrison`]: Lemma 2 as written, the sequential recursion
//!   `r_j = g_j/η − Σ_{i<j} r_i (r_iᵀg_j)/d_i`, `d_j = N + g_jᵀr_j`, `F⁻¹v = v/η − Σ_j r_j (r_jᵀv)/d_j`.

use tch::{Kind, Tensor};

use super::probe::Timings;
use crate::comm::Collective;
use crate::error::{Error, Result};

/// Coordinate range `[lo, hi)` of rank `r` of `w` over `p` coordinates.
pub fn coord_range(p: usize, r: usize, w: usize) -> (usize, usize) {
    (p * r / w, p * (r + 1) / w)
}

fn to_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.contiguous();
    let mut b = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut b, t.numel());
    b
}

/// Make a flat vector whole on every rank from each rank's coordinate slice (a sum of disjoint,
/// zero-padded slices: exact).
pub fn all_gather_coords(comm: &dyn Collective, local: &Tensor, p: usize, timings: &Timings) -> Result<Tensor> {
    let (lo, hi) = coord_range(p, comm.rank(), comm.size());
    if comm.size() == 1 {
        return Ok(local.shallow_clone());
    }
    let full = Tensor::zeros([p as i64], (local.kind(), local.device()));
    full.narrow(0, lo as i64, (hi - lo) as i64).copy_(local);
    Timings::add(&timings.comm, || comm.all_reduce_sum_tensors(std::slice::from_ref(&full)))?;
    Ok(full)
}

/// Rows `[lo, hi)` of every gradient sample g_j, as an `[N, hi − lo]` matrix.
pub struct ShardedGrads {
    pub n: usize,
    pub p: usize,
    pub lo: usize,
    pub hi: usize,
    pub g: Tensor,
}

impl ShardedGrads {
    /// Redistribute per-rank samples `(j, g_j)` (full length P; j a global index < n) so every
    /// rank holds its coordinate slice of all n samples, ordered by j.
    pub fn exchange(
        comm: &dyn Collective,
        own: Vec<(usize, Tensor)>,
        n: usize,
        p: usize,
        device: tch::Device,
        timings: &Timings,
    ) -> Result<Self> {
        let (w, r) = (comm.size(), comm.rank());
        let (lo, hi) = coord_range(p, r, w);
        let kind = own.first().map(|(_, g)| g.kind()).unwrap_or(Kind::Float);
        let kind = Self::agree_kind(comm, kind)?;
        // N samples of this rank's coordinate slice: sized by select.n (and the model), so an
        // allocation that fails is a message naming it, not a panic.
        let bytes = (n * (hi - lo) * kind.elt_size_in_bytes()) as u64;
        let on_host = device == tch::Device::Cpu;
        let fits = !on_host || bytes <= crate::ops::layers::available_memory();
        let g = fits.then(|| Tensor::f_zeros([n as i64, (hi - lo) as i64], (kind, device)).ok()).flatten().ok_or_else(
            || {
                let msg = format!(
                    "the {n} Fisher samples of {} weights on this rank need {:.1} GiB, which cannot be allocated \
                     here: lower select.n, or use more ranks (each holds a slice of every sample)",
                    hi - lo,
                    bytes as f64 / (1u64 << 30) as f64
                );
                crate::comm::fail_alone(comm, Error::config("select", "select.n", msg))
            },
        )?;
        if w == 1 {
            for (j, gj) in &own {
                g.get(*j as i64).copy_(gj);
            }
            return Ok(ShardedGrads { n, p, lo, hi, g });
        }
        let send: Vec<Vec<u8>> = (0..w)
            .map(|s| {
                let (slo, shi) = coord_range(p, s, w);
                let mut b = Vec::new();
                for (j, gj) in &own {
                    b.extend_from_slice(&(*j as u64).to_le_bytes());
                    b.extend_from_slice(&to_bytes(&gj.narrow(0, slo as i64, (shi - slo) as i64)));
                }
                b
            })
            .collect();
        let recv = Timings::add(&timings.comm, || comm.all_to_all_bytes(send))?;
        let row_bytes = (hi - lo) * kind.elt_size_in_bytes();
        let mut seen = vec![false; n];
        for buf in recv {
            for rec in buf.chunks(8 + row_bytes) {
                if rec.len() != 8 + row_bytes {
                    return Err(Error::Comm("gradient exchange: truncated record".into()));
                }
                let j = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes")) as usize;
                if j >= n || seen[j] {
                    return Err(Error::Comm(format!("gradient exchange: sample {j} out of range or repeated")));
                }
                seen[j] = true;
                let row = Tensor::from_data_size(&rec[8..], &[(hi - lo) as i64], kind);
                g.get(j as i64).copy_(&row);
            }
        }
        if let Some(j) = seen.iter().position(|s| !s) {
            return Err(Error::Comm(format!("gradient exchange: no rank sent sample {j}")));
        }
        Ok(ShardedGrads { n, p, lo, hi, g })
    }

    fn agree_kind(comm: &dyn Collective, kind: Kind) -> Result<Kind> {
        Ok(if comm.any(kind == Kind::Double)? { Kind::Double } else { Kind::Float })
    }

    /// The first `n` samples (shared storage): the Fisher of a selection with N = n.
    pub fn prefix(&self, n: usize) -> Self {
        ShardedGrads { n, p: self.p, lo: self.lo, hi: self.hi, g: self.g.narrow(0, 0, n as i64) }
    }

    /// This rank's slice of a full-length vector.
    pub fn local<'t>(&self, v: &'t Tensor) -> Tensor {
        v.narrow(0, self.lo as i64, (self.hi - self.lo) as i64)
    }

    /// `Gᵀ V` restricted to this rank's rows, for local slices `v` of shape `[hi − lo]` or
    /// `[m, hi − lo]`: `[N]` or `[N, m]` partial sums, in f64 throughout: each column chunk of G
    /// is converted to f64 (exactly) before the product, as for the Gram matrix. Woodbury
    /// subtracts G(·) from v and divides by η, which amplifies any rounding of these products by
    /// ‖v‖²/(η·‖F⁻¹v‖·‖v‖) — a factor of thousands at η = 5e-4 — so f32 products are not enough.
    fn partial_gt(&self, v_local: &Tensor) -> Tensor {
        let v = if v_local.dim() == 1 { v_local.unsqueeze(0) } else { v_local.shallow_clone() };
        let v = v.to_kind(Kind::Double);
        let mut out = Tensor::zeros([self.n as i64, v.size()[0]], (Kind::Double, self.g.device()));
        self.for_chunks(|c, len| {
            out += self.g.narrow(1, c, len).to_kind(Kind::Double).matmul(&v.narrow(1, c, len).tr())
        });
        if v_local.dim() == 1 {
            out.squeeze_dim(1)
        } else {
            out
        }
    }

    /// `G y` restricted to this rank's rows, for y of shape [N], in f64 (G's chunks converted as
    /// in [`Self::partial_gt`]).
    fn partial_g(&self, y: &Tensor) -> Tensor {
        let out = Tensor::zeros([(self.hi - self.lo) as i64], (Kind::Double, self.g.device()));
        let y = y.to_kind(Kind::Double);
        self.for_chunks(|c, len| {
            out.narrow(0, c, len).copy_(&self.g.narrow(1, c, len).to_kind(Kind::Double).tr().mv(&y))
        });
        out
    }

    /// Visit column chunks `[c, c + len)` of this rank's rows.
    fn for_chunks(&self, mut f: impl FnMut(i64, i64)) {
        let cols = (self.hi - self.lo) as i64;
        let chunk = 1i64 << 16;
        let mut c = 0;
        while c < cols {
            let len = chunk.min(cols - c);
            f(c, len);
            c += len;
        }
    }

    /// The Gram matrix GᵀG (N×N, f64), summed over ranks. Computed in f64 over column chunks (the
    /// f64 copy stays small) and by row blocks, only the blocks on and above the diagonal (the
    /// matrix is symmetric): about (B+1)/(2B) of a full GEMM's 2N²P flops for B blocks.
    pub fn gram(&self, comm: &dyn Collective, timings: &Timings) -> Result<Tensor> {
        let n = self.n as i64;
        // Blocks of at least 64 rows keep each GEMM efficient.
        let blocks = (n / 64).clamp(1, 8);
        let bounds: Vec<i64> = (0..=blocks).map(|b| n * b / blocks).collect();
        let k = Timings::add(&timings.linalg, || {
            let k = Tensor::zeros([n, n], (Kind::Double, self.g.device()));
            self.for_chunks(|c, len| {
                let gc = self.g.narrow(1, c, len).to_kind(Kind::Double);
                for bi in 0..blocks as usize {
                    let (i0, i1) = (bounds[bi], bounds[bi + 1]);
                    let gi = gc.narrow(0, i0, i1 - i0);
                    for bj in bi..blocks as usize {
                        let (j0, j1) = (bounds[bj], bounds[bj + 1]);
                        let mut kb = k.narrow(0, i0, i1 - i0).narrow(1, j0, j1 - j0);
                        kb += gi.matmul(&gc.narrow(0, j0, j1 - j0).tr());
                    }
                }
            });
            // Mirror the upper blocks into the lower triangle of blocks.
            for bi in 0..blocks as usize {
                for bj in 0..bi {
                    let (i0, i1, j0, j1) = (bounds[bi], bounds[bi + 1], bounds[bj], bounds[bj + 1]);
                    let upper = k.narrow(0, j0, j1 - j0).narrow(1, i0, i1 - i0).tr().copy();
                    k.narrow(0, i0, i1 - i0).narrow(1, j0, j1 - j0).copy_(&upper);
                }
            }
            k
        });
        Timings::add(&timings.comm, || comm.all_reduce_sum_tensors(std::slice::from_ref(&k)))?;
        Ok(k)
    }
}

/// Batched Woodbury inverse of the damped empirical Fisher.
pub struct Woodbury {
    pub grads: ShardedGrads,
    pub eta: f64,
    /// Lower Cholesky factor of `NηI + GᵀG` (f64).
    chol: Tensor,
}

impl Woodbury {
    pub fn new(comm: &dyn Collective, grads: ShardedGrads, eta: f64, timings: &Timings) -> Result<Self> {
        let k = grads.gram(comm, timings)?;
        Self::from_gram(grads, k, eta, timings)
    }

    /// From a Gram matrix already summed over ranks (for an N-ablation: the leading N×N block of
    /// the largest N's Gram, whose entries are the same dot products).
    pub fn from_gram(grads: ShardedGrads, k: Tensor, eta: f64, timings: &Timings) -> Result<Self> {
        let n = grads.n as i64;
        let eye = Tensor::eye(n, (Kind::Double, k.device()));
        let a = k + eye * (grads.n as f64 * eta);
        let chol = Timings::add(&timings.linalg, || a.f_linalg_cholesky(false))
            .map_err(|e| Error::Invalid(format!("Woodbury: NηI + GᵀG is not positive definite ({e})")))?;
        Ok(Woodbury { grads, eta, chol })
    }

    /// (NηI + GᵀG)⁻¹ C for C of shape [N] or [N, m] (f64).
    fn inner_solve(&self, c: &Tensor) -> Tensor {
        let c2 = if c.dim() == 1 { c.unsqueeze(1) } else { c.shallow_clone() };
        let y = c2.cholesky_solve(&self.chol, false);
        if c.dim() == 1 {
            y.squeeze_dim(1)
        } else {
            y
        }
    }

    /// F⁻¹v for a full-length v (the same on every rank); returns the full-length result.
    pub fn solve(&self, comm: &dyn Collective, v: &Tensor, timings: &Timings) -> Result<Tensor> {
        let vl = self.grads.local(v);
        let c = Timings::add(&timings.linalg, || self.grads.partial_gt(&vl));
        Timings::add(&timings.comm, || comm.all_reduce_sum_tensors(std::slice::from_ref(&c)))?;
        let out_local = Timings::add(&timings.linalg, || {
            let y = self.inner_solve(&c);
            let gy = self.grads.partial_g(&y);
            ((vl.to_kind(Kind::Double) - gy) / self.eta).to_kind(v.kind())
        });
        all_gather_coords(comm, &out_local, self.grads.p, timings)
    }

    /// vᵀF⁻¹v = η⁻¹(‖v‖² − aᵀ(NηI + GᵀG)⁻¹a), a = Gᵀv, for each rank's local slices: `locals`
    /// are slices `[m, hi − lo]` of m vectors (the same m on every rank). Only `N·m + m` numbers
    /// are all-reduced.
    pub fn quad_local_slices(&self, comm: &dyn Collective, locals: &Tensor, timings: &Timings) -> Result<Vec<f64>> {
        let m = locals.size()[0];
        let (a, sq) = Timings::add(&timings.linalg, || {
            let v = locals.to_kind(Kind::Double);
            (self.grads.partial_gt(&v), v.square().sum_dim_intlist(1, false, Kind::Double))
        });
        let both = Tensor::cat(&[a.reshape([-1]), sq], 0);
        Timings::add(&timings.comm, || comm.all_reduce_sum_tensors(std::slice::from_ref(&both)))?;
        let n = self.grads.n as i64;
        let a = both.narrow(0, 0, n * m).view([n, m]);
        let sq = both.narrow(0, n * m, m);
        let q = Timings::add(&timings.linalg, || {
            let y = self.inner_solve(&a);
            ((sq - (a * y).sum_dim_intlist(0, false, Kind::Double)) / self.eta).contiguous()
        });
        Ok(Vec::<f64>::try_from(&q).expect("f64"))
    }
}

/// Lemma 2's sequential Sherman–Morrison recursion, sharded by coordinates (its dot products are
/// all-reduced).
pub struct ShermanMorrison {
    pub grads: ShardedGrads,
    pub eta: f64,
    /// r_j slices, `[N, hi − lo]`.
    r: Tensor,
    d: Vec<f64>,
}

impl ShermanMorrison {
    pub fn new(comm: &dyn Collective, grads: ShardedGrads, eta: f64, timings: &Timings) -> Result<Self> {
        let n = grads.n;
        let nf = n as f64;
        let r = grads.g.zeros_like().to_kind(Kind::Double);
        let mut d = Vec::with_capacity(n);
        for j in 0..n {
            let gj = grads.g.get(j as i64).to_kind(Kind::Double);
            // Dots r_iᵀg_j for i < j (one all-reduce of j numbers).
            let dots = if j > 0 {
                let t = Timings::add(&timings.linalg, || r.narrow(0, 0, j as i64).mv(&gj));
                Timings::add(&timings.comm, || comm.all_reduce_sum_tensors(std::slice::from_ref(&t)))?;
                Some(t)
            } else {
                None
            };
            let rj = Timings::add(&timings.linalg, || {
                let mut rj = &gj / eta;
                if let Some(dots) = &dots {
                    let coef = dots / Tensor::from_slice(&d[..j]).to_kind(Kind::Double).to_device(dots.device());
                    rj -= r.narrow(0, 0, j as i64).tr().mv(&coef);
                }
                rj
            });
            r.get(j as i64).copy_(&rj);
            let mut gr = [Timings::add(&timings.linalg, || (&gj * &rj).sum(Kind::Double).double_value(&[]))];
            Timings::add(&timings.comm, || comm.all_reduce_sum_f64(&mut gr))?;
            d.push(nf + gr[0]);
        }
        Ok(ShermanMorrison { grads, eta, r, d })
    }

    /// F⁻¹v for a full-length v; returns the full-length result.
    pub fn solve(&self, comm: &dyn Collective, v: &Tensor, timings: &Timings) -> Result<Tensor> {
        let vl = self.grads.local(v).to_kind(Kind::Double);
        let c = Timings::add(&timings.linalg, || self.r.mv(&vl));
        Timings::add(&timings.comm, || comm.all_reduce_sum_tensors(std::slice::from_ref(&c)))?;
        let out_local = Timings::add(&timings.linalg, || {
            let d = Tensor::from_slice(&self.d).to_kind(Kind::Double).to_device(c.device());
            let coef = c / d;
            ((&vl / self.eta) - self.r.tr().mv(&coef)).to_kind(v.kind())
        });
        all_gather_coords(comm, &out_local, self.grads.p, timings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::LocalCollective;

    /// The default path (f32 gradient samples, f32 vectors) against a dense f64 solve of the same
    /// numbers: F = ηI + GᵀG/N with G and v converted exactly to f64, and F⁻¹v by LU. v is a
    /// gradient-like vector, almost in the span of the samples (v = Gᵀa + 1e-3·noise), where
    /// F⁻¹v = (v − G(·))/η cancels almost all of v: the hard case for the solve's numerics.
    #[test]
    fn woodbury_in_f32_agrees_with_a_dense_f64_solve() {
        tch::manual_seed(7);
        let (n, p, eta) = (8usize, 3000usize, 5e-4);
        let g = Tensor::randn([n as i64, p as i64], (Kind::Float, tch::Device::Cpu));
        let a = Tensor::randn([n as i64], (Kind::Float, tch::Device::Cpu));
        let v = (g.tr().mv(&a) + Tensor::randn([p as i64], (Kind::Float, tch::Device::Cpu)) * 1e-3).contiguous();
        let t = Timings::default();
        let own: Vec<(usize, Tensor)> = (0..n).map(|j| (j, g.get(j as i64))).collect();
        let grads = ShardedGrads::exchange(&LocalCollective::default(), own, n, p, tch::Device::Cpu, &t).unwrap();
        let w = Woodbury::new(&LocalCollective::default(), grads, eta, &t).unwrap();
        let x = w.solve(&LocalCollective::default(), &v, &t).unwrap();
        assert_eq!(x.kind(), Kind::Float);
        let q = w.quad_local_slices(&LocalCollective::default(), &v.unsqueeze(0), &t).unwrap()[0];

        let (g64, v64) = (g.to_kind(Kind::Double), v.to_kind(Kind::Double));
        let f = Tensor::eye(p as i64, (Kind::Double, tch::Device::Cpu)) * eta + g64.tr().matmul(&g64) / n as f64;
        let x_ref = Tensor::linalg_solve(&f, &v64, true);
        let q_ref = v64.dot(&x_ref).double_value(&[]);
        let rel = |d: &Tensor, r: &Tensor| d.norm().double_value(&[]) / r.norm().double_value(&[]);
        let err = rel(&(x.to_kind(Kind::Double) - &x_ref), &x_ref);
        // The result is rounded to f32 once (6e-8); everything before is f64.
        assert!(err < 1e-6, "F⁻¹v: relative error {err:e}");
        // The dense reference itself is good to about cond(F)·1e-16 ≈ 1e-9 (cond ≈ λmax/η ≈ 1e7).
        assert!(((q - q_ref) / q_ref).abs() < 1e-7, "vᵀF⁻¹v: {q} vs {q_ref}");
        // What products in f32 (the previous path) give on the same numbers: a relative error
        // hundreds of times larger, from the cancellation in v − G(·).
        let c32 = g.mv(&v).to_kind(Kind::Double);
        let k = g64.matmul(&g64.tr()) + Tensor::eye(n as i64, (Kind::Double, tch::Device::Cpu)) * (n as f64 * eta);
        let y = Tensor::linalg_solve(&k, &c32, true);
        let x32 = (&v - g.tr().mv(&y.to_kind(Kind::Float))).to_kind(Kind::Double) / eta;
        let err32 = rel(&(x32 - &x_ref), &x_ref);
        eprintln!("F⁻¹v relative error: f64 products {err:e}, f32 products {err32:e}");
        assert!(err32 > 100.0 * err, "f32 products: {err32:e}, f64: {err:e}");
    }
}
