//! `dartsif-dist slurm`: check the inputs, render the sbatch script, write and submit it.

use std::path::{Path, PathBuf};

use super::fail_once;
use super::sbatch as slurm;
use super::train::parse_genotype;
use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct SlurmArgs {
    /// Nodes of the allocation.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub nodes: usize,
    /// GPUs per node, one rank each; 0 renders the CPU variant (ranks = --tasks-per-node).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub gpus_per_node: usize,
    /// Ranks per node of the CPU variant (default: 1; with GPUs it is --gpus-per-node).
    #[arg(long, allow_negative_numbers = true)]
    pub tasks_per_node: Option<usize>,
    /// Cores per rank (libtorch threads).
    #[arg(long, allow_negative_numbers = true)]
    pub cpus_per_task: Option<usize>,
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit (Slurm's format, e.g. 24:00:00 or 2-00:00:00).
    #[arg(long, default_value = "24:00:00")]
    pub time: String,
    #[arg(long)]
    pub account: Option<String>,
    /// Job name (default: the config file's stem).
    #[arg(long)]
    pub job_name: Option<String>,
    /// srun's MPI plugin.
    #[arg(long, default_value = "pmix")]
    pub mpi: String,
    /// SIGUSR1 this many seconds before the time limit: checkpoint, exit 3, requeue.
    #[arg(long, default_value_t = 300, allow_negative_numbers = true)]
    pub signal_lead: usize,
    /// The command the job runs: search, select, train, ablate, groundtruth or compare (its
    /// `--methods` and `--seeds` through `--arg`).
    #[arg(long, default_value = "search")]
    pub command: String,
    /// The config (search, train, groundtruth; compare optionally).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// select, ablate: the searched run directory.
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// ablate: a swept setting `KEY=V1,V2,…` (repeatable).
    #[arg(long = "sweep", value_name = "KEY=V1,V2,…")]
    pub sweep: Vec<String>,
    /// Further arguments passed to the command as they are, e.g. `--arg=--edges --arg=1<-0,2<-1`
    /// (repeatable).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub pass: Vec<String>,
    /// train: the genotype or a file holding it.
    #[arg(long)]
    pub genotype: Option<String>,
    /// Config overrides passed to the command (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A job array over one key, e.g. `--array select.n=1,10,20,30,40,50`: one run directory
    /// per value under --out.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub array: Option<String>,
    /// The job's run directory (array: the parent of one per value).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Where to write the script (default cluster/<job-name>.sbatch).
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Directory of the jobs' Slurm logs.
    #[arg(long, value_name = "DIR", default_value = "cluster/logs")]
    pub log_dir: PathBuf,
    /// The dartsif-dist binary the job runs (default: this one).
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Submit it with `sbatch --parsable` and print the job id.
    #[arg(long)]
    pub submit: bool,
}

pub fn slurm_main(args: &SlurmArgs) -> i32 {
    match render_slurm(args) {
        Ok(()) => 0,
        Err(e) => fail_once(&e),
    }
}

/// `slurm`: check the inputs as far as they can be checked here, render, write, and submit.
pub fn render_slurm(a: &SlurmArgs) -> Result<()> {
    // The shell's logical directory ($PWD, symlinks kept) when it is the current directory.
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let cwd = std::env::var_os("PWD")
        .map(PathBuf::from)
        .filter(|p| p.canonicalize().ok() == cwd.canonicalize().ok())
        .unwrap_or(cwd);
    let abs = |p: &Path| -> Result<PathBuf> { Ok(if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) }) };
    let need = |flag: &str, what: Option<&str>| -> Result<String> {
        what.map(str::to_string)
            .ok_or_else(|| Error::config(format!("slurm --command {}", a.command), flag, "required for this command"))
    };
    let (args, fresh_only) = match a.command.as_str() {
        "search" => {
            let c = abs(Path::new(&need("--config", a.config.as_deref().and_then(Path::to_str))?))?;
            Config::load(Some(&c), &a.set)?; // the job would refuse a bad config: refuse it now
            (vec![], vec!["--config".to_string(), c.display().to_string()])
        }
        "select" => {
            let r = abs(Path::new(&need("--run", a.run.as_deref().and_then(Path::to_str))?))?;
            (vec!["--run".to_string(), r.display().to_string()], vec![])
        }
        "train" => {
            let c = abs(Path::new(&need("--config", a.config.as_deref().and_then(Path::to_str))?))?;
            Config::load(Some(&c), &a.set)?;
            let g = need("--genotype", a.genotype.as_deref())?;
            let g = if Path::new(&g).is_file() { abs(Path::new(&g))?.display().to_string() } else { g };
            parse_genotype(&g)?;
            (vec![], vec!["--config".to_string(), c.display().to_string(), "--genotype".to_string(), g])
        }
        "ablate" => {
            let r = abs(Path::new(&need("--run", a.run.as_deref().and_then(Path::to_str))?))?;
            if a.sweep.is_empty() {
                return Err(Error::config("slurm --command ablate", "--sweep", "required for this command"));
            }
            let sweeps = a.sweep.iter().map(|s| crate::experiment::Sweep::parse(s)).collect::<Result<Vec<_>>>()?;
            if r.is_dir() {
                // Refuse bad combinations now (a run on another file system is checked by the job).
                crate::experiment::ablation::plan(&r, &sweeps, &a.set)?;
            }
            let mut v = vec!["--run".to_string(), r.display().to_string()];
            for s in &a.sweep {
                v.extend(["--sweep".to_string(), s.clone()]);
            }
            (v, vec![])
        }
        "groundtruth" => {
            let c = abs(Path::new(&need("--config", a.config.as_deref().and_then(Path::to_str))?))?;
            Config::load(Some(&c), &a.set)?;
            (vec!["--config".to_string(), c.display().to_string()], vec![])
        }
        "compare" => {
            if !a.pass.iter().any(|p| p == "--methods" || p.starts_with("--methods=")) {
                return Err(Error::config(
                    "slurm --command compare",
                    "--arg=--methods",
                    "required for this command (e.g. --arg=--methods --arg=gdas,darts-1st+darts-im)",
                ));
            }
            let mut v = Vec::new();
            if let Some(c) = a.config.as_deref() {
                let c = abs(c)?;
                Config::load(Some(&c), &a.set)?;
                v = vec!["--config".to_string(), c.display().to_string()];
            }
            (v, vec![])
        }
        other => {
            return Err(Error::config(
                "--command",
                "command",
                format!("unknown command {other:?} (search, select, train, ablate, groundtruth or compare)"),
            ))
        }
    };
    let mut args = args;
    args.extend(a.pass.iter().cloned());
    for s in &a.set {
        args.push("--set".into());
        args.push(s.clone());
    }
    // Counts in ranges sbatch accepts; a time in Slurm's formats, longer than the signal lead.
    slurm::check_count("--nodes", a.nodes, 100_000)?;
    if a.gpus_per_node > 0 {
        slurm::check_count("--gpus-per-node", a.gpus_per_node, 64)?;
    }
    if let Some(t) = a.tasks_per_node {
        slurm::check_count("--tasks-per-node", t, 4096)?;
    }
    if let Some(c) = a.cpus_per_task {
        slurm::check_count("--cpus-per-task", c, 4096)?;
    }
    if let Some(limit) = slurm::parse_time(&a.time)? {
        if limit <= a.signal_lead as u64 {
            return Err(Error::config(
                "--signal-lead",
                "signal_lead",
                format!("{} s is not shorter than the time limit --time {} ({limit} s)", a.signal_lead, a.time),
            ));
        }
    }
    let tasks = if a.gpus_per_node > 0 { a.gpus_per_node } else { a.tasks_per_node.unwrap_or(1) };
    let job_name = a.job_name.clone().unwrap_or_else(|| {
        a.config
            .as_deref()
            .or(a.run.as_deref())
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| format!("dartsif-{}", a.command))
    });
    slurm::check_path_name("--job-name", "job_name", &job_name)?;
    let sweep = a.array.as_deref().map(slurm::parse_sweep).transpose()?;
    if let Some((key, values)) = &sweep {
        // Each value names a run directory, and must be a value `--set` accepts for the key
        // (checked against --config, or the run's config.toml, as the job would).
        let base = a.config.clone().or_else(|| a.run.as_ref().map(|r| r.join("config.toml")).filter(|p| p.is_file()));
        for v in values {
            slurm::check_path_name("--array", "array", v)?;
            let mut sets = a.set.clone();
            sets.push(format!("{key}={v}"));
            Config::load(base.as_deref(), &sets)?;
        }
    }
    let bin = match &a.bin {
        Some(b) => abs(b)?,
        None => std::env::current_exe().map_err(|e| Error::io("current executable", e))?,
    };
    let spec = slurm::SlurmSpec {
        job_name: job_name.clone(),
        nodes: a.nodes,
        gpus_per_node: a.gpus_per_node,
        tasks_per_node: tasks,
        cpus_per_task: a.cpus_per_task,
        time: a.time.clone(),
        partition: a.partition.clone(),
        account: a.account.clone(),
        mpi: a.mpi.clone(),
        signal_lead_s: a.signal_lead,
        log_dir: abs(&a.log_dir)?,
        bin,
        command: a.command.clone(),
        args,
        fresh_only,
        out: abs(&a.out)?,
        sweep,
    };
    let path = a.script.clone().unwrap_or_else(|| PathBuf::from("cluster").join(format!("{job_name}.sbatch")));
    let header = format!(
        "Rendered by dartsif-dist {} slurm; resubmit with: sbatch {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
    slurm::write(&spec, &header, &path)?;
    if a.submit {
        let o = std::process::Command::new("sbatch")
            .arg("--parsable")
            .arg(&path)
            .output()
            .map_err(|e| Error::io("sbatch", e))?;
        if !o.status.success() {
            let msg = String::from_utf8_lossy(&o.stderr).trim().to_string();
            return Err(Error::Path { path, msg: format!("sbatch refused it: {msg}") });
        }
        println!("{}", String::from_utf8_lossy(&o.stdout).trim());
    } else {
        println!("{}", path.display());
    }
    Ok(())
}
