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
#[test]
fn a_search_on_the_gpu_follows_the_cpu() {
    if !tch::Cuda::is_available() {
        assert!(
            std::env::var_os("DARTSIF_REQUIRE_GPU").is_none_or(|v| v != "1"),
            "a GPU is required here (DARTSIF_REQUIRE_GPU=1) but libtorch sees none (a CPU libtorch, or no device)"
        );
        eprintln!(
            "SKIPPED a_search_on_the_gpu_follows_the_cpu: libtorch sees no GPU here (a CPU libtorch, or no \
             device); run launch/gpu-check on a CUDA machine"
        );
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
