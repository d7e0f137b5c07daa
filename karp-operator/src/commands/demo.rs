//! `karp demo` and `karp cluster`: the embedded cluster in the foreground.
//!
//! `karp demo` applies `examples/` (the seed NodePool / EC2NodeClass and the workloads), shows the
//! scale-up (pending pods, NodeClaims, nodes, cost per hour) while the real controllers work,
//! then removes the busiest node (drain, pods placed again), scales the Deployments down to a
//! third and lets the disruption controller consolidate (the operator's clock advanced so
//! `consolidateAfter` passes in seconds), and ends with a summary: what was consolidated and the
//! cost per hour before and after.
//! `karp cluster` serves the embedded cluster on a loopback port with a kubeconfig for kubectl.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};

use crate::api::nodeclaim::NodeClaim;
use crate::controllers::disruption::DisruptionControl;
use crate::controllers::provisioner::{Solver, SolverSettings};
use crate::embedded::{ClusterControl, EmbeddedCluster, EmbeddedOptions};

/// Errors of `karp demo` / `karp cluster`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Reading the manifests failed.
    #[error("{path}: {reason}")]
    ReadManifests {
        /// The file or folder.
        path: String,
        /// Why.
        reason: String,
    },
    /// The API server refused a manifest.
    #[error("{path}: {reason}")]
    ApplyManifest {
        /// The file.
        path: String,
        /// The server's message.
        reason: String,
    },
    /// The cluster could not start.
    #[error("starting the embedded cluster: {0}")]
    Start(String),
    /// The cluster did not reach the expected state in time.
    #[error("{0}")]
    Timeout(String),
    /// Binding or serving failed.
    #[error("serving the API: {0}")]
    Serve(String),
    /// `--listen` is not a loopback address and `--allow-remote` was not given.
    #[error("--listen {0}: not a loopback address; the cluster would be reachable from other machines (pass --allow-remote to serve it there, with the token of the written kubeconfig)")]
    RemoteListen(String),
}

/// The controller choices of `karp demo` and `karp cluster` (their `--solver` and disruption
/// flags).
#[derive(Debug, Clone, Default)]
pub struct Choices {
    /// The disruption controller.
    pub disruption: DisruptionControl,
    /// How provisioning packs batches.
    pub solver: SolverSettings,
}

impl Choices {
    fn apply(self, options: &mut EmbeddedOptions) {
        options.operator.disruption = self.disruption;
        options.operator.solver = self.solver;
    }
}

/// A fresh bearer token for one `karp cluster` run: 32 random bytes from the OS, hex.
fn new_token() -> Result<String, DemoError> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| DemoError::Serve(format!("generating a token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Manifest files under `path` (recursively), sorted, node classes and pools first.
///
/// # Errors
/// [`DemoError::ReadManifests`] when `path` cannot be read.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, DemoError> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            let entries = std::fs::read_dir(&p).map_err(|e| DemoError::ReadManifests {
                path: p.display().to_string(),
                reason: e.to_string(),
            })?;
            for e in entries.flatten() {
                stack.push(e.path());
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        } else if p == path {
            return Err(DemoError::ReadManifests {
                path: p.display().to_string(),
                reason: "not a folder or a .yaml/.yml/.json file".into(),
            });
        }
    }
    // Seed objects (node classes, pools) first, then workloads, each sorted by path.
    out.sort_by_key(|p| (!p.to_string_lossy().contains("seed"), p.clone()));
    Ok(out)
}

/// Applies every manifest under `path`; returns the number of objects.
///
/// # Errors
/// [`DemoError`] naming the file that could not be read or applied.
pub fn apply_path(cluster: &EmbeddedCluster, path: &Path) -> Result<usize, DemoError> {
    let mut n = 0;
    for f in manifest_files(path)? {
        let text = std::fs::read_to_string(&f).map_err(|e| DemoError::ReadManifests {
            path: f.display().to_string(),
            reason: e.to_string(),
        })?;
        n += cluster
            .apply_yaml(&text)
            .map_err(|reason| DemoError::ApplyManifest {
                path: f.display().to_string(),
                reason,
            })?;
    }
    Ok(n)
}

