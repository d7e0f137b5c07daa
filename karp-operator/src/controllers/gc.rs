//! Garbage collection, in both directions:
//!
//! - Instances with the cluster's tags that no NodeClaim owns are terminated after a grace
//!   period. A claim owns an instance by its `providerID`; an instance merely tagged with a claim
//!   is owned only while that claim has no `providerID` yet (a launch whose status write is still
//!   to come). A second instance for a claim that already has one (a duplicate launch, a fleet
//!   extra whose terminate failed) is therefore collected, not kept as long as the claim.
//! - NodeClaims whose instance no longer exists are deleted (their pods are planned again), but
//!   only when the claim is registered or was launched long enough ago: EC2 is eventually
//!   consistent, and an instance may be missing from DescribeInstances for a while after
//!   CreateFleet returned it.
//!
//! [`orphans_to_delete`] and [`claims_to_collect`] decide from the listed objects and the time;
//! [`run`] lists, decides, confirms each claim's absence with a direct get, and acts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kube::api::Api;
use tracing::{info, info_span, warn, Instrument};

use super::writes::delete_ignoring_404;
use super::Context;
use crate::api::nodeclaim::NodeClaim;

/// A claim launched this recently is never collected for a missing instance (EC2's eventual
/// consistency after CreateFleet; Karpenter waits 10 s, karp a little longer).
pub const LAUNCH_GRACE: Duration = Duration::from_secs(30);

/// Instances that have been orphans for at least `grace`, given when each was first seen
/// orphaned. `instances` are (provider ID, the claim name it is tagged with); `claims` maps each
/// NodeClaim's name to its `providerID` (if set).
#[must_use]
pub fn orphans_to_delete(
    instances: &[(String, Option<String>)],
    claims: &BTreeMap<String, Option<String>>,
    first_seen: &mut BTreeMap<String, Instant>,
    now: Instant,
    grace: Duration,
) -> Vec<String> {
    let recorded: BTreeSet<&str> = claims.values().flatten().map(String::as_str).collect();
    let mut current = BTreeSet::new();
    let mut out = Vec::new();
    for (provider_id, tagged) in instances {
        let owned = recorded.contains(provider_id.as_str())
            || tagged
                .as_ref()
                .is_some_and(|c| matches!(claims.get(c), Some(None)));
        if owned {
            continue;
        }
        current.insert(provider_id.clone());
        let seen = *first_seen.entry(provider_id.clone()).or_insert(now);
        if now.duration_since(seen) >= grace {
            out.push(provider_id.clone());
        }
    }
    first_seen.retain(|k, _| current.contains(k));
    out
}

/// When the claim's `Launched` condition became true, if it did.
fn launched_at(claim: &NodeClaim) -> Option<SystemTime> {
    let c = claim.condition("Launched").filter(|c| c.status == "True")?;
    let ts: k8s_openapi::jiff::Timestamp = c.last_transition_time.parse().ok()?;
    Some(SystemTime::from(ts))
}

/// The claims (names) whose instance is missing from `live` and that may be collected at
/// `now`: not deleting, with a `providerID`, and registered or launched at least
/// [`LAUNCH_GRACE`] ago.
#[must_use]
pub fn claims_to_collect(
    claims: &[Arc<NodeClaim>],
    live: &BTreeSet<&str>,
    now: SystemTime,
) -> Vec<String> {
    claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| c.provider_id().is_some_and(|p| !live.contains(p)))
        .filter(|c| {
            c.is_true("Registered")
                || launched_at(c)
                    .is_some_and(|t| now.duration_since(t).is_ok_and(|age| age >= LAUNCH_GRACE))
        })
        .filter_map(|c| c.metadata.name.clone())
        .collect()
}

/// Runs garbage collection every `resync` until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let mut first_seen: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        tokio::select! {
            () = ctx.shutdown_requested() => return,
            () = tokio::time::sleep(ctx.settings.resync) => {}
        }
        let span = info_span!("garbage_collect");
        collect_once(&ctx, &mut first_seen).instrument(span).await;
    }
}

