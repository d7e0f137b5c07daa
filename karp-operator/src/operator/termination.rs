//! Node termination (Karpenter's termination controller): a Node with karp's finalizer that is
//! being deleted is tainted `karpenter.sh/disrupted:NoSchedule`, drained through the Eviction API
//! in priority tiers (PodDisruptionBudgets answer 429 and are retried; `karpenter.sh/do-not-disrupt`
//! pods wait), until the NodeClaim's `terminationGracePeriod` runs out, after which remaining pods
//! are deleted; then volume attachments must be gone, the instance is deleted until the cloud
//! says NotFound, and the finalizer is removed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use tracing::{debug, info, info_span, warn, Instrument};

use super::lifecycle::remove_finalizer;
use super::objects::{DISRUPTED_TAINT, DO_NOT_DISRUPT, TERMINATION_FINALIZER};
use super::{Context, OperatorError};

/// Eviction tiers, in order: Karpenter drains regular pods before critical ones, and DaemonSet
/// pods last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Not critical, not a DaemonSet pod.
    Regular,
    /// `system-cluster-critical` / `system-node-critical`, not a DaemonSet pod.
    Critical,
    /// A DaemonSet pod, not critical.
    DaemonSet,
    /// A critical DaemonSet pod.
    CriticalDaemonSet,
}

fn is_critical(p: &Pod) -> bool {
    matches!(
        p.spec
            .as_ref()
            .and_then(|s| s.priority_class_name.as_deref()),
        Some("system-cluster-critical" | "system-node-critical")
    )
}

fn is_daemonset(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet")
}

/// The eviction tier of a pod.
#[must_use]
pub fn tier(p: &Pod) -> Tier {
    match (is_daemonset(p), is_critical(p)) {
        (false, false) => Tier::Regular,
        (false, true) => Tier::Critical,
        (true, false) => Tier::DaemonSet,
        (true, true) => Tier::CriticalDaemonSet,
    }
}

/// Whether a pod on a draining node must be evicted: not terminal, not a mirror (static) pod, not
/// tolerating the disrupted taint (it would come right back), not already going.
#[must_use]
pub fn needs_eviction(p: &Pod) -> bool {
    let terminal = matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let mirror = p
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let tolerates = p
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .any(|t| {
            (t.key.as_deref() == Some(DISRUPTED_TAINT)
                || (t.key.is_none() && t.operator.as_deref() == Some("Exists")))
                && t.effect.as_deref().is_none_or(|e| e == "NoSchedule")
        });
    !terminal && !mirror && !tolerates && p.metadata.deletion_timestamp.is_none()
}

/// Whether a pod blocks voluntary eviction (`karpenter.sh/do-not-disrupt: "true"`).
#[must_use]
pub fn do_not_disrupt(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DO_NOT_DISRUPT))
        .is_some_and(|v| v == "true")
}

