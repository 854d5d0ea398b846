//! Files written so that a reader never sees half of one: the one atomic write of the crate
//! (a temporary file in the same directory, fsync, rename, fsync of the directory), and the
//! streamed CRC-32 of checkpoint manifests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// Let `write` create the file at the temporary path it is given (a library's own writer, say
/// safetensors), then make it durable and rename it to `path`. A failed write leaves no
/// temporary file behind.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = tmp_path(path);
    let done = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done?;
    if let Some(dir) = path.parent() {
        fsync_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
    }
    Ok(())
}

/// Persist a rename in `dir` (best effort: not every filesystem supports fsync of a directory).
pub fn fsync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// The hidden temporary name next to `path` that [`write_atomic`] uses: `.NAME.tmp-PID`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// A CSV table: the header, then the rows (each as long as the header), quoted as RFC 4180
/// asks (a field with a comma, a quote or a line break), written through the `csv` crate.
pub fn csv_text<S: AsRef<str>>(header: &[S], rows: &[Vec<String>]) -> String {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    w.write_record(header.iter().map(|h| h.as_ref())).expect("a CSV record in memory");
    for r in rows {
        w.write_record(r).expect("a CSV record in memory");
    }
    String::from_utf8(w.into_inner().expect("an in-memory CSV")).expect("UTF-8 fields")
}

/// A number as a CSV cell: empty when it is not finite.
pub fn csv_num(x: f64, fmt: impl Fn(f64) -> String) -> String {
    if x.is_finite() {
        fmt(x)
    } else {
        String::new()
    }
}

/// Size and CRC-32 (IEEE 802.3, as zlib's `crc32`) of a file, read in blocks.
pub fn crc32_file(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let rows = vec![vec!["Genotype(normal=[('a', 0)])".to_string(), "|a~0|".into(), "say \"x\"".into()]];
        assert_eq!(
            csv_text(&["g", "arch", "note"], &rows),
            "g,arch,note\n\"Genotype(normal=[('a', 0)])\",|a~0|,\"say \"\"x\"\"\"\n"
        );
    }

    #[test]
    fn crc32_of_the_standard_check_string() {
        // The CRC-32 check value of "123456789" (the catalogue of parametrised CRC algorithms).
        let dir = std::env::temp_dir().join(format!("dartsif-fsutil-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("check");
        write_atomic(&p, b"123456789").unwrap();
        assert_eq!(crc32_file(&p).unwrap(), (9, 0xCBF4_3926));
        write_atomic(&p, b"").unwrap();
        assert_eq!(crc32_file(&p).unwrap(), (0, 0));
        // A failed writer leaves neither the file nor its temporary copy.
        let q = dir.join("failed");
        let e = write_atomic_with(&q, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::Path { path: tmp.to_path_buf(), msg: "disk full".into() })
        });
        assert!(e.is_err() && !q.exists() && !tmp_path(&q).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
