//! `karp run` end to end with karp-aws on moto_server: the built binary, a real HTTP Kubernetes API
//! (karp-apiserver on loopback) and the real EC2 API of moto. A pending pod gets a NodeClaim, the
//! NodeClaim an EC2 instance launched through CreateFleet, the EC2NodeClass a Ready status; deleting
//! the NodeClaim terminates the instance. (moto runs no kubelet, so nodes never register here; the
//! registration path is covered on the simulated cloud.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Filter;
use karp_apiserver::{ApiServer, Gvr};
use karp_aws::moto::MotoServer;
use karp_aws::{AwsClients, AwsSettings};

const CLUSTER: &str = "runaws";

mod common;

fn manifests() -> String {
    common::aws_pool(CLUSTER)
        + "---\n"
        + r"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  containers:
    - name: c
      image: pause
      resources: {requests: {cpu: '1', memory: 1Gi}}
status:
  phase: Pending
  conditions:
    - {type: PodScheduled, status: 'False', reason: Unschedulable, message: no nodes}
"
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn karp_run_launches_and_terminates_ec2_instances_on_moto() {
    let moto = MotoServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut aws = AwsSettings::for_moto("us-east-1", CLUSTER, &moto.url());
    aws.ssm_parameter_prefix = format!("/karp-test/{CLUSTER}");
    let clients = AwsClients::load(&aws).await;
    karp_aws::moto::seed_cluster(&clients, &aws, 21)
        .await
        .unwrap();

    let server = ApiServer::new();
    karp_operator::embedded::install_crds(&server).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener));
    let dir = std::env::temp_dir().join(format!("karp-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    karp_apiserver::write_kubeconfig(&kubeconfig, &url).unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());

    let _karp = Kill(
        Command::new(env!("CARGO_BIN_EXE_karp"))
            .args(["run", "--kubeconfig"])
            .arg(&kubeconfig)
            .args([
                "--cluster-name",
                CLUSTER,
                "--endpoint-url",
                &moto.url(),
                "--ssm-parameter-prefix",
                &aws.ssm_parameter_prefix,
                "--metrics-addr",
                &metrics_addr,
                "--namespace",
                "default",
                "--log-format",
                "json",
            ])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env("RUST_LOG", "info,kube_runtime=debug,karp_operator=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("karp.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    server.apply_yaml(&manifests()).unwrap();

    let claims = Gvr::new("karpenter.sh", "v1", "nodeclaims");
    let start = Instant::now();
    let (claim_name, provider_id) = loop {
        let launched = server.list(&claims, None).into_iter().find_map(|c| {
            let p = c.pointer("/status/providerID")?.as_str()?.to_string();
            Some((c.pointer("/metadata/name")?.as_str()?.to_string(), p))
        });
        if let Some(l) = launched {
            break l;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(dir.join("karp.log")).unwrap_or_default();
            let tail: String = log
                .chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!("no NodeClaim launched; karp's log:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(provider_id.starts_with("aws:///us-east-1"), "{provider_id}");
    let instance_id = provider_id.rsplit('/').next().unwrap().to_string();
    let out = clients
        .ec2
        .describe_instances()
        .instance_ids(&instance_id)
        .send()
        .await
        .unwrap();
    let inst = &out.reservations()[0].instances()[0];
    assert_eq!(inst.instance_type().map(|t| t.as_str()), Some("m5.large"));
    let tag = |k: &str| karp_aws::describe::tag(inst.tags(), k).map(str::to_string);
    assert_eq!(tag("karpenter.sh/nodeclaim"), Some(claim_name.clone()));
    assert_eq!(
        tag(&format!("kubernetes.io/cluster/{CLUSTER}")).as_deref(),
        Some("owned")
    );

    // The EC2NodeClass status was resolved against moto.
    let nc = server
        .get(
            &Gvr::new("karpenter.k8s.aws", "v1", "ec2nodeclasses"),
            None,
            "default",
        )
        .unwrap();
    let ready = nc["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "True", "{nc}");
    assert_eq!(nc["status"]["subnets"].as_array().unwrap().len(), 3);

    // Metrics and probes.
    let metrics = http_get(&metrics_addr, "/metrics").unwrap();
    assert!(
        metrics.contains("karpenter_nodeclaims_created_total"),
        "{metrics}"
    );
    assert!(http_get(&metrics_addr, "/healthz")
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    // Deleting the NodeClaim terminates the instance and removes the claim.
    server.delete(&claims, None, &claim_name).unwrap();
    let start = Instant::now();
    loop {
        let gone = server.get(&claims, None, &claim_name).is_none();
        let state = clients
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-id")
                    .values(&instance_id)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
            })
            .next();
        if gone && matches!(state.as_deref(), Some("terminated" | "shutting-down")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "claim gone={gone}, instance state={state:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_dir_all(&dir).ok();
}
