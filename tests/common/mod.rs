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

/// `launch/mpirun -np NP dartsif-dist` (arguments follow).
pub fn mpirun(np: usize) -> Command {
    let mut c = Command::new(repo().join("launch/mpirun"));
    c.arg("-np").arg(np.to_string()).arg(bin());
    c
}

/// A tiny, fast search: NB201 at C=4, N=1 on 8×8 synthetic images.
pub const TINY: &[&str] = &[
    "space.channels=4",
    "space.cells_per_stage=1",
    "data.image_size=8",
    "data.train_size=256",
    "data.test_size=\"none\"",
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
    let mut cmd = if np == 0 { Command::new(bin()) } else { mpirun(np) };
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

/// Run `cmd` to completion within `secs` seconds; a run that takes longer is a hang: it is
/// terminated (SIGTERM to the launcher, which forwards it to its ranks; then SIGKILL) and the
/// test fails, instead of the suite waiting forever.
pub fn output_within(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    // Its own process group, so that a hang is ended for the launcher and every rank at once
    // (ranks left behind would keep the pipes open).
    let mut child = cmd
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dartsif-dist");
    // Drain the pipes while waiting, so that a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed().as_secs() >= secs {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            std::thread::sleep(std::time::Duration::from_secs(5));
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).to_string();
            panic!("hung: no exit within {secs} s: {cmd:?}\nstderr:\n{err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    Output { status, stdout: out_t.join().unwrap_or_default(), stderr: err_t.join().unwrap_or_default() }
}

/// Spearman's ρ written out: average ranks (ties share theirs), then Pearson's ρ of the ranks.
pub fn spearman_by_hand(a: &[f64], b: &[f64]) -> f64 {
    let rank = |v: &[f64]| -> Vec<f64> {
        v.iter()
            .map(|x| {
                let below = v.iter().filter(|y| *y < x).count() as f64;
                let equal = v.iter().filter(|y| *y == x).count() as f64;
                below + (equal + 1.0) / 2.0
            })
            .collect()
    };
    let (ra, rb) = (rank(a), rank(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// A tiny f64-selectable run: NB201 C=1, N=1, 3 classes, 8×8 (1,616 weights), on one rank.
pub fn tiny_run(dir: &Path) {
    let o = search(
        0,
        dir,
        &[
            "space.channels=1",
            "data.num_classes=3",
            "data.train_size=96",
            "search.batch_size=12",
            "search.micro_batch=6",
        ],
    );
    assert_ok(&o);
}
