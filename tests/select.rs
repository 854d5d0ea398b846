//! `select` end to end, and its rank independence: every criterion and solver gives the same
//! scores (< 1e-9 relative, f64) and the same genotype on 1 and 3 MPI ranks, and on 2 as well
//! where the solver shards its work by rank (N = 3 batches: 2 + 1 on two ranks).

mod common;

use std::path::Path;
use std::process::Command;

use common::tiny_run;

fn select(np: usize, run: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if np == 0 {
        Command::new(common::bin())
    } else {
        let mut c = Command::new(common::repo().join("launch/mpirun"));
        c.arg("-np").arg(np.to_string()).arg(common::bin());
        c
    };
    cmd.arg("select").arg("--run").arg(run).arg("--out").arg(out);
    for s in ["select.precision=\"f64\"", "select.n=3", "select.batch_size=8"] {
        cmd.arg("--set").arg(s);
    }
    // Progress lines at every step (not every 30 s), so that the log shows them.
    cmd.args(args).env("DARTSIF_LOG", "warn").env("DARTSIF_PROGRESS_SECS", "0");
    cmd.output().unwrap()
}

fn scores(dir: &Path) -> (Vec<Option<f64>>, String) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("scores.json")).unwrap()).unwrap();
    let s = v["scores"].as_array().unwrap().iter().map(|r| r["score"].as_f64()).collect();
    (s, v["genotype"].as_str().unwrap().to_string())
}

