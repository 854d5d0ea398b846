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
