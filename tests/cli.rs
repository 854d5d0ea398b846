//! The `search` command end to end: outputs, and bad input (one line naming the culprit, exit
//! status 2, nothing written).

mod common;

use std::path::Path;

fn bad(sets: &[&str], config: Option<&Path>, expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("search").arg("--out").arg(&out);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    let o = cmd.output().unwrap();
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected:\n{err}");
    assert!(err.contains(expect), "expected {expect:?} in:\n{err}");
    assert!(!out.exists(), "nothing may be written for bad input");
}

#[test]
fn unknown_key() {
    bad(&["search.epoch=3"], None, "--set search.epoch=3: search.epoch: unknown key");
}

#[test]
fn wrong_type() {
    bad(&["search.batch_size=\"big\""], None, "search.batch_size: invalid type: string \"big\"");
}

#[test]
fn out_of_range() {
    bad(&["search.arch.beta2=1.5"], None, "search.arch.beta2: must be in [0, 1) (got 1.5)");
    bad(&["data.image_size=30"], None, "data.image_size: must be a multiple of 4");
}

#[test]
fn missing_config_file() {
    bad(&[], Some(Path::new("/nonexistent/x.toml")), "/nonexistent/x.toml: cannot read config: no such file");
}

#[test]
fn unknown_key_in_a_file_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[space]\nname = \"nb201\"\nchanels = 16\n").unwrap();
    bad(&[], Some(&cfg), &format!("{}: space.chanels: unknown key", cfg.display()));
}

#[test]
fn non_empty_output_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep.txt"), "x").unwrap();
    let o = common::search(0, tmp.path(), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stderr(&o).contains("output directory exists and is not empty"), "{}", common::stderr(&o));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn search_writes_every_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = common::search(
        0,
        &out,
        &[
            "data.test_size=64",
            "select.after_search=true",
            "select.criterion=\"drop\"",
            "select.n=2",
            "select.batch_size=8",
        ],
    );
    common::assert_ok(&o);
    let genotype = std::fs::read_to_string(out.join("genotype.txt")).unwrap();
    let g: dartsif::space::Nb201Genotype = genotype.trim().parse().unwrap();
    assert!(!g.ops.contains(&0), "magnitude selection excludes none");
    // stdout: the search's (magnitude) genotype, then the selection's.
    let printed: Vec<String> = common::stdout(&o).lines().map(String::from).collect();
    assert_eq!(printed[0], genotype.trim());
    let selected = std::fs::read_to_string(out.join("select/genotype.txt")).unwrap();
    assert_eq!(printed[1], selected.trim());
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("select/scores.json")).unwrap()).unwrap();
    assert_eq!(scores["criterion"], "drop");

    // metrics.jsonl: 8 step lines (log_every 1), 2 epoch lines, 1 test line.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let count = |k: &str| lines.iter().filter(|v| v["kind"] == k).count();
    assert_eq!((count("step"), count("epoch"), count("test")), (8, 2, 1));
    let epoch = lines.iter().find(|v| v["kind"] == "epoch").unwrap();
    for key in ["train_loss", "val_acc", "alpha_entropy", "images_per_s", "reduce_s", "lr"] {
        assert!(epoch[key].is_number(), "{key} missing in {epoch}");
    }
    // α entropy of 5 near-uniform ops is at most ln 5.
    assert!(epoch["alpha_entropy"].as_f64().unwrap() <= 5f64.ln() + 1e-12);
    // The per-epoch history: α after each epoch, and its magnitude genotype (the last one is
    // the run's genotype.txt; the α of the last line are the state file's).
    let jl = |f: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join(f)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (alphas, genotypes) = (jl("alphas.jsonl"), jl("genotypes.jsonl"));
    assert_eq!((alphas.len(), genotypes.len()), (2, 2));
    assert_eq!(genotypes[1]["genotype"], genotype.trim());
    assert_eq!(alphas[1]["alphas"]["arch_parameters"].as_array().unwrap().len(), 6);
    let stored: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(out.join("supernet.safetensors")).unwrap().into_iter().collect();
    let a00 = stored["arch_parameters"].double_value(&[0, 0]);
    assert!((alphas[1]["alphas"]["arch_parameters"][0][0].as_f64().unwrap() - a00).abs() < 1e-12);

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["edges"].as_array().unwrap().len(), 6);
    let e0 = &report["edges"][0];
    let sm: f64 = e0["softmax"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((sm - 1.0).abs() < 1e-9);
    assert_eq!(e0["chosen"], dartsif::space::NB201_OPS[g.ops[0]]);
    assert_eq!(report["run"]["world_size"], 1);

    // The resolved config reproduces the run's settings when passed back.
    let cfg = dartsif::config::Config::load(Some(&out.join("config.toml")), &[]).unwrap();
    assert_eq!(cfg.space.channels, 4);
    assert_eq!(cfg.search.micro_batch, 16);

    // The state file holds θ (AutoDL names), BatchNorm buffers and α.
    let names: Vec<String> =
        tch::Tensor::read_safetensors(out.join("supernet.safetensors")).unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"arch_parameters".to_string()));
    assert!(names.contains(&"stem.0.weight".to_string()));
    assert!(names.contains(&"lastact.0.running_var".to_string()));
}

