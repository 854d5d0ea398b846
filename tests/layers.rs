//! The layering of the library, as the README's "Layout" lists it, holds in the code: no
//! `crate::` path in a module's code (comments aside) names a module listed after it, every
//! top-level module is listed, and no source file has over 700 lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The README's list between `<!-- layers: bottom to top -->` and `<!-- /layers -->`: each
/// module's position, bottom first (the modules of a line in their order).
fn layers(readme: &str) -> Vec<String> {
    let start = readme.find("<!-- layers: bottom to top -->").expect("the README's layer list");
    let end = readme[start..].find("<!-- /layers -->").expect("the end of the layer list") + start;
    let mut order = Vec::new();
    for line in readme[start..end].lines().skip(1) {
        let names = line.split(" — ").next().unwrap_or("");
        for part in names.split('`').skip(1).step_by(2) {
            order.push(part.to_string());
        }
    }
    order
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code without comments: `//` to the end of a line (outside string literals) and `/* */`.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let b: Vec<char> = text.chars().collect();
    let (mut i, mut in_str) = (0, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if c == '\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                in_str = false;
            }
        } else if c == '"' && !(i > 0 && b[i - 1] == '\'' && b.get(i + 1) == Some(&'\'')) {
            in_str = true;
            out.push(c);
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
            continue;
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// The modules a piece of code names as `crate::NAME` (and `crate::{A, B}`), with a line each.
fn imports(code: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(k) = rest.find("crate::") {
            let after = &rest[k + 7..];
            let before_ok = k == 0 || !rest[..k].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$');
            if before_ok {
                if let Some(group) = after.strip_prefix('{') {
                    let inner = group.split('}').next().unwrap_or("");
                    for name in inner.split(',') {
                        let name: String =
                            name.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        if !name.is_empty() {
                            found.push((name, n + 1));
                        }
                    }
                } else {
                    let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        found.push((name, n + 1));
                    }
                }
            }
            rest = after;
        }
    }
    found
}

#[test]
fn no_module_imports_one_above_it() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let order = layers(&readme);
    assert!(order.len() >= 20, "the README's layer list is too short: {order:?}");
    let rank: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        let lines = text.lines().count();
        if lines > 700 {
            problems.push(format!("src/{}: {lines} lines (at most 700)", rel.display()));
        }
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let Some(&mine) = rank.get(top.as_str()) else {
            problems.push(format!("src/{}: module `{top}` is not in the README's layer list", rel.display()));
            continue;
        };
        for (name, line) in imports(&code_of(&text)) {
            if name == top || name == "self" || name == "super" {
                continue;
            }
            match rank.get(name.as_str()) {
                Some(&theirs) if theirs < mine => {}
                Some(_) => {
                    problems.push(format!("src/{}:{line}: `{top}` imports `{name}`, a layer above it", rel.display()))
                }
                None if name.chars().next().is_some_and(|c| c.is_uppercase()) => {} // crate::Error, crate::Result
                None => {
                    problems.push(format!("src/{}:{line}: `crate::{name}` is not in the layer list", rel.display()))
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import_and_ignores_comments() {
    let code = code_of("use crate::report::x; // crate::app\n/* crate::app */ let s = \"//\"; crate::{comm, data}::y;");
    let names: Vec<String> = imports(&code).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["report", "comm", "data"]);
    let readme = "<!-- layers: bottom to top -->\n1. `a`, `b` — x `c`\n2. `d` — y\n<!-- /layers -->";
    assert_eq!(layers(readme), ["a", "b", "d"]);
}
