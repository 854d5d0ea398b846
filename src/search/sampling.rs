//! What the forward of one search step mixes: softmax(α) (DARTS), Gumbel-max single paths with a
//! straight-through gradient (GDAS), Gumbel-softmax weights (SNAS) or a fixed single path
//! (SETN's and random-nas's θ steps, candidates scored with the shared weights).
//!
//! Every draw is a pure function of (seed, purpose, step), made on the host in f64: every rank
//! draws the same noise and path without communicating, and a resumed run draws what the
//! uninterrupted one did (no generator state in checkpoints).

use tch::{Kind, Tensor};

use crate::config::{Config, Strategy};
use crate::rng::SplitMix64;
use crate::space::{chosen_entries, derive_genotype, Family, Genotype, Nb201Genotype, SpaceSpec};
use crate::supernet::{Path, Projection, Supernet};

/// Which update a draw belongs to (the θ and the α step of one search step draw separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Weights = 0,
    Arch = 1,
}

/// Purposes of the keyed draws (distinct from the data streams' purposes).
const GUMBEL: u64 = 0x4755_4D42; // "GUMB"
const PATH: u64 = 0x5041_5448; // "PATH"
/// Candidates of the final choice and the random baseline's architecture.
pub(crate) const CANDIDATES: u64 = 0x4341_4E44; // "CAND"
/// The single path of random-nas's per-epoch validation.
pub(crate) const EVAL_PATH: u64 = 0x4556_414C; // "EVAL"

/// The forward's mixing for one step.
pub enum Mix {
    /// The space's mixing of α (softmax; PC-DARTS's edge weights), with the projection's rows.
    Soft,
    /// GDAS: `h = softmax((log_softmax(α) + g) / τ)`, the op `argmax h` computed alone with
    /// weight `1 − h.detach() + h` (value one), every other op contributing `h − h.detach()`
    /// (value zero, gradient to α): AutoDL `search_model_gdas.py`.
    GumbelHard { gumbel: Vec<Tensor>, tau: f64 },
    /// SNAS: every op weighted by `softmax((log_softmax(α) + g) / τ)`.
    GumbelSoft { gumbel: Vec<Tensor>, tau: f64 },
    /// One fixed op per edge (none: the edge is off), constant one-hot weights.
    Single(Path),
}

impl Mix {
    /// The forward's weights and, for single-path mixes, the path to compute.
    pub fn weights(&self, net: &dyn Supernet, proj: &Projection, alphas: &[Tensor]) -> (Vec<Tensor>, Option<Path>) {
        let spec = net.spec();
        match self {
            Mix::Soft => (proj.apply(spec.mixing(alphas)), None),
            Mix::GumbelSoft { gumbel, tau } => (relaxed(alphas, gumbel, *tau), None),
            Mix::GumbelHard { gumbel, tau } => {
                let soft = relaxed(alphas, gumbel, *tau);
                let _g = tch::no_grad_guard();
                let index: Vec<Tensor> = soft.iter().map(|h| h.argmax(-1, true)).collect();
                drop(_g);
                let path: Path = index
                    .iter()
                    .map(|i| {
                        let v: Vec<i64> = Vec::try_from(&crate::device::host(i).reshape([-1])).expect("indices");
                        v.into_iter().map(|o| Some(o as usize)).collect()
                    })
                    .collect();
                let hard = soft
                    .iter()
                    .zip(&index)
                    .map(|(h, i)| h.zeros_like().scatter_value(-1, i, 1.0) - h.detach() + h)
                    .collect();
                (hard, Some(path))
            }
            Mix::Single(path) => (one_hot(spec, path, alphas[0].kind(), alphas[0].device()), Some(path.clone())),
        }
    }
}

/// Gumbel-softmax weights of α's tables.
fn relaxed(alphas: &[Tensor], gumbel: &[Tensor], tau: f64) -> Vec<Tensor> {
    gumbel.iter().zip(alphas).map(|(g, a)| ((a.log_softmax(-1, a.kind()) + g) / tau).softmax(-1, a.kind())).collect()
}

