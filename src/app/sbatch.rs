//! `dartsif-dist slurm`: render an sbatch script that runs one dartsif-dist command on a Slurm
//! allocation, one MPI rank per GPU (or per task on CPU nodes), launched by
//! `srun --mpi=pmix --kill-on-bad-exit=1`. The script checks the world size against
//! `SLURM_NTASKS`, asks Slurm for SIGUSR1 some minutes before the time limit (every rank then
//! checkpoints at the next step and exits with status 3), requeues itself on status 3, and a
//! requeued run continues with `--resume auto`. A job array sweeps one config key.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What the script runs and on what allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmSpec {
    pub job_name: String,
    pub nodes: usize,
    /// 0: the CPU variant (no GPU request).
    pub gpus_per_node: usize,
    /// Ranks per node (= GPUs per node when there are GPUs).
    pub tasks_per_node: usize,
    pub cpus_per_task: Option<usize>,
    pub time: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// `srun --mpi=` plugin (pmix; pmi2 on sites built that way).
    pub mpi: String,
    /// Seconds before the time limit at which Slurm sends SIGUSR1.
    pub signal_lead_s: usize,
    /// Where `%x-%j.out` logs go (created when rendering).
    pub log_dir: PathBuf,
    /// The dartsif-dist binary (absolute).
    pub bin: PathBuf,
    /// `search`, `select` or `train`.
    pub command: String,
    /// The command's own arguments besides `--out`/`--resume` (e.g. `--config C`, `--set k=v`).
    pub args: Vec<String>,
    /// Arguments dropped when resuming (`--config` / `--genotype`: the run's own are used).
    pub fresh_only: Vec<String>,
    /// The run directory (array jobs: the parent of one directory per value).
    pub out: PathBuf,
    /// A job array over `--set KEY=VALUE` for each value.
    pub sweep: Option<(String, Vec<String>)>,
}

/// Single-quote `s` for bash.
fn q(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn words(v: &[String]) -> String {
    v.iter().map(|a| q(a)).collect::<Vec<_>>().join(" ")
}

/// The script text.
pub fn render(spec: &SlurmSpec, header: &str) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let _ = writeln!(s, "# {header}");
    let sb = |s: &mut String, k: &str, v: &str| {
        let _ = writeln!(s, "#SBATCH --{k}={v}");
    };
    sb(&mut s, "job-name", &spec.job_name);
    sb(&mut s, "nodes", &spec.nodes.to_string());
    sb(&mut s, "ntasks-per-node", &spec.tasks_per_node.to_string());
    if spec.gpus_per_node > 0 {
        // One rank per GPU; each rank picks its device from its node-local rank, so every rank
        // sees all the node's GPUs (per-task binding can stop NCCL's intra-node transports).
        sb(&mut s, "gpus-per-node", &spec.gpus_per_node.to_string());
    }
    if let Some(c) = spec.cpus_per_task {
        sb(&mut s, "cpus-per-task", &c.to_string());
    }
    sb(&mut s, "time", &spec.time);
    if let Some(p) = &spec.partition {
        sb(&mut s, "partition", p);
    }
    if let Some(a) = &spec.account {
        sb(&mut s, "account", a);
    }
    sb(&mut s, "signal", &format!("USR1@{}", spec.signal_lead_s));
    let _ = writeln!(s, "#SBATCH --requeue");
    sb(&mut s, "open-mode", "append");
    let log = spec.log_dir.display();
    match &spec.sweep {
        Some((_, values)) => {
            sb(&mut s, "array", &format!("0-{}", values.len() - 1));
            sb(&mut s, "output", &format!("{log}/%x-%A_%a.out"));
        }
        None => sb(&mut s, "output", &format!("{log}/%x-%j.out")),
    }
    let _ = writeln!(s, "set -uo pipefail");
    let _ = writeln!(s, "BIN={}", q(&spec.bin.display().to_string()));
    let out = q(&spec.out.display().to_string());
    let mut extra = String::new();
    match &spec.sweep {
        Some((key, values)) => {
            let _ = writeln!(s, "VALUES=({})", words(values));
            let _ = writeln!(s, "VALUE=\"${{VALUES[$SLURM_ARRAY_TASK_ID]}}\"");
            let _ = writeln!(s, "OUT={out}/{}-\"$VALUE\"", key.replace('.', "_"));
            let _ = writeln!(s, "JOB=\"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\"");
            extra = format!(" --set {}=\"$VALUE\"", q(key));
        }
        None => {
            let _ = writeln!(s, "OUT={out}");
            let _ = writeln!(s, "JOB=\"$SLURM_JOB_ID\"");
        }
    }
    let expected = spec.nodes * spec.tasks_per_node;
    let _ = write!(
        s,
        r#"# One rank per task: refuse an allocation of another size rather than run on fewer devices.
if [ "${{SLURM_NTASKS:-0}}" -ne {expected} ]; then
  echo "dartsif-dist: SLURM_NTASKS=${{SLURM_NTASKS:-unset}}, but this script was rendered for {expected} tasks" >&2
  exit 2
fi
export OMP_NUM_THREADS="${{SLURM_CPUS_PER_TASK:-1}}"
# A requeued job (after a signal-triggered checkpoint) continues its run.
if [ -e "$OUT/config.toml" ] || [ -d "$OUT/checkpoints" ]; then
  ARGS=({resume})
else
  ARGS=({fresh})
fi
srun --mpi={mpi} --kill-on-bad-exit=1 "$BIN" {cmd} --out "$OUT" "${{ARGS[@]}}"{extra}
rc=$?
# Exit status 3, or rank 0's STOPPED marker (srun may report a signal instead when it kills the
# last ranks): the run checkpointed on a signal.
if [ "$rc" -eq 3 ] || [ -e "$OUT/STOPPED" ]; then
  rm -f "$OUT/STOPPED"
  echo "dartsif-dist: checkpointed on a signal; requeueing job $JOB" >&2
  scontrol requeue "$JOB" || exit 3
  exit 0
fi
exit "$rc"
"#,
        resume = words(&[&["--resume".to_string(), "auto".to_string()][..], &spec.args].concat()),
        fresh = words(&[&spec.fresh_only[..], &spec.args].concat()),
        mpi = spec.mpi,
        cmd = spec.command,
    );
    s
}

