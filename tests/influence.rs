//! The influence engine against dense f64 references on a tiny NB201 supernet (C=1, N=1,
//! 3 classes, 8×8 images: P = 1,616 weights — stem 27 + 2, search cells 60 + 240 + 960, reduction
//! blocks 64 + 240, last BN 8, classifier 15 — so H and F fit as dense matrices).
//!
//! References: central finite differences along unit directions (ε = 1e-6: truncation O(ε²)
//! ≈ 1e-12, rounding O(1e-16/ε) ≈ 1e-10; a small step also keeps ReLU pre-activations from
//! crossing their kink, which a random direction of norm √P ≈ 40 does at ε = 1e-5) and matrices
//! built column by column from the primitives themselves, then solved densely in f64.

use dartsif::comm::LocalCollective;
use dartsif::config::Config;
use dartsif::data::{SearchSplit, Synthetic};
use dartsif::influence::criteria::{candidates, remove_op, Context};
use dartsif::influence::flat::{dot, flatten, norm, split_like};
use dartsif::influence::ihvp::Solver;
use dartsif::influence::{EvalSet, Leaf, Probe, Timings};
use dartsif::supernet::{self, BnMode, Supernet};
use tch::{Kind, Tensor};

struct Setup {
    cfg: Config,
    net: Box<dyn Supernet>,
    alphas: Vec<Tensor>,
    data: Synthetic,
    split: SearchSplit,
}

fn setup(extra: &[&str]) -> Setup {
    let mut sets: Vec<String> = [
        "space.channels=1",
        "space.cells_per_stage=1",
        "data.num_classes=3",
        "data.image_size=8",
        "data.train_size=64",
        "data.noise=0.5",
        "search.batch_size=8",
        "search.micro_batch=0",
        "select.n=3",
        "select.batch_size=4",
        "select.precision=\"f64\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    let cfg = Config::load(None, &sets).unwrap();
    let net = supernet::build(&cfg, 5, Kind::Double, tch::Device::Cpu).unwrap();
    // Non-uniform architecture weights, so no mixing weight is special.
    tch::manual_seed(7);
    let alphas: Vec<Tensor> = net
        .spec()
        .alpha_shapes()
        .iter()
        .map(|s| Tensor::randn(s.as_slice(), (Kind::Double, tch::Device::Cpu)) * 0.7)
        .collect();
    let data = Synthetic::new(cfg.seed, cfg.data.train_size.of(0), 3, 8, 0.5);
    let split = SearchSplit::halves(cfg.data.train_size.of(0));
    Setup { cfg, net, alphas, data, split }
}

/// B (P × 30) built column by column from mixed products with unit vectors.
fn dense_b(probe: &Probe) -> Tensor {
    let cols: Vec<Tensor> = (0..30)
        .map(|k| {
            let e = Tensor::zeros([30], (Kind::Double, tch::Device::Cpu));
            let _ = e.get(k).fill_(1.0);
            probe.mixed(&e).unwrap()
        })
        .collect();
    Tensor::stack(&cols, 1)
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    norm(&(a - b)) / norm(b).max(1e-300)
}

impl Setup {
    fn eval(&self) -> EvalSet {
        self.eval_n(3)
    }

    fn eval_n(&self, n: usize) -> EvalSet {
        EvalSet::draw(self.cfg.seed, dartsif::data::Stream::EvalBatches, 0, &self.split.arch, n, 4).unwrap()
    }

    /// The batches of H and B under `select.hess_data = "train"`: the same draw from the θ half.
    fn eval_train(&self) -> EvalSet {
        EvalSet::draw(self.cfg.seed, dartsif::data::Stream::EvalBatches, 0, &self.split.weights, 3, 4).unwrap()
    }

    fn probe<'a>(&'a self, eval: &EvalSet, comm: &'a LocalCollective, t: &'a Timings, leaf: Leaf) -> Probe<'a> {
        Probe::new(self.net.as_ref(), &self.alphas, comm, &self.data, eval, leaf, BnMode::BatchStats, t).unwrap()
    }

    fn context<'a>(&'a self, comm: &'a LocalCollective, t: &'a Timings) -> Context<'a> {
        Context {
            cfg: &self.cfg,
            net: self.net.as_ref(),
            alphas: &self.alphas,
            comm,
            data: &self.data,
            val: &self.split.arch,
            train: &self.split.weights,
            timings: t,
            projection: None,
        }
    }

    fn shift_theta(&self, d: &Tensor) {
        let _g = tch::no_grad_guard();
        for (p, dp) in self.net.params().tensors.iter().zip(split_like(d, &self.net.params().tensors)) {
            let _ = p.shallow_clone().g_add_(&dp);
        }
    }
}

const EPS: f64 = 1e-6;

