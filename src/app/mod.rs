//! The application: one module per command (the clap argument types with it), the run
//! directory's lifecycle with its single error path, and the runtime set-up of a rank
//! (threads, logging, signals). The binary (`src/main.rs`) parses the command line and calls
//! the command's `*_main`, which returns the process's exit status.

pub mod compare;
pub mod demo;
pub mod experiment;
pub mod prepare;
pub mod sbatch;
pub mod search;
pub mod select;
pub mod slurm;
pub mod train;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::comm::{self, Collective};
use crate::config::Config;
use crate::data;
use crate::error::{Error, Result};

/// `--set KEY=VALUE`, the config overrides of every command that reads a config (a list of
/// strings wherever one is wanted).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Override a config key, e.g. `--set search.epochs=3` or `--set select.ihvp="neumann"`
    /// (repeatable; values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// `--config FILE` and its `--set` overrides, for the commands that start from a config.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// TOML config (see configs/); without it the embedded demo config is used (with --resume:
    /// the run's own config.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub set: Overrides,
}

/// `--out DIR` and `--resume`, for the commands that write a run and can continue it (each
/// command's help says more of its `--resume`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunOut {
    /// Directory to create (must not exist, or be empty); with --resume, the one to continue.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Continue the work in --out from a checkpoint: `auto` (the newest that verifies) or a
    /// checkpoint directory.
    #[arg(long, value_name = "auto|CHECKPOINT")]
    pub resume: Option<String>,
}

impl RunOut {
    /// Whether --out exists already (a failure removes only a directory the command created),
    /// and the stop flag, watched from now on.
    pub fn begin(&self) -> (bool, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        (self.out.exists(), watch_signals())
    }
}

impl std::ops::Deref for Overrides {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.set
    }
}

impl std::ops::DerefMut for Overrides {
    fn deref_mut(&mut self) -> &mut Vec<String> {
        &mut self.set
    }
}

/// SIGTERM / SIGUSR1 (Slurm's warning before preemption or time-out) raise the returned flag;
/// a search or selection stops at its next step or round boundary after a checkpoint, with exit
/// status 3.
/// The one line for a failed allocation reported by libtorch (`msg`: the panic's text), or
/// `None` when `msg` is another failure. Host ("… you tried to allocate 33554432 bytes …") and
/// CUDA ("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; …") messages; the line names the
/// rank and the settings that size a step.
pub fn out_of_memory_line(msg: &str, rank: usize) -> Option<String> {
    let oom = ["can't allocate memory", "out of memory", "Cannot allocate memory"];
    if !oom.iter().any(|p| msg.contains(p)) {
        return None;
    }
    let host = || {
        let bytes = msg.split("you tried to allocate ").nth(1)?.split(' ').next()?.parse::<u64>().ok()?;
        Some(format!("an allocation of {:.1} MiB failed", bytes as f64 / (1u64 << 20) as f64))
    };
    let cuda = || {
        let mut t = msg.split("Tried to allocate ").nth(1)?.split_whitespace();
        let (n, unit) = (t.next()?.parse::<f64>().ok()?, t.next()?.trim_end_matches([',', '.', ';']));
        let gpu = msg.split("GPU ").nth(1).map(|g| g.chars().take_while(char::is_ascii_digit).collect::<String>());
        let gpu = gpu.filter(|g| !g.is_empty()).map(|g| format!(" on GPU {g}"));
        Some(format!("an allocation of {n:.2} {unit} failed{}", gpu.unwrap_or_default()))
    };
    let what = host().or_else(cuda).unwrap_or_else(|| "an allocation failed".into());
    let device = if msg.contains("CUDA") { "device " } else { "" };
    Some(format!(
        "error: out of {device}memory during the run on rank {rank} ({what}): a smaller search.micro_batch or \
         search.batch_size (select.batch_size, train.micro_batch) lowers the memory of a step"
    ))
}

pub fn watch_signals() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1] {
        if let Err(e) = signal_hook::flag::register(sig, std::sync::Arc::clone(&stop)) {
            eprintln!("warning: cannot watch signal {sig}: {e}");
        }
    }
    stop
}

/// What `search` and `select` do first: open the data (bad data stops the run before anything
/// is written; the config gets the data's classes and image size), then prepare the output
/// directory or find the checkpoint to resume, then threads and logging.
pub fn open_run(
    cfg: &Config,
    comm: &dyn Collective,
    out: &Path,
    resume: Option<&str>,
) -> Result<(Config, data::Source, Option<PathBuf>)> {
    let mut cfg = cfg.clone();
    let source = data::open(&mut cfg)?;
    if let Some(p) = &cfg.select.benchmark_table {
        // A bad table stops the run now, not after the search.
        crate::report::benchmark::BenchmarkTable::load(p)?;
    }
    let from = start_or_resume(comm, out, resume)?;
    init_threads(&cfg, comm);
    init_logging(comm, out);
    Ok((cfg, source, from))
}

