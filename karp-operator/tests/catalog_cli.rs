//! `karp catalog` end to end: the built binary against moto_server's EC2 API, and its output fed
//! to `karp plan --catalog`.

use std::path::Path;
use std::process::Command;

use karp_aws::moto::MotoServer;

fn karp(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_karp"))
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run karp");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn catalog_from_the_ec2_api_feeds_karp_plan() {
    let moto = MotoServer::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("karp-catalog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("catalog.json");
    let url = moto.url();
    let (code, _, stderr) = karp(&[
        "catalog",
        "--region",
        "us-east-1",
        "--endpoint-url",
        &url,
        "--zone",
        "us-east-1a",
        "--zone",
        "us-east-1b",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let types = json["instance_types"].as_array().unwrap();
    assert!(types.len() > 700, "{} types", types.len());
    let m5 = types.iter().find(|t| t["name"] == "m5.large").unwrap();
    assert_eq!(m5["capacity"]["pods"], "29");
    let zones: Vec<&str> = m5["offerings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["zone"].as_str().unwrap())
        .collect();
    assert!(
        zones
            .iter()
            .all(|z| *z == "us-east-1a" || *z == "us-east-1b"),
        "{zones:?}"
    );
    assert!(stderr.contains("instance types"), "{stderr}");

    // The file drives a plan.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (code, stdout, stderr) = karp(&[
        "plan",
        "-f",
        examples.to_str().unwrap(),
        "--catalog",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let claims = plan["nodeclaims"].as_array().unwrap();
    assert!(!claims.is_empty());
    for c in claims {
        let z = c["zone"].as_str().unwrap();
        assert!(z == "us-east-1a" || z == "us-east-1b", "{z}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unreachable_endpoint_fails_naming_the_call() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, _, stderr) = karp(&["catalog", "--region", "us-east-1", "--endpoint-url", &url]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("DescribeInstanceTypes failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn imds_monitor_flags_are_checked_before_anything_runs() {
    for (flag, value) in [
        ("--taint-effect", "Sometimes"),
        ("--poll-interval", "soon"),
        ("--poll-interval", "0s"),
        ("--imds-endpoint", "not a url"),
    ] {
        let (code, _, stderr) = karp(&["imds-monitor", "--node-name", "n1", flag, value]);
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    let (code, _, stderr) = karp(&[
        "imds-monitor",
        "--node-name",
        "n1",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
}

#[test]
fn cluster_interruption_flags_need_the_aws_cloud() {
    let (code, _, stderr) = karp(&["cluster", "--interruption-queue", "q"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--cloud aws"), "{stderr}");
}
