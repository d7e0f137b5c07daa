//! Pod events on NodeClaims: `status.lastPodEventTime`, the moment `consolidateAfter` counts from.
//!
//! As Karpenter's pod-events controller: a pod binding to a node, going terminal (`Succeeded`,
//! `Failed`) or starting to terminate is an event on the NodeClaim of its node; DaemonSet pods
//! are not (mirror pods are). karp scans the pod cache every [`SCAN_PERIOD`] and compares each
//! pod with what it saw last, so it also counts a bound pod that vanished between two scans
//! without being seen terminating (a forced delete). The claim's time is written with a status
//! merge patch at most once per [`DEDUPE`] (10 s, shorter than the 15 s validation delay of
//! disruption commands, as in Karpenter).
//!
//! Unlike Karpenter 1.x, the pods present when the controller starts are its baseline, not
//! events: a restart of the operator does not restart every node's `consolidateAfter` window
//! (kubernetes-sigs/karpenter#1965). A pod first seen bound after the start (created with
//! `spec.nodeName`, or bound and seen in the same scan) is an event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use karp_core::disruption::Timestamp;
use kube::Api;
use serde_json::json;
use tracing::{debug, info_span, warn, Instrument};

use super::writes::patch_claim_status;
use super::Context;
use crate::api::nodeclaim::NodeClaim;
use crate::api::rfc3339;

/// How often the pod cache is compared with the last scan.
pub const SCAN_PERIOD: Duration = Duration::from_secs(1);

/// A NodeClaim's `lastPodEventTime` is not written again within this long.
pub const DEDUPE: Duration = Duration::from_secs(10);

/// What the controller remembers of a pod between scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// Phase `Succeeded` or `Failed`.
    pub terminal: bool,
    /// A deletion timestamp is set.
    pub terminating: bool,
}

