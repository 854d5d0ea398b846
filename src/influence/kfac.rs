//! Curvature factored by layer: K-FAC and EK-FAC (eigenvalue-corrected K-FAC).
//!
//! The curvature is the Fisher of the mean loss, F = E_n[g_n g_nᵀ] over the per-sample
//! gradients g_n of the N evaluation batches (with the data's labels, the empirical Fisher; with
//! labels drawn from the model's predictive distribution, `select.fisher_labels = "sampled"`, a
//! Monte-Carlo estimate of the true Fisher, which for softmax cross-entropy is the
//! Gauss–Newton matrix). It is approximated block-diagonally, one block per layer:
//!
//! - **convolutions** (Grosse & Martens's KFC, grouped convolutions per group) and **linear
//!   maps** (bias as a homogeneous coordinate): F_layer ≈ A ⊗ S, with A = E[a aᵀ] over the
//!   layer's input patches (mean over samples and positions) and S = E_n[Σ_t s_t s_tᵀ] over the
//!   back-propagated signals s = ∂ℓ_n/∂(output) (per sample, summed over positions). With
//!   A = Q_A Λ_A Q_Aᵀ and S = Q_S Λ_S Q_Sᵀ, **K-FAC** takes the eigenvalues Λ_S ⊗ Λ_A;
//!   **EK-FAC** (George et al. 2018) keeps the eigenbasis Q_S ⊗ Q_A and re-fits the eigenvalues
//!   to the per-sample gradients, Λ = E_n[(Q_Sᵀ G_n Q_A)²], the best diagonal in that basis;
//! - **BatchNorm's affine weights** (and every other per-channel parameter): diagonal,
//!   E_n[g_n²] from per-sample gradients.
//!
//! The inverse is closed-form per block: (F + λI)⁻¹v = Q_S ((Q_Sᵀ V Q_A) ⊘ (Λ + λ)) Q_Aᵀ.
//!
//! Distribution: the factors are sums over samples, computed on each rank's batches and
//! all-reduced; the eigendecompositions are spread over ranks by layer (layer i on rank
//! i mod W) and shared by one all-reduce; the eigenvalue correction is again summed per rank and
//! all-reduced. Every rank then holds the whole operator, so a solve needs no communication.

use std::collections::HashMap;
use std::time::Instant;

use tch::{Kind, Tensor};

use super::flat::{defined_or_zeros, flatten, split_like};
use super::probe::{Probe, Timings};
use crate::comm::broadcast_value;
use crate::config::{DampingRule, FisherLabels, SelectConfig};
use crate::error::{Error, Result};
use crate::loss::{cross_entropy, fisher_targets};
use crate::ops::tap::{tapped, TapLayer, Tapped};

/// A block of the factored curvature: which parameters it covers and how.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum BlockSpec {
    /// Kronecker-factored: the weight (and bias) of a convolution or linear map, viewed as `g`
    /// groups of `o × d` matrices (`d` counts the bias column).
    Kron { layer: TapLayer, weight: usize, bias: Option<usize>, g: i64, o: i64, d: i64 },
    /// Diagonal: per-coordinate second moments of the per-sample gradients (BatchNorm's γ, β).
    Diag { params: Vec<usize> },
    /// Parameters no recorded layer applies: curvature 0 (the damping alone). Listed in the
    /// diagnostics; none exist in the built-in spaces.
    Untapped { params: Vec<usize> },
}

struct Block {
    spec: BlockSpec,
    /// Kron: eigenvectors of A `[g, d, d]` and of S `[g, o, o]` (f64).
    qa: Tensor,
    qs: Tensor,
    /// Kron: eigenvalues `[g, o, d]` in the basis Q_S ⊗ Q_A; Diag: `[numel]` of the parameters
    /// concatenated (f64).
    lam: Tensor,
}

