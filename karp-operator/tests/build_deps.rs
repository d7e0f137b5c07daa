//! `scripts/build-deps.sh` (sourced by the README's two commands) decides which system packages the
//! build still needs. These tests run its detection against fake library directories: a machine with
//! only `libclang-cpp` (the C++ API) must still install libclang-dev, since bindgen cannot load it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-deps.sh")
}

/// A fresh directory under the target dir holding empty files with the given names.
fn fake_lib_dir(test: &str, files: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("build-deps-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create fake lib dir");
    for f in files {
        std::fs::write(dir.join(f), b"").expect("write fake lib");
    }
    dir
}

/// Whether the script's detection says libclang is present in `dir` (nothing is installed).
fn detects_libclang(dir: &Path) -> bool {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#". "$0"; karp_have_libclang && echo present || echo missing"#)
        .arg(script())
        .env("KARP_DEPS_DETECT_ONLY", "1")
        .env("KARP_LIBCLANG_DIRS", dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match String::from_utf8_lossy(&out.stdout).trim() {
        "present" => true,
        "missing" => false,
        other => panic!("unexpected output {other:?}"),
    }
}

#[test]
fn libclang_cpp_alone_is_not_the_libclang_bindgen_loads() {
    let dir = fake_lib_dir("cpp-only", &["libclang-cpp.so.14", "libclang-cpp.so"]);
    assert!(!detects_libclang(&dir));
}

#[test]
fn a_runtime_only_libclang_without_the_development_link_is_missing() {
    let dir = fake_lib_dir("runtime-only", &["libclang.so.1", "libclang-14.so.1"]);
    assert!(!detects_libclang(&dir));
}

#[test]
fn the_unversioned_development_link_is_detected() {
    let dir = fake_lib_dir("dev-link", &["libclang-cpp.so.14", "libclang.so"]);
    assert!(detects_libclang(&dir));
}

#[test]
fn a_versioned_libclang_is_detected() {
    for name in ["libclang-14.so", "libclang-16.0.6.so"] {
        let dir = fake_lib_dir(name, &[name]);
        assert!(detects_libclang(&dir), "{name} should count as libclang");
    }
}

#[test]
fn an_empty_directory_has_no_libclang() {
    let dir = fake_lib_dir("empty", &[]);
    assert!(!detects_libclang(&dir));
}
