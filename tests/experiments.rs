//! Experiments as batch jobs: multi-seed search, `ablate` with shared DARTS-IM work,
//! `groundtruth` with Kendall τ, and `report`'s figures.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(np: usize, args: &[&str]) -> Output {
    let mut c = if np == 0 {
        Command::new(common::bin())
    } else {
        let mut c = Command::new(common::repo().join("launch/mpirun"));
        c.arg("-np").arg(np.to_string()).arg(common::bin());
        c
    };
    c.args(args).env("DARTSIF_LOG", "warn").output().expect("run dartsif-dist")
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// A well-formed SVG document and a PNG that decodes to the drawn size with content.
fn assert_figure(stem: &Path) {
    let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", stem.display());
    assert!(svg.contains("<text"), "the SVG has no text: {}", stem.display());
    let png = image::open(stem.with_extension("png")).unwrap().to_rgb8();
    // Figure sizes are clamped to at least 500 × 260 (report/plot.rs).
    assert!(png.width() >= 500 && png.height() >= 250);
    // Axes, labels and data mark well over 1,000 pixels; a blank white canvas marks none.
    assert!(png.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 1000, "blank PNG {}", stem.display());
}

/// Flat scores of a `scores.json` (−∞ for unscored candidates).
fn scores(p: &Path) -> Vec<f64> {
    json(p)["scores"].as_array().unwrap().iter().map(|r| r["score"].as_f64().unwrap_or(f64::NEG_INFINITY)).collect()
}

/// Kendall τ-b, written out independently of the library's.
fn tau_b(a: &[f64], b: &[f64]) -> f64 {
    let (mut s, mut ta, mut tb, mut n0) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..a.len() {
        for j in 0..i {
            let (x, y) = ((a[i] - a[j]).signum(), (b[i] - b[j]).signum());
            let (x, y) = (if a[i] == a[j] { 0.0 } else { x }, if b[i] == b[j] { 0.0 } else { y });
            s += x * y;
            n0 += 1.0;
            ta += (x == 0.0) as u8 as f64;
            tb += (y == 0.0) as u8 as f64;
        }
    }
    s / ((n0 - ta) * (n0 - tb)).sqrt()
}

fn seeded_search(dir: &Path) {
    let mut args = vec!["search", "--seeds", "1,2", "--out", dir.to_str().unwrap()];
    for s in common::TINY {
        args.extend(["--set", s]);
    }
    common::assert_ok(&run(2, &args));
}

const SEL: &[&str] = &["--set", "select.criterion=darts-im", "--set", "select.batch_size=8"];

