//! Typed errors of the library. The binary maps [`Error::exit_code`] to the process status.

use std::path::PathBuf;

/// Everything that can go wrong in dartsif-dist.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file, a `--set` override or a CLI value is invalid. `origin` names the file (or
    /// `--set`), `key` the dotted key.
    #[error("{origin}: {key}: {msg}")]
    Config { origin: String, key: String, msg: String },

    /// A path the user pointed at is missing, unreadable or unwritable.
    #[error("{}: {msg}", path.display())]
    Path { path: PathBuf, msg: String },

    /// A dataset file is missing, truncated or malformed; `msg` names the record or offset.
    #[error("{}: {msg}", path.display())]
    Data { path: PathBuf, msg: String },

    /// A collective operation failed (MPI, NCCL, or inconsistent ranks).
    #[error("communication: {0}")]
    Comm(String),

    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    /// A numerical quantity became NaN or infinite.
    #[error("non-finite {quantity} at {at}")]
    NonFinite { quantity: String, at: String },

    /// An I/O error while writing results.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    /// Every rank stopped at a step boundary on SIGTERM/SIGUSR1, after writing a checkpoint.
    #[error("stopped by a signal at {at}; checkpoint {checkpoint} (continue with --resume auto)")]
    Stopped { at: String, checkpoint: String },

    /// Invalid data or state that is not the user's input.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Exit status: 2 for bad user input (config, paths, data), 3 for a run stopped by a
    /// signal after its checkpoint (requeue it), 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Stopped { .. } => EXIT_STOPPED,
            Error::Config { .. } | Error::Path { .. } | Error::Data { .. } => 2,
            _ => 1,
        }
    }

    pub(crate) fn config(source: impl Into<String>, key: impl Into<String>, msg: impl Into<String>) -> Self {
        // Keys and values come from the user: control characters are shown escaped, never sent
        // to the terminal raw, and the message stays one line.
        Error::Config { origin: printable(source.into()), key: printable(key.into()), msg: printable(msg.into()) }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data { path: path.into(), msg: msg.into() }
    }

    /// A run stopped by a signal at `at`, after writing the checkpoint `dir` (if any).
    pub(crate) fn stopped(at: String, dir: Option<&std::path::Path>) -> Self {
        let checkpoint = dir.map(|d| d.display().to_string()).unwrap_or_else(|| "none (checkpoints are off)".into());
        Error::Stopped { at, checkpoint }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io { path: path.into(), err }
    }
}

/// Print `line` and a line break on stderr in one `write` call. `eprintln!` writes a formatted
/// message piece by piece, so under `mpirun` the launcher's own report could land in the middle
/// of a rank's error line; one write of less than a pipe's buffer (4 KiB) arrives whole.
pub fn print_line(line: &str) {
    use std::io::Write;
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `s` with control characters (escape sequences, newlines, …) written as `\u{…}`.
pub fn printable(s: String) -> String {
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// Exit status of a run that stopped on SIGTERM/SIGUSR1 after writing its checkpoint.
pub const EXIT_STOPPED: i32 = 3;

pub type Result<T, E = Error> = std::result::Result<T, E>;