/// A point-in-time view of the cluster for progress lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Pods not yet bound.
    pub pending: usize,
    /// Pods running.
    pub running: usize,
    /// All pods.
    pub pods: usize,
    /// NodeClaims.
    pub nodeclaims: usize,
    /// NodeClaims Ready.
    pub ready_claims: usize,
    /// Nodes.
    pub nodes: usize,
    /// Cost of the launched claims, USD per hour.
    pub cost_per_hour: f64,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pending pods {:>3} | running {:>3}/{:<3} | nodeclaims {:>2} (ready {:>2}) | nodes {:>2} | ${:.4}/h",
            self.pending,
            self.running,
            self.pods,
            self.nodeclaims,
            self.ready_claims,
            self.nodes,
            self.cost_per_hour
        )
    }
}

fn claim_price(cluster: &EmbeddedCluster, c: &NodeClaim) -> f64 {
    let labels = c.metadata.labels.clone().unwrap_or_default();
    let (Some(z), Some(ct)) = (
        labels.get(karp_core::labels::ZONE),
        labels.get(karp_core::labels::CAPACITY_TYPE),
    ) else {
        return 0.0;
    };
    cluster
        .cloud
        .instance(c.provider_id().unwrap_or_default())
        .and_then(|i| {
            i.instance_type
                .offerings
                .iter()
                .find(|o| &o.zone == z && &o.capacity_type == ct)
                .map(|o| o.price)
        })
        .unwrap_or(0.0)
}

/// Reads the current progress of an embedded cluster (any cloud): pods counted in the API
/// server's store in place (cheap at tens of thousands of pods), each NodeClaim priced at its
/// offering (type, zone, capacity type labels) in its cloud provider's catalog.
pub async fn progress(control: &ClusterControl) -> Progress {
    use serde_json::Value;
    let server = &control.server;
    // One pass over the stored pods, in place.
    let (mut pods, mut pending, mut running) = (0, 0, 0);
    server.for_each(&karp_apiserver::Gvr::core("pods"), None, |p| {
        pods += 1;
        if p.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            pending += 1;
        }
        if p.pointer("/status/phase").and_then(Value::as_str) == Some("Running") {
            running += 1;
        }
    });
    // Per claim: (pool, node class), (type, zone, capacity type) when launched, and Ready.
    type Offering = (String, String, String);
    let mut claims: Vec<((String, String), Option<Offering>, bool)> = Vec::new();
    server.for_each(
        &karp_apiserver::Gvr::new("karpenter.sh", "v1", "nodeclaims"),
        None,
        |c| {
            let label = |k: &str| {
                c.get("metadata")
                    .and_then(|m| m.get("labels"))
                    .and_then(|l| l.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let key = (
                label(karp_core::labels::NODEPOOL).unwrap_or_default(),
                c.pointer("/spec/nodeClassRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
            let offering = match (
                label(karp_core::labels::INSTANCE_TYPE),
                label(karp_core::labels::ZONE),
                label(karp_core::labels::CAPACITY_TYPE),
            ) {
                (Some(t), Some(z), Some(ct)) => Some((t, z, ct)),
                _ => None,
            };
            let ready = c
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|x| {
                        x.get("type").and_then(Value::as_str) == Some("Ready")
                            && x.get("status").and_then(Value::as_str) == Some("True")
                    })
                });
            claims.push((key, offering, ready));
        },
    );
    let mut catalogs: BTreeMap<
        (String, String),
        Vec<std::sync::Arc<karp_core::cloud::InstanceType>>,
    > = BTreeMap::new();
    let mut cost_per_hour = 0.0;
    for (key, offering, _) in &claims {
        if !catalogs.contains_key(key) {
            let types = control
                .cloud()
                .instance_types(&key.0, Some(key.1.as_str()).filter(|s| !s.is_empty()))
                .await
                .unwrap_or_default();
            catalogs.insert(key.clone(), types);
        }
        let Some((t, z, ct)) = offering else {
            continue;
        };
        cost_per_hour += catalogs[key]
            .iter()
            .filter(|it| &it.name == t)
            .flat_map(|it| it.offerings.iter())
            .find(|o| &o.zone == z && &o.capacity_type == ct)
            .map_or(0.0, |o| o.price);
    }
    Progress {
        pending,
        running,
        pods,
        nodeclaims: claims.len(),
        ready_claims: claims.iter().filter(|(_, _, ready)| *ready).count(),
        nodes: server.count(&karp_apiserver::Gvr::core("nodes"), None, |_| true),
        cost_per_hour,
    }
}

