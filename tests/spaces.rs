//! Every search space end to end: `search`, then `select` with `magnitude` and `darts-im`, under
//! two MPI ranks on a tiny synthetic task, each writing a genotype that parses back.

mod common;

use std::path::Path;
use std::process::Command;

use dartsif::space::DartsGenotype;

fn select(np: usize, run: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(common::repo().join("launch/mpirun"));
    c.arg("-np").arg(np.to_string()).arg(common::bin());
    c.args(["select", "--run", &run.display().to_string(), "--out", &out.display().to_string()]);
    for s in ["select.n=2", "select.batch_size=8"] {
        c.args(["--set", s]);
    }
    c.args(args).env("DARTSIF_LOG", "warn").output().unwrap()
}

#[test]
fn darts_space_searches_and_selects_on_two_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let o = common::search(2, &run, &["space.name=\"darts\"", "space.channels=2", "space.layers=3"]);
    common::assert_ok(&o);
    let searched = std::fs::read_to_string(run.join("genotype.txt")).unwrap();
    let g: DartsGenotype = searched.trim().parse().unwrap_or_else(|e| panic!("{e}: {searched}"));
    assert_eq!((g.normal.len(), g.reduce.len(), g.normal_concat.clone()), (8, 8, vec![2, 3, 4, 5]));
    // α of both cell types in the state file, under DARTS's names.
    let names: Vec<String> =
        tch::Tensor::read_safetensors(run.join("supernet.safetensors")).unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"alphas_normal".to_string()) && names.contains(&"alphas_reduce".to_string()));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let edges = report["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 28);
    // Two kept edges per node: 8 chosen ops per cell type.
    assert_eq!(edges.iter().filter(|e| !e["chosen"].is_null()).count(), 16);

    for criterion in ["magnitude", "darts-im"] {
        let out = tmp.path().join(criterion);
        let o = select(2, &run, &out, &["--criterion", criterion, "--ihvp", "woodbury"]);
        common::assert_ok(&o);
        let text = std::fs::read_to_string(out.join("genotype.txt")).unwrap();
        text.trim().parse::<DartsGenotype>().unwrap_or_else(|e| panic!("{criterion}: {e}: {text}"));
        let scores: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).unwrap()).unwrap();
        assert_eq!(scores["scores"].as_array().unwrap().len(), 2 * 14 * 8, "{criterion}");
        if criterion == "magnitude" {
            assert_eq!(text, searched, "magnitude selection repeats the search's genotype");
        }
    }
}

/// Search then select (magnitude, darts-im) on two ranks; returns the three genotype texts and
/// the run's report.
fn search_and_select(space: &[&str], tables: usize, entries: usize) -> (Vec<String>, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    common::assert_ok(&common::search(2, &run, space));
    let searched = std::fs::read_to_string(run.join("genotype.txt")).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["edges"].as_array().unwrap().len(), tables, "{space:?}");
    let mut texts = vec![searched.clone()];
    for criterion in ["magnitude", "darts-im"] {
        let out = tmp.path().join(criterion);
        common::assert_ok(&select(2, &run, &out, &["--criterion", criterion, "--ihvp", "woodbury"]));
        let text = std::fs::read_to_string(out.join("genotype.txt")).unwrap();
        let scores: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).unwrap()).unwrap();
        assert_eq!(scores["scores"].as_array().unwrap().len(), entries, "{space:?} {criterion}");
        if criterion == "magnitude" {
            assert_eq!(text, searched, "magnitude selection repeats the search's genotype");
        }
        texts.push(text);
    }
    (texts, report)
}

#[test]
fn darts_s5_and_pc_darts_search_and_select_on_two_ranks() {
    // DARTS-PT's 7-op space: 2 × 14 × 7 entries, no `none` anywhere.
    let (texts, report) =
        search_and_select(&["space.name=\"darts-s5\"", "space.channels=2", "space.layers=3"], 28, 196);
    for t in &texts {
        t.trim().parse::<DartsGenotype>().unwrap_or_else(|e| panic!("{e}: {t}"));
    }
    assert_eq!(report["ops"].as_array().unwrap().len(), 7);
    // PC-DARTS (C divisible by 4): α and β are searched; the effective weights β̃·softmax(α)
    // are the magnitude scores, so an edge's scores sum to its β̃ and a node's edges to 1.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    common::assert_ok(&common::search(2, &run, &["space.name=\"pc-darts\"", "space.channels=4", "space.layers=3"]));
    let names: Vec<String> =
        tch::Tensor::read_safetensors(run.join("supernet.safetensors")).unwrap().into_iter().map(|(n, _)| n).collect();
    for n in ["alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"] {
        assert!(names.contains(&n.to_string()), "{n}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let node0: f64 = report["edges"].as_array().unwrap()[..2]
        .iter()
        .map(|e| e["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum::<f64>())
        .sum();
    assert!((node0 - 1.0).abs() < 1e-6, "{node0}");
    let alphas = std::fs::read_to_string(run.join("alphas.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(alphas.lines().last().unwrap()).unwrap();
    assert_eq!(last["alphas"]["betas_normal"].as_array().unwrap().len(), 14);
    let out = tmp.path().join("im");
    common::assert_ok(&select(2, &run, &out, &["--criterion", "darts-im", "--ihvp", "woodbury"]));
    let text = std::fs::read_to_string(out.join("genotype.txt")).unwrap();
    text.trim().parse::<DartsGenotype>().unwrap_or_else(|e| panic!("{e}: {text}"));
}

#[test]
fn nb1shot1_spaces_search_and_select_on_two_ranks() {
    use dartsif::space::Nb1Shot1Genotype;
    // Tables: ops (steps rows) + output + searched inputs; entries: α sizes 24, 26, 35.
    for (space, rows, entries) in [(1, 4 + 1 + 2, 24), (2, 4 + 1 + 3, 26), (3, 5 + 1 + 4, 35)] {
        let name = format!("space.name=\"nb1shot1-s{space}\"");
        let (texts, _) = search_and_select(&[&name, "space.channels=2", "space.layers=3"], rows, entries);
        for t in &texts {
            let g: Nb1Shot1Genotype = t.trim().parse().unwrap_or_else(|e| panic!("{e}: {t}"));
            assert_eq!(g.matrix.len(), 7, "NB101 format has 7 nodes");
            // The output always has its required parents (2, 3, 2).
            assert_eq!(g.parents()[6].len(), [2, 3, 2][space - 1], "{t}");
        }
    }
}
