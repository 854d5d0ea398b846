//! Command line: `dartsif-dist search | info`. The binary only calls [`main`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::comm::{self, Collective};
use crate::config::Config;
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::influence::Resumable;
use crate::report::{self, Metrics, RunInfo};

mod demo;
mod experiment;
mod slurm;
use crate::search::{EpochStats, Observer, SearchState, Searcher, StepStats, Tally};
use crate::select;

#[derive(Debug, Parser)]
#[command(
    name = "dartsif-dist",
    version,
    about = "Distributed DARTS supernet search with influence-based operation selection"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// The demo (`make demo`): a small search, then every op scored by magnitude, drop, DARTS-IF
    /// and DARTS-IM, compared per edge and against the actual effect of removing each op.
    Demo(demo::DemoArgs),
    /// Train a supernet by bi-level search and select an architecture.
    Search(SearchArgs),
    /// Score every op of a searched supernet with a criterion and select an architecture.
    Select(SelectArgs),
    /// Train an architecture from scratch (DARTS's evaluation protocol by default; `[train]`).
    Train(TrainArgs),
    /// Render an sbatch script running a command on a Slurm allocation (one rank per GPU).
    Slurm(SlurmArgs),
    /// Every combination of swept selection settings (N, IHVP, γ, seeds, …) as one job, with
    /// tables (mean ± std over seeds) and figures.
    Ablate(experiment::AblateArgs),
    /// Train every architecture of a small NAS-Bench-201 cell space from scratch: a benchmark
    /// table of one's own, and the Kendall τ of criteria against it.
    Groundtruth(experiment::GroundtruthArgs),
    /// Score a criterion on the epoch-end checkpoints of a search, after the fact.
    Track(experiment::TrackArgs),
    /// Re-render the figures of a run, selection, ablation or ground-truth directory.
    Report(experiment::ReportArgs),
    /// Analyses of a searched supernet.
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Print versions and whether CUDA is available.
    Info,
    /// Check the collectives on this launch (e.g. `mpirun -np 4 dartsif-dist check-comm`).
    CheckComm,
}

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// TOML config (see configs/); without it the embedded demo config is used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. `--set search.epochs=3` (repeatable; values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory to create (must not exist, or be empty; with --resume, the run to continue).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Continue the run in --out from a checkpoint: `auto` (the newest one that verifies; a
    /// fresh start when there is none) or a checkpoint directory. Without --config the run's
    /// own config.toml is used.
    #[arg(long, value_name = "auto|CHECKPOINT")]
    pub resume: Option<String>,
    /// Search once per seed as one job (`--seeds 1,2,3`): ranks split into per-seed groups,
    /// runs in `OUT/seed-S`, and `OUT/seeds.{json,csv}` with mean ± std over seeds.
    #[arg(long, value_name = "S1,S2,…")]
    pub seeds: Option<String>,
    /// With --seeds: ranks per seed (0: as many groups as seeds, up to one per rank).
    #[arg(long = "ranks-per-job", default_value_t = 0)]
    pub ranks_per_job: usize,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The architecture: its text (a DARTS `Genotype(...)` or an NB201 arch string) or a file
    /// holding it, such as a run's genotype.txt. With --resume: the run's own by default.
    #[arg(long, value_name = "GENOTYPE|FILE")]
    pub genotype: Option<String>,
    /// TOML config (data and `[train]`); without it the embedded demo config is used (with
    /// --resume: the run's own config.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Continue the training in --out from a checkpoint: `auto` (the newest that verifies) or
    /// a checkpoint directory.
    #[arg(long, value_name = "auto|CHECKPOINT")]
    pub resume: Option<String>,
    /// Override a config key, e.g. `--set train.epochs=10` (repeatable; values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory to create (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

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
    /// The command the job runs: search, select, train, ablate or groundtruth.
    #[arg(long, default_value = "search")]
    pub command: String,
    /// The config (search, train, groundtruth).
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

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// Compare every criterion with the actual loss change of removing each op and fine-tuning.
    Fidelity(FidelityArgs),
}

#[derive(Debug, clap::Args)]
pub struct FidelityArgs {
    /// Run directory of a `search`.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// SGD steps of fine-tuning after each removal.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Fine-tuning learning rate; default search.weights.lr / 10 (as DARTS-PT's projection).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Criteria to score, comma-separated (default: all): magnitude, drop, darts-if/IHVP
    /// (identity, neumann, sherman-morrison, woodbury, cg, exact), darts-im/IHVP/SIGN (the
    /// configured select.ihvp; paper or negated), e.g. `--criteria drop,darts-if/woodbury`.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub criteria: Vec<String>,
    /// Override any config key, e.g. `--set select.ihvp="neumann"` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Output directory to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// Run directory of a `search` (its config.toml and supernet.safetensors are read).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// magnitude | drop | darts-if | darts-im | darts-pt  (select.criterion)
    #[arg(long)]
    pub criterion: Option<String>,
    /// identity | neumann | sherman-morrison | woodbury | cg | exact  (select.ihvp)
    #[arg(long)]
    pub ihvp: Option<String>,
    /// Number of evaluation batches N (select.n)
    #[arg(long)]
    pub n: Option<usize>,
    /// Neumann step γ (select.gamma)
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Neumann terms K (select.k)
    #[arg(long)]
    pub k: Option<usize>,
    /// Fisher damping η (select.eta)
    #[arg(long)]
    pub eta: Option<f64>,
    /// DARTS-IM sign: paper | negated (select.im_sign)
    #[arg(long = "im-sign")]
    pub im_sign: Option<String>,
    /// Reproduce the authors' DARTS-IM computation (select.faithful)
    #[arg(long)]
    pub faithful: bool,
    /// Override any config key, e.g. `--set select.precision=f64` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Output directory to create (must not exist, or be empty; with --resume, the selection
    /// to continue).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Continue an interrupted `drop`/`darts-if` selection in --out from its progress
    /// checkpoint: `auto` (the newest that verifies) or a checkpoint directory. Repeat the
    /// original flags.
    #[arg(long, value_name = "auto|CHECKPOINT")]
    pub resume: Option<String>,
}

