//! State files: the supernet (θ, BatchNorm buffers, α) as safetensors, written atomically.
//!
//! Tensor names: θ and buffers use the reference implementation's state-dict names (for NB201,
//! AutoDL's `TinyNetworkDarts`: `stem.0.weight`, `cells.0.edges.1<-0.3.op.1.weight`, ...,
//! `classifier.bias`); α uses the reference names too (`arch_parameters` for NB201). A
//! PyTorch user loads the file with `safetensors.torch.load_file`.

pub mod store;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::search::SearchState;
use crate::supernet::Supernet;

/// Run `write` (a checkpoint write) on the coordinator and share its outcome with every rank,
/// so a failed write stops all of them.
pub fn commit_on_coordinator(
    comm: &dyn crate::comm::Collective,
    write: impl FnOnce() -> Result<PathBuf>,
) -> Result<PathBuf> {
    let mine: Option<std::result::Result<String, String>> =
        comm.is_coordinator().then(|| write().map(|d| d.display().to_string()).map_err(|e| e.to_string()));
    match crate::comm::broadcast_value(comm, 0, mine.as_ref())? {
        Ok(dir) => {
            tracing::info!("checkpoint {dir}");
            Ok(dir.into())
        }
        Err(msg) => Err(Error::Invalid(format!("writing a checkpoint failed: {msg}"))),
    }
}

/// Load a search checkpoint (of a search or a DARTS-PT selection) after checking it against
/// `cfg`; a mid-epoch checkpoint also restores the epoch's progress.
pub fn resume_search(dir: &Path, cfg: &Config, world: usize, state: &mut SearchState) -> Result<SearchMeta> {
    let meta = read_meta(dir)?;
    check_compatible(&meta, cfg, world, dir)?;
    let meta = load_search(dir, state)?;
    if meta.step > 0 {
        state.progress = Some(crate::search::EpochProgress {
            step: meta.step,
            train: meta.train,
            arch: meta.arch,
            seconds: meta.seconds,
        });
    }
    Ok(meta)
}

/// A detached, contiguous host copy (or handle, on the CPU) of `t`, for a state file.
pub fn on_host(t: &Tensor) -> Tensor {
    crate::device::host(&t.detach()).contiguous()
}

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
    for (name, alpha) in net.spec().alpha_names().into_iter().zip(alphas) {
        named.push((name, alpha.shallow_clone()));
    }
    named
}

/// (name, tensor) pairs of the whole supernet state (detached copies' handles).
pub fn supernet_tensors(state: &SearchState) -> Vec<(String, Tensor)> {
    live_tensors(state.net.as_ref(), &state.alphas).into_iter().map(|(n, t)| (n, on_host(&t))).collect()
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
}

const META: &str = "meta.json";
const STATE: &str = "state.safetensors";

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
    named
}

/// Write a search checkpoint under `root` (coordinator only), keeping the newest `keep`.
pub fn save_search(root: &Path, state: &SearchState, meta: &SearchMeta, keep: usize) -> Result<PathBuf> {
    let tensors: Vec<(String, Tensor)> = search_tensors(state).into_iter().map(|(n, t)| (n, on_host(&t))).collect();
    store::commit(root, meta.global_step as u64, keep, |dir| {
        Tensor::write_safetensors(&tensors, dir.join(STATE))?;
        write_atomic(&dir.join(META), serde_json::to_string_pretty(meta).expect("json").as_bytes())
    })
}

/// Read a checkpoint's metadata (after [`store::verify`]).
pub fn read_meta(dir: &Path) -> Result<SearchMeta> {
    let path = dir.join(META);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Path { path: path.clone(), msg: format!("cannot read: {e}") })?;
    serde_json::from_str(&text).map_err(|e| Error::Path { path, msg: format!("not a search checkpoint: {e}") })
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
    state.epoch = meta.epoch;
    state.projection = meta.projection.clone();
    Ok(meta)
}

/// The tensors of a checkpoint's state file, by name.
struct Stored {
    path: PathBuf,
    tensors: std::collections::HashMap<String, Tensor>,
}

impl Stored {
    fn read(path: &Path) -> Result<Self> {
        let tensors = Tensor::read_safetensors(path)
            .map_err(|e| Error::Path { path: path.to_path_buf(), msg: format!("cannot read checkpoint tensors: {e}") })?
            .into_iter()
            .collect();
        Ok(Stored { path: path.to_path_buf(), tensors })
    }

