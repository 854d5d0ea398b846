//! Influence-engine benchmarks (not tests): `cargo bench --bench influence [-- quick]`.
//!
//! On the NB201 search supernet (C=16, N=5, 10 classes: 1,686,106 weights), batch 64, 32×32,
//! f32, libtorch's default threads:
//! 1. gradient vs HVP (double backward) per batch, and their ratio;
//! 2. DARTS-IM end to end with Woodbury over N batches (u = B·1 with the Fisher samples, the
//!    Woodbury solve, Bᵀz), against N gradients;
//! 3. sequential Sherman–Morrison vs batched Woodbury on random G (P = 1,686,106) for
//!    N = 16, 64, 256, next to the plain f64 Gram GEMM (2·N²·P flops), and their difference;
//! 4. curvature factored by layer against Woodbury over the same N = 10 batches: K-FAC and
//!    EK-FAC build (factor passes, eigendecompositions, EK-FAC's eigenvalue correction) and one
//!    IHVP, next to building Woodbury (N per-batch gradients, Gram) and one Woodbury IHVP;
//! 5. peak resident memory;
//! 6. `step [space=darts] [bf16]` alone: first-order DARTS search steps (θ and α), images/s;
//! 7. `if=N` alone: DARTS-IF's Woodbury build over N batches and its time per candidate.
//!
//! Second derivatives go by reverse over forward (`select.products`' default); `double-backward`
//! takes every one by double backward instead, for the comparison; `recompute` keeps one
//! segment's graph at a time (`select.recompute = "cells"`), for its peak memory and time.
//!
//! `quick` shrinks the repetitions and N (a smoke run); `no-sm` skips part 3; `no-kfac` part 4;
//! `kfac-only` runs part 4 alone;
//! `im=N` runs part 2
//! for that N only; `micro=M` runs parts 1 and 2 with running BatchNorm statistics and
//! derivatives in micro-batches of M images (`select.micro_batch`; 0 = whole batches), for
//! their peak memory; `ops` runs part 0 alone: gradient and double backward of each NB201 op on
//! one stage-1 activation (batch 64, 16 channels, 32×32), and of its pieces; `dual-ops` the same
//! for reverse over forward (gradient against the tangent forward and one backward: H u);
//! `products` each second-order primitive by both routes; `device=cuda` runs parts 1 and 2 on GPU 0 (`launch/gpu-check`). Times of part 1 are the median of the repetitions (the VM is noisy).
//! The process keeps freed host memory as the binary does (`device::keep_freed_memory`);
//! `malloc=default` keeps glibc's defaults instead.

use std::time::Instant;