/// A fresh run directory, or (with `--resume`) the checkpoint to continue from, chosen by rank
/// 0 and shared; damaged newer checkpoints are logged once logging is up (by the caller).
pub fn start_or_resume(comm: &dyn Collective, out: &Path, resume: Option<&str>) -> Result<Option<PathBuf>> {
    let Some(how) = resume else {
        prepare_out_dir(comm, out)?;
        return Ok(None);
    };
    if comm.is_coordinator() {
        // The marker of the stop being resumed from (see `mark_stopped`).
        let _ = std::fs::remove_file(out.join("STOPPED"));
    }
    let mine: Option<std::result::Result<Chosen, (String, String)>> = comm.is_coordinator().then(|| {
        choose_checkpoint(out, how).map_err(|e| match e {
            Error::Path { path, msg } => (path.display().to_string(), msg),
            other => (out.display().to_string(), other.to_string()),
        })
    });
    let (dir, skipped) =
        comm::broadcast_value(comm, 0, mine.as_ref())?.map_err(|(path, msg)| Error::Path { path: path.into(), msg })?;
    std::fs::create_dir_all(out.join("logs")).map_err(|e| Error::io(out.join("logs"), e))?;
    init_logging(comm, out);
    if comm.is_coordinator() {
        // Once for the job (every rank got the same list), not once per rank.
        skipped.iter().for_each(|w| tracing::warn!("{w}"));
    }
    if dir.is_none() {
        tracing::info!("--resume {how}: no checkpoint yet, starting from the beginning");
    }
    Ok(dir.map(PathBuf::from))
}

/// Whether a run directory holds results worth keeping: a checkpoint or a searched supernet.
pub fn out_has_results(out: &Path) -> bool {
    out.join("supernet.safetensors").exists() || !crate::checkpoint::store::list(&out.join("checkpoints")).is_empty()
}

/// After a signal-triggered checkpoint, the coordinator leaves `OUT/STOPPED` (the checkpoint's
/// path): the Slurm script requeues on it even when srun reports a signal rather than status 3.
pub fn mark_stopped(comm: &dyn Collective, out: &Path, e: &Error) {
    if let Error::Stopped { checkpoint, .. } = e {
        if comm.is_coordinator() {
            let _ = std::fs::write(out.join("STOPPED"), format!("{checkpoint}\n"));
        }
    }
}

/// The start of every command that runs on ranks: the collectives for `cfg`, then `check`
/// (a check that needs the world size). The error is the process's exit status, its message
/// printed once.
pub fn start(
    cfg: &Config,
    check: impl FnOnce(&Config, usize) -> Result<()>,
) -> std::result::Result<Box<dyn Collective>, i32> {
    let comm = comm::init(cfg.comm, cfg.device).map_err(|e| fail_once(&e))?;
    check(cfg, comm.size()).map_err(|e| report_error(comm.as_ref(), &e))?;
    Ok(comm)
}

/// [`start`] on a config just loaded: a bad config's error printed once, as its exit status.
pub fn start_loaded(
    cfg: Result<Config>,
    check: impl FnOnce(&Config, usize) -> Result<()>,
) -> std::result::Result<(Config, Box<dyn Collective>), i32> {
    let cfg = cfg.map_err(|e| fail_once(&e))?;
    let comm = start(&cfg, check)?;
    Ok((cfg, comm))
}

/// The end of every command that writes a run directory: status 0, or the error printed once
/// with its status, a `STOPPED` marker for a stopped run, and the directory removed when this
/// command `created` it and `removable` says the failure left nothing worth keeping.
pub fn finish(
    comm: &dyn Collective,
    out: &Path,
    created: bool,
    outcome: Result<()>,
    removable: impl FnOnce(&Error) -> bool,
) -> i32 {
    let Err(e) = outcome else {
        if let Some(n) = comm.device_calls() {
            tracing::info!("device collectives: {n} calls through {} on this rank", comm.backend());
        }
        return 0;
    };
    if comm.is_coordinator() && created && removable(&e) {
        let _ = std::fs::remove_dir_all(out);
    }
    mark_stopped(comm, out, &e);
    report_error(comm, &e)
}

/// An error before the collectives exist: every rank has it, rank 0 prints it.
pub fn fail_once(e: &Error) -> i32 {
    if comm::launcher_rank() == 0 {
        crate::error::print_line(&format!("error: {e}"));
    }
    e.exit_code()
}

/// Errors that every rank reached together are printed by rank 0; the status is the error's.
pub fn report_error(comm: &dyn Collective, e: &Error) -> i32 {
    if comm.is_coordinator() {
        crate::error::print_line(&format!("error: {e}"));
    }
    e.exit_code()
}

/// Rank 0 prepares the run directory; the outcome is shared so all ranks stop together.
/// Set by batch commands whose units each print a result (`compare`): their own table is the
/// output, not one genotype per unit.
static QUIET_RESULTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A command's result line on stdout (the genotype), unless a batch command prints its own.
pub(crate) fn print_result(line: &str) {
    if !QUIET_RESULTS.load(std::sync::atomic::Ordering::Relaxed) {
        println!("{line}");
    }
}

