//! NodeClaim disruption conditions: `Consolidatable`.
//!
//! As Karpenter's `nodeclaim.disruption` controller: a NodeClaim is `Consolidatable` once its
//! pool's `consolidateAfter` has passed since its last pod event (`status.lastPodEventTime`,
//! recorded by [`podevents`](super::podevents)), or since it became `Initialized` when no pod
//! event was recorded. The condition is removed (not set False) while the window runs, when the
//! claim is not initialized, and when the pool says `consolidateAfter: Never`. Deleting claims
//! are left alone.
//!
//! Every [`PERIOD`] the claims in the cache are compared with what the condition should be, and
//! only a claim whose condition changes is written: its whole condition list with a status merge
//! patch carrying the `resourceVersion` it was computed from, so a concurrent write of another
//! condition (the lifecycle controller's) is never lost; a conflict is retried at the next scan.
//!
//! Not yet here (the disruption controller's issue): the `Drifted` condition in the operator
//! (`karp disrupt` computes drift itself from the NodePool hash, requirements and the catalog).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use karp_core::disruption::candidates::consolidatable_at;
use karp_core::disruption::{DisruptionSettings, NodeClaimFacts, Timestamp};
use kube::Api;
use tracing::{debug, info_span, warn, Instrument};

use super::writes::patch_claim_conditions;
use super::Context;
use crate::api::nodeclaim::{conditions_with, Condition, NodeClaim};
use crate::api::rfc3339;
use crate::convert::disruption::disruption_settings;
use crate::convert::ObjectRef;

/// How often the conditions are compared with the cache (the latest a condition turns True
/// after its window ends).
pub const PERIOD: Duration = Duration::from_secs(1);

/// The condition type.
pub const CONSOLIDATABLE: &str = "Consolidatable";

fn parse(t: &str) -> Option<Timestamp> {
    t.parse().ok()
}

/// Whether `claim` should be `Consolidatable` at `now` under its pool's `settings`.
#[must_use]
pub fn consolidatable(claim: &NodeClaim, settings: &DisruptionSettings, now: Timestamp) -> bool {
    let Some(initialized) = claim
        .condition("Initialized")
        .filter(|c| c.status == "True")
        .map(|c| parse(&c.last_transition_time).unwrap_or(now))
    else {
        return false;
    };
    let created = claim
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(initialized, crate::convert::disruption::millis);
    let mut facts = NodeClaimFacts::new(claim.nodepool().unwrap_or_default(), created);
    facts.initialized_at = Some(initialized);
    facts.last_pod_event = claim
        .status
        .as_ref()
        .and_then(|s| s.last_pod_event_time.as_deref())
        .and_then(parse);
    consolidatable_at(&facts, settings).is_some_and(|at| now >= at)
}

/// The claim's conditions with `Consolidatable` as it should be, or `None` when unchanged.
#[must_use]
pub fn updated_conditions(claim: &NodeClaim, want: bool, now: &str) -> Option<Vec<Condition>> {
    conditions_with(
        claim,
        CONSOLIDATABLE,
        want.then_some((CONSOLIDATABLE, "")),
        now,
    )
}

/// One comparison of every claim in the cache; returns how many were written.
async fn scan(ctx: &Context) -> usize {
    let now = ctx.settings.clock.now();
    let (at, text) = (Timestamp::from(now), rfc3339(now));
    let mut settings: BTreeMap<String, DisruptionSettings> = BTreeMap::new();
    for np in ctx.stores.nodepools.state() {
        let name = np.metadata.name.clone().unwrap_or_default();
        let origin = ObjectRef {
            file: None,
            kind: "NodePool".into(),
            namespace: None,
            name: name.clone(),
        };
        match disruption_settings(&origin, &np) {
            Ok(s) => {
                settings.insert(name, s);
            }
            // The status controller reports an invalid pool; its claims keep their condition.
            Err(e) => debug!(nodepool = %name, error = %e, "disruption settings not converted"),
        }
    }
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let mut written = 0;
    for claim in ctx.stores.nodeclaims.state() {
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(s) = claim.nodepool().and_then(|p| settings.get(p)) else {
            continue;
        };
        let want = consolidatable(&claim, s, at);
        let Some(conditions) = updated_conditions(&claim, want, &text) else {
            continue;
        };
        let name = claim.metadata.name.clone().unwrap_or_default();
        match patch_claim_conditions(
            &api,
            &name,
            claim.metadata.resource_version.as_deref(),
            &conditions,
        )
        .await
        {
            Ok(()) => {
                written += 1;
                debug!(nodeclaim = %name, consolidatable = want, "condition updated");
            }
            Err(e) => warn!(nodeclaim = %name, error = %e, "updating Consolidatable failed"),
        }
    }
    written
}

