//! `scripts/image` end to end: the container image built from the `karp` binary this test suite
//! already built, loaded from its OCI archive into a private podman store, its filesystem
//! exported (`podman create` + `podman export`) and run with `chroot` as the image's user: proof
//! that the image runs with only what it contains.
//!
//! Needs podman (`./scripts/test` installs it) and root (chroot); without either it fails with
//! what to do, it never skips.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

/// Where the image puts the binary (its entrypoint; the chart passes `run ...` as arguments).
const KARP: &str = "/usr/local/bin/karp";
/// The image's user (`USER`), distroless' nonroot.
const NONROOT: &str = "65532:65532";
/// Everything but the binary (libraries, loader, CA bundle, /etc files) stays below this.
const MAX_BESIDES_BINARY: u64 = 10_000_000;
/// The whole unpacked image of the suite's debug binary (stripped) stays below this; the release
/// binary's image is smaller.
const MAX_IMAGE: u64 = 160_000_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` and returns its stdout; panics with its output when it fails.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not start ({e})"));
    assert!(out.status.success(), "{what} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test needs root for chroot and podman for the image; says what to do otherwise.
fn require_root_and_podman() {
    let uid = run(Command::new("id").arg("-u"), "id -u");
    assert_eq!(
        uid.trim(),
        "0",
        "this test runs the image's filesystem with chroot, which needs root: run it as root \
         (CI and ./scripts/test do)"
    );
    let podman = Command::new("podman").arg("--version").output();
    assert!(
        podman.as_ref().is_ok_and(|o| o.status.success()),
        "podman is missing: install it (Debian: apt-get install podman; ./scripts/test installs \
         it when missing): {podman:?}"
    );
}

/// A podman with a store of its own under `dir` (vfs, no daemon, no system configuration), as
/// `scripts/image` uses; its run root is a short directory in /tmp (podman refuses one longer
/// than 50 characters).
struct Podman {
    dir: PathBuf,
    runroot: PathBuf,
}

impl Podman {
    fn new(dir: PathBuf) -> Podman {
        let runroot = PathBuf::from(format!("/tmp/karp-image-test.{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::create_dir_all(&runroot).unwrap();
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}/storage\"\nrunroot = \"{}\"\n",
                dir.display(),
                runroot.display()
            ),
        )
        .unwrap();
        Podman { dir, runroot }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("TMPDIR", self.dir.join("tmp"))
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(&self.runroot)
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        run(&mut self.cmd(args), &format!("podman {}", args.join(" ")))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.runroot);
    }
}

/// The shared libraries and the loader `ldd` resolves for `binary` (absolute paths).
fn linked_libraries(binary: &str) -> BTreeSet<String> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd runs");
    let listing = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return BTreeSet::new(); // a static binary
    }
    listing
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// Every file and symlink under `root` (relative paths with a leading `/`), with its size.
fn files(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .display()
                    .to_string();
                out.push((format!("/{rel}"), meta.len()));
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs `args` inside the image's filesystem as its user, with only the image's environment.
fn in_image(root: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new("chroot");
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg(format!("--userspec={NONROOT}"))
        .arg(root)
        .arg(KARP)
        .args(args);
    cmd.output().expect("chroot runs")
}

/// Removes the test's directory (image store, archive, filesystem) however the test ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn image_built_from_the_suite_binary_runs_karp_with_only_what_it_contains() {
    require_root_and_podman();
    let started = Instant::now();
    let version = env!("CARGO_PKG_VERSION");
    let binary = env!("CARGO_BIN_EXE_karp");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());

    // scripts/image with the suite's binary (no second build), its temporary store under `dir`.
    let archive = dir.join("karp.oci.tar");
    let printed = run(
        Command::new("bash")
            .arg(repo().join("scripts/image"))
            .arg("--binary")
            .arg(binary)
            .arg("--output")
            .arg(&archive)
            .env("TMPDIR", &dir),
        "scripts/image",
    );
    let reference = format!("ghcr.io/karp-autoscaler/karp:{version}");
    assert!(
        printed.contains(&format!("image    {reference} (version {version}")),
        "{printed}"
    );
    for how in [
        format!("skopeo copy oci-archive:{}", archive.display()),
        format!("podman load -i {}", archive.display()),
        format!("podman push {reference}"),
        "helm upgrade --install karp charts/karp".to_string(),
    ] {
        assert!(printed.contains(&how), "no {how:?} in:\n{printed}");
    }
    let built = started.elapsed();

    // The archive loads into a fresh store under the name the chart deploys by default.
    let podman = Podman::new(dir.join("podman"));
    let loaded = podman.run(&["load", "--input", archive.to_str().unwrap()]);
    assert!(loaded.contains(&reference), "{loaded}");
    let inspect: Value =
        serde_json::from_str(&podman.run(&["image", "inspect", &reference])).unwrap();
    let image = &inspect[0];
    let config = &image["Config"];
    assert_eq!(config["User"], NONROOT, "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!([KARP]), "{config}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/karp-autoscaler/karp"
    );
    assert_eq!(labels["org.opencontainers.image.title"], "karp");
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap_or_default();
    let head = run(
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(repo()),
        "git rev-parse",
    );
    assert!(revision.starts_with(head.trim()), "{revision} vs {head}");
    assert_eq!(
        image["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1),
        "one layer: {}",
        image["RootFS"]
    );
    let env: Vec<(String, String)> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let (k, v) = e.as_str()?.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    let image_size = image["Size"].as_u64().unwrap();

    // Its filesystem, exported from a container and unpacked.
    let id = podman.run(&["create", &reference]).trim().to_string();
    let root = dir.join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    let mut export = podman
        .cmd(&["export", &id])
        .stdout(Stdio::piped())
        .spawn()
        .expect("podman export");
    let untar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&root)
        .stdin(Stdio::from(export.stdout.take().unwrap()))
        .output()
        .expect("tar");
    let exported = export.wait().unwrap();
    assert!(
        exported.success() && untar.status.success(),
        "podman export | tar -x: {exported}, {}",
        text(&untar)
    );
    // The store is no longer needed: free its copies of the image before running anything.
    podman.run(&["rm", &id]);
    drop(podman);
    std::fs::remove_file(&archive).ok();

    // Exactly: the binary, what it links, the CA bundle, passwd / group / nsswitch.conf.
    let contents = files(&root);
    let names: BTreeSet<String> = contents.iter().map(|(n, _)| n.clone()).collect();
    let mut expected: BTreeSet<String> = linked_libraries(binary);
    assert!(
        expected.iter().any(|l| l.contains("libc.so")),
        "the suite's karp links glibc dynamically: {expected:?}"
    );
    for f in [
        KARP,
        "/etc/passwd",
        "/etc/group",
        "/etc/nsswitch.conf",
        "/etc/ssl/certs/ca-certificates.crt",
    ] {
        expected.insert(f.to_string());
    }
    assert_eq!(names, expected, "the image holds exactly these files");
    for absent in [
        "/bin/sh",
        "/usr/bin/sh",
        "/bin/bash",
        "/usr/bin/apt",
        "/usr/bin/dpkg",
    ] {
        assert!(!root.join(&absent[1..]).exists(), "{absent} in the image");
    }
    assert!(
        !root.join("var/lib/dpkg").exists(),
        "a package database in the image"
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("nonroot:x:65532:65532:"),
        "/etc/passwd: {passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.contains("nonroot:x:65532:"), "/etc/group: {group}");
    let bundle = std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 50,
        "the CA bundle holds the public roots"
    );
    let total: u64 = contents.iter().map(|(_, s)| s).sum();
    let karp_size = contents.iter().find(|(n, _)| n == KARP).unwrap().1;
    assert!(
        total - karp_size < MAX_BESIDES_BINARY,
        "besides the binary the image holds {} bytes: {contents:?}",
        total - karp_size
    );
    assert!(total < MAX_IMAGE, "the image holds {total} bytes");

    // karp runs there, as the image's user, with the image's environment only.
    let out = in_image(&root, &env, &["--version"]);
    assert!(out.status.success(), "karp --version: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("karp {version}")
    );
    copy_dir(&repo().join("examples"), &root.join("examples"));
    let plan = |solver: &str| -> Value {
        let out = in_image(
            &root,
            &env,
            &["plan", "-f", "/examples", "--solver", solver],
        );
        assert!(
            out.status.success(),
            "karp plan --solver {solver}: {}",
            text(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("karp plan is not JSON ({e}): {}", text(&out)))
    };
    let ffd = plan("ffd");
    // The same plan as the binary outside the image.
    let outside: Value = serde_json::from_str(&run(
        Command::new(binary)
            .args(["plan", "-f"])
            .arg(repo().join("examples")),
        "karp plan outside the image",
    ))
    .unwrap();
    assert!(
        !ffd["nodeclaims"].as_array().unwrap().is_empty(),
        "no nodeclaims: {ffd}"
    );
    assert_eq!(ffd["nodeclaims"], outside["nodeclaims"]);
    assert_eq!(ffd["cost"], outside["cost"]);
    let ffd_cost = ffd["cost"]["total_per_hour"].as_f64().unwrap();
    assert!(ffd_cost > 0.0, "{}", ffd["cost"]);
    // The MILP packer runs HiGHS, C++ through libstdc++: the copied C++ runtime works too.
    let milp = plan("milp");
    assert_eq!(milp["solver"]["name"], "milp");
    let milp_cost = milp["cost"]["total_per_hour"].as_f64().unwrap();
    assert!(
        milp_cost > 0.0 && milp_cost <= ffd_cost + 1e-9,
        "milp ${milp_cost}/h, ffd ${ffd_cost}/h"
    );

    println!(
        "image {reference}: {image_size} bytes (podman), {total} bytes of files, {karp_size} of \
         them the stripped binary; built in {:.1}s, whole test {:.1}s",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
