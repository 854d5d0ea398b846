//! Data parallelism under MPI: the same search on 1 and 2 ranks gives the same θ, α and genotype.
//! (A popular framework once exported different architectures per rank because α was not kept
//! in sync; here α's gradient is all-reduced with θ's, and every rank reports its genotype.)

mod common;

use std::collections::HashMap;
use tch::Tensor;

fn load(dir: &std::path::Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("supernet.safetensors")).unwrap().into_iter().collect()
}

/// max |a − b| / max |a|
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).abs().max().double_value(&[]);
    let s = a.abs().max().double_value(&[]).max(1e-12);
    d / s
}

fn rank_genotypes(dir: &std::path::Path, np: usize) -> Vec<String> {
    (0..np)
        .map(|r| {
            let log = std::fs::read_to_string(dir.join(format!("logs/rank-{r}.log"))).unwrap();
            log.lines()
                .find_map(|l| {
                    l.split_once("selected genotype (criterion magnitude): ").map(|(_, g)| g.trim().to_string())
                })
                .unwrap_or_else(|| panic!("rank {r} logged no genotype:\n{log}"))
        })
        .collect()
}

#[test]
fn one_and_two_ranks_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("np1"), tmp.path().join("np2"));
    // A larger α learning rate so α moves visibly in 8 steps (and a desync would show).
    let sets = ["search.arch.lr=0.05", "seed=11"];
    let o1 = common::search(1, &d1, &sets);
    common::assert_ok(&o1);
    let o2 = common::search(2, &d2, &sets);
    common::assert_ok(&o2);

    let (s1, s2) = (load(&d1), load(&d2));
    assert_eq!(s1.len(), s2.len());
    let alpha0 = Tensor::read_safetensors(d1.join("supernet.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "arch_parameters")
        .unwrap()
        .1;
    // α left its 1e-3·randn initialisation: after 8 Adam steps of lr 0.05 entries are O(0.1).
    assert!(alpha0.abs().max().double_value(&[]) > 0.05);
    let mut worst = (String::new(), 0.0f64);
    // θ and α; BatchNorm running buffers follow rank 0's micro-batches (as in DDP) and are not
    // used by the search, which normalises with batch statistics.
    for (name, a) in s1.iter().filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var")) {
        let r = rel_diff(a, &s2[name]);
        if r > worst.1 {
            worst = (name.clone(), r);
        }
    }
    // Same global batches, same BatchNorm groups (micro-batch 16); only the summation order of
    // the gradient all-reduce differs (f32 rounding, ~1e-7 per step).
    eprintln!("largest relative difference between 1 and 2 ranks: {:e} in {}", worst.1, worst.0);
    assert!(worst.1 < 1e-5, "largest relative difference {} in {}", worst.1, worst.0);

    let g1 = std::fs::read_to_string(d1.join("genotype.txt")).unwrap();
    let g2 = std::fs::read_to_string(d2.join("genotype.txt")).unwrap();
    assert_eq!(g1, g2);
    let ranks = rank_genotypes(&d2, 2);
    assert_eq!(ranks, vec![g1.trim().to_string(); 2], "ranks report different genotypes");
    // Both runs also print the genotype on stdout, once (rank 0).
    assert_eq!(common::stdout(&o2).trim(), g1.trim());
}

#[test]
fn three_ranks_refuse_an_indivisible_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("np3");
    let o = common::search(3, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    let err = common::stderr(&o);
    assert!(err.contains("search.batch_size: 32 is not divisible by the 3 ranks"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "printed once, not per rank:\n{err}");
    assert!(!out.exists());
}

#[test]
fn collectives_on_three_ranks() {
    let o = common::mpirun(3).arg("check-comm").output().unwrap();
    common::assert_ok(&o);
    assert_eq!(common::stdout(&o).trim(), "collectives ok: 3 ranks, backend mpi");
}

/// The device path of GPU runs (flat buffers through a link with its own communicator, fenced,
/// polled; groups split off it) with its CPU double: `check-comm` on 3 ranks counts the calls
/// that reached the link, and a 2-rank search through it is bit-identical to one through MPI
/// (the double's transport is the same MPI all-reduce, so only plumbing could differ).
#[test]
fn the_device_path_under_its_cpu_double() {
    let o = common::mpirun(3).arg("check-comm").env("DARTSIF_DEVICE_LINK", "host").output().unwrap();
    common::assert_ok(&o);
    let out = common::stdout(&o);
    assert!(out.starts_with("collectives ok: 3 ranks, backend host-link"), "{out}");
    // On the world: a mean and a sum of tensors, a broadcast (the group's call is its own).
    assert!(out.contains("(3 device calls on rank 0)"), "{out}");

    let tmp = tempfile::tempdir().unwrap();
    let (plain, linked) = (tmp.path().join("mpi"), tmp.path().join("link"));
    let sets = ["search.arch.lr=0.05", "seed=11"];
    common::assert_ok(&common::search(2, &plain, &sets));
    let mut cmd = common::mpirun(2);
    cmd.args(["search", "--out"]).arg(&linked);
    for s in common::TINY.iter().chain(&sets) {
        cmd.args(["--set", s]);
    }
    let o = cmd.env("DARTSIF_LOG", "warn").env("DARTSIF_DEVICE_LINK", "host").output().unwrap();
    common::assert_ok(&o);
    let (a, b) = (load(&plain), load(&linked));
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs between the MPI and the device-link search");
    }
    let calls = std::fs::read_to_string(linked.join("logs/rank-1.log")).unwrap();
    assert!(calls.contains("device collectives:"), "{calls}");
}

fn alpha(dir: &std::path::Path) -> Tensor {
    load(dir).remove("arch_parameters").unwrap()
}

/// Second-order DARTS is data-parallel too: each of its four gradients (θ step, validation at
/// θ', the two perturbed or the double-backward mixed term) is all-reduced, so 1 and 2 ranks
/// agree; it moves α differently from first order; and `search.arch_start_epoch` freezes α.
#[test]
fn second_order_and_frozen_alpha_on_one_and_two_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let base = ["search.arch.lr=0.05", "seed=11"];
    let run = |name: &str, np: usize, extra: &[&str]| -> Tensor {
        let dir = tmp.path().join(format!("{name}-{np}"));
        let sets: Vec<&str> = base.iter().chain(extra).copied().collect();
        common::assert_ok(&common::search(np, &dir, &sets));
        alpha(&dir)
    };
    let first = run("first", 1, &[]);
    for strategy in ["search.strategy=\"darts-2nd-exact\"", "search.strategy=\"darts-2nd\""] {
        let a1 = run(strategy, 1, &[strategy]);
        let a2 = run(strategy, 2, &[strategy]);
        // f32 summation order differs between 1 and 2 ranks; the finite difference divides
        // by 2R (R = 0.01/‖v‖), amplifying it ~100×: 1e-3 relative still catches any missing
        // all-reduce (which would leave the halves' gradients, off by O(1)).
        let r = rel_diff(&a1, &a2);
        assert!(r < 1e-3, "{strategy}: 1 vs 2 ranks differ by {r}");
        let moved = rel_diff(&first, &a1);
        assert!(moved > 1e-3, "{strategy}: α equals first order's ({moved})");
    }
    // α frozen for both epochs: it stays at its 1e-3·randn initialisation.
    let frozen = run("frozen", 2, &["search.arch_start_epoch=2"]);
    assert!(frozen.abs().max().double_value(&[]) < 0.01);
    assert!(first.abs().max().double_value(&[]) > 0.05);
}
