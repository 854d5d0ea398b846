//! The supernet's state file: θ, BatchNorm buffers and α as safetensors, written atomically.
//!
//! Tensor names: θ and buffers use the reference implementation's state-dict names (for NB201,
//! AutoDL's `TinyNetworkDarts`: `stem.0.weight`, `cells.0.edges.1<-0.3.op.1.weight`, ...,
//! `classifier.bias`); α uses the reference names too (`arch_parameters` for NB201). A
//! PyTorch user loads the file with `safetensors.torch.load_file`.

use std::path::Path;

use tch::Tensor;

use super::Supernet;
use crate::device::on_host;
use crate::error::{Error, Result};

/// (name, tensor) pairs of the whole supernet state, sharing storage with it.
pub fn live_tensors(net: &dyn Supernet, alphas: &[Tensor]) -> Vec<(String, Tensor)> {
    let mut named = net.params().named();
    for (name, alpha) in net.spec().alpha_names().into_iter().zip(alphas) {
        named.push((name, alpha.shallow_clone()));
    }
    named
}

/// (name, tensor) pairs of the whole supernet state (detached copies' handles).
pub fn supernet_tensors(net: &dyn Supernet, alphas: &[Tensor]) -> Vec<(String, Tensor)> {
    live_tensors(net, alphas).into_iter().map(|(n, t)| (n, on_host(&t))).collect()
}

/// Save θ, buffers and α to `path` (safetensors), atomically.
pub fn save_supernet(net: &dyn Supernet, alphas: &[Tensor], path: &Path) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |tmp| Ok(Tensor::write_safetensors(&supernet_tensors(net, alphas), tmp)?))
}

/// Load a supernet file written by [`save_supernet`] into `net` and `alphas` (names and shapes
/// must match; values are converted to the live tensors' precision).
pub fn load_supernet(net: &dyn Supernet, alphas: &[Tensor], path: &Path) -> Result<()> {
    let stored: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| Error::Path { path: path.to_path_buf(), msg: format!("cannot read supernet state: {e}") })?
        .into_iter()
        .collect();
    let _g = tch::no_grad_guard();
    for (name, mut t) in live_tensors(net, alphas) {
        let src = stored
            .get(&name)
            .ok_or_else(|| Error::Path { path: path.to_path_buf(), msg: format!("no tensor named {name:?}") })?;
        if src.size() != t.size() {
            return Err(Error::Path {
                path: path.to_path_buf(),
                msg: format!("tensor {name:?} has shape {:?}, expected {:?}", src.size(), t.size()),
            });
        }
        t.copy_(src);
    }
    Ok(())
}
