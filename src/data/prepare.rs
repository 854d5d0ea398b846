//! Writing a packed store (the `prepare` command; the format is in [`super::packed`]): the
//! plan from the listing, one shard at a time (decoded and resized in parallel, written to a
//! temporary name, made durable, renamed; its `.json` last), and the manifest when every shard
//! is there. A shard whose `.json`, size and index check out is kept on `--resume`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::folder::{class_files, class_names, decode_jpeg, resize_short};
use super::packed::{self, Entry, Manifest, Plan, ShardMeta, FORMAT, MANIFEST, PLAN};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// One shard to write: its file name, split and images (path relative to the source, label).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub file: String,
    pub split: String,
    pub images: Vec<(String, u32)>,
}

/// The plan of packing the ImageNet folder `source` at `short_side` into shards of
/// `shard_images`: the listing (as [`super::ImageFolder`] lists it), nothing decoded.
pub fn plan(source: &Path, short_side: u32, shard_images: usize) -> Result<(Plan, Vec<ShardPlan>)> {
    let wnids = class_names(source)?;
    let total = wnids.len();
    let lists: Vec<(Vec<PathBuf>, Vec<PathBuf>)> = wnids
        .par_iter()
        .map(|w| Ok((class_files(source, "train", w, total)?, class_files(source, "val", w, total)?)))
        .collect::<Result<_>>()?;
    let rel = |p: &Path| -> Result<String> {
        let r = p.strip_prefix(source).expect("listed under the source");
        r.to_str().map(String::from).ok_or_else(|| Error::data(p, "file name is not UTF-8"))
    };
    let mut listing = crc32fast::Hasher::new();
    let mut shards = Vec::new();
    for (split, pick) in [("train", 0usize), ("val", 1)] {
        let mut images = Vec::new();
        for (c, l) in lists.iter().enumerate() {
            for p in if pick == 0 { &l.0 } else { &l.1 } {
                let r = rel(p)?;
                listing.update(r.as_bytes());
                listing.update(b"\n");
                images.push((r, c as u32));
            }
        }
        for (k, chunk) in images.chunks(shard_images).enumerate() {
            shards.push(ShardPlan { file: format!("{split}-{k:05}.bin"), split: split.into(), images: chunk.to_vec() });
        }
    }
    let plan = Plan {
        format: FORMAT.into(),
        source: source.display().to_string(),
        short_side,
        shard_images,
        train_per_class: lists.iter().map(|l| l.0.len()).collect(),
        val_per_class: lists.iter().map(|l| l.1.len()).collect(),
        wnids,
        listing_crc32: listing.finalize(),
    };
    Ok((plan, shards))
}

/// Which field of two plans differs (for `--resume` against a different tree or setting).
pub fn plan_difference(old: &Plan, new: &Plan) -> Option<&'static str> {
    [
        ("format", old.format != new.format),
        ("short side (--short-side)", old.short_side != new.short_side),
        ("images per shard (--shard-images)", old.shard_images != new.shard_images),
        ("classes", old.wnids != new.wnids),
        ("images per class", old.train_per_class != new.train_per_class || old.val_per_class != new.val_per_class),
        ("file names", old.listing_crc32 != new.listing_crc32),
    ]
    .into_iter()
    .find(|(_, d)| *d)
    .map(|(k, _)| k)
}

/// The shard's `.json`, when the shard is complete: the record present, the data file of its
/// size, the index of its CRC-32.
pub fn completed(out: &Path, shard: &ShardPlan, plan: &Plan) -> Option<ShardMeta> {
    let meta: ShardMeta = packed::read_json(&out.join(packed::stem(&shard.file) + ".json")).ok()?;
    let size = std::fs::metadata(out.join(&shard.file)).ok()?.len();
    (meta.file == shard.file && size == meta.bytes && packed::read_index(out, &meta, plan).is_ok()).then_some(meta)
}