    /// The tensor `name`, which must have `like`'s shape, in `like`'s kind.
    fn get(&self, name: &str, like: &Tensor) -> Result<Tensor> {
        let src = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::Path { path: self.path.clone(), msg: format!("no tensor named {name:?}") })?;
        if src.size() != like.size() {
            return Err(Error::Path {
                path: self.path.clone(),
                msg: format!(
                    "tensor {name:?} has shape {:?}, expected {:?} (a checkpoint of another space or size?)",
                    src.size(),
                    like.size()
                ),
            });
        }
        Ok(src.to_kind(like.kind()))
    }
}

/// Progress of `train`: the position (epoch, steps done in it, the epoch's partial sums) and
/// what fixes the computation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainMeta {
    pub kind: String,
    pub epoch: usize,
    pub step: usize,
    pub global_step: usize,
    pub train: [f64; 3],
    pub world_size: usize,
    pub genotype: String,
    /// The resolved config (TOML).
    pub config: String,
}

/// Write a training checkpoint: the network's weights and buffers (model.py's names), SGD's
/// momentum, and `meta`.
pub fn save_train(root: &Path, state: &crate::train::TrainState, meta: &TrainMeta, keep: usize) -> Result<PathBuf> {
    let mut named: Vec<(String, Tensor)> =
        state.net.params().named().into_iter().map(|(n, t)| (n, on_host(&t))).collect();
    for (name, m) in state.net.params().names.iter().zip(&state.opt.momentum_buffers) {
        if let Some(m) = m {
            named.push((format!("optim.sgd.momentum.{name}"), on_host(m)));
        }
    }
    store::commit(root, meta.global_step as u64, keep, |dir| {
        Tensor::write_safetensors(&named, dir.join(STATE))?;
        write_atomic(&dir.join(META), serde_json::to_string_pretty(meta).expect("json").as_bytes())
    })
}

/// Load a verified training checkpoint into `state`, refusing one of another genotype, seed,
/// data or protocol; returns its metadata.
pub fn load_train(
    dir: &Path,
    state: &mut crate::train::TrainState,
    cfg: &Config,
    genotype: &str,
    world: usize,
) -> Result<TrainMeta> {
    store::verify(dir)?;
    let path = dir.join(META);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Path { path: path.clone(), msg: format!("cannot read: {e}") })?;
    let meta: TrainMeta = serde_json::from_str(&text)
        .map_err(|e| Error::Path { path: path.clone(), msg: format!("not a training checkpoint: {e}") })?;
    if meta.genotype != genotype {
        return Err(Error::config(
            "--resume",
            "genotype",
            format!("differs from the checkpoint's ({})", dir.display()),
        ));
    }
    let old = Config::from_toml_str(&meta.config)
        .map_err(|e| Error::Path { path: path.clone(), msg: format!("stored config unreadable: {e}") })?;
    let settings = |c: &Config, w: usize| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pinned(c, 1)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("search.") && !k.starts_with("space.") && *k != "world size")
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let toml::Value::Table(t) = toml::Value::try_from(&c.train).expect("train config serialises") {
            v.extend(
                t.into_iter().filter(|(k, _)| k != "weights").map(|(k, val)| (format!("train.{k}"), val.to_string())),
            );
        }
        if c.train.micro_batch == 0 {
            v.push(("world size".into(), w.to_string()));
        }
        v
    };
    for ((key, was), (_, now)) in settings(&old, meta.world_size).into_iter().zip(settings(cfg, world)) {
        if was != now {
            return Err(Error::config(
                "--resume",
                &key,
                format!("{now} differs from the checkpoint's {was} ({}); resume with the same setting", dir.display()),
            ));
        }
    }
    let stored = Stored::read(&dir.join(STATE))?;
    let _g = tch::no_grad_guard();
    for (name, mut t) in state.net.params().named() {
        t.copy_(&stored.get(&name, &t)?);
    }
    let names = state.net.params().names.clone();
    let params: Vec<Tensor> = state.net.params().tensors.iter().map(|t| t.shallow_clone()).collect();
    for ((name, p), slot) in names.iter().zip(&params).zip(state.opt.momentum_buffers.iter_mut()) {
        let key = format!("optim.sgd.momentum.{name}");
        *slot = if stored.tensors.contains_key(&key) { Some(stored.get(&key, p)?) } else { None };
    }
    state.epoch = meta.epoch;
    state.step = meta.step;
    state.partial = meta.train;
    Ok(meta)
}