/// What `scores.json` reports about a factored curvature.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KfacInfo {
    pub method: String,
    pub kronecker_blocks: usize,
    pub diagonal_blocks: usize,
    /// Parameters no recorded layer applies (curvature 0: the damping alone).
    pub untapped: Vec<String>,
    /// Bytes of the factors every rank holds (eigenvectors and eigenvalues).
    pub factor_mb: f64,
    /// Seconds to accumulate the factors (both passes for EK-FAC), per rank.
    pub factor_per_rank_s: Vec<f64>,
    /// Seconds of eigendecompositions, per rank (layers are spread over ranks).
    pub eigen_per_rank_s: Vec<f64>,
    /// The mean eigenvalue trace(F̃)/P of the approximation (the damping rule's reference).
    pub mean_eigenvalue: f64,
}

/// K-FAC or EK-FAC for one probe (see the module documentation).
pub struct Kfac {
    blocks: Vec<Block>,
    pub damping: f64,
    pub info: KfacInfo,
}

/// The block structure of `probe`'s supernet, from one recorded forward on rank 0's first batch
/// and shared with every rank (a rank may own no batch). Collective.
fn block_specs(probe: &Probe) -> Result<Vec<BlockSpec>> {
    let found: Option<std::result::Result<Vec<BlockSpec>, String>> = probe.comm.is_coordinator().then(|| {
        let (x, _) = probe.batch(0);
        let w = probe.base_weights();
        let (_, records) = tapped(|| probe.net.forward(&x.narrow(0, 0, 1), &w, probe.bn));
        specs_from_records(probe, &records)
    });
    match broadcast_value(probe.comm, 0, found.as_ref())? {
        Ok(s) => Ok(s),
        Err(msg) => Err(Error::config("select", "select.ihvp", msg)),
    }
}

fn specs_from_records(probe: &Probe, records: &[Tapped]) -> std::result::Result<Vec<BlockSpec>, String> {
    let index = param_index(probe);
    let find = |t: &Tensor| -> std::result::Result<usize, String> {
        index
            .get(&(t.data_ptr() as usize))
            .copied()
            .ok_or_else(|| "a recorded layer's weight is not a parameter of the supernet".to_string())
    };
    let mut specs = Vec::new();
    let mut seen = vec![false; probe.params.len()];
    for r in records {
        let ids = r.params.iter().map(find).collect::<std::result::Result<Vec<_>, _>>()?;
        if ids.iter().any(|&i| seen[i]) {
            // A layer applied twice shares its block: the later records are folded in.
            continue;
        }
        for &i in &ids {
            seen[i] = true;
        }
        let size = probe.params[ids[0]].size();
        specs.push(match r.layer {
            TapLayer::Conv { groups, .. } => {
                let (out, per_group_in) = (size[0], size[1..].iter().product::<i64>());
                BlockSpec::Kron {
                    layer: r.layer,
                    weight: ids[0],
                    bias: None,
                    g: groups,
                    o: out / groups,
                    d: per_group_in,
                }
            }
            TapLayer::Linear => BlockSpec::Kron {
                layer: r.layer,
                weight: ids[0],
                bias: ids.get(1).copied(),
                g: 1,
                o: size[0],
                d: size[1] + 1,
            },
            TapLayer::BatchNorm => BlockSpec::Diag { params: ids },
        });
    }
    let rest: Vec<usize> = (0..probe.params.len()).filter(|&i| !seen[i]).collect();
    if !rest.is_empty() {
        specs.push(BlockSpec::Untapped { params: rest });
    }
    Ok(specs)
}

/// A record's input patches `[m, g, d, T]` (with a row of ones for a bias).
fn patches(r: &Tapped, g: i64, d: i64) -> Tensor {
    let x = &r.input;
    let m = x.size()[0];
    match r.layer {
        TapLayer::Conv { k, stride, pad, dil, .. } => {
            x.im2col([k, k], [dil, dil], [pad, pad], [stride, stride]).view([m, g, d, -1])
        }
        TapLayer::Linear => {
            let din = *x.size().last().expect("features");
            let a = x.reshape([m, -1, din]).transpose(1, 2);
            let ones = Tensor::ones([m, 1, a.size()[2]], (a.kind(), a.device()));
            Tensor::cat(&[a, ones], 1).view([m, 1, d, -1])
        }
        TapLayer::BatchNorm => unreachable!("BatchNorm blocks are diagonal"),
    }
}

