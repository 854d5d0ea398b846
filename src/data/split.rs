//! Index lists of NAS-Bench-201's split files (`cifar-split.txt`, `cifar100-test-split.txt`,
//! `imagenet-16-120-test-split.txt`): a JSON object whose entries are either AutoDL's typed
//! form `["int", [0, 5, 7, …]]` or a plain list.

use std::path::Path;

use crate::error::{Error, Result};

/// Indices under `key`. `key` may carry a `test:` prefix (the list indexes the test set:
/// NB201's `xvalid`/`xtest`), which is returned as the second value; the caller offsets it.
pub fn split_indices(path: &Path, key: &str) -> Result<(Vec<usize>, bool)> {
    let (key, test) = match key.strip_prefix("test:") {
        Some(k) => (k, true),
        None => (key, false),
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::data(path, format!("cannot read: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::data(path, format!("not a JSON split file: {e}")))?;
    let Some(entry) = v.get(key) else {
        let keys: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        return Err(Error::data(path, format!("no split {key:?} (the file has {})", keys.join(", "))));
    };
    let list = match entry {
        serde_json::Value::Array(a) if a.len() == 2 && a[0].is_string() && a[1].is_array() => &a[1],
        other => other,
    };
    let Some(items) = list.as_array() else {
        return Err(Error::data(path, format!("split {key:?} is not a list of indices")));
    };
    let idx = items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_u64().map(|u| u as usize).ok_or_else(|| {
                Error::data(path, format!("split {key:?}: entry {i} ({x}) is not a non-negative integer"))
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok((idx, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_autodl_typed_and_plain_lists() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cifar-split.txt");
        std::fs::write(&p, r#"{"train": ["int", [0, 5, 7]], "valid": [1, 2], "xvalid": ["int", [9]]}"#).unwrap();
        assert_eq!(split_indices(&p, "train").unwrap(), (vec![0, 5, 7], false));
        assert_eq!(split_indices(&p, "valid").unwrap(), (vec![1, 2], false));
        assert_eq!(split_indices(&p, "test:xvalid").unwrap(), (vec![9], true));
        let e = split_indices(&p, "xtest").unwrap_err().to_string();
        assert!(e.contains("no split \"xtest\"") && e.contains("train"), "{e}");
        std::fs::write(&p, r#"{"train": [0, -1]}"#).unwrap();
        let e = split_indices(&p, "train").unwrap_err().to_string();
        assert!(e.contains("entry 1 (-1)"), "{e}");
    }
}