/// `demo` (what `make demo` runs), shrunk: the search, the four criteria on the searched
/// supernet, the per-edge table, the genotypes and the fidelity summary, written to
/// `criteria.txt` too, with each criterion's selection directory and figures.
#[test]
fn the_demo_compares_the_four_criteria() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(["demo", "--fidelity-steps", "2", "--out"]).arg(&out);
    for s in common::TINY.iter().chain(&["select.n=2", "select.batch_size=16"]) {
        cmd.args(["--set", s]);
    }
    let o = cmd.env("DARTSIF_LOG", "warn").output().unwrap();
    common::assert_ok(&o);
    let text = common::stdout(&o);
    let table = std::fs::read_to_string(out.join("criteria.txt")).unwrap();
    assert!(text.ends_with(&table), "stdout ends with criteria.txt:\n{text}");
    let lines: Vec<&str> = table.lines().collect();
    let head = lines.iter().position(|l| l.trim_start().starts_with("edge")).expect("the per-edge table");
    assert!(lines[head].contains("magnitude") && lines[head].contains("darts-im (woodbury)"), "{}", lines[head]);
    // NB201: six edges, each with the op every criterion keeps and its score.
    for (k, edge) in ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"].iter().enumerate() {
        let row = lines[head + 1 + k];
        assert!(row.trim_start().starts_with(edge), "{row}");
        assert_eq!(row.matches('[').count(), 4, "{row}");
    }
    // Each genotype is the one its selection wrote.
    for c in ["magnitude", "drop", "darts-if", "darts-im"] {
        let g = std::fs::read_to_string(out.join("select").join(c).join("genotype.txt")).unwrap();
        assert!(table.contains(&format!("  {c:<10} {}", g.trim())), "{c}: {g}\n{table}");
        assert!(out.join("select").join(c).join("scores.png").is_file());
    }
    // The fidelity summary: per criterion the Spearman ρ of its scores (select/<c>/scores.json)
    // against the measured ΔL (fidelity.json), recomputed here; and a verdict.
    let fj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fidelity.json")).unwrap()).unwrap();
    let actual: Vec<f64> = fj["actual_delta_loss"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(actual.len(), 24); // 6 edges × 4 ops other than none
    let fid = lines.iter().position(|l| l.contains("spearman ρ")).expect("the fidelity table");
    for (k, c) in ["magnitude", "drop", "darts-if", "darts-im"].iter().enumerate() {
        let cols: Vec<&str> = lines[fid + 1 + k].split_whitespace().collect();
        assert_eq!(cols[0], *c);
        let sj: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("select").join(c).join("scores.json")).unwrap())
                .unwrap();
        // Candidates in scores.json's order without `none` (op 0 of each edge).
        let scores: Vec<f64> = sj["scores"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["op"] != "none")
            .map(|r| r["score"].as_f64().unwrap())
            .collect();
        let rho = common::spearman_by_hand(&scores, &actual);
        assert_eq!(cols[1], format!("{rho:+.2}"), "{c}");
    }
    assert!(table.contains("ranks the ops closest to what removing them does"), "{table}");
}

/// A supernet too large for the machine: refused from its size before anything is allocated
/// (the weights of NB201 at C = 4096, N = 5 are 411 GiB: the convolutions scale with C², so
/// about (4096/16)² × 1,686,106 weights at C = 16 (spaces.md) × 4 bytes = 411.6 GiB; the stem and
/// classifier grow less, and the builder counts 411.3), and, under an address-space limit
/// that lets the estimate pass, the failed allocation is one line too — no panic, exit 2, no
/// run directory left behind.
#[test]
fn a_supernet_that_does_not_fit_is_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("big");
    let o = std::process::Command::new(common::bin())
        .args(["search", "--set", "space.channels=4096", "--set", "space.cells_per_stage=5", "--out"])
        .arg(&out)
        .env("DARTSIF_LOG", "warn")
        .output()
        .unwrap();
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("space.channels = 4096, space.cells_per_stage = 5: the weights alone need 411.3 GiB"),
        "{err}"
    );
    assert!(!out.exists());
    // 3.6 GiB of weights ((384/16)² × 1,686,106 × 4 bytes ≈ 3.62 GiB, as above) under a 3 GB
    // address-space limit: the size check (3 × weights against
    // the machine's memory) passes, libtorch's allocation fails.
    let script = format!(
        "ulimit -v 3000000; exec {} search --set space.channels=384 --set space.cells_per_stage=5 --out {}",
        common::bin().display(),
        out.display()
    );
    let o = std::process::Command::new("bash").args(["-c", &script]).env("DARTSIF_LOG", "warn").output().unwrap();
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("the weights alone need 3.6 GiB, which cannot be allocated here"), "{err}");
    assert!(!out.exists());
    // A step whose activations do not fit (batch 1,024 of 32×32 in one micro-batch, 5 GB):
    // mid-run, so status 1 and one line naming the settings that size a step.
    let script = format!(
        "ulimit -v 5000000; exec {} search --set space.channels=16 --set data.image_size=32 --set \
         search.batch_size=1024 --set search.micro_batch=0 --set data.train_size=4096 --set search.epochs=1 --out {}",
        common::bin().display(),
        out.display()
    );
    let o = std::process::Command::new("bash").args(["-c", &script]).env("DARTSIF_LOG", "warn").output().unwrap();
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("out of memory during the run on rank 0 (an allocation of") && err.contains("search.micro_batch"),
        "{err}"
    );
}