impl SelectArgs {
    /// The flags as `select.*` overrides, before the explicit `--set`s.
    fn overrides(&self) -> Vec<String> {
        let mut o = Vec::new();
        let q = |s: &str| format!("{s:?}");
        if let Some(v) = &self.criterion {
            o.push(format!("select.criterion={}", q(v)));
        }
        if let Some(v) = &self.ihvp {
            o.push(format!("select.ihvp={}", q(v)));
        }
        if let Some(v) = self.n {
            o.push(format!("select.n={v}"));
        }
        if let Some(v) = self.gamma {
            o.push(format!("select.gamma={v:e}"));
        }
        if let Some(v) = self.k {
            o.push(format!("select.k={v}"));
        }
        if let Some(v) = self.eta {
            o.push(format!("select.eta={v:e}"));
        }
        if let Some(v) = &self.im_sign {
            o.push(format!("select.im_sign={}", q(v)));
        }
        if self.faithful {
            o.push("select.faithful=true".into());
        }
        o.extend(self.set.iter().cloned());
        o
    }
}

/// Rank from the launcher's environment, before MPI is initialised (for printing errors once).
fn launcher_rank() -> usize {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Run the CLI; returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Command::Demo(args) => demo::demo_main(&args),
        Command::Info => info(),
        Command::CheckComm => check_comm(),
        Command::Search(args) => search_main(&args),
        Command::Select(args) => select_main(&args),
        Command::Train(args) => train_main(&args),
        Command::Slurm(args) => slurm_main(&args),
        Command::Ablate(args) => experiment::ablate_main(&args),
        Command::Groundtruth(args) => experiment::groundtruth_main(&args),
        Command::Track(args) => experiment::track_main(&args),
        Command::Report(args) => experiment::report_main(&args),
        Command::Inspect(InspectCommand::Fidelity(args)) => fidelity_main(&args),
    }
}

/// A command line clap refuses: its first line alone (`error: invalid value '-1' for '--nodes
/// <NODES>': …`), status 2, like every other input error; help and version print as usual.
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            e.exit()
        }
        _ => {
            let text = e.render().to_string();
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("error: invalid command line");
            if launcher_rank() == 0 {
                eprintln!("{}", line.trim_end());
            }
            2
        }
    }
}

fn info() -> i32 {
    println!("dartsif-dist {}", env!("CARGO_PKG_VERSION"));
    println!("tch 0.24.0, libtorch {}", env!("DARTSIF_LIBTORCH_VERSION"));
    println!("MPI library: {}", comm::mpi_library_version().unwrap_or_else(|| "none (built without `mpi`)".into()));
    println!("CUDA available: {}", tch::Cuda::is_available());
    0
}

