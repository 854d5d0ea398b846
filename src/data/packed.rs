//! A packed, pre-resized copy of an ImageNet folder (written by `dartsif-dist prepare`, see
//! [`super::prepare`]): what FFCV and DALI users make so that JPEG decoding stops limiting a GPU.
//!
//! A directory of shards, each split's images in listing order (class by class, file names
//! sorted, as [`super::ImageFolder`] lists them), resized so that the shorter side is
//! `short_side` (the aspect ratio kept), stored as raw RGB bytes:
//!
//! - `train-00000.bin`, … `val-00000.bin`, …: records back to back, each `height × width × 3`
//!   bytes (row-major, interleaved RGB);
//! - `train-00000.idx`, …: one fixed-size 24-byte entry per record (little-endian): offset `u64`,
//!   width `u16`, height `u16`, label `u32`, CRC-32 of the record's bytes `u32`, its position in
//!   the shard's planned list `u32` (a skipped image leaves a gap);
//! - `train-00000.json`, …: the shard's size, CRC-32s and skipped images, written last (a shard
//!   with this file is complete: an interrupted `prepare` resumes after it);
//! - `prepare.json`: the plan (source, short side, classes, images per class, a CRC of the
//!   listing), written first; `packed.json`: the plan and every shard, written when all are done.
//!
//! Reading checks each shard's size and its index's CRC-32 when the store is opened, and each
//! record's CRC-32 when it is read (a damaged record is refused, naming the shard); `prepare
//! --verify` checks every byte. Records are read with positioned reads (`pread`), safe to share
//! between rayon's decoding threads; the page cache does what a memory map would.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `format` field of a plan and a manifest.
pub const FORMAT: &str = "dartsif-packed/1";
/// The manifest of a complete store.
pub const MANIFEST: &str = "packed.json";
/// The plan of a store being written.
pub const PLAN: &str = "prepare.json";
/// Bytes of one index entry.
pub const ENTRY: usize = 24;

/// What `prepare` packs: fixed before the first shard is written, checked on `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    /// The ImageNet folder, as given.
    pub source: String,
    /// Every image's shorter side, in pixels.
    pub short_side: u32,
    /// Images per shard (the last shard of a split may hold fewer).
    pub shard_images: usize,
    /// Class folder names; class `c` is label `c`.
    pub wnids: Vec<String>,
    /// Images listed per class in `train/` and `val/`.
    pub train_per_class: Vec<usize>,
    pub val_per_class: Vec<usize>,
    /// CRC-32 of the listing (every relative path, one per line): the same tree, file for file.
    pub listing_crc32: u32,
}

/// One complete shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// The data file's name (`train-00003.bin`); the index and the record share its stem.
    pub file: String,
    /// `train` or `val`.
    pub split: String,
    pub images: usize,
    pub bytes: u64,
    pub crc32: u32,
    pub index_crc32: u32,
    /// Images left out (`--skip-bad`): relative path and why.
    #[serde(default)]
    pub skipped: Vec<String>,
}

impl ShardMeta {
    pub fn index_file(&self) -> String {
        stem(&self.file) + ".idx"
    }
}

/// `train-00003.bin` → `train-00003`.
pub fn stem(file: &str) -> String {
    file.strip_suffix(".bin").unwrap_or(file).to_string()
}

/// The manifest of a complete store (`packed.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(flatten)]
    pub plan: Plan,
    pub train_images: usize,
    pub val_images: usize,
    pub bytes: u64,
    pub shards: Vec<ShardMeta>,
}

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub offset: u64,
    pub width: u16,
    pub height: u16,
    pub label: u32,
    pub crc32: u32,
    pub position: u32,
}

impl Entry {
    pub fn len(&self) -> u64 {
        self.width as u64 * self.height as u64 * 3
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.width.to_le_bytes());
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&self.label.to_le_bytes());
        out.extend_from_slice(&self.crc32.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Entry {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Entry {
            offset: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            width: u16::from_le_bytes([b[8], b[9]]),
            height: u16::from_le_bytes([b[10], b[11]]),
            label: u32_at(12),
            crc32: u32_at(16),
            position: u32_at(20),
        }
    }
}