/// The sweep of `--array KEY=V1,V2,...`.
pub fn parse_sweep(arg: &str) -> Result<(String, Vec<String>)> {
    let bad = |m: &str| Error::config("--array", "array", format!("{m} (expected KEY=V1,V2,..., got {arg:?})"));
    let (k, v) = arg.split_once('=').ok_or_else(|| bad("no '='"))?;
    let values: Vec<String> = v.split(',').map(|x| x.trim().to_string()).collect();
    if k.trim().is_empty() || values.iter().any(|x| x.is_empty()) {
        return Err(bad("empty key or value"));
    }
    Ok((k.trim().to_string(), values))
}

/// A time limit in one of Slurm's formats (`sbatch --time`): `M`, `M:S`, `H:M:S`, `D-H`,
/// `D-H:M`, `D-H:M:S`, or `infinite`/`unlimited`; minutes and seconds below 60, hours below 24
/// where a larger unit is given, days at most 365. Returns the limit in seconds (None: no limit).
pub fn parse_time(t: &str) -> Result<Option<u64>> {
    let bad = |why: &str| {
        Error::config(
            "--time",
            "time",
            format!("{t:?} {why} (Slurm's formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, e.g. 24:00:00 or 2-00:00:00)"),
        )
    };
    if matches!(t.to_ascii_lowercase().as_str(), "infinite" | "unlimited") {
        return Ok(None);
    }
    let num = |x: &str, max: u64, unit: &str| -> Result<u64> {
        if x.is_empty() || x.len() > 9 || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("is not a time"));
        }
        let v: u64 = x.parse().map_err(|_| bad("is not a time"))?;
        if v > max {
            return Err(bad(&format!("has {v} {unit} (at most {max})")));
        }
        Ok(v)
    };
    let secs = match t.split_once('-') {
        Some((d, rest)) => {
            let d = num(d, 365, "days")?;
            let parts: Vec<&str> = rest.split(':').collect();
            let (h, m, s) = match parts[..] {
                [h] => (num(h, 23, "hours")?, 0, 0),
                [h, m] => (num(h, 23, "hours")?, num(m, 59, "minutes")?, 0),
                [h, m, s] => (num(h, 23, "hours")?, num(m, 59, "minutes")?, num(s, 59, "seconds")?),
                _ => return Err(bad("is not a time")),
            };
            ((d * 24 + h) * 60 + m) * 60 + s
        }
        None => {
            let parts: Vec<&str> = t.split(':').collect();
            match parts[..] {
                [m] => num(m, 365 * 24 * 60, "minutes")? * 60,
                [m, s] => num(m, 365 * 24 * 60, "minutes")? * 60 + num(s, 59, "seconds")?,
                [h, m, s] => (num(h, 365 * 24, "hours")? * 60 + num(m, 59, "minutes")?) * 60 + num(s, 59, "seconds")?,
                _ => return Err(bad("is not a time")),
            }
        }
    };
    if secs == 0 {
        return Err(bad("is zero"));
    }
    Ok(Some(secs))
}