/// Keeps `Consolidatable` up to date on every NodeClaim until shutdown.
pub async fn run(ctx: Arc<Context>) {
    super::every(&ctx, PERIOD, || async {
        let written = scan(&ctx).instrument(info_span!("consolidatable")).await;
        if written > 0 {
            debug!(written, "Consolidatable conditions written");
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::nodeclaim::{set_condition, NodeClaimStatus};
    use karp_core::disruption::ConsolidateAfter;
    use serde_json::json;

    fn claim(initialized: Option<&str>, last_event: Option<&str>) -> NodeClaim {
        let mut c: NodeClaim = serde_json::from_value(json!({
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {"name": "c", "labels": {"karpenter.sh/nodepool": "default"},
                         "creationTimestamp": "2026-12-01T08:00:00Z"},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}}
        }))
        .expect("claim parses");
        let mut status = NodeClaimStatus::default();
        if let Some(t) = initialized {
            set_condition(
                &mut status.conditions,
                "Initialized",
                true,
                "Initialized",
                "",
                t,
            );
        }
        status.last_pod_event_time = last_event.map(str::to_string);
        c.status = Some(status);
        c
    }

    fn at(t: &str) -> Timestamp {
        t.parse().expect("time parses")
    }

    fn after(secs: u64) -> DisruptionSettings {
        DisruptionSettings {
            consolidate_after: ConsolidateAfter::After(Duration::from_secs(secs)),
            ..DisruptionSettings::default()
        }
    }

    #[test]
    fn consolidatable_counts_from_the_last_pod_event_else_initialization() {
        let s = after(60);
        let c = claim(Some("2026-12-01T08:01:00Z"), None);
        assert!(!consolidatable(&c, &s, at("2026-12-01T08:01:59Z")));
        assert!(consolidatable(&c, &s, at("2026-12-01T08:02:00Z")));
        let c = claim(Some("2026-12-01T08:01:00Z"), Some("2026-12-01T09:00:00Z"));
        assert!(!consolidatable(&c, &s, at("2026-12-01T09:00:30Z")));
        assert!(consolidatable(&c, &s, at("2026-12-01T09:01:00Z")));
    }

    #[test]
    fn not_initialized_or_never_is_not_consolidatable() {
        let c = claim(None, Some("2026-12-01T09:00:00Z"));
        assert!(!consolidatable(&c, &after(0), at("2026-12-02T00:00:00Z")));
        let never = DisruptionSettings {
            consolidate_after: ConsolidateAfter::Never,
            ..DisruptionSettings::default()
        };
        let c = claim(Some("2026-12-01T08:01:00Z"), None);
        assert!(!consolidatable(&c, &never, at("2026-12-09T00:00:00Z")));
    }

    #[test]
    fn the_condition_is_set_true_or_removed_and_written_only_on_change() {
        let now = "2026-12-01T10:00:00Z";
        let mut c = claim(Some("2026-12-01T08:01:00Z"), None);
        let set = updated_conditions(&c, true, now).expect("set");
        assert!(set
            .iter()
            .any(|x| x.type_ == CONSOLIDATABLE && x.status == "True"));
        assert!(
            set.iter().any(|x| x.type_ == "Initialized"),
            "other conditions kept"
        );
        c.status.as_mut().unwrap().conditions = set;
        assert_eq!(updated_conditions(&c, true, now), None);
        let cleared = updated_conditions(&c, false, now).expect("removed");
        assert!(cleared.iter().all(|x| x.type_ != CONSOLIDATABLE));
        c.status.as_mut().unwrap().conditions = cleared;
        assert_eq!(updated_conditions(&c, false, now), None);
    }
}
