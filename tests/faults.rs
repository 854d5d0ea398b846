//! Every injected fault on every rank of two- and three-rank jobs ends the whole job with one
//! message and the documented status: a NaN (status 1, "non-finite …") and a signal (status 3,
//! a checkpoint) in a search, a training run and a DARTS-IF selection, and a signal in ENAS's
//! controller phase. Each run has a time limit, so that a rank left waiting in a collective
//! fails the test instead of hanging it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const LIMIT_S: u64 = 120;

fn with_sets(mut cmd: Command, sets: &[String]) -> Output {
    for s in sets {
        cmd.args(["--set", s]);
    }
    common::output_within(cmd.env("DARTSIF_LOG", "warn"), LIMIT_S)
}

fn fault(phase: &str, action: &str, rank: usize, at: usize) -> Vec<String> {
    vec![
        format!("fault.phase=\"{phase}\""),
        format!("fault.action=\"{action}\""),
        format!("fault.rank={rank}"),
        format!("fault.at_step={at}"),
    ]
}

fn check(o: &Output, action: &str, what: &str) {
    let err = common::stderr(o);
    match action {
        "nan" => {
            assert_eq!(o.status.code(), Some(1), "{what}: {err}");
            assert_eq!(err.matches("error:").count(), 1, "{what}: one message expected:\n{err}");
            assert!(err.contains("non-finite"), "{what}: {err}");
        }
        "signal" => {
            assert_eq!(o.status.code(), Some(3), "{what}: {err}");
            assert!(err.contains("stopped by a signal"), "{what}: {err}");
        }
        _ => unreachable!(),
    }
}

/// Batch sizes that split over 2 and 3 ranks in shards of whole micro-batches.
fn search_sets(np: usize) -> Vec<String> {
    let mut v: Vec<String> = common::TINY.iter().map(|s| s.to_string()).collect();
    if np == 3 {
        v.extend(["search.batch_size=48".into(), "data.train_size=384".into()]);
    }
    v
}

#[test]
fn search_faults_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    for np in [2, 3] {
        for rank in 0..np {
            for action in ["nan", "signal"] {
                let out = tmp.path().join(format!("s-{np}-{rank}-{action}"));
                let mut cmd = common::mpirun(np);
                cmd.args(["search", "--out"]).arg(&out);
                let mut sets = search_sets(np);
                sets.extend(fault("search", action, rank, 3));
                check(&with_sets(cmd, &sets), action, &format!("search, {np} ranks, {action} on rank {rank}"));
            }
        }
    }
}

/// ENAS's controller phase: a signal on any rank during it stops every rank at the next update.
#[test]
fn controller_phase_signals_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    for np in [2, 3] {
        for rank in 0..np {
            let out = tmp.path().join(format!("c-{np}-{rank}"));
            let mut cmd = common::mpirun(np);
            cmd.args(["search", "--out"]).arg(&out);
            let mut sets = search_sets(np);
            sets.extend(
                ["search.strategy=\"enas\"", "search.enas.controller_steps=2", "search.enas.aggregate=2"]
                    .map(String::from),
            );
            sets.extend(fault("controller", "signal", rank, 0));
            let o = with_sets(cmd, &sets);
            let what = format!("controller phase, {np} ranks, signal on rank {rank}");
            check(&o, "signal", &what);
            assert!(common::stderr(&o).contains("epoch 0, controller phase"), "{what}: {}", common::stderr(&o));
        }
    }
}

#[test]
fn training_faults_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let genotype = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|";
    for np in [2, 3] {
        for rank in 0..np {
            for action in ["nan", "signal"] {
                let out = tmp.path().join(format!("t-{np}-{rank}-{action}"));
                let mut cmd = common::mpirun(np);
                cmd.args(["train", "--genotype", genotype, "--out"]).arg(&out);
                let mut sets: Vec<String> = [
                    "data.image_size=8",
                    "data.train_size=96",
                    "data.test_size=\"none\"",
                    "search.batch_size=24",
                    "search.micro_batch=4",
                    "train.epochs=1",
                    "train.batch_size=24",
                    "train.micro_batch=4",
                    "train.channels=4",
                    "train.layers=1",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                sets.extend(fault("train", action, rank, 2));
                check(&with_sets(cmd, &sets), action, &format!("train, {np} ranks, {action} on rank {rank}"));
            }
        }
    }
}

#[test]
fn selection_faults_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    common::tiny_run(&run);
    for np in [2, 3] {
        for rank in 0..np {
            for action in ["nan", "signal"] {
                let out = tmp.path().join(format!("x-{np}-{rank}-{action}"));
                let mut cmd = common::mpirun(np);
                cmd.args(["select", "--run"]).arg(&run).arg("--out").arg(&out);
                cmd.args(["--criterion", "darts-if", "--ihvp", "woodbury"]);
                let mut sets: Vec<String> = vec!["select.n=2".into(), "select.batch_size=8".into()];
                sets.extend(fault("select", action, rank, 1));
                check(&with_sets(cmd, &sets), action, &format!("select, {np} ranks, {action} on rank {rank}"));
                if action == "signal" {
                    assert!(Path::new(&out).join("checkpoints").is_dir(), "select on {np}: no progress checkpoint");
                }
            }
        }
    }
}

/// The device path (NCCL on GPUs) under its CPU double (`DARTSIF_DEVICE_LINK=host`): a link
/// that reports an asynchronous error, or never completes (a peer that stopped taking part),
/// on one rank of a search ends the whole job with one message naming the rank, status 1 — the
/// communicator aborted, then the MPI job. The hang ends at `DARTSIF_COMM_TIMEOUT_S`.
#[test]
fn device_link_faults_end_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    for (np, fault, rank) in [(2, "async-error", 1), (3, "hang", 2), (2, "refused", 0)] {
        let out = tmp.path().join(format!("d-{np}-{fault}-{rank}"));
        let mut cmd = common::mpirun(np);
        cmd.args(["search", "--out"]).arg(&out);
        cmd.env("DARTSIF_DEVICE_LINK", "host")
            .env("DARTSIF_DEVICE_LINK_FAULT", format!("{fault}@{rank}"))
            .env("DARTSIF_COMM_TIMEOUT_S", "3");
        let o = with_sets(cmd, &search_sets(np));
        let err = common::stderr(&o);
        let what = format!("{np} ranks, {fault} on rank {rank}");
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{what}: one message expected:\n{err}");
        let expect = match fault {
            "async-error" => "host-link broadcast failed: ncclRemoteError",
            "hang" => "host-link broadcast did not complete within 3 s",
            _ => "ncclInvalidUsage",
        };
        assert!(err.contains(expect), "{what}: {err}");
        assert!(err.contains(&format!("on rank {rank} of {np}; ending the job")), "{what}: {err}");
    }
}
