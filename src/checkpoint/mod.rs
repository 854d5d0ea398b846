//! Checkpoints as a store: directories written atomically with a manifest ([`store`]), the
//! coordinator's commit shared with every rank, the tensors of a state file by name, and the
//! settings a resumed run must share with its checkpoint. What a checkpoint holds belongs to
//! whoever writes it: `search::checkpoint`, `train`, `influence::saved`.

pub mod store;

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::config::Config;
use crate::error::{Error, Result};

/// The metadata file of every checkpoint, and the tensors' file.
pub const META: &str = "meta.json";
pub const STATE: &str = "state.safetensors";

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

/// A checkpoint's JSON metadata file `name` as `T`; `what` names the kind of checkpoint in the
/// error ("a search checkpoint").
pub fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str, what: &str) -> Result<T> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Path { path: path.clone(), msg: format!("cannot read: {e}") })?;
    serde_json::from_str(&text).map_err(|e| Error::Path { path, msg: format!("not {what}: {e}") })
}

/// Write `meta` as the JSON file `name` of a checkpoint being filled.
pub fn write_json<T: serde::Serialize>(dir: &Path, name: &str, meta: &T) -> Result<()> {
    crate::fsutil::write_atomic(&dir.join(name), serde_json::to_string_pretty(meta).expect("json").as_bytes())
}

/// The config stored in a checkpoint (TOML), read back.
pub fn stored_config(text: &str, path: &Path) -> Result<Config> {
    Config::from_toml_str(text)
        .map_err(|e| Error::Path { path: path.to_path_buf(), msg: format!("stored config unreadable: {e}") })
}

/// Refuse to resume when a setting differs: `was` and `now` are (key, value) pairs in the same
/// order; the message names the first differing key and what to do (`then`).
pub fn check_same(was: Vec<(String, String)>, now: Vec<(String, String)>, dir: &Path, then: &str) -> Result<()> {
    for ((key, was), (_, now)) in was.into_iter().zip(now) {
        if was != now {
            return Err(Error::config(
                "--resume",
                &key,
                format!("{now} differs from the checkpoint's {was} ({}); {then}", dir.display()),
            ));
        }
    }
    Ok(())
}

/// The tensors of a checkpoint's state file, by name.
pub struct Stored {
    path: PathBuf,
    pub tensors: std::collections::HashMap<String, Tensor>,
}

impl Stored {
    pub fn read(path: &Path) -> Result<Self> {
        let tensors = Tensor::read_safetensors(path)
            .map_err(|e| Error::Path { path: path.to_path_buf(), msg: format!("cannot read checkpoint tensors: {e}") })?
            .into_iter()
            .collect();
        Ok(Stored { path: path.to_path_buf(), tensors })
    }

    /// The tensor `name`, which must have `like`'s shape, in `like`'s kind.
    pub fn get(&self, name: &str, like: &Tensor) -> Result<Tensor> {
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

/// Settings that a resumed run must share with the checkpoint, as (key, value) pairs.
pub fn pinned(cfg: &Config, world: usize) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("seed", cfg.seed.to_string()),
        ("space.name", cfg.space.name.clone()),
        ("space.channels", cfg.space.channels.to_string()),
        ("space.cells_per_stage", cfg.space.cells_per_stage.to_string()),
        ("space.layers", cfg.space.layers.to_string()),
        ("data.dataset", cfg.data.dataset.to_string()),
        ("data.num_classes", cfg.data.num_classes.to_string()),
        ("data.image_size", cfg.data.image_size.to_string()),
        ("data.train_size", cfg.data.train_size.to_string()),
        ("data.split", cfg.data.split.to_string()),
        ("data.augment", cfg.data.augment.to_string()),
        ("data.cutout", cfg.data.cutout.to_string()),
        ("data.normalize", cfg.data.normalize.to_string()),
        ("search.strategy", cfg.search.strategy.to_string()),
        ("search.epochs", cfg.search.epochs.to_string()),
        ("search.batch_size", cfg.search.batch_size.to_string()),
        ("search.order", cfg.search.order.to_string()),
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
