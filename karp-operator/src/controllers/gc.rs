//! Garbage collection: instances with the cluster's tags but no NodeClaim are terminated after a
//! grace period (a launch in flight has its claim already, so only leaks qualify); NodeClaims whose
//! launched instance no longer exists are deleted (their pods are planned again).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use kube::api::Api;
use tracing::{info, info_span, warn, Instrument};

use super::writes::delete_ignoring_404;
use super::Context;
use crate::api::nodeclaim::NodeClaim;

/// Instances that have been orphans for at least `grace`, given when each was first seen orphaned.
#[must_use]
pub fn orphans_to_delete(
    instances: &[(String, Option<String>)],
    claims_by_provider: &BTreeSet<String>,
    claim_names: &BTreeSet<String>,
    first_seen: &mut BTreeMap<String, Instant>,
    now: Instant,
    grace: std::time::Duration,
) -> Vec<String> {
    let mut current = BTreeSet::new();
    let mut out = Vec::new();
    for (provider_id, claim) in instances {
        let owned = claims_by_provider.contains(provider_id)
            || claim.as_ref().is_some_and(|c| claim_names.contains(c));
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

/// Runs garbage collection every `resync` until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let mut first_seen: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        tokio::select! {
            () = ctx.shutdown_requested() => return,
            () = tokio::time::sleep(ctx.settings.resync) => {}
        }
        let span = info_span!("garbage_collect");
        async {
            let instances = match ctx.cloud.list().await {
                Ok(i) => i,
                Err(e) => {
                    warn!(error = %e, "listing instances failed");
                    return;
                }
            };
            let claims = ctx.stores.nodeclaims.state();
            let by_provider: BTreeSet<String> = claims
                .iter()
                .filter_map(|c| c.provider_id().map(str::to_string))
                .collect();
            let names: BTreeSet<String> = claims
                .iter()
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            let listed: Vec<(String, Option<String>)> = instances
                .iter()
                .map(|i| (i.provider_id.clone(), i.nodeclaim.clone()))
                .collect();
            for p in orphans_to_delete(
                &listed,
                &by_provider,
                &names,
                &mut first_seen,
                Instant::now(),
                ctx.settings.gc_grace,
            ) {
                info!(provider_id = %p, "terminating an instance without a NodeClaim");
                if let Err(e) = ctx.cloud.delete(&p).await {
                    if !e.is_not_found() {
                        warn!(provider_id = %p, error = %e, "garbage collection failed");
                    }
                }
                ctx.metrics
                    .inc("karpenter_instances_garbage_collected_total", &[]);
            }
            // Claims whose instance is gone.
            let live: BTreeSet<&str> = instances.iter().map(|i| i.provider_id.as_str()).collect();
            let api: Api<NodeClaim> = Api::all(ctx.client.clone());
            for c in &claims {
                let Some(p) = c.provider_id() else { continue };
                if c.metadata.deletion_timestamp.is_some() || live.contains(p) {
                    continue;
                }
                // Confirm with a direct Get (list may lag behind a launch).
                if matches!(ctx.cloud.get(p).await, Err(e) if e.is_not_found()) {
                    let name = c.metadata.name.clone().unwrap_or_default();
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
        }
        .instrument(span)
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_orphans_past_the_grace_period_go() {
        let mut seen = BTreeMap::new();
        let t0 = Instant::now();
        let instances = vec![
            ("p1".to_string(), Some("claim-a".to_string())),
            ("p2".to_string(), Some("claim-gone".to_string())),
            ("p3".to_string(), None),
        ];
        let by_provider = BTreeSet::from(["p3".to_string()]);
        let names = BTreeSet::from(["claim-a".to_string()]);
        let g = Duration::from_secs(30);
        assert!(orphans_to_delete(&instances, &by_provider, &names, &mut seen, t0, g).is_empty());
        let later = t0 + Duration::from_secs(31);
        assert_eq!(
            orphans_to_delete(&instances, &by_provider, &names, &mut seen, later, g),
            vec!["p2"]
        );
        // Once the orphan is gone it is forgotten.
        assert!(
            orphans_to_delete(&instances[..1], &by_provider, &names, &mut seen, later, g)
                .is_empty()
        );
        assert!(seen.is_empty());
    }
}
