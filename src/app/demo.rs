//! `dartsif-dist demo`: what the tool is for, in about three minutes on two cores. A search on
//! the embedded demo config, then the same supernet scored by four criteria (vanilla DARTS's
//! magnitude, the plain loss change `drop`, DARTS-IF and DARTS-IM with the Woodbury IHVP), a
//! table of the op each one keeps per edge and its genotype, and — the question a user asks
//! first — how well each criterion predicts what removing an op actually does (Spearman ρ
//! against the measured loss change after removal and fine-tuning).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::comm::{self, Collective};
use crate::config::{Config, Criterion};
use crate::error::Result;
use crate::influence::criteria::candidates;
use crate::influence::{Resumable, Subject};
use crate::select::{self, fidelity, Selection};
use crate::space::chosen_entries;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run directory to create (e.g. runs/demo).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Override a key of the embedded demo config (repeatable; values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// SGD steps of fine-tuning after each removal when measuring the actual loss change
    /// (0 skips the measurement and the fidelity table).
    #[arg(long, default_value_t = 20)]
    pub fidelity_steps: usize,
}

/// The selection settings of the demo, before the user's `--set`s: N = 8 evaluation batches of
/// 64 from the 2,048 validation images (N = 30 would fit too, at about four times the time).
const DEMO_SELECT: &[&str] = &["select.n=8", "select.ihvp=\"woodbury\""];

/// The criteria compared: (label, select.criterion).
const CRITERIA: &[(&str, Criterion)] = &[
    ("magnitude", Criterion::Magnitude),
    ("drop", Criterion::Drop),
    ("darts-if", Criterion::DartsIf),
    ("darts-im", Criterion::DartsIm),
];

pub fn demo_main(args: &DemoArgs) -> i32 {
    let sets: Vec<String> = DEMO_SELECT.iter().map(|s| s.to_string()).chain(args.set.iter().cloned()).collect();
    let cfg = match Config::load(None, &sets) {
        Ok(c) => c,
        Err(e) => return super::fail_once(&e),
    };
    let comm = match super::start(&cfg, Config::check_world) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let stop = super::watch_signals();
    super::finish(comm.as_ref(), &args.out, false, run(&cfg, comm.as_ref(), args, &stop), |_| false)
}

struct Scored {
    label: &'static str,
    sel: Selection,
    seconds: f64,
}