/// Whether `dir` holds a packed store (complete or being written).
pub fn is_packed(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file() || dir.join(PLAN).is_file()
}

/// Read and parse a JSON file of the store.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::data(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::data(path, format!("not a packed store's file: {e}")))
}

/// Read a shard's index and check it against `meta` (size and CRC-32) and the plan (labels,
/// record extents and the short side).
pub fn read_index(dir: &Path, meta: &ShardMeta, plan: &Plan) -> Result<Vec<Entry>> {
    let path = dir.join(meta.index_file());
    let bytes = std::fs::read(&path).map_err(|e| Error::data(&path, format!("cannot read: {e}")))?;
    if bytes.len() != meta.images * ENTRY {
        return Err(Error::data(
            &path,
            format!(
                "{} bytes, expected {} ({} records): truncated or damaged",
                bytes.len(),
                meta.images * ENTRY,
                meta.images
            ),
        ));
    }
    if crc32fast::hash(&bytes) != meta.index_crc32 {
        return Err(Error::data(&path, "CRC-32 differs from the manifest's: damaged (prepare it again)"));
    }
    let entries: Vec<Entry> = bytes.chunks_exact(ENTRY).map(Entry::decode).collect();
    for (k, e) in entries.iter().enumerate() {
        let bad = |msg: String| Error::data(&path, format!("record {k}: {msg}"));
        if e.label as usize >= plan.wnids.len() {
            return Err(bad(format!("label {} of {} classes", e.label, plan.wnids.len())));
        }
        if e.width.min(e.height) as u32 != plan.short_side {
            return Err(bad(format!("{}×{} has not the short side {}", e.width, e.height, plan.short_side)));
        }
        if e.offset.checked_add(e.len()).is_none_or(|end| end > meta.bytes) {
            return Err(bad(format!("extends past the end of {} ({} bytes)", meta.file, meta.bytes)));
        }
    }
    Ok(entries)
}

/// Where a record lives.
#[derive(Debug, Clone, Copy)]
struct Record {
    shard: u32,
    entry: Entry,
}

/// A complete packed store, opened for reading: training records first, then validation.
#[derive(Debug)]
pub struct Packed {
    pub dir: PathBuf,
    pub manifest: Manifest,
    files: Vec<std::fs::File>,
    records: Vec<Record>,
    /// The first record of each shard.
    starts: Vec<usize>,
    train: usize,
}