use dartsif::comm::LocalCollective;
use dartsif::config::Config;
use dartsif::data::{SearchSplit, Synthetic};
use dartsif::influence::fisher::{ShardedGrads, ShermanMorrison, Woodbury};
use dartsif::influence::flat::norm;
use dartsif::influence::{Context, EvalSet, Leaf, Probe, Subject, Timings};
use dartsif::supernet::{self, BnMode};
use tch::{Kind, Tensor};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn sync(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Part 6 (`step [space=darts] [bf16]`): first-order DARTS search steps as the search runs them
/// (α: gradient of the loss on one batch through softmax(α), Adam; θ: gradient on another batch,
/// clipped to norm 5, SGD with momentum and weight decay), batch 64 each, BatchNorm with batch
/// statistics, on the NB201 benchmark supernet or the DARTS CIFAR supernet (C=16, 8 cells:
/// 1,930,618 weights). Images/s count both batches. `bf16`: `search.precision = "bf16"`.
/// The peer: `python3 benches/pytorch_eager.py step [space=darts] [bf16] [device=cuda]`.
fn search_steps(space: &str, device: tch::Device, bf16: bool, steps: usize) {
    use dartsif::optim::{clip_grad_norm, Adam, Sgd};
    let sets: Vec<String> = match space {
        "darts" => vec!["space.name=\"darts\"".into(), "space.channels=16".into(), "space.layers=8".into()],
        _ => vec!["space.channels=16".into(), "space.cells_per_stage=5".into()],
    };
    let sets: Vec<String> = sets
        .into_iter()
        .chain(["data.image_size=32", "search.batch_size=64", "search.micro_batch=0"].map(String::from))
        .collect();
    let cfg = Config::load(None, &sets).unwrap();
    tch::manual_seed(0);
    let net = supernet::build(&cfg, 1, Kind::Float, device).unwrap();
    let alphas: Vec<Tensor> = net
        .spec()
        .alpha_shapes()
        .iter()
        .map(|s| (Tensor::randn(s.as_slice(), (Kind::Float, device)) * 1e-3).set_requires_grad(true))
        .collect();
    let params: Vec<Tensor> = net.params().tensors.iter().map(Tensor::shallow_clone).collect();
    println!("{space} supernet: {} weights, batch 64, {}", net.params().count(), if bf16 { "bf16" } else { "f32" });
    let mut sgd = Sgd::new(cfg.search.weights.clone(), params.len());
    let mut adam = Adam::new(cfg.search.arch.clone(), &alphas);
    let batch =
        || (Tensor::randn([64, 3, 32, 32], (Kind::Float, device)), Tensor::randint(10, [64], (Kind::Int64, device)));
    let (xa, ya) = batch();
    let (xw, yw) = batch();
    let step = |sgd: &mut Sgd, adam: &mut Adam| {
        let _p = dartsif::ops::precision::guard(bf16);
        let w: Vec<Tensor> = alphas.iter().map(|a| a.softmax(-1, Kind::Float)).collect();
        let la = dartsif::loss::cross_entropy(&net.forward(&xa, &w, BnMode::BatchStats), &ya);
        let ga = Tensor::run_backward(&[la], &alphas, false, false);
        adam.step(&alphas, &ga);
        let w: Vec<Tensor> = alphas.iter().map(|a| a.softmax(-1, Kind::Float).detach()).collect();
        let lw = dartsif::loss::cross_entropy(&net.forward(&xw, &w, BnMode::BatchStats), &yw);
        let gw = Tensor::run_backward(&[lw], &params, false, false);
        clip_grad_norm(&gw, 5.0);
        sgd.step(&params, &gw, 0.025);
    };
    for _ in 0..3 {
        step(&mut sgd, &mut adam);
    }
    sync(device);
    let t = Instant::now();
    for _ in 0..steps {
        step(&mut sgd, &mut adam);
    }
    sync(device);
    let s = t.elapsed().as_secs_f64() / steps as f64;
    println!("search step ({steps} steps)  {s:8.4} s   {:.0} images/s", 128.0 / s);
    match dartsif::device::memory_in_use_mb(device) {
        Some(mb) => println!("device memory in use     {mb:8.0} MB"),
        None => println!("peak RSS                 {:8.0} MB", peak_rss_mb()),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // As the binary does (`device::keep_freed_memory`); `malloc=default` keeps glibc's defaults.
    if !args.iter().any(|a| a == "malloc=default") {
        println!("allocator: freed memory kept: {}", dartsif::device::keep_freed_memory());
    }
    let quick = args.iter().any(|a| a == "quick");
    let no_sm = args.iter().any(|a| a == "no-sm");
    let im_n: Option<usize> = args.iter().find_map(|a| a.strip_prefix("im=")).map(|n| n.parse().expect("im=N"));
    let micro: Option<usize> = args.iter().find_map(|a| a.strip_prefix("micro=")).map(|n| n.parse().expect("micro=M"));
    let double_backward = args.iter().any(|a| a == "double-backward");
    let reps = if quick { 1 } else { 5 };
    // `device=cuda`: on GPU 0 (launch/gpu-check); the CPU otherwise.
    let device = if args.iter().any(|a| a == "device=cuda") {
        assert!(tch::Cuda::is_available(), "device=cuda: libtorch sees no GPU");
        tch::Device::Cuda(0)
    } else {
        tch::Device::Cpu
    };
    println!("device: {device:?}");
    if args.iter().any(|a| a == "step") {
        let space = args.iter().find_map(|a| a.strip_prefix("space=")).unwrap_or("nb201");
        search_steps(space, device, args.iter().any(|a| a == "bf16"), if quick { 5 } else { 20 });
        return;
    }
    let comm = LocalCollective::on(device);
    println!("threads: {}", tch::get_num_threads());

    let cfg = Config::load(
        None,
        &[
            "space.channels=16",
            "space.cells_per_stage=5",
            "data.image_size=32",
            "data.train_size=2048",
            "search.batch_size=64",
            "search.micro_batch=0",
            "select.batch_size=64",
        ]
        .map(String::from),
    )
    .unwrap();
    let net = supernet::build(&cfg, 1, Kind::Float, device).unwrap();
    let alphas: Vec<Tensor> =
        net.spec().alpha_shapes().iter().map(|s| Tensor::randn(s.as_slice(), (Kind::Float, device)) * 1e-3).collect();
    let data = Synthetic::new(1, 2048, 10, 32, 3.0);
    let split = SearchSplit::halves(2048);
    println!("NB201 supernet: {} weights", net.params().count());

    if args.iter().any(|a| a == "ops") {
        ops_profile(device, reps);
        return;
    }
    if args.iter().any(|a| a == "dual-ops") {
        dual_ops_profile(device, reps);
        return;
    }
    if args.iter().any(|a| a == "products") {
        products(&cfg, net.as_ref(), &alphas, &data, &split, reps, micro);
        return;
    }
    if let Some(n) = args.iter().find_map(|a| a.strip_prefix("if=")).map(|n| n.parse().expect("if=N")) {
        darts_if_part(&cfg, net.as_ref(), &alphas, &data, &split, n);
        return;
    }
    let kfac_only = args.iter().any(|a| a == "kfac-only");
    if !kfac_only {
        let mut cfg = cfg.clone();
        if double_backward {
            cfg.select.products = dartsif::config::Products::DoubleBackward;
        }
        if args.iter().any(|a| a == "recompute") {
            cfg.select.recompute = dartsif::config::Recompute::Cells;
        }
        println!("second derivatives: {}, recompute {}", cfg.select.products, cfg.select.recompute);
        first_order_and_woodbury(&cfg, net.as_ref(), &alphas, &data, &split, reps, quick, no_sm, im_n, micro);
    }

    // 4. K-FAC / EK-FAC vs Woodbury on the same N batches.
    if !args.iter().any(|a| a == "no-kfac") {
        let n = if quick { 2 } else { 10 };
        let eval = EvalSet::draw(1, dartsif::data::Stream::EvalBatches, 0, &split.arch, n, 64).unwrap();
        let t = Timings::default();
        let probe =
            Probe::new(net.as_ref(), &alphas, &comm, &data, &eval, Leaf::Mixing, BnMode::BatchStats, &t).unwrap();
        let v = Tensor::randn([probe.n_params() as i64], (Kind::Float, probe.device()));
        for ihvp in [dartsif::config::Ihvp::Woodbury, dartsif::config::Ihvp::Kfac, dartsif::config::Ihvp::Ekfac] {
            let mut c = cfg.select.clone();
            c.ihvp = ihvp;
            c.damping = 1e-3;
            let (solver, t_build) = time(|| dartsif::influence::ihvp::Solver::build(&c, &probe, None).unwrap());
            let _ = solver.solve(&probe, &v).unwrap(); // warm-up
            let t_solve = median((0..reps).map(|_| time(|| drop(solver.solve(&probe, &v).unwrap())).1).collect());
            let extra = match solver.kfac() {
                Some(k) => format!(
                    "   factors {:.0} MB, {} Kronecker + {} diagonal blocks",
                    k.info.factor_mb, k.info.kronecker_blocks, k.info.diagonal_blocks
                ),
                None => String::new(),
            };
            println!("{:<9} N={n:<3} build {t_build:7.3} s   IHVP {t_solve:7.4} s{extra}", ihvp.to_string());
        }
    }
    println!("peak RSS {:.0} MB", peak_rss_mb());
}

/// Parts 1–3.
#[allow(clippy::too_many_arguments)]
fn first_order_and_woodbury(
    cfg: &Config,
    net: &dyn supernet::Supernet,
    alphas: &[Tensor],
    data: &Synthetic,
    split: &SearchSplit,
    reps: usize,
    quick: bool,
    no_sm: bool,
    im_n: Option<usize>,
    micro: Option<usize>,
) {
    let comm = LocalCollective::on(net.params().tensors[0].device());
    let timings = Timings::default();
    let eval1 = EvalSet::draw(1, dartsif::data::Stream::EvalBatches, 0, &split.arch, 1, 64).unwrap();
    let bn = if let Some(m) = micro {
        println!("BatchNorm: running statistics; micro-batches of {m} images (0 = whole batches)");
        BnMode::Eval
    } else {
        BnMode::BatchStats
    };
    let mut probe = Probe::new(net, alphas, &comm, data, &eval1, Leaf::Mixing, bn, &timings)
        .unwrap()
        .with_micro_batch(micro.unwrap_or(0));
    probe.forward_mode = cfg.select.products == dartsif::config::Products::ReverseOverForward;
    probe.recompute = cfg.select.recompute == dartsif::config::Recompute::Cells;
    let _ = probe.grad_theta(None).unwrap(); // warm-up
    let u = Tensor::randn([probe.n_params() as i64], (Kind::Float, probe.device()));
    // Interleaved repetitions, medians: the two quantities see the same machine noise.
    let (mut tgs, mut ths) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        tgs.push(time(|| drop(probe.grad_theta(None).unwrap())).1);
        ths.push(time(|| drop(probe.hvp(&u).unwrap())).1);
    }
    let (tg, th) = (median(tgs), median(ths));
    println!("gradient per batch        {tg:8.3} s");
    println!("HVP per batch             {th:8.3} s   HVP/gradient {:.2}", th / tg);

    // 2. DARTS-IM with Woodbury, end to end.
    for n in im_n.map(|n| vec![n]).unwrap_or(if quick { vec![2] } else { vec![3, 10] }) {
        let mut c = cfg.clone();
        c.select.n = n;
        c.select.criterion = dartsif::config::Criterion::DartsIm;
        c.select.ihvp = dartsif::config::Ihvp::Woodbury;
        if let Some(m) = micro {
            c.select.bn = dartsif::config::BnStats::Running;
            c.select.micro_batch = m;
        }
        let t = Timings::default();
        let ctx = Context::new(Subject { cfg: &c, comm: &comm, net, alphas, data, split }, &t);
        let (_, total) = time(|| ctx.run().unwrap());
        println!(
            "DARTS-IM woodbury N={n:<3}   {total:8.3} s   = {:.2} gradients of N batches (autograd {:.2} s, linalg {:.3} s)",
            total / (n as f64 * tg),
            t.autograd.get(),
            t.linalg.get()
        );
    }

    // 3. Sherman–Morrison vs Woodbury on random per-batch gradients at P = 1,686,106.
    let p = net.params().count();
    let eta = 5e-4;
    for n in if no_sm {
        vec![]
    } else if quick {
        vec![16]
    } else {
        vec![16, 64, 256]
    } {
        tch::manual_seed(n as i64);
        let g = Tensor::randn([n as i64, p as i64], (Kind::Float, tch::Device::Cpu)) * 1e-3;
        let v = Tensor::randn([p as i64], (Kind::Float, tch::Device::Cpu));
        let t = Timings::default();
        let sharded = || ShardedGrads { n, p, lo: 0, hi: p, g: g.shallow_clone() };
        // The reference: the plain Gram GEMM GGᵀ in f64 (2·N²·P flops), in the same column chunks.
        let (_, t_gram) = time(|| {
            let mut k = Tensor::zeros([n as i64, n as i64], (Kind::Double, tch::Device::Cpu));
            let mut c = 0i64;
            while c < p as i64 {
                let len = (1i64 << 16).min(p as i64 - c);
                let gc = g.narrow(1, c, len).to_kind(Kind::Double);
                k += gc.matmul(&gc.tr());
                c += len;
            }
            k
        });
        let ((xw, _), t_w) = time(|| {
            let w = Woodbury::new(&comm, sharded(), eta, &t).unwrap();
            (w.solve(&comm, &v, &t).unwrap(), ())
        });
        let ((xs, _), t_s) = time(|| {
            let s = ShermanMorrison::new(&comm, sharded(), eta, &t).unwrap();
            (s.solve(&comm, &v, &t).unwrap(), ())
        });
        let diff = norm(&(&xw - &xs)) / norm(&xs);
        println!(
            "N={n:<4} Gram GEMM {t_gram:7.3} s   Woodbury {t_w:7.3} s ({:.2}× Gram)   Sherman–Morrison {t_s:8.3} s   rel. diff {diff:.1e} (f32 results)",
            t_w / t_gram
        );
    }
}

/// Part 7 (`if=N`): DARTS-IF as `select --criterion darts-if --ihvp woodbury` scores a
/// candidate: the Woodbury operator over N batches of 64 (N per-batch gradients and their Gram,
/// built once), then per candidate the loss and θ-gradient ĝ over the N batches at the mixing
/// weights without it, and ĝᵀF⁻¹ĝ. The first three candidates; their median. The peer:
/// `python3 benches/pytorch_eager.py if=N`.
fn darts_if_part(
    cfg: &Config,
    net: &dyn supernet::Supernet,
    alphas: &[Tensor],
    data: &Synthetic,
    split: &SearchSplit,
    n: usize,
) {
    use dartsif::influence::criteria::{candidates, remove_op};
    let comm = LocalCollective::on(net.params().tensors[0].device());
    let t = Timings::default();
    let eval = EvalSet::draw(1, dartsif::data::Stream::EvalBatches, 0, &split.arch, n, 64).unwrap();
    let mut probe = Probe::new(net, alphas, &comm, data, &eval, Leaf::Mixing, BnMode::BatchStats, &t).unwrap();
    probe.load_all(data).unwrap();
    let mut c = cfg.select.clone();
    c.n = n;
    c.ihvp = dartsif::config::Ihvp::Woodbury;
    let (solver, t_build) = time(|| dartsif::influence::ihvp::Solver::build(&c, &probe, None).unwrap());
    let w0 = probe.base_weights();
    let (l0, t_l0) = time(|| probe.loss_local(&w0));
    let per: Vec<f64> = candidates(net)
        .into_iter()
        .take(3)
        .map(|cand| {
            time(|| {
                let w = remove_op(&w0, cand);
                let (l, g) = probe.grad_theta_local(&w);
                let q = solver.quad_own(&probe, Some(&g)).unwrap().expect("this rank's candidate");
                assert!((l - l0).is_finite() && q.is_finite());
            })
            .1
        })
        .collect();
    let tc = median(per);
    println!("DARTS-IF woodbury N={n:<3}   build {t_build:8.3} s   L(w) over N batches {t_l0:.3} s");
    println!("DARTS-IF per candidate    {tc:8.3} s   (median of 3: loss and ĝ over N batches, ĝᵀF⁻¹ĝ)");
    println!("peak RSS {:.0} MB", peak_rss_mb());
}

/// `products`: each second-order primitive on one batch by reverse over forward and by double
/// backward, alternating (medians of the repetitions), next to the gradient.
fn products(
    cfg: &Config,
    net: &dyn supernet::Supernet,
    alphas: &[Tensor],
    data: &Synthetic,
    split: &SearchSplit,
    reps: usize,
    micro: Option<usize>,
) {
    let comm = LocalCollective::on(net.params().tensors[0].device());
    let timings = Timings::default();
    let eval1 = EvalSet::draw(1, dartsif::data::Stream::EvalBatches, 0, &split.arch, 1, cfg.select.batch_size).unwrap();
    let bn = if micro.is_some() { BnMode::Eval } else { BnMode::BatchStats };
    println!("BatchNorm: {bn:?}, micro-batches of {} images (0 = whole batches)", micro.unwrap_or(0));
    let mut probe = Probe::new(net, alphas, &comm, data, &eval1, Leaf::Mixing, bn, &timings)
        .unwrap()
        .with_micro_batch(micro.unwrap_or(0));
    let _ = probe.grad_theta(None).unwrap(); // warm-up
    let u = Tensor::randn([probe.n_params() as i64], (Kind::Float, probe.device()));
    let ones =
        Tensor::ones([dartsif::influence::flat::flatten(&probe.leaf).numel() as i64], (Kind::Float, probe.device()));
    let names = ["gradient", "H u", "B·1", "Bᵀu", "pass 1 (g and B·1)"];
    let mut t = vec![vec![Vec::new(); names.len()]; 2];
    for _ in 0..reps.max(3) {
        for (route, forward) in [true, false].into_iter().enumerate() {
            probe.forward_mode = forward;
            t[route][0].push(time(|| drop(probe.grad_theta(None).unwrap())).1);
            t[route][1].push(time(|| drop(probe.hvp(&u).unwrap())).1);
            t[route][2].push(time(|| drop(probe.mixed(&ones).unwrap())).1);
            t[route][3].push(time(|| drop(probe.mixed_t(&u).unwrap())).1);
            t[route][4].push(time(|| drop(probe.batch_grads_and_mixed_ones_prefixes(&[1], true).unwrap())).1);
        }
    }
    println!("{:<22} {:>22} {:>16} {:>8}", "per batch (s)", "reverse over forward", "double backward", "ratio");
    for (k, name) in names.iter().enumerate() {
        let (a, b) = (median(t[0][k].clone()), median(t[1][k].clone()));
        println!("{name:<22} {a:>22.3} {b:>16.3} {:>8.2}", b / a);
    }
}

/// Part 0: where a double backward's time goes, op by op. Each op runs on x (64×16×32×32, a
/// function of upstream weights in the network, so x requires grad) under the loss
/// l = ½ Σ r·y², which has a non-zero second derivative in y; "gradient" is a forward and
/// backward to x and the op's weights, "HVP" the same with the graph kept and a second backward
/// of g·u. Medians of the repetitions.
fn ops_profile(device: tch::Device, reps: usize) {
    use dartsif::ops::layers::avg_pool;
    let f = (Kind::Float, device);
    tch::manual_seed(0);
    let x0 = Tensor::randn([64, 16, 32, 32], f);
    let w1 = (Tensor::randn([16, 16, 1, 1], f) * 0.25).set_requires_grad(true);
    let w3 = (Tensor::randn([16, 16, 3, 3], f) * 0.08).set_requires_grad(true);
    let w3s: Vec<Tensor> = (0..3).map(|_| (Tensor::randn([16, 16, 3, 3], f) * 0.08).set_requires_grad(true)).collect();
    let r = Tensor::rand([64, 16, 32, 32], f);
    let r3 = Tensor::rand([64, 48, 32, 32], f);
    let bn = |y: &Tensor| {
        y.batch_norm(None::<&Tensor>, None::<&Tensor>, None::<&Tensor>, None::<&Tensor>, true, 0.1, 1e-5, false)
    };
    type OpFn<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;
    let ops: Vec<(&str, Vec<&Tensor>, OpFn)> = vec![
        ("relu", vec![], Box::new(|x: &Tensor| x.relu())),
        ("batchnorm (batch statistics)", vec![], Box::new(|x: &Tensor| bn(x))),
        ("conv 1x1", vec![&w1], Box::new(|x: &Tensor| x.conv2d(&w1, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1))),
        ("conv 3x3", vec![&w3], Box::new(|x: &Tensor| x.conv2d(&w3, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1))),
        (
            "relu-conv1x1-bn",
            vec![&w1],
            Box::new(|x: &Tensor| bn(&x.relu().conv2d(&w1, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1))),
        ),
        (
            "relu-conv3x3-bn",
            vec![&w3],
            Box::new(|x: &Tensor| bn(&x.relu().conv2d(&w3, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1))),
        ),
        ("avg pool 3x3, depthwise conv (ours)", vec![], Box::new(|x: &Tensor| avg_pool(x, 3, 1, 1))),
        (
            "avg pool 3x3, libtorch avg_pool2d",
            vec![],
            Box::new(|x: &Tensor| x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)),
        ),
    ];
    // One node feeding three edges: three relu-conv3x3-bn ops apart, or as one op with the
    // three kernels stacked along the output channels (the same sums per channel).
    let three: Vec<(&str, OpFn)> = vec![
        (
            "3 × relu-conv3x3-bn, apart",
            Box::new(|x: &Tensor| {
                Tensor::cat(
                    &w3s.iter()
                        .map(|w| bn(&x.relu().conv2d(w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)))
                        .collect::<Vec<_>>(),
                    1,
                )
            }),
        ),
        (
            "3 × relu-conv3x3-bn, stacked kernels",
            Box::new(|x: &Tensor| {
                bn(&x.relu().conv2d(&Tensor::cat(&w3s, 0), None::<Tensor>, [1, 1], [1, 1], [1, 1], 1))
            }),
        ),
    ];
    let mut ops = ops;
    for (name, op) in three {
        ops.push((name, w3s.iter().collect(), op));
    }
    println!("{:<38} {:>10} {:>10} {:>8}", "op (64×16×32×32)", "gradient", "HVP", "ratio");
    for (name, weights, op) in &ops {
        let (mut tg, mut th) = (Vec::new(), Vec::new());
        for _ in 0..reps.max(3) {
            let x = x0.copy().set_requires_grad(true);
            let mut inputs: Vec<&Tensor> = vec![&x];
            inputs.extend(weights.iter().copied());
            let u: Vec<Tensor> = inputs.iter().map(|t| t.randn_like()).collect();
            tg.push(
                time(|| {
                    let y = op(&x);
                    let r = if y.size()[1] == 48 { &r3 } else { &r };
                    let l = (r * &y * &y).sum(Kind::Float) * 0.5;
                    drop(Tensor::run_backward(&[&l], &inputs, false, false))
                })
                .1,
            );
            th.push(
                time(|| {
                    let y = op(&x);
                    let r = if y.size()[1] == 48 { &r3 } else { &r };
                    let l = (r * &y * &y).sum(Kind::Float) * 0.5;
                    let g = Tensor::run_backward(&[&l], &inputs, true, true);
                    let dot = g
                        .iter()
                        .zip(&u)
                        .map(|(g, u)| (g * u).sum(Kind::Float))
                        .fold(Tensor::zeros([], f), |a, b| a + b);
                    drop(Tensor::run_backward(&[&dot], &inputs, false, false))
                })
                .1,
            );
        }
        let (tg, th) = (median(tg) * 1e3, median(th) * 1e3);
        println!("{name:<38} {tg:8.1} ms {th:8.1} ms {:7.2}×", th / tg);
    }
}

