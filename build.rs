//! Make the binaries find libtorch at run time without `LD_LIBRARY_PATH`.
//!
//! torch-sys (a direct dependency for this reason) exports the libtorch library directory it
//! linked against as `DEP_TCH_LIBTORCH_LIB`. We embed it as an rpath, and force-link
//! `libtorch_cuda` when the libtorch is a CUDA build: with the default `--as-needed` the linker
//! drops it (no symbol is referenced directly) and CUDA then looks unavailable at run time.
//! It also records the libtorch version from its headers for run reports, and compiles
//! `src/ops/bn_dual.cpp` against the same libtorch's headers (the ABI flag as torch-sys sets it).
use std::path::Path;

fn libtorch_version(lib: &Path) -> Option<String> {
    let include = lib.parent()?.join("include");
    for header in ["torch/headeronly/version.h", "torch/csrc/api/include/torch/version.h"] {
        let Ok(text) = std::fs::read_to_string(include.join(header)) else { continue };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(&format!("#define TORCH_VERSION_{name} ")))
                .map(|v| v.trim().to_string())
        };
        if let (Some(a), Some(b), Some(c)) = (field("MAJOR"), field("MINOR"), field("PATCH")) {
            return Some(format!("{a}.{b}.{c}"));
        }
    }
    None
}

/// The version of tch in Cargo.lock (one source for `info` and the run reports).
fn tch_version() -> Option<String> {
    let lock =
        std::fs::read_to_string(Path::new(&std::env::var("CARGO_MANIFEST_DIR").ok()?).join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"tch\"" {
            return lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"').map(String::from);
        }
    }
    None
}

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rustc-env=DARTSIF_TCH_VERSION={}", tch_version().unwrap_or_else(|| "unknown".into()));
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let version = libtorch_version(Path::new(&lib)).unwrap_or_else(|| "unknown".into());
        println!("cargo:rustc-env=DARTSIF_LIBTORCH_VERSION={version}");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        compile_native(Path::new(&lib));
        if Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    } else {
        println!("cargo:rustc-env=DARTSIF_LIBTORCH_VERSION=unknown");
    }
}

/// The C++ autograd function of `ops::dual` (batch-statistics BatchNorm with its tangent).
fn compile_native(lib: &Path) {
    println!("cargo:rerun-if-changed=src/ops/bn_dual.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = lib.parent().expect("libtorch's lib directory has a parent").join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("src/ops/bn_dual.cpp")
        .compile("dartsif_native");
}