/// Reads the progress and prints it when it differs from `last` (then its new value).
async fn report(
    cluster: &EmbeddedCluster,
    out: &mut dyn Write,
    started: Instant,
    last: &mut String,
) -> Progress {
    let p = progress(cluster).await;
    let line = p.to_string();
    if line != *last {
        let _ = writeln!(out, "  {:>5.1}s  {line}", started.elapsed().as_secs_f64());
        *last = line;
    }
    p
}

async fn wait_settled(
    cluster: &EmbeddedCluster,
    out: &mut dyn Write,
    started: Instant,
    timeout: Duration,
    what: &str,
    extra: impl Fn(&Progress) -> bool,
) -> Result<Progress, DemoError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let p = report(cluster, out, started, &mut last).await;
        if p.pods > 0
            && p.pending == 0
            && p.running == p.pods
            && p.ready_claims == p.nodeclaims
            && extra(&p)
        {
            return Ok(p);
        }
        if Instant::now() > deadline {
            return Err(DemoError::Timeout(format!(
                "{what} did not settle within {timeout:?}: {p}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The Deployments scaled to a third (at least one replica each); the operator's clock is then
/// advanced in 5 s steps (every 250 ms) past `consolidateAfter` and the validation delay until
/// the NodeClaims stay the same for 20 steps and two disruption passes. Returns what
/// consolidation did, from the disruption metrics.
async fn scale_down_and_consolidate(
    cluster: &EmbeddedCluster,
    out: &mut dyn Write,
    started: Instant,
) -> Result<String, DemoError> {
    use k8s_openapi::api::apps::v1::Deployment;
    let deployments = Api::<Deployment>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut shrunk = Vec::new();
    for d in &deployments {
        let (Some(ns), Some(name)) = (&d.metadata.namespace, &d.metadata.name) else {
            continue;
        };
        let from = d.spec.replicas.unwrap_or(1);
        let to = (from / 3).max(1);
        if to == from {
            continue;
        }
        let patch = serde_json::json!({"spec": {"replicas": to}});
        Api::<Deployment>::namespaced(cluster.client.clone(), ns)
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .await
            .map_err(|e| DemoError::Timeout(format!("scaling {ns}/{name}: {e}")))?;
        shrunk.push(format!("{name} {from}→{to}"));
    }
    let _ = writeln!(
        out,
        "\nscale-down ({}); consolidation, with the operator's clock advanced 5 s every 250 ms:",
        shrunk.join(", ")
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    let mut same = (Vec::<String>::new(), 0usize);
    let passes = || {
        cluster
            .metrics
            .counter(crate::controllers::disruption::PASSES_TOTAL, &[])
    };
    // Passes decided when the NodeClaims last changed: settled also needs two passes since, so a
    // slow machine does not take "no pass ran yet" for "nothing to do".
    let mut passes_then = passes();
    loop {
        let p = report(cluster, out, started, &mut last).await;
        let claims = Api::<NodeClaim>::all(cluster.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let settled = claims
            .iter()
            .all(|c| c.metadata.deletion_timestamp.is_none() && c.is_true("Initialized"));
        let mut names: Vec<String> = claims
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        names.sort();
        if settled && p.pending == 0 && p.running == p.pods && same.0 == names {
            same.1 += 1;
        } else {
            same = (names, 0);
            passes_then = passes();
        }
        if same.1 >= 20 && passes() >= passes_then + 2.0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(DemoError::Timeout(format!(
                "consolidation did not settle within 180 s: {p}"
            )));
        }
        cluster.clock().advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let m = &cluster.metrics;
    let mut counts: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for decision in ["delete", "replace"] {
        for (reason, kind) in [
            ("empty", "empty"),
            ("underutilized", "single"),
            ("underutilized", "multi"),
            ("underutilized", "global"),
            ("drifted", ""),
        ] {
            let n = m.counter(
                "karpenter_voluntary_disruption_decisions_total",
                &[
                    ("decision", decision),
                    ("reason", reason),
                    ("consolidation_type", kind),
                ],
            );
            *counts.entry((decision, reason)).or_default() += n;
        }
    }
    let pools: Vec<String> = Api::<crate::api::nodepool::NodePool>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let nodes = |reason: &str| -> f64 {
        let mut n = 0.0;
        for pool in &pools {
            for ct in ["spot", "on-demand", "reserved"] {
                n += m.counter(
                    "karpenter_nodeclaims_disrupted_total",
                    &[
                        ("reason", reason),
                        ("nodepool", pool),
                        ("capacity_type", ct),
                    ],
                );
            }
        }
        n
    };
    let described: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|((decision, reason), n)| format!("{n} {reason} {decision} command(s)"))
        .collect();
    Ok(if described.is_empty() {
        "had nothing to do".to_string()
    } else {
        format!(
            "ran {} ({} empty and {} underutilized node(s) removed)",
            described.join(", "),
            nodes("empty"),
            nodes("underutilized")
        )
    })
}

/// The summary's line comparing the solver that ran with the other on the same manifests (their
/// `karp plan` costs), e.g. `solver milp: scale-up at $0.3933/h; Karpenter's FFD plans
/// $0.6148/h for the same pods, so milp costs 36% less`.
fn solver_comparison(examples: &Path, chosen: Solver, actual: f64) -> String {
    let planned = |s: Solver| {
        crate::commands::plan::plan_paths(&[examples.to_path_buf()], None, s)
            .ok()
            .map(|p| p.output.cost.total_per_hour)
    };
    match chosen {
        Solver::Milp => match planned(Solver::Ffd) {
            Some(ffd) if ffd > 0.0 => format!(
                "solver milp: scale-up at ${actual:.4}/h; Karpenter's FFD plans ${ffd:.4}/h for the same pods, so milp costs {:.0}% less",
                100.0 * (ffd - actual) / ffd
            ),
            _ => format!("solver milp: scale-up at ${actual:.4}/h"),
        },
        Solver::Ffd => match planned(Solver::Milp) {
            Some(milp) if milp > 0.0 => format!(
                "solver ffd: scale-up at ${actual:.4}/h; karp's MILP plans ${milp:.4}/h for the same pods (--solver milp, {:.0}% less)",
                100.0 * (actual - milp) / actual.max(1e-9)
            ),
            _ => format!("solver ffd: scale-up at ${actual:.4}/h"),
        },
    }
}

/// Runs the demo on `examples`, writing progress to `out`.
///
/// # Errors
/// [`DemoError`] when the manifests are invalid or the cluster does not settle.
pub async fn run_demo(
    examples: &Path,
    choices: Choices,
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    let started = Instant::now();
    let mut options = EmbeddedOptions::fast();
    let chosen = choices.solver.solver;
    choices.apply(&mut options);
    // Karpenter's 1 s idle batch window; nodes become Ready after a second.
    options.operator.batch.idle = Duration::from_secs(1);
    options.sim.kubelet = options
        .sim
        .kubelet
        .clone()
        .ready_delay(Duration::from_secs(1));
    let cluster = EmbeddedCluster::start(options)
        .await
        .map_err(DemoError::Start)?;
    let _ = writeln!(out, "karp demo: embedded Kubernetes API + simulated EC2 (built-in us-east-1 catalog) + the real karp controllers");
    let n = apply_path(&cluster, examples)?;
    let _ = writeln!(out, "applied {n} objects from {}", examples.display());
    let _ = writeln!(out, "\nscale-up:");
    let up = wait_settled(
        &cluster,
        out,
        started,
        Duration::from_secs(120),
        "scale-up",
        |_| true,
    )
    .await?;
    let scale_up_secs = started.elapsed().as_secs_f64();

    // Remove the busiest node: karp drains it and the pods are placed again.
    let claims = Api::<NodeClaim>::all(cluster.client.clone());
    let pods = Api::<Pod>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let all_claims = claims
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let victim = all_claims
        .iter()
        .max_by_key(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .and_then(|n| per_node.get(n))
                .copied()
                .unwrap_or(0)
        })
        .cloned();
    let mut removed = String::new();
    if let Some(v) = victim {
        let name = v.metadata.name.clone().unwrap_or_default();
        let node = v
            .status
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\nremoving node {node} (NodeClaim {name}, {} pods): drain, pods placed again:",
            per_node.get(&node).copied().unwrap_or(0)
        );
        let _ = claims.delete(&name, &DeleteParams::default()).await;
        let client = cluster.client.clone();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let gone = Api::<NodeClaim>::all(client.clone())
                .get_opt(&name)
                .await
                .ok()
                .flatten()
                .is_none();
            if gone {
                break;
            }
            if Instant::now() > deadline {
                return Err(DemoError::Timeout(format!(
                    "NodeClaim {name} was not removed"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        wait_settled(
            &cluster,
            out,
            started,
            Duration::from_secs(120),
            "replacement",
            |_| true,
        )
        .await?;
        removed = format!("{node} ({name})");
    }
    let before_scale_down = progress(&cluster).await;
    let consolidated = scale_down_and_consolidate(&cluster, out, started).await?;
    let end = progress(&cluster).await;

    // Summary.
    let mut s = String::new();
    let _ = writeln!(s, "\nsummary:");
    let claims_now = claims
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "  {:<28} {:<14} {:<11} {:<9} {:>9}",
        "NODECLAIM", "TYPE", "ZONE", "CAPACITY", "$/HOUR"
    );
    for c in &claims_now {
        let l = c.metadata.labels.clone().unwrap_or_default();
        let get = |k: &str| l.get(k).cloned().unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<28} {:<14} {:<11} {:<9} {:>9.4}",
            c.metadata.name.clone().unwrap_or_default(),
            get(karp_core::labels::INSTANCE_TYPE),
            get(karp_core::labels::ZONE),
            get(karp_core::labels::CAPACITY_TYPE),
            claim_price(&cluster, c)
        );
    }
    let stats = cluster.cloud.stats();
    let _ = writeln!(
        s,
        "  scale-up: {} pods on {} nodes in {scale_up_secs:.1}s at ${:.4}/h",
        up.pods, up.nodes, up.cost_per_hour
    );
    let _ = writeln!(
        s,
        "  {}",
        solver_comparison(examples, chosen, up.cost_per_hour)
    );
    if !removed.is_empty() {
        let _ = writeln!(
            s,
            "  removed {removed}; its pods run again on {} nodes",
            before_scale_down.nodes
        );
    }
    let saved = before_scale_down.cost_per_hour - end.cost_per_hour;
    let pct = if before_scale_down.cost_per_hour > 0.0 {
        100.0 * saved / before_scale_down.cost_per_hour
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "  scale-down to {} pods: consolidation {consolidated}; ${:.4}/h → ${:.4}/h (saves ${saved:.4}/h, {pct:.0}%)",
        end.pods, before_scale_down.cost_per_hour, end.cost_per_hour
    );
    let _ = writeln!(
        s,
        "  instances launched {} / terminated {}; now {} pods running at ${:.4}/h",
        stats.creates, stats.deletes, end.running, end.cost_per_hour
    );
    let _ = write!(out, "{s}");
    let _ = out.flush();
    cluster.shutdown().await;
    Ok(())
}

/// The cloud behind `karp cluster`.
#[derive(Debug, Clone)]
pub enum ClusterCloud {
    /// The in-memory simulated cloud.
    Sim,
    /// karp-aws against an EC2 endpoint (moto_server), handling an interruption queue when one
    /// is given (queue mode, as `karp run --interruption-queue`).
    Aws(
        Box<karp_aws::AwsSettings>,
        Option<crate::controllers::interruption::InterruptionOptions>,
    ),
}

/// A running embedded cluster of either cloud.
enum Running {
    Sim(Box<EmbeddedCluster>),
    Aws(Box<crate::embedded::aws::EmbeddedAwsCluster>),
}

impl Running {
    fn control(&self) -> &ClusterControl {
        match self {
            Running::Sim(c) => c,
            Running::Aws(c) => c,
        }
    }

    async fn shutdown(self) {
        match self {
            Running::Sim(c) => c.shutdown().await,
            Running::Aws(c) => c.shutdown().await,
        }
    }
}

/// Where and how `karp cluster` serves.
#[derive(Debug, Clone)]
pub struct Serving {
    /// Address of the Kubernetes API.
    pub listen: String,
    /// Whether a non-loopback `listen` is allowed.
    pub allow_remote: bool,
    /// Where the kubeconfig is written.
    pub kubeconfig: PathBuf,
    /// Address of the operator's `/metrics`, `/healthz`, `/readyz` (none: not served).
    pub metrics_addr: Option<String>,
}

/// Prints a status line (pods, NodeClaims, nodes, cost) whenever it changes, polling every
/// `every`, until the task is dropped.
async fn status_lines(control: &ClusterControl, out: &mut dyn Write, every: Duration) {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let line = progress(control).await.to_string();
        if line != last {
            let _ = writeln!(out, "  {:>7.1}s  {line}", started.elapsed().as_secs_f64());
            let _ = out.flush();
            last = line;
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs `karp cluster`: serves the embedded cluster on `serving.listen`, writes the kubeconfig,
/// applies nothing, serves the operator's metrics when asked, prints a status line per change,
/// and runs until `shutdown` resolves.
///
/// # Errors
/// [`DemoError`] when the address cannot be bound or the cluster cannot start.
pub async fn run_cluster(
    serving: &Serving,
    cloud: ClusterCloud,
    choices: Choices,
    out: &mut dyn Write,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DemoError> {
    let listen = serving.listen.as_str();
    let allow_remote = serving.allow_remote;
    let kubeconfig = serving.kubeconfig.as_path();
    let loopback = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => listen.starts_with("localhost:"),
    };
    if !loopback && !allow_remote {
        return Err(DemoError::RemoteListen(listen.to_string()));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| DemoError::Serve(format!("binding {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| DemoError::Serve(e.to_string()))?;
    let mut options = EmbeddedOptions::fast();
    options.operator.batch.idle = Duration::from_secs(1);
    choices.apply(&mut options);
    // kubectl sends a bearer token only over TLS: serve HTTPS with a certificate made now.
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    names.push(addr.ip().to_string());
    let identity = karp_apiserver::tls::self_signed(&names).map_err(DemoError::Serve)?;
    let url = format!("https://{addr}");
    let token = new_token()?;
    karp_apiserver::write_kubeconfig_secure(
        kubeconfig,
        &url,
        Some(&token),
        Some(&identity.cert_pem),
    )
    .map_err(|e| DemoError::Serve(format!("writing {}: {e}", kubeconfig.display())))?;
    let serve_options = karp_apiserver::ServeOptions {
        token: Some(token),
        tls: Some(identity.server),
        // Served beyond loopback on request: clients may address it by any name.
        extra_hosts: if loopback {
            Vec::new()
        } else {
            vec!["*".into()]
        },
        ..karp_apiserver::ServeOptions::default()
    };
    let (what, running) = match cloud {
        ClusterCloud::Sim => {
            let cluster = EmbeddedCluster::start(options)
                .await
                .map_err(DemoError::Start)?;
            (
                "simulated cloud".to_string(),
                Running::Sim(Box::new(cluster)),
            )
        }
        ClusterCloud::Aws(settings, interruption) => {
            let endpoint = settings.endpoint_url.clone().unwrap_or_default();
            let mut cluster = crate::embedded::aws::EmbeddedAwsCluster::start(options, *settings)
                .await
                .map_err(DemoError::Start)?;
            let mut what = format!("karp-aws on {endpoint}");
            if let Some(i) = interruption {
                what.push_str(&format!(", interruption queue {}", i.queue));
                cluster.handle_interruptions(i);
            }
            (what, Running::Aws(Box::new(cluster)))
        }
    };
    let control = running.control();
    let serve = tokio::spawn(control.server.serve_with(listener, serve_options));
    let metrics = match &serving.metrics_addr {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| DemoError::Serve(format!("binding --metrics-addr {addr}: {e}")))?;
            let health = Arc::new(crate::runtime::health::Health::default());
            health
                .alive
                .store(true, std::sync::atomic::Ordering::SeqCst);
            health
                .ready
                .store(true, std::sync::atomic::Ordering::SeqCst);
            health
                .leader
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Some(tokio::spawn(crate::runtime::health::serve(
                l,
                Arc::clone(&control.metrics),
                health,
            )))
        }
        None => None,
    };
    let _ = writeln!(
        out,
        "karp cluster: serving {url} (kubeconfig {}); CRDs installed, {what}, karp controllers running. Ctrl-C stops.",
        kubeconfig.display()
    );
    if let Some(addr) = &serving.metrics_addr {
        let _ = writeln!(out, "metrics: http://{addr}/metrics");
    }
    let _ = out.flush();
    {
        let status = status_lines(control, out, Duration::from_secs(1));
        tokio::select! {
            () = shutdown => {}
            () = status => {}
        }
    }
    serve.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    running.shutdown().await;
    Ok(())
}
