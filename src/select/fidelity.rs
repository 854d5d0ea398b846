//! `inspect fidelity`: how well does each criterion predict what removing an op really does?
//!
//! For every candidate (edge, op ≠ none) the *actual* ΔL is the validation loss after removing
//! the op (its mixing weight set to 0) and fine-tuning θ for a fixed number of SGD steps, minus
//! the same fine-tuning without removal. Each criterion's scores are then compared with it:
//! Spearman and Pearson correlation over candidates, and per-edge agreement of the chosen op
//! (the highest score) with the op whose removal hurts most. Candidates are split over ranks.

use serde::Serialize;
use tch::Tensor;

use crate::comm::broadcast_value;
use crate::config::{Config, Criterion, Curvature, DampingRule, ExactMatrix, FisherLabels, Ihvp, ImSign};
use crate::data::{epoch_order, global_batch, make_batch, Dataset, Stream};
use crate::error::{Error, Result};
use crate::influence::criteria::{candidates, remove_op, Candidate};
use crate::influence::{Context, EvalSet, Subject, Timings};
use crate::loss::cross_entropy;
use crate::optim::Sgd;
use crate::space::ScoreTable;
use crate::supernet::{BnMode, Supernet};

/// Fine-tuning used to measure the actual ΔL.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct FineTune {
    /// SGD steps, or the cap on them when fine-tuning until convergence.
    pub steps: usize,
    pub lr: f64,
    /// Fine-tune until the gradient norm falls below this (checked every [`WINDOW`] steps on
    /// the mean of the window's mini-batch gradients, an estimate of ‖∇θL_train‖ whose
    /// sampling noise is √WINDOW times smaller than one batch's), at most `steps` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_grad_norm: Option<f64>,
}

/// Steps per convergence check of [`FineTune::until_grad_norm`].
pub const WINDOW: usize = 10;

/// One criterion's agreement with the actual ΔL.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub label: String,
    pub spearman: Option<f64>,
    pub pearson: Option<f64>,
    /// Fraction of edges whose chosen op is the op whose removal hurts most.
    pub edge_agreement: Option<f64>,
    /// "ok", or why the criterion could not be evaluated.
    pub status: String,
    /// Score per candidate (same order as `FidelityReport::candidates`).
    pub scores: Vec<f64>,
}

/// The measured part of a fidelity report, read back by `--actual FILE` (a `fidelity.json`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Measured {
    pub fine_tune: FineTune,
    pub baseline_loss: f64,
    pub candidates: Vec<(String, String, String)>,
    pub actual_delta_loss: Vec<f64>,
    #[serde(default)]
    pub fine_tune_steps: Vec<usize>,
}

impl Measured {
    /// A previous report's measurement, which must be of the same candidates and fine-tuning.
    pub fn read(path: &std::path::Path, labels: &[(String, String, String)], ft: &FineTune) -> Result<Measured> {
        let bad = |msg: String| Error::Path { path: path.to_path_buf(), msg };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let m: Measured =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a fidelity.json with a measured ΔL ({e})")))?;
        if m.candidates != labels {
            return Err(bad(format!(
                "its {} candidates are not this supernet's {} (another space or run?)",
                m.candidates.len(),
                labels.len()
            )));
        }
        if m.fine_tune != *ft {
            let until = |f: &FineTune| f.until_grad_norm.map(|t| format!(" until ‖∇θ‖ < {t}")).unwrap_or_default();
            return Err(bad(format!(
                "measured with {} steps at lr {}{}, not the {} steps at lr {}{} asked for (--steps, --lr, --until-grad-norm)",
                m.fine_tune.steps,
                m.fine_tune.lr,
                until(&m.fine_tune),
                ft.steps,
                ft.lr,
                until(ft)
            )));
        }
        if m.actual_delta_loss.len() != labels.len() || m.actual_delta_loss.iter().any(|x| !x.is_finite()) {
            return Err(bad("its actual ΔL is incomplete or not finite".into()));
        }
        Ok(m)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FidelityReport {
    pub fine_tune: FineTune,
    pub baseline_loss: f64,
    /// (cell, edge, op) labels.
    pub candidates: Vec<(String, String, String)>,
    pub actual_delta_loss: Vec<f64>,
    /// Fine-tuning steps taken: the baseline's, then each candidate's (all `steps` unless
    /// fine-tuning until convergence).
    pub fine_tune_steps: Vec<usize>,
    pub criteria: Vec<Agreement>,
}

/// Spearman's ρ: Pearson's ρ of the ranks (ties get their average rank).
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    pearson(&ranks(a), &ranks(b))
}

/// Pearson's ρ; None when either side is constant.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}

/// Per (cell, edge): is the highest-scoring candidate the one with the largest actual ΔL?
fn edge_agreement(cands: &[Candidate], scores: &[f64], actual: &[f64]) -> Option<f64> {
    let mut edges: Vec<(usize, usize)> = cands.iter().map(|c| (c.cell, c.edge)).collect();
    edges.dedup();
    let argmax = |vals: &[f64], e: (usize, usize)| {
        cands
            .iter()
            .enumerate()
            .filter(|(_, c)| (c.cell, c.edge) == e)
            .max_by(|a, b| vals[a.0].total_cmp(&vals[b.0]))
            .map(|(i, _)| i)
    };
    let hits = edges.iter().filter(|&&e| argmax(scores, e) == argmax(actual, e)).count();
    (!edges.is_empty()).then(|| hits as f64 / edges.len() as f64)
}

struct Snapshot {
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
}

impl Snapshot {
    fn take(net: &dyn Supernet) -> Self {
        let _g = tch::no_grad_guard();
        Snapshot {
            params: net.params().tensors.iter().map(|t| t.detach().copy()).collect(),
            buffers: net.params().buffers.iter().map(|t| t.copy()).collect(),
        }
    }

