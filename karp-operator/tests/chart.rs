//! `charts/karp` rendered with its default values (karp's renderer for the chart's template
//! subset) and applied with the real kubectl to the embedded API server.

use std::path::Path;
use std::process::Command;

#[path = "support/chart.rs"]
mod chart_render;

use chart_render::{render, Release};

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("running {kubectl} failed ({e}): install kubectl (https://kubernetes.io/docs/tasks/tools/) or set KUBECTL")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {args:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_chart_renders_and_applies_with_kubectl() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/karp");
    let release = Release {
        name: "karp".into(),
        namespace: "karp".into(),
    };
    let rendered = render(&chart, &release, None).unwrap();
    let mut all = String::new();
    let mut kinds = Vec::new();
    for (file, text) in &rendered {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}\n{text}", file.display()));
            if v.is_null() {
                continue;
            }
            kinds.push(v["kind"].as_str().unwrap().to_string());
        }
        all.push_str(text);
        all.push_str("\n---\n");
    }
    kinds.sort();
    // The disruption settings reach the operator as Karpenter's environment variables.
    assert!(
        all.contains("value: \"SpotToSpotConsolidation=false\""),
        "{all}"
    );
    assert!(all.contains("name: CONSOLIDATION_MODE"), "{all}");
    assert!(all.contains("value: \"milp\""), "{all}");
    assert!(all.contains("name: LAUNCH_PRICE_MARGIN"), "{all}");
    assert_eq!(
        kinds,
        vec![
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );

    let server = karp_apiserver::ApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener));
    let dir = std::env::temp_dir().join(format!("karp-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    karp_apiserver::write_kubeconfig(&kubeconfig, &url).unwrap();
    let manifest = dir.join("karp.yaml");
    std::fs::write(&manifest, &all).unwrap();
    let kc = kubeconfig.clone();
    let crds = chart.join("crds");
    tokio::task::spawn_blocking(move || {
        kubectl(&kc, &["apply", "-f", crds.to_str().unwrap()]);
        // As `helm install --create-namespace` would.
        let ns_file = kc.with_file_name("namespace.yaml");
        std::fs::write(
            &ns_file,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: karp}\n",
        )
        .unwrap();
        kubectl(&kc, &["apply", "-f", ns_file.to_str().unwrap()]);
        kubectl(&kc, &["apply", "-f", manifest.to_str().unwrap()]);
        let deploy = kubectl(
            &kc,
            &["get", "deployment", "karp", "-n", "karp", "-o", "json"],
        );
        let d: serde_json::Value = serde_json::from_str(&deploy).unwrap();
        assert_eq!(d["spec"]["replicas"], 2);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["priorityClassName"], "system-cluster-critical");
        assert_eq!(pod["serviceAccountName"], "karp");
        let args: Vec<&str> = pod["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.contains(&"run") && args.contains(&"--leader-elect=true"),
            "{args:?}"
        );
        assert_eq!(
            pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchExpressions"][0]["operator"],
            "DoesNotExist"
        );
        let names = kubectl(
            &kc,
            &["get", "clusterrole,clusterrolebinding", "-o", "name"],
        );
        assert!(
            names.contains("clusterrole.rbac.authorization.k8s.io/karp"),
            "{names}"
        );
        let ns = kubectl(
            &kc,
            &[
                "get",
                "role,rolebinding,serviceaccount,service,pdb",
                "-n",
                "karp",
                "-o",
                "name",
            ],
        );
        for want in [
            "role.rbac.authorization.k8s.io/karp",
            "serviceaccount/karp",
            "service/karp",
            "poddisruptionbudget.policy/karp",
        ] {
            assert!(ns.contains(want), "{want} missing in {ns}");
        }
        let crds = kubectl(&kc, &["get", "crd", "-o", "name"]);
        assert!(crds.contains("nodepools.karpenter.sh"), "{crds}");
    })
    .await
    .unwrap();

    // The ServiceMonitor is optional.
    let overrides: serde_yaml::Value =
        serde_yaml::from_str("serviceMonitor: {enabled: true}").unwrap();
    let with_sm = render(&chart, &release, Some(&overrides)).unwrap();
    assert!(with_sm
        .iter()
        .any(|(_, t)| t.contains("kind: ServiceMonitor")));
    std::fs::remove_dir_all(&dir).ok();
}

/// The Deployment of `charts/karp` rendered with `overrides` (YAML), as parsed YAML.
fn deployment(overrides: Option<&str>) -> serde_yaml::Value {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/karp");
    let release = Release {
        name: "karp".into(),
        namespace: "karp".into(),
    };
    let overrides: Option<serde_yaml::Value> = overrides.map(|o| serde_yaml::from_str(o).unwrap());
    let rendered = render(&chart, &release, overrides.as_ref()).unwrap();
    let (file, text) = rendered
        .iter()
        .find(|(f, _)| f.ends_with("deployment.yaml"))
        .expect("templates/deployment.yaml");
    serde_yaml::from_str(text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}\n{text}", file.display()))
}