impl PodView {
    /// The view of `pod`; `None` for DaemonSet pods, which make no events.
    #[must_use]
    pub fn of(pod: &Pod) -> Option<PodView> {
        if super::provisioner::is_daemonset_pod(pod) {
            return None;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        Some(PodView {
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            terminal: matches!(phase, Some("Succeeded" | "Failed")),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        })
    }
}

/// The node on which a pod that was `before` (`None`: not seen yet) and is now `after` (`None`:
/// gone) made an event, if it made one.
#[must_use]
pub fn event_node(before: Option<&PodView>, after: Option<&PodView>) -> Option<String> {
    match (before, after) {
        (None, Some(a)) => a.node.clone(),
        (Some(b), Some(a)) => {
            let node = a.node.as_ref()?;
            let bound = b.node.as_ref() != Some(node);
            let went_terminal = a.terminal && !b.terminal;
            let started_terminating = a.terminating && !b.terminating;
            (bound || went_terminal || started_terminating).then(|| node.clone())
        }
        // Deleted between scans without being seen terminal or terminating.
        (Some(b), None) if !b.terminal && !b.terminating => b.node.clone(),
        _ => None,
    }
}

/// The pods seen at the last scan, by UID (else `namespace/name`).
#[derive(Debug, Default)]
pub struct Tracker {
    pods: BTreeMap<String, PodView>,
}

fn key(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

impl Tracker {
    /// A tracker whose baseline is `pods` (they make no events).
    pub fn baseline<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Self {
        let mut t = Tracker::default();
        let _ = t.observe(pods);
        t
    }

    /// Compare `pods` (the whole cache) with the last scan; the nodes with events, in name order.
    pub fn observe<'a>(&mut self, pods: impl IntoIterator<Item = &'a Pod>) -> BTreeSet<String> {
        let now: BTreeMap<String, PodView> = pods
            .into_iter()
            .filter_map(|p| PodView::of(p).map(|v| (key(p), v)))
            .collect();
        let mut nodes = BTreeSet::new();
        for (k, v) in &now {
            nodes.extend(event_node(self.pods.get(k), Some(v)));
        }
        for (k, v) in &self.pods {
            if !now.contains_key(k) {
                nodes.extend(event_node(Some(v), None));
            }
        }
        self.pods = now;
        nodes
    }
}

/// Whether a claim whose last event was recorded at `last` gets `now` written.
#[must_use]
pub fn due(last: Option<Timestamp>, now: Timestamp) -> bool {
    let window = i64::try_from(DEDUPE.as_millis()).unwrap_or(i64::MAX);
    last.is_none_or(|l| now.0.saturating_sub(l.0) >= window)
}

/// The NodeClaim of each node, by name: by `status.nodeName`, else by the Node's provider ID.
fn claims_by_node(ctx: &Context) -> BTreeMap<String, Arc<NodeClaim>> {
    let claims = ctx.stores.nodeclaims.state();
    let by_provider_id: BTreeMap<&str, &Arc<NodeClaim>> = claims
        .iter()
        .filter_map(|c| c.provider_id().map(|p| (p, c)))
        .collect();
    let mut out: BTreeMap<String, Arc<NodeClaim>> = BTreeMap::new();
    for n in ctx.stores.nodes.state() {
        let (Some(name), Some(provider_id)) = (
            n.metadata.name.as_ref(),
            n.spec.as_ref().and_then(|s| s.provider_id.as_deref()),
        ) else {
            continue;
        };
        if let Some(c) = by_provider_id.get(provider_id) {
            out.insert(name.clone(), Arc::clone(c));
        }
    }
    for c in &claims {
        if let Some(node) = c.status.as_ref().and_then(|s| s.node_name.as_ref()) {
            out.insert(node.clone(), Arc::clone(c));
        }
    }
    out
}

/// Record an event at `now` on `claim` (unless recorded within [`DEDUPE`]).
async fn record(
    ctx: &Context,
    node: &str,
    claim: &NodeClaim,
    now: SystemTime,
    written: &mut BTreeMap<String, Timestamp>,
) {
    let Some(name) = claim.metadata.name.clone() else {
        return;
    };
    let stored = claim
        .status
        .as_ref()
        .and_then(|s| s.last_pod_event_time.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let last = stored.max(written.get(&name).copied());
    let at = Timestamp::from(now);
    if !due(last, at) {
        return;
    }
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    match patch_claim_status(&api, &name, &json!({ "lastPodEventTime": rfc3339(now) })).await {
        Ok(()) => {
            debug!(nodeclaim = %name, node, "pod event recorded");
            written.insert(name, at);
        }
        Err(e) => warn!(nodeclaim = %name, node, error = %e, "recording a pod event failed"),
    }
}

/// Scans the pod cache every [`SCAN_PERIOD`] until shutdown, recording pod events on NodeClaims.
pub async fn run(ctx: Arc<Context>) {
    let mut tracker = Tracker::baseline(ctx.stores.pods.state().iter().map(AsRef::as_ref));
    let mut written: BTreeMap<String, Timestamp> = BTreeMap::new();
    loop {
        tokio::select! {
            () = ctx.shutdown_requested() => return,
            () = tokio::time::sleep(SCAN_PERIOD) => {}
        }
        let pods = ctx.stores.pods.state();
        let nodes = tracker.observe(pods.iter().map(AsRef::as_ref));
        if nodes.is_empty() {
            continue;
        }
        let span = info_span!("pod_events", nodes = nodes.len());
        async {
            let now = ctx.settings.clock.now();
            let by_node = claims_by_node(&ctx);
            for node in &nodes {
                if let Some(claim) = by_node.get(node) {
                    record(&ctx, node, claim, now, &mut written).await;
                }
            }
        }
        .instrument(span)
        .await;
        // Forget claims that are gone.
        let live = ctx.stores.nodeclaim_names();
        written.retain(|name, _| live.contains(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn pod(uid: &str, node: Option<&str>, phase: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.name = Some(uid.into());
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: node.map(str::to_string),
            ..Default::default()
        });
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        p
    }

    fn terminating(mut p: Pod) -> Pod {
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        p
    }

    #[test]
    fn binds_terminal_and_terminating_pods_make_events_on_their_node() {
        let mut t =
            Tracker::baseline([&pod("a", None, "Pending"), &pod("b", Some("n1"), "Running")]);
        // Nothing changed: no event.
        assert!(t
            .observe([&pod("a", None, "Pending"), &pod("b", Some("n1"), "Running")])
            .is_empty());
        // a binds to n2.
        let events = t.observe([
            &pod("a", Some("n2"), "Pending"),
            &pod("b", Some("n1"), "Running"),
        ]);
        assert_eq!(events, BTreeSet::from(["n2".to_string()]));
        // b goes terminal, then a starts terminating.
        let events = t.observe([
            &pod("a", Some("n2"), "Running"),
            &pod("b", Some("n1"), "Succeeded"),
        ]);
        assert_eq!(events, BTreeSet::from(["n1".to_string()]));
        let events = t.observe([
            &terminating(pod("a", Some("n2"), "Running")),
            &pod("b", Some("n1"), "Succeeded"),
        ]);
        assert_eq!(events, BTreeSet::from(["n2".to_string()]));
        // a goes away after it was seen terminating; b (terminal) too: no new event.
        assert!(t.observe(std::iter::empty::<&Pod>()).is_empty());
    }

    #[test]
    fn a_bound_pod_gone_without_being_seen_terminating_is_an_event() {
        let mut t = Tracker::baseline([&pod("a", Some("n1"), "Running")]);
        assert_eq!(
            t.observe(std::iter::empty::<&Pod>()),
            BTreeSet::from(["n1".to_string()])
        );
    }

    #[test]
    fn the_baseline_makes_no_events_but_new_bound_pods_do() {
        let mut t = Tracker::baseline([&pod("a", Some("n1"), "Running")]);
        let events = t.observe([
            &pod("a", Some("n1"), "Running"),
            &pod("s", Some("n3"), "Running"),
        ]);
        assert_eq!(events, BTreeSet::from(["n3".to_string()]));
        // A new pending pod is not an event.
        assert!(t
            .observe([
                &pod("a", Some("n1"), "Running"),
                &pod("s", Some("n3"), "Running"),
                &pod("p", None, "Pending"),
            ])
            .is_empty());
    }

    #[test]
    fn daemonset_pods_make_no_events() {
        let mut ds = pod("d", None, "Pending");
        ds.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            name: "agent".into(),
            api_version: "apps/v1".into(),
            uid: "x".into(),
            ..Default::default()
        }]);
        let mut t = Tracker::baseline([&ds]);
        ds.spec.as_mut().unwrap().node_name = Some("n1".into());
        assert!(t.observe([&ds]).is_empty());
        assert!(t.observe(std::iter::empty::<&Pod>()).is_empty());
    }

    #[test]
    fn events_are_written_at_most_once_per_ten_seconds() {
        let t0 = Timestamp(1_000_000);
        assert!(due(None, t0));
        assert!(!due(Some(t0), Timestamp(t0.0 + 9_999)));
        assert!(due(Some(t0), Timestamp(t0.0 + 10_000)));
    }
}