#[test]
fn every_criterion_and_solver_is_rank_independent() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_run(&run);
    let cases: Vec<Vec<&str>> = vec![
        vec!["--criterion", "magnitude"],
        vec!["--criterion", "drop"],
        vec!["--criterion", "darts-if", "--ihvp", "identity"],
        vec!["--criterion", "darts-if", "--ihvp", "woodbury"],
        vec!["--criterion", "darts-if", "--ihvp", "sherman-morrison"],
        vec!["--criterion", "darts-if", "--ihvp", "neumann"],
        vec!["--criterion", "darts-if", "--ihvp", "cg", "--set", "select.damping=100"],
        vec!["--criterion", "darts-if", "--ihvp", "exact"],
        vec!["--criterion", "darts-im", "--ihvp", "identity"],
        vec!["--criterion", "darts-im", "--ihvp", "woodbury"],
        vec!["--criterion", "darts-im", "--ihvp", "sherman-morrison"],
        vec!["--criterion", "darts-im", "--ihvp", "neumann", "--im-sign", "negated"],
        vec!["--criterion", "darts-im", "--ihvp", "cg", "--set", "select.damping=100"],
        vec!["--criterion", "darts-im", "--ihvp", "exact"],
        vec!["--criterion", "darts-im", "--ihvp", "woodbury", "--faithful"],
        vec!["--criterion", "darts-if", "--ihvp", "kfac", "--set", "select.damping=1e-3"],
        vec!["--criterion", "darts-if", "--ihvp", "ekfac", "--set", "select.damping_rule=\"mean-eigenvalue\""],
        vec![
            "--criterion",
            "darts-im",
            "--ihvp",
            "ekfac",
            "--set",
            "select.damping=1e-3",
            "--set",
            "select.fisher_labels=\"sampled\"",
        ],
        vec!["--criterion", "darts-im", "--ihvp", "woodbury", "--set", "select.fisher_labels=\"sampled\""],
        vec!["--criterion", "darts-im", "--ihvp", "neumann", "--faithful"],
    ];
    // Solvers that split work by rank beyond the batches (gradient slices exchanged all-to-all,
    // per-rank factor sums): on 2 ranks too. Every other case on 1 and 3 ranks (about 3.5 s per
    // launch; the fidelity test compares 1 and 2 ranks for most criteria once more).
    let sharded = ["woodbury", "sherman-morrison", "kfac", "ekfac", "exact"];
    for (i, args) in cases.iter().enumerate() {
        let mut reference: Option<(Vec<Option<f64>>, String)> = None;
        let ranks: &[usize] = if args.iter().any(|a| sharded.contains(a)) { &[1, 2, 3] } else { &[1, 3] };
        for &np in ranks {
            let out = tmp.path().join(format!("sel-{i}-{np}"));
            let o = select(np, &run, &out, args);
            common::assert_ok(&o);
            let got = scores(&out);
            assert_eq!(common::stdout(&o).trim(), got.1, "{args:?}: printed genotype");
            match &reference {
                None => reference = Some(got),
                Some((ref_scores, ref_geno)) => {
                    assert_eq!(&got.1, ref_geno, "{args:?}: genotype on {np} ranks");
                    let scale = ref_scores.iter().flatten().fold(0f64, |m, x| m.max(x.abs())).max(1e-300);
                    for (k, (a, b)) in got.0.iter().zip(ref_scores).enumerate() {
                        match (a, b) {
                            (Some(a), Some(b)) => assert!(
                                (a - b).abs() <= 1e-9 * scale,
                                "{args:?}: score {k} on {np} ranks {a} vs {b} (scale {scale})"
                            ),
                            (None, None) => {}
                            _ => panic!("{args:?}: score {k} present on one rank count only"),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn select_outputs_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_run(&run);
    let out = tmp.path().join("if");
    let o = select(0, &run, &out, &["--criterion", "darts-if", "--ihvp", "woodbury"]);
    common::assert_ok(&o);
    // scores.csv: a header with DARTS-IF's two terms, one line per (edge, op): 6 × 5 = 30.
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "cell,edge,op,score,loss_change,quad");
    assert_eq!(lines.len(), 31);
    // `none` is not a candidate: empty score; others: score = loss_change − quad/2.
    assert!(lines[1].starts_with("cell,1<-0,none,,"), "{}", lines[1]);
    let f: Vec<f64> = lines[2].split(',').skip(3).map(|x| x.parse().unwrap()).collect();
    assert!((f[0] - (f[1] - 0.5 * f[2])).abs() <= 1e-12 * f[0].abs().max(1.0), "{f:?}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).unwrap()).unwrap();
    // DARTS-IF/Woodbury does autograd and linear algebra; both are parts of the total.
    let t = |key: &str| json["timing"][key].as_f64().unwrap();
    assert!(t("autograd_s") > 0.0 && t("ihvp_linalg_s") > 0.0, "{}", json["timing"]);
    assert!(t("autograd_s") + t("ihvp_linalg_s") <= t("total_s"), "{}", json["timing"]);
    // The log (a file, not a terminal) tells where the candidate loop was: done/total, rate, ETA.
    let log = std::fs::read_to_string(out.join("logs/rank-0.log")).unwrap();
    let line = log.lines().find(|l| l.contains("darts-if: candidates (24 of 24 left, 1 per round): 1/24 rounds"));
    let line = line.unwrap_or_else(|| panic!("no progress line in the log:\n{log}"));
    assert!(line.contains("(4%)") && line.contains("ETA"), "{line}");
    assert!(!log.contains('\u{1b}'), "colour codes in the log file");
    // One rank: one peak-memory figure, at least the ~100 MB libtorch itself maps.
    let rss = json["timing"]["peak_rss_mb_per_rank"].as_array().unwrap();
    assert_eq!(rss.len(), 1);
    assert!(rss[0].as_f64().unwrap() > 50.0, "{rss:?}");
    assert_eq!(std::fs::read_to_string(out.join("genotype.txt")).unwrap().trim(), json["genotype"]);

    // Bad input: one line naming the key, exit 2, nothing written.
    for (args, expect) in [
        (vec!["--criterion", "darts-xx"], "select.criterion: unknown value \"darts-xx\""),
        (
            vec!["--criterion", "darts-im", "--ihvp", "exact", "--set", "select.exact_max_params=100"],
            "exact forms a dense 1616×1616 matrix",
        ),
        (vec!["--gamma=-1"], "select.gamma: must be finite and > 0 (got -1)"),
        (vec!["--set", "select.n=40"], "select.n: 40 batches of 8 need 320 images but the pool they are drawn from has 48: the largest N that fits is 6"),
        (
            vec!["--criterion", "drop", "--faithful"],
            "select.faithful: the authors' computation exists for darts-im only",
        ),
    ] {
        let bad = tmp.path().join("bad");
        let o = select(0, &run, &bad, &args);
        let err = common::stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        // Errors found after the output directory was prepared remove it again.
        assert!(!bad.exists(), "{args:?} left {bad:?}");
    }
    let o = select(0, &tmp.path().join("nope"), &tmp.path().join("x"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stderr(&o).contains("not a run directory (no config.toml)"));
    // A damaged supernet file (empty, truncated): one line, exit 2, no output directory.
    let state = run.join("supernet.safetensors");
    let good = std::fs::read(&state).unwrap();
    // A header length of 2^62 (the first 8 bytes, little-endian), and the right names with a
    // wrong shape (one tensor of another size, written by libtorch).
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let reshaped = {
        // read_safetensors lists the tensors in a HashMap's (random) order, and with one
        // channel some convolutions already are 1×1×1×1: take the largest convolution, by name
        // on ties, so that the shape always changes.
        let mut named = tch::Tensor::read_safetensors(&state).unwrap();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let k = (0..named.len())
            .filter(|&i| named[i].1.dim() == 4)
            .max_by_key(|&i| (named[i].1.numel(), std::cmp::Reverse(i)))
            .unwrap();
        assert!(named[k].1.numel() > 1, "{}", named[k].0);
        named[k].1 = tch::Tensor::zeros([1, 1, 1, 1], (tch::Kind::Float, tch::Device::Cpu));
        let p = tmp.path().join("reshaped.safetensors");
        tch::Tensor::write_safetensors(&named, &p).unwrap();
        std::fs::read(&p).unwrap()
    };
    for damaged in [Vec::new(), good[..good.len() / 2].to_vec(), huge, reshaped] {
        std::fs::write(&state, &damaged).unwrap();
        for criterion in ["magnitude", "darts-pt"] {
            let bad = tmp.path().join("bad-state");
            let o = select(0, &run, &bad, &["--criterion", criterion]);
            let err = common::stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{criterion}, {} bytes: {err}", damaged.len());
            assert!(err.contains("supernet.safetensors"), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(!bad.exists(), "{criterion}: a damaged supernet left {bad:?}");
        }
    }
    std::fs::write(&state, &good).unwrap();
}

/// Every criterion of `inspect fidelity` but DARTS-IF by CG on the Gauss–Newton matrix (24 CG
/// solves: minutes in a debug build; its products are checked in tests/influence.rs).
const CRITERIA: &str = "magnitude,drop,darts-if/identity,darts-if/neumann,darts-if/sherman-morrison,darts-if/woodbury,\
darts-if/cg,darts-if/exact,darts-im/woodbury/paper,darts-im/woodbury/negated,darts-if/exact-ggn,darts-im/cg-ggn/paper,\
darts-im/cg-ggn/negated,darts-im/kfac-mc/paper,darts-if/ekfac";

#[test]
fn fidelity_is_rank_independent_and_writes_its_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_run(&run);
    let fid = |np: usize| {
        let out = tmp.path().join(format!("fid{np}"));
        let o = Command::new(common::repo().join("launch/mpirun"))
            .args(["-np", &np.to_string()])
            .arg(common::bin())
            .args(["inspect", "fidelity", "--run"])
            .arg(&run)
            .args([
                "--steps",
                "3",
                "--set",
                "select.n=2",
                "--set",
                "select.batch_size=8",
                // One Neumann term and a looser CG tolerance: the same code paths, a third of the time.
                "--set",
                "select.k=1",
                "--set",
                "select.cg_tol=1e-3",
                "--criteria",
                CRITERIA,
                "--out",
            ])
            .arg(&out)
            .env("DARTSIF_LOG", "warn")
            .output()
            .unwrap();
        common::assert_ok(&o);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("fidelity.json")).unwrap()).unwrap();
        (v, common::stdout(&o), out)
    };
    let (a, table, out) = fid(1);
    let (b, _, _) = fid(2);
    // Each candidate is fine-tuned on one rank with the same batches, so 1 and 2 ranks agree up to
    // libtorch's thread-count-dependent f32 rounding (1 rank runs 2 threads, 2 ranks 1 each):
    // losses near 1 carry ~1e-7 absolute error.
    let (da, db) = (a["actual_delta_loss"].as_array().unwrap(), b["actual_delta_loss"].as_array().unwrap());
    assert_eq!(da.len(), 24);
    for (x, y) in da.iter().zip(db) {
        assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-6, "{x} vs {y}");
    }
    let names: Vec<&str> = a["criteria"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(names, CRITERIA.split(',').collect::<Vec<_>>());
    assert!(names.contains(&"darts-im/woodbury/negated") && names.contains(&"darts-if/sherman-morrison"));
    // The Gauss–Newton criteria (damped by the mean-eigenvalue rule, undamped CG being refused
    // only on the indefinite Hessian) are scored.
    for label in ["darts-if/exact-ggn", "darts-im/cg-ggn/paper", "darts-if/ekfac", "darts-im/kfac-mc/paper"] {
        let c = a["criteria"].as_array().unwrap().iter().find(|c| c["label"] == label).unwrap();
        assert_eq!(c["status"], "ok", "{label}");
    }
    // DARTS-IM's negated sign is the paper's scores negated, exactly (computed once).
    let row = |l: &str| a["criteria"].as_array().unwrap().iter().find(|c| c["label"] == l).unwrap().clone();
    for solver in ["woodbury", "cg-ggn"] {
        let (p, n) = (row(&format!("darts-im/{solver}/paper")), row(&format!("darts-im/{solver}/negated")));
        let neg: Vec<f64> = p["scores"].as_array().unwrap().iter().map(|x| -x.as_f64().unwrap()).collect();
        let got: Vec<f64> = n["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(got, neg, "{solver}");
        assert_eq!(n["spearman"].as_f64().unwrap(), -p["spearman"].as_f64().unwrap(), "{solver}");
    }
    // The exact solver fits this model (P = 1,616) and is evaluated; undamped CG is skipped.
    let exact = a["criteria"].as_array().unwrap().iter().find(|c| c["label"] == "darts-if/exact").unwrap();
    assert_eq!(exact["status"], "ok");
    let cg = a["criteria"].as_array().unwrap().iter().find(|c| c["label"] == "darts-if/cg").unwrap();
    assert!(cg["status"].as_str().unwrap().starts_with("skipped: cg needs select.damping > 0"));
    // Its Spearman ρ, recomputed here from the written scores and actual ΔL (ranks with ties
    // averaged, then Pearson), is the one reported.
    let scores: Vec<f64> = exact["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let actual: Vec<f64> = da.iter().map(|x| x.as_f64().unwrap()).collect();
    let rho = exact["spearman"].as_f64().unwrap();
    assert!((rho - common::spearman_by_hand(&scores, &actual)).abs() < 1e-12, "{rho}");
    assert!(table.contains("spearman") && table.contains("darts-if/woodbury"));
    let csv = std::fs::read_to_string(out.join("fidelity.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap(), "criterion,spearman,pearson,edge_agreement,status");
    assert_eq!(std::fs::read_to_string(out.join("candidates.csv")).unwrap().lines().count(), 25);

    // --actual reuses the measured ΔL: the same rows for the criteria asked for, no fine-tuning.
    let fidelity_json = out.join("fidelity.json");
    let reuse = |extra: &[&str], dir: &str| {
        let o = Command::new(common::bin())
            .args(["inspect", "fidelity", "--run"])
            .arg(&run)
            .args(["--set", "select.n=2", "--set", "select.batch_size=8", "--actual"])
            .arg(&fidelity_json)
            .args(extra)
            .arg("--out")
            .arg(tmp.path().join(dir))
            .env("DARTSIF_LOG", "info")
            .output()
            .unwrap();
        (o, tmp.path().join(dir))
    };
    let (o, again) = reuse(&["--steps", "3", "--criteria", "drop,darts-if/exact"], "again");
    common::assert_ok(&o);
    let log = std::fs::read_to_string(again.join("logs/rank-0.log")).unwrap();
    assert!(!log.contains("fidelity: fine-tuning"), "no fine-tuning when the ΔL is reused");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(again.join("fidelity.json")).unwrap()).unwrap();
    assert_eq!(v["actual_delta_loss"], a["actual_delta_loss"]);
    for row in v["criteria"].as_array().unwrap() {
        let before = a["criteria"].as_array().unwrap().iter().find(|c| c["label"] == row["label"]).unwrap();
        assert_eq!(row, before, "{}", row["label"]);
    }
    assert_eq!(v["criteria"].as_array().unwrap().len(), 2);
    // Another fine-tuning than the file's is refused, naming the file, before anything is written.
    let (o, bad) = reuse(&["--steps", "5"], "bad");
    assert_eq!(o.status.code(), Some(2));
    let err = common::stderr(&o);
    assert!(err.contains("fidelity.json") && err.contains("measured with 3 steps"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!bad.exists());

    // Fine-tuning until converged: a tolerance every gradient meets stops at the first check
    // (after 10 steps), one none meets runs to the cap; the steps taken are reported.
    let until = |tol: &str, dir: &str| {
        let o = Command::new(common::bin())
            .args(["inspect", "fidelity", "--run"])
            .arg(&run)
            .args(["--set", "select.n=2", "--set", "select.batch_size=8", "--criteria", "drop"])
            .args(["--steps", "12", "--until-grad-norm", tol, "--out"])
            .arg(tmp.path().join(dir))
            .env("DARTSIF_LOG", "warn")
            .output()
            .unwrap();
        common::assert_ok(&o);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(tmp.path().join(dir).join("fidelity.json")).unwrap())
                .unwrap();
        let steps: Vec<u64> = v["fine_tune_steps"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        (steps, common::stdout(&o))
    };
    let (steps, table) = until("1e9", "loose");
    assert_eq!(steps, vec![10; 25], "{table}");
    assert!(table.contains("until ‖∇θ‖ < 1000000000 (10–10 of at most 12 steps)"), "{table}");
    let (steps, _) = until("1e-12", "tight");
    assert_eq!(steps, vec![12; 25]);
}

/// A DARTS-IF selection stopped by SIGTERM midway resumes from its progress checkpoint and
/// gives exactly the scores of an uninterrupted selection; a NaN term stops it naming the
/// round and candidate, with the last good checkpoint kept.
#[test]
fn an_interrupted_darts_if_selection_resumes_to_the_same_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_run(&run);
    let flags = ["--criterion", "darts-if", "--ihvp", "woodbury"];
    let with =
        |extra: &[&'static str]| -> Vec<&'static str> { flags.iter().copied().chain(extra.iter().copied()).collect() };
    let full = tmp.path().join("full");
    common::assert_ok(&select(0, &run, &full, &flags));
    // 24 candidates, one per round on one rank; SIGTERM during round 3: 4 are scored.
    let cut = tmp.path().join("cut");
    let o = select(
        0,
        &run,
        &cut,
        &with(&["--set", "fault.phase=\"select\"", "--set", "fault.action=\"signal\"", "--set", "fault.at_step=3"]),
    );
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("stopped by a signal at selection round 4"), "{}", common::stderr(&o));
    assert!(cut.join("checkpoints/step-000000004/progress.json").is_file());
    common::assert_ok(&select(0, &run, &cut, &with(&["--resume", "auto"])));
    assert_eq!(scores(&full), scores(&cut));
    // Two ranks, stopped by a signal on rank 1 in round 1, resumed on two ranks.
    let (full2, cut2) = (tmp.path().join("full2"), tmp.path().join("cut2"));
    common::assert_ok(&select(2, &run, &full2, &flags));
    let o = select(
        2,
        &run,
        &cut2,
        &with(&[
            "--set",
            "fault.phase=\"select\"",
            "--set",
            "fault.action=\"signal\"",
            "--set",
            "fault.rank=1",
            "--set",
            "fault.at_step=1",
        ]),
    );
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    common::assert_ok(&select(2, &run, &cut2, &with(&["--resume", "auto"])));
    assert_eq!(scores(&full2), scores(&cut2));
    // A different η on resume is refused.
    let o = select(0, &run, &cut, &with(&["--eta", "0.01", "--resume", "auto"]));
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("select.eta: 0.01 differs from the checkpoint's 0.0005"),
        "{}",
        common::stderr(&o)
    );
    // NaN in round 2, checkpoints every round: stops naming the place; rounds 0–1 are kept.
    let nan = tmp.path().join("nan");
    let o = select(
        0,
        &run,
        &nan,
        &with(&[
            "--set",
            "checkpoint.select_every=1",
            "--set",
            "fault.phase=\"select\"",
            "--set",
            "fault.action=\"nan\"",
            "--set",
            "fault.at_step=2",
        ]),
    );
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o)
            .contains("non-finite darts-if term (loss after removal or ĝᵀH⁻¹ĝ) at selection round 2: cell"),
        "{}",
        common::stderr(&o)
    );
    let mut kept: Vec<String> = std::fs::read_dir(nan.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, ["step-000000001", "step-000000002"]);
}

/// A NaN term on one of two ranks stops both at that round, naming that rank's candidate
/// (round 1 on 2 ranks: rank 1 scores candidate 3, edge 1<-0's avg_pool_3x3), under a time limit.
#[test]
fn a_nan_term_on_one_of_two_ranks_stops_both_naming_its_candidate() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_run(&run);
    let out = tmp.path().join("nan2");
    let mut cmd = Command::new(common::repo().join("launch/mpirun"));
    cmd.args(["-np", "2"]).arg(common::bin()).arg("select").arg("--run").arg(&run).arg("--out").arg(&out);
    for s in [
        "select.precision=\"f64\"",
        "select.n=3",
        "select.batch_size=8",
        "fault.phase=\"select\"",
        "fault.action=\"nan\"",
        "fault.rank=1",
        "fault.at_step=1",
    ] {
        cmd.arg("--set").arg(s);
    }
    cmd.args(["--criterion", "darts-if", "--ihvp", "woodbury"]).env("DARTSIF_LOG", "warn");
    let o = common::output_within(&mut cmd, 120);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(err.contains("at selection round 1: cell cell, edge 1<-0, op avg_pool_3x3"), "{err}");
}
