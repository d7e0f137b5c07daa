//! Node termination (Karpenter's termination controller): a Node with karp's finalizer that is
//! being deleted is tainted `karpenter.sh/disrupted:NoSchedule`, drained through the Eviction API
//! in priority tiers (PodDisruptionBudgets answer 429 and are retried; `karpenter.sh/do-not-disrupt`
//! pods wait), until the NodeClaim's `terminationGracePeriod` runs out, after which remaining pods
//! are deleted; then volume attachments must be gone.
//!
//! Karpenter's order: a deleted Node's NodeClaim is deleted first, and the NodeClaim's finalizer
//! ([`super::lifecycle`]) is the one owner of instance deletion: once this controller marks the
//! claim `Drained`, the claim terminates the instance and marks `InstanceTerminated`; then the
//! Node's finalizer is removed, and the claim goes once its node is gone. [`next_step`] decides each step from the objects and the time; `act` performs it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use tracing::{debug, info, info_span, warn, Instrument};

use super::writes::{delete_ignoring_404, kube_err, patch_claim_status, remove_finalizer};
use super::{Context, OperatorError};
use crate::api::nodeclaim::{
    set_condition, NodeClaim, DISRUPTED_TAINT, DO_NOT_DISRUPT, TERMINATION_FINALIZER,
};
use crate::api::rfc3339;

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

/// The eviction tier of a pod.
#[must_use]
pub fn tier(p: &Pod) -> Tier {
    match (super::provisioner::is_daemonset_pod(p), is_critical(p)) {
        (false, false) => Tier::Regular,
        (false, true) => Tier::Critical,
        (true, false) => Tier::DaemonSet,
        (true, true) => Tier::CriticalDaemonSet,
    }
}

/// Whether a pod has finished (`Succeeded` or `Failed`).
#[must_use]
pub fn is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a pod is the API mirror of a static pod (the kubelet owns it; eviction cannot
/// remove it).
#[must_use]
pub fn is_mirror(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
}

/// Whether a pod on a draining node must be evicted: not terminal, not a mirror (static) pod, not
/// tolerating the disrupted taint (it would come right back), not already going.
#[must_use]
pub fn needs_eviction(p: &Pod) -> bool {
    let terminal = is_terminal(p);
    let mirror = is_mirror(p);
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

/// A claim's `terminationGracePeriod` (`None` for `Never` or a value that does not parse:
/// conversion rejects those before a claim is made, so no wrapped value can force a drain).
fn parse_duration(s: &str) -> Option<Duration> {
    crate::api::duration::parse(s).ok().flatten()
}

/// What node termination does next, decided from the objects and the time alone.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeStep {
    /// Not being deleted, or not karp's to finalize.
    Ignore,
    /// Karpenter's order: a deleted Node's NodeClaim is deleted first (its finalizer owns the
    /// instance).
    DeleteClaim(String),
    /// Taint `karpenter.sh/disrupted:NoSchedule` so nothing new lands here.
    Taint,
    /// Evict (or, past the grace period, delete) this wave of pods and look again.
    Drain {
        /// Pods to evict through the Eviction API (PDBs answer 429 and are retried).
        evict: Vec<Arc<Pod>>,
        /// Pods to delete outright: the claim's `terminationGracePeriod` ran out.
        delete: Vec<Arc<Pod>>,
        /// `karpenter.sh/do-not-disrupt` pods left to wait for.
        waiting: usize,
    },
    /// Volume attachments must be gone before the instance goes.
    AwaitVolumes(usize),
    /// Tell the NodeClaim the node is drained (condition `Drained`): its finalizer may now
    /// terminate the instance.
    MarkDrained(String),
    /// The NodeClaim is terminating its instance (until it marks `InstanceTerminated`).
    AwaitInstance,
    /// Done: remove the finalizer, the Node goes.
    RemoveFinalizer,
}

/// The facts one termination step is decided from.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    /// The node.
    pub node: &'a Node,
    /// Its NodeClaim (by provider ID), if any.
    pub claim: Option<&'a NodeClaim>,
    /// Pods bound to the node.
    pub pods: &'a [Arc<Pod>],
    /// Volume attachments still on the node (`None`: unknown, the list failed).
    pub attachments: Option<usize>,
    /// How long the node has been deleting.
    pub deleting_for: Duration,
}

fn has_finalizer(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.finalizers
        .iter()
        .flatten()
        .any(|f| f == TERMINATION_FINALIZER)
}

/// Whether karp terminates `node` now: it is being deleted and still holds karp's finalizer.
fn terminating(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_some() && has_finalizer(&node.metadata)
}