/// A record's back-propagated signal `[m, g, o, T]`.
fn signals(r: &Tapped, grad: &Tensor, g: i64, o: i64) -> Tensor {
    let m = grad.size()[0];
    match r.layer {
        TapLayer::Conv { .. } => grad.reshape([m, g, o, -1]),
        TapLayer::Linear => {
            let out = *grad.size().last().expect("outputs");
            grad.reshape([m, -1, out]).transpose(1, 2).reshape([m, 1, o, -1])
        }
        TapLayer::BatchNorm => unreachable!("BatchNorm blocks are diagonal"),
    }
}

/// Per-sample gradients of a BatchNorm record's (γ, β): `[m, 2C]`.
fn bn_sample_grads(r: &Tapped, grad: &Tensor) -> Tensor {
    let m = grad.size()[0];
    let c = grad.size()[1];
    let s = grad.reshape([m, c, -1]);
    let xh = r.input.reshape([m, c, -1]);
    let gw = (&s * xh).sum_dim_intlist(2, false, s.kind());
    let gb = s.sum_dim_intlist(2, false, s.kind());
    Tensor::cat(&[gw, gb], 1)
}

/// One recorded forward and backward of batch j: the records, and each record's signal
/// ∂(Σ_n ℓ_n)/∂output (per sample: the loss is summed, not averaged).
fn record_batch(probe: &Probe, j: usize, labels_from: FisherLabels) -> (Vec<Tapped>, Vec<Tensor>) {
    let (x, y) = probe.batch(j);
    let w = probe.base_weights();
    let (z, records) = tapped(|| probe.net.forward(x, &w, probe.bn));
    let target = fisher_targets(labels_from, j, &z, y);
    let m = x.size()[0] as f64;
    let loss = cross_entropy(&z, &target) * m;
    let outputs: Vec<Tensor> = records.iter().map(|r| r.output.shallow_clone()).collect();
    let grads = defined_or_zeros(Tensor::run_backward(&[loss], &outputs, false, false), &outputs);
    (records, grads)
}

/// Eigenvalues (clamped at 0: rounding) and eigenvectors of a batch of symmetric matrices.
pub fn eigen(m: &Tensor) -> (Tensor, Tensor) {
    let (l, q) = m.linalg_eigh("L");
    (l.clamp_min(0.0), q)
}

/// X = Q_S ((Q_Sᵀ V Q_A) ⊘ Λ) Q_Aᵀ for `g` groups: V `[g, o, d]`, Q_A `[g, d, d]`, Q_S
/// `[g, o, o]`, Λ `[g, o, d]` (eigenvalues plus damping): the inverse of the Kronecker-factored
/// block (Q_S ⊗ Q_A) diag(Λ) (Q_S ⊗ Q_A)ᵀ applied to V (row-major vectorisation).
pub fn kron_solve(qa: &Tensor, qs: &Tensor, lam: &Tensor, v: &Tensor) -> Tensor {
    qs.matmul(&(qs.transpose(1, 2).matmul(v).matmul(qa) / lam)).matmul(&qa.transpose(1, 2))
}

/// Each parameter's position in θ, by its storage address (how a recorded layer's weight is
/// recognised).
fn param_index(probe: &Probe) -> HashMap<usize, usize> {
    probe.params.iter().enumerate().map(|(i, p)| (p.data_ptr() as usize, i)).collect()
}

/// Where each parameter starts in the flat θ.
fn param_offsets(probe: &Probe) -> Vec<i64> {
    probe
        .params
        .iter()
        .scan(0i64, |off, t| {
            let o = *off;
            *off += t.numel() as i64;
            Some(o)
        })
        .collect()
}

