//! NodeClaim expiration: a NodeClaim whose `spec.expireAfter` has passed since its creation is
//! deleted, as Karpenter's expiration controller does. Expiration is forceful: no disruption
//! budget, no do-not-disrupt pod or PDB holds it back at this step (the termination controller
//! still drains through the Eviction API, up to the claim's `terminationGracePeriod`), and the
//! provisioner replaces the capacity the pods then need.
//!
//! `expireAfter: Never` never expires; a claim without the field expires after Karpenter's CRD
//! default, 720 h. Each deletion counts in `karpenter_nodeclaims_disrupted_total` with reason
//! `expired` and is recorded as a `Disrupted` Event on the NodeClaim.

use std::sync::Arc;
use std::time::Duration;

use karp_core::disruption::time::parse_go_duration;
use karp_core::disruption::Timestamp;
use kube::api::DeleteParams;
use kube::{Api, Resource};
use tracing::{info, info_span, warn, Instrument};

use super::writes::is_404;
use super::Context;
use crate::api::nodeclaim::NodeClaim;

/// How often claims are checked (the latest a claim is deleted after it expires).
pub const PERIOD: Duration = Duration::from_secs(1);

/// Karpenter's CRD default for `expireAfter`.
pub const DEFAULT_EXPIRE_AFTER: Duration = Duration::from_secs(720 * 3600);

/// When `claim` expires: `Ok(None)` for `Never`; an error naming the field when it does not parse.
///
/// # Errors
/// A message naming `spec.expireAfter` and the value.
pub fn expires_at(claim: &NodeClaim) -> Result<Option<Timestamp>, String> {
    let Some(created) = claim.metadata.creation_timestamp.as_ref() else {
        return Ok(None);
    };
    let created = crate::convert::disruption::millis(created);
    let lifetime = match claim.spec.expire_after.as_deref() {
        Some("Never") => return Ok(None),
        Some(d) => parse_go_duration(d).map_err(|e| format!("spec.expireAfter {d:?}: {e}"))?,
        None => DEFAULT_EXPIRE_AFTER,
    };
    Ok(Some(created.plus(lifetime)))
}

/// Whether `claim` is expired at `now` (and not already deleting).
#[must_use]
pub fn expired(claim: &NodeClaim, now: Timestamp) -> bool {
    claim.metadata.deletion_timestamp.is_none()
        && expires_at(claim).is_ok_and(|at| at.is_some_and(|at| now >= at))
}

async fn scan(ctx: &Context) {
    let now = Timestamp::from(ctx.settings.clock.now());
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    for claim in ctx.stores.nodeclaims.state() {
        if let Err(e) = expires_at(&claim) {
            warn!(nodeclaim = ?claim.metadata.name, error = %e, "expiration not evaluated");
            continue;
        }
        if !expired(&claim, now) {
            continue;
        }
        let name = claim.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                info!(nodeclaim = %name, "expired: deleting");
                ctx.metrics.inc(
                    "karpenter_nodeclaims_disrupted_total",
                    &[
                        ("reason", "expired"),
                        ("nodepool", claim.nodepool().unwrap_or_default()),
                        (
                            "capacity_type",
                            claim
                                .metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get(karp_core::labels::CAPACITY_TYPE))
                                .map_or("", String::as_str),
                        ),
                    ],
                );
                ctx.events
                    .publish(
                        &claim.object_ref(&()),
                        "Normal",
                        "Disrupted",
                        &format!(
                            "Disrupting NodeClaim: Expired (expireAfter {})",
                            claim.spec.expire_after.as_deref().unwrap_or("720h")
                        ),
                    )
                    .await;
            }
            Err(e) if is_404(&e) => {}
            Err(e) => warn!(nodeclaim = %name, error = %e, "deleting an expired NodeClaim failed"),
        }
    }
}

/// Deletes expired NodeClaims until shutdown.
pub async fn run(ctx: Arc<Context>) {
    super::every(&ctx, PERIOD, || {
        scan(&ctx).instrument(info_span!("expiration"))
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(expire_after: Option<&str>) -> NodeClaim {
        let mut c: NodeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {"name": "c", "creationTimestamp": "2026-12-01T08:00:00Z"},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}}
        }))
        .expect("claim parses");
        c.spec.expire_after = expire_after.map(str::to_string);
        c
    }

    fn at(t: &str) -> Timestamp {
        t.parse().expect("time parses")
    }

    #[test]
    fn claims_expire_after_their_lifetime_from_creation() {
        let c = claim(Some("1h30m"));
        assert!(!expired(&c, at("2026-12-01T09:29:59Z")));
        assert!(expired(&c, at("2026-12-01T09:30:00Z")));
    }

    #[test]
    fn never_never_expires_and_the_default_is_720h() {
        assert!(!expired(&claim(Some("Never")), at("2099-01-01T00:00:00Z")));
        let c = claim(None);
        assert!(!expired(&c, at("2026-12-31T07:59:59Z")));
        assert!(expired(&c, at("2026-12-31T08:00:00Z")));
    }

    #[test]
    fn an_unparsable_lifetime_is_an_error_naming_the_field_and_never_expires() {
        let c = claim(Some("soon"));
        let e = expires_at(&c).unwrap_err();
        assert!(e.contains("spec.expireAfter") && e.contains("soon"), "{e}");
        assert!(!expired(&c, at("2099-01-01T00:00:00Z")));
    }

    #[test]
    fn deleting_claims_are_not_expired_again() {
        let mut c = claim(Some("1s"));
        c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(!expired(&c, at("2099-01-01T00:00:00Z")));
    }
}
