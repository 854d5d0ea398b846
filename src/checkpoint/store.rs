//! A directory of checkpoints, each one directory `step-NNNNNNNNN/` written atomically: its
//! files go into a hidden temporary directory, are fsync'ed, a `MANIFEST.json` with every file's
//! size and CRC-32 is written last, and the directory is renamed into place. A checkpoint is
//! valid when its manifest exists and every file matches it; the newest valid one wins, and a
//! damaged one is skipped with a warning. The last `keep` are kept.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::{crc32_file, fsync_dir, write_atomic};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub crc32: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub step: u64,
    pub files: Vec<FileEntry>,
}

const FORMAT: &str = "dartsif-dist checkpoint v1";

/// The checkpoint directory name of global step `step`.
pub fn name_of(step: u64) -> String {
    format!("step-{step:09}")
}

/// Write the files produced by `fill` (given the temporary directory) as checkpoint `step`
/// under `root`, then keep only the newest `keep` checkpoints.
pub fn commit(root: &Path, step: u64, keep: usize, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    remove_stale(root);
    let tmp = root.join(format!(".{}.tmp-{}", name_of(step), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    fill(&tmp)?;
    let mut files = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&tmp)
        .map_err(|e| Error::io(&tmp, e))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().to_str().map(String::from)))
        .collect();
    names.sort();
    for name in names {
        let p = tmp.join(&name);
        std::fs::File::open(&p).and_then(|f| f.sync_all()).map_err(|e| Error::io(&p, e))?;
        let (bytes, crc) = crc32_file(&p).map_err(|e| Error::io(&p, e))?;
        files.push(FileEntry { name, bytes, crc32: format!("{crc:08x}") });
    }
    let manifest = Manifest { format: FORMAT.into(), step, files };
    let mpath = tmp.join("MANIFEST.json");
    write_atomic(&mpath, serde_json::to_string_pretty(&manifest).expect("json").as_bytes())?;
    fsync_dir(&tmp);
    let dest = root.join(name_of(step));
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    fsync_dir(root);
    for old in list(root).into_iter().rev().skip(keep.max(1)) {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(dest)
}

/// Remove the temporary directories (`.step-N.tmp-PID`) of writers that died before renaming
/// them into place (a full disk, a kill): on every commit and on resume. A live writer's stay.
pub fn remove_stale(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")).map(|(_, p)| p.to_string()) else {
            continue;
        };
        let alive = pid.parse::<u32>().is_ok_and(|p| Path::new("/proc").join(p.to_string()).exists());
        if !alive || pid == std::process::id().to_string() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Checkpoint directories under `root`, oldest first (by step).
pub fn list(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root) else { return Vec::new() };
    let mut v: Vec<(u64, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Check a checkpoint directory against its manifest.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let bad = |msg: String| Error::Path { path: dir.to_path_buf(), msg };
    let mpath = dir.join("MANIFEST.json");
    let text = std::fs::read_to_string(&mpath).map_err(|e| bad(format!("no readable MANIFEST.json ({e})")))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| bad(format!("MANIFEST.json is damaged ({e})")))?;
    if m.format != FORMAT {
        return Err(bad(format!("unknown checkpoint format {:?}", m.format)));
    }
    for f in &m.files {
        // Plain file names only: a manifest must not make us open a path outside the checkpoint.
        let plain = !f.name.is_empty()
            && !f.name.contains(['/', '\\', '\0'])
            && f.name != "."
            && f.name != ".."
            && !f.name.chars().any(char::is_control);
        if !plain {
            return Err(bad(format!("MANIFEST.json names {:?}, which is not a plain file name", f.name)));
        }
        let p = dir.join(&f.name);
        let (bytes, crc) = crc32_file(&p).map_err(|e| bad(format!("{}: unreadable ({e})", f.name)))?;
        if bytes != f.bytes {
            return Err(bad(format!("{}: {bytes} bytes, the manifest says {}", f.name, f.bytes)));
        }
        let c = format!("{crc:08x}");
        if c != f.crc32 {
            return Err(bad(format!("{}: checksum {c} does not match the manifest's {}", f.name, f.crc32)));
        }
    }
    Ok(m)
}

/// The newest checkpoint under `root` that verifies, and why each newer one was skipped.
pub fn newest_valid(root: &Path) -> (Option<PathBuf>, Vec<String>) {
    remove_stale(root);
    let mut skipped = Vec::new();
    for dir in list(root).into_iter().rev() {
        match verify(&dir) {
            Ok(_) => return (Some(dir), skipped),
            Err(e) => skipped.push(format!("skipping damaged checkpoint: {e}")),
        }
    }
    (None, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest naming a path outside its checkpoint is refused before anything is opened.
    #[test]
    fn manifest_entries_are_plain_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        let ck = commit(&root, 1, 3, |d| std::fs::write(d.join("a.bin"), b"x").map_err(|e| Error::io(d, e))).unwrap();
        let m = std::fs::read_to_string(ck.join("MANIFEST.json")).unwrap();
        for name in ["../../../../etc/hostname", "/etc/hostname", "..", "a\u{1b}[2J"] {
            let json = serde_json::to_string(name).unwrap();
            std::fs::write(ck.join("MANIFEST.json"), m.replace("\"a.bin\"", &json)).unwrap();
            let e = verify(&ck).unwrap_err().to_string();
            assert!(e.contains("which is not a plain file name"), "{name}: {e}");
        }
    }

    /// Temporaries of dead writers go on the next commit; a live writer's stay.
    #[test]
    fn stale_temporaries_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        // PIDs above the kernel's limit (4,194,304) are never alive.
        let dead = root.join(".step-000000004.tmp-4999999");
        let live = root.join(".step-000000004.tmp-1"); // init
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        commit(&root, 5, 3, |d| std::fs::write(d.join("a.bin"), b"x").map_err(|e| Error::io(d, e))).unwrap();
        assert!(!dead.exists() && live.exists());
        std::fs::create_dir_all(&dead).unwrap();
        assert!(newest_valid(&root).0.is_some());
        assert!(!dead.exists());
    }

    #[test]
    fn commit_verify_prune_and_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        for step in [3u64, 7, 12, 20] {
            commit(&root, step, 3, |d| {
                std::fs::write(d.join("a.bin"), vec![step as u8; 1000]).unwrap();
                std::fs::write(d.join("meta.json"), format!("{{\"step\": {step}}}")).unwrap();
                Ok(())
            })
            .unwrap();
        }
        let names: Vec<String> =
            list(&root).iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
        assert_eq!(names, ["step-000000007", "step-000000012", "step-000000020"]);
        assert_eq!(verify(&root.join(name_of(20))).unwrap().files.len(), 2);
        // Flip one byte of the newest: it no longer verifies and the previous one is chosen.
        let f = root.join(name_of(20)).join("a.bin");
        let mut b = std::fs::read(&f).unwrap();
        b[500] ^= 1;
        std::fs::write(&f, &b).unwrap();
        let e = verify(&root.join(name_of(20))).unwrap_err().to_string();
        assert!(e.contains("a.bin: checksum"), "{e}");
        assert_eq!(newest_valid(&root).0.unwrap(), root.join(name_of(12)));
        // A checkpoint without its manifest (interrupted before the rename cannot happen, but a
        // user may copy one half) is skipped too.
        std::fs::remove_file(root.join(name_of(12)).join("MANIFEST.json")).unwrap();
        let (found, skipped) = newest_valid(&root);
        assert_eq!(found.unwrap(), root.join(name_of(7)));
        assert_eq!(skipped.len(), 2);
    }
}
