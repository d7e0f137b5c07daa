//! The real `kubectl` binary against the server on loopback: apply, get (JSON and tables), get -w,
//! scale and delete. Fails (never skips) when kubectl is missing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use karp_apiserver::{write_kubeconfig, ApiServer, Gvr};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: nginx:1.27
        resources:
          requests: {cpu: 250m, memory: 128Mi}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: nodepools.karpenter.sh
spec:
  group: karpenter.sh
  names: {kind: NodePool, listKind: NodePoolList, plural: nodepools, singular: nodepool, categories: [karpenter]}
  scope: Cluster
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: NodeClass, type: string, jsonPath: .spec.template.spec.nodeClassRef.name}
    - {name: Weight, type: integer, jsonPath: .spec.weight, priority: 1}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const NODEPOOL: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: default
spec:
  weight: 10
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
      - {key: karpenter.sh/capacity-type, operator: In, values: [spot, on-demand]}
"#;

/// A pool breaking one rule of the real CRD (a requirement on a restricted label).
const BAD_NODEPOOL: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: bad
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
      - {key: karpenter.sh/nodepool, operator: In, values: [a]}
"#;

/// A node class breaking two rules (no role or instanceProfile; a reserved tag).
const BAD_NODECLASS: &str = r#"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: bad
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  tags: {karpenter.sh/nodeclaim: x}
"#;

fn kubectl_binary() -> String {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    let ok = std::process::Command::new(&bin)
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "kubectl is required by this test and was not found (tried {bin:?}). Install it: \
         `curl -LO https://dl.k8s.io/release/v1.33.0/bin/linux/amd64/kubectl && install kubectl /usr/local/bin/` \
         (or `apt-get install kubectl` from the Kubernetes apt repository), or set KUBECTL=/path/to/kubectl"
    );
    bin
}

struct Kubectl {
    bin: String,
    dir: PathBuf,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .env("HOME", &self.dir)
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(Duration::from_secs(60), self.cmd(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {stderr}\n{stdout}"
        );
        stdout
    }

