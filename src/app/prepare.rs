//! `dartsif-dist prepare`: a packed, pre-resized, sharded copy of an ImageNet folder
//! (`data::packed`), written by every rank of the launch (shard k on rank k mod W), resumable
//! shard by shard; `prepare --verify DIR` checks every byte of one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{fail_once, finish, init_logging, init_threads, watch_signals};
use crate::comm::{self, Collective};
use crate::config::Config;
use crate::data::packed::{self, Manifest, Plan};
use crate::data::prepare::{self, ShardPlan};
use crate::error::{Error, Result};
use crate::progress::Progress;

#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// The ImageNet folder to pack (`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`).
    #[arg(long, value_name = "DIR", required_unless_present = "verify")]
    pub src: Option<PathBuf>,
    /// The store to write (must not exist, or be empty; with --resume, the one to finish). Point
    /// `data.root` at it to train from it.
    #[arg(long, value_name = "DIR", required_unless_present = "verify")]
    pub out: Option<PathBuf>,
    /// Every image's shorter side in pixels, the aspect ratio kept. 256 makes the evaluation view
    /// of 224-px crops (resize to 256, centre crop) exactly the JPEG folder's; 160 is smaller
    /// for low-resolution search.
    #[arg(long, value_name = "PIXELS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=4096))]
    pub short_side: u32,
    /// Images per shard file (about 270 MB each at short side 256 for ImageNet's image sizes).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub shard_images: u64,
    /// Leave out JPEGs that cannot be decoded (listed in each shard's record and the manifest)
    /// instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Finish an interrupted prepare in --out: complete shards are kept, the rest written. The
    /// same --src, --short-side and --shard-images as before.
    #[arg(long, value_name = "auto", value_parser = ["auto"], num_args = 0..=1, default_missing_value = "auto")]
    pub resume: Option<String>,
    /// Check every byte of the packed store DIR (each shard's and each record's CRC-32) and
    /// report; nothing is written.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["src", "out", "resume", "skip_bad"])]
    pub verify: Option<PathBuf>,
}

pub fn prepare_main(args: &PrepareArgs) -> i32 {
    if let Some(dir) = &args.verify {
        return verify_main(dir);
    }
    let out = args.out.clone().expect("clap requires --out");
    let defaults = Config::default();
    let comm = match comm::init(defaults.comm, defaults.device) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    let stop = watch_signals();
    let existed = out.exists();
    let outcome = run_prepare(args, comm.as_ref(), &out, &stop);
    // A fresh store that failed before its first shard holds nothing worth keeping.
    let no_shard = |out: &Path| {
        std::fs::read_dir(out)
            .map(|rd| !rd.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().ends_with(".idx")))
            .unwrap_or(true)
    };
    finish(comm.as_ref(), &out, !existed && args.resume.is_none(), outcome, |_| no_shard(&out))
}

/// Shared between ranks: the plan, or the coordinator's error (exit 2 for bad input, 1 else).
type Planned = std::result::Result<(Plan, Vec<ShardPlan>), (bool, String, String)>;