fn run(cfg: &Config, comm: &dyn Collective, args: &DemoArgs, stop: &std::sync::atomic::AtomicBool) -> Result<()> {
    let t0 = Instant::now();
    super::search::run_search(cfg, comm, &args.out, None, Some(stop))?;
    let search_s = t0.elapsed().as_secs_f64();

    let mut cfg = cfg.clone();
    let source = crate::data::open(&mut cfg)?;
    let (net, alphas) = select::load_searched(&cfg, &args.out, comm.device())?;
    let (data, split) = (source.data.as_ref(), &source.split);
    let subject = Subject { cfg: &cfg, comm, net: net.as_ref(), alphas: &alphas, data, split };
    let mut scored = Vec::new();
    for &(label, criterion) in CRITERIA {
        let mut c = cfg.clone();
        c.select.criterion = criterion;
        let dir = args.out.join("select").join(label);
        super::prepare_out_dir(comm, &dir)?;
        let solver = if matches!(criterion, Criterion::DartsIf | Criterion::DartsIm) {
            format!(", ihvp {}", c.select.ihvp)
        } else {
            String::new()
        };
        tracing::info!(
            "demo: scoring every op by {criterion}{solver} (N = {} batches of {})",
            c.select.n,
            c.select_batch()
        );
        let t = Instant::now();
        let res = Resumable { stop: Some(stop), ..Default::default() };
        let sel = select::run(subject.with_cfg(&c), &res)?;
        crate::comm::on_coordinator(comm, || crate::report::write_selection(&c, net.spec(), &sel, &dir))?;
        let seconds = t.elapsed().as_secs_f64();
        tracing::info!("demo: {label}: {} ({seconds:.1} s)", sel.genotype);
        if comm.is_coordinator() {
            if let Err(e) = crate::report::figures::render_dir(&dir) {
                tracing::warn!("figures of {}: {e}", dir.display());
            }
        }
        scored.push(Scored { label, sel, seconds });
    }

    let fidelity = if args.fidelity_steps > 0 {
        let ft =
            fidelity::FineTune { steps: args.fidelity_steps, lr: cfg.search.weights.lr / 10.0, until_grad_norm: None };
        tracing::info!(
            "demo: measuring the actual loss change of removing each op ({} SGD steps of fine-tuning after each)",
            ft.steps
        );
        let t = Instant::now();
        let (baseline, actual, steps) = fidelity::actual_delta_loss(subject, &ft)?;
        let cands = candidates(net.as_ref());
        let criteria = scored.iter().map(|x| fidelity::agreement(x.label, &cands, &x.sel.table, &actual)).collect();
        let mut report = fidelity::report(net.spec(), &cands, &ft, baseline, actual, criteria);
        report.fine_tune_steps = steps;
        Some((report, t.elapsed().as_secs_f64()))
    } else {
        None
    };

    // Written by the coordinator, the outcome shared: a failed write stops every rank.
    comm::on_coordinator(comm, || {
        let text = comparison(&cfg, net.as_ref(), &scored, fidelity.as_ref(), &args.out, search_s)?;
        crate::fsutil::write_atomic(&args.out.join("criteria.txt"), text.as_bytes())?;
        if let Some((report, _)) = &fidelity {
            let json = serde_json::to_string_pretty(report).expect("json");
            crate::fsutil::write_atomic(&args.out.join("fidelity.json"), json.as_bytes())?;
        }
        print!("{text}");
        tracing::info!("demo: done in {:.0} s", t0.elapsed().as_secs_f64());
        Ok(())
    })
}