async fn collect_once(ctx: &Context, first_seen: &mut BTreeMap<String, Instant>) {
    let instances = match ctx.cloud.list().await {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "listing instances failed");
            return;
        }
    };
    let claims = ctx.stores.nodeclaims.state();
    let by_name: BTreeMap<String, Option<String>> = claims
        .iter()
        .filter_map(|c| {
            let name = c.metadata.name.clone()?;
            Some((name, c.provider_id().map(str::to_string)))
        })
        .collect();
    let listed: Vec<(String, Option<String>)> = instances
        .iter()
        .map(|i| (i.provider_id.clone(), i.nodeclaim.clone()))
        .collect();
    let orphans = orphans_to_delete(
        &listed,
        &by_name,
        first_seen,
        Instant::now(),
        ctx.settings.gc_grace,
    );
    for p in orphans {
        info!(provider_id = %p, "terminating an instance no NodeClaim owns");
        if let Err(e) = ctx.cloud.delete(&p).await {
            if !e.is_not_found() {
                warn!(provider_id = %p, error = %e, "garbage collection failed");
            }
        }
        ctx.metrics
            .inc("karpenter_instances_garbage_collected_total", &[]);
    }
    let live: BTreeSet<&str> = instances.iter().map(|i| i.provider_id.as_str()).collect();
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    for name in claims_to_collect(&claims, &live, SystemTime::now()) {
        let Some(c) = claims
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(&name))
        else {
            continue;
        };
        let Some(p) = c.provider_id() else { continue };
        // Confirm with a direct get (the list may lag behind a launch).
        if !matches!(ctx.cloud.get(p).await, Err(e) if e.is_not_found()) {
            continue;
        }
        info!(nodeclaim = %name, "instance is gone; deleting the NodeClaim");
        ctx.events
            .publish_nodeclaim(
                c,
                "Warning",
                "InstanceTerminated",
                "the instance no longer exists",
            )
            .await;
        if let Err(e) = delete_ignoring_404(&api, &name, "delete NodeClaim").await {
            warn!(nodeclaim = %name, error = %e, "deleting the NodeClaim failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::nodeclaim::{set_condition, NodeClaimStatus};
    use crate::api::rfc3339;

    #[test]
    fn only_orphans_past_the_grace_period_go() {
        let mut seen = BTreeMap::new();
        let t0 = Instant::now();
        let instances = vec![
            ("p1".to_string(), Some("claim-a".to_string())),
            ("p2".to_string(), Some("claim-gone".to_string())),
            ("p3".to_string(), None),
        ];
        // claim-a is launching (no providerID yet); claim-b recorded p3.
        let claims = BTreeMap::from([
            ("claim-a".to_string(), None),
            ("claim-b".to_string(), Some("p3".to_string())),
        ]);
        let g = Duration::from_secs(30);
        assert!(orphans_to_delete(&instances, &claims, &mut seen, t0, g).is_empty());
        let later = t0 + Duration::from_secs(31);
        assert_eq!(
            orphans_to_delete(&instances, &claims, &mut seen, later, g),
            vec!["p2"]
        );
        // Once the orphan is gone it is forgotten.
        assert!(orphans_to_delete(&instances[..1], &claims, &mut seen, later, g).is_empty());
        assert!(seen.is_empty());
    }

    #[test]
    fn a_duplicate_instance_tagged_with_a_claim_that_owns_another_is_collected() {
        let mut seen = BTreeMap::new();
        let t0 = Instant::now();
        let instances = vec![
            ("p1".to_string(), Some("claim-a".to_string())),
            ("p-dup".to_string(), Some("claim-a".to_string())),
        ];
        let claims = BTreeMap::from([("claim-a".to_string(), Some("p1".to_string()))]);
        let g = Duration::from_secs(30);
        assert!(orphans_to_delete(&instances, &claims, &mut seen, t0, g).is_empty());
        assert_eq!(
            orphans_to_delete(&instances, &claims, &mut seen, t0 + g, g),
            vec!["p-dup"]
        );
    }

    fn claim(
        name: &str,
        launched_secs_ago: u64,
        registered: bool,
        now: SystemTime,
    ) -> Arc<NodeClaim> {
        let mut c = NodeClaim::default();
        c.metadata.name = Some(name.into());
        let mut status = NodeClaimStatus {
            provider_id: Some(format!("aws:///z/{name}")),
            ..Default::default()
        };
        let at = rfc3339(now - Duration::from_secs(launched_secs_ago));
        set_condition(
            &mut status.conditions,
            "Launched",
            true,
            "Launched",
            "",
            &at,
        );
        set_condition(
            &mut status.conditions,
            "Registered",
            registered,
            "Registered",
            "",
            &at,
        );
        c.status = Some(status);
        Arc::new(c)
    }

    #[test]
    fn a_claim_whose_fresh_instance_is_not_listed_yet_survives() {
        let now = SystemTime::now();
        let claims = [
            claim("fresh", 5, false, now),
            claim("old", 120, false, now),
            claim("registered", 1, true, now),
            claim("listed", 120, false, now),
        ];
        let live = BTreeSet::from(["aws:///z/listed"]);
        assert_eq!(
            claims_to_collect(&claims, &live, now),
            ["old", "registered"]
        );
        // Half a minute later the fresh one is no longer protected.
        let later = now + LAUNCH_GRACE;
        assert_eq!(
            claims_to_collect(&claims, &live, later),
            ["fresh", "old", "registered"]
        );
    }
}
