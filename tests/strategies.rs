//! The seed paper's baseline strategies (GDAS, SNAS, SETN, random-nas, random) on the same
//! supernet, data and ranks as DARTS: 1 and 2 ranks agree, a run stopped by SIGTERM resumes to
//! the uninterrupted result bit for bit, and each writes what its method defines (τ per epoch,
//! the scored candidates, one drawn architecture).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::{assert_ok, bin, stderr};
use tch::Tensor;

const STRATEGIES: [&str; 5] = ["gdas", "snas", "setn", "random-nas", "enas"];

/// ENAS's controller trains on 2 updates of 3 draws per epoch here (50 × 20 by default).
const SMALL_CONTROLLER: [&str; 2] = ["search.enas.controller_steps=2", "search.enas.aggregate=3"];

fn strategy(s: &str) -> String {
    format!("search.strategy=\"{s}\"")
}

fn load(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("supernet.safetensors")).unwrap().into_iter().collect()
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()))
}

/// `candidates.csv` without its loss column (summed in a different order on 2 ranks).
fn candidates(dir: &Path) -> Vec<String> {
    read(dir, "candidates.csv")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!("{},{},{},{}", f[0], f[1], f[4], f[5])
        })
        .collect()
}

#[test]
fn each_strategy_agrees_on_one_and_two_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    for st in STRATEGIES {
        let sets = [strategy(st), "search.arch.lr=0.05".into(), "seed=11".into(), "search.candidates=6".into()];
        let sets: Vec<&str> = sets.iter().map(String::as_str).chain(SMALL_CONTROLLER).collect();
        let (d1, d2) = (tmp.path().join(format!("{st}-1")), tmp.path().join(format!("{st}-2")));
        assert_ok(&common::search(1, &d1, &sets));
        assert_ok(&common::search(2, &d2, &sets));
        let (s1, s2) = (load(&d1), load(&d2));
        assert_eq!(s1.len(), s2.len());
        // θ and α (BatchNorm running buffers follow rank 0's micro-batches, as in DDP): the
        // same draws on both ranks, the same global batches in micro-batches of 16; only the
        // all-reduce's f32 summation order differs.
        for (name, a) in s1.iter().filter(|(n, _)| !n.contains("running_")) {
            let b = &s2[name];
            let d = (a - b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]).max(1e-12);
            // Adam divides each α entry's step by its own gradient's size, so the f32 rounding
            // of small entries shows more in α (1e-5 seen for SNAS); a missing all-reduce would
            // leave each rank's half-batch gradient, off by O(1).
            let tol = if name == "arch_parameters" { 1e-3 } else { 1e-5 };
            assert!(d < tol, "{st}: {name} differs between 1 and 2 ranks by {d:e}");
        }
        assert_eq!(read(&d1, "genotype.txt"), read(&d2, "genotype.txt"), "{st}");
        let alpha = &s1["arch_parameters"];
        match st {
            // No α training: α keeps its 1e-3·randn initialisation.
            "random-nas" | "enas" => assert!(alpha.abs().max().double_value(&[]) < 0.01, "{st}: α moved"),
            // 8 Adam steps of lr 0.05 move α entries by O(0.1).
            _ => assert!(alpha.abs().max().double_value(&[]) > 0.05, "{st}: α did not move"),
        }
        if st != "gdas" && st != "snas" {
            let (c1, c2) = (candidates(&d1), candidates(&d2));
            assert_eq!(c1, c2, "{st}: candidates differ");
            assert_eq!(c1.len(), 7, "{st}: header and 6 candidates");
            // The chosen one is the most accurate (the first on ties) and is the genotype.
            let rows: Vec<Vec<String>> =
                read(&d1, "candidates.csv").lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
            let best = rows.iter().map(|r| r[4].parse::<f64>().unwrap()).fold(f64::MIN, f64::max);
            let chosen: Vec<&Vec<String>> = rows.iter().filter(|r| r[5] == "true").collect();
            assert_eq!(chosen.len(), 1);
            assert_eq!(chosen[0][4].parse::<f64>().unwrap(), best);
            assert_eq!(read(&d1, "genotype.txt").trim(), chosen[0][1]);
            let first_best = rows.iter().position(|r| r[4].parse::<f64>().unwrap() == best).unwrap();
            assert_eq!(chosen[0][0], first_best.to_string());
            if st == "setn" {
                // SETN's candidates come in decreasing log-probability.
                let lp: Vec<f64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
                assert!(lp.windows(2).all(|w| w[0] >= w[1]), "{lp:?}");
            }
        }
        // GDAS and SNAS log their temperature per epoch (10 → 0.1 over 2 epochs for GDAS).
        let taus: Vec<f64> = read(&d1, "metrics.jsonl")
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kind"] == "epoch")
            .filter_map(|v| v["tau"].as_f64())
            .collect();
        if st == "enas" {
            // The controller trained after each epoch: its statistics per epoch, and it moved
            // (its weights differ between 1 and 2 ranks by no more than rounding: checked
            // through the identical candidates above).
            let ctl: Vec<serde_json::Value> = read(&d1, "metrics.jsonl")
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["kind"] == "epoch")
                .map(|v| v["controller"].clone())
                .collect();
            assert_eq!(ctl.len(), 2);
            for c in &ctl {
                assert_eq!(c["draws"], 6);
                let h = c["entropy"].as_f64().unwrap();
                // Six steps of five ops; after two small Adam steps the controller is still
                // near uniform (its logits are 2.5·tanh(z/5) of small z at initialisation): the
                // draws' entropy is within 5 % of 6·ln 5 = 9.657.
                assert!((h - 6.0 * 5f64.ln()).abs() < 0.05 * 6.0 * 5f64.ln(), "{h}");
            }
        }
        match st {
            "gdas" => assert_eq!(taus, [10.0, 0.1]),
            // SNAS: 0.1 + 9.9·(1 − (e + 1)/2): 5.05, then the floor 0.1.
            "snas" => assert_eq!(taus, [5.05, 0.1]),
            _ => assert!(taus.is_empty(), "{st}: {taus:?}"),
        }
    }
}