    fn restore(&self, net: &dyn Supernet) {
        let _g = tch::no_grad_guard();
        for (d, s) in
            net.params().tensors.iter().zip(&self.params).chain(net.params().buffers.iter().zip(&self.buffers))
        {
            d.shallow_clone().copy_(s);
        }
    }
}

/// Validation loss after `ft.steps` SGD steps on θ with mixing weights `w` fixed (or fewer when
/// converged, [`FineTune::until_grad_norm`]), from the snapshot (this rank alone; the same
/// batches for every candidate), and the steps taken.
#[allow(clippy::too_many_arguments)]
fn fine_tuned_loss(
    cfg: &Config,
    net: &dyn Supernet,
    snap: &Snapshot,
    w: &[Tensor],
    data: &dyn Dataset,
    order: &[usize],
    eval: &[(Tensor, Tensor)],
    ft: &FineTune,
) -> Result<(f64, usize)> {
    // Every call starts from the snapshot: it was taken before the first call and each call
    // restores it on the way out.
    let params = &net.params().tensors;
    let mut sgd = Sgd::new(cfg.search.weights.clone(), params.len());
    let b = cfg.search.batch_size;
    let m = cfg.micro_batch(1);
    let kind = params[0].kind();
    let mut window: Option<Vec<Tensor>> = None;
    let mut taken = 0;
    for step in 0..ft.steps {
        let batch = global_batch(order, step, b);
        let mut grads: Option<Vec<Tensor>> = None;
        for chunk in batch.chunks(m) {
            let (x, y) = match make_batch(data, chunk, None, params[0].device()) {
                Ok(b) => b,
                Err(e) => {
                    snap.restore(net);
                    return Err(e);
                }
            };
            let loss =
                cross_entropy(&net.forward(&x.to_kind(kind), w, BnMode::Train), &y) * (chunk.len() as f64 / b as f64);
            let g = Tensor::run_backward(&[loss], params, false, false);
            grads = Some(match grads {
                None => g,
                Some(acc) => acc.iter().zip(&g).map(|(a, b)| a + b).collect(),
            });
        }
        let grads = grads.expect("a batch");
        if let Some(tol) = ft.until_grad_norm {
            let _g = tch::no_grad_guard();
            window = Some(match window {
                None => grads.iter().map(|g| g.copy()).collect(),
                Some(acc) => acc.iter().zip(&grads).map(|(a, g)| a + g).collect(),
            });
            if (step + 1) % WINDOW == 0 {
                let sum = window.take().expect("window");
                let sq: f64 = sum
                    .iter()
                    .map(|g| g.to_kind(tch::Kind::Double).square().sum(tch::Kind::Double).double_value(&[]))
                    .sum();
                if sq.sqrt() / (WINDOW as f64) < tol {
                    taken = step + 1;
                    break;
                }
            }
        }
        crate::optim::clip_grad_norm(&grads, cfg.search.weights.grad_clip);
        sgd.step(params, &grads, ft.lr);
        taken = step + 1;
    }
    let _g = tch::no_grad_guard();
    let loss = eval
        .iter()
        .map(|(x, y)| cross_entropy(&net.forward(x, w, BnMode::BatchStats), y).double_value(&[]))
        .sum::<f64>()
        / eval.len() as f64;
    snap.restore(net);
    Ok((loss, taken))
}

/// The criteria compared: magnitude, drop, DARTS-IF with every IHVP solver, DARTS-IM with both
/// signs (configured solver).
fn criteria_configs(cfg: &Config) -> Vec<(String, Config)> {
    let mut out = Vec::new();
    let with = |criterion: Criterion, ihvp: Ihvp, sign: ImSign| {
        let mut c = cfg.clone();
        c.select.criterion = criterion;
        c.select.ihvp = ihvp;
        c.select.im_sign = sign;
        c.select.faithful = false;
        c
    };
    out.push(("magnitude".to_string(), with(Criterion::Magnitude, cfg.select.ihvp, ImSign::Paper)));
    out.push(("drop".to_string(), with(Criterion::Drop, cfg.select.ihvp, ImSign::Paper)));
    for &ihvp in Ihvp::ALL.iter().filter(|&&i| !matches!(i, Ihvp::Kfac | Ihvp::Ekfac)) {
        out.push((format!("darts-if/{ihvp}"), with(Criterion::DartsIf, ihvp, ImSign::Paper)));
    }
    // (The factored solvers are listed below with their damping rule.)
    if !matches!(cfg.select.ihvp, Ihvp::Kfac | Ihvp::Ekfac) {
        for &sign in ImSign::ALL {
            out.push((format!("darts-im/{}/{sign}", cfg.select.ihvp), with(Criterion::DartsIm, cfg.select.ihvp, sign)));
        }
    }
    // The generalised Gauss–Newton curvature (the true Fisher: right in every direction the
    // logits move), by CG and, for small models, densely. It is singular (rank ≤ samples ×
    // classes), so without a damping of the user's it is damped by the mean-eigenvalue rule.
    let damped = |mut c: Config| {
        if c.select.damping_rule != DampingRule::MeanEigenvalue && c.select.damping == 0.0 {
            c.select.damping_rule = DampingRule::MeanEigenvalue;
        }
        c
    };
    let ggn = |mut c: Config| {
        c.select.curvature = Curvature::Ggn;
        c.select.exact_matrix = ExactMatrix::Ggn;
        damped(c)
    };
    out.push(("darts-if/cg-ggn".to_string(), ggn(with(Criterion::DartsIf, Ihvp::Cg, ImSign::Paper))));
    out.push(("darts-if/exact-ggn".to_string(), ggn(with(Criterion::DartsIf, Ihvp::Exact, ImSign::Paper))));
    for &sign in ImSign::ALL {
        out.push((format!("darts-im/cg-ggn/{sign}"), ggn(with(Criterion::DartsIm, Ihvp::Cg, sign))));
    }
    // Curvature factored by layer: K-FAC, EK-FAC (damped by the mean-eigenvalue rule unless the
    // user set λ), on the Fisher of the data's labels and on the true Fisher by Monte Carlo.
    for ihvp in [Ihvp::Kfac, Ihvp::Ekfac] {
        for &labels in FisherLabels::ALL {
            let tag = if labels == FisherLabels::Sampled { "-mc" } else { "" };
            let k = |c: Config| {
                let mut c = damped(c);
                c.select.fisher_labels = labels;
                c
            };
            out.push((format!("darts-if/{ihvp}{tag}"), k(with(Criterion::DartsIf, ihvp, ImSign::Paper))));
            for &sign in ImSign::ALL {
                out.push((format!("darts-im/{ihvp}{tag}/{sign}"), k(with(Criterion::DartsIm, ihvp, sign))));
            }
        }
    }
    out
}

/// The actual ΔL of removing each candidate: the validation loss after removal and `ft`
/// fine-tuning, minus the loss after the same fine-tuning without removal. Candidates are split
/// over ranks; every rank returns (baseline loss, ΔL per candidate in [`candidates`] order,
/// fine-tuning steps taken: the baseline's, then each candidate's).
pub fn actual_delta_loss(subject: Subject, ft: &FineTune) -> Result<(f64, Vec<f64>, Vec<usize>)> {
    let Subject { cfg, comm, net, alphas, data, split } = subject;
    let cands = candidates(net);
    let kind = net.params().tensors[0].kind();
    let w0: Vec<Tensor> = net.spec().mixing(&alphas.iter().map(|a| a.detach().to_kind(kind)).collect::<Vec<_>>());
    let snap = Snapshot::take(net);
    let order = epoch_order(cfg.seed, Stream::Fidelity, 0, &split.weights);
    let held_out = EvalSet::draw(cfg.seed, Stream::Fidelity, 1, &split.arch, cfg.select.n, cfg.select_batch())?;
    let eval = held_out.materialize(data, kind, comm.device())?;
    let t0 = std::time::Instant::now();
    let mine_idx: Vec<usize> = (comm.rank()..cands.len()).step_by(comm.size()).collect();
    let mut progress = crate::progress::Progress::new(
        match ft.until_grad_norm {
            None => format!("fidelity: fine-tuning {} steps after each removal", ft.steps),
            Some(t) => {
                format!("fidelity: fine-tuning after each removal until ‖∇θ‖ < {t} (at most {} steps)", ft.steps)
            }
        },
        "candidates",
        mine_idx.len() as u64 + 1,
        comm.is_coordinator(),
        true,
    );
    let (baseline, baseline_steps) = fine_tuned_loss(cfg, net, &snap, &w0, data, &order, &eval, ft)?;
    progress.inc(1);
    let mut mine = Vec::new();
    for i in mine_idx {
        // Each rank fine-tunes its own candidates: a failure here is this rank's alone.
        let (l, taken) = fine_tuned_loss(cfg, net, &snap, &remove_op(&w0, cands[i]), data, &order, &eval, ft)
            .map_err(|e| crate::comm::fail_alone(comm, e))?;
        tracing::debug!(
            "fidelity: candidate {}/{} actual ΔL {:.5} after {taken} steps",
            i + 1,
            cands.len(),
            l - baseline
        );
        mine.push((i, l - baseline, taken));
        progress.inc(1);
    }
    progress.finish();
    let bytes = postcard::to_stdvec(&mine).map_err(|e| Error::Comm(e.to_string()))?;
    let all = comm.gather_bytes(0, &bytes)?;
    let actual: Option<(Vec<f64>, Vec<usize>)> = if comm.is_coordinator() {
        let mut v = vec![f64::NAN; cands.len()];
        let mut steps = vec![0; cands.len() + 1];
        steps[0] = baseline_steps;
        for b in &all {
            for (i, d, n) in
                postcard::from_bytes::<Vec<(usize, f64, usize)>>(b).map_err(|e| Error::Comm(e.to_string()))?
            {
                v[i] = d;
                steps[i + 1] = n;
            }
        }
        Some((v, steps))
    } else {
        None
    };
    let (actual, steps): (Vec<f64>, Vec<usize>) = broadcast_value(comm, 0, actual.as_ref())?;
    tracing::info!(
        "fidelity: actual ΔL of {} candidates measured in {:.1} s (fine-tuning steps: baseline {}, candidates {}–{})",
        cands.len(),
        t0.elapsed().as_secs_f64(),
        steps[0],
        steps[1..].iter().min().copied().unwrap_or(0),
        steps[1..].iter().max().copied().unwrap_or(0)
    );
    Ok((baseline, actual, steps))
}

/// How well one criterion's score table predicts the actual ΔL.
pub fn agreement(label: &str, cands: &[Candidate], table: &ScoreTable, actual: &[f64]) -> Agreement {
    let scores: Vec<f64> = cands.iter().map(|k| table.scores[k.cell][k.edge][k.op]).collect();
    agreement_of_scores(label, cands, scores, actual)
}

/// [`agreement`] of the candidates' scores in candidate order.
fn agreement_of_scores(label: &str, cands: &[Candidate], scores: Vec<f64>, actual: &[f64]) -> Agreement {
    Agreement {
        label: label.to_string(),
        spearman: spearman(&scores, actual),
        pearson: pearson(&scores, actual),
        edge_agreement: edge_agreement(cands, &scores, actual),
        status: "ok".into(),
        scores,
    }
}

fn skipped(label: String, why: String) -> Agreement {
    Agreement { label, spearman: None, pearson: None, edge_agreement: None, status: why, scores: Vec::new() }
}

/// The labels `inspect fidelity --criteria` accepts (all of them by default).
pub fn criterion_labels(cfg: &Config) -> Vec<String> {
    criteria_configs(cfg).into_iter().map(|(l, _)| l).collect()
}

/// The (cell, edge, op) labels of the candidates of `net`, in [`candidates`] order.
pub fn candidate_labels(net: &dyn Supernet) -> Vec<(String, String, String)> {
    report(
        net.spec(),
        &candidates(net),
        &FineTune { steps: 0, lr: 0.0, until_grad_norm: None },
        0.0,
        Vec::new(),
        Vec::new(),
    )
    .candidates
}

/// Measure the actual ΔL of every candidate (or take `measured`, a previous run's) and compare
/// the criteria with it: those labelled in `only` ([`criterion_labels`]), or all of them when
/// `only` is empty. `emit` sees the report as it grows — once the ΔL is known, then after each
/// criterion — on every rank, so a stopped run keeps what it had.
pub fn run(
    subject: Subject,
    ft: &FineTune,
    only: &[String],
    measured: Option<Measured>,
    mut emit: impl FnMut(&FidelityReport) -> Result<()>,
) -> Result<FidelityReport> {
    let Subject { cfg, net, .. } = subject;
    let spec = net.spec().clone();
    let cands = candidates(net);
    let (baseline, actual, steps) = match measured {
        Some(m) => (m.baseline_loss, m.actual_delta_loss, m.fine_tune_steps),
        None => actual_delta_loss(subject, ft)?,
    };
    let report = |criteria: Vec<Agreement>| {
        let mut r = report(&spec, &cands, ft, baseline, actual.clone(), criteria);
        r.fine_tune_steps = steps.clone();
        r
    };
    emit(&report(Vec::new()))?;
    let mut criteria = Vec::new();
    // DARTS-IM's two signs differ in the sign of every score only (a product by ±1, exact): the
    // second one asked for is the first one's scores negated, not a second solve. Keyed by the
    // whole config with the sign set to the paper's.
    let mut im_scores: Vec<(serde_json::Value, f64, Vec<f64>)> = Vec::new();
    let sign_free = |c: &Config| {
        let mut k = c.clone();
        k.select.im_sign = ImSign::Paper;
        serde_json::to_value(&k).unwrap_or_default()
    };
    let sign_of = |c: &Config| if c.select.im_sign == ImSign::Negated { -1.0 } else { 1.0 };
    for (label, c) in criteria_configs(cfg).into_iter().filter(|(l, _)| only.is_empty() || only.contains(l)) {
        if c.select.criterion == Criterion::DartsIm {
            let key = sign_free(&c);
            if let Some((_, sign, scores)) = im_scores.iter().find(|(k, _, _)| *k == key) {
                let flip = sign * sign_of(&c);
                let scores: Vec<f64> = scores.iter().map(|x| x * flip).collect();
                tracing::info!("fidelity: {label}: the other sign's scores, negated");
                criteria.push(agreement_of_scores(&label, &cands, scores, &actual));
                emit(&report(criteria.clone()))?;
                continue;
            }
        }
        let s = &c.select;
        if s.ihvp == Ihvp::Cg
            && s.curvature == Curvature::Hessian
            && s.damping_rule != DampingRule::MeanEigenvalue
            && s.damping == 0.0
        {
            // CG needs H + λI positive definite; an undamped supernet Hessian is indefinite, and
            // CG may then run to its iteration limit for every candidate before noticing.
            criteria.push(skipped(label, "skipped: cg needs select.damping > 0 (the Hessian is indefinite)".into()));
            continue;
        }
        let timings = Timings::default();
        let t0 = std::time::Instant::now();
        tracing::info!("fidelity: scoring {label}");
        let ctx = Context::new(subject.with_cfg(&c), &timings);
        let result = ctx.run();
        tracing::info!("fidelity: {label} scored in {:.1} s", t0.elapsed().as_secs_f64());
        criteria.push(match result {
            Ok(out) => {
                let a = agreement(&label, &cands, &out.table, &actual);
                if c.select.criterion == Criterion::DartsIm {
                    im_scores.push((sign_free(&c), sign_of(&c), a.scores.clone()));
                }
                a
            }
            // Deterministic on every rank (config limits, curvature found by all-reduced HVPs).
            Err(e @ Error::Config { .. }) => skipped(label, format!("skipped: {e}")),
            Err(e) => return Err(e),
        });
        emit(&report(criteria.clone()))?;
    }
    Ok(report(criteria))
}

/// The report of measured ΔL and criteria, with each candidate labelled (cell, edge, op).
pub fn report(
    spec: &crate::space::SpaceSpec,
    cands: &[Candidate],
    ft: &FineTune,
    baseline: f64,
    actual: Vec<f64>,
    criteria: Vec<Agreement>,
) -> FidelityReport {
    let labels = cands
        .iter()
        .map(|c| {
            let cell = &spec.cells[c.cell];
            (cell.name.clone(), cell.edges[c.edge].clone(), cell.ops[c.op].clone())
        })
        .collect();
    FidelityReport {
        fine_tune: ft.clone(),
        baseline_loss: baseline,
        candidates: labels,
        actual_delta_loss: actual,
        fine_tune_steps: Vec::new(),
        criteria,
    }
}

impl FidelityReport {
    /// The summary table as CSV.
    pub fn summary_csv(&self) -> String {
        let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_default();
        let rows: Vec<Vec<String>> = self
            .criteria
            .iter()
            .map(|a| vec![a.label.clone(), f(a.spearman), f(a.pearson), f(a.edge_agreement), a.status.clone()])
            .collect();
        crate::fsutil::csv_text(&["criterion", "spearman", "pearson", "edge_agreement", "status"], &rows)
    }