/// Constant one-hot tables of a path (an off edge is a row of zeros).
pub fn one_hot(spec: &SpaceSpec, path: &Path, kind: Kind, device: tch::Device) -> Vec<Tensor> {
    spec.cells
        .iter()
        .zip(path)
        .map(|(t, rows)| {
            let c = t.ops.len();
            let mut v = vec![0.0; rows.len() * c];
            for (e, o) in rows.iter().enumerate() {
                if let Some(o) = o {
                    v[e * c + o] = 1.0;
                }
            }
            Tensor::from_slice(&v).view([rows.len() as i64, c as i64]).to_kind(kind).to_device(device)
        })
        .collect()
}

/// The temperature of `epoch`: linear from `tau_max` (first epoch) to `tau_min` (last epoch),
/// as AutoDL's `search-cell.py` sets it before each epoch.
///
/// SNAS (SNAS-Series `utils.Temp_Scheduler`, stepped once before the first epoch): epoch e
/// trains at `tau_min + (tau_max − tau_min)(1 − (e + 1)/E)`, E = `search.epochs`.
pub fn tau(cfg: &Config, epoch: usize) -> f64 {
    let (hi, lo, n) = (cfg.search.tau_max, cfg.search.tau_min, cfg.search.epochs);
    if cfg.search.strategy == Strategy::Snas {
        return (lo + (hi - lo) * (1.0 - (epoch + 1) as f64 / n as f64)).max(lo);
    }
    if n <= 1 {
        return hi;
    }
    // (The same as hi − (hi − lo)·e/(n − 1), ending exactly at tau_min.)
    lo + (hi - lo) * (1.0 - epoch as f64 / (n - 1) as f64)
}

/// Standard Gumbel noise `−log(−log u)`, u uniform in (0, 1), for α's tables, drawn on the host
/// from (seed, step, phase).
pub fn gumbel(spec: &SpaceSpec, seed: u64, step: usize, phase: Phase, kind: Kind, device: tch::Device) -> Vec<Tensor> {
    let mut rng = SplitMix64::keyed(&[seed, GUMBEL, step as u64, phase as u64]);
    spec.cells
        .iter()
        .map(|t| {
            let (r, c) = (t.edges.len(), t.ops.len());
            let v: Vec<f64> = (0..r * c)
                .map(|_| loop {
                    let u = rng.next_f64();
                    if u > 0.0 {
                        break -(-u.ln()).ln();
                    }
                })
                .collect();
            Tensor::from_slice(&v).view([r as i64, c as i64]).to_kind(kind).to_device(device)
        })
        .collect()
}

/// A uniformly drawn architecture of the space as a path.
///
/// NB201: every edge an op uniformly from the five (AutoDL's `dync_genotype(True)` /
/// random sampling). DARTS: every node two distinct inputs uniformly and for each an op
/// uniformly from those other than `none` (Li & Talwalkar's DARTS-space sampler).
pub fn uniform_path(spec: &SpaceSpec, rng: &mut SplitMix64) -> Path {
    match spec.family {
        Family::Darts => spec
            .cells
            .iter()
            .map(|t| {
                let ops: Vec<usize> = (0..t.ops.len()).filter(|&o| Some(o) != t.none_index()).collect();
                let mut rows = vec![None; t.edges.len()];
                for m in 0..4 {
                    let start = m * (m + 3) / 2;
                    let mut inputs: Vec<usize> = (0..m + 2).collect();
                    rng.shuffle(&mut inputs);
                    for &j in &inputs[..2] {
                        rows[start + j] = Some(ops[rng.below(ops.len() as u64) as usize]);
                    }
                }
                rows
            })
            .collect(),
        _ => spec
            .cells
            .iter()
            .map(|t| (0..t.edges.len()).map(|_| Some(rng.below(t.ops.len() as u64) as usize)).collect())
            .collect(),
    }
}

/// The path of `(seed, step)`'s θ step.
pub fn step_path(spec: &SpaceSpec, seed: u64, step: usize) -> Path {
    uniform_path(spec, &mut SplitMix64::keyed(&[seed, PATH, step as u64]))
}