#[test]
fn each_strategy_resumes_bit_identically_after_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    for st in STRATEGIES {
        let s = strategy(st);
        let (full, cut) = (tmp.path().join(format!("{st}-full")), tmp.path().join(format!("{st}-cut")));
        let base: Vec<&str> = [s.as_str(), "search.candidates=6"].into_iter().chain(SMALL_CONTROLLER).collect();
        assert_ok(&common::search(0, &full, &base));
        // SIGTERM during global step 5 (epoch 1): checkpoint after step 6, exit 3. (ENAS: the
        // controller trained after epoch 0 is in the checkpoint.)
        let cut_sets: Vec<&str> = base.iter().copied().chain(["fault.action=\"signal\"", "fault.at_step=5"]).collect();
        let o = common::search(0, &cut, &cut_sets);
        assert_eq!(o.status.code(), Some(3), "{st}: {}", stderr(&o));
        let r = Command::new(bin())
            .args(["search", "--out", &cut.display().to_string(), "--resume", "auto"])
            .env("DARTSIF_LOG", "warn")
            .output()
            .unwrap();
        assert_ok(&r);
        let (a, b) = (load(&full), load(&cut));
        for (name, x) in &a {
            assert!(x.equal(&b[name]), "{st}: {name} differs after the resume");
        }
        assert_eq!(read(&full, "genotype.txt"), read(&cut, "genotype.txt"), "{st}");
        assert_eq!(read(&full, "alphas.jsonl"), read(&cut, "alphas.jsonl"), "{st}");
        if st != "gdas" && st != "snas" {
            assert_eq!(read(&full, "candidates.csv"), read(&cut, "candidates.csv"), "{st}");
        }
        if st == "enas" {
            // SIGTERM during epoch 0's controller phase, after its first of 2 updates: the
            // checkpoint holds the epoch's trained θ and the controller from before the phase,
            // which restarts on resume.
            let cut = tmp.path().join("enas-cut-controller");
            let sets: Vec<&str> = base
                .iter()
                .copied()
                .chain(["fault.action=\"signal\"", "fault.phase=\"controller\"", "fault.at_step=0"])
                .collect();
            let o = common::search(0, &cut, &sets);
            assert_eq!(o.status.code(), Some(3), "enas, controller phase: {}", stderr(&o));
            assert!(stderr(&o).contains("epoch 0, controller phase"), "{}", stderr(&o));
            // (The phase restarts at the update that raised the signal: no fault this time.)
            let r = Command::new(bin())
                .args(["search", "--out", &cut.display().to_string(), "--resume", "auto"])
                .args(["--set", "fault.action=\"none\""])
                .env("DARTSIF_LOG", "warn")
                .output()
                .unwrap();
            assert_ok(&r);
            let b = load(&cut);
            for (name, x) in &a {
                assert!(x.equal(&b[name]), "enas: {name} differs after a resume in the controller phase");
            }
            assert_eq!(read(&full, "genotype.txt"), read(&cut, "genotype.txt"));
            assert_eq!(read(&full, "candidates.csv"), read(&cut, "candidates.csv"));
        }
    }
}

