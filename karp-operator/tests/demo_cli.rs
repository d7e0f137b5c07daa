//! `karp demo` and `karp cluster` end to end: the built binary, as a user runs it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .display()
        .to_string()
}

#[test]
fn demo_scales_up_removes_a_node_consolidates_the_scale_down_and_summarizes() {
    let out = Command::new(env!("CARGO_BIN_EXE_karp"))
        .args(["demo", "-f", &examples(), "--solver", "milp"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("scale-up:"), "{stdout}");
    // The MILP's scale-up costs less than FFD's plan of the same pods, and the summary says so.
    let solver = stdout
        .lines()
        .find(|l| l.contains("solver milp: scale-up at"))
        .unwrap_or_else(|| panic!("no solver line:\n{stdout}"));
    let dollars: Vec<f64> = solver
        .split('$')
        .skip(1)
        .filter_map(|t| t.split('/').next()?.parse().ok())
        .collect();
    assert!(
        dollars.len() == 2 && dollars[0] < dollars[1] && solver.contains("% less"),
        "{solver}"
    );
    assert!(stdout.contains("removing node"), "{stdout}");
    assert!(stdout.contains("summary:"), "{stdout}");
    // Every pod of the examples ends up running.
    let last = stdout
        .lines()
        .rfind(|l| l.contains("pending pods"))
        .unwrap()
        .to_string();
    assert!(last.contains("pending pods   0"), "{last}");
    assert!(stdout.contains("instances launched"), "{stdout}");
    // The scale-down is consolidated and the cost falls.
    let line = stdout
        .lines()
        .find(|l| l.contains("scale-down to"))
        .unwrap_or_else(|| panic!("no consolidation summary:\n{stdout}"));
    assert!(line.contains("consolidation ran"), "{line}");
    let dollars: Vec<f64> = line
        .split('$')
        .skip(1)
        .filter_map(|t| t.split('/').next()?.parse().ok())
        .collect();
    assert!(dollars.len() >= 2 && dollars[1] < dollars[0], "{line}");
}

#[test]
fn demo_rejects_a_malformed_feature_gate_with_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_karp"))
        .args([
            "demo",
            "-f",
            &examples(),
            "--feature-gates",
            "SpotToSpotConsolidation",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--feature-gates"), "{stderr}");
}

#[test]
fn demo_with_a_bad_path_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_karp"))
        .args(["demo", "-f", "/nonexistent/karp-examples"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/karp-examples"), "{stderr}");
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("running {kubectl} failed ({e}): install kubectl (https://kubernetes.io/docs/tasks/tools/) or set KUBECTL")
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The body of `GET path` on a loopback port (HTTP/1.0, whole answer).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn karp_cluster_serves_kubectl_and_provisions_for_applied_workloads() {
    let dir = std::env::temp_dir().join(format!("karp-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_karp"))
        .args([
            "cluster",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("serving"), "{line}");
    // Everything else it prints (status lines on stdout, controller logs on stderr), collected.
    let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    for (stream, sink) in [
        (Box::new(stdout) as Box<dyn BufRead + Send>, printed.clone()),
        (
            Box::new(BufReader::new(child.stderr.take().unwrap())),
            logs.clone(),
        ),
    ] {
        std::thread::spawn(move || {
            for l in stream.lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
    }
    // The kubeconfig holds this run's bearer token and only its owner may read it.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "kubeconfig mode {mode:o}");
        assert!(std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .contains("token: "));
    }
    // Without the token, or as a web page would post, the API refuses.
    // kubectl trusts the run's certificate and sends the token; without the token it is refused.
    let (ok, text) = kubectl(
        &kubeconfig,
        &["get", "--raw", "/api/v1/namespaces/default/pods"],
    );
    assert!(ok, "{text}");
    let anonymous = dir.join("anonymous.kubeconfig");
    let wrong_token: String = std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .lines()
        .map(|l| {
            if l.trim().starts_with("token:") {
                "    token: not-the-token\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&anonymous, wrong_token).unwrap();
    let (ok, text) = kubectl(
        &anonymous,
        &["get", "--raw", "/api/v1/namespaces/default/pods"],
    );
    assert!(!ok && text.contains("bearer token is required"), "{text}");
    let examples = examples();
    let (ok, text) = kubectl(&kubeconfig, &["apply", "-f", &format!("{examples}/seed")]);
    assert!(ok, "{text}");
    let (ok, text) = kubectl(
        &kubeconfig,
        &["apply", "-f", &format!("{examples}/workloads/inflate.yaml")],
    );
    assert!(ok, "{text}");
    let start = Instant::now();
    loop {
        let (ok, text) = kubectl(
            &kubeconfig,
            &[
                "get",
                "pods",
                "-l",
                "app=inflate",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ],
        );
        if ok && text.split_whitespace().filter(|p| *p == "Running").count() == 10 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pods never ran: {text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, text) = kubectl(&kubeconfig, &["get", "nodeclaims"]);
    assert!(ok && text.contains("karpenter-nodepool-"), "{text}");
    // The printer columns read labels through escaped dots: TYPE and CAPACITY are filled.
    let row = text
        .lines()
        .find(|l| l.starts_with("karpenter-nodepool-"))
        .unwrap_or_default();
    assert!(
        row.contains("spot") && row.split_whitespace().any(|c| c.contains('.')),
        "{text}"
    );
    let (ok, text) = kubectl(&kubeconfig, &["get", "nodes", "-o", "name"]);
    assert!(ok && text.contains("node/ip-10-"), "{text}");
    // Status lines as the cluster changed, controller logs, and the operator's metrics.
    std::thread::sleep(Duration::from_millis(1500));
    let status = printed.lock().unwrap().clone();
    assert!(
        status.contains("metrics: http://127.0.0.1:") && status.contains("running  10/10"),
        "{status}"
    );
    let log = logs.lock().unwrap().clone();
    assert!(
        log.contains("created NodeClaim") && log.contains("INFO"),
        "{log}"
    );
    let metrics = http_get(metrics_port, "/metrics");
    assert!(
        metrics.contains("karpenter_nodeclaims_created_total"),
        "{metrics}"
    );
    // karp records Events through events.k8s.io/v1; kubectl reads core/v1 Events: one resource.
    let (ok, text) = kubectl(&kubeconfig, &["get", "events", "-A"]);
    assert!(
        ok && text.contains("LAST SEEN")
            && text.contains("Nominated")
            && text.contains("Pod should schedule on: nodeclaim/karpenter-nodepool-"),
        "{text}"
    );
    let (ok, text) = kubectl(
        &kubeconfig,
        &[
            "get",
            "events.v1.events.k8s.io",
            "-A",
            "-o",
            "jsonpath={.items[*].note}",
        ],
    );
    assert!(ok && text.contains("Pod should schedule on"), "{text}");
    let (ok, pod) = kubectl(
        &kubeconfig,
        &[
            "get",
            "pods",
            "-l",
            "app=inflate",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    assert!(ok, "{pod}");
    let (ok, text) = kubectl(&kubeconfig, &["describe", "pod", pod.trim()]);
    assert!(
        ok && text.contains("Events:") && text.contains("Nominated"),
        "{text}"
    );
    let (ok, claim) = kubectl(
        &kubeconfig,
        &[
            "get",
            "nodeclaims",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    assert!(ok, "{claim}");
    let (ok, text) = kubectl(&kubeconfig, &["describe", "nodeclaim", claim.trim()]);
    assert!(
        ok && text.contains("Events:") && text.contains("Nominated"),
        "{text}"
    );
    // Scale down to 0 and delete the claims: nodes drain and go.
    let (ok, text) = kubectl(
        &kubeconfig,
        &["scale", "deployment", "inflate", "--replicas=0"],
    );
    assert!(ok, "{text}");
    let (ok, text) = kubectl(&kubeconfig, &["delete", "nodeclaims", "--all"]);
    assert!(ok, "{text}");
    let start = Instant::now();
    loop {
        let (ok, text) = kubectl(&kubeconfig, &["get", "nodes", "-o", "name"]);
        if ok && text.trim().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nodes never went: {text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Every example workload applies as a folder, as a user would (namespaces first).
    let (ok, text) = kubectl(
        &kubeconfig,
        &["apply", "-f", &format!("{examples}/workloads")],
    );
    assert!(ok, "{text}");
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn karp_cluster_on_karp_aws_and_moto_provisions_ec2_nodes() {
    let dir = std::env::temp_dir().join(format!("karp-cluster-aws-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_karp"))
        .args([
            "cluster",
            "--cloud",
            "aws",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .env_remove("AWS_ACCESS_KEY_ID")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("karp-aws on http://127.0.0.1:"), "{line}");
    // The README's example as a user applies it: examples/seed (discovery tag my-cluster, the
    // self-seeded moto account's name) and the workloads, namespaces first.
    let (ok, text) = kubectl(
        &kubeconfig,
        &["apply", "-f", &format!("{}/seed", examples())],
    );
    assert!(ok, "{text}");
    let (ok, text) = kubectl(
        &kubeconfig,
        &["apply", "-f", &format!("{}/workloads", examples())],
    );
    assert!(ok, "{text}");
    let (ok, text) = kubectl(
        &kubeconfig,
        &["scale", "deployment", "inflate", "--replicas=3"],
    );
    assert!(ok, "{text}");
    let start = Instant::now();
    loop {
        let (ok, text) = kubectl(
            &kubeconfig,
            &[
                "get",
                "pods",
                "-l",
                "app=inflate",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ],
        );
        let phases: Vec<&str> = text.split_whitespace().collect();
        if ok && phases.len() == 3 && phases.iter().all(|p| *p == "Running") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "pods never ran: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, text) = kubectl(
        &kubeconfig,
        &["get", "nodes", "-o", "jsonpath={.items[*].spec.providerID}"],
    );
    assert!(ok && text.contains("aws:///us-east-1"), "{text}");
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn karp_cluster_refuses_a_non_loopback_address_without_allow_remote() {
    let out = Command::new(env!("CARGO_BIN_EXE_karp"))
        .args([
            "cluster",
            "--listen",
            "0.0.0.0:0",
            "--kubeconfig",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-remote"), "{err}");
}
