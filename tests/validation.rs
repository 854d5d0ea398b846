//! Every invalid input that the README's table lists: the program stops with exit status 2 and
//! one line naming the culprit, and writes nothing. The README must show each message (checked).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use dartsif::data::fixtures;
use dartsif::data::{Cifar, CifarFormat};

/// One case: `dartsif-dist <args>` with `--set` overrides; the expected message part.
struct Case {
    args: Vec<String>,
    expect: String,
    /// Ranks (0: no launcher).
    np: usize,
}

fn search_case(sets: &[&str], expect: &str) -> Case {
    let mut args = Vec::new();
    for s in common::TINY.iter().chain(sets) {
        args.push("--set".into());
        args.push(s.to_string());
    }
    Case { args, expect: expect.into(), np: 0 }
}

fn run(case: &Case, out: &Path) -> String {
    let mut cmd = if case.np == 0 {
        Command::new(common::bin())
    } else {
        let mut c = Command::new(common::repo().join("launch/mpirun"));
        c.arg("-np").arg(case.np.to_string()).arg(common::bin());
        c
    };
    let args: Vec<String> = if case.args.first().is_some_and(|a| !a.starts_with("--")) {
        case.args.clone()
    } else {
        let mut v = vec!["search".to_string(), "--out".into(), out.display().to_string()];
        v.extend(case.args.iter().cloned());
        v
    };
    let o = cmd.args(&args).env("DARTSIF_LOG", "warn").output().unwrap();
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}\n{err}");
    assert_eq!(err.matches("error:").count(), 1, "one line expected for {args:?}:\n{err}");
    if case.np == 0 {
        assert_eq!(err.trim_end().lines().count(), 1, "one line expected for {args:?}:\n{err}");
    }
    assert!(err.contains(&case.expect), "expected {:?} for {args:?} in:\n{err}", case.expect);
    err
}

