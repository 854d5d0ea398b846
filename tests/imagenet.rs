//! The ImageNet networks of the DARTS family end to end, at a small image size on synthetic
//! data: a PC-DARTS search with the ImageNet stem (three stride-2 convolutions, K = 2), and
//! DARTS's `NetworkImageNet` trained from a genotype; a bad stem setting is refused.

mod common;

use std::process::Command;

const DARTS_V2: &str = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])";

fn run(args: &[&str], sets: &[&str]) -> std::process::Output {
    let mut c = Command::new(common::bin());
    c.args(args);
    for s in sets {
        c.args(["--set", s]);
    }
    c.env("DARTSIF_LOG", "warn").output().unwrap()
}

fn json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn pc_darts_searches_and_network_imagenet_trains_with_the_imagenet_stem() {
    let tmp = tempfile::tempdir().unwrap();
    let search = tmp.path().join("search");
    let sets = [
        "space.name=\"pc-darts\"",
        "space.stem=\"imagenet\"",
        "space.partial=2",
        "space.channels=4",
        "space.layers=3",
        "data.image_size=32",
        "data.train_size=64",
        "data.test_size=\"none\"",
        "search.epochs=1",
        "search.steps_per_epoch=2",
        "search.batch_size=16",
        "search.micro_batch=16",
    ];
    let o = run(&["search", "--out", search.to_str().unwrap()], &sets);
    common::assert_ok(&o);
    let report = json(&search.join("report.json"));
    assert_eq!(report["space"], "pc-darts");
    assert!(report["final_epoch"]["val_loss"].as_f64().unwrap().is_finite(), "{report}");
    // The stem is recorded in the run's config (a resume rebuilds the same network).
    let cfg = std::fs::read_to_string(search.join("config.toml")).unwrap();
    assert!(cfg.contains("stem = \"imagenet\"") && cfg.contains("partial = 2"), "{cfg}");

    let train = tmp.path().join("train");
    let tsets = [
        "data.image_size=32",
        "data.train_size=128",
        "data.test_size=32",
        "train.epochs=2",
        "train.batch_size=16",
        "train.channels=4",
        "train.layers=5",
        "train.stem=\"imagenet\"",
        "train.label_smoothing=0.1",
        "train.weights.lr=0.1",
        "train.weights.schedule=\"exponential\"",
        "train.auxiliary=false",
    ];
    let o = run(&["train", "--genotype", DARTS_V2, "--out", train.to_str().unwrap()], &tsets);
    common::assert_ok(&o);
    let text = std::fs::read_to_string(train.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // DARTS's ImageNet schedule: lr·0.97^epoch.
    assert_eq!(lines[0]["lr"], 0.1);
    assert!((lines[1]["lr"].as_f64().unwrap() - 0.097).abs() < 1e-15, "{}", lines[1]);
    for v in &lines {
        assert!(v["train_loss"].as_f64().unwrap().is_finite(), "{v}");
        // Top-5 of 10 synthetic classes over 32 test images: whole images, at least the top-1.
        let (top1, top5) = (v["test_acc"].as_f64().unwrap(), v["test_top5"].as_f64().unwrap());
        assert!(top5 >= top1 && (top5 * 32.0).fract() == 0.0, "{v}");
    }
    let report = json(&train.join("report.json"));
    assert_eq!(report["weights"], report["weights_without_auxiliary"], "no auxiliary head");
    assert!(report["multiply_adds"].as_f64().unwrap() > 0.0 && report["image_size"] == 32, "{report}");

    // The ImageNet auxiliary head needs the 224 (or 256) px protocol: refused, nothing written.
    let bad = tmp.path().join("bad");
    let mut b = tsets.to_vec();
    b.pop();
    let o = run(&["train", "--genotype", DARTS_V2, "--out", bad.to_str().unwrap()], &b);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("train.auxiliary: the ImageNet auxiliary head needs 224 or 256 px"), "{err}");
    assert!(!bad.exists());
}