#[test]
fn chart_app_version_is_the_workspace_version() {
    // Cargo.toml's [workspace.package] version is the one place the version is decided; the
    // chart's appVersion mirrors it because it is the image tag the chart deploys by default and
    // the tag `scripts/image` gives the image.
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/karp/Chart.yaml");
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&chart).unwrap()).unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "set charts/karp/Chart.yaml appVersion to the workspace version"
    );
}

#[test]
fn image_is_the_app_version_by_default_a_chosen_tag_or_a_pinned_digest() {
    let image = |overrides: Option<&str>| {
        let d = deployment(overrides);
        let pod = &d["spec"]["template"]["spec"];
        (
            pod["containers"][0]["image"].as_str().unwrap().to_string(),
            pod["imagePullSecrets"].clone(),
        )
    };
    let (default, secrets) = image(None);
    assert_eq!(
        default,
        format!("ghcr.io/karp-autoscaler/karp:{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(secrets.is_null(), "no pull secrets by default: {secrets:?}");
    let (tagged, _) = image(Some(
        "image: {repository: registry.example.com/platform/karp, tag: 0.1.0-abc1234}",
    ));
    assert_eq!(tagged, "registry.example.com/platform/karp:0.1.0-abc1234");
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (pinned, secrets) = image(Some(&format!(
        "{{image: {{repository: registry.example.com/platform/karp, tag: ignored, digest: \"{digest}\"}}, imagePullSecrets: [{{name: regcred}}]}}"
    )));
    assert_eq!(
        pinned,
        format!("registry.example.com/platform/karp@{digest}")
    );
    assert_eq!(secrets[0]["name"], "regcred", "{secrets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_optional_imds_monitor_daemonset_applies_with_least_privilege() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/karp");
    let release = Release {
        name: "karp".into(),
        namespace: "karp".into(),
    };
    let off = render(&chart, &release, None).unwrap();
    assert!(
        !off.iter().any(|(_, t)| t.contains("kind: DaemonSet")),
        "off by default"
    );
    let overrides: serde_yaml::Value =
        serde_yaml::from_str("imdsMonitor: {enabled: true, enableRebalanceDraining: true}")
            .unwrap();
    let rendered = render(&chart, &release, Some(&overrides)).unwrap();
    let (_, text) = rendered
        .iter()
        .find(|(f, _)| f.ends_with("imds-monitor.yaml"))
        .expect("templates/imds-monitor.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet"
        ]
    );
    // Least privilege: the node (get, patch), pods (list), evictions and events; nothing else.
    let rules = serde_json::to_value(&docs[1]["rules"]).unwrap();
    assert_eq!(
        rules,
        serde_json::json!([
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
        ])
    );
    let pod = &docs[3]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], serde_yaml::Value::Bool(false));
    assert_eq!(pod["tolerations"][0]["operator"].as_str(), Some("Exists"));
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        Some("karp-imds-monitor")
    );
    let c = &pod["containers"][0];
    assert_eq!(c["args"][0].as_str(), Some("imds-monitor"));
    let env = |name: &str| {
        c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} not set"))
    };
    assert_eq!(
        env("NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("spec.nodeName")
    );
    assert_eq!(
        env("ENABLE_REBALANCE_DRAINING")["value"].as_str(),
        Some("true")
    );
    assert_eq!(
        env("ENABLE_SPOT_INTERRUPTION_DRAINING")["value"].as_str(),
        Some("true")
    );

    // The objects apply to an API server with the real kubectl.
    let server = karp_apiserver::ApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener));
    let dir = std::env::temp_dir().join(format!("karp-chart-imds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    karp_apiserver::write_kubeconfig(&kubeconfig, &url).unwrap();
    let manifest = dir.join("imds.yaml");
    std::fs::write(
        &manifest,
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: karp}}\n---\n{text}"),
    )
    .unwrap();
    tokio::task::spawn_blocking(move || {
        kubectl(&kubeconfig, &["apply", "-f", manifest.to_str().unwrap()]);
        let ds = kubectl(
            &kubeconfig,
            &[
                "get",
                "daemonset",
                "karp-imds-monitor",
                "-n",
                "karp",
                "-o",
                "json",
            ],
        );
        let d: serde_json::Value = serde_json::from_str(&ds).unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["args"][0],
            "imds-monitor"
        );
        std::fs::remove_dir_all(&dir).ok();
    })
    .await
    .unwrap();
}
