//! DARTS-PT (`select --criterion darts-pt`): every decision made and logged, the rule followed,
//! the DARTS topology decisions, an influence rule, and a signal-interrupted selection resuming
//! to the same decisions and genotype.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use dartsif::space::{DartsGenotype, Nb201Genotype, NB201_OPS};

fn select(np: usize, run: &Path, out: &Path, sets: &[&str], extra: &[&str]) -> Output {
    let mut c = Command::new(common::repo().join("launch/mpirun"));
    c.arg("-np").arg(np.to_string()).arg(common::bin());
    c.args(["select", "--run", &run.display().to_string(), "--out", &out.display().to_string()]);
    c.args(["--criterion", "darts-pt"]);
    for s in ["select.pt_interval=1", "select.n=2", "select.batch_size=8"].iter().chain(sets) {
        c.args(["--set", s]);
    }
    c.args(extra).env("DARTSIF_LOG", "warn").output().unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn nb201_darts_pt_decides_every_edge_by_accuracy_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    common::assert_ok(&common::search(2, &run, &[]));
    let out = tmp.path().join("pt");
    common::assert_ok(&select(2, &run, &out, &[], &[]));
    let log = lines(&out.join("decisions.jsonl"));
    // 6 decisions, one per tuning epoch 0..5 (pt_interval 1), each edge exactly once.
    assert_eq!(log.len(), 6);
    let mut edges: Vec<String> = log.iter().map(|d| d["edge"].as_str().unwrap().to_string()).collect();
    edges.sort();
    assert_eq!(edges, ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]);
    let text = std::fs::read_to_string(out.join("genotype.txt")).unwrap();
    let g: Nb201Genotype = text.trim().parse().unwrap();
    for (k, d) in log.iter().enumerate() {
        assert_eq!(d["epoch"], k);
        let cands = d["candidates"].as_array().unwrap();
        assert_eq!(cands.len(), 4, "every op but none is masked in turn");
        // The chosen op is the one whose masking gave the lowest accuracy (first on ties).
        let mut best = &cands[0];
        for c in cands {
            if c["masked_acc"].as_f64().unwrap() < best["masked_acc"].as_f64().unwrap() {
                best = c;
            }
        }
        assert_eq!(d["chosen"], best["op"], "{d}");
        // … and it is the genotype's op on that edge.
        let e = ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"].iter().position(|x| *x == d["edge"]).unwrap();
        assert_eq!(d["chosen"], NB201_OPS[g.ops[e]]);
    }
    let epochs = lines(&out.join("metrics.jsonl")).iter().filter(|v| v["kind"] == "epoch").count();
    assert_eq!(epochs, 6, "pt_interval·(6 − 1) + 1 tuning epochs");

    // SIGTERM-like stop in tuning epoch 2 (global step 9 of 4-step epochs), then resume.
    let cut = tmp.path().join("cut");
    let fault = ["fault.action=\"signal\"", "fault.phase=\"search\"", "fault.at_step=9"];
    let o = select(2, &run, &cut, &fault, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(lines(&cut.join("decisions.jsonl")).len() == 3, "decisions of epochs 0-2 made before the stop");
    common::assert_ok(&select(2, &run, &cut, &[], &["--resume", "auto"]));
    assert_eq!(std::fs::read_to_string(cut.join("genotype.txt")).unwrap(), text);
    assert_eq!(lines(&cut.join("decisions.jsonl")), log, "the same decisions with the same measurements");
}

#[test]
fn darts_pt_topology_and_influence_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    common::assert_ok(&common::search(2, &run, &["space.name=\"darts-s5\"", "space.channels=2", "space.layers=3"]));
    let out = tmp.path().join("pt");
    common::assert_ok(&select(2, &run, &out, &["search.steps_per_epoch=1"], &[]));
    let log = lines(&out.join("decisions.jsonl"));
    // 14 events × 2 cells of op decisions, then 3 × 2 input decisions.
    assert_eq!(log.iter().filter(|d| d["kind"] == "op").count(), 28);
    let inputs: Vec<&serde_json::Value> = log.iter().filter(|d| d["kind"] == "inputs").collect();
    assert_eq!(inputs.len(), 6);
    let text = std::fs::read_to_string(out.join("genotype.txt")).unwrap();
    let g: DartsGenotype = text.trim().parse().unwrap();
    for d in inputs {
        assert_eq!(d["kept"].as_array().unwrap().len(), 2);
        let node = d["node"].as_u64().unwrap() as usize; // state index 3..5
        let pairs = if d["cell"] == "normal" { &g.normal } else { &g.reduce };
        let mut from: Vec<String> =
            pairs[2 * (node - 2)..2 * (node - 2) + 2].iter().map(|(_, j)| format!("{node}<-{j}")).collect();
        from.sort();
        let mut kept: Vec<String> =
            d["kept"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect();
        kept.sort();
        assert_eq!(from, kept, "{d}");
    }
    // Influence rule on NB201: each decision is the best darts-im score of its edge.
    let run201 = tmp.path().join("run201");
    common::assert_ok(&common::search(2, &run201, &[]));
    let out = tmp.path().join("im");
    common::assert_ok(&select(2, &run201, &out, &["select.pt_rule=\"darts-im\"", "select.ihvp=\"woodbury\""], &[]));
    for d in lines(&out.join("decisions.jsonl")) {
        let cands = d["candidates"].as_array().unwrap();
        let best =
            cands.iter().max_by(|a, b| a["score"].as_f64().unwrap().total_cmp(&b["score"].as_f64().unwrap())).unwrap();
        assert_eq!(d["chosen"], best["op"], "{d}");
    }
}