/// The comparison: per edge the op each criterion keeps (with its score), each criterion's
/// genotype, the fidelity summary, where the files are and what to run next.
fn comparison(
    cfg: &Config,
    net: &dyn crate::supernet::Supernet,
    scored: &[Scored],
    fidelity: Option<&(fidelity::FidelityReport, f64)>,
    out: &Path,
    search_s: f64,
) -> Result<String> {
    let spec = net.spec();
    let mut s = String::new();
    let chosen: Vec<Vec<Vec<Vec<usize>>>> = scored.iter().map(|x| chosen_entries(spec, &x.sel.genotype)).collect();
    let entry = |k: usize, c: usize, e: usize| match chosen[k].get(c).and_then(|t| t.get(e)).and_then(|v| v.first()) {
        Some(&o) => format!("{} [{}]", spec.cells[c].ops[o], short(scored[k].sel.table.scores[c][e][o])),
        None => "—".to_string(),
    };
    let mut w = 20;
    for (c, cell) in spec.cells.iter().enumerate() {
        for e in 0..cell.edges.len() {
            w = (0..scored.len()).map(|k| entry(k, c, e).chars().count() + 1).fold(w, usize::max);
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "The op each criterion keeps on each edge (its score in brackets; higher = keep):");
    let mut head = format!("  {:<10}", "edge");
    for x in scored {
        let name = match x.label {
            "darts-if" | "darts-im" => format!("{} ({})", x.label, cfg.select.ihvp),
            l => l.to_string(),
        };
        head.push_str(&format!(" {name:<w$}"));
    }
    let _ = writeln!(s, "{}", head.trim_end());
    for (c, cell) in spec.cells.iter().enumerate() {
        for (e, edge) in cell.edges.iter().enumerate() {
            let label = if spec.cells.len() > 1 { format!("{}:{edge}", cell.name) } else { edge.clone() };
            let mut line = format!("  {label:<10}");
            for k in 0..scored.len() {
                line.push_str(&format!(" {:<w$}", entry(k, c, e)));
            }
            let _ = writeln!(s, "{}", line.trim_end());
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Genotypes (scoring time):");
    for x in scored {
        let _ = writeln!(s, "  {:<10} {}  ({:.1} s)", x.label, x.sel.genotype, x.seconds);
    }
    let agree = scored.iter().filter(|x| x.sel.genotype == scored[0].sel.genotype).count();
    let _ = writeln!(s, "  {agree} of {} criteria agree with magnitude (vanilla DARTS).", scored.len());

    if let Some((report, secs)) = fidelity {
        let ft = &report.fine_tune;
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Which criterion should I trust on this data? Each criterion's scores against the actual loss change of\n\
             removing each of the {} candidate ops ({} SGD steps of fine-tuning after the removal, lr {}; measured in {:.0} s):",
            report.candidates.len(),
            ft.steps,
            ft.lr,
            secs
        );
        let _ = writeln!(s, "  {:<12} {:>10} {:>9} {:>16}", "criterion", "spearman ρ", "pearson", "edges agreeing");
        let mut best: Option<(&str, f64)> = None;
        for a in &report.criteria {
            let f = |v: Option<f64>| v.map(|v| format!("{v:+.2}")).unwrap_or_else(|| "—".into());
            let edges = a.edge_agreement.map(|v| format!("{:.0}%", 100.0 * v)).unwrap_or_else(|| "—".into());
            let _ = writeln!(s, "  {:<12} {:>10} {:>9} {:>16}", a.label, f(a.spearman), f(a.pearson), edges);
            if let Some(r) = a.spearman {
                if best.is_none_or(|b| r > b.1) {
                    best = Some((a.label.as_str(), r));
                }
            }
        }
        if let Some((label, r)) = best {
            let _ = writeln!(
                s,
                "  On this supernet and data, {label} ranks the ops closest to what removing them does (ρ {r:+.2}).\n  \
                 (An edge agrees when the op a criterion keeps is the one whose removal hurts most.)"
            );
        }
    }
    let sel = out.join("select");
    let _ = writeln!(s);
    let _ = writeln!(s, "Files (the search took {search_s:.0} s):");
    let _ =
        writeln!(s, "  {}/  the search: config.toml, metrics.jsonl, report.json, supernet.safetensors", out.display());
    let _ = writeln!(s, "  {}/criteria.txt  this comparison", out.display());
    if fidelity.is_some() {
        let _ = writeln!(
            s,
            "  {}/fidelity.json  the measured loss change of each removal, each criterion's ρ",
            out.display()
        );
    }
    for x in scored {
        let _ = writeln!(s, "  {}/{}/  scores.json, scores.csv, genotype.txt", sel.display(), x.label);
    }
    let _ = writeln!(
        s,
        "  figures in each: scores.png (scores next to softmax(α)), disagreement.png (per-edge Kendall τ against α)"
    );
    let _ = writeln!(s);
    let _ =
        writeln!(s, "Next, on real data (CIFAR-10 and NAS-Bench-201's split file; see configs/nb201-cifar10.toml):");
    let _ = writeln!(
        s,
        "  dartsif-dist search --config configs/nb201-cifar10.toml --set data.root=\"/data/cifar-10-batches-bin\" \\\n      \
         --set data.split_file=\"/data/cifar-split.txt\" --out runs/nb201"
    );
    let _ =
        writeln!(s, "  dartsif-dist select --run runs/nb201 --criterion darts-im --ihvp woodbury --out runs/nb201-im");
    let _ = writeln!(
        s,
        "  dartsif-dist inspect fidelity --run runs/nb201 --criteria magnitude,drop,darts-if/woodbury --out runs/nb201-fid"
    );
    Ok(s)
}

/// A score in four significant digits.
fn short(x: f64) -> String {
    if !x.is_finite() {
        "—".into()
    } else if x != 0.0 && (x.abs() >= 1e4 || x.abs() < 1e-3) {
        format!("{x:.2e}")
    } else {
        format!("{x:.4}")
    }
}
