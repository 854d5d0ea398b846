//! Runs that survive: a search stopped by SIGTERM (or losing a rank, or a NaN) resumes from its
//! checkpoint and ends bit-identical to an uninterrupted run; damaged checkpoints are skipped;
//! a resume under a conflicting config is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{assert_ok, bin, repo, stderr};
use tch::Tensor;

/// TINY runs 2 epochs × 4 steps: global steps 0..8.
fn search(np: usize, out: &Path, sets: &[&str]) -> Output {
    common::search(np, out, sets)
}

/// `search --out DIR --resume how` (the run's own config.toml), on `np` ranks.
fn resume(np: usize, out: &Path, how: &str, sets: &[&str]) -> Output {
    let mut cmd = if np == 0 {
        Command::new(bin())
    } else {
        let mut c = Command::new(repo().join("launch/mpirun"));
        c.arg("-np").arg(np.to_string()).arg(bin());
        c
    };
    cmd.args(["search", "--out", &out.display().to_string(), "--resume", how]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.env("DARTSIF_LOG", "warn").output().expect("run dartsif-dist")
}

fn tensors(dir: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(dir.join("supernet.safetensors")).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// θ, buffers, α bit for bit; the genotype; the report's per-edge numbers.
fn assert_identical(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(xa.equal(xb), "{na} differs");
    }
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    assert_eq!(read(a, "genotype.txt"), read(b, "genotype.txt"));
    // The per-epoch history is written once per epoch, as without the interruption.
    assert_eq!(read(a, "alphas.jsonl"), read(b, "alphas.jsonl"));
    assert_eq!(read(a, "genotypes.jsonl"), read(b, "genotypes.jsonl"));
    let edges = |d: &Path| serde_json::from_str::<serde_json::Value>(&read(d, "report.json")).unwrap()["edges"].clone();
    assert_eq!(edges(a), edges(b));
}

fn checkpoints(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str().map(String::from)).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn metrics_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["global_step"].as_u64().unwrap())
        .collect()
}