/// The random baseline: one architecture per seed, nothing trained, its benchmark row looked
/// up; the same seed draws the same architecture.
#[test]
fn the_random_baseline_draws_one_architecture_per_seed() {
    let tmp = tempfile::tempdir().unwrap();
    // A benchmark table of every NB201 architecture, CIFAR-10 test accuracy = its index / 1000
    // (the enumeration with the last edge fastest, as `launch/nb201-table` writes it).
    let ops = dartsif::space::NB201_OPS;
    let mut text = String::from("arch\tcifar10_test\n");
    for i in 0..15_625usize {
        let d: Vec<&str> = (0..6).map(|k| ops[i / 5usize.pow(5 - k) % 5]).collect();
        let arch = format!("|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|", d[0], d[1], d[2], d[3], d[4], d[5]);
        text.push_str(&format!("{arch}\t{}\n", i as f64 / 1000.0));
    }
    let table = tmp.path().join("bench.tsv");
    std::fs::write(&table, &text).unwrap();
    let index_of = |g: &str| text.lines().skip(1).position(|l| l.split('\t').next() == Some(g)).unwrap();
    let mut genotypes = Vec::new();
    for seed in [1, 2, 1] {
        let dir = tmp.path().join(format!("r{seed}-{}", genotypes.len()));
        let set = format!("select.benchmark_table=\"{}\"", table.display());
        let o = common::search(0, &dir, &[&strategy("random"), &format!("seed={seed}"), &set]);
        assert_ok(&o);
        assert!(!dir.join("supernet.safetensors").exists(), "the random baseline trains no supernet");
        let g = read(&dir, "genotype.txt").trim().to_string();
        assert_eq!(common::stdout(&o).trim(), g);
        let report: serde_json::Value = serde_json::from_str(&read(&dir, "report.json")).unwrap();
        assert_eq!(report["criterion"], "random");
        assert_eq!(report["genotype"], g.as_str());
        let acc = report["benchmark"]["accuracy"]["cifar10_test"].as_f64().unwrap();
        assert_eq!(acc, index_of(&g) as f64 / 1000.0);
        genotypes.push(g);
    }
    assert_eq!(genotypes[0], genotypes[2]);
    assert_ne!(genotypes[0], genotypes[1]);
}