/// `search` with `select.after_search` and DARTS-PT, stopped by a signal during the projection's
/// tuning: `search --resume auto` finishes the search from its last checkpoint and continues the
/// selection from its own, to the decisions and architecture of an uninterrupted run.
#[test]
fn search_then_darts_pt_resumes_into_its_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let pt = ["select.after_search=true", "select.criterion=\"darts-pt\"", "select.pt_interval=1"];
    let full = tmp.path().join("full");
    common::assert_ok(&common::search(2, &full, &pt));
    // The search has global steps 0-7; tuning restarts at 0, so step 9 is in tuning epoch 2.
    let cut = tmp.path().join("cut");
    let fault = ["fault.action=\"signal\"", "fault.phase=\"search\"", "fault.at_step=9"];
    let sets: Vec<&str> = pt.iter().chain(&fault).copied().collect();
    let o = common::search(2, &cut, &sets);
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(cut.join("STOPPED").is_file(), "rank 0 marks the stop for batch scripts");
    let mut c = Command::new(common::repo().join("launch/mpirun"));
    c.args(["-np", "2"]).arg(common::bin());
    c.args(["search", "--out", &cut.display().to_string(), "--resume", "auto"]);
    common::assert_ok(&c.env("DARTSIF_LOG", "warn").output().unwrap());
    assert!(!cut.join("STOPPED").exists());
    for f in ["genotype.txt", "decisions.jsonl"] {
        let a = std::fs::read_to_string(full.join("select").join(f)).unwrap();
        let b = std::fs::read_to_string(cut.join("select").join(f)).unwrap();
        assert_eq!(a, b, "select/{f}");
    }
}

/// The seed paper's Table 2 rows on NAS-Bench-1Shot1: DARTS-PT (choice blocks' ops, then parent
/// rows) and PC-DARTS (`pc-nb1shot1-s1`: ops on a quarter of the channels) with DARTS-PT and
/// DARTS-IM selections, on 2 ranks. Every block gets one op, every parent row keeps as many
/// parents as the space's layout, and the genotype is the one those decisions describe.
#[test]
fn nb1shot1_darts_pt_and_pc_darts_pt_and_im() {
    use dartsif::space::{Nb1Shot1Layout, NB1SHOT1_OPS};
    let tmp = tempfile::tempdir().unwrap();
    let layout = Nb1Shot1Layout::space(1);
    for space in ["nb1shot1-s1", "pc-nb1shot1-s1"] {
        let run = tmp.path().join(space);
        let sets = [format!("space.name=\"{space}\""), "space.channels=4".into(), "space.layers=3".into()];
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        common::assert_ok(&common::search(2, &run, &sets));
        let out = tmp.path().join(format!("{space}-pt"));
        common::assert_ok(&select(2, &run, &out, &["search.steps_per_epoch=1"], &[]));
        let log = lines(&out.join("decisions.jsonl"));
        let ops: Vec<&serde_json::Value> = log.iter().filter(|d| d["kind"] == "op").collect();
        let parents: Vec<&serde_json::Value> = log.iter().filter(|d| d["kind"] == "parents").collect();
        assert_eq!((ops.len(), parents.len()), (4, 3), "{space}");
        let g: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).unwrap()).unwrap();
        let text = g["genotype"].as_str().unwrap().to_string();
        for d in &ops {
            assert!(NB1SHOT1_OPS.contains(&d["chosen"].as_str().unwrap()), "{d}");
        }
        for d in &parents {
            let keep = match d["cell"].as_str().unwrap() {
                "output" => layout.output_parents,
                name => layout.parents[name.trim_start_matches("inputs").parse::<usize>().unwrap() - 1],
            };
            assert_eq!(d["kept"].as_array().unwrap().len(), keep, "{d}");
            // One removal round per parent dropped, each trying every remaining parent.
            let rounds = d["rounds"].as_array().unwrap();
            let width = |r: &serde_json::Value| r.as_array().unwrap().len();
            assert!(rounds.iter().zip(0..).all(|(r, i)| width(r) == width(&rounds[0]) - i), "{d}");
        }
        // The chosen ops appear in the genotype's op list in block order.
        let chosen: Vec<String> = {
            let mut v: Vec<(String, String)> = ops
                .iter()
                .map(|d| (d["edge"].as_str().unwrap().to_string(), d["chosen"].as_str().unwrap().to_string()))
                .collect();
            v.sort();
            v.into_iter().map(|(_, o)| o).collect()
        };
        for o in &chosen {
            assert!(text.contains(o.as_str()), "{text} lacks {o}");
        }
        if space.starts_with("pc-") {
            // PC-DARTS-IM: the influence selection on the PC-DARTS supernet.
            let im = tmp.path().join("pc-im");
            let o = Command::new(common::bin())
                .args(["select", "--run", &run.display().to_string(), "--out", &im.display().to_string()])
                .args(["--criterion", "darts-im", "--set", "select.n=2", "--set", "select.batch_size=8"])
                .env("DARTSIF_LOG", "warn")
                .output()
                .unwrap();
            common::assert_ok(&o);
            assert!(!std::fs::read_to_string(im.join("genotype.txt")).unwrap().trim().is_empty());
        }
    }
}
