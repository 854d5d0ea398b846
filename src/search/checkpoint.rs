//! The search's checkpoints (of a search or a DARTS-PT selection): θ, buffers, α, both
//! optimisers' state and where the epoch stands, in a [`crate::checkpoint::store`] directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::SearchState;
use crate::checkpoint::{check_same, pinned, store, stored_config, write_json, Stored, META, STATE};
use crate::config::Config;
use crate::device::on_host;
use crate::error::Result;
use crate::supernet::state::live_tensors;

/// Load a search checkpoint (of a search or a DARTS-PT selection) after checking it against
/// `cfg`; a mid-epoch checkpoint also restores the epoch's progress.
pub fn resume_search(dir: &Path, cfg: &Config, world: usize, state: &mut SearchState) -> Result<SearchMeta> {
    let meta = read_meta(dir)?;
    check_compatible(&meta, cfg, world, dir)?;
    let meta = load_search(dir, state)?;
    if meta.step > 0 {
        state.progress =
            Some(super::EpochProgress { step: meta.step, train: meta.train, arch: meta.arch, seconds: meta.seconds });
    }
    Ok(meta)
}

/// Where a search stands inside an epoch: what a checkpoint needs beyond the tensors. All
/// randomness in dartsif-dist is keyed by (seed, purpose, epoch, index) — data order,
/// augmentation, evaluation batches — so there is no generator state to save: the position is
/// enough to continue bit-identically.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchMeta {
    pub kind: String,
    /// Epoch in progress (`step` of its steps done); `step` 0 means it has not started.
    pub epoch: usize,
    pub step: usize,
    pub global_step: usize,
    /// Adam's step count (its moment buffers are tensors).
    pub adam_step: u64,
    /// Partial sums (loss, correct, count) of the epoch's θ and α batches so far.
    pub train: [f64; 3],
    pub arch: [f64; 3],
    /// Training seconds of the epoch so far (for its images/s).
    pub seconds: f64,
    pub world_size: usize,
    /// The resolved config of the run that wrote the checkpoint (TOML).
    pub config: String,
    /// Rows fixed by progressive selection (`darts-pt`); empty in a search.
    #[serde(default)]
    pub projection: crate::supernet::Projection,
    /// ENAS: the controller's Adam step count and REINFORCE baseline (its weights and moments
    /// are tensors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ControllerMeta {
    pub adam_step: u64,
    pub baseline: Option<f64>,
}

/// θ, buffers, α and both optimisers' tensors, by name (sharing storage with the state).
fn search_tensors(state: &SearchState) -> Vec<(String, Tensor)> {
    let mut named = live_tensors(state.net.as_ref(), &state.alphas);
    let params = state.net.params();
    for (name, m) in params.names.iter().zip(&state.weight_opt.momentum_buffers) {
        if let Some(m) = m {
            named.push((format!("optim.sgd.momentum.{name}"), m.shallow_clone()));
        }
    }
    for (name, (m, v)) in
        state.net.spec().alpha_names().into_iter().zip(state.arch_opt.exp_avg.iter().zip(&state.arch_opt.exp_avg_sq))
    {
        named.push((format!("optim.adam.exp_avg.{name}"), m.shallow_clone()));
        named.push((format!("optim.adam.exp_avg_sq.{name}"), v.shallow_clone()));
    }
    if let Some(c) = &state.controller {
        for (i, name) in c.names.iter().enumerate() {
            named.push((format!("controller.{name}"), c.params[i].shallow_clone()));
            named.push((format!("optim.controller.exp_avg.{name}"), c.opt.exp_avg[i].shallow_clone()));
            named.push((format!("optim.controller.exp_avg_sq.{name}"), c.opt.exp_avg_sq[i].shallow_clone()));
        }
    }
    named
}

/// Write a search checkpoint under `root` (coordinator only), keeping the newest `keep`.
pub fn save_search(root: &Path, state: &SearchState, meta: &SearchMeta, keep: usize) -> Result<PathBuf> {
    let tensors: Vec<(String, Tensor)> = search_tensors(state).into_iter().map(|(n, t)| (n, on_host(&t))).collect();
    store::commit(root, meta.global_step as u64, keep, |dir| {
        Tensor::write_safetensors(&tensors, dir.join(STATE))?;
        write_json(dir, META, meta)
    })
}

/// Read a checkpoint's metadata (after [`store::verify`]).
pub fn read_meta(dir: &Path) -> Result<SearchMeta> {
    crate::checkpoint::read_json(dir, META, "a search checkpoint")
}

/// Load a verified search checkpoint into `state` (which must have the checkpoint's space and
/// shapes); returns its metadata.
pub fn load_search(dir: &Path, state: &mut SearchState) -> Result<SearchMeta> {
    store::verify(dir)?;
    let meta = read_meta(dir)?;
    let stored = Stored::read(&dir.join(STATE))?;
    let get = |name: &str, like: &Tensor| stored.get(name, like);
    let _g = tch::no_grad_guard();
    for (name, mut t) in live_tensors(state.net.as_ref(), &state.alphas) {
        t.copy_(&get(&name, &t)?);
    }
    let names = state.net.params().names.clone();
    let params: Vec<Tensor> = state.net.params().tensors.iter().map(|t| t.shallow_clone()).collect();
    for ((name, p), slot) in names.iter().zip(&params).zip(state.weight_opt.momentum_buffers.iter_mut()) {
        let key = format!("optim.sgd.momentum.{name}");
        *slot = if stored.tensors.contains_key(&key) { Some(get(&key, p)?) } else { None };
    }
    for (i, name) in state.net.spec().alpha_names().iter().enumerate() {
        let like = state.arch_opt.exp_avg[i].shallow_clone();
        state.arch_opt.exp_avg[i] = get(&format!("optim.adam.exp_avg.{name}"), &like)?;
        state.arch_opt.exp_avg_sq[i] = get(&format!("optim.adam.exp_avg_sq.{name}"), &like)?;
    }
    state.arch_opt.step = meta.adam_step;
    if let (Some(c), Some(m)) = (state.controller.as_mut(), meta.controller.as_ref()) {
        let _g = tch::no_grad_guard();
        for (i, name) in c.names.clone().iter().enumerate() {
            let mut p = c.params[i].shallow_clone();
            p.copy_(&get(&format!("controller.{name}"), &p)?);
            c.opt.exp_avg[i] = get(&format!("optim.controller.exp_avg.{name}"), &c.opt.exp_avg[i])?;
            c.opt.exp_avg_sq[i] = get(&format!("optim.controller.exp_avg_sq.{name}"), &c.opt.exp_avg_sq[i])?;
        }
        c.opt.step = m.adam_step;
        c.baseline = m.baseline;
    }
    state.epoch = meta.epoch;
    state.projection = meta.projection.clone();
    Ok(meta)
}

/// Refuse to resume `meta` under a config that changes what the run computes; the message
/// names the first differing setting.
pub fn check_compatible(meta: &SearchMeta, cfg: &Config, world: usize, dir: &Path) -> Result<()> {
    let old = stored_config(&meta.config, &dir.join(META))?;
    let owned = |v: Vec<(&str, String)>| v.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    check_same(
        owned(pinned(&old, meta.world_size)),
        owned(pinned(cfg, world)),
        dir,
        "resume with the same setting or start a new run",
    )
}