/// The per-sample gradients `[m, P]` of batch j as the factors see them — each recorded layer's
/// ∂ℓ_n/∂θ assembled from its input patches and back-propagated signals (Σ_t s_t a_tᵀ for a
/// convolution or linear map, Σ_t s_t x̂_t and Σ_t s_t for BatchNorm), zero for untapped
/// parameters. With running BatchNorm statistics these are exactly the gradients of each
/// sample's loss; with batch statistics they sum to m·∇θL_j. (No communication; for tests and
/// diagnostics.)
pub fn per_sample_grads(probe: &Probe, j: usize, labels_from: FisherLabels) -> std::result::Result<Tensor, String> {
    let (records, grads) = record_batch(probe, j, labels_from);
    let specs = specs_from_records(probe, &records)?;
    let index = param_index(probe);
    let offsets = param_offsets(probe);
    let m = probe.batch(j).0.size()[0];
    let _ng = tch::no_grad_guard();
    let out = Tensor::zeros([m, probe.n_params() as i64], (Kind::Double, probe.device()));
    let add = |param: usize, g: Tensor| {
        let n = probe.params[param].numel() as i64;
        let mut dst = out.narrow(1, offsets[param], n);
        dst += g.reshape([m, n]).to_kind(Kind::Double);
    };
    for (r, gr) in records.iter().zip(&grads) {
        let first = index[&(r.params[0].data_ptr() as usize)];
        let spec = specs.iter().find(|s| match s {
            BlockSpec::Kron { weight, .. } => *weight == first,
            BlockSpec::Diag { params } => params[0] == first,
            BlockSpec::Untapped { .. } => false,
        });
        match spec {
            Some(BlockSpec::Kron { weight, bias, g, o, d, .. }) => {
                let gs = signals(r, gr, *g, *o).matmul(&patches(r, *g, *d).transpose(2, 3));
                match bias {
                    Some(bi) => {
                        add(*weight, gs.narrow(3, 0, d - 1));
                        add(*bi, gs.narrow(3, d - 1, 1));
                    }
                    None => add(*weight, gs),
                }
            }
            Some(BlockSpec::Diag { params }) => {
                let both = bn_sample_grads(r, gr);
                let c = both.size()[1] / 2;
                add(params[0], both.narrow(1, 0, c));
                add(params[1], both.narrow(1, c, c));
            }
            _ => {}
        }
    }
    Ok(out)
}