/// Settings that a resumed run must share with the checkpoint, as (key, value) pairs.
fn pinned(cfg: &Config, world: usize) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("seed", cfg.seed.to_string()),
        ("space.name", cfg.space.name.clone()),
        ("space.channels", cfg.space.channels.to_string()),
        ("space.cells_per_stage", cfg.space.cells_per_stage.to_string()),
        ("space.layers", cfg.space.layers.to_string()),
        ("data.dataset", cfg.data.dataset.clone()),
        ("data.num_classes", cfg.data.num_classes.to_string()),
        ("data.image_size", cfg.data.image_size.to_string()),
        ("data.train_size", cfg.data.train_size.to_string()),
        ("data.split", cfg.data.split.clone()),
        ("data.augment", cfg.data.augment.to_string()),
        ("data.cutout", cfg.data.cutout.to_string()),
        ("data.normalize", cfg.data.normalize.clone()),
        ("search.strategy", cfg.search.strategy.clone()),
        ("search.epochs", cfg.search.epochs.to_string()),
        ("search.batch_size", cfg.search.batch_size.to_string()),
        ("search.order", cfg.search.order.clone()),
        ("search.arch_start_epoch", cfg.search.arch_start_epoch.to_string()),
        ("search.steps_per_epoch", cfg.search.steps_per_epoch.to_string()),
        ("search.micro_batch (per rank)", cfg.micro_batch(world).to_string()),
    ];
    // Without micro-batches, BatchNorm groups are the rank shards: the world size matters.
    if cfg.search.micro_batch == 0 {
        v.push(("world size", world.to_string()));
    }
    v
}

/// Refuse to resume `meta` under a config that changes what the run computes; the message
/// names the first differing setting.
pub fn check_compatible(meta: &SearchMeta, cfg: &Config, world: usize, dir: &Path) -> Result<()> {
    let old = Config::from_toml_str(&meta.config)
        .map_err(|e| Error::Path { path: dir.join(META), msg: format!("stored config unreadable: {e}") })?;
    for ((key, was), (_, now)) in pinned(&old, meta.world_size).into_iter().zip(pinned(cfg, world)) {
        if was != now {
            return Err(Error::config(
                "--resume",
                key,
                format!(
                    "{now} differs from the checkpoint's {was} ({}); resume with the same setting or start a new run",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Progress of the candidate loop of a `drop`/`darts-if` selection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SelectMeta {
    pub kind: String,
    pub criterion: String,
    /// (candidate index, loss change, quadratic term) of every candidate scored so far.
    pub records: Vec<(usize, f64, f64)>,
    pub world_size: usize,
    /// The resolved config of the selection (TOML).
    pub config: String,
}

const PROGRESS: &str = "progress.json";

/// Write a selection progress checkpoint under `root`, keeping the newest `keep`; its step is
/// the number of candidates scored.
pub fn save_select(root: &Path, meta: &SelectMeta, keep: usize) -> Result<PathBuf> {
    store::commit(root, meta.records.len() as u64, keep, |dir| {
        write_atomic(&dir.join(PROGRESS), serde_json::to_string_pretty(meta).expect("json").as_bytes())
    })
}

/// Read a verified selection checkpoint and check it against `cfg`: the criterion's settings,
/// the seed, the space and the data must be those of the checkpoint (the world size may
/// differ: each candidate is scored by one rank alone).
pub fn load_select(dir: &Path, cfg: &Config) -> Result<SelectMeta> {
    store::verify(dir)?;
    let path = dir.join(PROGRESS);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Path { path: path.clone(), msg: format!("cannot read: {e}") })?;
    let meta: SelectMeta = serde_json::from_str(&text)
        .map_err(|e| Error::Path { path: path.clone(), msg: format!("not a selection checkpoint: {e}") })?;
    let old = Config::from_toml_str(&meta.config)
        .map_err(|e| Error::Path { path: path.clone(), msg: format!("stored config unreadable: {e}") })?;
    let settings = |c: &Config| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pinned(c, 1)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("search.") && *k != "world size")
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let table = toml::Value::try_from(&c.select).expect("select config serialises");
        if let toml::Value::Table(t) = table {
            for (k, val) in t {
                if k != "after_search" {
                    v.push((format!("select.{k}"), val.to_string()));
                }
            }
        }
        v
    };
    for ((key, was), (_, now)) in settings(&old).into_iter().zip(settings(cfg)) {
        if was != now {
            return Err(Error::config(
                "--resume",
                key,
                format!("{now} differs from the checkpoint's {was} ({}); resume with the same setting or start a new selection", dir.display()),
            ));
        }
    }
    Ok(meta)
}