/// Decode, resize and write one shard. With `skip_bad`, an undecodable image is left out and
/// listed; otherwise it stops the shard with an error naming the file.
pub fn write_shard(source: &Path, out: &Path, shard: &ShardPlan, plan: &Plan, skip_bad: bool) -> Result<ShardMeta> {
    // In blocks, so that memory stays at a block of decoded images, not a shard's.
    const BLOCK: usize = 256;
    let data_path = out.join(&shard.file);
    let mut index = Vec::with_capacity(shard.images.len() * packed::ENTRY);
    let mut skipped = Vec::new();
    let mut hasher = crc32fast::Hasher::new();
    let mut offset = 0u64;
    let mut images = 0usize;
    crate::fsutil::write_atomic_with(&data_path, |tmp| {
        use std::io::Write;
        let f = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 22, f);
        for (b, block) in shard.images.chunks(BLOCK).enumerate() {
            let decoded: Vec<Result<image::RgbImage>> = block
                .par_iter()
                .map(|(rel, _)| decode_jpeg(&source.join(rel)).map(|img| resize_short(&img, plan.short_side)))
                .collect();
            for (k, (img, (rel, label))) in decoded.into_iter().zip(block).enumerate() {
                let img = match img {
                    Ok(img) => img,
                    Err(e) if skip_bad => {
                        tracing::warn!("skipped: {e}");
                        skipped.push(format!("{rel}: {e}"));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let (width, height) = (img.width(), img.height());
                if width > u16::MAX as u32 || height > u16::MAX as u32 {
                    return Err(Error::data(
                        source.join(rel),
                        format!("{width}×{height} after resizing: a side over 65535 pixels"),
                    ));
                }
                let bytes = img.into_raw();
                hasher.update(&bytes);
                let entry = Entry {
                    offset,
                    width: width as u16,
                    height: height as u16,
                    label: *label,
                    crc32: crc32fast::hash(&bytes),
                    position: (b * BLOCK + k) as u32,
                };
                entry.encode(&mut index);
                w.write_all(&bytes).map_err(|e| Error::io(tmp, e))?;
                offset += bytes.len() as u64;
                images += 1;
            }
        }
        w.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?.flush().map_err(|e| Error::io(tmp, e))
    })?;
    let stem = packed::stem(&shard.file);
    write_atomic(&out.join(format!("{stem}.idx")), &index)?;
    let meta = ShardMeta {
        file: shard.file.clone(),
        split: shard.split.clone(),
        images,
        bytes: offset,
        crc32: hasher.finalize(),
        index_crc32: crc32fast::hash(&index),
        skipped,
    };
    let json = serde_json::to_string_pretty(&meta).map_err(|e| Error::Invalid(format!("shard record: {e}")))?;
    write_atomic(&out.join(format!("{stem}.json")), json.as_bytes())?;
    Ok(meta)
}

/// Write `prepare.json` (the plan) into a new store.
pub fn write_plan(out: &Path, plan: &Plan) -> Result<()> {
    let json = serde_json::to_string_pretty(plan).map_err(|e| Error::Invalid(format!("plan: {e}")))?;
    write_atomic(&out.join(PLAN), json.as_bytes())
}

/// Write `packed.json` from every shard's `.json`; the store is complete from then on.
pub fn finalize(out: &Path, plan: &Plan, shards: &[ShardPlan]) -> Result<Manifest> {
    let metas: Vec<ShardMeta> = shards
        .iter()
        .map(|s| {
            completed(out, s, plan)
                .ok_or_else(|| Error::data(out.join(&s.file), "shard is missing or incomplete (run prepare --resume)"))
        })
        .collect::<Result<_>>()?;
    let count = |split: &str| metas.iter().filter(|m| m.split == split).map(|m| m.images).sum::<usize>();
    let manifest = Manifest {
        plan: plan.clone(),
        train_images: count("train"),
        val_images: count("val"),
        bytes: metas.iter().map(|m| m.bytes).sum(),
        shards: metas,
    };
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Invalid(format!("manifest: {e}")))?;
    write_atomic(&out.join(MANIFEST), json.as_bytes())?;
    Ok(manifest)
}