fn run_prepare(args: &PrepareArgs, comm: &dyn Collective, out: &Path, stop: &AtomicBool) -> Result<()> {
    let src = args.src.as_deref().expect("clap requires --src");
    // The coordinator lists the tree and sets up --out; every rank gets the plan or the error.
    let mine: Option<Planned> = comm.is_coordinator().then(|| {
        plan_and_out(src, out, args).map_err(|e| match e {
            Error::Path { path, msg } | Error::Data { path, msg } => (true, path.display().to_string(), msg),
            other => (false, out.display().to_string(), other.to_string()),
        })
    });
    let (plan, shards) = comm::broadcast_value(comm, 0, mine.as_ref())?.map_err(|(input, path, msg)| {
        if input {
            Error::Path { path: path.into(), msg }
        } else {
            Error::Invalid(format!("{path}: {msg}"))
        }
    })?;
    init_threads(&Config::default(), comm);
    init_logging(comm, out);
    let (rank, world) = (comm.rank(), comm.size());
    let count = |split: &str| shards.iter().filter(|s| s.split == split).map(|s| s.images.len()).sum::<usize>();
    if comm.is_coordinator() {
        tracing::info!(
            "prepare: {} train + {} val images of {} classes from {} at short side {} px, {} shards of {} on {world} rank(s)",
            count("train"),
            count("val"),
            plan.wnids.len(),
            src.display(),
            plan.short_side,
            shards.len(),
            plan.shard_images
        );
    }
    let mine: Vec<&ShardPlan> = shards.iter().enumerate().filter(|(k, _)| k % world == rank).map(|(_, s)| s).collect();
    let total: usize = mine.iter().map(|s| s.images.len()).sum();
    let what = if world > 1 { "prepare (rank 0's shards)" } else { "prepare" };
    let mut progress = Progress::new(what, "images", total as u64, comm.is_coordinator(), true);
    let (mut kept, mut stopped_at) = (0usize, None);
    for shard in &mine {
        if stop.load(Ordering::Relaxed) {
            stopped_at = Some(shard.file.clone());
            break;
        }
        if prepare::completed(out, shard, &plan).is_some() {
            kept += 1;
        } else {
            let meta = prepare::write_shard(src, out, shard, &plan, args.skip_bad).map_err(|e| {
                let e = match e {
                    Error::Data { path, msg } => Error::Data {
                        path,
                        msg: format!(
                            "{msg} (shards written so far are kept: add --skip-bad to leave such images out, and \
                             rerun with --resume)"
                        ),
                    },
                    other => other,
                };
                comm::fail_alone(comm, e)
            })?;
            for s in &meta.skipped {
                tracing::warn!("{}: left out {s}", meta.file);
            }
        }
        progress.inc(shard.images.len() as u64);
    }
    progress.finish();
    if kept > 0 {
        tracing::info!("rank {rank}: {kept} shard(s) already complete, kept");
    }
    if comm.any(stopped_at.is_some())? {
        let at = stopped_at.map(|f| format!("shard {f}")).unwrap_or_else(|| "a shard boundary".into());
        let written = format!("the shards written in {}", out.display());
        return Err(Error::Stopped { at, checkpoint: written });
    }
    let mut manifest: Option<Manifest> = None;
    comm::on_coordinator(comm, || {
        manifest = Some(prepare::finalize(out, &plan, &shards)?);
        Ok(())
    })?;
    if let Some(m) = manifest {
        let skipped: usize = m.shards.iter().map(|s| s.skipped.len()).sum();
        let line = format!(
            "packed {} train + {} val images ({} left out) in {} shards, {:.2} GB at short side {} px: {}",
            m.train_images,
            m.val_images,
            skipped,
            m.shards.len(),
            m.bytes as f64 / 1e9,
            m.plan.short_side,
            out.display()
        );
        tracing::info!("{line}");
        super::print_result(&line);
    }
    Ok(())
}

/// On the coordinator: the plan from the listing, then a new --out with `prepare.json`, or
/// (--resume) the existing one's plan, which must be the same.
fn plan_and_out(src: &Path, out: &Path, args: &PrepareArgs) -> Result<(Plan, Vec<ShardPlan>)> {
    let (plan, shards) = prepare::plan(src, args.short_side, args.shard_images as usize)?;
    if args.resume.is_some() {
        let path = out.join(packed::PLAN);
        if !path.is_file() {
            return Err(Error::Path {
                path: out.to_path_buf(),
                msg: format!("not a store being prepared (no {}): nothing to resume", packed::PLAN),
            });
        }
        let old: Plan = packed::read_json(&path)?;
        if let Some(field) = prepare::plan_difference(&old, &plan) {
            return Err(Error::Path {
                path: path.clone(),
                msg: format!(
                    "--resume: the {field} differs from this store's (a different preparation; choose another --out)"
                ),
            });
        }
        std::fs::create_dir_all(out.join("logs")).map_err(|e| Error::io(out.join("logs"), e))?;
        // Half-written files of the interrupted run (`.NAME.tmp-PID`, see fsutil::write_atomic).
        for e in std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    } else {
        if packed::is_packed(out) {
            let msg = "holds a packed store already (add --resume to finish an interrupted prepare)".to_string();
            return Err(Error::Path { path: out.to_path_buf(), msg });
        }
        super::create_run_dir(out)?;
        prepare::write_plan(out, &plan)?;
    }
    Ok((plan, shards))
}

/// `prepare --verify DIR`: every byte checked, progress in the log, one line of result.
fn verify_main(dir: &Path) -> i32 {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .try_init();
    let total = packed::read_json::<Manifest>(&dir.join(packed::MANIFEST))
        .map(|m| (m.train_images + m.val_images) as u64)
        .unwrap_or(0);
    let mut progress = Progress::new("verify", "images", total, true, true);
    match packed::verify(dir, |n| progress.inc(n as u64)) {
        Ok(v) => {
            progress.finish();
            println!(
                "ok: {} shards, {} images, {:.2} GB: every shard's and record's CRC-32 matches ({})",
                v.shards,
                v.images,
                v.bytes as f64 / 1e9,
                dir.display()
            );
            0
        }
        Err(e) => fail_once(&e),
    }
}
