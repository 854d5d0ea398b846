//! `select.track_every`: the criterion scored on the supernet during the search; its last
//! record is what `select` chooses on the finished run.

mod common;

use std::process::Command;

/// The records of `run/tracking.jsonl`.
fn tracked(run: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("tracking.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn tracking_records_the_criterion_over_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let sel = ["select.criterion=\"darts-im\"", "select.n=2", "select.batch_size=8"];
    let sets: Vec<&str> = sel.iter().copied().chain(["select.track_every=1"]).collect();
    common::assert_ok(&common::search(2, &run, &sets));
    let lines = tracked(&run);
    // TINY searches 2 epochs: one record after each.
    assert_eq!(lines.iter().map(|v| v["epoch"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1]);
    for v in &lines {
        assert_eq!(v["criterion"], "darts-im");
        v["genotype"].as_str().unwrap().parse::<dartsif::space::Nb201Genotype>().unwrap();
    }
    // The tracking figure: how far each epoch's selection is from the final one.
    for ext in ["svg", "png"] {
        assert!(std::fs::metadata(run.join(format!("tracking.{ext}"))).unwrap().len() > 1000);
    }
    // The state tracked after the last epoch is the saved supernet: the same selection.
    let out = tmp.path().join("sel");
    let mut c = Command::new(common::repo().join("launch/mpirun"));
    c.args(["-np", "2"]).arg(common::bin());
    c.args(["select", "--run", run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    for s in sel {
        c.args(["--set", s]);
    }
    common::assert_ok(&c.env("DARTSIF_LOG", "warn").output().unwrap());
    let g = std::fs::read_to_string(out.join("genotype.txt")).unwrap();
    assert_eq!(lines[1]["genotype"].as_str().unwrap(), g.trim());

    // Several N at once (select.track_n, the seed paper's Fig. 7): the N = 2 line is the
    // single-N tracking's, since the shared work equals a separate selection.
    let run2 = tmp.path().join("run2");
    let sets: Vec<&str> = sel.iter().copied().chain(["select.track_every=1", "select.track_n=[1, 2]"]).collect();
    common::assert_ok(&common::search(2, &run2, &sets));
    let many = tracked(&run2);
    let keys: Vec<(u64, u64)> = many.iter().map(|v| (v["epoch"].as_u64().unwrap(), v["n"].as_u64().unwrap())).collect();
    assert_eq!(keys, [(0, 1), (0, 2), (1, 1), (1, 2)]);
    for e in 0..2 {
        assert_eq!(many[2 * e + 1]["genotype"], lines[e]["genotype"], "epoch {e}");
    }
    assert!(run2.join("tracking.svg").is_file());

    // After the fact, on the epoch-end checkpoints (`track`, checkpoints spread over two rank
    // groups): the same records as during the search.
    let post = tmp.path().join("post");
    let mut c = Command::new(common::repo().join("launch/mpirun"));
    c.args(["-np", "2"]).arg(common::bin());
    c.args(["track", "--run", run2.to_str().unwrap(), "--out", post.to_str().unwrap()]);
    for s in sel.iter().chain(&["select.track_n=[1, 2]"]) {
        c.args(["--set", s]);
    }
    common::assert_ok(&c.env("DARTSIF_LOG", "warn").output().unwrap());
    let after = tracked(&post);
    assert_eq!(after.len(), many.len());
    for (a, b) in after.iter().zip(&many) {
        for k in ["epoch", "n", "criterion", "genotype", "genotype_json"] {
            assert_eq!(a[k], b[k], "{k}");
        }
    }
    assert!(post.join("tracking.png").is_file());
    // --every 2 keeps epoch 1 only (one N: the run's track_n cleared); a run without
    // checkpoints is refused in one line.
    let post2 = tmp.path().join("post2");
    let o = Command::new(common::bin())
        .args(["track", "--run", run2.to_str().unwrap(), "--out", post2.to_str().unwrap(), "--every", "2"])
        .args(["--set", sel[0], "--set", sel[1], "--set", sel[2], "--set", "select.track_n=[]"])
        .env("DARTSIF_LOG", "warn")
        .output()
        .unwrap();
    common::assert_ok(&o);
    assert_eq!(tracked(&post2).iter().map(|v| v["epoch"].as_u64().unwrap()).collect::<Vec<_>>(), [1]);
    assert_eq!(tracked(&post2)[0]["genotype"], lines[1]["genotype"]);
    std::fs::remove_dir_all(run2.join("checkpoints")).unwrap();
    let o = Command::new(common::bin())
        .args(["track", "--run", run2.to_str().unwrap(), "--out", tmp.path().join("p3").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stderr(&o).contains("no epoch-end checkpoint"), "{}", common::stderr(&o));
    assert!(!tmp.path().join("p3").exists());
}
