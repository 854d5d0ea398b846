//! Helpers for tests that drive the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dartsif-dist"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tiny, fast search: NB201 at C=4, N=1 on 8×8 synthetic images.
pub const TINY: &[&str] = &[
    "space.channels=4",
    "space.cells_per_stage=1",
    "data.image_size=8",
    "data.train_size=256",
    "data.test_size=0",
    "search.epochs=2",
    "search.steps_per_epoch=4",
    "search.batch_size=32",
    "search.micro_batch=16",
    "output.log_every=1",
];

/// `dartsif-dist search` with `sets` overrides (after TINY) into `out`, on `np` MPI ranks
/// (np = 0: no launcher, local backend).
pub fn search(np: usize, out: &Path, sets: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["search".into(), "--out".into(), out.display().to_string()];
    for s in TINY.iter().chain(sets) {
        args.push("--set".into());
        args.push(s.to_string());
    }
    let mut cmd = if np == 0 {
        Command::new(bin())
    } else {
        let mut c = Command::new(repo().join("launch/mpirun"));
        c.arg("-np").arg(np.to_string()).arg(bin());
        c
    };
    cmd.args(&args).env("DARTSIF_LOG", "warn");
    cmd.output().expect("run dartsif-dist")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn assert_ok(o: &Output) {
    assert!(o.status.success(), "exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), stdout(o), stderr(o));
}
