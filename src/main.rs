//! The `dartsif-dist` command line: the clap command tree and its dispatch to the
//! application (`dartsif::app`), plus what belongs to the process alone (the panic hook).

use clap::{Parser, Subcommand};

use dartsif::app::{self, compare, demo, experiment, prepare, search, select, slurm, train};
use dartsif::comm;
use dartsif::config::Config;

fn main() {
    dartsif::device::keep_freed_memory();
    out_of_memory_is_one_line();
    std::process::exit(run());
}

/// libtorch reports an allocation that fails inside an operation (a step's activations, say) as
/// a panic of tch's wrapper. That is a user's sizing problem, not a bug: it becomes one line
/// naming the settings that size a step, and status 1 (checkpoints written so far are kept; under
/// MPI the launcher ends the other ranks). Every other panic keeps Rust's report.
fn out_of_memory_is_one_line() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(line) = app::out_of_memory_line(msg, comm::launcher_rank()) {
            eprintln!("{line}");
            std::process::exit(1);
        }
        default(info)
    }));
}

#[derive(Debug, Parser)]
#[command(
    name = "dartsif-dist",
    version,
    about = "Distributed DARTS supernet search with influence-based operation selection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// The demo (`make demo`): a small search, then every op scored by magnitude, drop, DARTS-IF
    /// and DARTS-IM, compared per edge and against the actual effect of removing each op.
    Demo(demo::DemoArgs),
    /// Train a supernet by bi-level search and select an architecture.
    #[command(mut_arg("resume", |a| a.help(
        "Continue the run in --out from a checkpoint: `auto` (the newest one that verifies; a fresh start when \
         there is none) or a checkpoint directory. Without --config the run's own config.toml is used"
    )))]
    Search(search::SearchArgs),
    /// Score every op of a searched supernet with a criterion and select an architecture.
    #[command(mut_arg("resume", |a| a.help(
        "Continue an interrupted `drop`/`darts-if` selection in --out from its progress checkpoint: `auto` (the \
         newest that verifies) or a checkpoint directory. Repeat the original flags"
    )))]
    Select(select::SelectArgs),
    /// Train an architecture from scratch (DARTS's evaluation protocol by default; `[train]`).
    Train(train::TrainArgs),
    /// Pack an ImageNet folder into pre-resized, sharded, checksummed records (resumable; every
    /// rank of an mpirun/srun launch writes its share), for when JPEG decoding cannot feed the
    /// GPUs; `--verify DIR` checks one.
    Prepare(prepare::PrepareArgs),
    /// Render an sbatch script running a command on a Slurm allocation (one rank per GPU).
    Slurm(slurm::SlurmArgs),
    /// Every combination of swept selection settings (N, IHVP, γ, seeds, …) as one job, with
    /// tables (mean ± std over seeds) and figures.
    Ablate(experiment::AblateArgs),
    /// The seed paper's Table 4 as one job: methods (strategy[+criterion]) × seeds in rank
    /// groups, a shared search per strategy, mean ± std per benchmark column.
    Compare(compare::CompareArgs),
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

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// Compare every criterion with the actual loss change of removing each op and fine-tuning.
    Fidelity(select::FidelityArgs),
}

/// Run the command line; returns the process exit status.
fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Command::Demo(args) => demo::demo_main(&args),
        Command::Info => info(),
        Command::CheckComm => check_comm(),
        Command::Search(args) => search::search_main(&args),
        Command::Select(args) => select::select_main(&args),
        Command::Train(args) => train::train_main(&args),
        Command::Prepare(args) => prepare::prepare_main(&args),
        Command::Slurm(args) => slurm::slurm_main(&args),
        Command::Ablate(args) => experiment::ablate_main(&args),
        Command::Compare(args) => compare::compare_main(&args),
        Command::Groundtruth(args) => experiment::groundtruth_main(&args),
        Command::Track(args) => experiment::track_main(&args),
        Command::Report(args) => experiment::report_main(&args),
        Command::Inspect(InspectCommand::Fidelity(args)) => select::fidelity_main(&args),
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
            if comm::launcher_rank() == 0 {
                eprintln!("{}", line.trim_end());
            }
            2
        }
    }
}

fn info() -> i32 {
    println!("dartsif-dist {}", env!("CARGO_PKG_VERSION"));
    println!("tch {}, libtorch {}", env!("DARTSIF_TCH_VERSION"), env!("DARTSIF_LIBTORCH_VERSION"));
    println!("MPI library: {}", comm::mpi_library_version().unwrap_or_else(|| "none (built without `mpi`)".into()));
    println!("CUDA available: {}", tch::Cuda::is_available());
    0
}

fn check_comm() -> i32 {
    let comm = match comm::init(Config::default().comm, Config::default().device) {
        Ok(c) => c,
        Err(e) => return app::fail_once(&e),
    };
    if comm.is_coordinator() {
        for w in comm::take_start_warnings() {
            eprintln!("warning: {w}");
        }
    }
    match comm::self_check(comm.as_ref()) {
        Ok(()) => {
            if comm.is_coordinator() {
                let calls = comm.device_calls().map(|n| format!(" ({n} device calls on rank 0)")).unwrap_or_default();
                println!("collectives ok: {} ranks, backend {}{calls}", comm.size(), comm.backend());
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            comm.abort(1)
        }
    }
}
