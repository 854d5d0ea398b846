//! Golden files: the outputs a user reads or a script parses (a search's `config.toml`,
//! `metrics.jsonl`, `report.json`, `alphas.jsonl`, `genotypes.jsonl`; a selection's
//! `scores.json` and `scores.csv`; an ablation's JSON and CSVs; a training's `metrics.jsonl` and
//! `report.json`) compared with the copies under `tests/golden/`, so that moving code proves
//! it changed no output.
//!
//! What is compared: every key, every string, the order of keys, lines and columns, exactly;
//! numbers to a relative 1e-3 (another CPU's libtorch kernels round f32 differently, and a
//! Woodbury solve amplifies that; one thread per rank fixes the order of reductions), or bit for
//! bit with `DARTSIF_GOLDEN_EXACT=1` (same machine, before and after a change). Values that
//! measure the machine (seconds, rates, memory, paths, host names) are replaced by
//! `<measured>` before the comparison and in the stored copies.
//! `DARTSIF_BLESS=1 cargo test --test golden` rewrites the copies (review the diff).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden_dir() -> PathBuf {
    common::repo().join("tests/golden")
}

fn run(args: &[&str]) {
    let o = Command::new(common::bin()).args(args).env("DARTSIF_LOG", "warn").output().unwrap();
    common::assert_ok(&o);
}

/// Keys whose values measure the machine (seconds, rates, memory, thread counts, versions of
/// the libraries found), not the computation.
fn measured(key: &str) -> bool {
    key.ends_with("_s")
        || key.starts_with("seconds")
        || key.starts_with("peak_rss")
        || ["threads_per_rank", "dartsif_dist", "libtorch", "tch", "mpi_library", "host", "hostname"].contains(&key)
}

fn mask_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if measured(k) && !x.is_object() && !x.is_array() {
                    *x = serde_json::Value::String("<measured>".into());
                } else if measured(k) {
                    mask_all(x);
                } else {
                    mask_json(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(mask_json),
        _ => {}
    }
}

fn mask_all(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => m.values_mut().for_each(mask_all),
        serde_json::Value::Array(a) => a.iter_mut().for_each(mask_all),
        x => *x = serde_json::Value::String("<measured>".into()),
    }
}

/// A file's text with measured values masked: JSON (pretty, as written), JSON lines, CSV (by
/// header name), TOML (by key) — each kept in its own layout so a changed layout shows.
fn masked(path: &Path, tmp: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = text.replace(&tmp.display().to_string(), "<tmp>");
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    if name.ends_with(".jsonl") {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                mask_json(&mut v);
                serde_json::to_string(&v).unwrap() + "\n"
            })
            .collect()
    } else if name.ends_with(".json") {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        mask_json(&mut v);
        serde_json::to_string_pretty(&v).unwrap() + "\n"
    } else if name.ends_with(".csv") {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or("").to_string();
        let cols: Vec<bool> = header.split(',').map(measured).collect();
        let mut out = header + "\n";
        for l in lines {
            let f: Vec<&str> = l.split(',').collect();
            let f: Vec<&str> =
                f.iter().enumerate().map(|(i, x)| if cols.get(i) == Some(&true) { "<measured>" } else { x }).collect();
            out += &(f.join(",") + "\n");
        }
        out
    } else {
        text.lines()
            .map(|l| match l.split_once(" = ") {
                Some((k, _)) if measured(k.trim()) => format!("{k} = <measured>\n"),
                _ => format!("{l}\n"),
            })
            .collect()
    }
}

/// Splits a text into tokens: numbers (compared with a tolerance) and everything else (exactly).
fn tokens(s: &str) -> Vec<Result<f64, String>> {
    let mut out = Vec::new();
    let mut word = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts_number = c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
                && !word.chars().last().is_some_and(|p| p.is_alphanumeric() || p == '_');
        if starts_number && !word.chars().last().is_some_and(|p| p.is_alphabetic() || p == '_') {
            if !word.is_empty() {
                out.push(Err(std::mem::take(&mut word)));
            }
            let mut j = i + 1;
            while j < chars.len()
                && (chars[j].is_ascii_digit()
                    || chars[j] == '.'
                    || ((chars[j] == 'e' || chars[j] == 'E')
                        && chars.get(j + 1).is_some_and(|d| d.is_ascii_digit() || *d == '-' || *d == '+'))
                    || ((chars[j] == '-' || chars[j] == '+') && (chars[j - 1] == 'e' || chars[j - 1] == 'E')))
            {
                j += 1;
            }
            let n: String = chars[i..j].iter().collect();
            match n.parse::<f64>() {
                Ok(x) => out.push(Ok(x)),
                Err(_) => out.push(Err(n)),
            }
            i = j;
        } else {
            word.push(c);
            i += 1;
        }
    }
    if !word.is_empty() {
        out.push(Err(word));
    }
    out
}

fn same(name: &str, got: &str, want: &str, exact: bool) -> Result<(), String> {
    let (g, w) = (tokens(got), tokens(want));
    for (k, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = match (a, b) {
            (Ok(x), Ok(y)) => {
                if exact {
                    x.to_bits() == y.to_bits()
                } else {
                    (x - y).abs() <= 1e-3 * x.abs().max(y.abs()).max(1e-3)
                }
            }
            (Err(x), Err(y)) => x == y,
            _ => false,
        };
        if !ok {
            let at = |t: &[Result<f64, String>]| {
                t[k.saturating_sub(6)..(k + 6).min(t.len())]
                    .iter()
                    .map(|x| match x {
                        Ok(v) => format!("{v}"),
                        Err(s) => s.clone(),
                    })
                    .collect::<String>()
            };
            return Err(format!(
                "{name}: differs at token {k}: got {:?}, want {:?}\n  got …{}…\n want …{}…",
                a,
                b,
                at(&g),
                at(&w)
            ));
        }
    }
    if g.len() != w.len() {
        return Err(format!("{name}: {} tokens, the golden copy has {}", g.len(), w.len()));
    }
    Ok(())
}