/// `compare`: two methods × two seeds write Table 4's layout (the means are the means of the
/// seeds' rows), and a resumed `compare` runs only the units whose results are missing.
#[test]
fn compare_writes_the_table_and_resumes_only_missing_units() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    let run = |resume: bool| {
        let mut cmd = Command::new(bin());
        cmd.args(["compare", "--methods", "darts-1st+magnitude,gdas", "--seeds", "1,2", "--out"]).arg(&out);
        for s in common::TINY.iter().chain(&["select.n=2", "select.batch_size=16"]) {
            cmd.args(["--set", s]);
        }
        if resume {
            cmd.arg("--resume");
        }
        common::output_within(cmd.env("DARTSIF_LOG", "info"), 300)
    };
    let o = run(false);
    assert_ok(&o);
    let csv = read(&out, "compare.csv");
    let rows: Vec<Vec<String>> = csv.lines().map(|l| l.split(',').map(String::from).collect()).collect();
    assert_eq!(rows[0][..4], ["method", "seed", "genotype", "derived_val_acc"]);
    // Per method: two seeds, then mean, std, pstd.
    assert_eq!(rows.len(), 1 + 2 * 5);
    for (m, base) in [("darts-1st+magnitude", 1), ("gdas", 6)] {
        assert_eq!(rows[base][0], m);
        assert_eq!([rows[base][1].as_str(), rows[base + 1][1].as_str()], ["1", "2"]);
        assert_eq!(rows[base + 2][1], "mean");
        for c in 3..rows[0].len() {
            let (a, b): (f64, f64) = (rows[base][c].parse().unwrap(), rows[base + 1][c].parse().unwrap());
            let mean: f64 = rows[base + 2][c].parse().unwrap();
            assert!((mean - (a + b) / 2.0).abs() < 1e-12, "{m} {}: {mean} vs {a}, {b}", rows[0][c]);
            // Population std of two values: |a − b| / 2.
            let pstd: f64 = rows[base + 4][c].parse().unwrap();
            assert!((pstd - (a - b).abs() / 2.0).abs() < 1e-12);
        }
        // The method's genotype per seed is its run's.
        let g = |s: u64| match m {
            "gdas" => read(&out.join(format!("search/gdas/seed-{s}")), "genotype.txt"),
            _ => read(&out.join(format!("select/{m}/seed-{s}")), "genotype.txt"),
        };
        assert_eq!(rows[base][2], g(1).trim());
    }
    let md = read(&out, "compare.md");
    assert!(md.lines().any(|l| l.starts_with("| gdas | ")), "{md}");
    assert_eq!(common::stdout(&o), md, "stdout is the table alone");
    // One search per strategy and seed: the magnitude selection reads darts-1st's supernet.
    let searches: Vec<String> = std::fs::read_dir(out.join("search"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(searches.len(), 2, "{searches:?}");

    // Remove one search (with what depends on it) and one selection; a resume redoes them only.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let kept = out.join("search/darts-1st/seed-1/report.json");
    let before = mtime(&kept);
    std::fs::remove_dir_all(out.join("search/gdas/seed-2")).unwrap();
    std::fs::remove_file(out.join("derived/gdas/seed-2.json")).unwrap();
    std::fs::remove_dir_all(out.join("select/darts-1st+magnitude/seed-1")).unwrap();
    let r = run(true);
    assert_ok(&r);
    let log = stderr(&r);
    assert!(log.contains("compare: 4 searches, 1 to run"), "{log}");
    assert!(log.contains("compare: 2 selections, 1 to run"), "{log}");
    assert!(log.contains("compare: 1 derived architectures to score"), "{log}");
    assert_eq!(mtime(&kept), before, "a finished search ran again");
    // The same table: every unit is deterministic from its seed.
    assert_eq!(read(&out, "compare.csv"), csv);

    // A ground truth whose accuracies are seed 1's magnitude scores summed over the free edges
    // (27 cells: three edges × three ops, the rest `none`): that selection ranks it perfectly,
    // τ = 1; a method without a selection has no τ.
    let scores: serde_json::Value =
        serde_json::from_str(&read(&out.join("select/darts-1st+magnitude/seed-1"), "scores.json")).unwrap();
    let score = |edge: &str, op: &str| {
        scores["scores"].as_array().unwrap().iter().find(|r| r["edge"] == edge && r["op"] == op).unwrap()["score"]
            .as_f64()
            .unwrap()
    };
    let ops = ["skip_connect", "nor_conv_3x3", "avg_pool_3x3"];
    let mut archs = Vec::new();
    for a in ops {
        for b in ops {
            for c in ops {
                let arch = format!("|{a}~0|+|none~0|{b}~1|+|none~0|none~1|{c}~2|");
                let acc = score("1<-0", a) + score("2<-1", b) + score("3<-2", c);
                archs.push(serde_json::json!({"index": archs.len(), "arch": arch, "test_acc": acc, "test_loss": 0.0,
                    "train_acc": 0.0, "train_loss": 0.0, "weights": 0, "seconds": 0.0, "group": 0}));
            }
        }
    }
    let gt = tmp.path().join("gt");
    std::fs::create_dir(&gt).unwrap();
    std::fs::write(gt.join("groundtruth.json"), serde_json::json!({"architectures": archs}).to_string()).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["compare", "--methods", "darts-1st+magnitude,gdas", "--seeds", "1,2", "--resume", "--groundtruth"]);
    cmd.arg(&gt).arg("--out").arg(&out);
    for s in common::TINY.iter().chain(&["select.n=2", "select.batch_size=16"]) {
        cmd.args(["--set", s]);
    }
    assert_ok(&common::output_within(cmd.env("DARTSIF_LOG", "warn"), 120));
    let mut r = csv::Reader::from_path(out.join("compare.csv")).unwrap();
    let col = r.headers().unwrap().iter().position(|h| h == "tau_groundtruth").expect("a tau_groundtruth column");
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    let tau = |m: &str, s: &str| rows.iter().find(|x| &x[0] == m && &x[1] == s).unwrap()[col].to_string();
    assert_eq!(tau("darts-1st+magnitude", "1"), "1");
    assert_eq!(tau("gdas", "1"), "");
}