impl Packed {
    /// Open `dir`: the manifest, every shard's size and index (CRC-checked). An incomplete
    /// store (a plan, no manifest) is refused with what to run.
    pub fn open(dir: &Path) -> Result<Self> {
        let mpath = dir.join(MANIFEST);
        if !mpath.is_file() {
            return Err(Error::data(
                dir,
                format!("packed store is incomplete (no {MANIFEST}): finish it with `dartsif-dist prepare --resume`"),
            ));
        }
        let manifest: Manifest = read_json(&mpath)?;
        if manifest.plan.format != FORMAT {
            return Err(Error::data(&mpath, format!("format {:?}; this build reads {FORMAT:?}", manifest.plan.format)));
        }
        let mut files = Vec::with_capacity(manifest.shards.len());
        let mut records = Vec::new();
        let mut train = 0;
        let mut seen_val = false;
        let mut starts = Vec::with_capacity(manifest.shards.len());
        for (s, meta) in manifest.shards.iter().enumerate() {
            let path = dir.join(&meta.file);
            let f = std::fs::File::open(&path).map_err(|e| Error::data(&path, format!("cannot open: {e}")))?;
            let len = f.metadata().map_err(|e| Error::data(&path, format!("cannot stat: {e}")))?.len();
            if len != meta.bytes {
                return Err(Error::data(
                    &path,
                    format!("{len} bytes, the manifest says {}: truncated or damaged", meta.bytes),
                ));
            }
            let entries = read_index(dir, meta, &manifest.plan)?;
            starts.push(records.len());
            match meta.split.as_str() {
                "train" if !seen_val => train += entries.len(),
                "val" => seen_val = true,
                other => return Err(Error::data(&mpath, format!("shard {}: split {other:?} out of order", meta.file))),
            }
            records.extend(entries.into_iter().map(|entry| Record { shard: s as u32, entry }));
            files.push(f);
        }
        if train != manifest.train_images || records.len() != manifest.train_images + manifest.val_images {
            return Err(Error::data(&mpath, "image counts disagree with the shards"));
        }
        Ok(Packed { dir: dir.to_path_buf(), manifest, files, records, starts, train })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records `0..train_len()` are the training images.
    pub fn train_len(&self) -> usize {
        self.train
    }

    pub fn label(&self, i: usize) -> u32 {
        self.records[i].entry.label
    }

    /// "train-00003.bin record 17".
    pub fn describe(&self, i: usize) -> String {
        let s = self.records[i].shard as usize;
        format!("{} record {}", self.manifest.shards[s].file, i - self.starts[s])
    }

    /// Record `i`'s pixels, its CRC-32 checked.
    pub fn read(&self, i: usize) -> Result<RgbImage> {
        let r = self.records[i];
        let e = r.entry;
        let mut buf = vec![0u8; e.len() as usize];
        let path = || self.dir.join(&self.manifest.shards[r.shard as usize].file);
        self.files[r.shard as usize]
            .read_exact_at(&mut buf, e.offset)
            .map_err(|err| Error::data(path(), format!("cannot read {}: {err}", self.describe(i))))?;
        if crc32fast::hash(&buf) != e.crc32 {
            return Err(Error::data(
                path(),
                format!(
                    "{}: CRC-32 mismatch, the shard is damaged (check the store with `dartsif-dist prepare --verify`)",
                    self.describe(i)
                ),
            ));
        }
        Ok(RgbImage::from_raw(e.width as u32, e.height as u32, buf).expect("w·h·3 bytes"))
    }
}

/// What `prepare --verify` found: shards, images and bytes, all intact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verified {
    pub shards: usize,
    pub images: usize,
    pub bytes: u64,
}

/// Check every byte of a complete store: each shard's CRC-32 and size, its index, and every
/// record's CRC-32. `progress` is called with each shard's images once it is checked.
pub fn verify(dir: &Path, mut progress: impl FnMut(usize)) -> Result<Verified> {
    let store = Packed::open(dir)?;
    let mut out = Verified { shards: 0, images: 0, bytes: 0 };
    for (s, meta) in store.manifest.shards.iter().enumerate() {
        let path = dir.join(&meta.file);
        let (len, crc) =
            crate::fsutil::crc32_file(&path).map_err(|e| Error::data(&path, format!("cannot read: {e}")))?;
        if len != meta.bytes || crc != meta.crc32 {
            return Err(Error::data(
                &path,
                "CRC-32 differs from the manifest's: the shard is damaged (prepare it again)",
            ));
        }
        let first = store.starts[s];
        (first..first + meta.images).into_par_iter().try_for_each(|i| store.read(i).map(drop))?;
        out.shards += 1;
        out.images += meta.images;
        out.bytes += meta.bytes;
        progress(meta.images);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_entry_is_24_little_endian_bytes() {
        let e = Entry {
            offset: 0x0102_0304_0506_0708,
            width: 0x0a0b,
            height: 0x0c0d,
            label: 999,
            crc32: 0xdead_beef,
            position: 7,
        };
        let mut b = Vec::new();
        e.encode(&mut b);
        assert_eq!(b.len(), ENTRY);
        assert_eq!(&b[..12], &[8, 7, 6, 5, 4, 3, 2, 1, 0x0b, 0x0a, 0x0d, 0x0c]);
        assert_eq!(&b[12..16], &999u32.to_le_bytes());
        assert_eq!(Entry::decode(&b), e);
        assert_eq!(e.len(), 0x0a0b * 0x0c0d * 3);
    }
}
