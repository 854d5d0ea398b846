//! Benchmark tables: a plain TSV of architecture → accuracies (`launch/nb201-table` writes
//! NAS-Bench-201's), looked up for every selected architecture when `select.benchmark_table`
//! names one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::records::BenchmarkEntry;
use crate::error::{Error, Result};

/// Rows of a benchmark table by architecture text.
#[derive(Debug, Clone)]
pub struct BenchmarkTable {
    pub columns: Vec<String>,
    rows: HashMap<String, Vec<f64>>,
}

impl BenchmarkTable {
    /// Read a table: a header `arch<TAB>col…`, then one row per architecture. Errors name the
    /// file and line.
    pub fn load(path: &Path) -> Result<Self> {
        let bad =
            |line: usize, msg: String| Error::Path { path: path.to_path_buf(), msg: format!("line {line}: {msg}") };
        let text = std::fs::read_to_string(path).map_err(|e| Error::Path {
            path: path.to_path_buf(),
            msg: format!("cannot read the benchmark table: {e}"),
        })?;
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| bad(1, "empty benchmark table".into()))?;
        let head: Vec<&str> = header.split('\t').collect();
        if head.first() != Some(&"arch") || head.len() < 2 {
            return Err(bad(1, "the header must be `arch<TAB>column…` (launch/nb201-table writes it)".into()));
        }
        let columns: Vec<String> = head[1..].iter().map(|s| s.to_string()).collect();
        let mut rows = HashMap::new();
        for (i, line) in lines {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != head.len() {
                return Err(bad(i + 1, format!("{} fields, the header has {}", f.len(), head.len())));
            }
            let values = f[1..]
                .iter()
                .map(|v| v.trim().parse::<f64>().map_err(|_| bad(i + 1, format!("not a number: {v:?}"))))
                .collect::<Result<Vec<f64>>>()?;
            rows.insert(f[0].trim().to_string(), values);
        }
        Ok(BenchmarkTable { columns, rows })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row of `arch` by column (a value that is not finite as `None`), or `None` when the
    /// table lacks it.
    pub fn lookup(&self, arch: &str) -> Option<BTreeMap<String, Option<f64>>> {
        self.rows
            .get(arch.trim())
            .map(|v| self.columns.iter().cloned().zip(v.iter().map(|x| x.is_finite().then_some(*x))).collect())
    }
}

/// The column a figure plots for `dataset`: its test accuracy (`cifar10_test`,
/// `cifar100_test`, `imagenet16_test` as `launch/nb201-table` names them), else the first
/// column with `test` in its name (a `groundtruth` table's `test_acc`), else the first.
pub fn preferred_column(columns: &[String], dataset: &str) -> Option<String> {
    let stem = if dataset.starts_with("imagenet16") { "imagenet16" } else { dataset };
    let exact = format!("{stem}_test");
    columns
        .iter()
        .find(|c| **c == exact)
        .or_else(|| columns.iter().find(|c| c.contains("test")))
        .or_else(|| columns.first())
        .cloned()
}

/// The record's benchmark entry for the configured table, if any.
pub fn entry(table: Option<&Path>, arch: &str) -> Result<Option<BenchmarkEntry>> {
    let Some(path) = table else { return Ok(None) };
    let t = BenchmarkTable::load(path)?;
    let found = t.lookup(arch);
    match &found {
        Some(v) => tracing::info!("benchmark ({}): {arch}: {v:?}", path.display()),
        None => tracing::warn!("benchmark ({}): {arch} is not in the table", path.display()),
    }
    Ok(Some(BenchmarkEntry { table: path.display().to_string(), arch: arch.trim().to_string(), accuracy: found }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tsv");
        std::fs::write(&p, "arch\tc10_valid\tc10_test\n|a~0|\t91.5\t93.25\n|b~0|\t10\t11\n").unwrap();
        let t = BenchmarkTable::load(&p).unwrap();
        assert_eq!(t.len(), 2);
        let want = [("c10_test", 93.25), ("c10_valid", 91.5)].map(|(k, v)| (k.to_string(), Some(v)));
        assert_eq!(t.lookup("|a~0|").unwrap(), BTreeMap::from(want));
        assert!(t.lookup("|c~0|").is_none());
        std::fs::write(&p, "arch\tx\n|a~0|\t9x\n").unwrap();
        let e = BenchmarkTable::load(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("not a number"), "{e}");
        std::fs::write(&p, "name\tx\n").unwrap();
        assert!(BenchmarkTable::load(&p).unwrap_err().to_string().contains("header"));
        // serde_json's maps sort keys: cifar100_test comes before cifar10_test, and must not be
        // taken for CIFAR-10.
        let cols: Vec<String> =
            ["cifar100_test", "cifar10_test", "cifar10_valid"].iter().map(|s| s.to_string()).collect();
        assert_eq!(preferred_column(&cols, "cifar10").unwrap(), "cifar10_test");
        assert_eq!(preferred_column(&cols, "cifar100").unwrap(), "cifar100_test");
        let gt = vec!["test_acc".to_string(), "train_acc".to_string()];
        assert_eq!(preferred_column(&gt, "synthetic").unwrap(), "test_acc");
    }
}