/// The strategies' NB201 presets load and hold the settings the README's Baselines table
/// gives with their sources (AutoDL-Projects' NB201 scripts; SNAS-Series for SNAS's τ).
#[test]
fn the_presets_hold_the_reference_settings() {
    use dartsif::config::{Config, Strategy};
    let load = |f: &str| Config::load(Some(&common::repo().join("configs").join(f)), &[]).unwrap();
    for (file, strategy, epochs, batch) in [
        ("nb201-gdas-cifar10.toml", Strategy::Gdas, 250, 64),
        ("nb201-snas-cifar10.toml", Strategy::Snas, 250, 64),
        ("nb201-setn-cifar10.toml", Strategy::Setn, 250, 64),
        ("nb201-random-nas-cifar10.toml", Strategy::RandomNas, 250, 64),
        ("nb201-enas-cifar10.toml", Strategy::Enas, 250, 128),
        ("nb201-random-cifar10.toml", Strategy::Random, 50, 64),
    ] {
        let c = load(file);
        assert_eq!((c.search.strategy, c.search.epochs, c.search.batch_size), (strategy, epochs, batch), "{file}");
        assert_eq!((c.space.name.as_str(), c.space.channels, c.space.cells_per_stage), ("nb201", 16, 5));
        assert_eq!(c.search.order, dartsif::config::StepOrder::WeightsFirst, "{file}");
        assert_eq!(c.search.weights.grad_clip, 5.0, "{file}");
        if strategy.picks_candidates() {
            assert_eq!(c.search.candidates, 100, "{file}");
        }
    }
    let g = load("nb201-gdas-cifar10.toml");
    assert_eq!((g.search.tau_max, g.search.tau_min), (10.0, 0.1));
    let s = load("nb201-snas-cifar10.toml");
    assert_eq!((s.search.tau_max, s.search.tau_min), (1.0, 0.03));
    let e = load("nb201-enas-cifar10.toml");
    assert_eq!((e.search.weights.lr, e.search.weights.lr_min, e.search.weights.weight_decay), (0.05, 0.0005, 2.5e-4));
    let ctl = &e.search.enas;
    assert_eq!((ctl.controller_steps, ctl.aggregate, ctl.lr, ctl.eps), (50, 20, 1e-3, 1e-3));
    assert_eq!((ctl.entropy_weight, ctl.baseline_decay, ctl.tanh_constant, ctl.temperature), (1e-4, 0.99, 2.5, 5.0));
}

/// `compare` as a Slurm job: its methods and seeds reach the command; without `--methods` the
/// script is refused.
#[test]
fn compare_renders_as_a_slurm_job() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("cmp.sbatch");
    let logs = tmp.path().join("logs");
    let base = ["slurm", "--command", "compare", "--out", "/scratch/cmp", "--gpus-per-node", "4"];
    let files = ["--script", script.to_str().unwrap(), "--log-dir", logs.to_str().unwrap()];
    let run = |extra: &[&str]| {
        Command::new(bin()).args(base).args(files).args(extra).env("DARTSIF_LOG", "warn").output().unwrap()
    };
    let o = run(&["--arg=--methods", "--arg=gdas,darts-1st+darts-im", "--arg=--seeds", "--arg=1,2"]);
    assert_ok(&o);
    let text = std::fs::read_to_string(&script).unwrap();
    let srun = text.lines().find(|l| l.starts_with("srun ")).unwrap();
    assert!(srun.contains("\"$BIN\" compare --out \"$OUT\""), "{srun}");
    assert!(text.contains("--methods gdas,darts-1st+darts-im --seeds 1,2"), "{text}");
    assert!(text.contains("--resume auto"), "a requeued job resumes: {text}");
    std::fs::remove_file(&script).unwrap();
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--arg=--methods: required for this command"), "{}", stderr(&o));
    assert!(!script.exists());
}

/// The PC-DARTS 1Shot1 preset: the port's 100 epochs, space 3 with partial channels.
#[test]
fn the_pc_nb1shot1_preset_loads() {
    let c = dartsif::config::Config::load(Some(&common::repo().join("configs/pc-nb1shot1-cifar10.toml")), &[]).unwrap();
    assert_eq!(
        (c.space.name.as_str(), c.space.layers, c.search.epochs, c.search.batch_size),
        ("pc-nb1shot1-s3", 9, 100, 96)
    );
}

