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
