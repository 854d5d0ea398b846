//! Benchmark lookup: `launch/nb201-table` converts the NAS-Bench-201 file (through the
//! `nas_201_api` package; a stand-in with the same interface here, since the file cannot be
//! shipped) into a TSV table, and `search`/`select` report the selected architecture's row.

mod common;

use std::path::Path;
use std::process::Command;

/// A stand-in for `nas_201_api` with NB201's interface: 15,625 arch strings, and accuracies
/// that are a known function of the index.
const FAKE_API: &str = r#"
import itertools
OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
class NASBench201API:
    def __init__(self, path, verbose=True):
        open(path).close()
        self.meta_archs = []
        for o in itertools.product(OPS, repeat=6):
            self.meta_archs.append("|%s~0|+|%s~0|%s~1|+|%s~0|%s~1|%s~2|" % o)
    def __len__(self):
        return len(self.meta_archs)
    def arch(self, index):
        return self.meta_archs[index]
    def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
        assert hp == "200" and is_random is False
        base = {"cifar10-valid": 10.0, "cifar10": 20.0, "cifar100": 30.0, "ImageNet16-120": 40.0}[dataset]
        return {"valid-accuracy": base + (index % 97) / 4.0, "test-accuracy": base + 1 + (index % 89) / 8.0}
"#;

fn read_table(p: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| l.split('\t').map(String::from).collect()).collect()
}

#[test]
fn the_table_is_converted_and_selected_architectures_are_looked_up() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir(t.join("nas_201_api")).unwrap();
    std::fs::write(t.join("nas_201_api/__init__.py"), FAKE_API).unwrap();
    std::fs::write(t.join("NAS-Bench-201-v1_1-096897.pth"), "").unwrap();
    let table = t.join("nb201.tsv");
    let o = Command::new("python3")
        .arg(common::repo().join("launch/nb201-table"))
        .arg(t.join("NAS-Bench-201-v1_1-096897.pth"))
        .arg("--out")
        .arg(&table)
        .env("PYTHONPATH", t)
        .output()
        .unwrap();
    common::assert_ok(&o);
    let rows = read_table(&table);
    assert_eq!(rows.len(), 1 + 15_625);
    assert_eq!(
        rows[0].join(","),
        "arch,cifar10_valid,cifar10_test,cifar100_valid,cifar100_test,imagenet16_valid,imagenet16_test"
    );
    // Row of index 9930: the stand-in enumerates in itertools.product order (last edge fastest),
    // so its ops are 9930's base-5 digits; CIFAR-10 valid 10 + (9930 % 97)/4, test 21 + (9930 % 89)/8.
    let r = &rows[1 + 9930];
    let d: Vec<usize> = (0..6).map(|k| 9930 / 5usize.pow(5 - k) % 5).collect();
    let ops = dartsif::space::NB201_OPS;
    let arch = format!(
        "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|",
        ops[d[0]], ops[d[1]], ops[d[2]], ops[d[3]], ops[d[4]], ops[d[5]]
    );
    assert_eq!(r[0], arch);
    assert_eq!(r[1].parse::<f64>().unwrap(), 10.0 + (9930 % 97) as f64 / 4.0);
    assert_eq!(r[2].parse::<f64>().unwrap(), 21.0 + (9930 % 89) as f64 / 8.0);

    // search (magnitude) and select (darts-im) report the row of their genotype.
    let run = t.join("run");
    let set = format!("select.benchmark_table=\"{}\"", table.display());
    common::assert_ok(&common::search(0, &run, &[&set]));
    let row_of = |g: &str| rows.iter().find(|r| r[0] == g.trim()).unwrap().clone();
    let g = std::fs::read_to_string(run.join("genotype.txt")).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let acc = &report["benchmark"]["accuracy"];
    let want = row_of(&g);
    for (k, col) in rows[0][1..].iter().enumerate() {
        assert_eq!(acc[col].as_f64().unwrap(), want[k + 1].parse::<f64>().unwrap(), "{col}");
    }
    let out = t.join("im");
    let o = Command::new(common::bin())
        .args(["select", "--run", run.to_str().unwrap(), "--out", out.to_str().unwrap(), "--criterion", "darts-im"])
        .args(["--set", "select.n=2", "--set", "select.batch_size=8"])
        .env("DARTSIF_LOG", "warn")
        .output()
        .unwrap();
    common::assert_ok(&o);
    let g = std::fs::read_to_string(out.join("genotype.txt")).unwrap();
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).unwrap()).unwrap();
    assert_eq!(scores["benchmark"]["arch"], g.trim());
    assert_eq!(
        scores["benchmark"]["accuracy"]["cifar100_test"].as_f64().unwrap(),
        row_of(&g)[4].parse::<f64>().unwrap()
    );

    // A malformed table stops the run before anything is written.
    std::fs::write(t.join("bad.tsv"), "arch\tx\n|a~0|\tnot-a-number\n").unwrap();
    let bad = t.join("bad-run");
    let o = common::search(0, &bad, &[&format!("select.benchmark_table=\"{}\"", t.join("bad.tsv").display())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stderr(&o).contains("line 2: not a number"), "{}", common::stderr(&o));
    assert!(!bad.exists());
}