/// The next termination step (pure: unit-tested without IO).
#[must_use]
pub fn next_step(f: &NodeFacts<'_>) -> NodeStep {
    let node = f.node;
    if !terminating(node) {
        return NodeStep::Ignore;
    }
    if let Some(claim) = f.claim {
        if claim.metadata.deletion_timestamp.is_none() {
            return NodeStep::DeleteClaim(claim.metadata.name.clone().unwrap_or_default());
        }
    }
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == DISRUPTED_TAINT));
    if !tainted {
        return NodeStep::Taint;
    }
    // The claim's terminationGracePeriod bounds the drain.
    let grace = f
        .claim
        .and_then(|c| c.spec.termination_grace_period.as_deref())
        .and_then(parse_duration);
    let expired = grace.is_some_and(|g| f.deleting_for >= g);
    let wave = next_wave(f.pods);
    if !wave.is_empty() {
        if expired {
            return NodeStep::Drain {
                evict: Vec::new(),
                delete: wave,
                waiting: 0,
            };
        }
        let (blocked, evict): (Vec<_>, Vec<_>) = wave.into_iter().partition(|p| do_not_disrupt(p));
        return NodeStep::Drain {
            evict,
            delete: Vec::new(),
            waiting: blocked.len(),
        };
    }
    if !expired {
        if let Some(n) = f.attachments.filter(|n| *n > 0) {
            return NodeStep::AwaitVolumes(n);
        }
    }
    match f.claim {
        Some(c) if !c.is_true("Drained") => {
            NodeStep::MarkDrained(c.metadata.name.clone().unwrap_or_default())
        }
        Some(c) if !c.is_true("InstanceTerminated") => NodeStep::AwaitInstance,
        _ => NodeStep::RemoveFinalizer,
    }
}

async fn facts_and_step(node: &Node, ctx: &Context) -> NodeStep {
    // Every pod change reconciles its node: a node that is not being terminated needs no facts
    // (no scan of every pod, no VolumeAttachment list), and `next_step` would ignore it anyway.
    if !terminating(node) {
        return NodeStep::Ignore;
    }
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let claim = node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .and_then(|p| ctx.stores.nodeclaim_by_provider_id(p));
    let pods: Vec<Arc<Pod>> = ctx
        .stores
        .pods
        .state()
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name))
        .collect();
    let attachments: Api<VolumeAttachment> = Api::all(ctx.client.clone());
    let attachments = attachments
        .list(&ListParams::default())
        .await
        .ok()
        .map(|l| l.items.iter().filter(|v| v.spec.node_name == name).count());
    let deleting_for = node
        .metadata
        .deletion_timestamp
        .as_ref()
        .and_then(|t| {
            Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(t.0)).ok()
        })
        .unwrap_or_default();
    next_step(&NodeFacts {
        node,
        claim: claim.as_deref(),
        pods: &pods,
        attachments,
        deleting_for,
    })
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let span = info_span!("terminate_node", node = %name);
    async move {
        let step = facts_and_step(&node, &ctx).await;
        act(&node, step, &ctx).await
    }
    .instrument(span)
    .await
}