/// Where reverse over forward's time goes, op by op: the ops as the supernets build them
/// (`ops::layers`, NB201's non-affine BatchNorm with batch statistics), each on one stage-1
/// activation x (64×16×32×32) under l = ½ Σ r·y². "gradient": forward and backward to x and the
/// op's weights; "H u": the tangent forward along u (on x and on the weights) and one backward of
/// l̇ = Σ r·y·ẏ to the same inputs, as `select.products = "reverse-over-forward"` computes H u.
fn dual_ops_profile(device: tch::Device, reps: usize) {
    use dartsif::ops::dual::{Dual, Seeds};
    use dartsif::ops::layers::{Builder, ReluConvBn};
    let f = (Kind::Float, device);
    tch::manual_seed(0);
    let mut b = Builder::new(Kind::Float);
    let bn = b.batch_norm("bn", 16, false);
    let c1 = b.conv("c1", 16, 16, 1, 1, 0, 1, 1);
    let c3 = b.conv("c3", 16, 16, 3, 1, 1, 1, 1);
    let r1 = ReluConvBn::new(&mut b, "r1", 16, 16, 1, 1, 0, false);
    let r3 = ReluConvBn::new(&mut b, "r3", 16, 16, 3, 1, 1, false);
    let params = b.finish();
    params.to_device(device);
    let x0 = Tensor::randn([64, 16, 32, 32], f);
    let r = Tensor::rand([64, 16, 32, 32], f);
    let mode = BnMode::BatchStats;
    type DualFn<'a> = Box<dyn Fn(&Dual, &Seeds) -> Dual + 'a>;
    let ops: Vec<(&str, Vec<&Tensor>, DualFn)> = vec![
        ("relu", vec![], Box::new(|x: &Dual, _: &Seeds| x.relu())),
        ("batchnorm (batch statistics)", vec![], Box::new(|x: &Dual, s: &Seeds| bn.dual(x, mode, s))),
        ("conv 1x1", vec![&c1.w], Box::new(|x: &Dual, s: &Seeds| c1.dual(x, s))),
        ("conv 3x3", vec![&c3.w], Box::new(|x: &Dual, s: &Seeds| c3.dual(x, s))),
        ("relu-conv1x1-bn", vec![&r1.parts().0.w], Box::new(|x: &Dual, s: &Seeds| r1.dual(x, mode, s))),
        ("relu-conv3x3-bn", vec![&r3.parts().0.w], Box::new(|x: &Dual, s: &Seeds| r3.dual(x, mode, s))),
        ("avg pool 3x3, depthwise conv (ours)", vec![], Box::new(|x: &Dual, _: &Seeds| x.avg_pool(3, 1, 1))),
    ];
    println!("{:<38} {:>10} {:>10} {:>8}", "op (64×16×32×32)", "gradient", "H u (rof)", "ratio");
    for (name, weights, op) in &ops {
        let (mut tg, mut th) = (Vec::new(), Vec::new());
        for _ in 0..reps.max(3) {
            let x = x0.copy().set_requires_grad(true);
            let mut inputs: Vec<&Tensor> = vec![&x];
            inputs.extend(weights.iter().copied());
            let u: Vec<Tensor> = inputs.iter().map(|t| t.randn_like()).collect();
            let seeds = Seeds::of(&weights.iter().map(|w| w.shallow_clone()).collect::<Vec<_>>(), &u[1..]);
            tg.push(
                time(|| {
                    let y = op(&Dual::constant(x.shallow_clone()), &Seeds::none()).x;
                    let l = (&r * &y * &y).sum(Kind::Float) * 0.5;
                    drop(Tensor::run_backward(&[&l], &inputs, false, false))
                })
                .1,
            );
            th.push(
                time(|| {
                    let out = op(&Dual { x: x.shallow_clone(), dx: Some(u[0].shallow_clone()) }, &seeds);
                    let ldot = (&r * &out.x * out.dx.expect("a tangent")).sum(Kind::Float);
                    drop(Tensor::run_backward(&[&ldot], &inputs, false, false))
                })
                .1,
            );
        }
        let (tg, th) = (median(tg) * 1e3, median(th) * 1e3);
        println!("{name:<38} {tg:8.1} ms {th:8.1} ms {:7.2}×", th / tg);
    }
}
