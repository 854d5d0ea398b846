//! GPU checks. They need a libtorch that sees a GPU; elsewhere they print a `SKIPPED` line
//! saying why, and fail instead when `DARTSIF_REQUIRE_GPU=1` (set it where a GPU exists:
//! `launch/gpu-check` does, and runs them with the NCCL build and a timing table).

mod common;

use tch::Tensor;

fn alpha(dir: &std::path::Path) -> Tensor {
    Tensor::read_safetensors(dir.join("supernet.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "arch_parameters")
        .unwrap()
        .1
}

/// The same search on the GPU and on the CPU: weights and α are drawn on the host, so both
/// start identical; after 8 steps α agrees to 1e-3 relative (cuDNN and oneDNN sum in different
/// orders, f32).
/// Whether the GPU tests can run here; prints a `SKIPPED` line saying why not, and fails
/// instead when `DARTSIF_REQUIRE_GPU=1`.
fn gpu_here(test: &str, need_nccl: bool) -> bool {
    let why = if !tch::Cuda::is_available() {
        "libtorch sees no GPU here (a CPU libtorch, or no device)"
    } else if need_nccl && !cfg!(feature = "cuda") {
        "this test binary was built without --features cuda (no NCCL)"
    } else {
        return true;
    };
    assert!(
        std::env::var_os("DARTSIF_REQUIRE_GPU").is_none_or(|v| v != "1"),
        "a GPU is required here (DARTSIF_REQUIRE_GPU=1) but {why}"
    );
    eprintln!("SKIPPED {test}: {why}; run launch/gpu-check on a CUDA machine");
    false
}

/// NCCL on one rank is a real call: `check-comm` all-reduces and broadcasts device tensors and
/// splits a group through `ncclAllReduce`, `ncclBroadcast` and `ncclCommSplit`, compares the
/// results with the host's arithmetic, and fails when no call reached NCCL.
#[test]
fn nccl_is_called_on_one_rank() {
    if !gpu_here("nccl_is_called_on_one_rank", true) {
        return;
    }
    let o = common::mpirun(1).arg("check-comm").env("DARTSIF_LOG", "warn").output().unwrap();
    common::assert_ok(&o);
    let out = common::stdout(&o);
    assert!(out.starts_with("collectives ok: 1 ranks, backend nccl (3 device calls on rank 0)"), "{out}");
}

#[test]
fn a_search_on_the_gpu_follows_the_cpu() {
    if !gpu_here("a_search_on_the_gpu_follows_the_cpu", false) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cpu, gpu) = (tmp.path().join("cpu"), tmp.path().join("gpu"));
    common::assert_ok(&common::search(0, &cpu, &["device=\"cpu\"", "search.arch.lr=0.05"]));
    common::assert_ok(&common::search(0, &gpu, &["device=\"cuda\"", "search.arch.lr=0.05"]));
    let (a, b) = (alpha(&cpu), alpha(&gpu));
    let rel = (&a - &b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]);
    assert!(rel < 1e-3, "GPU α differs from CPU α by {rel}");
    let cfg = std::fs::read_to_string(gpu.join("config.toml")).unwrap();
    assert!(cfg.contains("device = \"cuda\""), "{cfg}");
}