#[test]
fn primitives_match_finite_differences_and_dense_matrices() {
    let s = setup(&[]);
    let (comm, t) = (LocalCollective::default(), Timings::default());
    // One evaluation batch: the dense Hessian costs P double-backward passes per batch.
    let eval = s.eval_n(1);
    let probe = s.probe(&eval, &comm, &t, Leaf::Mixing);
    let p = probe.n_params();
    assert_eq!(p, 1_616, "the tiny supernet's size (derived in the header)");
    tch::manual_seed(11);
    let u = Tensor::randn([p as i64], (Kind::Double, tch::Device::Cpu));
    let u = &u / norm(&u);
    let w0 = probe.base_weights();
    let v = Tensor::randn([30], (Kind::Double, tch::Device::Cpu));
    let v = &v / norm(&v);

    // H u vs central differences of ∇θL along u.
    let hu = probe.hvp(&u).unwrap();
    s.shift_theta(&(&u * EPS));
    let (_, gp) = probe.grad_theta(None).unwrap();
    let gwp = probe.grad_leaf().unwrap();
    s.shift_theta(&(&u * (-2.0 * EPS)));
    let (_, gm) = probe.grad_theta(None).unwrap();
    let gwm = probe.grad_leaf().unwrap();
    s.shift_theta(&(&u * EPS));
    let fd_hu = (gp - gm) / (2.0 * EPS);
    assert!(rel(&hu, &fd_hu) < 1e-6, "H·u vs FD: {:e} (norms {:e} {:e})", rel(&hu, &fd_hu), norm(&hu), norm(&fd_hu));

    // Bᵀu vs central differences of ∇wL along u (same θ shifts).
    let btu = probe.mixed_t(&u).unwrap();
    let fd_btu = (gwp - gwm) / (2.0 * EPS);
    assert!(rel(&btu, &fd_btu) < 1e-6, "Bᵀ·u vs FD: {:e}", rel(&btu, &fd_btu));

    // B v vs central differences of ∇θL along v in w.
    let bv = probe.mixed(&v).unwrap();
    let shifted = |sign: f64| -> Vec<Tensor> {
        split_like(&(flatten(&w0) + &v * (sign * EPS)), &w0).iter().map(|x| x.copy()).collect()
    };
    let (_, gvp) = probe.grad_theta(Some(&shifted(1.0))).unwrap();
    let (_, gvm) = probe.grad_theta(Some(&shifted(-1.0))).unwrap();
    let fd_bv = (gvp - gvm) / (2.0 * EPS);
    assert!(rel(&bv, &fd_bv) < 1e-6, "B·v vs FD: {:e}", rel(&bv, &fd_bv));

    // Dense H (row by row, ∇θ of each gradient entry) and dense B (30 mixed products, column
    // by column).
    let h = probe.dense_hessian().unwrap();
    let asym = norm(&(&h - h.tr())) / norm(&h);
    assert!(asym < 1e-10, "H is symmetric to rounding: {asym:e}");
    let h = (&h + h.tr()) / 2.0;
    assert!(rel(&hu, &h.mv(&u)) < 1e-9);
    let b = dense_b(&probe);
    assert!(rel(&bv, &b.mv(&v)) < 1e-9);
    assert!(rel(&btu, &b.tr().mv(&u)) < 1e-9, "Bᵀu equals the transpose of the dense B");

    // The dense Hessian costs P HVPs: reuse it for the iterative solvers.
    neumann_and_cg_reach_the_damped_inverse_and_neumann_detects_divergence(&s, &probe, &h);
}

#[test]
fn fisher_inverses_agree_with_the_dense_inverse() {
    let s = setup(&[]);
    let (comm, t) = (LocalCollective::default(), Timings::default());
    let eval = s.eval();
    let probe = s.probe(&eval, &comm, &t, Leaf::Mixing);
    tch::manual_seed(3);
    let v = Tensor::randn([probe.n_params() as i64], (Kind::Double, tch::Device::Cpu));
    let solve = |ihvp: &str| {
        let mut c = s.cfg.select.clone();
        c.ihvp = ihvp.parse().unwrap();
        c.exact_matrix = dartsif::config::ExactMatrix::Fisher;
        let solver = Solver::build(&c, &probe, None).unwrap();
        let x = solver.solve(&probe, &v).unwrap().0;
        let q = solver.quad_own(&probe, Some(&v)).unwrap().unwrap();
        (x, q)
    };
    let (exact, q_exact) = solve("exact");
    // The dense reference really inverts F = ηI + GGᵀ/N: F·x = v.
    let g = Tensor::stack(
        &probe.batch_grads(dartsif::config::FisherLabels::Data).into_iter().map(|(_, g)| g).collect::<Vec<_>>(),
        0,
    );
    let fx = &exact * s.cfg.select.eta + g.tr().mv(&g.mv(&exact)) / 3.0;
    assert!(rel(&fx, &v) < 1e-9, "dense F x = v: {:e}", rel(&fx, &v));
    for name in ["woodbury", "sherman-morrison"] {
        let (x, q) = solve(name);
        assert!(rel(&x, &exact) < 1e-9, "{name}: {:e}", rel(&x, &exact));
        assert!((q - q_exact).abs() / q_exact.abs() < 1e-9, "{name} quadratic form {q} vs {q_exact}");
    }
    // damping_rule = "mean-eigenvalue": η = 0.1 × trace(GGᵀ/N)/P = 0.1 × ‖G‖²_F/(3·P), from the
    // same samples (N = 3), reported by the solve.
    let mut c = s.cfg.select.clone();
    c.damping_rule = dartsif::config::DampingRule::MeanEigenvalue;
    let want = 0.1 * g.square().sum(Kind::Double).double_value(&[]) / (3 * probe.n_params()) as f64;
    let solver = Solver::build(&c, &probe, None).unwrap();
    assert!((solver.damping - want).abs() <= 1e-12 * want, "η {} vs {want}", solver.damping);
    assert_eq!(solver.solve(&probe, &v).unwrap().1.damping, Some(solver.damping));
}

