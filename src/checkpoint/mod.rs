//! State files: the supernet (θ, BatchNorm buffers, α) as safetensors, written atomically.
//!
//! Tensor names: θ and buffers use the reference implementation's state-dict names (for NB201,
//! AutoDL's `TinyNetworkDarts`: `stem.0.weight`, `cells.0.edges.1<-0.3.op.1.weight`, ...,
//! `classifier.bias`); α uses the reference names too (`arch_parameters` for NB201). A
//! PyTorch user loads the file with `safetensors.torch.load_file`.

use std::path::Path;

use tch::Tensor;

use crate::error::{Error, Result};
use crate::search::SearchState;
use crate::supernet::Supernet;

/// Write `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = tmp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn tmp_path(path: &Path) -> std::path::PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// (name, tensor) pairs of the whole supernet state, sharing storage with it.
fn live_tensors(net: &dyn Supernet, alphas: &[Tensor]) -> Vec<(String, Tensor)> {
    let mut named = net.params().named();
    for (cell, alpha) in net.spec().cells.iter().zip(alphas) {
        named.push((cell.alpha_name.clone(), alpha.shallow_clone()));
    }
    named
}

/// (name, tensor) pairs of the whole supernet state (detached copies' handles).
pub fn supernet_tensors(state: &SearchState) -> Vec<(String, Tensor)> {
    live_tensors(state.net.as_ref(), &state.alphas).into_iter().map(|(n, t)| (n, t.detach().contiguous())).collect()
}

/// Save θ, buffers and α to `path` (safetensors), atomically.
pub fn save_supernet(state: &SearchState, path: &Path) -> Result<()> {
    let tmp = tmp_path(path);
    Tensor::write_safetensors(&supernet_tensors(state), &tmp)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
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