fn check_comm() -> i32 {
    let comm = match comm::init(&Config::default()) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    match comm::self_check(comm.as_ref()) {
        Ok(()) => {
            if comm.is_coordinator() {
                println!("collectives ok: {} ranks, backend {}", comm.size(), comm.backend());
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            comm.abort(1)
        }
    }
}

fn search_main(args: &SearchArgs) -> i32 {
    if let Some(list) = &args.seeds {
        return search_seeds_main(args, list);
    }
    // Input errors are the same on every rank: print them once.
    let config = match (&args.config, &args.resume) {
        (None, Some(_)) => {
            let own = args.out.join("config.toml");
            if !own.is_file() {
                let msg = "not a run directory to resume (no config.toml; pass --config to start it)".into();
                return fail_once(&Error::Path { path: args.out.clone(), msg });
            }
            Some(own)
        }
        (c, _) => c.clone(),
    };
    let cfg = match Config::load(config.as_deref(), &args.set) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    let comm = match comm::init(&cfg) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    if let Err(e) = cfg.check_world(comm.size()) {
        return report_error(comm.as_ref(), &e);
    }
    let existed = args.out.exists();
    let stop = watch_signals();
    match run_search(&cfg, comm.as_ref(), &args.out, args.resume.as_deref(), Some(&stop)) {
        Ok(()) => 0,
        Err(e) => {
            // A run stopped by bad input (say an undecodable image met mid-epoch) leaves
            // nothing behind; failures of a valid run keep their logs.
            // Never a directory that holds a checkpoint or a searched supernet (an error in the
            // selection after the search, say).
            let kept = out_has_results(&args.out);
            if comm.is_coordinator()
                && !existed
                && args.resume.is_none()
                && e.exit_code() == 2
                && !matches!(e, Error::Path { .. })
                && !kept
            {
                let _ = std::fs::remove_dir_all(&args.out);
            }
            mark_stopped(comm.as_ref(), &args.out, &e);
            report_error(comm.as_ref(), &e)
        }
    }
}

fn slurm_main(args: &SlurmArgs) -> i32 {
    match render_slurm(args) {
        Ok(()) => 0,
        Err(e) => fail_once(&e),
    }
}

/// `slurm`: check the inputs as far as they can be checked here, render, write, and submit.
fn render_slurm(a: &SlurmArgs) -> Result<()> {
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
        other => {
            return Err(Error::config(
                "--command",
                "command",
                format!("unknown command {other:?} (search, select, train, ablate or groundtruth)"),
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

/// The genotype of `--genotype`: the text itself, or the file it names.
fn parse_genotype(arg: &str) -> Result<crate::space::Genotype> {
    use crate::space::{DartsGenotype, Genotype, Nb1Shot1Genotype, Nb201Genotype};
    let path = Path::new(arg);
    let (text, source) = if path.is_file() {
        let t = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        (t, path.display().to_string())
    } else {
        (arg.to_string(), "--genotype".to_string())
    };
    let text = text.trim();
    let parsed = if text.starts_with("Genotype(") {
        text.parse::<DartsGenotype>().map(Genotype::Darts)
    } else if text.starts_with("ModelSpec(") {
        text.parse::<Nb1Shot1Genotype>().map(Genotype::Nb1Shot1)
    } else if text.starts_with('|') {
        text.parse::<Nb201Genotype>().map(Genotype::Nb201)
    } else {
        Err("expected a DARTS Genotype(...), an NB201 arch string |op~0|+..., or a file holding one".into())
    };
    parsed.map_err(|msg| Error::config(&source, "genotype", msg))
}

fn train_main(args: &TrainArgs) -> i32 {
    let own = |file: &str| -> std::result::Result<Option<PathBuf>, Error> {
        let p = args.out.join(file);
        if p.is_file() {
            Ok(Some(p))
        } else {
            let msg = format!("not a training run to resume (no {file}; pass --config and --genotype to start it)");
            Err(Error::Path { path: args.out.clone(), msg })
        }
    };
    let resuming = args.resume.is_some();
    let config = match (&args.config, resuming) {
        (None, true) => match own("config.toml") {
            Ok(p) => p,
            Err(e) => return fail_once(&e),
        },
        (c, _) => c.clone(),
    };
    let genotype_arg = match (&args.genotype, resuming) {
        (Some(g), _) => g.clone(),
        (None, true) => match own("genotype.txt") {
            Ok(p) => p.expect("exists").display().to_string(),
            Err(e) => return fail_once(&e),
        },
        (None, false) => {
            return fail_once(&Error::config("--genotype", "genotype", "required (the architecture to train)"))
        }
    };
    let cfg = match Config::load(config.as_deref(), &args.set) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    let genotype = match parse_genotype(&genotype_arg) {
        Ok(g) => g,
        Err(e) => return fail_once(&e),
    };
    let comm = match comm::init(&cfg) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    if let Err(e) = cfg.check_fault(comm.size()) {
        return report_error(comm.as_ref(), &e);
    }
    let existed = args.out.exists();
    let stop = watch_signals();
    match run_train(&cfg, comm.as_ref(), &genotype, &args.out, args.resume.as_deref(), Some(&stop)) {
        Ok(()) => 0,
        Err(e) => {
            if comm.is_coordinator() && !existed && !resuming && e.exit_code() == 2 && !matches!(e, Error::Path { .. })
            {
                let _ = std::fs::remove_dir_all(&args.out);
            }
            mark_stopped(comm.as_ref(), &args.out, &e);
            report_error(comm.as_ref(), &e)
        }
    }
}

/// The `train` command: the genotype's network from scratch on all training images, the test
/// set after every epoch; `metrics.jsonl`, `model.safetensors`, `report.json`.
pub fn run_train(
    cfg: &Config,
    comm: &dyn Collective,
    genotype: &crate::space::Genotype,
    out: &Path,
    resume: Option<&str>,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let mut cfg = cfg.clone();
    let source = data::open(&mut cfg)?;
    let cfg = &cfg;
    let (world, t) = (comm.size(), &cfg.train);
    let micro = if t.micro_batch == 0 { t.batch_size / world } else { t.micro_batch };
    if t.batch_size % world != 0 || micro == 0 || (t.batch_size / world) % micro != 0 {
        return Err(Error::config(
            "config",
            "train.batch_size",
            format!(
                "{} must split into {world} equal shards of whole micro-batches (train.micro_batch = {})",
                t.batch_size, t.micro_batch
            ),
        ));
    }
    let train = crate::train::training_indices(&source);
    if train.len() < t.batch_size {
        return Err(Error::config(
            "config",
            "train.batch_size",
            format!("{} is larger than the {} training images", t.batch_size, train.len()),
        ));
    }
    // Built (seeded) before the run directory exists: a genotype it cannot build writes nothing.
    tch::manual_seed(cfg.seed as i64);
    let net = crate::network::build(
        genotype,
        crate::network::NetworkConfig {
            channels: t.channels as i64,
            layers: t.layers,
            num_classes: cfg.data.num_classes as i64,
            auxiliary: t.auxiliary,
        },
        tch::Kind::Float,
    )?;
    let from = start_or_resume(comm, out, resume)?;
    init_threads(cfg);
    init_logging(comm, out);
    comm.broadcast_tensors(0, &net.params().tensors)?;
    let run = RunInfo::collect(cfg, comm.backend(), world);
    let coord = comm.is_coordinator();
    if coord && from.is_none() {
        report::write_config(out, cfg, &run)?;
        report::write_genotype(out, genotype)?;
    }
    tracing::info!("{}", source.summary);
    tracing::info!(
        "train: {genotype}: {} weights, {} epochs of {} training images, batch {}, {} ranks",
        net.params().count(),
        t.epochs,
        train.len(),
        t.batch_size,
        world
    );
    let n = net.params().tensors.len();
    let opt = crate::search::optim::Sgd::new(t.weights.clone(), n);
    let mut state = crate::train::TrainState { net, opt, epoch: 0, step: 0, partial: [0.0; 3] };
    if let Some(dir) = &from {
        let meta = crate::checkpoint::load_train(dir, &mut state, cfg, &genotype.to_string(), world)?;
        tracing::info!("resumed from {} (epoch {}, step {})", dir.display(), meta.epoch, meta.step);
    }
    let trainer = crate::train::Trainer {
        cfg,
        comm,
        data: source.data.as_ref(),
        train,
        test: source.test.clone(),
        genotype: genotype.to_string(),
        checkpoints: cfg.checkpoint.enabled.then(|| out.join("checkpoints")),
        stop,
    };
    let path = out.join("metrics.jsonl");
    let done = state.epoch;
    let mut metrics = match (coord, &from) {
        (false, _) => None,
        (true, None) => Some(report::JsonLines::create(path)?),
        (true, Some(_)) => {
            Some(report::JsonLines::resume(path, |v| v["epoch"].as_u64().is_some_and(|e| (e as usize) < done))?)
        }
    };
    let mut last = None;
    while state.epoch < t.epochs {
        let e = trainer.epoch(&mut state)?;
        tracing::info!(
            "epoch {:>3}  lr {:.5}  drop-path {:.3}  train {:.4}/{:.3}  test {}  {:.1} s",
            e.epoch,
            e.lr,
            e.drop_path,
            e.train_loss,
            e.train_acc,
            e.test_acc.map_or("-".to_string(), |a| format!("{:.4}/{a:.4}", e.test_loss.unwrap_or(f64::NAN))),
            e.seconds
        );
        if let Some(m) = &mut metrics {
            let mut v = serde_json::to_value(&e).expect("serialisable");
            v["kind"] = serde_json::json!("epoch");
            m.line(v)?;
        }
        last = Some(e);
    }
    if coord {
        let named = state.net.params().named();
        let tensors: Vec<(String, tch::Tensor)> =
            named.into_iter().map(|(k, v)| (k, crate::checkpoint::on_host(&v))).collect();
        let tmp = out.join(".model.safetensors.tmp");
        tch::Tensor::write_safetensors(&tensors, &tmp)?;
        std::fs::rename(&tmp, out.join("model.safetensors"))
            .map_err(|e| Error::io(out.join("model.safetensors"), e))?;
        let report = serde_json::json!({
            "genotype": genotype.to_string(),
            "genotype_json": genotype,
            "weights": state.net.params().count(),
            "final_epoch": last,
            "run": run,
        });
        crate::checkpoint::write_atomic(
            &out.join("report.json"),
            serde_json::to_string_pretty(&report).expect("json").as_bytes(),
        )?;
        if let Some(e) = &last {
            println!("test accuracy {}", e.test_acc.map_or("-".into(), |a| format!("{a:.4}")));
        }
    }
    comm.barrier()
}

/// SIGTERM / SIGUSR1 (Slurm's warning before preemption or time-out) raise the returned flag;
/// a search or selection stops at its next step or round boundary after a checkpoint, with exit
/// status 3.
fn watch_signals() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1] {
        if let Err(e) = signal_hook::flag::register(sig, std::sync::Arc::clone(&stop)) {
            eprintln!("warning: cannot watch signal {sig}: {e}");
        }
    }
    stop
}

/// `search --seeds`: one search per seed in rank groups.
fn search_seeds_main(args: &SearchArgs, list: &str) -> i32 {
    let prepared = || -> Result<(Vec<u64>, Vec<Config>)> {
        let seeds = crate::experiment::parse_seeds(list)?;
        if let Some(r) = args.resume.as_deref().filter(|r| *r != "auto") {
            return Err(Error::config(
                "--resume",
                "resume",
                format!("with --seeds every seed resumes from its own newest checkpoint: use `auto` (got {r:?})"),
            ));
        }
        let config = match (&args.config, &args.resume) {
            (None, Some(_)) => {
                let first = args.out.join(format!("seed-{}", seeds[0])).join("config.toml");
                if !first.is_file() {
                    let msg = "not a multi-seed run to resume (pass --config to start it)".into();
                    return Err(Error::Path { path: args.out.clone(), msg });
                }
                Some(first)
            }
            (c, _) => c.clone(),
        };
        let cfgs = seeds
            .iter()
            .map(|s| {
                let mut sets = args.set.clone();
                sets.push(format!("seed={s}"));
                Config::load(config.as_deref(), &sets)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((seeds, cfgs))
    };
    let (seeds, cfgs) = match prepared() {
        Ok(p) => p,
        Err(e) => return fail_once(&e),
    };
    let comm = match comm::init(&cfgs[0]) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    let existed = args.out.exists();
    let stop = watch_signals();
    let run = || -> Result<()> {
        let resume = args.resume.is_some() && args.out.is_dir();
        if !resume {
            prepare_out_dir(comm.as_ref(), &args.out)?;
        }
        comm::on_coordinator(comm.as_ref(), || {
            let _ = std::fs::remove_file(args.out.join("STOPPED"));
            std::fs::create_dir_all(args.out.join("logs")).map_err(|e| Error::io(args.out.join("logs"), e))
        })?;
        init_logging(comm.as_ref(), &args.out);
        // Seeds already finished (their report, and their selection when one follows the
        // search) are not run again; the coordinator decides for all ranks.
        let finished = |s: u64| {
            let dir = args.out.join(format!("seed-{s}"));
            let after = cfgs[seeds.iter().position(|&x| x == s).expect("listed")].select.after_search;
            dir.join("report.json").is_file() && (!after || dir.join("select").join("scores.json").is_file())
        };
        let mine: Option<Vec<u64>> =
            comm.is_coordinator().then(|| seeds.iter().copied().filter(|&s| resume && finished(s)).collect());
        let done: Vec<u64> = comm::broadcast_value(comm.as_ref(), 0, mine.as_ref())?;
        experiment::over_seeds(comm.as_ref(), &seeds, args.ranks_per_job, &args.out, "report.json", &mut |g, s, dir| {
            if done.contains(&s) {
                tracing::info!("seed {s}: finished earlier ({})", dir.display());
                return Ok(());
            }
            let cfg = &cfgs[seeds.iter().position(|&x| x == s).expect("listed")];
            cfg.check_world(g.size())?;
            let resume = if dir.exists() { args.resume.as_deref() } else { None };
            run_search(cfg, g, dir, resume, Some(&stop))
        })
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            // Bad input removes what this command created, unless a seed finished.
            let any_done = seeds.iter().any(|s| args.out.join(format!("seed-{s}/report.json")).is_file());
            if comm.is_coordinator()
                && !existed
                && args.resume.is_none()
                && e.exit_code() == 2
                && !matches!(e, Error::Path { .. })
                && !any_done
            {
                let _ = std::fs::remove_dir_all(&args.out);
            }
            mark_stopped(comm.as_ref(), &args.out, &e);
            report_error(comm.as_ref(), &e)
        }
    }
}

/// `select --run DIR` on a multi-seed search: one selection per seed in rank groups.
fn select_seeds_main(args: &SelectArgs, runs: Vec<(Option<u64>, PathBuf)>) -> i32 {
    let prepared = || -> Result<Vec<(u64, PathBuf, Config)>> {
        runs.iter().map(|(s, dir)| Ok((s.expect("seeded"), dir.clone(), load_run(dir, &args.overrides())?))).collect()
    };
    let runs = match prepared() {
        Ok(p) => p,
        Err(e) => return fail_once(&e),
    };
    if args.resume.is_some() {
        return fail_once(&Error::config(
            "--resume",
            "resume",
            "resume the selections of a multi-seed run one seed at a time (--run DIR/seed-S --out OUT/seed-S)",
        ));
    }
    let comm = match comm::init(&runs[0].2) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    let existed = args.out.exists();
    let stop = watch_signals();
    let seeds: Vec<u64> = runs.iter().map(|r| r.0).collect();
    let run = || -> Result<()> {
        prepare_out_dir(comm.as_ref(), &args.out)?;
        init_logging(comm.as_ref(), &args.out);
        experiment::over_seeds(comm.as_ref(), &seeds, 0, &args.out, "scores.json", &mut |g, s, dir| {
            let (_, run_dir, cfg) = runs.iter().find(|r| r.0 == s).expect("listed");
            run_select(cfg, g, run_dir, dir, None, Some(&stop))
        })?;
        if comm.is_coordinator() {
            if let Err(e) = crate::report::figures::render_dir(&args.out) {
                tracing::warn!("figures of {}: {e} (`dartsif-dist report` retries)", args.out.display());
            }
        }
        comm.barrier()
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            if comm.is_coordinator() && !existed && !matches!(e, Error::Path { .. } | Error::Stopped { .. }) {
                let _ = std::fs::remove_dir_all(&args.out);
            }
            mark_stopped(comm.as_ref(), &args.out, &e);
            report_error(comm.as_ref(), &e)
        }
    }
}

fn select_main(args: &SelectArgs) -> i32 {
    if !args.run.join("config.toml").is_file() && args.run.is_dir() {
        if let Ok(runs) = crate::experiment::seed_runs(&args.run, None) {
            if runs.iter().all(|r| r.0.is_some()) {
                return select_seeds_main(args, runs);
            }
        }
    }
    let cfg = match load_run(&args.run, &args.overrides()) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    let comm = match comm::init(&cfg) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    if let Err(e) = cfg.check_fault(comm.size()) {
        return report_error(comm.as_ref(), &e);
    }
    let existed = args.out.exists();
    let stop = watch_signals();
    match run_select(&cfg, comm.as_ref(), &args.run, &args.out, args.resume.as_deref(), Some(&stop)) {
        Ok(()) => 0,
        Err(e) => {
            // A failed selection leaves nothing behind (it is cheap to rerun), unless it holds
            // progress checkpoints to resume from.
            let progress = !crate::checkpoint::store::list(&args.out.join("checkpoints")).is_empty();
            if comm.is_coordinator()
                && !existed
                && !progress
                && !matches!(e, Error::Path { .. } | Error::Stopped { .. })
            {
                let _ = std::fs::remove_dir_all(&args.out);
            }
            mark_stopped(comm.as_ref(), &args.out, &e);
            report_error(comm.as_ref(), &e)
        }
    }
}

fn load_run(run: &Path, overrides: &[String]) -> Result<Config> {
    select::open_searched(run, overrides)
}

fn load_supernet(cfg: &Config, run: &Path) -> Result<(Box<dyn crate::supernet::Supernet>, Vec<tch::Tensor>)> {
    select::load_searched(cfg, run)
}

fn fidelity_main(args: &FidelityArgs) -> i32 {
    let cfg = match load_run(&args.run, &args.set) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    if let Some(lr) = args.lr {
        if !(lr > 0.0 && lr.is_finite()) {
            return fail_once(&Error::config("--lr", "lr", format!("must be finite and > 0 (got {lr})")));
        }
    }
    let known = select::fidelity::criterion_labels(&cfg);
    if let Some(bad) = args.criteria.iter().find(|c| !known.contains(c)) {
        let msg = format!("unknown criterion {bad:?} (one of: {})", known.join(", "));
        return fail_once(&Error::config("--criteria", "criteria", msg));
    }
    let comm = match comm::init(&cfg) {
        Ok(c) => c,
        Err(e) => return fail_once(&e),
    };
    let ft = select::fidelity::FineTune { steps: args.steps, lr: args.lr.unwrap_or(cfg.search.weights.lr / 10.0) };
    let run = || -> Result<()> {
        let mut cfg = cfg.clone();
        let source = data::open(&mut cfg)?;
        // Inputs first: nothing is written before the supernet file has been read.
        let (net, alphas) = load_supernet(&cfg, &args.run)?;
        prepare_out_dir(comm.as_ref(), &args.out)?;
        init_threads(&cfg);
        init_logging(comm.as_ref(), &args.out);
        let report = select::fidelity::run(
            &cfg,
            comm.as_ref(),
            net.as_ref(),
            &alphas,
            source.data.as_ref(),
            &source.split,
            &ft,
            &args.criteria,
        )?;
        if comm.is_coordinator() {
            use crate::checkpoint::write_atomic;
            write_atomic(&args.out.join("fidelity.csv"), report.summary_csv().as_bytes())?;
            write_atomic(&args.out.join("candidates.csv"), report.candidates_csv().as_bytes())?;
            write_atomic(
                &args.out.join("fidelity.json"),
                serde_json::to_string_pretty(&report).expect("json").as_bytes(),
            )?;
            print!("{}", report.table());
        }
        comm.barrier()
    };
    match run() {
        Ok(()) => 0,
        Err(e) => report_error(comm.as_ref(), &e),
    }
}

/// The `select` command: load a searched supernet and run the configured criterion.
pub fn run_select(
    cfg: &Config,
    comm: &dyn Collective,
    run: &Path,
    out: &Path,
    resume: Option<&str>,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<()> {
    // The searched supernet is read and checked before anything is written: a damaged
    // supernet.safetensors leaves no output directory behind.
    let (net, alphas) = load_supernet(cfg, run)?;
    let (cfg, source, from) = open_run(cfg, comm, out, resume)?;
    let cfg = &cfg;
    if cfg.select.criterion == "darts-pt" {
        drop((net, alphas));
        return run_progressive(cfg, comm, &source, run, out, from, stop);
    }
    let done = match from {
        Some(dir) => {
            let meta = crate::checkpoint::load_select(&dir, cfg)?;
            tracing::info!("resumed selection from {} ({} candidates scored)", dir.display(), meta.records.len());
            meta.records
        }
        None => Vec::new(),
    };
    tracing::info!("{}", source.summary);
    let res = Resumable {
        dir: cfg.checkpoint.enabled.then(|| out.join("checkpoints")),
        every: cfg.checkpoint.select_every,
        keep: cfg.checkpoint.keep,
        stop,
        done,
    };
    select_and_report(cfg, comm, net.as_ref(), &alphas, source.data.as_ref(), &source.split, out, &res)
}

/// `select --criterion darts-pt`: progressive decisions with fine-tuning, from the run's
/// supernet or from a checkpoint of this selection.
fn run_progressive(
    cfg: &Config,
    comm: &dyn Collective,
    source: &data::Source,
    run: &Path,
    out: &Path,
    from: Option<PathBuf>,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let coord = comm.is_coordinator();
    let spec = crate::space::SpaceSpec::by_name(&cfg.space.name).expect("validated space");
    let tune = select::progressive::tune_config(cfg, &spec)?;
    let mut state = SearchState::new(&tune, comm, tch::Kind::Float)?;
    let resumed_at = match &from {
        Some(dir) => {
            let meta = crate::checkpoint::resume_search(dir, &tune, comm.size(), &mut state)?;
            tracing::info!("resumed darts-pt from {} (tuning epoch {}, step {})", dir.display(), meta.epoch, meta.step);
            Some((meta.global_step, meta.epoch, meta.step > 0))
        }
        None => {
            crate::checkpoint::load_supernet(state.net.as_ref(), &state.alphas, &run.join("supernet.safetensors"))?;
            None
        }
    };
    tracing::info!(
        "select: darts-pt, rule {}, {} tuning epochs at lr {} ({} ranks)",
        cfg.select.pt_rule,
        tune.search.epochs,
        tune.search.weights.lr,
        comm.size()
    );
    let decisions_path = out.join("decisions.jsonl");
    let mut decisions = match (coord, resumed_at) {
        (false, _) => None,
        (true, None) => Some(report::JsonLines::create(decisions_path)?),
        // Decisions are made at the start of an epoch: a mid-epoch checkpoint has its epoch's.
        (true, Some((_, epoch, mid))) => Some(report::JsonLines::resume(decisions_path, |v| {
            v["epoch"].as_u64().is_some_and(|e| (e as usize) < epoch || (mid && e as usize == epoch))
        })?),
    };
    let mut progress = Progress {
        metrics: match (coord, resumed_at) {
            (false, _) => None,
            (true, None) => Some(Metrics::create(out)?),
            (true, Some((step, epoch, _))) => Some(Metrics::resume(out, step, epoch)?),
        },
        bar: indicatif::ProgressBar::hidden(),
        log: None,
        log_every: tune.output.log_every,
        last: None,
        track: None,
    };
    let searcher = Searcher {
        cfg: &tune,
        comm,
        data: source.data.as_ref(),
        split: source.split.clone(),
        checkpoints: cfg.checkpoint.enabled.then(|| out.join("checkpoints")),
        stop,
    };
    let table = select::progressive::run(&searcher, &mut state, &mut progress, &mut |v| match &mut decisions {
        Some(d) => d.line(v),
        None => Ok(()),
    })?;
    let genotype = select::coordinate(comm, state.net.spec(), &table)?;
    tracing::info!("selected genotype (criterion darts-pt): {genotype}");
    if coord {
        let sel = select::Selection {
            table,
            genotype: genotype.clone(),
            diagnostics: serde_json::json!({"rule": cfg.select.pt_rule, "tuning_epochs": tune.search.epochs}),
            timing: serde_json::json!({"total_s": t0.elapsed().as_secs_f64(), "ranks": comm.size()}),
            mixing: state.softmax_table(),
        };
        select::write_outputs(cfg, state.net.spec(), &sel, out)?;
        println!("{genotype}");
    }
    comm.barrier()
}

/// What `search` and `select` do first: open the data (bad data stops the run before anything
/// is written; the config gets the data's classes and image size), then prepare the output
/// directory or find the checkpoint to resume, then threads and logging.
fn open_run(
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
    init_threads(&cfg);
    init_logging(comm, out);
    Ok((cfg, source, from))
}

/// A fresh run directory, or (with `--resume`) the checkpoint to continue from, chosen by rank
/// 0 and shared; damaged newer checkpoints are logged once logging is up (by the caller).
fn start_or_resume(comm: &dyn Collective, out: &Path, resume: Option<&str>) -> Result<Option<PathBuf>> {
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

#[allow(clippy::too_many_arguments)]
fn select_and_report(
    cfg: &Config,
    comm: &dyn Collective,
    net: &dyn crate::supernet::Supernet,
    alphas: &[tch::Tensor],
    data: &dyn Dataset,
    split: &data::SearchSplit,
    out: &Path,
    res: &Resumable,
) -> Result<()> {
    let s = &cfg.select;
    // The IHVP solver only where the criterion uses one.
    let solver = if matches!(s.criterion.as_str(), "darts-if" | "darts-im") {
        format!(", ihvp {}", s.ihvp)
    } else {
        String::new()
    };
    tracing::info!(
        "select: criterion {}{}{solver}, N = {} batches of {}, {} ranks, {}",
        s.criterion,
        if s.faithful { " (faithful)" } else { "" },
        s.n,
        cfg.select_batch(),
        comm.size(),
        s.precision
    );
    let sel = select::run(cfg, comm, net, alphas, data, split, out, res)?;
    tracing::info!("selected genotype (criterion {}): {}", sel.table.criterion, sel.genotype);
    tracing::info!("timing: {}", sel.timing);
    if comm.is_coordinator() {
        if let Err(e) = report::figures::render_dir(out) {
            tracing::warn!("figures of {}: {e} (`dartsif-dist report` retries)", out.display());
        }
        println!("{}", sel.genotype);
    }
    comm.barrier()
}

/// Whether a run directory holds results worth keeping: a checkpoint or a searched supernet.
fn out_has_results(out: &Path) -> bool {
    out.join("supernet.safetensors").exists() || !crate::checkpoint::store::list(&out.join("checkpoints")).is_empty()
}

/// After a signal-triggered checkpoint, the coordinator leaves `OUT/STOPPED` (the checkpoint's
/// path): the Slurm script requeues on it even when srun reports a signal rather than status 3.
fn mark_stopped(comm: &dyn Collective, out: &Path, e: &Error) {
    if let Error::Stopped { checkpoint, .. } = e {
        if comm.is_coordinator() {
            let _ = std::fs::write(out.join("STOPPED"), format!("{checkpoint}\n"));
        }
    }
}

fn fail_once(e: &Error) -> i32 {
    if launcher_rank() == 0 {
        eprintln!("error: {e}");
    }
    e.exit_code()
}

/// Errors that every rank reached together are printed by rank 0; the status is the error's.
fn report_error(comm: &dyn Collective, e: &Error) -> i32 {
    if comm.is_coordinator() {
        eprintln!("error: {e}");
    }
    e.exit_code()
}

/// Rank 0 prepares the run directory; the outcome is shared so all ranks stop together.
fn prepare_out_dir(comm: &dyn Collective, out: &Path) -> Result<()> {
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
fn choose_checkpoint(out: &Path, how: &str) -> Result<Chosen> {
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

fn create_run_dir(out: &Path) -> Result<()> {
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

fn init_threads(cfg: &Config) {
    let n = if cfg.threads > 0 {
        cfg.threads
    } else {
        // One process per core group: divide the cores among the ranks on this node.
        let local = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
            .or_else(|_| std::env::var("MPI_LOCALNRANKS"))
            .or_else(|_| std::env::var("SLURM_NTASKS_PER_NODE"))
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1);
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        (cores / local.max(1)).max(1)
    };
    tch::set_num_threads(n as i32);
    // rayon decodes samples; keep it to the same share of cores.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
}

fn init_logging(comm: &dyn Collective, out: &Path) {
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
}

struct Progress<'a> {
    metrics: Option<Metrics>,
    bar: indicatif::ProgressBar,
    /// Done/total, rate and ETA in the log every 30 s (a Slurm log has no bar).
    log: Option<crate::progress::Progress>,
    log_every: usize,
    last: Option<EpochStats>,
    track: Option<Tracker<'a>>,
}

/// `select.track_every`: the criterion on the supernet as it stands after every k-th epoch.
struct Tracker<'a> {
    cfg: &'a Config,
    comm: &'a dyn Collective,
    data: &'a dyn Dataset,
    split: &'a data::SearchSplit,
    /// `tracking.jsonl` (coordinator).
    lines: Option<report::JsonLines>,
}

impl Tracker<'_> {
    fn epoch(&mut self, epoch: usize, state: &SearchState) -> Result<()> {
        if (epoch + 1) % self.cfg.select.track_every != 0 {
            return Ok(());
        }
        let timings = crate::influence::Timings::default();
        let ctx = crate::influence::Context::new(
            self.cfg,
            state.net.as_ref(),
            &state.alphas,
            self.comm,
            self.data,
            self.split,
            &timings,
        );
        // One N (select.n), or every N of select.track_n with the DARTS-IM work shared.
        let (ns, outcomes) = if self.cfg.select.track_n.is_empty() {
            (vec![None], vec![ctx.run()?])
        } else {
            let settings: Vec<crate::config::SelectConfig> = self
                .cfg
                .select
                .track_n
                .iter()
                .map(|&n| crate::config::SelectConfig { n, ..self.cfg.select.clone() })
                .collect();
            (self.cfg.select.track_n.iter().map(|&n| Some(n)).collect(), ctx.darts_im_many(&settings)?)
        };
        // Every collective first (the genotypes), then the coordinator's lines, whose outcome
        // all ranks share.
        let genotypes = outcomes
            .iter()
            .map(|o| select::coordinate(self.comm, state.net.spec(), &o.table))
            .collect::<Result<Vec<_>>>()?;
        let (cfg, lines) = (self.cfg, &mut self.lines);
        comm::on_coordinator(self.comm, || {
            for ((n, outcome), g) in ns.into_iter().zip(&outcomes).zip(&genotypes) {
                tracing::info!("tracking: after epoch {epoch}, {} selects {g}", outcome.table.criterion);
                if let Some(l) = lines.as_mut() {
                    let mut v = serde_json::json!({
                        "epoch": epoch,
                        "criterion": outcome.table.criterion,
                        "genotype": g.to_string(),
                        "genotype_json": g,
                        "benchmark": crate::report::benchmark::entry(cfg.select.benchmark_table.as_deref(), &g.to_string())?,
                    });
                    if let Some(n) = n {
                        v["n"] = serde_json::json!(n);
                    }
                    l.line(v)?;
                }
            }
            Ok(())
        })
    }
}

impl Observer for Progress<'_> {
    fn step(&mut self, s: &StepStats) -> Result<()> {
        self.bar.inc(1);
        self.bar.set_message(format!("epoch {} loss {:.3} acc {:.3}", s.epoch, s.train_loss, s.train_acc));
        if let Some(line) = self.log.as_mut().and_then(|l| l.tick(1)) {
            self.bar.suspend(|| tracing::info!("{line}"));
        }
        if let Some(m) = &mut self.metrics {
            if s.global_step % self.log_every == 0 {
                m.step(s)?;
            }
        }
        Ok(())
    }

    fn epoch(&mut self, e: &EpochStats, state: &SearchState) -> Result<()> {
        self.bar.suspend(|| {
            tracing::info!(
                "epoch {:>3}  lr {:.5}  train {:.4}/{:.3}  val {:.4}/{:.3}  H(α) {:.4}  {:.0} img/s  all-reduce {:.2} s  {}",
                e.epoch,
                e.lr,
                e.train_loss,
                e.train_acc,
                e.val_loss,
                e.val_acc,
                e.alpha_entropy,
                e.images_per_s,
                e.reduce_s,
                e.genotype
            )
        });
        if let Some(m) = &mut self.metrics {
            m.epoch(e)?;
            m.history(e.epoch, state.alpha_json(), &select::magnitude_genotype(state))?;
        }
        if let Some(t) = &mut self.track {
            t.epoch(e.epoch, state)?;
        }
        self.last = Some(e.clone());
        Ok(())
    }
}

/// The whole `search` command on an initialised communicator.
pub fn run_search(
    cfg: &Config,
    comm: &dyn Collective,
    out: &Path,
    resume: Option<&str>,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let (cfg, source, from) = open_run(cfg, comm, out, resume)?;
    let cfg = &cfg;
    let coord = comm.is_coordinator();
    let run = RunInfo::collect(cfg, comm.backend(), comm.size());
    tracing::info!(
        "search: space {} C={} N={}, {} ranks ({}), micro-batch {}, {} threads per rank, libtorch {}",
        cfg.space.name,
        cfg.space.channels,
        cfg.space.cells_per_stage,
        comm.size(),
        comm.backend(),
        run.micro_batch,
        run.threads_per_rank,
        run.libtorch
    );
    if coord {
        report::write_config(out, cfg, &run)?;
    }

    tracing::info!("{}", source.summary);
    let data = source.data.as_ref();
    let mut state = SearchState::new(cfg, comm, tch::Kind::Float)?;
    tracing::info!("supernet: {} weights, α {:?}", state.net.params().count(), state.net.spec().alpha_shapes());
    let resumed_at = match &from {
        Some(dir) => {
            let meta = crate::checkpoint::resume_search(dir, cfg, comm.size(), &mut state)?;
            tracing::info!("resumed from {} (epoch {}, step {})", dir.display(), meta.epoch, meta.step);
            Some((meta.global_step, meta.epoch))
        }
        None => None,
    };

    let total = (cfg.search.epochs * cfg.steps_per_epoch(source.split.weights.len())) as u64;
    let bar = if coord && cfg.output.progress && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {elapsed_precise}<{eta_precise}  {msg}",
            )
            .expect("template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut progress = Progress {
        metrics: match (coord, resumed_at) {
            (false, _) => None,
            (true, None) => Some(Metrics::create(out)?),
            // Keep the lines written before the checkpoint; the run repeats those after it.
            (true, Some((step, epoch))) => Some(Metrics::resume(out, step, epoch)?),
        },
        bar,
        log: Some(
            crate::progress::Progress::new("search", "steps", total, coord, false)
                .resumed(resumed_at.map_or(0, |(step, _)| step as u64)),
        ),
        log_every: cfg.output.log_every,
        last: None,
        track: (cfg.select.track_every > 0)
            .then(|| -> Result<Tracker> {
                let path = out.join("tracking.jsonl");
                let lines = match (coord, resumed_at) {
                    (false, _) => None,
                    (true, None) => Some(report::JsonLines::create(path)?),
                    (true, Some((_, epoch))) => Some(report::JsonLines::resume(path, |v| {
                        v["epoch"].as_u64().is_some_and(|e| (e as usize) < epoch)
                    })?),
                };
                Ok(Tracker { cfg, comm, data, split: &source.split, lines })
            })
            .transpose()?,
    };
    let searcher = Searcher {
        cfg,
        comm,
        data: data as &dyn Dataset,
        split: source.split.clone(),
        checkpoints: cfg.checkpoint.enabled.then(|| out.join("checkpoints")),
        stop,
    };
    if let Err(e) = searcher.run(&mut state, &mut progress) {
        // A decoding error belongs to the rank that met it (each rank decodes its own shard):
        // that rank reports it and stops the job, so no rank waits in a collective.
        if matches!(e, Error::Data { .. }) && comm.size() > 1 {
            // A fresh run directory is this run's own (prepare_out_dir refuses a non-empty one);
            // a resumed run keeps its checkpoints.
            if resume.is_none() {
                let _ = std::fs::remove_dir_all(out);
            }
            return Err(crate::comm::fail_alone(comm, e));
        }
        return Err(e);
    }
    progress.bar.finish_and_clear();

    if data.skipped() > 0 {
        tracing::warn!(
            "{} undecodable images were replaced by their successors (data.skip_bad_images)",
            data.skipped()
        );
    }
    let test: Option<Tally> = if !source.test.is_empty() {
        let t = searcher.evaluate(&state, &source.test)?;
        tracing::info!("held-out test: loss {:.4}, accuracy {:.4} on {} images", t.loss(), t.acc(), t.count);
        if let Some(m) = &mut progress.metrics {
            m.test(&t)?;
        }
        Some(t)
    } else {
        None
    };

    let table = select::magnitude_scores(&state);
    let genotype = select::coordinate(comm, state.net.spec(), &table)?;
    tracing::info!("selected genotype (criterion {}): {genotype}", table.criterion);
    if coord {
        report::write_genotype(out, &genotype)?;
        report::write_report(
            out,
            state.net.spec(),
            &genotype,
            &table,
            &state.alpha_table(),
            &state.softmax_table(),
            progress.last.as_ref(),
            test.as_ref(),
            &run,
            crate::report::benchmark::entry(cfg.select.benchmark_table.as_deref(), &genotype.to_string())?,
        )?;
        crate::checkpoint::save_supernet(&state, &out.join("supernet.safetensors"))?;
        println!("{genotype}");
    }
    comm.barrier()?;
    // A resumed search continues its selection too (from its checkpoint where it has one).
    let select_dir = |dir: &Path| -> Result<Option<PathBuf>> {
        if resume.is_some() && dir.exists() {
            start_or_resume(comm, dir, Some("auto"))
        } else {
            prepare_out_dir(comm, dir).map(|_| None)
        }
    };
    if cfg.select.after_search && cfg.select.criterion == "darts-pt" {
        let dir = out.join("select");
        let from = select_dir(&dir)?;
        run_progressive(cfg, comm, &source, out, &dir, from, stop)?;
    } else if cfg.select.after_search {
        let dir = out.join("select");
        select_dir(&dir)?;
        let (net, alphas) = if select::selection_kind(cfg) == tch::Kind::Float {
            (None, Vec::new())
        } else {
            let net = crate::supernet::build(cfg, cfg.seed, select::selection_kind(cfg))?;
            let alphas: Vec<tch::Tensor> =
                state.alphas.iter().map(|a| a.detach().to_kind(select::selection_kind(cfg))).collect();
            let _g = tch::no_grad_guard();
            let (src, dst) = (state.net.params(), net.params());
            for (d, s) in dst.tensors.iter().zip(&src.tensors).chain(dst.buffers.iter().zip(&src.buffers)) {
                d.shallow_clone().copy_(s);
            }
            (Some(net), alphas)
        };
        let res = Resumable { stop, keep: cfg.checkpoint.keep, ..Default::default() };
        match &net {
            Some(n) => select_and_report(cfg, comm, n.as_ref(), &alphas, data, &searcher.split, &dir, &res)?,
            None => select_and_report(cfg, comm, state.net.as_ref(), &state.alphas, data, &searcher.split, &dir, &res)?,
        }
    }
    if coord && out.join("tracking.jsonl").is_file() {
        if let Err(e) = report::figures::render_dir(out) {
            tracing::warn!("figures of {}: {e} (`dartsif-dist report` retries)", out.display());
        }
    }
    Ok(())
}