/// The genotype of a path: NB201's ops as drawn (`none` included), DARTS's kept edges through
/// the space's derivation of the one-hot tables.
pub fn path_genotype(spec: &SpaceSpec, path: &Path) -> Genotype {
    match spec.family {
        Family::Nb201 => Genotype::Nb201(Nb201Genotype { ops: path[0].iter().map(|o| o.unwrap_or(0)).collect() }),
        _ => derive_genotype(spec, &path_table(spec, path)),
    }
}

/// A path's one-hot tables as nested vectors.
pub fn path_table(spec: &SpaceSpec, path: &Path) -> Vec<Vec<Vec<f64>>> {
    spec.cells
        .iter()
        .zip(path)
        .map(|(t, rows)| {
            rows.iter().map(|o| (0..t.ops.len()).map(|k| if Some(k) == *o { 1.0 } else { 0.0 }).collect()).collect()
        })
        .collect()
}

/// The path that computes a genotype on the supernet.
pub fn genotype_path(spec: &SpaceSpec, g: &Genotype) -> Path {
    chosen_entries(spec, g).into_iter().map(|rows| rows.into_iter().map(|r| r.first().copied()).collect()).collect()
}

/// NB201's architectures (one op per edge) in order of decreasing log-probability
/// Σₑ log softmax(α)ₑ,ₒₑ under `softmax` (`[edge][op]`), the first `k` (AutoDL's
/// `return_topK(k, False)`; ties by enumeration order).
pub fn most_probable(softmax: &[Vec<f64>], k: usize) -> Vec<(Vec<usize>, f64)> {
    let (edges, ops) = (softmax.len(), softmax.first().map_or(0, Vec::len));
    let total = ops.pow(edges as u32);
    let mut all: Vec<(Vec<usize>, f64)> = (0..total)
        .map(|mut n| {
            let mut arch = vec![0; edges];
            for a in arch.iter_mut() {
                *a = n % ops;
                n /= ops;
            }
            let lp = arch.iter().enumerate().map(|(e, &o)| softmax[e][o].ln()).sum();
            (arch, lp)
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    all.truncate(k);
    all
}

/// A DARTS-space architecture drawn from the mixing weights `softmax` (`[table][edge][op]`):
/// every node two distinct inputs, drawn one after the other with probability proportional to
/// the edge's largest non-`none` weight, and for each an op with probability proportional to
/// its weight among the non-`none` ops. Returns the path and Σ log p(op) over the kept edges.
pub fn draw_darts(spec: &SpaceSpec, softmax: &[Vec<Vec<f64>>], rng: &mut SplitMix64) -> (Path, f64) {
    let pick = |w: &[f64], rng: &mut SplitMix64| -> usize {
        let total: f64 = w.iter().sum();
        let u = rng.next_f64() * total;
        let mut acc = 0.0;
        for (i, x) in w.iter().enumerate() {
            acc += x;
            if u < acc {
                return i;
            }
        }
        w.iter().rposition(|&x| x > 0.0).unwrap_or(0)
    };
    let mut log_prob = 0.0;
    let path = spec
        .cells
        .iter()
        .zip(softmax)
        .map(|(t, p)| {
            let none = t.none_index();
            let ops: Vec<usize> = (0..t.ops.len()).filter(|&o| Some(o) != none).collect();
            let mut rows = vec![None; t.edges.len()];
            for m in 0..4 {
                let start = m * (m + 3) / 2;
                let mut weights: Vec<f64> =
                    (0..m + 2).map(|j| ops.iter().map(|&o| p[start + j][o]).fold(0.0, f64::max)).collect();
                for _ in 0..2 {
                    let j = pick(&weights, rng);
                    weights[j] = 0.0;
                    let ow: Vec<f64> = ops.iter().map(|&o| p[start + j][o]).collect();
                    let o = ops[pick(&ow, rng)];
                    log_prob += (p[start + j][o] / ow.iter().sum::<f64>()).ln();
                    rows[start + j] = Some(o);
                }
            }
            rows
        })
        .collect();
    (path, log_prob)
}

/// `k` distinct uniformly drawn architectures (all of them when the space has fewer), as
/// paths, from (seed, CANDIDATES).
pub fn random_candidates(spec: &SpaceSpec, seed: u64, k: usize) -> Vec<Path> {
    let mut rng = SplitMix64::keyed(&[seed, CANDIDATES]);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    // NB201 has 15,625 architectures; DARTS's space is far larger than any k allowed.
    let limit = if spec.family == Family::Nb201 { k.min(5usize.pow(6)) } else { k };
    while out.len() < limit {
        let p = uniform_path(spec, &mut rng);
        if seen.insert(p.clone()) {
            out.push(p);
        }
    }
    out
}

/// The random baseline's architecture of `seed`.
pub fn random_architecture(spec: &SpaceSpec, seed: u64) -> Path {
    uniform_path(spec, &mut SplitMix64::keyed(&[seed, CANDIDATES, u64::MAX]))
}

/// The mix of a strategy's step.
pub fn step_mix(cfg: &Config, spec: &SpaceSpec, phase: Phase, epoch: usize, global_step: usize, like: &Tensor) -> Mix {
    let draw = || gumbel(spec, cfg.seed, global_step, phase, like.kind(), like.device());
    match (cfg.search.strategy, phase) {
        (Strategy::Gdas, _) => Mix::GumbelHard { gumbel: draw(), tau: tau(cfg, epoch) },
        (Strategy::Snas, _) => Mix::GumbelSoft { gumbel: draw(), tau: tau(cfg, epoch) },
        (Strategy::Setn | Strategy::RandomNas | Strategy::Random, Phase::Weights) => {
            Mix::Single(step_path(spec, cfg.seed, global_step))
        }
        _ => Mix::Soft,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tau_is_linear_from_max_to_min() {
        // GDAS's schedule with AutoDL's values: τ_e = 10 − 9.9·e/(E−1); E = 250 gives
        // 10, 10 − 9.9/249 = 9.960240963855422…, and 0.1 at e = 249.
        let mut cfg = Config::load(None, &["search.epochs=250".into(), "search.strategy=\"gdas\"".into()]).unwrap();
        assert_eq!(tau(&cfg, 0), 10.0);
        assert!((tau(&cfg, 1) - 9.960_240_963_855_422).abs() < 1e-12);
        assert!((tau(&cfg, 249) - 0.1).abs() < 1e-12);
        cfg.search.epochs = 1;
        assert_eq!(tau(&cfg, 0), 10.0);
        // SNAS with its official values (1 → 0.03 over 150 epochs): epoch 0 trains at
        // 0.03 + 0.97·(1 − 1/150) = 0.9935333…, the last at the floor 0.03.
        let snas = [
            "search.epochs=150".into(),
            "search.strategy=\"snas\"".into(),
            "search.tau_max=1.0".into(),
            "search.tau_min=0.03".into(),
        ];
        let cfg = Config::load(None, &snas).unwrap();
        assert!((tau(&cfg, 0) - 0.993_533_333_333_333_3).abs() < 1e-12);
        assert!((tau(&cfg, 149) - 0.03).abs() < 1e-15);
    }

    #[test]
    fn gumbel_noise_is_keyed_and_standard() {
        let spec = SpaceSpec::nb201();
        let a = gumbel(&spec, 1, 7, Phase::Weights, Kind::Double, tch::Device::Cpu);
        let b = gumbel(&spec, 1, 7, Phase::Weights, Kind::Double, tch::Device::Cpu);
        let c = gumbel(&spec, 1, 7, Phase::Arch, Kind::Double, tch::Device::Cpu);
        assert!(a[0].equal(&b[0]));
        assert!(!a[0].equal(&c[0]));
        // Standard Gumbel: mean γ = 0.5772…, variance π²/6 = 1.6449…; over 40,000 draws the
        // standard errors are 0.0064 and about 0.02.
        let many: Vec<f64> = (0..1334)
            .flat_map(|s| {
                let t = &gumbel(&spec, 2, s, Phase::Weights, Kind::Double, tch::Device::Cpu)[0];
                Vec::<f64>::try_from(&t.reshape([-1])).unwrap()
            })
            .collect();
        let n = many.len() as f64;
        let mean = many.iter().sum::<f64>() / n;
        let var = many.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!((mean - 0.577_215_664_9).abs() < 0.03, "{mean}");
        assert!((var - std::f64::consts::PI.powi(2) / 6.0).abs() < 0.1, "{var}");
    }

    #[test]
    fn darts_paths_keep_two_inputs_per_node_without_none() {
        let spec = SpaceSpec::darts();
        let mut rng = SplitMix64::keyed(&[5]);
        for _ in 0..50 {
            let p = uniform_path(&spec, &mut rng);
            for rows in &p {
                for m in 0..4 {
                    let start = m * (m + 3) / 2;
                    let on: Vec<usize> = rows[start..start + m + 2].iter().flatten().copied().collect();
                    assert_eq!(on.len(), 2);
                    assert!(on.iter().all(|&o| o != 0), "none drawn");
                }
            }
            // The genotype of the path computes the same path.
            assert_eq!(genotype_path(&spec, &path_genotype(&spec, &p)), p);
        }
    }

    /// DARTS-space draws from softmax(α): two inputs per node with non-`none` ops, and a
    /// table that puts (almost) all weight on one op and two inputs per node draws exactly those.
    #[test]
    fn darts_draws_follow_the_mixing_weights() {
        let spec = SpaceSpec::darts();
        let mut peaked = vec![vec![vec![1e-9; 8]; 14]; 2];
        for t in peaked.iter_mut() {
            for m in 0..4 {
                let start = m * (m + 3) / 2;
                t[start][3] = 1.0; // input 0: op 3
                t[start + 1][5] = 1.0; // input 1: op 5
            }
        }
        let mut rng = SplitMix64::keyed(&[1]);
        for _ in 0..20 {
            let (p, lp) = draw_darts(&spec, &peaked, &mut rng);
            for rows in &p {
                for m in 0..4 {
                    let start = m * (m + 3) / 2;
                    assert_eq!(rows[start], Some(3));
                    assert_eq!(rows[start + 1], Some(5));
                    assert!(rows[start + 2..start + m + 2].iter().all(Option::is_none));
                }
            }
            // 16 kept edges, each op drawn with probability 1/(1 + 6e-9): log p ≈ −16·6e-9.
            assert!(lp < 0.0 && lp > -1e-6, "{lp}");
        }
        let uniform = vec![vec![vec![0.125; 8]; 14]; 2];
        let (p, lp) = draw_darts(&spec, &uniform, &mut rng);
        assert!(p.iter().all(|rows| rows.iter().flatten().count() == 8 && rows.iter().flatten().all(|&o| o != 0)));
        // Uniform over the 7 non-none ops: 16 edges × ln(1/7).
        assert!((lp - 16.0 * (1.0f64 / 7.0).ln()).abs() < 1e-12);
    }

    #[test]
    fn most_probable_enumerates_in_order() {
        // Two edges, three ops: the most probable architecture takes each row's largest entry;
        // the log-probabilities are sums of logs (ln 0.5 + ln 0.6 first).
        let sm = vec![vec![0.2, 0.5, 0.3], vec![0.6, 0.3, 0.1]];
        let top = most_probable(&sm, 3);
        assert_eq!(top[0].0, vec![1, 0]);
        assert!((top[0].1 - (0.5f64.ln() + 0.6f64.ln())).abs() < 1e-15);
        assert_eq!(top[1].0, vec![2, 0]); // 0.3·0.6 = 0.18 > 0.5·0.3 = 0.15
        assert_eq!(top[2].0, vec![1, 1]);
        assert_eq!(most_probable(&sm, 100).len(), 9);
    }

    /// A single-path forward computes the same logits as the dense forward with the path's
    /// one-hot weights, and only the drawn ops take part: the weights of every op GDAS left out
    /// get no gradient, those of a drawn conv do, and α gets a gradient in every entry (the
    /// straight-through terms).
    #[test]
    fn gdas_computes_one_op_per_edge() {
        use crate::supernet::{BnMode, DartsConfig, DartsSupernet, Nb201Config, Nb201Supernet};
        tch::manual_seed(4);
        let nets: Vec<Box<dyn Supernet>> = vec![
            Box::new(Nb201Supernet::new(Nb201Config { channels: 4, cells_per_stage: 1, num_classes: 3 }, Kind::Double)),
            Box::new(DartsSupernet::new(
                DartsConfig {
                    channels: 4,
                    layers: 3,
                    num_classes: 3,
                    stem: crate::config::StemKind::Cifar,
                    partial: 4,
                },
                SpaceSpec::darts(),
                Kind::Double,
            )),
        ];
        for net in nets {
            let spec = net.spec().clone();
            let x = Tensor::randn([4, 3, 8, 8], (Kind::Double, tch::Device::Cpu));
            let alphas: Vec<Tensor> = spec
                .alpha_shapes()
                .iter()
                .map(|s| (Tensor::randn(s.as_slice(), (Kind::Double, tch::Device::Cpu)) * 1e-3).set_requires_grad(true))
                .collect();
            let mix = Mix::GumbelHard {
                gumbel: gumbel(&spec, 9, 0, Phase::Weights, Kind::Double, tch::Device::Cpu),
                tau: 10.0,
            };
            let (w, path) = mix.weights(net.as_ref(), &Projection::default(), &alphas);
            let path = path.expect("a hard mix has a path");
            let sparse = net.forward_path(&x, &w, &path, BnMode::BatchStats);
            let dense = {
                let _g = tch::no_grad_guard();
                net.forward(&x, &one_hot(&spec, &path, Kind::Double, tch::Device::Cpu), BnMode::BatchStats)
            };
            let diff = (&sparse - &dense).abs().max().double_value(&[]);
            assert!(diff < 1e-12, "{}: sparse and dense logits differ by {diff}", spec.name);
            let params = &net.params();
            let mut wrt: Vec<Tensor> = params.tensors.iter().map(Tensor::shallow_clone).collect();
            wrt.extend(alphas.iter().map(Tensor::shallow_clone));
            let g = Tensor::run_backward(&[sparse.sum(Kind::Double)], &wrt, false, true);
            // Cell op weights are named `…edges.<i<-j>.<op>.…` (NB201) or `…_ops.<e>._ops.<op>.…`.
            let (mut used, mut skipped) = (0, 0);
            for (name, grad) in params.names.iter().zip(&g) {
                let edge_op = if spec.name == "nb201" {
                    name.split_once(".edges.").map(|(_, rest)| {
                        let mut it = rest.split('.');
                        let label = it.next().unwrap();
                        let e = (0..6).find(|&e| {
                            let (i, j) = crate::space::nb201_edge(e);
                            label == format!("{i}<-{j}")
                        });
                        (0usize, e.unwrap(), it.next().unwrap().parse::<usize>().unwrap())
                    })
                } else {
                    name.split_once("._ops.").map(|(head, rest)| {
                        let cell: usize = head.trim_start_matches("cells.").parse().unwrap();
                        let mut it = rest.split('.');
                        let e: usize = it.next().unwrap().parse().unwrap();
                        let _ = it.next(); // "_ops"
                                           // Three cells: reductions at L/3 = 1 and 2L/3 = 2, cell 0 normal.
                        let table = usize::from(cell == 1 || cell == 2);
                        (table, e, it.next().unwrap().parse::<usize>().unwrap())
                    })
                };
                let Some((t, e, o)) = edge_op else { continue };
                if path[t][e] == Some(o) {
                    assert!(grad.defined(), "{name}: a drawn op got no gradient");
                    used += 1;
                } else {
                    assert!(!grad.defined(), "{name}: an op left out got a gradient");
                    skipped += 1;
                }
            }
            assert!(used > 0 && skipped > 0, "{}: {used} used, {skipped} skipped", spec.name);
            for a in &g[params.tensors.len()..] {
                assert!(a.abs().min().double_value(&[]) > 0.0, "{}: an α entry got no gradient", spec.name);
            }
        }
    }

    #[test]
    fn random_candidates_are_distinct_and_keyed() {
        let spec = SpaceSpec::nb201();
        let a = random_candidates(&spec, 3, 200);
        let set: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(set.len(), 200);
        assert_eq!(a, random_candidates(&spec, 3, 200));
        assert_ne!(a, random_candidates(&spec, 4, 200));
    }
}
