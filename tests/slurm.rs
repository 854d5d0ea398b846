//! Slurm for real: a single-node Slurm on localhost from Debian's packages
//! (`cluster/local-slurm`), `srun --mpi=pmix -n 2` of the binary directly, the rendered CPU
//! script run with `sbatch --wait`, and a SIGUSR1 → checkpoint → requeue → `--resume auto`
//! cycle ending with the uninterrupted run's architecture. The daemons are stopped at the end.
//!
//! Without Slurm installed the test says so and passes, unless `DARTSIF_REQUIRE_SLURM=1` (set by
//! `.ci/run`, which installs it) makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Cluster {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let script = common::repo().join("cluster/local-slurm");
        let have = ["sbatch", "srun", "slurmctld", "slurmd", "munged"].iter().all(|b| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {b} || test -x /usr/sbin/{b}"))
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !have {
            assert!(
                std::env::var_os("DARTSIF_REQUIRE_SLURM").is_none(),
                "Slurm is required here (DARTSIF_REQUIRE_SLURM) but not installed: run cluster/local-slurm install"
            );
            eprintln!("SKIPPED: Slurm is not installed (cluster/local-slurm install sets it up; CI sets DARTSIF_REQUIRE_SLURM=1)");
            return None;
        }
        // Short path: the daemons' UNIX sockets live under it (108-byte limit).
        let dir = PathBuf::from(format!("/tmp/dslurm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let o = Command::new(&script).arg("start").arg(&dir).output().unwrap(); // the machine's CPUs
        assert!(o.status.success(), "local Slurm did not start:\n{}", String::from_utf8_lossy(&o.stderr));
        let env = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        Some(Cluster { dir, env })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).env("DARTSIF_LOG", "warn");
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program).args(args).output().unwrap()
    }

    /// Wait until job `id` has left the queue.
    fn wait_gone(&self, id: &str, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let o = self.run("squeue", &["-h", "-j", id]);
            if String::from_utf8_lossy(&o.stdout).trim().is_empty() {
                return;
            }
            assert!(t0.elapsed() < limit, "job {id} still queued after {limit:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(common::repo().join("cluster/local-slurm")).arg("stop").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tiny_config(path: &Path, epochs: usize) {
    let text = format!(
        "seed = 5\n[space]\nchannels = 4\ncells_per_stage = 1\n[data]\nimage_size = 8\ntrain_size = 256\ntest_size = \"none\"\n\
         [search]\nepochs = {epochs}\nsteps_per_epoch = 4\nbatch_size = 32\nmicro_batch = 16\n[output]\nlog_every = 1\n"
    );
    std::fs::write(path, text).unwrap();
}

fn render(c: &Cluster, dir: &Path, name: &str, config: &Path, out: &Path) -> PathBuf {
    let script = dir.join(format!("{name}.sbatch"));
    let o = c.run(
        common::bin().to_str().unwrap(),
        &[
            "slurm",
            "--nodes",
            "1",
            "--gpus-per-node",
            "0",
            "--tasks-per-node",
            "2",
            "--time",
            "10:00",
            "--job-name",
            name,
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--script",
            script.to_str().unwrap(),
            "--log-dir",
            dir.join("logs").to_str().unwrap(),
        ],
    );
    common::assert_ok(&o);
    script
}

#[test]
fn slurm_runs_the_rendered_scripts_and_requeues_on_a_signal() {
    let Some(c) = Cluster::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let bin = common::bin();
    let bin = bin.to_str().unwrap();

    // srun directly: two ranks of one world; without the PMIx plugin the binary refuses to run
    // as two worlds of one.
    let o = c.run("srun", &["--mpi=pmix", "-n", "2", bin, "check-comm"]);
    common::assert_ok(&o);
    assert!(common::stdout(&o).contains("collectives ok"), "{}", common::stdout(&o));
    let o = c.run("srun", &["--mpi=none", "-n", "2", bin, "check-comm"]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("each is an MPI world of 1"), "{}", common::stderr(&o));

    // The rendered CPU script under sbatch --wait: a 2-task search that writes a genotype.
    let cfg = t.join("tiny.toml");
    tiny_config(&cfg, 2);
    let run = t.join("run");
    let script = render(&c, t, "tiny", &cfg, &run);
    let o = c.run("sbatch", &["--wait", script.to_str().unwrap()]);
    common::assert_ok(&o);
    let g = std::fs::read_to_string(run.join("genotype.txt")).unwrap();
    g.trim().parse::<dartsif::space::Nb201Genotype>().unwrap();
    let run_info = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(run_info.contains("world_size = 2"), "{run_info}");

    // Requeue: USR1 to the job's ranks mid-search → checkpoint, exit 3 → the script requeues
    // the job → the second run resumes and finishes with the uninterrupted run's result.
    let long = t.join("long.toml");
    tiny_config(&long, 12);
    let reference = t.join("reference");
    common::assert_ok(
        &Command::new(common::repo().join("launch/mpirun"))
            .args(["-np", "2", bin, "search", "--config", long.to_str().unwrap(), "--out", reference.to_str().unwrap()])
            .env("DARTSIF_LOG", "warn")
            .output()
            .unwrap(),
    );
    let run2 = t.join("run2");
    let script = render(&c, t, "long", &long, &run2);
    let o = c.run("sbatch", &["--parsable", script.to_str().unwrap()]);
    common::assert_ok(&o);
    let id = common::stdout(&o).trim().to_string();
    let t0 = Instant::now();
    while !std::fs::read_to_string(run2.join("metrics.jsonl")).is_ok_and(|m| m.contains("\"kind\":\"step\"")) {
        assert!(t0.elapsed() < Duration::from_secs(120), "the job did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    common::assert_ok(&c.run("scancel", &["--signal=USR1", &id]));
    c.wait_gone(&id, Duration::from_secs(240));
    let log = std::fs::read_to_string(t.join("logs").join(format!("long-{id}.out"))).unwrap();
    assert!(log.contains("requeueing job"), "{log}");
    assert_eq!(
        std::fs::read_to_string(run2.join("genotype.txt")).unwrap(),
        std::fs::read_to_string(reference.join("genotype.txt")).unwrap()
    );
    let alpha = |d: &Path| {
        tch::Tensor::read_safetensors(d.join("supernet.safetensors"))
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "arch_parameters")
            .unwrap()
            .1
    };
    let (a, b) = (alpha(&run2), alpha(&reference));
    let diff = (&a - &b).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "α after requeue differs by {diff}");
    let epochs = std::fs::read_to_string(run2.join("metrics.jsonl")).unwrap().matches("\"kind\":\"epoch\"").count();
    assert_eq!(epochs, 12, "every epoch once across the two runs");
}