/// The pods to evict now: those of the lowest tier that still has pods.
#[must_use]
pub fn next_wave(pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    let candidates: Vec<&Arc<Pod>> = pods.iter().filter(|p| needs_eviction(p)).collect();
    let Some(lowest) = candidates.iter().map(|p| tier(p)).min() else {
        return Vec::new();
    };
    let mut wave: Vec<Arc<Pod>> = candidates
        .into_iter()
        .filter(|p| tier(p) == lowest)
        .cloned()
        .collect();
    wave.sort_by(|a, b| {
        (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
            .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
    });
    wave
}

fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let n: u64 = num.parse().ok()?;
            num.clear();
            total += n * match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => return None,
            };
        }
    }
    num.is_empty().then_some(Duration::from_secs(total))
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let span = info_span!("terminate_node", node = %name);
    async move {
        let ours = node
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == TERMINATION_FINALIZER);
        if node.metadata.deletion_timestamp.is_none() || !ours {
            return Ok(Action::await_change());
        }
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        // 1. Taint, so nothing new lands here.
        let mut taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if !taints.iter().any(|t| t.key == DISRUPTED_TAINT) {
            taints.push(k8s_openapi::api::core::v1::Taint {
                key: DISRUPTED_TAINT.into(),
                value: None,
                effect: "NoSchedule".into(),
                time_added: None,
            });
            nodes
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"taints": taints}})),
                )
                .await
                .map_err(|e| OperatorError::Kube("taint Node", e.to_string()))?;
            info!("tainted {DISRUPTED_TAINT}; draining");
        }
        // The claim's terminationGracePeriod bounds the drain.
        let provider_id = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default();
        let claim = ctx.stores.nodeclaim_by_provider_id(&provider_id);
        let tgp = claim
            .as_ref()
            .and_then(|c| c.spec.termination_grace_period.as_deref())
            .and_then(parse_duration);
        let deleting_for = node
            .metadata
            .deletion_timestamp
            .as_ref()
            .and_then(|t| {
                Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(t.0)).ok()
            })
            .unwrap_or_default();
        let expired = tgp.is_some_and(|g| deleting_for >= g);
        // 2. Drain.
        let on_node: Vec<Arc<Pod>> = ctx
            .stores
            .pods
            .state()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
            .collect();
        let wave = next_wave(&on_node);
        if !wave.is_empty() {
            for p in &wave {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let pod_name = p.metadata.name.clone().unwrap_or_default();
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
                if expired {
                    // Past the grace period: delete regardless of PDBs and do-not-disrupt.
                    let _ = pods.delete(&pod_name, &DeleteParams::default()).await;
                    continue;
                }
                if do_not_disrupt(p) {
                    debug!(pod = %pod_name, "do-not-disrupt: waiting");
                    continue;
                }
                match pods.evict(&pod_name, &EvictParams::default()).await {
                    Ok(_) => info!(pod = %format!("{ns}/{pod_name}"), "evicted"),
                    Err(kube::Error::Api(s)) if s.code == 429 => {
                        debug!(pod = %pod_name, "eviction blocked by a PodDisruptionBudget");
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => warn!(pod = %pod_name, error = %e, "eviction failed"),
                }
            }
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        // 3. Volumes detach before the instance goes (unless the grace period ran out).
        if !expired {
            let attachments: Api<VolumeAttachment> = Api::all(ctx.client.clone());
            if let Ok(list) = attachments.list(&ListParams::default()).await {
                let attached = list
                    .items
                    .iter()
                    .filter(|v| v.spec.node_name == name)
                    .count();
                if attached > 0 {
                    debug!(attached, "waiting for volumes to detach");
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
            }
        }
        // 4. The instance, until NotFound.
        if !provider_id.is_empty() {
            match ctx.cloud.delete(&provider_id).await {
                Ok(()) => return Ok(Action::requeue(Duration::from_millis(500))),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(OperatorError::Cloud(e.to_string())),
            }
        }
        remove_finalizer(&nodes, &node, TERMINATION_FINALIZER).await?;
        ctx.metrics.inc(
            "karpenter_nodes_terminated_total",
            &[(
                "nodepool",
                node.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(karp_core::labels::NODEPOOL))
                    .map_or("", String::as_str),
            )],
        );
        info!("terminated");
        Ok(Action::await_change())
    }
    .instrument(span)
    .await
}

fn error_policy(_node: Arc<Node>, err: &OperatorError, _ctx: Arc<Context>) -> Action {
    warn!(error = %err, "node termination failed");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the termination controller until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let shutdown_ctx = Arc::clone(&ctx);
    Controller::new(nodes, watcher::Config::default())
        .watches(pods, watcher::Config::default(), |pod: Pod| {
            pod.spec
                .and_then(|s| s.node_name)
                .map(|n| kube::runtime::reflector::ObjectRef::<Node>::new(&n))
        })
        .graceful_shutdown_on(async move { shutdown_ctx.shutdown_requested().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(name: &str, daemon: bool, critical: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                owner_references: daemon.then(|| {
                    vec![OwnerReference {
                        kind: "DaemonSet".into(),
                        name: "ds".into(),
                        api_version: "apps/v1".into(),
                        uid: "u".into(),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                priority_class_name: critical.then(|| "system-cluster-critical".to_string()),
                ..Default::default()
            }),
            status: None,
        })
    }

    #[test]
    fn drains_in_karpenters_tiers() {
        let pods = vec![
            pod("ds-crit", true, true),
            pod("ds", true, false),
            pod("crit", false, true),
            pod("b", false, false),
            pod("a", false, false),
        ];
        let names = |w: Vec<Arc<Pod>>| -> Vec<String> {
            w.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
        };
        assert_eq!(names(next_wave(&pods)), vec!["a", "b"]);
        assert_eq!(names(next_wave(&pods[..3])), vec!["crit"]);
        assert_eq!(names(next_wave(&pods[..2])), vec!["ds"]);
        assert_eq!(names(next_wave(&pods[..1])), vec!["ds-crit"]);
        assert!(next_wave(&[]).is_empty());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("12"), None);
    }
}