impl Kfac {
    /// Build K-FAC (`eigen_corrected = false`) or EK-FAC on the probe's N batches. Collective.
    pub fn build(cfg: &SelectConfig, probe: &Probe, eigen_corrected: bool) -> Result<Self> {
        let comm = probe.comm;
        let t: &Timings = probe.timings;
        let specs = block_specs(probe)?;
        if probe.micro > 0 && comm.is_coordinator() {
            tracing::warn!(
                "select.micro_batch = {}: the {} factor passes record whole batches (first order; \
                 the double-backward passes are split)",
                probe.micro,
                if eigen_corrected { "EK-FAC" } else { "K-FAC" }
            );
        }
        let owner_of: HashMap<usize, usize> = specs
            .iter()
            .enumerate()
            .flat_map(|(b, s)| match s {
                BlockSpec::Kron { weight, .. } => vec![(*weight, b)],
                BlockSpec::Diag { params } => vec![(params[0], b)],
                BlockSpec::Untapped { .. } => vec![],
            })
            .collect();
        let index = param_index(probe);
        let block_of = |r: &Tapped| owner_of.get(&index[&(r.params[0].data_ptr() as usize)]).copied();
        let f64z = |shape: &[i64]| Tensor::zeros(shape, (Kind::Double, probe.device()));
        // Pass 1: A, S and the diagonal blocks' second moments, summed over this rank's samples.
        let mut a_sum: Vec<Tensor> = Vec::new();
        let mut s_sum: Vec<Tensor> = Vec::new();
        let mut d_sum: Vec<Tensor> = Vec::new();
        for s in &specs {
            let (a, sm, d) = match s {
                BlockSpec::Kron { g, o, d, .. } => (f64z(&[*g, *d, *d]), f64z(&[*g, *o, *o]), f64z(&[0])),
                BlockSpec::Diag { params } => {
                    let n: i64 = params.iter().map(|&i| probe.params[i].numel() as i64).sum();
                    (f64z(&[0]), f64z(&[0]), f64z(&[n]))
                }
                BlockSpec::Untapped { .. } => (f64z(&[0]), f64z(&[0]), f64z(&[0])),
            };
            a_sum.push(a);
            s_sum.push(sm);
            d_sum.push(d);
        }
        // [positions counted in A per block..., samples]
        let counts = f64z(&[specs.len() as i64 + 1]);
        let what = if eigen_corrected { "ek-fac" } else { "k-fac" };
        let t0 = Instant::now();
        let mut progress = crate::progress::Progress::new(
            format!("{what} factors (pass 1{})", if eigen_corrected { " of 2" } else { "" }),
            "batches",
            probe.own_batches().count() as u64,
            comm.is_coordinator(),
            true,
        );
        Timings::add(&t.autograd, || {
            let mut positions = vec![0.0; specs.len()];
            let mut samples = 0.0;
            for j in probe.own_batches() {
                let (records, grads) = record_batch(probe, j, cfg.fisher_labels);
                samples += grads.first().map_or(0, |g| g.size()[0]) as f64;
                // A node feeding several edges gives their convolutions equal inputs (NB201: 6
                // edges, 3 distinct inputs): each distinct (geometry, input) is factored once.
                let mut factored: Vec<(TapLayer, &Tensor, Tensor, f64)> = Vec::new();
                for (r, gr) in records.iter().zip(&grads) {
                    let Some(b) = block_of(r) else { continue };
                    let _ng = tch::no_grad_guard();
                    match &specs[b] {
                        BlockSpec::Kron { g, o, d, .. } => {
                            // The batch's sums in the model's precision (one batched GEMM
                            // per sample, no transposed copy), accumulated in f64.
                            let s = signals(r, gr, *g, *o);
                            let kind = s.kind();
                            let same = factored
                                .iter()
                                .find(|(l, x, ..)| *l == r.layer && x.size() == r.input.size() && x.equal(&r.input));
                            let (batch_a, count) = match same {
                                Some((_, _, f, c)) => (f.shallow_clone(), *c),
                                None => {
                                    let a = patches(r, *g, *d);
                                    let c = (a.size()[0] * a.size()[3]) as f64;
                                    let f = a
                                        .matmul(&a.transpose(2, 3))
                                        .sum_dim_intlist(0, false, kind)
                                        .to_kind(Kind::Double);
                                    factored.push((r.layer, &r.input, f.shallow_clone(), c));
                                    (f, c)
                                }
                            };
                            positions[b] += count;
                            a_sum[b] += batch_a;
                            s_sum[b] +=
                                s.matmul(&s.transpose(2, 3)).sum_dim_intlist(0, false, kind).to_kind(Kind::Double);
                        }
                        BlockSpec::Diag { .. } => {
                            d_sum[b] += bn_sample_grads(r, gr).to_kind(Kind::Double).square().sum_dim_intlist(
                                0,
                                false,
                                Kind::Double,
                            );
                        }
                        BlockSpec::Untapped { .. } => {}
                    }
                }
                progress.inc(1);
            }
            let _ng = tch::no_grad_guard();
            let mut c = counts.shallow_clone();
            c.copy_(&Tensor::from_slice(&positions.iter().copied().chain([samples]).collect::<Vec<f64>>()));
        });
        progress.finish();
        let all: Vec<Tensor> =
            a_sum.iter().chain(&s_sum).chain(&d_sum).chain([&counts]).map(|x| x.shallow_clone()).collect();
        Timings::add(&t.comm, || comm.all_reduce_sum_tensors(&all))?;
        let n_samples = counts.double_value(&[specs.len() as i64]);
        if n_samples == 0.0 {
            return Err(Error::config("select", "select.n", "K-FAC needs at least one evaluation sample"));
        }
        // Eigendecompositions, layer b on rank b mod W, shared by one all-reduce (the other
        // ranks contribute zeros).
        let (rank, world) = (comm.rank(), comm.size());
        let te = Instant::now();
        let mut eig: Vec<Tensor> = Vec::new();
        Timings::add(&t.linalg, || {
            for (b, s) in specs.iter().enumerate() {
                if let BlockSpec::Kron { g, o, d, .. } = s {
                    let mine = b % world == rank;
                    let decompose = |m: &Tensor, n: i64| -> (Tensor, Tensor) {
                        if mine {
                            eigen(m)
                        } else {
                            (f64z(&[*g, n]), f64z(&[*g, n, n]))
                        }
                    };
                    let (la, qa) = decompose(&(&a_sum[b] / counts.double_value(&[b as i64]).max(1.0)), *d);
                    let (ls, qs) = decompose(&(&s_sum[b] / n_samples), *o);
                    eig.extend([la, qa, ls, qs]);
                }
            }
        });
        let eigen_s = te.elapsed().as_secs_f64();
        Timings::add(&t.comm, || comm.all_reduce_sum_tensors(&eig))?;
        let mut blocks = Vec::new();
        let mut it = eig.into_iter();
        for (b, spec) in specs.iter().enumerate() {
            blocks.push(match spec {
                BlockSpec::Kron { .. } => {
                    let (la, qa, ls, qs) =
                        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
                    let lam = ls.unsqueeze(2) * la.unsqueeze(1);
                    Block { spec: spec.clone(), qa, qs, lam }
                }
                BlockSpec::Diag { .. } => {
                    Block { spec: spec.clone(), qa: f64z(&[0]), qs: f64z(&[0]), lam: &d_sum[b] / n_samples }
                }
                BlockSpec::Untapped { params } => {
                    let n: i64 = params.iter().map(|&i| probe.params[i].numel() as i64).sum();
                    Block { spec: spec.clone(), qa: f64z(&[0]), qs: f64z(&[0]), lam: f64z(&[n]) }
                }
            });
        }
        if eigen_corrected {
            Self::correct_eigenvalues(cfg, probe, &specs, &mut blocks, &block_of, n_samples)?;
        }
        let factor_s = t0.elapsed().as_secs_f64() - eigen_s;
        // Damping: fixed λ, or a fraction of the approximation's mean eigenvalue.
        let p = probe.n_params() as f64;
        let mean_eig = blocks.iter().map(|b| b.lam.sum(Kind::Double).double_value(&[])).sum::<f64>() / p;
        let damping = match cfg.damping_rule {
            DampingRule::Fixed => cfg.damping,
            DampingRule::Auto if cfg.damping > 0.0 => cfg.damping,
            DampingRule::MeanEigenvalue | DampingRule::Auto => cfg.damping_fraction * mean_eig,
        };
        if damping <= 0.0 || !damping.is_finite() {
            return Err(Error::config(
                "select",
                "select.damping",
                format!(
                    "{what} needs a damping λ > 0 (its factors are singular wherever the samples do not reach); got {damping:e}: \
                     set select.damping or select.damping_rule = \"mean-eigenvalue\""
                ),
            ));
        }
        let per_rank = |x: f64| -> Result<Vec<f64>> {
            let mut v = vec![0.0; world];
            v[rank] = x;
            Timings::add(&t.comm, || comm.all_reduce_sum_f64(&mut v))?;
            Ok(v)
        };
        let names = &probe.net.params().names;
        let untapped = specs
            .iter()
            .flat_map(|s| match s {
                BlockSpec::Untapped { params } => params.iter().map(|&i| names[i].clone()).collect(),
                _ => Vec::new(),
            })
            .collect();
        let bytes: usize = blocks.iter().map(|b| (b.qa.numel() + b.qs.numel() + b.lam.numel()) * 8).sum();
        let info = KfacInfo {
            method: what.into(),
            kronecker_blocks: specs.iter().filter(|s| matches!(s, BlockSpec::Kron { .. })).count(),
            diagonal_blocks: specs.iter().filter(|s| matches!(s, BlockSpec::Diag { .. })).count(),
            untapped,
            factor_mb: bytes as f64 / 1e6,
            factor_per_rank_s: per_rank(factor_s)?,
            eigen_per_rank_s: per_rank(eigen_s)?,
            mean_eigenvalue: mean_eig,
        };
        Ok(Kfac { blocks, damping, info })
    }

