//! `dartsif-dist train`: a genotype's network from scratch under two ranks, DARTS's protocol
//! (auxiliary head, drop-path ramp, cutout) on a tiny synthetic task; bad genotypes refused.

mod common;

use std::process::{Command, Output};

fn train(np: usize, out: &std::path::Path, genotype: &str, sets: &[&str]) -> Output {
    // np = 0: the binary alone (local backend), as a user's single-process run.
    let mut c = if np == 0 {
        Command::new(common::bin())
    } else {
        let mut c = Command::new(common::repo().join("launch/mpirun"));
        c.arg("-np").arg(np.to_string()).arg(common::bin());
        c
    };
    c.args(["train", "--genotype", genotype, "--out", &out.display().to_string()]);
    let base = [
        "data.image_size=32",
        "data.train_size=128",
        "data.test_size=64",
        "data.cutout=16",
        "train.epochs=2",
        "train.batch_size=32",
        "train.micro_batch=16",
        "train.channels=4",
        "train.layers=5",
    ];
    for s in base.iter().chain(sets) {
        c.args(["--set", s]);
    }
    c.env("DARTSIF_LOG", "warn").output().unwrap()
}

const DARTS_V2: &str = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])";

#[test]
fn darts_and_nb201_genotypes_train_on_two_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    // The genotype from a file, as a run's genotype.txt.
    let gfile = tmp.path().join("genotype.txt");
    std::fs::write(&gfile, format!("{DARTS_V2}\n")).unwrap();
    let out = tmp.path().join("darts");
    let o = train(2, &out, &gfile.display().to_string(), &[]);
    common::assert_ok(&o);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    // drop-path 0.2·epoch/epochs; lr 0.025 cosine to 0: 0.025, then 0.0125 at epoch 1 of 2.
    assert_eq!(lines[0]["drop_path"], 0.0);
    assert!((lines[1]["drop_path"].as_f64().unwrap() - 0.1).abs() < 1e-12);
    assert!((lines[1]["lr"].as_f64().unwrap() - 0.0125).abs() < 1e-12);
    for l in &lines {
        assert!(l["train_loss"].as_f64().unwrap().is_finite());
        // An accuracy over the 64 test images is a whole number of them.
        let correct = l["test_acc"].as_f64().unwrap() * 64.0;
        assert!((correct - correct.round()).abs() < 1e-9 && (0.0..=64.0).contains(&correct), "{l}");
    }
    // The network (with its auxiliary head) as the library builds it, stored by name.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let g = dartsif::space::Genotype::Darts(DARTS_V2.parse().unwrap());
    let cfg = dartsif::network::NetworkConfig {
        channels: 4,
        layers: 5,
        num_classes: 10,
        auxiliary: true,
        stem: dartsif::config::StemKind::Cifar,
    };
    let net = dartsif::network::build(&g, cfg, tch::Kind::Float, tch::Device::Cpu).unwrap();
    assert_eq!(report["weights"], net.params().count());
    let stored = tch::Tensor::read_safetensors(out.join("model.safetensors")).unwrap();
    assert!(stored.iter().any(|(n, _)| n == "auxiliary_head.classifier.weight"));
    assert_eq!(std::fs::read_to_string(out.join("genotype.txt")).unwrap().trim(), DARTS_V2);

    // NB201's discrete network from an arch string.
    let out = tmp.path().join("nb201");
    let arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|";
    common::assert_ok(&train(1, &out, arch, &["train.layers=1", "train.epochs=1"]));
    assert!(out.join("model.safetensors").is_file());

    // A bad genotype: one line, exit 2, nothing written.
    let out = tmp.path().join("bad");
    let o = train(0, &out, "Genotype(normal=[('conv_9x9', 0)])", &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = common::stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--genotype: genotype:") && err.contains("unknown op"), "{err}");
    assert!(!out.exists());
}

/// A signal in the middle of epoch 1 stops both ranks after a checkpoint (exit 3); `--resume
/// auto` finishes with the same weights and metrics as the uninterrupted run.
#[test]
fn an_interrupted_training_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    common::assert_ok(&train(2, &full, DARTS_V2, &[]));
    let cut = tmp.path().join("cut");
    // 128 images / batch 32: 4 steps per epoch; global step 5 is epoch 1, step 1.
    let o = train(2, &cut, DARTS_V2, &["fault.action=\"signal\"", "fault.phase=\"train\"", "fault.at_step=5"]);
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    let mut c = Command::new(common::repo().join("launch/mpirun"));
    c.arg("-np").arg("2").arg(common::bin());
    c.args(["train", "--resume", "auto", "--out", &cut.display().to_string()]);
    common::assert_ok(&c.env("DARTSIF_LOG", "warn").output().unwrap());
    let load = |d: &std::path::Path| -> std::collections::HashMap<String, tch::Tensor> {
        tch::Tensor::read_safetensors(d.join("model.safetensors")).unwrap().into_iter().collect()
    };
    let (a, b) = (load(&full), load(&cut));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs after resume");
    }
    let metrics = |d: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("seconds");
                v.as_object_mut().unwrap().remove("reduce_s");
                v
            })
            .collect()
    };
    assert_eq!(metrics(&full), metrics(&cut));
}