    /// Runs kubectl expecting it to fail: its stderr.
    async fn fail(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(Duration::from_secs(60), self.cmd(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "kubectl {args:?} succeeded: {stdout}"
        );
        stderr
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

/// A server on a loopback port and kubectl configured for it, in a directory named after `name`.
async fn serve(name: &str) -> (ApiServer, Kubectl) {
    let bin = kubectl_binary();
    let server = ApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener));
    let dir = std::env::temp_dir().join(format!("karp-apiserver-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_kubeconfig(&dir.join("kubeconfig"), &url).unwrap();
    (server, Kubectl { bin, dir })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_gets_watches_scales_and_deletes() {
    let (server, k) = serve("kubectl").await;
    let app = k.write("app.yaml", APP);
    let np = k.write("nodepool.yaml", NODEPOOL);

    // apply: create, then re-apply unchanged, then the custom object the CRD defines.
    let out = k.run(&["apply", "-f", &app]).await;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/nodepools.karpenter.sh created"
        ),
        "{out}"
    );
    let out = k.run(&["apply", "-f", &app]).await;
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    let out = k.run(&["apply", "-f", &np]).await;
    assert!(
        out.contains("nodepool.karpenter.sh/default created"),
        "{out}"
    );
    let stored = server
        .get(
            &Gvr::new("karpenter.sh", "v1", "nodepools"),
            None,
            "default",
        )
        .unwrap();
    assert_eq!(stored["spec"]["weight"], 10);

    // get: JSON lists and server-side tables (printer columns of the CRD).
    let out = k.run(&["get", "pods,deployments", "-o", "json"]).await;
    let list: Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["Deployment"]);
    assert_eq!(
        list["items"][0]["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    let out = k.run(&["get", "nodepools"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "NODECLASS", "READY"], "{out}");
    assert_eq!(lines[1], ["default", "default"], "{out}");
    let out = k.run(&["get", "nodepools", "-o", "wide"]).await;
    assert!(out.lines().next().unwrap().contains("WEIGHT"), "{out}");
    let out = k.run(&["get", "deploy", "web"]).await;
    assert!(out.starts_with("NAME") && out.contains("web"), "{out}");
    let out = k
        .run(&[
            "get",
            "crd",
            "nodepools.karpenter.sh",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ])
        .await;
    assert_eq!(out, "True");

    // scale through the scale subresource.
    let out = k.run(&["scale", "deployment", "web", "--replicas=3"]).await;
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let d = server
        .get(
            &Gvr::new("apps", "v1", "deployments"),
            Some("default"),
            "web",
        )
        .unwrap();
    assert_eq!(d["spec"]["replicas"], 3);

    // get -w prints objects as they change.
    let mut watch = k
        .cmd(&["get", "configmaps", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server
        .apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {a: b}\n")
        .unwrap();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(l) if l.starts_with("watched") => return l,
                Some(_) => continue,
                None => panic!("kubectl get -w ended"),
            }
        }
    })
    .await
    .expect("kubectl get -w shows the new configmap");
    assert!(line.starts_with("watched"), "{line}");
    watch.kill().await.unwrap();

    // delete -f removes the custom object, the deployment and the CRD (which unregisters NodePool).
    let out = k.run(&["delete", "-f", &np]).await;
    assert!(
        out.contains("nodepool.karpenter.sh \"default\" deleted"),
        "{out}"
    );
    let out = k.run(&["delete", "-f", &app]).await;
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    assert!(server
        .get(
            &Gvr::new("apps", "v1", "deployments"),
            Some("default"),
            "web"
        )
        .is_none());
    assert!(server
        .get(
            &Gvr::new("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
            None,
            "nodepools.karpenter.sh"
        )
        .is_none());
    let out = k.run(&["api-resources", "--api-group=karpenter.sh"]).await;
    assert!(!out.contains("nodepools"), "{out}");
    let _ = std::fs::remove_dir_all(&k.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_is_refused_with_the_crd_rules_message() {
    let (server, k) = serve("kubectl-cel").await;
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/karp/crds");
    let out = k.run(&["apply", "-f", crds]).await;
    assert!(out.contains("nodepools.karpenter.sh created"), "{out}");

    // The valid pool is created; the invalid one is refused with kube's message.
    let np = k.write("nodepool.yaml", NODEPOOL);
    let out = k.run(&["apply", "-f", &np]).await;
    assert!(
        out.contains("nodepool.karpenter.sh/default created"),
        "{out}"
    );
    let bad = k.write("bad-nodepool.yaml", BAD_NODEPOOL);
    let err = k.fail(&["apply", "-f", &bad]).await;
    assert!(
        err.contains(r#"The NodePool "bad" is invalid: spec.template.spec.requirements[0].key: Invalid value: "string": label "karpenter.sh/nodepool" is restricted"#),
        "{err}"
    );
    assert!(server
        .get(&Gvr::new("karpenter.sh", "v1", "nodepools"), None, "bad")
        .is_none());

    // A transition rule on update (kubectl apply patches the existing pool).
    let moved = k.write(
        "moved.yaml",
        &NODEPOOL.replace("group: karpenter.k8s.aws", "group: example.com"),
    );
    let err = k.fail(&["apply", "-f", &moved]).await;
    assert!(
        err.contains(r#"The NodePool "default" is invalid: spec.template.spec.nodeClassRef: Invalid value: "object": nodeClassRef.group is immutable"#),
        "{err}"
    );

    // Several broken rules are listed one per line.
    let bad = k.write("bad-nodeclass.yaml", BAD_NODECLASS);
    let err = k.fail(&["create", "-f", &bad]).await;
    assert!(
        err.contains(r#"The EC2NodeClass "bad" is invalid: "#)
            && err.contains(r#"* spec: Invalid value: "object": must specify exactly one of ['role', 'instanceProfile']"#)
            && err.contains(r#"* spec.tags: Invalid value: "object": tag contains a restricted tag matching karpenter.sh/nodeclaim"#),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&k.dir);
}

/// `want` is contained in `got`: every field `want` sets has the same value in `got` (the server
/// may add fields); a `null` (Go's zero time) or `{}` in `want` may be absent, and the top-level
/// `status` is the server's.
fn contained(want: &Value, got: &Value, path: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Null, _) => Ok(()),
        (Value::Object(w), Value::Object(g)) => w.iter().try_for_each(|(k, v)| {
            let at = format!("{path}.{k}");
            let empty = v.is_null() || v.as_object().is_some_and(|o| o.is_empty());
            match g.get(k) {
                _ if at == ".status" => Ok(()),
                Some(gv) => contained(v, gv, &at),
                None if empty => Ok(()),
                None => Err(format!("{at} is missing (want {v})")),
            }
        }),
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .try_for_each(|(i, (a, b))| contained(a, b, &format!("{path}[{i}]"))),
        _ if want == got => Ok(()),
        _ => Err(format!("{path}: want {want}, got {got}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_sends_protobuf_and_the_server_stores_what_kubectl_meant() {
    let (server, k) = serve("kubectl-pb").await;

    // kubectl's typed clients send protobuf: the first create says so in its request log.
    let log = k
        .cmd(&["create", "namespace", "team-a", "-v=8"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&log.stderr);
    assert!(log.status.success(), "{stderr}");
    assert!(
        stderr.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl create no longer sends protobuf, so this test checks nothing: {stderr}"
    );

    // A secret's bytes need not be text.
    let key = k.dir.join("key.bin");
    std::fs::write(&key, b"\x00\xffkey").unwrap();
    let binary = format!("--from-file=key={}", key.display());
    // Each create: what kubectl means (its client-side dry run, as JSON) is what the server
    // stores from the protobuf body.
    let creates: &[(&[&str], &str, &str)] = &[
        (&["create", "namespace", "team-b"], "namespace", "team-b"),
        (
            &[
                "create",
                "deployment",
                "web",
                "--image=nginx:1.27",
                "--replicas=3",
                "--port=8080",
                "-n",
                "team-a",
            ],
            "deployment",
            "web",
        ),
        (
            &[
                "create",
                "configmap",
                "cfg",
                "--from-literal=a=b",
                "--from-literal=empty=",
                "-n",
                "team-a",
            ],
            "configmap",
            "cfg",
        ),
        (
            &[
                "create",
                "secret",
                "generic",
                "s",
                "--from-literal=k=v",
                &binary,
                "-n",
                "team-a",
            ],
            "secret",
            "s",
        ),
        (
            &[
                "create",
                "job",
                "j",
                "--image=busybox",
                "-n",
                "team-a",
                "--",
                "sleep",
                "5",
            ],
            "job",
            "j",
        ),
        (
            &[
                "create",
                "cronjob",
                "cj",
                "--image=busybox",
                "--schedule=*/5 * * * *",
                "-n",
                "team-a",
            ],
            "cronjob",
            "cj",
        ),
        (
            &[
                "create",
                "poddisruptionbudget",
                "pdb",
                "--selector=app=web",
                "--min-available=50%",
                "-n",
                "team-a",
            ],
            "pdb",
            "pdb",
        ),
        (
            &[
                "create",
                "service",
                "clusterip",
                "svc",
                "--tcp=80:8080",
                "-n",
                "team-a",
            ],
            "service",
            "svc",
        ),
        (
            &["create", "serviceaccount", "sa", "-n", "team-a"],
            "serviceaccount",
            "sa",
        ),
        (
            &[
                "create",
                "role",
                "reader",
                "--verb=get,list",
                "--resource=pods",
                "-n",
                "team-a",
            ],
            "role",
            "reader",
        ),
    ];
    for (args, kind, name) in creates {
        // The flags go before a `--` (after it they would be the container's arguments).
        let mut dry = args.to_vec();
        let at = dry.iter().position(|a| *a == "--").unwrap_or(dry.len());
        dry.splice(at..at, ["--dry-run=client", "-o", "json"]);
        let want: Value = serde_json::from_str(&k.run(&dry).await).unwrap();
        k.run(args).await;
        let mut get = vec!["get", kind, name, "-o", "json"];
        if args.contains(&"-n") {
            get.extend(["-n", "team-a"]);
        }
        let got: Value = serde_json::from_str(&k.run(&get).await).unwrap();
        if let Err(e) = contained(&want, &got, "") {
            panic!("kubectl {args:?}: {e}\nwant {want:#}\ngot {got:#}");
        }
    }
    // The server holds the Deployment as it holds an applied one.
    let d = server
        .get(
            &Gvr::new("apps", "v1", "deployments"),
            Some("team-a"),
            "web",
        )
        .expect("the created Deployment is stored");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    let _ = std::fs::remove_dir_all(&k.dir);
}