#[test]
fn ablation_over_n_ihvp_and_seeds_shares_work_and_matches_separate_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    seeded_search(&runs);
    // search --seeds: one run per seed, and the table over seeds.
    let seeds = std::fs::read_to_string(runs.join("seeds.csv")).unwrap();
    assert_eq!(seeds.lines().count(), 6, "{seeds}");
    let lines: Vec<&str> = seeds.lines().collect();
    assert!(lines[3].starts_with("mean,,") && lines[4].starts_with("std,,"), "{seeds}");
    // Sample std of the two seeds' supernet validation accuracies: |a − b|/√2.
    let val = |l: &str| l.rsplit(',').next().unwrap().parse::<f64>().unwrap();
    let (a, b) = (val(lines[1]), val(lines[2]));
    assert!((val(lines[3]) - (a + b) / 2.0).abs() < 1e-12);
    assert!((val(lines[4]) - (a - b).abs() / 2f64.sqrt()).abs() < 1e-12, "{seeds}");
    // Population std (the seed paper's): |a − b|/2.
    assert!(lines[5].starts_with("pstd,,") && (val(lines[5]) - (a - b).abs() / 2.0).abs() < 1e-12, "{seeds}");
    for s in [1, 2] {
        let cfg = std::fs::read_to_string(runs.join(format!("seed-{s}/config.toml"))).unwrap();
        assert!(cfg.lines().any(|l| l.trim() == format!("seed = {s}")), "{cfg}");
    }

    let out = tmp.path().join("abl");
    let mut args = vec!["ablate", "--run", runs.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--sweep", "n=1,2,4", "--sweep", "ihvp=woodbury,neumann,identity"]);
    args.extend(SEL);
    let o = run(2, &args);
    common::assert_ok(&o);
    let doc = json(&out.join("ablation.json"));
    let rows = doc["rows"].as_array().unwrap();
    // 2 seeds × 3 N × 3 solvers; the 9 combinations of a seed are one shared work unit, so the
    // two units ran side by side in two groups of one rank.
    assert_eq!(rows.len(), 18);
    assert!(rows.iter().all(|r| r["shared"] == true && r["ranks"] == 1));
    let groups: BTreeSet<u64> = rows.iter().map(|r| r["group"].as_u64().unwrap()).collect();
    assert_eq!(groups, BTreeSet::from([0, 1]));
    for r in rows {
        let l = &r["labels"];
        let seed_group = if l["seed"] == "1" { 0 } else { 1 };
        assert_eq!(r["group"], seed_group, "unit u runs on group u mod 2");
        // τ against the largest N of the same setting: 1 for N = 4 itself.
        if l["n"] == "4" {
            assert_eq!(r["metrics"]["tau_ref"], 1.0);
        }
    }
    let summary = doc["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 9);
    assert!(summary.iter().all(|s| s["seeds"] == 2));
    // Mean ± std over the two seeds, recomputed from the rows.
    let pick = |seed: &str| {
        rows.iter()
            .find(|r| r["labels"]["seed"] == seed && r["labels"]["n"] == "1" && r["labels"]["ihvp"] == "woodbury")
            .unwrap()["metrics"]["tau_ref"]
            .as_f64()
            .unwrap()
    };
    let (a, b) = (pick("1"), pick("2"));
    let s = summary.iter().find(|s| s["labels"]["n"] == "1" && s["labels"]["ihvp"] == "woodbury").unwrap();
    assert!((s["metrics"]["tau_ref"]["mean"].as_f64().unwrap() - (a + b) / 2.0).abs() < 1e-12);
    // Sample std of two values: |a − b|/√2.
    assert!((s["metrics"]["tau_ref"]["std"].as_f64().unwrap() - (a - b).abs() / 2f64.sqrt()).abs() < 1e-12);
    assert!((s["metrics"]["tau_ref"]["pstd"].as_f64().unwrap() - (a - b).abs() / 2.0).abs() < 1e-12);
    let csv = std::fs::read_to_string(out.join("ablation.csv")).unwrap();
    assert_eq!(csv.lines().count(), 19);
    assert_figure(&out.join("ablation-n"));
    assert_figure(&out.join("combos/0/scores"));
    assert_figure(&out.join("combos/0/disagreement"));

    // The shared computation (Fisher samples and Gram of N = 4, per-batch B·1, one graph per
    // batch for every Bᵀz) equals a separate selection with each N.
    for (seed, n, ihvp) in
        [("1", "1", "woodbury"), ("2", "2", "woodbury"), ("1", "2", "neumann"), ("2", "4", "identity")]
    {
        let r = rows
            .iter()
            .find(|r| r["labels"]["seed"] == seed && r["labels"]["n"] == n && r["labels"]["ihvp"] == ihvp)
            .unwrap();
        let idx = r["index"].as_u64().unwrap();
        let sep = tmp.path().join(format!("sep-{seed}-{n}-{ihvp}"));
        let run_dir = runs.join(format!("seed-{seed}"));
        let mut a = vec!["select", "--run", run_dir.to_str().unwrap(), "--out", sep.to_str().unwrap()];
        a.extend(["--n", n, "--ihvp", ihvp]);
        a.extend(SEL);
        common::assert_ok(&run(0, &a));
        let (got, want) = (scores(&out.join(format!("combos/{idx}/scores.json"))), scores(&sep.join("scores.json")));
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        let err = got.iter().zip(&want).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        // f32 scores summed in the same order: equal up to the Gram's f64 rounding.
        eprintln!("seed {seed} N {n} {ihvp}: max |Δ| = {err:e} of max |score| {scale:e}");
        assert!(err <= 1e-5 * scale, "seed {seed} N {n} {ihvp}: max |Δ| {err:e} (scale {scale:e})");
        let g = std::fs::read_to_string(sep.join("genotype.txt")).unwrap();
        assert_eq!(r["genotype"].as_str().unwrap(), g.trim());
    }

    // --resume reruns only the work units with a combination lacking its record: removing
    // combination 3's (seed 1) reruns seed 1's unit alone, with the same result.
    let seed2_ck: Vec<PathBuf> = (9..18).map(|i| out.join(format!("checkpoints/combo-{i}.json"))).collect();
    let stamp: Vec<_> = seed2_ck.iter().map(|p| std::fs::metadata(p).unwrap().modified().unwrap()).collect();
    let before = std::fs::read_to_string(out.join("combos/3/scores.json")).unwrap();
    std::fs::remove_file(out.join("checkpoints/combo-3.json")).unwrap();
    std::fs::remove_dir_all(out.join("combos/3")).unwrap();
    let mut ra = args.clone();
    ra.push("--resume");
    common::assert_ok(&run(2, &ra));
    // (The rerun is one unit: one group of both ranks, so equal up to rounding.)
    let (got, want) = (scores(&out.join("combos/3/scores.json")), {
        let v: serde_json::Value = serde_json::from_str(&before).unwrap();
        v["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["score"].as_f64().unwrap_or(f64::NEG_INFINITY))
            .collect::<Vec<_>>()
    });
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
    assert!(got.iter().zip(&want).all(|(x, y)| (x - y).abs() <= 1e-5 * scale));
    let after: Vec<_> = seed2_ck.iter().map(|p| std::fs::metadata(p).unwrap().modified().unwrap()).collect();
    assert_eq!(stamp, after);
    assert_eq!(json(&out.join("ablation.json"))["rows"].as_array().unwrap().len(), 18);

    // A signal (injected on rank 0 before its first unit) stops the job between units with
    // status 3 and the STOPPED marker; seed 2's unit, on the other group, finishes. --resume
    // then runs seed 1's unit alone.
    let out3 = tmp.path().join("abl-stop");
    let mut a = vec!["ablate", "--run", runs.to_str().unwrap(), "--out", out3.to_str().unwrap()];
    a.extend(["--sweep", "n=1,2", "--sweep", "ihvp=woodbury"]);
    a.extend(SEL);
    let mut stopped = a.clone();
    for s in ["fault.phase=experiment", "fault.action=signal", "fault.at_step=0", "fault.rank=0"] {
        stopped.extend(["--set", s]);
    }
    let o = run(2, &stopped);
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(out3.join("STOPPED").is_file());
    let recs: BTreeSet<String> = std::fs::read_dir(out3.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(recs, BTreeSet::from(["combo-2.json".to_string(), "combo-3.json".to_string()]));
    let t2 = std::fs::metadata(out3.join("checkpoints/combo-2.json")).unwrap().modified().unwrap();
    a.push("--resume");
    common::assert_ok(&run(2, &a));
    assert_eq!(json(&out3.join("ablation.json"))["rows"].as_array().unwrap().len(), 4);
    assert!(!out3.join("STOPPED").exists());
    assert_eq!(std::fs::metadata(out3.join("checkpoints/combo-2.json")).unwrap().modified().unwrap(), t2);

    // One group of both ranks (--ranks-per-job 2): the Fisher sharded by coordinates, batches
    // split over ranks; still equal to separate two-rank selections.
    let out2 = tmp.path().join("abl2");
    let mut args = vec!["ablate", "--run", runs.to_str().unwrap(), "--out", out2.to_str().unwrap()];
    args.extend(["--sweep", "seed=2", "--sweep", "n=2,4", "--sweep", "ihvp=woodbury", "--ranks-per-job", "2"]);
    args.extend(SEL);
    common::assert_ok(&run(2, &args));
    let rows2 = json(&out2.join("ablation.json"))["rows"].as_array().unwrap().clone();
    assert_eq!(rows2.len(), 2);
    assert!(rows2.iter().all(|r| r["ranks"] == 2 && r["group"] == 0));
    let sep = tmp.path().join("sep2");
    let run_dir = runs.join("seed-2");
    let mut a = vec!["select", "--run", run_dir.to_str().unwrap(), "--out", sep.to_str().unwrap(), "--n", "2"];
    a.extend(SEL);
    common::assert_ok(&run(2, &a));
    let (got, want) = (scores(&out2.join("combos/0/scores.json")), scores(&sep.join("scores.json")));
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
    let err = got.iter().zip(&want).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    eprintln!("2 ranks, N 2 woodbury: max |Δ| = {err:e} of max |score| {scale:e}");
    assert!(err <= 1e-5 * scale, "2 ranks: max |Δ| {err:e} (scale {scale:e})");

    // Other solvers and settings through the shared path — Sherman–Morrison, and Neumann on
    // Hessian-vector products of the prefix batches (γ small enough for the training half's
    // curvature), H and B from the training half, the negated sign, a Fisher scale — equal
    // separate selections too.
    let out4 = tmp.path().join("abl-more");
    let extra = [
        "--set",
        "select.hess_data=train",
        "--set",
        "select.im_sign=negated",
        "--set",
        "select.fisher_scale=8",
        "--set",
        "select.gamma=1e-6",
    ];
    let mut a = vec!["ablate", "--run", runs.to_str().unwrap(), "--out", out4.to_str().unwrap()];
    a.extend(["--sweep", "seed=1", "--sweep", "n=1,2", "--sweep", "ihvp=sherman-morrison,neumann"]);
    a.extend(SEL);
    a.extend(extra);
    common::assert_ok(&run(0, &a));
    let rows4 = json(&out4.join("ablation.json"))["rows"].as_array().unwrap().clone();
    assert_eq!(rows4.len(), 4);
    for (n, ihvp) in [("1", "sherman-morrison"), ("2", "neumann")] {
        let r = rows4.iter().find(|r| r["labels"]["n"] == n && r["labels"]["ihvp"] == ihvp).unwrap();
        let sep = tmp.path().join(format!("sep4-{n}-{ihvp}"));
        let run_dir = runs.join("seed-1");
        let mut a = vec!["select", "--run", run_dir.to_str().unwrap(), "--out", sep.to_str().unwrap()];
        a.extend(["--n", n, "--ihvp", ihvp]);
        a.extend(SEL);
        a.extend(extra);
        common::assert_ok(&run(0, &a));
        let idx = r["index"].as_u64().unwrap();
        let (got, want) = (scores(&out4.join(format!("combos/{idx}/scores.json"))), scores(&sep.join("scores.json")));
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        let err = got.iter().zip(&want).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        eprintln!("N {n} {ihvp} (train half, negated, scale 8): max |Δ| = {err:e} of max |score| {scale:e}");
        assert!(scale > 0.0 && err <= 1e-5 * scale, "N {n} {ihvp}: max |Δ| {err:e} (scale {scale:e})");
    }

    // `report` re-renders the figures from the tables alone.
    for f in ["ablation-n.svg", "ablation-n.png", "combos/3/scores.png"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let o = run(0, &["report", out.to_str().unwrap()]);
    common::assert_ok(&o);
    assert_figure(&out.join("ablation-n"));
    assert!(out.join("combos/3/scores.png").is_file());
    assert!(common::stdout(&o).lines().count() >= 2 + 18 * 4);

    // The same ablation as a Slurm job: the sweeps reach the command, bad ones are refused.
    let script = tmp.path().join("abl.sbatch");
    let sets = ["--set", "select.criterion=darts-im", "--set", "select.batch_size=8"];
    let mut a = vec!["slurm", "--command", "ablate", "--run", runs.to_str().unwrap(), "--gpus-per-node", "4"];
    a.extend(["--sweep", "n=1,2", "--sweep", "ihvp=woodbury,neumann", "--out", "/scratch/abl"]);
    let logs = tmp.path().join("logs");
    a.extend(["--script", script.to_str().unwrap(), "--log-dir", logs.to_str().unwrap()]);
    a.extend(sets);
    common::assert_ok(&run(0, &a));
    let text = std::fs::read_to_string(&script).unwrap();
    let srun = text.lines().find(|l| l.starts_with("srun ")).unwrap();
    assert!(srun.contains("\"$BIN\" ablate --out \"$OUT\""), "{srun}");
    let fresh = text.lines().find(|l| l.trim_start().starts_with("ARGS=(--run")).unwrap();
    assert!(fresh.contains("--sweep n=1,2 --sweep ihvp=woodbury,neumann"), "{fresh}");
    assert!(text.contains("#SBATCH --ntasks-per-node=4"), "{text}");
    let a2: Vec<&str> = a.iter().map(|x| if *x == "n=1,2" { "n=1,1" } else { x }).collect();
    let o = run(0, &a2);
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stderr(&o).contains("listed twice"));

    // Bad input: one line, status 2, nothing written.
    let bad = tmp.path().join("bad");
    for (sweep, msg) in [
        ("seed=9", "no run of seed 9"),
        ("n=1,1", "listed twice"),
        ("ihvp=foo", "--sweep ihvp: select.ihvp: unknown value \"foo\""),
        ("gamma=nan,1e-3", "--sweep gamma: select.gamma: must be finite and > 0 (got NaN) (value nan)"),
    ] {
        let o = run(0, &["ablate", "--run", runs.to_str().unwrap(), "--out", bad.to_str().unwrap(), "--sweep", sweep]);
        assert_eq!(o.status.code(), Some(2), "{sweep}: {}", common::stderr(&o));
        let e = common::stderr(&o);
        assert!(e.contains(msg) && e.trim().lines().count() == 1, "{sweep}: {e}");
        assert!(!bad.exists());
    }
}

#[test]
fn groundtruth_trains_every_architecture_once_and_reports_tau() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    common::assert_ok(&common::search(0, &run_dir, &[]));
    let sel = tmp.path().join("sel");
    let mut a = vec!["select", "--run", run_dir.to_str().unwrap(), "--out", sel.to_str().unwrap(), "--n", "2"];
    a.extend(SEL);
    common::assert_ok(&run(0, &a));

    let out = tmp.path().join("gt");
    let scores_path = sel.join("scores.json");
    let args = [
        "groundtruth",
        "--space",
        "nb201",
        "--edges",
        "1<-0,2<-1,3<-2",
        "--ops",
        "skip_connect,nor_conv_3x3,avg_pool_3x3",
        "--scores",
        scores_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--set",
        "data.image_size=8",
        "--set",
        "data.train_size=128",
        "--set",
        "data.test_size=64",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=32",
        "--set",
        "train.channels=4",
        "--set",
        "train.layers=1",
    ];
    let o = run(2, &args);
    common::assert_ok(&o);
    let rows: Vec<Vec<String>> = csv::Reader::from_path(out.join("groundtruth.csv"))
        .unwrap()
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    // 3 ops on 3 edges: 27 cells, each trained exactly once, by both rank groups.
    assert_eq!(rows.len(), 27);
    let archs: BTreeSet<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(archs.len(), 27);
    let groups: BTreeSet<&str> = rows.iter().map(|r| r[8].as_str()).collect();
    assert_eq!(groups, BTreeSet::from(["0", "1"]));
    assert_eq!(std::fs::read_dir(out.join("archs")).unwrap().count(), 27);
    for r in &rows {
        let g: dartsif::space::Nb201Genotype = r[1].parse().unwrap();
        // Edges 2<-0, 3<-0, 3<-1 (rows 1, 3, 4) are the fill op `none` (index 0).
        assert_eq!((g.ops[1], g.ops[3], g.ops[4]), (0, 0, 0), "{}", r[1]);
        // Test accuracy over the 64 test images: a whole number of them.
        let correct = r[2].parse::<f64>().unwrap() * 64.0;
        assert!((correct - correct.round()).abs() < 1e-9 && (0.0..=64.0).contains(&correct), "{}", r[2]);
    }
    // The table is a benchmark table `select.benchmark_table` reads.
    let table = dartsif::report::benchmark::BenchmarkTable::load(&out.join("groundtruth.tsv")).unwrap();
    assert_eq!(table.len(), 27);

    // τ between Σ_free edges score(edge, op) and test accuracy, recomputed here.
    let doc = json(&out.join("groundtruth.json"));
    let t = &doc["kendall_tau"][0];
    let sc = json(&scores_path);
    let score = |edge: &str, op: &str| {
        sc["scores"].as_array().unwrap().iter().find(|r| r["edge"] == edge && r["op"] == op).unwrap()["score"]
            .as_f64()
            .unwrap()
    };
    let names = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for r in &rows {
        let g: dartsif::space::Nb201Genotype = r[1].parse().unwrap();
        a.push(score("1<-0", names[g.ops[0]]) + score("2<-1", names[g.ops[2]]) + score("3<-2", names[g.ops[5]]));
        b.push(r[2].parse::<f64>().unwrap());
    }
    let want = tau_b(&a, &b);
    assert!((t["tau"].as_f64().unwrap() - want).abs() < 1e-12, "{} vs {want}", t["tau"]);
    assert_eq!(t["architectures"], 27);
    assert!(common::stdout(&o).contains("Kendall tau"));
    assert_figure(&out.join("groundtruth-0"));

    // --resume trains nothing that is done: remove one result, it alone is trained again.
    std::fs::remove_file(out.join("archs/5.json")).unwrap();
    let before: Vec<PathBuf> = (0..27).filter(|&i| i != 5).map(|i| out.join(format!("archs/{i}.json"))).collect();
    let stamp: Vec<_> = before.iter().map(|p| std::fs::metadata(p).unwrap().modified().unwrap()).collect();
    let mut ra: Vec<&str> = args.to_vec();
    ra.push("--resume");
    common::assert_ok(&run(2, &ra));
    assert!(out.join("archs/5.json").is_file());
    let after: Vec<_> = before.iter().map(|p| std::fs::metadata(p).unwrap().modified().unwrap()).collect();
    assert_eq!(stamp, after);

    // Bad input: one line, status 2, nothing written.
    let bad = tmp.path().join("bad");
    let not_scores = run_dir.join("config.toml");
    for (flag, value, msg) in [
        ("--scores", not_scores.to_str().unwrap(), "not a scores.json"),
        ("--ops", "conv9", "unknown NB201 op"),
        ("--edges", "4<-0", "unknown NB201 edge"),
        ("--space", "darts", "nb201"),
    ] {
        let o = run(0, &["groundtruth", flag, value, "--out", bad.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2));
        let e = common::stderr(&o);
        assert!(e.contains(msg) && e.trim().lines().count() == 1, "{e}");
        assert!(!bad.exists());
    }
    let o = run(0, &["report", tmp.path().join("run/logs").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}