    /// EK-FAC's second pass: Λ = E_n[(Q_Sᵀ G_n Q_A)²] from the per-sample gradients G_n of each
    /// Kronecker block (summed over a layer's applications before projecting), all-reduced.
    fn correct_eigenvalues(
        cfg: &SelectConfig,
        probe: &Probe,
        specs: &[BlockSpec],
        blocks: &mut [Block],
        block_of: &dyn Fn(&Tapped) -> Option<usize>,
        n_samples: f64,
    ) -> Result<()> {
        let t = probe.timings;
        let sums: Vec<Tensor> = blocks.iter().map(|b| b.lam.zeros_like()).collect();
        let mut progress = crate::progress::Progress::new(
            "ek-fac eigenvalue correction (pass 2 of 2)",
            "batches",
            probe.own_batches().count() as u64,
            probe.comm.is_coordinator(),
            true,
        );
        // The eigenbases in the model's precision: the projections run there, their squares
        // are summed in f64.
        let kind = probe.kind();
        let bases: Vec<Option<(Tensor, Tensor)>> = blocks
            .iter()
            .map(|b| {
                matches!(b.spec, BlockSpec::Kron { .. })
                    .then(|| (b.qa.to_kind(kind), b.qs.transpose(1, 2).to_kind(kind)))
            })
            .collect();
        Timings::add(&t.autograd, || {
            for j in probe.own_batches() {
                let (records, grads) = record_batch(probe, j, cfg.fisher_labels);
                let _ng = tch::no_grad_guard();
                let mut per_sample: HashMap<usize, Tensor> = HashMap::new();
                let mut unfolded: Vec<(TapLayer, &Tensor, Tensor)> = Vec::new();
                for (r, gr) in records.iter().zip(&grads) {
                    let Some(b) = block_of(r) else { continue };
                    if let BlockSpec::Kron { g, o, d, .. } = &specs[b] {
                        // Equal inputs (a node feeding several edges) are unfolded once.
                        let same = unfolded
                            .iter()
                            .find(|(l, x, _)| *l == r.layer && x.size() == r.input.size() && x.equal(&r.input));
                        let at = match same {
                            Some((_, _, at)) => at.shallow_clone(),
                            None => {
                                let at = patches(r, *g, *d).transpose(2, 3);
                                unfolded.push((r.layer, &r.input, at.shallow_clone()));
                                at
                            }
                        };
                        let gs = signals(r, gr, *g, *o).matmul(&at);
                        per_sample.entry(b).and_modify(|acc| *acc += &gs).or_insert(gs);
                    }
                }
                for (b, gs) in per_sample {
                    let (qa, qst) = bases[b].as_ref().expect("a Kronecker block");
                    let proj = qst.matmul(&gs).matmul(qa);
                    let mut acc = sums[b].shallow_clone();
                    acc += proj.square().sum_dim_intlist(0, false, Kind::Double);
                }
                progress.inc(1);
            }
        });
        progress.finish();
        let kron: Vec<Tensor> = specs
            .iter()
            .zip(&sums)
            .filter(|(s, _)| matches!(s, BlockSpec::Kron { .. }))
            .map(|(_, x)| x.shallow_clone())
            .collect();
        Timings::add(&t.comm, || probe.comm.all_reduce_sum_tensors(&kron))?;
        for ((s, blk), sum) in specs.iter().zip(blocks.iter_mut()).zip(sums) {
            if matches!(s, BlockSpec::Kron { .. }) {
                blk.lam = sum / n_samples;
            }
        }
        Ok(())
    }

