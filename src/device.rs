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
        _ => Ok(Device::Cuda(local_rank)),
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