pub(crate) fn quiet_results() {
    QUIET_RESULTS.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub fn prepare_out_dir(comm: &dyn Collective, out: &Path) -> Result<()> {
    let mine: Option<Option<(String, String)>> = comm.is_coordinator().then(|| {
        create_run_dir(out).err().map(|e| match e {
            Error::Path { path, msg } => (path.display().to_string(), msg),
            other => (out.display().to_string(), other.to_string()),
        })
    });
    match comm::broadcast_value(comm, 0, mine.as_ref())? {
        None => Ok(()),
        Some((path, msg)) => Err(Error::Path { path: path.into(), msg }),
    }
}

/// `--resume auto`: the newest checkpoint under `out/checkpoints` that verifies (none: a fresh
/// start); `--resume DIR`: that checkpoint, which must verify.
/// (the checkpoint, warnings about damaged newer ones).
type Chosen = (Option<String>, Vec<String>);

/// `--resume auto`: the newest checkpoint under `out/checkpoints` that verifies (none: a fresh
/// start); `--resume DIR`: that checkpoint, which must verify.
pub fn choose_checkpoint(out: &Path, how: &str) -> Result<Chosen> {
    if !out.is_dir() {
        return Err(Error::Path { path: out.to_path_buf(), msg: "no such run directory to resume".into() });
    }
    if how == "auto" {
        let root = out.join("checkpoints");
        let (found, skipped) = crate::checkpoint::store::newest_valid(&root);
        if found.is_none() && !skipped.is_empty() {
            return Err(Error::Path { path: root, msg: format!("no checkpoint here verifies ({})", skipped[0]) });
        }
        return Ok((found.map(|p| p.display().to_string()), skipped));
    }
    let dir = PathBuf::from(how);
    crate::checkpoint::store::verify(&dir)?;
    Ok((Some(dir.display().to_string()), Vec::new()))
}

pub fn create_run_dir(out: &Path) -> Result<()> {
    let perr = |msg: String| Error::Path { path: out.to_path_buf(), msg };
    if out.exists() {
        if !out.is_dir() {
            return Err(perr("exists and is not a directory".into()));
        }
        let mut entries = std::fs::read_dir(out).map_err(|e| perr(format!("cannot read: {e}")))?;
        if entries.next().is_some() {
            return Err(perr("output directory exists and is not empty (choose another --out)".into()));
        }
    }
    std::fs::create_dir_all(out.join("logs")).map_err(|e| perr(format!("cannot create output directory: {e}")))?;
    // Probe writability now rather than after hours of search.
    let probe = out.join(".write-test");
    std::fs::write(&probe, b"").map_err(|e| perr(format!("output directory is not writable: {e}")))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

pub fn init_threads(cfg: &Config, comm: &dyn Collective) {
    let n = if cfg.threads > 0 {
        cfg.threads
    } else {
        // One process per core group: divide the cores among the ranks on this node.
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        (cores / comm.ranks_on_node().max(1)).max(1)
    };
    tch::set_num_threads(n as i32);
    // rayon decodes samples; keep it to the same share of cores.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
}

pub fn init_logging(comm: &dyn Collective, out: &Path) {
    use tracing_subscriber::prelude::*;
    let rank = comm.rank();
    // Appending: a resumed run continues its ranks' logs.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("logs").join(format!("rank-{rank}.log")))
        .ok();
    let stderr_level = if rank == 0 { "info" } else { "warn" };
    // DARTSIF_LOG (EnvFilter syntax) sets the terminal's level; the per-rank files keep `info`.
    let filter = tracing_subscriber::EnvFilter::try_from_env("DARTSIF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(stderr_level));
    // Colours only on a terminal: a Slurm log or a redirected stderr gets plain text.
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    let file_layer = file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(f))
            .with_ansi(false)
            .with_filter(tracing_subscriber::EnvFilter::new("info"))
    });
    let _ = tracing_subscriber::registry().with(stderr).with(file_layer).try_init();
    for w in crate::comm::take_start_warnings() {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn out_of_memory_messages_become_one_line() {
        // tch's host message (newlines escaped) and libtorch 2.11's CUDA caching allocator's.
        let host = "Torch(\"[enforce fail at alloc_cpu.cpp:119] data. DefaultCPUAllocator: not enough memory: you \
                    tried to allocate 33554432 bytes.\") Cannot allocate memory";
        let line = super::out_of_memory_line(host, 1).unwrap();
        assert!(
            line.starts_with("error: out of memory during the run on rank 1 (an allocation of 32.0 MiB failed)"),
            "{line}"
        );
        let cuda = "Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.72 GiB \
                    of which 1.19 GiB is free. (GPU 0; 139.72 GiB total capacity)\")";
        let line = super::out_of_memory_line(cuda, 3).unwrap();
        assert!(
            line.starts_with(
                "error: out of device memory during the run on rank 3 (an allocation of 2.00 GiB failed on GPU 0)"
            ),
            "{line}"
        );
        assert!(line.contains("select.batch_size") && line.contains("search.micro_batch"), "{line}");
        assert_eq!(super::out_of_memory_line("index out of range", 0), None);
    }
}