/// GDAS, SNAS, SETN, random-nas and the random baseline on the DARTS space: each searches a
/// 3-cell supernet, writes a DARTS genotype that parses back (two inputs per node), and SETN's
/// and random-nas's candidates are distinct.
#[test]
fn strategies_on_the_darts_space() {
    let tmp = tempfile::tempdir().unwrap();
    for st in ["gdas", "snas", "setn", "random-nas", "random"] {
        let dir = tmp.path().join(st);
        let sets = [strategy(st), "space.name=\"darts\"".into(), "space.layers=3".into(), "search.candidates=4".into()];
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        assert_ok(&common::search(0, &dir, &sets));
        let g: dartsif::space::DartsGenotype = read(&dir, "genotype.txt").trim().parse().unwrap();
        assert_eq!((g.normal.len(), g.reduce.len()), (8, 8), "{st}");
        assert!(g.normal.iter().chain(&g.reduce).all(|(op, _)| op != "none"), "{st}");
        if st == "setn" || st == "random-nas" {
            // DARTS genotypes hold commas: read the CSV as CSV.
            let mut r = csv::Reader::from_path(dir.join("candidates.csv")).unwrap();
            let rows: Vec<String> = r.records().map(|rec| rec.unwrap()[1].to_string()).collect();
            let distinct: std::collections::HashSet<&String> = rows.iter().collect();
            assert_eq!((rows.len(), distinct.len()), (4, 4), "{st}: {rows:?}");
        }
    }
}

/// The influence criteria on the supernets of GDAS, SNAS and SETN: `select` reads their runs
/// unchanged (rows no paper has: GDAS-IM, SNAS-IF, …).
#[test]
fn influence_selection_on_baseline_supernets() {
    let tmp = tempfile::tempdir().unwrap();
    for (st, criterion) in [("gdas", "darts-im"), ("snas", "darts-if"), ("setn", "drop")] {
        let run = tmp.path().join(st);
        assert_ok(&common::search(0, &run, &[&strategy(st), "search.candidates=3"]));
        let out = tmp.path().join(format!("{st}-{criterion}"));
        let o = Command::new(bin())
            .args(["select", "--run", &run.display().to_string(), "--out", &out.display().to_string()])
            .args(["--criterion", criterion, "--set", "select.n=2", "--set", "select.batch_size=8"])
            .env("DARTSIF_LOG", "warn")
            .output()
            .unwrap();
        assert_ok(&o);
        let scores: serde_json::Value = serde_json::from_str(&read(&out, "scores.json")).unwrap();
        assert_eq!(scores["criterion"].as_str().unwrap().split_whitespace().next(), Some(criterion), "{st}");
        assert_eq!(common::stdout(&o).trim(), read(&out, "genotype.txt").trim());
    }
}

/// `search.precision = "bf16"` on the demo's search (its embedded config, 10 epochs):
/// convolutions and linear layers in bf16 move α (so the setting acts) but not the genotype —
/// neither at the end nor at any epoch. The two runs go side by side, one thread each.
#[test]
fn a_bf16_search_selects_the_f32_genotype_on_the_demo() {
    let tmp = tempfile::tempdir().unwrap();
    let start = |precision: &str| {
        let out = tmp.path().join(precision);
        let child = Command::new(bin())
            .args(["search", "--out"])
            .arg(&out)
            .args(["--set", "threads=1", "--set", &format!("search.precision=\"{precision}\"")])
            .env("DARTSIF_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (out, child)
    };
    let runs = [start("f32"), start("bf16")];
    let [f32, bf16] = runs.map(|(out, child)| {
        assert_ok(&child.wait_with_output().unwrap());
        out
    });
    let (a, b) = (&load(&f32)["arch_parameters"], &load(&bf16)["arch_parameters"]);
    let moved = (a - b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]);
    eprintln!("bf16 vs f32 search: α differs by {moved:.3e} relative");
    assert!(moved > 1e-4, "bf16 did not change α ({moved}): was the precision applied?");
    assert_eq!(read(&f32, "genotype.txt"), read(&bf16, "genotype.txt"));
    let per_epoch = |dir: &Path| -> Vec<String> {
        read(dir, "metrics.jsonl")
            .lines()
            .filter(|l| l.contains("\"kind\":\"epoch\""))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["genotype"].as_str().unwrap().to_string())
            .collect()
    };
    let (g32, g16) = (per_epoch(&f32), per_epoch(&bf16));
    assert_eq!(g32.len(), 10);
    assert_eq!(g32, g16, "the genotype of some epoch differs");
    assert!(read(&bf16, "config.toml").contains("precision = \"bf16\""));
}