    /// (F̃ + λI)⁻¹ v for a flat v over θ (local: every rank holds the operator).
    pub fn solve(&self, probe: &Probe, v: &Tensor) -> Tensor {
        Timings::add(&probe.timings.linalg, || {
            let _ng = tch::no_grad_guard();
            let parts = split_like(&v.to_kind(Kind::Double), &probe.params);
            let mut out: Vec<Option<Tensor>> = (0..parts.len()).map(|_| None).collect();
            for b in &self.blocks {
                let lam = &b.lam + self.damping;
                match &b.spec {
                    BlockSpec::Kron { weight, bias, g, o, d, .. } => {
                        let wv = parts[*weight].reshape([*g, *o, -1]);
                        let v = match bias {
                            Some(bi) => Tensor::cat(&[wv, parts[*bi].reshape([1, *o, 1])], 2),
                            None => wv,
                        };
                        let x = kron_solve(&b.qa, &b.qs, &lam, &v);
                        match bias {
                            Some(bi) => {
                                out[*weight] = Some(x.narrow(2, 0, d - 1).reshape([-1]));
                                out[*bi] = Some(x.narrow(2, d - 1, 1).reshape([-1]));
                            }
                            None => out[*weight] = Some(x.reshape([-1])),
                        }
                    }
                    BlockSpec::Diag { params } | BlockSpec::Untapped { params } => {
                        let v = Tensor::cat(&params.iter().map(|&i| parts[i].reshape([-1])).collect::<Vec<_>>(), 0);
                        let x = v / lam;
                        let mut off = 0;
                        for &i in params {
                            let n = parts[i].numel() as i64;
                            out[i] = Some(x.narrow(0, off, n));
                            off += n;
                        }
                    }
                }
            }
            let out: Vec<Tensor> = out.into_iter().map(|x| x.expect("every parameter is in a block")).collect();
            flatten(&out).to_kind(v.kind())
        })
    }