    /// Per-candidate table: actual ΔL and every criterion's score.
    pub fn candidates_csv(&self) -> String {
        let ok: Vec<&Agreement> = self.criteria.iter().filter(|a| !a.scores.is_empty()).collect();
        let header: Vec<&str> = ["cell", "edge", "op", "actual_delta_loss"]
            .into_iter()
            .chain(ok.iter().map(|a| a.label.as_str()))
            .collect();
        let rows: Vec<Vec<String>> = self
            .candidates
            .iter()
            .enumerate()
            .map(|(i, (c, e, o))| {
                let mut row = vec![c.clone(), e.clone(), o.clone(), format!("{:e}", self.actual_delta_loss[i])];
                row.extend(ok.iter().map(|a| format!("{:e}", a.scores[i])));
                row
            })
            .collect();
        crate::fsutil::csv_text(&header, &rows)
    }

    /// A fixed-width table for the terminal.
    pub fn table(&self) -> String {
        let f = |x: Option<f64>| x.map(|v| format!("{v:+.3}")).unwrap_or_else(|| "    —".into());
        let tuning = match self.fine_tune.until_grad_norm {
            None => format!("{} SGD steps", self.fine_tune.steps),
            Some(t) => {
                let taken = &self.fine_tune_steps;
                let (lo, hi) = (taken.iter().min().copied().unwrap_or(0), taken.iter().max().copied().unwrap_or(0));
                format!("SGD until ‖∇θ‖ < {t} ({lo}–{hi} of at most {} steps)", self.fine_tune.steps)
            }
        };
        let mut s = format!(
            "actual ΔL: removal + {tuning} (lr {}) vs the same fine-tuning without removal; {} candidates\n",
            self.fine_tune.lr,
            self.candidates.len()
        );
        s.push_str(&format!("{:<30} {:>9} {:>9} {:>11}\n", "criterion", "spearman", "pearson", "edge agree"));
        for a in &self.criteria {
            if a.status == "ok" {
                let agree = a.edge_agreement.map(|x| format!("{:.0}%", 100.0 * x)).unwrap_or_default();
                s.push_str(&format!("{:<30} {:>9} {:>9} {:>11}\n", a.label, f(a.spearman), f(a.pearson), agree));
            } else {
                s.push_str(&format!("{:<30} {}\n", a.label, a.status));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_by_hand() {
        // Perfectly monotone but non-linear: Spearman 1, Pearson < 1.
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [1.0, 4.0, 9.0, 100.0];
        assert!((spearman(&a, &b).unwrap() - 1.0).abs() < 1e-12);
        // Pearson of (1,2,3,4) and (1,4,9,100): Σdadb = 151, Σda² = 5, Σdb² = 6849 → 151/√34245.
        let p = pearson(&a, &b).unwrap();
        assert!((p - 151.0 / 34245f64.sqrt()).abs() < 1e-12, "{p}");
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&a, &[1.0; 4]), None);
        // Ties take the average rank: ranks of (1, 1, 2) are (1.5, 1.5, 3).
        assert_eq!(ranks(&[1.0, 1.0, 2.0]), vec![1.5, 1.5, 3.0]);
    }

    #[test]
    fn edge_agreement_counts_matching_argmax() {
        let c = |edge, op| Candidate { cell: 0, edge, op };
        let cands = [c(0, 1), c(0, 2), c(1, 1), c(1, 2)];
        // Edge 0: both pick op 2; edge 1: scores pick op 1, actual picks op 2.
        assert_eq!(edge_agreement(&cands, &[0.0, 1.0, 5.0, 1.0], &[0.1, 0.2, 0.1, 0.3]), Some(0.5));
    }
}