#[test]
fn sigterm_then_resume_equals_an_uninterrupted_search() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    assert_ok(&search(0, &full, &[]));
    // SIGTERM arrives during global step 5 (epoch 1, step 1): the search finishes that step,
    // writes checkpoint step-000000006 and exits 3.
    let o = search(0, &cut, &["fault.action=\"signal\"", "fault.at_step=5"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped by a signal at epoch 1, step 2"), "{}", stderr(&o));
    assert_eq!(checkpoints(&cut), ["step-000000004", "step-000000006"]);
    let r = resume(0, &cut, "auto", &[]);
    assert_ok(&r);
    assert_identical(&full, &cut);
    // metrics.jsonl holds each step once, in order, as the uninterrupted run's.
    assert_eq!(metrics_steps(&cut), metrics_steps(&full));
    assert_eq!(metrics_steps(&full), (0..8).collect::<Vec<_>>());
}

#[test]
fn a_signal_to_one_of_two_ranks_stops_both_and_resume_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    assert_ok(&search(2, &full, &[]));
    let o = search(2, &cut, &["fault.action=\"signal\"", "fault.rank=1", "fault.at_step=2"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(checkpoints(&cut), ["step-000000003"]);
    assert_ok(&resume(2, &cut, "auto", &[]));
    assert_identical(&full, &cut);
}

#[test]
fn a_killed_rank_ends_the_job_and_the_last_checkpoint_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    let every = "checkpoint.every_steps=2";
    assert_ok(&search(2, &full, &[every]));
    let t = Instant::now();
    let o = search(2, &cut, &[every, "fault.action=\"kill\"", "fault.rank=1", "fault.at_step=5"]);
    let took = t.elapsed();
    assert!(!o.status.success(), "the job must fail");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // Steps 0..4 completed: checkpoints after steps 2 and 4 (the epoch-end one is step 4).
    assert_eq!(checkpoints(&cut), ["step-000000002", "step-000000004"]);
    // (The resumed run reads the run's config.toml, fault included: switch it off.)
    assert_ok(&resume(2, &cut, "auto", &["fault.action=\"none\""]));
    assert_identical(&full, &cut);
}

#[test]
fn a_damaged_newest_checkpoint_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    let every = "checkpoint.every_steps=2";
    assert_ok(&search(0, &full, &[every]));
    let o = search(0, &cut, &[every, "fault.action=\"signal\"", "fault.at_step=6"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // Checkpoints after steps 2, 4 (epoch end), 6, and 7 (the signal); the newest 3 are kept.
    assert_eq!(checkpoints(&cut), ["step-000000004", "step-000000006", "step-000000007"]);
    // One flipped byte in the newest checkpoint's tensors.
    let f: PathBuf = cut.join("checkpoints/step-000000007/state.safetensors");
    let mut b = std::fs::read(&f).unwrap();
    let k = b.len() - 10;
    b[k] ^= 0x40;
    std::fs::write(&f, &b).unwrap();
    // Naming it explicitly is refused, with the reason.
    let named = resume(0, &cut, &cut.join("checkpoints/step-000000007").display().to_string(), &[]);
    assert_eq!(named.status.code(), Some(2), "{}", stderr(&named));
    assert!(stderr(&named).contains("state.safetensors: checksum"), "{}", stderr(&named));
    // `auto` falls back to the previous one.
    let r = resume(0, &cut, "auto", &["fault.action=\"none\""]);
    assert_ok(&r);
    let log = std::fs::read_to_string(cut.join("logs/rank-0.log")).unwrap();
    assert!(log.contains("skipping damaged checkpoint") && log.contains("state.safetensors: checksum"), "{log}");
    assert!(log.contains("step-000000006 (epoch 1, step 2)"), "{log}");
    assert_identical(&full, &cut);
}

#[test]
fn nan_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut");
    let o = search(0, &cut, &["checkpoint.every_steps=2", "fault.action=\"nan\"", "fault.at_step=3"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("non-finite training loss at epoch 0, step 3"), "{}", stderr(&o));
    assert_eq!(checkpoints(&cut), ["step-000000002"]);
    // The checkpoint verifies and a resume (without the fault) completes.
    assert_ok(&resume(0, &cut, "auto", &["fault.action=\"none\""]));
}

/// A NaN on one rank of two or three — the coordinator or another — stops every rank at that
/// step with one message and status 1 (under a time limit: a hang fails the test).
#[test]
fn a_nan_on_any_rank_stops_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    for (np, rank) in [(2, 1), (2, 0), (3, 2)] {
        let out = tmp.path().join(format!("nan-{np}-{rank}"));
        let mut cmd = Command::new(repo().join("launch/mpirun"));
        cmd.arg("-np").arg(np.to_string()).arg(bin()).args(["search", "--out", &out.display().to_string()]);
        let rank_set = format!("fault.rank={rank}");
        let mut sets = vec!["fault.action=\"nan\"", rank_set.as_str(), "fault.at_step=3"];
        if np == 3 {
            // Shards of 16 on 3 ranks: batch 48, 4 steps of it in each 192-image half.
            sets.extend(["search.batch_size=48", "data.train_size=384"]);
        }
        for s in common::TINY.iter().chain(&sets) {
            cmd.args(["--set", s]);
        }
        let o = common::output_within(cmd.env("DARTSIF_LOG", "warn"), 120);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{np} ranks, NaN on rank {rank}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{err}");
        let want = format!("non-finite training loss at epoch 0, step 3 (on 1 of {np} ranks)");
        assert!(err.contains(&want), "{err}");
    }
}

/// On two ranks the damaged-checkpoint warning is printed once for the job, not once per rank.
#[test]
fn a_damaged_checkpoint_is_reported_once_on_two_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut");
    let o = search(2, &cut, &["checkpoint.every_steps=2", "fault.action=\"signal\"", "fault.at_step=4"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let newest = checkpoints(&cut).pop().unwrap();
    let f: PathBuf = cut.join("checkpoints").join(&newest).join("state.safetensors");
    let mut b = std::fs::read(&f).unwrap();
    let k = b.len() - 10;
    b[k] ^= 0x40;
    std::fs::write(&f, &b).unwrap();
    let mut cmd = Command::new(repo().join("launch/mpirun"));
    cmd.args(["-np", "2"]).arg(bin()).args(["search", "--out", &cut.display().to_string(), "--resume", "auto"]);
    cmd.args(["--set", "fault.action=\"none\""]).env("DARTSIF_LOG", "warn");
    let r = common::output_within(&mut cmd, 120);
    assert_ok(&r);
    assert_eq!(stderr(&r).matches("skipping damaged checkpoint").count(), 1, "{}", stderr(&r));
}

#[test]
fn a_conflicting_config_is_refused_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut");
    let o = search(0, &cut, &["fault.action=\"signal\"", "fault.at_step=1"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    for (set, key) in
        [("search.batch_size=64", "search.batch_size"), ("space.channels=8", "space.channels"), ("seed=5", "seed")]
    {
        let r = resume(0, &cut, "auto", &[set]);
        assert_eq!(r.status.code(), Some(2), "{set}: {}", stderr(&r));
        let e = stderr(&r);
        assert!(e.contains(key) && e.contains("differs from the checkpoint"), "{set}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
    }
    let r = resume(0, &tmp.path().join("nowhere"), "auto", &[]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
}