/// Performs one termination step.
async fn act(node: &Node, step: NodeStep, ctx: &Context) -> Result<Action, OperatorError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let claims: Api<NodeClaim> = Api::all(ctx.client.clone());
    match step {
        NodeStep::Ignore => Ok(Action::await_change()),
        NodeStep::DeleteClaim(claim) => {
            delete_ignoring_404(&claims, &claim, "delete NodeClaim").await?;
            info!(nodeclaim = %claim, "node deleted: deleting its NodeClaim first");
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        NodeStep::Taint => {
            let mut taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
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
                .map_err(|e| kube_err("taint Node", e))?;
            info!("tainted {DISRUPTED_TAINT}; draining");
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        NodeStep::Drain {
            evict,
            delete,
            waiting,
        } => {
            for p in &delete {
                let (ns, pod) = pod_key(p);
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
                // Past the grace period: delete regardless of PDBs and do-not-disrupt.
                if let Err(e) = delete_ignoring_404(&pods, &pod, "delete Pod").await {
                    warn!(pod = %format!("{ns}/{pod}"), error = %e, "pod deletion failed");
                }
            }
            for p in &evict {
                let (ns, pod) = pod_key(p);
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
                match pods.evict(&pod, &EvictParams::default()).await {
                    Ok(_) => info!(pod = %format!("{ns}/{pod}"), "evicted"),
                    Err(kube::Error::Api(s)) if s.code == 429 => {
                        debug!(pod = %pod, "eviction blocked by a PodDisruptionBudget");
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => warn!(pod = %pod, error = %e, "eviction failed"),
                }
            }
            if waiting > 0 {
                debug!(waiting, "do-not-disrupt pods: waiting");
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        NodeStep::AwaitVolumes(attached) => {
            debug!(attached, "waiting for volumes to detach");
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        NodeStep::MarkDrained(claim_name) => {
            if let Some(claim) = claims
                .get_opt(&claim_name)
                .await
                .map_err(|e| kube_err("get NodeClaim", e))?
            {
                let mut status = claim.status.clone().unwrap_or_default();
                set_condition(
                    &mut status.conditions,
                    "Drained",
                    true,
                    "Drained",
                    "",
                    &rfc3339(SystemTime::now()),
                );
                patch_claim_status(&claims, &claim_name, &status).await?;
                info!(nodeclaim = %claim_name, "drained");
            }
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        NodeStep::AwaitInstance => Ok(Action::requeue(Duration::from_millis(500))),
        NodeStep::RemoveFinalizer => {
            remove_finalizer(&nodes, node, TERMINATION_FINALIZER).await?;
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
    }
}

fn pod_key(p: &Pod) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
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
        assert_eq!(parse_duration("18446744073709551615s1s"), None);
    }

    fn deleting_node(tainted: bool) -> Node {
        let ts = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                finalizers: Some(vec![TERMINATION_FINALIZER.into()]),
                deletion_timestamp: Some(ts),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                provider_id: Some("aws:///us-east-1a/i-1".into()),
                taints: tainted.then(|| {
                    vec![k8s_openapi::api::core::v1::Taint {
                        key: DISRUPTED_TAINT.into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn claim(deleting: bool, drained: bool, grace: Option<&str>) -> NodeClaim {
        let mut c = NodeClaim::default();
        c.metadata.name = Some("c1".into());
        if deleting {
            c.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        c.spec.termination_grace_period = grace.map(str::to_string);
        let mut status = crate::api::nodeclaim::NodeClaimStatus::default();
        if drained {
            set_condition(&mut status.conditions, "Drained", true, "Drained", "", "t");
        }
        c.status = Some(status);
        c
    }

    fn facts<'a>(
        node: &'a Node,
        claim: Option<&'a NodeClaim>,
        pods: &'a [Arc<Pod>],
        attachments: Option<usize>,
        deleting_for: u64,
    ) -> NodeFacts<'a> {
        NodeFacts {
            node,
            claim,
            pods,
            attachments,
            deleting_for: Duration::from_secs(deleting_for),
        }
    }

    #[test]
    fn a_deleted_nodes_claim_is_deleted_before_anything_else() {
        let node = deleting_node(false);
        let c = claim(false, false, None);
        let pods = [pod("a", false, false)];
        assert_eq!(
            next_step(&facts(&node, Some(&c), &pods, Some(0), 0)),
            NodeStep::DeleteClaim("c1".into())
        );
    }

    #[test]
    fn termination_taints_drains_waits_for_volumes_then_hands_the_instance_to_the_claim() {
        let untainted = deleting_node(false);
        let node = deleting_node(true);
        let c = claim(true, false, None);
        let pods = [pod("a", false, false)];
        assert_eq!(
            next_step(&facts(&untainted, Some(&c), &pods, Some(0), 0)),
            NodeStep::Taint
        );
        assert!(matches!(
            next_step(&facts(&node, Some(&c), &pods, Some(0), 0)),
            NodeStep::Drain { evict, delete, waiting: 0 } if evict.len() == 1 && delete.is_empty()
        ));
        assert_eq!(
            next_step(&facts(&node, Some(&c), &[], Some(2), 0)),
            NodeStep::AwaitVolumes(2)
        );
        assert_eq!(
            next_step(&facts(&node, Some(&c), &[], Some(0), 0)),
            NodeStep::MarkDrained("c1".into())
        );
        let drained = claim(true, true, None);
        assert_eq!(
            next_step(&facts(&node, Some(&drained), &[], Some(0), 0)),
            NodeStep::AwaitInstance
        );
        let mut terminated = drained.clone();
        let status = terminated.status.as_mut().unwrap();
        set_condition(
            &mut status.conditions,
            "InstanceTerminated",
            true,
            "InstanceTerminated",
            "",
            "t",
        );
        assert_eq!(
            next_step(&facts(&node, Some(&terminated), &[], Some(0), 0)),
            NodeStep::RemoveFinalizer
        );
        assert_eq!(
            next_step(&facts(&node, None, &[], Some(0), 0)),
            NodeStep::RemoveFinalizer
        );
    }

    #[test]
    fn do_not_disrupt_pods_wait_until_the_grace_period_then_are_deleted() {
        let node = deleting_node(true);
        let mut blocked = (*pod("a", false, false)).clone();
        blocked.metadata.annotations =
            Some([(DO_NOT_DISRUPT.to_string(), "true".to_string())].into());
        let pods = [Arc::new(blocked)];
        let c = claim(true, false, Some("1m"));
        assert_eq!(
            next_step(&facts(&node, Some(&c), &pods, Some(0), 30)),
            NodeStep::Drain {
                evict: Vec::new(),
                delete: Vec::new(),
                waiting: 1
            }
        );
        assert!(matches!(
            next_step(&facts(&node, Some(&c), &pods, Some(1), 61)),
            NodeStep::Drain { delete, .. } if delete.len() == 1
        ));
        // Past the grace period volumes are not waited for.
        assert_eq!(
            next_step(&facts(&node, Some(&c), &[], Some(1), 61)),
            NodeStep::MarkDrained("c1".into())
        );
    }

    #[test]
    fn nodes_not_deleting_or_without_karps_finalizer_are_ignored() {
        let mut node = deleting_node(true);
        node.metadata.finalizers = None;
        assert_eq!(
            next_step(&facts(&node, None, &[], Some(0), 0)),
            NodeStep::Ignore
        );
        let mut live = deleting_node(true);
        live.metadata.deletion_timestamp = None;
        assert_eq!(
            next_step(&facts(&live, None, &[], Some(0), 0)),
            NodeStep::Ignore
        );
    }
}