#[test]
fn invalid_inputs_are_refused_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Files the cases point at.
    let syntax = t.join("syntax.toml");
    std::fs::write(&syntax, "[search]\nepochs = = 3\n").unwrap();
    let dup = t.join("dup.toml");
    std::fs::write(&dup, "[search]\nepochs = 2\n[search]\nepochs = 3\n").unwrap();
    let typo = t.join("typo.toml");
    std::fs::write(&typo, "[space]\nchanels = 16\n").unwrap();
    let cifar = t.join("cifar");
    std::fs::create_dir(&cifar).unwrap();
    fixtures::write_cifar(&cifar, CifarFormat::Binary, Cifar::Ten, 40, 10, |i| (i % 10) as u8).unwrap();
    let split = t.join("split.txt");
    std::fs::write(&split, r#"{"train": [0, 1, 99], "valid": [2, 3]}"#).unwrap();
    let not_dir = t.join("file.txt");
    std::fs::write(&not_dir, "x").unwrap();
    let cifar_root = format!("data.root=\"{}\"", cifar.display());
    let real = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "data.dataset=\"cifar10\"".to_string(),
            cifar_root.clone(),
            "data.num_classes=0".into(),
            "data.image_size=0".into(),
            "data.train_size=\"all\"".into(),
            "search.batch_size=4".into(),
            "search.micro_batch=0".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let with = |v: Vec<String>, expect: &str| search_case(&v.iter().map(String::as_str).collect::<Vec<_>>(), expect);
    let path = |p: &PathBuf| p.display().to_string();
    // `slurm` with a valid config and output, plus `extra`; the script would go into the tmp dir.
    let slurm_cfg = t.join("slurm.toml");
    std::fs::write(&slurm_cfg, "seed = 1\n").unwrap();
    let script = t.join("never.sbatch");
    let slurm_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["slurm", "--config", &path(&slurm_cfg), "--out", &path(&t.join("sl"))]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(["--script".to_string(), path(&script), "--log-dir".into(), path(&t.join("sl-logs"))]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let sl = |extra: &[&str], expect: &str| Case { args: slurm_args(extra), expect: expect.into(), np: 0 };
    let cmd = |args: &[&str], expect: &str| Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        expect: expect.into(),
        np: 0,
    };

    let cases = vec![
        // Config files and --set.
        cmd(
            &["search", "--out", &path(&t.join("o1")), "--config", "/nonexistent/x.toml"],
            "/nonexistent/x.toml: cannot read config: no such file",
        ),
        cmd(&["search", "--out", &path(&t.join("o2")), "--config", &path(&syntax)], "line 2: TOML syntax"),
        cmd(&["search", "--out", &path(&t.join("o3")), "--config", &path(&typo)], "space.chanels: unknown key"),
        search_case(&["search.epoch=3"], "--set search.epoch=3: search.epoch: unknown key"),
        search_case(&["search.batch_size=\"big\""], "search.batch_size: invalid type: string \"big\""),
        search_case(&["search.epochs"], "--set search.epochs: search.epochs: expected key=value"),
        search_case(&["search.epochs.x=1"], "search.epochs: is a value, not a section"),
        // Ranges and choices.
        search_case(&["space.name=\"enas\""], "space.name: unknown search space \"enas\""),
        search_case(&["device=\"tpu\""], "device: unknown value \"tpu\""),
        search_case(
            &["space.name=\"pc-darts\"", "space.channels=6"],
            "space.channels: PC-DARTS splits channels in 4 groups",
        ),
        search_case(&["space.name=\"darts\"", "space.layers=2"], "space.layers: must be in 3..=64 (got 2)"),
        search_case(
            &["space.stem=\"imagenet\""],
            "space.stem: applies to the DARTS family only (space.name = \"nb201\")",
        ),
        search_case(
            &["space.name=\"darts\"", "space.stem=\"imagenet\"", "data.image_size=48"],
            "space.stem: \"imagenet\" needs images whose side is a multiple of 32 (data.image_size: 48 px)",
        ),
        search_case(
            &["space.name=\"darts\"", "space.partial=2"],
            "space.partial: applies to space.name = \"pc-darts\" (got \"darts\")",
        ),
        search_case(&["space.channels=0"], "space.channels: must be in 1..=4096 (got 0)"),
        search_case(&["search.weights.warmup_epochs=5"], "search.weights.warmup_epochs: 5 exceeds the 2 epochs"),
        search_case(&["search.weights.gamma=1.5"], "search.weights.gamma: must be in (0, 1] (got 1.5)"),
        search_case(&["data.image_size=30"], "data.image_size: must be a multiple of 4 in 4..=1024 (got 30)"),
        search_case(&["data.num_classes=1"], "data.num_classes: must be at least 2 (got 1)"),
        search_case(&["data.noise=-1.0"], "data.noise: must be finite and ≥ 0 (got -1)"),
        search_case(&["data.dataset=\"mnist\""], "data.dataset: unknown value \"mnist\""),
        search_case(&["data.subset_fraction=0.0"], "data.subset_fraction: must be in (0, 1] (got 0)"),
        search_case(&["search.epochs=0"], "search.epochs: must be at least 1 (got 0)"),
        search_case(
            &["search.strategy=\"enas\"", "space.name=\"darts\"", "space.layers=3"],
            "search.strategy: enas is not available on the \"darts\" space",
        ),
        search_case(
            &["search.strategy=\"gdas\"", "search.tau_max=0.01"],
            "search.tau_max: must be finite and at least",
        ),
        search_case(
            &["search.strategy=\"random-nas\"", "search.candidates=0"],
            "search.candidates: must be in 1..=100000",
        ),
        search_case(
            &["search.strategy=\"enas\"", "search.enas.hidden=100000000"],
            "search.enas.hidden: must be in 1..=4096 (got 100000000)",
        ),
        cmd(
            &["compare", "--methods", "random+drop", "--out", &path(&t.join("c1"))],
            "--methods: methods: \"random+drop\": the random baseline trains no supernet to select on",
        ),
        search_case(
            &["search.strategy=\"random\"", "select.after_search=true"],
            "select.after_search: the random baseline trains no supernet to select on",
        ),
        search_case(&["search.batch_size=0"], "search.batch_size: must be at least 1 (got 0)"),
        search_case(&["search.batch_size=512"], "search.batch_size: 512 is larger than each half of the search split"),
        search_case(&["search.micro_batch=64"], "search.micro_batch: 64 exceeds search.batch_size 32"),
        search_case(
            &["search.order=\"random\""],
            "search.order: unknown value \"random\" (known: \"alpha-first\", \"weights-first\")",
        ),
        search_case(&["search.strategy=\"pc-darts\""], "search.strategy: unknown value \"pc-darts\""),
        search_case(&["search.arch.beta2=1.5"], "search.arch.beta2: must be in [0, 1) (got 1.5)"),
        search_case(&["select.criterion=\"best\""], "select.criterion: unknown value \"best\""),
        search_case(&["select.ihvp=\"lissa\""], "select.ihvp: unknown value \"lissa\""),
        search_case(&["select.gamma=-0.001"], "select.gamma: must be finite and > 0 (got -0.001)"),
        search_case(&["select.eta=0.0"], "select.eta: must be finite and > 0 (got 0)"),
        search_case(&["select.k=0"], "select.k: must be at least 1 (got 0)"),
        search_case(&["select.n=0"], "select.n: must be at least 1 (got 0)"),
        search_case(&["select.im_sign=\"maybe\""], "select.im_sign: unknown value \"maybe\""),
        search_case(
            &["select.fisher_samples=\"sample\""],
            "select.fisher_samples: \"sample\" needs select.bn = \"running\"",
        ),
        search_case(
            &["select.micro_batch=16"],
            "select.micro_batch: splitting a batch changes its BatchNorm statistics: needs select.bn = \"running\"",
        ),
        search_case(
            &["select.recompute=\"cells\"", "select.products=\"double-backward\""],
            "select.recompute: \"cells\" recomputes the tangent forward: needs select.products = \"reverse-over-forward\"",
        ),
        search_case(&["select.recompute=\"all\""], "select.recompute: unknown value \"all\" (known: \"none\", \"cells\")"),
        search_case(
            &["select.ihvp=\"ekfac\"", "select.damping_rule=\"fixed\""],
            "select.damping: ekfac needs a damping λ > 0",
        ),
        search_case(&["select.fisher_labels=\"model\""], "select.fisher_labels: unknown value \"model\""),
        search_case(
            &["select.faithful=true", "select.criterion=\"darts-if\""],
            "select.faithful: the authors' computation exists for darts-im only",
        ),
        search_case(&["checkpoint.keep=0"], "checkpoint.keep: must be at least 1"),
        search_case(&["fault.action=\"explode\""], "fault.action: unknown value \"explode\""),
        // Data.
        search_case(&["data.dataset=\"cifar10\""], "data.root: required for dataset \"cifar10\""),
        search_case(&["data.dataset=\"cifar10\"", "data.root=\"/nonexistent\""], "no cifar10 files here"),
        with(real(&["data.skip_bad_images=true"]), "data.skip_bad_images: applies to dataset = \"imagenet\" only"),
        search_case(
            &["data.color_jitter=[0.4, 0.4, 0.4, 0.6]"],
            "data.color_jitter: the hue entry must be at most 0.5 (got 0.6)",
        ),
        with(real(&["data.split=\"file\""]), "data.split_file: required with data.split = \"file\""),
        with(
            real(&["data.split=\"file\"", &format!("data.split_file=\"{}\"", split.display())]),
            "split \"train\": index 99 is outside the training set of 40 images",
        ),
        with(real(&["data.num_classes=100"]), "data.num_classes: 100 disagrees with the data (cifar10 has 10)"),
        with(real(&["data.train_size=100"]), "data.train_size: 100 exceeds the 40 training images"),
        search_case(&["data.test_size=0"], "data.test_size: 0 is ambiguous: write \"all\" or \"none\""),
        search_case(&["data.prefetch=1000000000000"], "data.prefetch: must be at most 64 batches (got 1000000000000)"),
        search_case(
            &["fault.action=\"nan\"", "fault.rank=99"],
            "fault.rank: 99 is not a rank of this 1-rank job (0..=0)",
        ),
        cmd(&["search", "--config", &path(&dup), "--out", &path(&t.join("dup"))], "TOML syntax: invalid table header"),
        search_case(&["search.e\u{1b}pochs=3"], "search.e\\u{1b}pochs: unknown key"),
        with(real(&["search.batch_size=32"]), "search.batch_size: 32 is larger than the search split"),
        // Output and ranks.
        cmd(&["search", "--out", &path(&not_dir.join("run"))], "cannot create output directory"),
        Case {
            args: common::TINY.iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect(),
            expect: "search.batch_size: 32 is not divisible by the 3 ranks".into(),
            np: 3,
        },
        // Commands that read a run.
        cmd(
            &["select", "--run", "/nonexistent/run", "--out", &path(&t.join("s1"))],
            "/nonexistent/run: not a run directory (no config.toml)",
        ),
        cmd(&["search", "--out", &path(&t.join("none")), "--resume", "auto"], "none: not a run directory to resume"),
        // train and slurm.
        cmd(&["train", "--out", &path(&t.join("t1"))], "--genotype: genotype: required"),
        cmd(
            &["train", "--genotype", "|conv~0|+|a~0|b~1|+|c~0|d~1|e~2|", "--out", &path(&t.join("t2"))],
            "--genotype: genotype: unknown NB201 op \"conv\"",
        ),
        cmd(
            &["slurm", "--command", "evaluate", "--out", &path(&t.join("s2"))],
            "--command: command: unknown command \"evaluate\" (search, select, train, ablate, groundtruth or compare)",
        ),
        // Values sbatch or the job would reject, and names that would leave their directories.
        sl(&["--time", "banana"], "--time: time: \"banana\" is not a time (Slurm's formats:"),
        sl(&["--time", "99999-99:99:99"], "--time: time: \"99999-99:99:99\" has 99999 days (at most 365)"),
        sl(&["--tasks-per-node", "0"], "--tasks-per-node: tasks-per-node: must be in 1..=4096 (got 0)"),
        sl(
            &["--tasks-per-node", "4294967296"],
            "--tasks-per-node: tasks-per-node: must be in 1..=4096 (got 4294967296)",
        ),
        sl(&["--array", "select.n=1,abc"], "--set select.n=abc: select.n: invalid type: string \"abc\""),
        sl(&["--array", "select.n=1,../../x"], "--array: array: \"../../x\" is used in a path"),
        sl(&["--job-name", "../../x"], "--job-name: job_name: \"../../x\" is used in a path"),
        sl(&["--nodes", "-1"], "error: invalid value '-1' for '--nodes <NODES>': invalid digit found in string"),
    ];
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let mut missing = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let out = t.join(format!("case-{i}"));
        run(case, &out);
        assert!(!out.exists(), "case {i} wrote {}", out.display());
        // The README's table shows the message (with `|` escaped as in Markdown).
        if !readme.contains(&case.expect.replace('|', "\\|")) {
            missing.push(case.expect.clone());
        }
    }
    assert!(!script.exists() && !t.join("sl-logs").exists(), "a refused slurm command wrote its script or logs");
    assert!(missing.is_empty(), "README's invalid-input table lacks:\n{}", missing.join("\n"));
}

/// A non-empty output directory is refused and left as it was.
#[test]
fn non_empty_output_directory_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep.txt"), "x").unwrap();
    let o = common::search(0, tmp.path(), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stderr(&o).contains("output directory exists and is not empty"));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}