    /// The approximation F̃ + λI as a dense P×P matrix (f64), assembled independently of
    /// [`Kfac::solve`] from Kronecker products of the factors and each block's coordinates: for
    /// tests and small models.
    pub fn dense(&self, probe: &Probe) -> Tensor {
        let _ng = tch::no_grad_guard();
        let p = probe.n_params() as i64;
        let offsets = param_offsets(probe);
        let m = Tensor::zeros([p, p], (Kind::Double, probe.device()));
        for b in &self.blocks {
            match &b.spec {
                BlockSpec::Kron { weight, bias, g, o, d, .. } => {
                    for gi in 0..*g {
                        // Coordinate of (row r, column c) of group gi's o×d matrix.
                        let coord = |r: i64, c: i64| -> i64 {
                            match bias {
                                Some(bi) if c == d - 1 => offsets[*bi] + r,
                                Some(_) => offsets[*weight] + r * (d - 1) + c,
                                None => offsets[*weight] + (gi * o + r) * d + c,
                            }
                        };
                        let q = b.qs.get(gi).kron(&b.qa.get(gi));
                        let blk = q.matmul(&b.lam.get(gi).reshape([-1]).diag(0)).matmul(&q.tr());
                        let idx: Vec<i64> = (0..o * d).map(|k| coord(k / d, k % d)).collect();
                        let idx = Tensor::from_slice(&idx).to_device(probe.device());
                        let n = o * d;
                        let rows = idx.unsqueeze(1).expand([n, n], false);
                        let cols = idx.unsqueeze(0).expand([n, n], false);
                        let _ = m.shallow_clone().index_put_(&[Some(rows), Some(cols)], &blk, false);
                    }
                }
                BlockSpec::Diag { params } | BlockSpec::Untapped { params } => {
                    let mut k = 0;
                    for &i in params {
                        for c in 0..probe.params[i].numel() as i64 {
                            let at = offsets[i] + c;
                            let _ = m.get(at).get(at).fill_(b.lam.double_value(&[k]));
                            k += 1;
                        }
                    }
                }
            }
        }
        m + Tensor::eye(p, (Kind::Double, probe.device())) * self.damping
    }
}