/// Neumann and CG against the dense damped inverse (called with the dense H built once).
fn neumann_and_cg_reach_the_damped_inverse_and_neumann_detects_divergence(s: &Setup, probe: &Probe, h: &Tensor) {
    let eig = h.linalg_eigvalsh("L");
    let (lmin, lmax) = (eig.min().double_value(&[]), eig.max().double_value(&[]));
    // Damping that makes A = H + λI positive definite with condition number ≤ 3:
    // eigenvalues of A lie in [lmax + |lmin|·0, ...]; with λ = lmax + 2|lmin|, A's spectrum is
    // within [lmax + |lmin|, 2 lmax + 2|lmin|].
    let damping = lmax + 2.0 * lmin.abs();
    let a = h + Tensor::eye(h.size()[0], (Kind::Double, tch::Device::Cpu)) * damping;
    tch::manual_seed(4);
    let v = Tensor::randn([probe.n_params() as i64], (Kind::Double, tch::Device::Cpu));
    let exact = Tensor::linalg_solve(&a, &v, true);
    let amax = a.linalg_eigvalsh("L").max().double_value(&[]);

    let mut c = s.cfg.select.clone();
    c.damping = damping;
    // γ = 1/λmax(A): the contraction factor is ≤ 1 − 1/3 per term, so 80 terms leave (2/3)^80 ≈ 1e-14.
    c.ihvp = dartsif::config::Ihvp::Neumann;
    c.gamma = 1.0 / amax;
    c.k = 80;
    let x = Solver::build(&c, probe, None).unwrap().solve(probe, &v).unwrap().0;
    assert!(rel(&x, &exact) < 1e-6, "neumann: {:e}", rel(&x, &exact));

    c.ihvp = dartsif::config::Ihvp::Cg;
    c.cg_tol = 1e-10;
    let (x, info) = Solver::build(&c, probe, None).unwrap().solve(probe, &v).unwrap();
    assert!(rel(&x, &exact) < 1e-6, "cg: {:e}", rel(&x, &exact));
    assert!(info.residual.unwrap() < 1e-8, "cg reports its true residual: {:?}", info.residual);

    // γ = 3/λmax(A) ≥ 2/λmax: the top eigen-component grows by |1 − 3| = 2 per term, so within
    // 12 terms it dominates (2^12 = 4096) whatever v's share of it.
    c.ihvp = dartsif::config::Ihvp::Neumann;
    c.gamma = 3.0 / amax;
    c.k = 12;
    let err = Solver::build(&c, probe, None).unwrap().solve(probe, &v).unwrap_err().to_string();
    assert!(err.contains("select.gamma: the Neumann series diverges"), "{err}");
    // The power-iteration estimate in the message is λmax(A) to a few digits.
    let lam: f64 = err.split("|λ|max ≈ ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!((lam - amax).abs() / amax < 0.05, "power iteration {lam} vs {amax}");
}

#[test]
fn darts_im_equals_the_dense_formula_and_raw_logits_are_degenerate() {
    for (ihvp, hess) in [("woodbury", "val"), ("exact", "val"), ("woodbury", "train")] {
        let s = setup(&[
            "select.criterion=\"darts-im\"",
            &format!("select.ihvp=\"{ihvp}\""),
            "select.exact_matrix=\"fisher\"",
            &format!("select.hess_data=\"{hess}\""),
        ]);
        let (comm, t) = (LocalCollective::default(), Timings::default());
        let got = s.context(&comm, &t).run().unwrap().table;
        // Dense: −Bᵀ F⁻¹ B 1 with B built column by column and F = ηI + GGᵀ/N, all on the
        // validation batches, or all on the θ half's with hess_data = "train".
        let eval = if hess == "train" { s.eval_train() } else { s.eval() };
        let probe = s.probe(&eval, &comm, &t, Leaf::Mixing);
        let b = dense_b(&probe);
        let g = Tensor::stack(
            &probe.batch_grads(dartsif::config::FisherLabels::Data).into_iter().map(|(_, g)| g).collect::<Vec<_>>(),
            0,
        );
        let p = probe.n_params() as i64;
        let f = g.tr().matmul(&g) / 3.0 + Tensor::eye(p, (Kind::Double, tch::Device::Cpu)) * s.cfg.select.eta;
        let ones = Tensor::ones([30], (Kind::Double, tch::Device::Cpu));
        let dense = -b.tr().mv(&Tensor::linalg_solve(&f, &b.mv(&ones), true));
        let got_flat = Tensor::from_slice(&dartsif::influence::criteria::flat_scores(&got));
        assert!(rel(&got_flat, &dense) < 1e-8, "{ihvp}/{hess}: {:e}", rel(&got_flat, &dense));
        // `none` has no output, so its column of B and its score are exactly zero.
        assert!(got.scores[0].iter().all(|row| row[0] == 0.0));
    }
    // On raw logits, B·1 vanishes (softmax is shift-invariant); on mixing weights it does not.
    let s = setup(&[]);
    let (comm, t) = (LocalCollective::default(), Timings::default());
    let eval = s.eval();
    let raw = s.probe(&eval, &comm, &t, Leaf::Raw);
    let mix = s.probe(&eval, &comm, &t, Leaf::Mixing);
    let b1_raw = norm(&raw.mixed(&Tensor::ones([30], (Kind::Double, tch::Device::Cpu))).unwrap());
    let b1_mix = norm(&mix.mixed(&Tensor::ones([30], (Kind::Double, tch::Device::Cpu))).unwrap());
    assert!(b1_mix > 1e-3, "{b1_mix}");
    assert!(b1_raw < 1e-12 * b1_mix.max(1.0), "B_raw·1 = {b1_raw:e} vs B_w·1 = {b1_mix:e}");
}

/// S_c = L(ŵ) − L(w) − ½ ĝᵀF⁻¹ĝ with F = ηI + s·GᵀG/N formed densely; also with the Fisher
/// scaled (s = 64) and the gradient centred (ĝ − g₀), paper.md §10 A5/A6.
#[test]
fn darts_if_equals_the_dense_formula() {
    for (scale, center, hess) in [(1.0, false, "val"), (64.0, true, "val"), (1.0, false, "train")] {
        darts_if_case(scale, center, hess);
    }
}

/// `hess`: the Fisher from the validation batches or from the θ half's (the loss changes and
/// ĝ always on the validation batches).
fn darts_if_case(scale: f64, center: bool, hess: &str) {
    let s = setup(&[
        "select.criterion=\"darts-if\"",
        "select.ihvp=\"woodbury\"",
        &format!("select.fisher_scale={scale:?}"),
        &format!("select.if_center_grad={center}"),
        &format!("select.hess_data=\"{hess}\""),
    ]);
    let (comm, t) = (LocalCollective::default(), Timings::default());
    let got = s.context(&comm, &t).run().unwrap().table;
    let eval = s.eval();
    let probe = s.probe(&eval, &comm, &t, Leaf::Mixing);
    let fisher_eval = if hess == "train" { s.eval_train() } else { s.eval() };
    let fisher_probe = s.probe(&fisher_eval, &comm, &t, Leaf::Mixing);
    let g = Tensor::stack(
        &fisher_probe.batch_grads(dartsif::config::FisherLabels::Data).into_iter().map(|(_, g)| g).collect::<Vec<_>>(),
        0,
    );
    let p = probe.n_params() as i64;
    let f = g.tr().matmul(&g) * (scale / 3.0) + Tensor::eye(p, (Kind::Double, tch::Device::Cpu)) * s.cfg.select.eta;
    let w0 = s.net.spec().mixing(&s.alphas);
    let (l0, g0) = probe.grad_theta(Some(&w0)).unwrap();
    let cands = candidates(s.net.as_ref());
    assert_eq!(cands.len(), 24, "6 edges × 4 ops other than none");
    for c in cands {
        let (lc, gc) = probe.grad_theta(Some(&remove_op(&w0, c))).unwrap();
        let gc = if center { gc - &g0 } else { gc };
        let dense = lc - l0 - 0.5 * dot(&gc, &Tensor::linalg_solve(&f, &gc, true));
        let score = got.scores[c.cell][c.edge][c.op];
        assert!((score - dense).abs() <= 1e-9 * dense.abs().max(1e-3), "{c:?}: {score} vs {dense}");
        assert_eq!(got.terms[c.cell][c.edge][c.op][0], lc - l0);
    }
    assert!(got.scores[0].iter().all(|row| row[0] == f64::NEG_INFINITY), "none is not a candidate");
}

/// The generalised Gauss–Newton product against the matrix itself: J (12 × P: the 4 samples ×
/// 3 classes of one batch, each row ∇θ of one logit by autograd) and H_z (block-diagonal
/// (diag pᵢ − pᵢpᵢᵀ)/m for the mean cross-entropy), G = Jᵀ H_z J formed densely in f64. Then the
/// solvers on it: `exact` with `exact_matrix = "ggn"` is (G + λI)⁻¹ and CG with
/// `curvature = "ggn"` reaches it.
#[test]
fn ggn_products_equal_the_dense_gauss_newton_matrix() {
    let s = setup(&[]);
    let (comm, t) = (LocalCollective::default(), Timings::default());
    let eval = s.eval_n(1);
    let probe = s.probe(&eval, &comm, &t, Leaf::Mixing);
    let p = probe.n_params() as i64;
    let params = &s.net.params().tensors;
    let z = probe.logits(0);
    let (m, classes) = (z.size()[0], z.size()[1]);
    let mut rows = Vec::new();
    for i in 0..m {
        for c in 0..classes {
            let grads = Tensor::run_backward(&[z.get(i).get(c)], params, true, false);
            let row: Vec<Tensor> = grads
                .iter()
                .zip(params)
                .map(|(g, q)| if g.defined() { g.reshape([-1]) } else { q.zeros_like().reshape([-1]) })
                .collect();
            rows.push(Tensor::cat(&row, 0));
        }
    }
    let jac = Tensor::stack(&rows, 0); // [m·C, P]
    let prob = z.detach().softmax(-1, Kind::Double);
    let hz = Tensor::zeros([m * classes, m * classes], (Kind::Double, tch::Device::Cpu));
    for i in 0..m {
        let pi = prob.get(i);
        let block = (pi.diag(0) - pi.outer(&pi)) / m as f64;
        hz.narrow(0, i * classes, classes).narrow(1, i * classes, classes).copy_(&block);
    }
    let g = jac.tr().matmul(&hz).matmul(&jac);
    let dense = probe.dense_ggn().unwrap();
    assert!(rel(&dense, &g) < 1e-12, "the probe's dense GGN: {:e}", rel(&dense, &g));
    tch::manual_seed(12);
    let u = Tensor::randn([p], (Kind::Double, tch::Device::Cpu));
    let gu = probe.ggn_vp(&u).unwrap();
    assert!(rel(&gu, &g.mv(&u)) < 1e-10, "G·u vs Jᵀ H_z J u: {:e}", rel(&gu, &g.mv(&u)));
    // Positive semi-definite (the Hessian of this batch is not: see the damping of the Neumann
    // test), with a nullspace: rank ≤ m·(C − 1) = 8 of 1,616 directions.
    let eig = g.linalg_eigvalsh("L");
    let top = eig.max().double_value(&[]);
    assert!(eig.min().double_value(&[]) > -1e-12 * top, "G is PSD");
    // Each sample's H_z has the null vector 1 (softmax is shift-invariant): rank ≤ 4 × (3 − 1).
    let rank = eig.gt(1e-10 * top).sum(Kind::Int64).int64_value(&[]);
    assert!((1..=8).contains(&rank), "rank of G: {rank}");
    assert!(u.dot(&gu).double_value(&[]) >= 0.0);

    // The mean-eigenvalue rule's Hutchinson estimate of trace(G)/P (8 Rademacher probes) against
    // the dense trace: unbiased, its spread a few tens of percent for a matrix of rank ≤ 8.
    let est = dartsif::influence::ihvp::mean_eigenvalue(&probe, dartsif::config::Curvature::Ggn).unwrap();
    let exact_mean = g.trace().double_value(&[]) / p as f64;
    assert!(est > 0.0 && (est / exact_mean - 1.0).abs() < 0.5, "Hutchinson {est:e} vs trace/P {exact_mean:e}");

    let damping = 1e-3;
    let a = &g + Tensor::eye(p, (Kind::Double, tch::Device::Cpu)) * damping;
    let v = Tensor::randn([p], (Kind::Double, tch::Device::Cpu));
    let exact = Tensor::linalg_solve(&a, &v, true);
    let mut c = s.cfg.select.clone();
    c.damping = damping;
    c.ihvp = dartsif::config::Ihvp::Exact;
    c.exact_matrix = dartsif::config::ExactMatrix::Ggn;
    let x = Solver::build(&c, &probe, None).unwrap().solve(&probe, &v).unwrap().0;
    assert!(rel(&x, &exact) < 1e-9, "exact GGN: {:e}", rel(&x, &exact));
    c.ihvp = dartsif::config::Ihvp::Cg;
    c.curvature = dartsif::config::Curvature::Ggn;
    c.cg_tol = 1e-10;
    c.cg_max_iter = 200;
    let (x, info) = Solver::build(&c, &probe, None).unwrap().solve(&probe, &v).unwrap();
    assert!(rel(&x, &exact) < 1e-6, "cg on the GGN: {:e} after {} iterations", rel(&x, &exact), info.iterations);
}

/// `select.micro_batch`: with running BatchNorm statistics, every primitive summed over
/// micro-batches (m = 4 split 3 + 1, so the pieces differ in size and carry shares 3/4 and 1/4)
/// is the whole batch's, to f64 rounding — first order (L, ∇θL, ∇wL, the Fisher samples with
/// data and with sampled labels), second order (Hu, Bv, Bᵀu, B·1 and its samples, Bᵀz over
/// prefixes) and the GGN product, on NB201 and on a DARTS supernet.
#[test]
fn micro_batches_give_the_whole_batch_derivatives() {
    use dartsif::config::FisherLabels;
    for space in [&[][..], &["space.name=\"darts\"", "space.channels=2", "space.layers=3", "data.image_size=8"][..]] {
        let s = setup(space);
        let (comm, t) = (LocalCollective::default(), Timings::default());
        let eval = s.eval_n(2);
        let whole =
            Probe::new(s.net.as_ref(), &s.alphas, &comm, &s.data, &eval, Leaf::Mixing, BnMode::Eval, &t).unwrap();
        let split = Probe::new(s.net.as_ref(), &s.alphas, &comm, &s.data, &eval, Leaf::Mixing, BnMode::Eval, &t)
            .unwrap()
            .with_micro_batch(3);
        let close = |what: &str, a: &Tensor, b: &Tensor| {
            assert!(rel(a, b) < 1e-12, "{space:?}: {what}: micro-batched vs whole {:e}", rel(a, b));
        };
        tch::manual_seed(11);
        let u = Tensor::randn([whole.n_params() as i64], (Kind::Double, tch::Device::Cpu));
        let v = Tensor::randn([flatten(&whole.leaf).numel() as i64], (Kind::Double, tch::Device::Cpu));
        let (lw, gw) = whole.grad_theta(None).unwrap();
        let (ls, gs) = split.grad_theta(None).unwrap();
        assert!((lw - ls).abs() < 1e-12 * lw.abs(), "{space:?}: loss {lw} vs {ls}");
        close("∇θL", &gs, &gw);
        close("∇wL", &split.grad_leaf().unwrap(), &whole.grad_leaf().unwrap());
        close("Hu", &split.hvp(&u).unwrap(), &whole.hvp(&u).unwrap());
        close("H_0 u", &split.hvp_on(0, &u), &whole.hvp_on(0, &u));
        close("Bv", &split.mixed(&v).unwrap(), &whole.mixed(&v).unwrap());
        close("Bᵀu", &split.mixed_t(&u).unwrap(), &whole.mixed_t(&u).unwrap());
        close("GGN u", &split.ggn_vp(&u).unwrap(), &whole.ggn_vp(&u).unwrap());
        if space.is_empty() {
            // The dense GGN on the small NB201 supernet only (m·C backward passes per batch).
            close("dense GGN", &split.dense_ggn().unwrap(), &whole.dense_ggn().unwrap());
        }
        for labels in [FisherLabels::Data, FisherLabels::Sampled] {
            for ((jw, a), (js, b)) in whole.batch_grads(labels).iter().zip(&split.batch_grads(labels)) {
                assert_eq!(jw, js);
                close(&format!("Fisher sample {jw} ({labels:?} labels)"), b, a);
            }
        }
        let (sw, uw) = whole.batch_grads_and_mixed_ones_prefixes(&[1, 2], true).unwrap();
        let (ss, us) = split.batch_grads_and_mixed_ones_prefixes(&[1, 2], true).unwrap();
        for ((_, a), (_, b)) in sw.iter().zip(&ss) {
            close("pass-1 sample", b, a);
        }
        for (a, b) in uw.iter().zip(&us) {
            close("B·1 over a prefix", b, a);
        }
        let zs = vec![(1, u.shallow_clone()), (2, &u * 0.5)];
        for (a, b) in whole.mixed_t_prefixes(&zs).unwrap().iter().zip(&split.mixed_t_prefixes(&zs).unwrap()) {
            close("Bᵀz over a prefix", b, a);
        }
    }
}

/// Reverse over forward (a tangent forward, then one backward) gives the double backward's
/// second derivatives to f64 rounding: H u, B v, Bᵀu, B·1 with its Fisher samples, Bᵀz over
/// prefixes and the GGN product, with batch and with running BatchNorm statistics, for the
/// mixing-weight leaf and the raw-α leaf (whose tangent goes through the softmax), whole
/// batches and micro-batches, on NB201, DARTS (sep/dil convs, max and avg pools, factorized
/// reduce, concatenated nodes) and PC-DARTS (partial channels, max-pooled bypass weighted by
/// β̃, channel shuffle). `forward_mode = false` forces the double-backward route; `recompute`
/// keeps one segment's graph at a time (stem, cell or block, head), recomputing it from its
/// saved inputs during the backward.
#[test]
fn reverse_over_forward_gives_the_double_backward_derivatives() {
    let darts = ["space.name=\"darts\"", "space.channels=2", "space.layers=3", "data.image_size=8"];
    let pc = ["space.name=\"pc-darts\"", "space.channels=4", "space.layers=3", "data.image_size=8"];
    let both = [Leaf::Mixing, Leaf::Raw];
    for (space, modes) in [
        (&[][..], &[(BnMode::BatchStats, 0, &both[..]), (BnMode::Eval, 0, &both), (BnMode::Eval, 3, &both)][..]),
        (&darts[..], &[(BnMode::BatchStats, 0, &[Leaf::Mixing][..])][..]),
        (&pc[..], &[(BnMode::BatchStats, 0, &[Leaf::Raw][..])][..]),
    ] {
        check_reverse_over_forward(space, modes);
    }
}

fn check_reverse_over_forward(space: &[&str], modes: &[(BnMode, usize, &[Leaf])]) {
    let s = setup(space);
    assert!(s.net.has_tangents(), "{space:?} has a tangent forward: otherwise this compares a route with itself");
    let (comm, t) = (LocalCollective::default(), Timings::default());
    let eval = s.eval_n(2);
    for &(bn, micro, leaves) in modes {
        for &leaf in leaves {
            let probe = |forward: bool, recompute: bool| {
                let mut p = Probe::new(s.net.as_ref(), &s.alphas, &comm, &s.data, &eval, leaf, bn, &t)
                    .unwrap()
                    .with_micro_batch(micro);
                p.forward_mode = forward;
                p.recompute = recompute;
                p
            };
            let (fwd, rec, rev) = (probe(true, false), probe(true, true), probe(false, false));
            assert!(fwd.uses_forward_mode() && rec.uses_forward_mode() && !rev.uses_forward_mode());
            tch::manual_seed(12);
            let u = Tensor::randn([fwd.n_params() as i64], (Kind::Double, tch::Device::Cpu));
            let v = Tensor::randn([flatten(&fwd.leaf).numel() as i64], (Kind::Double, tch::Device::Cpu));
            let want = products(&rev, leaf, &u, &v);
            for (route, p) in [("forward", &fwd), ("forward, recomputed per cell", &rec)] {
                for ((what, a), (_, b)) in products(p, leaf, &u, &v).iter().zip(&want) {
                    let r = rel(a, b);
                    assert!(
                        r < 1e-10,
                        "{space:?} {bn:?} micro {micro} {leaf:?}: {what}: {route} vs double backward {r:e}"
                    );
                    assert!(norm(b) > 0.0, "{what} is zero: nothing compared");
                }
            }
        }
    }
}

/// Every second-derivative primitive of a probe along θ-direction `u` and leaf direction `v`,
/// named, in a fixed order.
fn products(p: &Probe, leaf: Leaf, u: &Tensor, v: &Tensor) -> Vec<(String, Tensor)> {
    let mut out = vec![
        ("Hu".to_string(), p.hvp(u).unwrap()),
        ("H_1 u".to_string(), p.hvp_on(1, u)),
        ("Bv".to_string(), p.mixed(v).unwrap()),
        ("Bᵀu".to_string(), p.mixed_t(u).unwrap()),
        ("GGN u".to_string(), p.ggn_vp(u).unwrap()),
    ];
    let (samples, ones) = p.batch_grads_and_mixed_ones_prefixes(&[1, 2], true).unwrap();
    assert_eq!(samples.iter().map(|(j, _)| *j).collect::<Vec<_>>(), [0, 1]);
    out.extend(samples.into_iter().map(|(j, g)| (format!("pass-1 Fisher sample {j}"), g)));
    // B·1 in raw α is zero to rounding (softmax(α + t·1) = softmax(α)): the mixing leaf's B·1 is
    // the one with content.
    if leaf == Leaf::Mixing {
        out.extend(ones.into_iter().map(|b| ("B·1 over a prefix".to_string(), b)));
    }
    let zs = vec![(1, u.shallow_clone()), (2, u * 0.5 + 1.0)];
    out.extend(p.mixed_t_prefixes(&zs).unwrap().into_iter().map(|b| ("Bᵀz over a prefix".to_string(), b)));
    out
}

/// The layer records K-FAC factors are built from, checked through the per-sample gradients
/// they imply (Σ_t s_t a_tᵀ per convolution or linear map, Σ_t s_t x̂_t and Σ_t s_t per BatchNorm):
/// with running BatchNorm statistics they equal each sample's own autograd gradient (one
/// forward/backward per image), and with batch statistics they sum to m·∇θL_j. On the NB201
/// supernet (3×3 and 1×1 convolutions, strided reduction blocks, BatchNorm, the classifier) and
/// on a DARTS supernet (grouped and dilated convolutions, factorized reduce).
#[test]
fn kfac_layer_records_give_the_autograd_per_sample_gradients() {
    use dartsif::config::FisherLabels;
    use dartsif::influence::kfac::per_sample_grads;
    for space in [&[][..], &["space.name=\"darts\"", "space.channels=2", "space.layers=3", "data.image_size=8"][..]] {
        let s = setup(space);
        let (comm, t) = (LocalCollective::default(), Timings::default());
        let eval = s.eval_n(1);
        let running =
            Probe::new(s.net.as_ref(), &s.alphas, &comm, &s.data, &eval, Leaf::Mixing, BnMode::Eval, &t).unwrap();
        let ours = per_sample_grads(&running, 0, FisherLabels::Data).unwrap();
        let want = Tensor::stack(
            &running.sample_grads(FisherLabels::Data).unwrap().into_iter().map(|(_, g)| g).collect::<Vec<_>>(),
            0,
        );
        assert!(rel(&ours, &want) < 1e-10, "{space:?}: per-sample gradients {:e}", rel(&ours, &want));
        let batch = s.probe(&eval, &comm, &t, Leaf::Mixing);
        let sum = per_sample_grads(&batch, 0, FisherLabels::Data).unwrap().sum_dim_intlist(0, false, Kind::Double);
        // m = select.batch_size = 4 images in the batch.
        let (_, g) = batch.grad_theta(None).unwrap();
        assert!(rel(&sum, &(&g * 4.0)) < 1e-10, "{space:?}: Σ_n g_n vs m·∇L: {:e}", rel(&sum, &(&g * 4.0)));
        // Every weight of the supernet is in a recorded layer.
        let mut c = s.cfg.select.clone();
        c.ihvp = dartsif::config::Ihvp::Ekfac;
        c.damping = 1e-3;
        let solver = Solver::build(&c, &batch, None).unwrap();
        assert_eq!(solver.curvature_info()["untapped"], serde_json::json!([]), "{space:?}");
    }
}

/// K-FAC and EK-FAC against dense f64 matrices on the tiny NB201 supernet (P = 1,616):
/// - each solve is the inverse of the approximation's own dense matrix, assembled from
///   Kronecker products of the factors and each block's coordinates (`Kfac::dense`), and the
///   quadratic form agrees;
/// - EK-FAC's eigenvalues are second moments of the per-sample gradients in an orthonormal basis,
///   so its trace is Σ_n ‖g_n‖²/(N·m) exactly (g_n from one backward per image, running BN);
/// - EK-FAC is the best diagonal in K-FAC's eigenbasis, so it is at least as close as K-FAC to
///   the block-diagonal part of the per-sample Fisher (George et al. 2018), in Frobenius norm;
/// - the mean-eigenvalue rule sets λ = 0.1 × trace/P of the approximation.
#[test]
fn kfac_and_ekfac_invert_their_dense_matrices_and_ekfac_fits_the_fisher() {
    use dartsif::config::{DampingRule, FisherLabels, Ihvp};
    let s = setup(&[]);
    let (comm, t) = (LocalCollective::default(), Timings::default());
    let eval = s.eval();
    let probe = Probe::new(s.net.as_ref(), &s.alphas, &comm, &s.data, &eval, Leaf::Mixing, BnMode::Eval, &t).unwrap();
    let p = probe.n_params() as i64;
    let g = Tensor::cat(
        &(0..3)
            .map(|j| dartsif::influence::kfac::per_sample_grads(&probe, j, FisherLabels::Data).unwrap())
            .collect::<Vec<_>>(),
        0,
    ); // [12, P]: N = 3 batches × m = 4 images, the 12 samples every mean below divides by
    let samples = Tensor::stack(
        &probe.sample_grads(FisherLabels::Data).unwrap().into_iter().map(|(_, g)| g).collect::<Vec<_>>(),
        0,
    );
    assert!(rel(&g, &samples) < 1e-10);
    let fisher = samples.tr().matmul(&samples) / 12.0;
    tch::manual_seed(5);
    let v = Tensor::randn([p], (Kind::Double, tch::Device::Cpu));
    let damping = 1e-3;
    let mut dist = Vec::new();
    for ihvp in [Ihvp::Kfac, Ihvp::Ekfac] {
        let mut c = s.cfg.select.clone();
        c.ihvp = ihvp;
        c.damping = damping;
        c.damping_rule = DampingRule::Fixed;
        let solver = Solver::build(&c, &probe, None).unwrap();
        let k = solver.kfac().unwrap();
        let dense = k.dense(&probe);
        let x = solver.solve(&probe, &v).unwrap().0;
        assert!(rel(&dense.mv(&x), &v) < 1e-9, "{ihvp}: (F̃ + λI)·x = v: {:e}", rel(&dense.mv(&x), &v));
        let q = solver.quad_own(&probe, Some(&v)).unwrap().unwrap();
        assert!((q - dot(&v, &x)).abs() < 1e-9 * q.abs(), "{ihvp}: quadratic form");
        let approx = &dense - Tensor::eye(p, (Kind::Double, tch::Device::Cpu)) * damping;
        // The block-diagonal part of the Fisher: its entries where the approximation has any.
        let mask = approx.abs().gt(0.0).to_kind(Kind::Double);
        dist.push(norm(&((&fisher * &mask) - &approx).reshape([-1])));
        if ihvp == Ihvp::Ekfac {
            let trace = approx.trace().double_value(&[]);
            let want = samples.square().sum(Kind::Double).double_value(&[]) / 12.0;
            assert!((trace - want).abs() < 1e-9 * want, "EK-FAC trace {trace} vs E‖g‖² {want}");
            c.damping_rule = DampingRule::MeanEigenvalue;
            let ruled = Solver::build(&c, &probe, None).unwrap();
            assert!((ruled.damping - 0.1 * want / p as f64).abs() < 1e-9 * ruled.damping, "λ {}", ruled.damping);
        }
    }
    assert!(dist[1] <= dist[0] * (1.0 + 1e-9), "EK-FAC {:e} vs K-FAC {:e} from the Fisher", dist[1], dist[0]);
}

/// K-FAC on a single linear layer is the analytic Kronecker inverse: with A = E[ā āᵀ] (inputs
/// with a bias coordinate) and S = E[s sᵀ], F = S ⊗ A in the row-major vectorisation of the
/// o × (d+1) weight, and (S ⊗ A)⁻¹ vec V = vec(S⁻¹ V A⁻¹) (f64, damping 1e-12 of a full-rank F).
#[test]
fn kfac_on_one_linear_layer_is_the_analytic_kronecker_inverse() {
    use dartsif::influence::kfac::{eigen, kron_solve};
    tch::manual_seed(9);
    let opts = (Kind::Double, tch::Device::Cpu);
    let (n, din, o) = (50, 4, 3);
    let x = Tensor::cat(&[Tensor::randn([n, din], opts), Tensor::ones([n, 1], opts)], 1);
    let sig = Tensor::randn([n, o], opts) * Tensor::from_slice(&[1.0, 2.0, 0.5]);
    let a = x.tr().matmul(&x) / n as f64;
    let sm = sig.tr().matmul(&sig) / n as f64;
    let (la, qa) = eigen(&a.unsqueeze(0));
    let (ls, qs) = eigen(&sm.unsqueeze(0));
    let lam = ls.unsqueeze(2) * la.unsqueeze(1) + 1e-12;
    let v = Tensor::randn([1, o, din + 1], opts);
    let ours = kron_solve(&qa, &qs, &lam, &v).squeeze_dim(0);
    let want = sm.inverse().matmul(&v.squeeze_dim(0)).matmul(&a.inverse());
    assert!(rel(&ours, &want) < 1e-9, "K-FAC vs S⁻¹VA⁻¹: {:e}", rel(&ours, &want));
    // And the same as the dense Kronecker product's inverse.
    let dense = sm.kron(&a);
    let x2 = Tensor::linalg_solve(&dense, &v.reshape([-1]), true);
    assert!(rel(&ours.reshape([-1]), &x2) < 1e-9);
}