/// A name that becomes part of a path (`--job-name` in the `%x` log file, `--array` values in
/// run directories): letters, digits, `.`, `_`, `+`, `-`, not starting with `.` or `-`.
pub fn check_path_name(flag: &str, key: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 200
        && !v.starts_with(['.', '-'])
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            flag,
            key,
            format!(
                "{v:?} is used in a path: letters, digits, '.', '_', '+' and '-' only, not starting with '.' or '-'"
            ),
        ))
    }
}

/// A count given on the command line, in `1..=max`.
pub fn check_count(flag: &str, v: usize, max: usize) -> Result<()> {
    if (1..=max).contains(&v) {
        Ok(())
    } else {
        Err(Error::config(flag, flag.trim_start_matches('-'), format!("must be in 1..={max} (got {v})")))
    }
}

/// Write the script (executable) and create the log directory; returns the script's path.
/// `#SBATCH` values are not shell-quoted by sbatch: names and paths with blanks are refused.
pub fn write(spec: &SlurmSpec, header: &str, path: &Path) -> Result<PathBuf> {
    for (key, v) in [
        ("job-name", spec.job_name.clone()),
        ("log-dir", spec.log_dir.display().to_string()),
        ("mpi", spec.mpi.clone()),
        ("time", spec.time.clone()),
        ("partition", spec.partition.clone().unwrap_or_default()),
        ("account", spec.account.clone().unwrap_or_default()),
    ] {
        if v.chars().any(|c| c.is_whitespace() || c == '\'' || c == '"') {
            return Err(Error::config(
                format!("--{key}"),
                key,
                format!("{v:?} holds blanks or quotes, which #SBATCH lines cannot"),
            ));
        }
    }
    std::fs::create_dir_all(&spec.log_dir).map_err(|e| Error::io(&spec.log_dir, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::fsutil::write_atomic(path, render(spec, header).as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|e| Error::io(path, e))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_times_in_every_format_and_out_of_range() {
        for (t, secs) in [
            ("30", 1800),
            ("30:15", 1815),
            ("24:00:00", 86_400),
            ("2-00:00:00", 172_800),
            ("1-12", 129_600),
            ("1-12:30", 131_400),
        ] {
            assert_eq!(parse_time(t).unwrap(), Some(secs), "{t}");
        }
        assert_eq!(parse_time("UNLIMITED").unwrap(), None);
        for (t, why) in [
            ("banana", "is not a time"),
            ("99999-99:99:99", "has 99999 days (at most 365)"),
            ("1-24:00:00", "has 24 hours (at most 23)"),
            ("10:60:00", "has 60 minutes (at most 59)"),
            ("0", "is zero"),
            ("1:2:3:4", "is not a time"),
            ("-5", "is not a time"),
        ] {
            let e = parse_time(t).unwrap_err().to_string();
            assert!(e.contains(why), "{t}: {e}");
        }
    }

    #[test]
    fn names_in_paths_stay_in_their_directory() {
        for ok in ["nb201", "c10_s2", "n-30", "1e-3", "v1.2"] {
            assert!(check_path_name("--job-name", "job_name", ok).is_ok(), "{ok}");
        }
        for bad in ["../../x", "a/b", ".hidden", "-x", "", "a b", "x\u{7}"] {
            assert!(check_path_name("--job-name", "job_name", bad).is_err(), "{bad:?}");
        }
        assert!(check_count("--tasks-per-node", 0, 4096)
            .unwrap_err()
            .to_string()
            .contains("must be in 1..=4096 (got 0)"));
        assert!(check_count("--tasks-per-node", 4_294_967_296, 4096).is_err());
    }

    fn spec() -> SlurmSpec {
        SlurmSpec {
            job_name: "darts-imagenet".into(),
            nodes: 4,
            gpus_per_node: 8,
            tasks_per_node: 8,
            cpus_per_task: Some(12),
            time: "24:00:00".into(),
            partition: Some("gpu".into()),
            account: None,
            mpi: "pmix".into(),
            signal_lead_s: 300,
            log_dir: "cluster/logs".into(),
            bin: "/opt/dartsif/bin/dartsif-dist".into(),
            command: "search".into(),
            args: vec!["--set".into(), "data.root=\"/data/imagenet\"".into()],
            fresh_only: vec!["--config".into(), "configs/darts imagenet.toml".into()],
            out: "/scratch/runs/in1k".into(),
            sweep: None,
        }
    }

    fn check_bash(text: &str) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job.sbatch");
        std::fs::write(&p, text).unwrap();
        let o = std::process::Command::new("bash").arg("-n").arg(&p).output().unwrap();
        assert!(o.status.success(), "bash -n: {}\n{text}", String::from_utf8_lossy(&o.stderr));
    }

    #[test]
    fn gpu_script_has_one_task_per_gpu_and_the_preemption_wiring() {
        let t = render(&spec(), "test");
        for line in [
            "#SBATCH --nodes=4",
            "#SBATCH --ntasks-per-node=8",
            "#SBATCH --gpus-per-node=8",
            "#SBATCH --cpus-per-task=12",
            "#SBATCH --partition=gpu",
            "#SBATCH --signal=USR1@300",
            "#SBATCH --requeue",
            "#SBATCH --output=cluster/logs/%x-%j.out",
            "if [ \"${SLURM_NTASKS:-0}\" -ne 32 ]; then",
            "  ARGS=(--resume auto --set 'data.root=\"/data/imagenet\"')",
            "  ARGS=(--config 'configs/darts imagenet.toml' --set 'data.root=\"/data/imagenet\"')",
            "srun --mpi=pmix --kill-on-bad-exit=1 \"$BIN\" search --out \"$OUT\" \"${ARGS[@]}\"",
            "  scontrol requeue \"$JOB\" || exit 3",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        assert!(!t.contains("--account"));
        check_bash(&t);
    }

    #[test]
    fn cpu_array_script_sweeps_a_key() {
        let mut s = spec();
        s.gpus_per_node = 0;
        s.tasks_per_node = 2;
        s.nodes = 1;
        s.command = "select".into();
        s.sweep = Some(parse_sweep("select.n=1,10,20,30,40,50").unwrap());
        let t = render(&s, "test");
        assert!(!t.contains("--gpus-per-node"));
        for line in [
            "#SBATCH --array=0-5",
            "#SBATCH --output=cluster/logs/%x-%A_%a.out",
            "VALUES=(1 10 20 30 40 50)",
            "OUT=/scratch/runs/in1k/select_n-\"$VALUE\"",
            "srun --mpi=pmix --kill-on-bad-exit=1 \"$BIN\" select --out \"$OUT\" \"${ARGS[@]}\" --set select.n=\"$VALUE\"",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        check_bash(&t);
        assert!(parse_sweep("select.n").is_err());
        let dir = tempfile::tempdir().unwrap();
        let mut bad = spec();
        bad.job_name = "my job".into();
        bad.log_dir = dir.path().join("logs");
        let e = write(&bad, "test", &dir.path().join("x.sbatch")).unwrap_err().to_string();
        assert!(e.contains("--job-name") && e.contains("blanks"), "{e}");
        assert!(parse_sweep("select.n=1,,2").is_err());
    }
}
