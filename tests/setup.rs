//! `launch/setup`'s decision of which Debian packages to install, on simulated machines
//! (`launch/setup --plan --root DIR`: the same checks, over a root prefix, installing nothing).
//!
//! The case that broke a fresh Debian 12 box: `libclang-cpp.so.14` (the C++ interface library,
//! pulled in by another package) but no `libclang`. clang-sys skips `libclang-cpp` and then
//! fails the build, so the set-up must install `libclang-dev` there.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Files (empty, executables under `*/bin/`) under a fresh root.
fn machine(files: &[&str]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    for f in files {
        let p = root.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"").unwrap();
        if f.contains("bin/") {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    root
}

fn plan(root: &Path) -> Vec<String> {
    let o = Command::new(repo().join("launch/setup"))
        .args(["--plan", "--root"])
        .arg(root)
        .env_remove("LIBCLANG_PATH")
        .output()
        .expect("run launch/setup");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect()
}

/// Everything the build needs, as Debian 12's packages lay it out (libclang-dev, libclang1-14,
/// libclang-common-14-dev, libopenmpi-dev, openmpi-bin, g++, unzip).
const COMPLETE: &[&str] = &[
    "usr/bin/mpirun",
    "usr/bin/mpicc",
    "usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h",
    "usr/bin/cc",
    "usr/bin/c++",
    "usr/bin/unzip",
    "usr/lib/llvm-14/lib/libclang-cpp.so.14",
    "usr/lib/llvm-14/lib/libclang.so.1",
    "usr/lib/llvm-14/lib/libclang.so",
    "usr/lib/x86_64-linux-gnu/libclang-14.so.1",
    "usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h",
];

fn without(names: &[&str]) -> Vec<&'static str> {
    COMPLETE.iter().copied().filter(|f| !names.iter().any(|n| f.ends_with(n))).collect()
}

#[test]
fn a_complete_machine_needs_nothing() {
    assert_eq!(plan(machine(COMPLETE).path()), Vec::<String>::new());
}

/// The fresh Debian 12 box of the first-run report: only the C++ interface library.
#[test]
fn libclang_cpp_alone_is_not_libclang() {
    // Everything else present (clang's headers too): only the libclang check can ask for it.
    let mut files = without(&["libclang.so.1", "libclang.so", "libclang-14.so.1"]);
    files.push("usr/lib/x86_64-linux-gnu/libclang-cpp.so.14");
    assert_eq!(plan(machine(&files).path()), ["libclang-dev"]);
}

/// A versioned libclang is one clang-sys loads; bindgen still needs clang's builtin headers.
#[test]
fn libclang_needs_its_builtin_headers_too() {
    let files = without(&["libclang.so.1", "libclang.so", "stddef.h"]);
    assert_eq!(plan(machine(&files).path()), ["libclang-dev"]);
    let mut files = without(&["libclang.so.1", "libclang.so"]);
    files.push("usr/lib/x86_64-linux-gnu/libclang-14.so.14.0.6");
    assert_eq!(plan(machine(&files).path()), Vec::<String>::new());
}

/// mpirun alone (openmpi-bin) is not a build environment: mpicc and mpi.h come with -dev.
#[test]
fn mpi_needs_the_compiler_wrapper_and_the_header() {
    assert_eq!(plan(machine(&without(&["mpicc"])).path()), ["libopenmpi-dev"]);
    assert_eq!(plan(machine(&without(&["mpi.h"])).path()), ["libopenmpi-dev"]);
    assert_eq!(plan(machine(&without(&["mpirun"])).path()), ["openmpi-bin"]);
    assert_eq!(plan(machine(&without(&["c++"])).path()), ["g++"]);
}

#[test]
fn an_empty_machine_needs_everything() {
    assert_eq!(plan(machine(&[]).path()), ["openmpi-bin", "libopenmpi-dev", "libclang-dev", "g++", "unzip"]);
}
