//! The compute device of a rank: chosen once at start-up from `device` in the config and the
//! rank's node-local index (one rank per GPU), then carried by the rank's communicator
//! ([`crate::comm::Collective::device`]) and passed to whatever makes tensors (or read from a
//! tensor already there). Data batches, the supernet or network, α and every influence quantity
//! live on it; checkpoints and reports copy to the host.

use tch::Device;

use crate::choice::choice;
use crate::error::{Error, Result};

choice! {
    /// The config's `device`.
    pub enum DeviceChoice {
        /// This rank's GPU when libtorch sees one, else the CPU.
        Auto = "auto",
        Cpu = "cpu",
        /// One rank per GPU: the GPU of the rank's node-local index.
        Cuda = "cuda",
    }
}

/// The device `device = "auto" | "cpu" | "cuda"` names for a rank with node-local index
/// `local_rank` among `local_size` ranks on its node.
pub fn choose(pref: DeviceChoice, local_rank: usize, local_size: usize) -> Result<Device> {
    let cuda = tch::Cuda::is_available();
    let gpus = if cuda { tch::Cuda::device_count().max(0) as usize } else { 0 };
    match (pref, cuda) {
        (DeviceChoice::Cpu, _) | (DeviceChoice::Auto, false) => Ok(Device::Cpu),
        (DeviceChoice::Cuda, false) => Err(Error::config(
            "config",
            "device",
            "\"cuda\", but libtorch sees no GPU (a CPU libtorch, or no device visible): point LIBTORCH at a CUDA \
             build or use LIBTORCH_USE_PYTORCH=1 with torch 2.11.0+cu130",
        )),
        _ if local_size > gpus => Err(Error::config(
            "config",
            "device",
            format!("{local_size} ranks on this node but {gpus} GPUs: start one rank per GPU"),
        )),
        _ => {
            // cuDNN autotuning: every step has the same shapes, so the fastest convolution
            // algorithms are found once. (Convolutions use TF32 on Ampere and later, libtorch's
            // default; matrix products opt in with TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1.)
            tch::Cuda::cudnn_set_benchmark(true);
            Ok(Device::Cuda(local_rank))
        }
    }
}

/// Device memory in use on this rank's GPU, in MB: the driver's total − free, i.e. what
/// libtorch's caching allocator has reserved (it keeps freed blocks for reuse, so this is its
/// high-water mark) plus the CUDA context. `None` on the CPU, or in a build without the `cuda`
/// feature (libtorch's own allocator statistics are not reachable through tch).
pub fn memory_in_use_mb(device: Device) -> Option<f64> {
    let Device::Cuda(ordinal) = device else { return None };
    #[cfg(feature = "cuda")]
    {
        // Retains libtorch's primary context of this device and makes it current.
        let _ctx = cudarc::driver::CudaContext::new(ordinal).ok()?;
        let (free, total) = cudarc::driver::result::mem_get_info().ok()?;
        Some(total.saturating_sub(free) as f64 / (1u64 << 20) as f64)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        None
    }
}

/// A tensor on the host, for files and reports.
pub fn host(t: &tch::Tensor) -> tch::Tensor {
    t.to_device(Device::Cpu)
}

/// A detached, contiguous host copy (or handle, on the CPU) of `t`, for a state file.
pub fn on_host(t: &tch::Tensor) -> tch::Tensor {
    host(&t.detach()).contiguous()
}

/// Host memory for tensors: keep what libtorch frees for its next allocation.
///
/// glibc's malloc serves a tensor over its (adaptive) mmap threshold with fresh pages and hands
/// freed memory at the heap's top back to the kernel, so every forward and backward faults its
/// activations in again, page by page. Second-order products allocate and free the most
/// (reverse over forward: values, tangents and their gradients): on the NB201 benchmark
/// (`cargo bench --bench influence -- no-sm no-kfac im=10`, README) the HVP took 7.4 s with
/// glibc's defaults and 5.3 s with these settings, the gradient 2.2 and 2.0 s, peak RSS the same.
/// Tensors under 32 MiB come from the heap (the largest mmap threshold glibc accepts), freed
/// memory stays with the process, and the heap grows 256 MiB at a time. A user's own `MALLOC_*`
/// or `GLIBC_TUNABLES` settings win: nothing is changed then. Returns whether it changed them.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = std::env::vars_os().any(|(k, _)| {
            let k = k.to_string_lossy();
            k.starts_with("MALLOC_") || k == "GLIBC_TUNABLES"
        });
        if user_set {
            return false;
        }
        extern "C" {
            fn mallopt(param: std::os::raw::c_int, value: std::os::raw::c_int) -> std::os::raw::c_int;
        }
        const M_TRIM_THRESHOLD: std::os::raw::c_int = -1;
        const M_TOP_PAD: std::os::raw::c_int = -2;
        const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
        // SAFETY: mallopt only changes the allocator's parameters; called before any thread of
        // ours allocates tensors. Each returns 1 on success.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
                && mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1
                && mallopt(M_TOP_PAD, 256 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}