#[test]
fn outputs_match_the_golden_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let search = t.join("search");
    common::assert_ok(&common::search(0, &search, &["data.num_classes=3", "space.channels=2", "threads=1"]));
    let (sif, sim) = (t.join("sel-if"), t.join("sel-im"));
    let common_sel = ["--set", "select.n=4", "--set", "select.batch_size=8"];
    let mut a = vec!["select".to_string(), "--run".into(), s(&search), "--out".into(), s(&sif)];
    // DARTS-IF in f64: in f32 one candidate's ĝᵀF⁻¹ĝ (remove avg_pool_3x3 on edge 3<-0) moves by
    // 0.5 % between CPUs (f32 vs f64 on one machine: 4.8e-3; f64 from two search states whose α
    // differ by 4e-6 relative: ≤ 1e-6), beyond the 1e-3 this comparison allows.
    a.extend(["--criterion", "darts-if", "--ihvp", "woodbury", "--set", "select.precision=\"f64\""].map(String::from));
    a.extend(common_sel.map(String::from));
    run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut a = vec!["select".to_string(), "--run".into(), s(&search), "--out".into(), s(&sim)];
    a.extend(["--criterion", "darts-im", "--ihvp", "woodbury"].map(String::from));
    a.extend(common_sel.map(String::from));
    run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let abl = t.join("abl");
    let mut a = vec!["ablate".to_string(), "--run".into(), s(&search), "--out".into(), s(&abl)];
    a.extend(["--sweep", "n=1,2", "--sweep", "ihvp=woodbury,identity"].map(String::from));
    a.extend(["--set", "select.criterion=darts-im", "--set", "select.batch_size=8"].map(String::from));
    run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let train = t.join("train");
    let arch = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|";
    let mut a = vec!["train".to_string(), "--genotype".into(), arch.into(), "--out".into(), s(&train)];
    for x in [
        "data.image_size=8",
        "data.train_size=128",
        "data.test_size=32",
        "train.epochs=2",
        "train.batch_size=16",
        "train.micro_batch=16",
        "train.channels=2",
        "train.layers=1",
        "threads=1",
    ] {
        a.extend(["--set".to_string(), x.to_string()]);
    }
    run(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let files: [(&str, &Path, &str); 14] = [
        ("search.config.toml", &search, "config.toml"),
        ("search.metrics.jsonl", &search, "metrics.jsonl"),
        ("search.report.json", &search, "report.json"),
        ("search.alphas.jsonl", &search, "alphas.jsonl"),
        ("search.genotypes.jsonl", &search, "genotypes.jsonl"),
        ("select-if.scores.json", &sif, "scores.json"),
        ("select-if.scores.csv", &sif, "scores.csv"),
        ("select-im.scores.json", &sim, "scores.json"),
        ("select-im.scores.csv", &sim, "scores.csv"),
        ("ablate.ablation.json", &abl, "ablation.json"),
        ("ablate.ablation.csv", &abl, "ablation.csv"),
        ("ablate.ablation-summary.csv", &abl, "ablation-summary.csv"),
        ("train.metrics.jsonl", &train, "metrics.jsonl"),
        ("train.report.json", &train, "report.json"),
    ];
    let bless = std::env::var_os("DARTSIF_BLESS").is_some();
    let exact = std::env::var_os("DARTSIF_GOLDEN_EXACT").is_some();
    let mut failures = Vec::new();
    for (name, dir, file) in files {
        let got = masked(&dir.join(file), t);
        let path = golden_dir().join(name);
        if bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (DARTSIF_BLESS=1 writes it)", path.display()));
        if let Err(e) = same(name, &got, &want, exact) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "outputs differ from tests/golden/:\n{}", failures.join("\n"));
}

#[test]
fn the_comparison_sees_a_changed_number_key_and_layout() {
    // The comparison itself: a number off by more than the tolerance, a renamed key, a line
    // more, each fail; a number within the tolerance passes.
    let want = "{\n  \"loss\": 1.2345678,\n  \"op\": \"skip_connect\"\n}\n";
    assert!(same("x", want, want, true).is_ok());
    assert!(same("x", &want.replace("1.2345678", "1.2345679"), want, false).is_ok());
    assert!(same("x", &want.replace("1.2345678", "1.2345679"), want, true).is_err());
    assert!(same("x", &want.replace("1.2345678", "1.2375678"), want, false).is_err());
    assert!(same("x", &want.replace("\"loss\"", "\"loss_\""), want, false).is_err());
    assert!(same("x", &(want.to_string() + "\n"), want, false).is_err());
    assert!(same("x", &want.replace("skip_connect", "skip_connect3"), want, false).is_err());
    // Keys naming an edge ("1<-0") and op names with digits are words, not numbers.
    assert!(same("x", "cell,1<-0,nor_conv_3x3", "cell,1<-0,nor_conv_1x1", false).is_err());
    assert!(same("x", "a,-1e-3", "a,-1.00001e-3", false).is_ok());
}
