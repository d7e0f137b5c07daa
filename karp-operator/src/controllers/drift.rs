//! The `Drifted` condition of NodeClaims, as Karpenter's `nodeclaim.disruption` drift check.
//!
//! Every [`PERIOD`], the disruption planner's input is built from the live caches with the same
//! snapshot builder as the provisioner (instance types from the cloud per node class) and with
//! every claim's own `Drifted` condition left out, so each reason is judged afresh: the NodePool
//! hash (`karpenter.sh/nodepool-hash` differing under equal `karpenter.sh/nodepool-hash-version`
//! annotations on the pool and the claim), requirements the node no longer satisfies
//! (`RequirementsDrifted`), or its instance type or offering gone from the catalog
//! (`InstanceTypeNotFound`). A launched claim with a reason gets `Drifted=True` with that reason;
//! a claim with no reason, or not launched, has the condition removed. Only changes are written,
//! with the `resourceVersion` the list was computed from.
//!
//! The hash is karp's ([`NodePoolSpec::template_hash`], version [`KARP_HASH_VERSION`]): the
//! status controller stamps it on NodePools, the provisioner on new NodeClaims, and a claim
//! carrying another version (made by Karpenter, or before karp stamped hashes) and not drifted
//! gets its pool's current hash here ([`rehash`]), so a migration from Karpenter re-annotates
//! claims instead of drifting them all at once.
//!
//! A launched claim with none of those reasons is asked of the cloud provider
//! ([`CloudProvider::is_drifted`](karp_core::cloud::CloudProvider::is_drifted): karp-aws's
//! `AMIDrift`, `SubnetDrift`, `SecurityGroupDrift`, ...) at most once per
//! `OperatorSettings::cloud_drift_period` (5 min; each check is an API call per instance).
//!
//! [`NodePoolSpec::template_hash`]: crate::api::nodepool::NodePoolSpec::template_hash

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use karp_core::disruption::{DisruptionInput, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::Api;
use tracing::{debug, info, info_span, warn, Instrument};

use super::provisioner::{instance_types, is_provisionable};
use super::writes::patch_claim_conditions;
use super::{Context, LiveObjects};
use crate::api::nodeclaim::{conditions_with, Condition, NodeClaim};
use crate::api::nodepool::{NodePool, KARP_HASH_VERSION, NODEPOOL_HASH, NODEPOOL_HASH_VERSION};
use crate::api::rfc3339;
use crate::convert::disruption::disruption_input;
use crate::convert::{build_snapshot, BuildOptions, ConvertError, TypesByNodeClass};

/// How often drift is judged.
pub const PERIOD: Duration = Duration::from_secs(5);

/// The condition type.
pub const DRIFTED: &str = "Drifted";

/// The planner's input from live objects (pods bound or waiting for capacity, every node, claim,
/// pool, DaemonSet and PodDisruptionBudget), with the cloud's instance types per node class.
///
/// # Errors
/// [`ConvertError`] when an object the input needs does not convert (objects that fail alone
/// are skipped, as in provisioning).
pub fn live_input(
    objects: &LiveObjects,
    types: BTreeMap<String, Vec<Arc<karp_core::cloud::InstanceType>>>,
    now: Timestamp,
) -> Result<DisruptionInput, ConvertError> {
    let input = objects.cluster_objects(|p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() || is_provisionable(p)
    });
    let options = BuildOptions { skip_invalid: true };
    let converted = build_snapshot(&input, &mut TypesByNodeClass(types), &options)?;
    let pdbs: Vec<_> = objects
        .pdbs
        .iter()
        .map(|p| crate::convert::Input::live(Arc::clone(p)))
        .collect();
    disruption_input(&input, &pdbs, converted, now)
}

/// `objects` with every NodeClaim's `Drifted` condition removed (drift is judged afresh).
#[must_use]
pub fn without_drifted(objects: &LiveObjects) -> LiveObjects {
    let mut out = objects.clone();
    out.nodeclaims = out
        .nodeclaims
        .iter()
        .map(|c| {
            if c.condition(DRIFTED).is_none() {
                return Arc::clone(c);
            }
            let mut c = (**c).clone();
            if let Some(s) = c.status.as_mut() {
                s.conditions.retain(|x| x.type_ != DRIFTED);
            }
            Arc::new(c)
        })
        .collect();
    out
}

/// The claim's conditions with `Drifted` as it should be (`reason`: drifted with it; `None`:
/// removed), or `None` when unchanged. A claim that is not launched is never drifted.
#[must_use]
pub fn updated_conditions(
    claim: &NodeClaim,
    reason: Option<&str>,
    now: &str,
) -> Option<Vec<Condition>> {
    let reason = reason.filter(|_| claim.is_true("Launched"));
    conditions_with(claim, DRIFTED, reason.map(|r| (r, r)), now)
}

/// The hash annotations a claim of `pool` should get when its hash version is not karp's and it
/// is not drifted; `None` when it already carries karp's version (or is drifted).
#[must_use]
pub fn rehash(claim: &NodeClaim, pool: &NodePool) -> Option<BTreeMap<String, String>> {
    let version = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODEPOOL_HASH_VERSION));
    if version.map(String::as_str) == Some(KARP_HASH_VERSION) || claim.is_true(DRIFTED) {
        return None;
    }
    Some(BTreeMap::from([
        (NODEPOOL_HASH.to_string(), pool.spec.template_hash()),
        (
            NODEPOOL_HASH_VERSION.to_string(),
            KARP_HASH_VERSION.to_string(),
        ),
    ]))
}

async fn rehash_claims(objects: &LiveObjects, api: &Api<NodeClaim>) {
    for claim in &objects.nodeclaims {
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(pool) = claim.nodepool().and_then(|p| {
            objects
                .nodepools
                .iter()
                .find(|np| np.metadata.name.as_deref() == Some(p))
        }) else {
            continue;
        };
        let Some(want) = rehash(claim, pool) else {
            continue;
        };
        let name = claim.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({ "metadata": { "annotations": want } });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => info!(nodeclaim = %name, "re-annotated with karp's NodePool hash"),
            Err(e) => warn!(nodeclaim = %name, error = %e, "re-annotating the hash failed"),
        }
    }
}

/// The cloud provider's last answer per claim: when it was asked and its reason.
type CloudDrift = BTreeMap<String, (std::time::Instant, Option<String>)>;

/// The cloud's drift reason for `claim`, asked again once the cached answer is older than the
/// period (a failed check keeps the previous answer).
async fn cloud_reason(ctx: &Context, claim: &NodeClaim, cache: &mut CloudDrift) -> Option<String> {
    let name = claim.metadata.name.clone()?;
    let provider_id = claim.provider_id()?.to_string();
    if let Some((at, reason)) = cache.get(&name) {
        if at.elapsed() < ctx.settings.cloud_drift_period {
            return reason.clone();
        }
    }
    let labels = claim.metadata.labels.clone().unwrap_or_default();
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let instance = karp_core::cloud::Instance {
        provider_id,
        nodeclaim: Some(name.clone()),
        instance_type: get(karp_core::labels::INSTANCE_TYPE),
        zone: get(karp_core::labels::ZONE),
        capacity_type: get(karp_core::labels::CAPACITY_TYPE),
        labels: labels.clone(),
    };
    match ctx.cloud.is_drifted(&instance).await {
        Ok(reason) => {
            cache.insert(name, (std::time::Instant::now(), reason.clone()));
            reason
        }
        Err(e) => {
            debug!(nodeclaim = %name, error = %e, "cloud drift check failed");
            cache.get(&name).and_then(|(_, r)| r.clone())
        }
    }
}

async fn scan(ctx: &Context, cache: &mut CloudDrift) {
    let objects = ctx.stores.objects();
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    rehash_claims(&objects, &api).await;
    let types = instance_types(ctx, &objects).await;
    let now = ctx.settings.clock.now();
    // Drift depends on nodes, claims, pools and instance types only: pods would only cost time
    // (tens of thousands of them while a large Deployment waits for capacity).
    let mut judged = without_drifted(&objects);
    judged.pods = Vec::new();
    let input = match live_input(&judged, types, Timestamp::from(now)) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "drift not judged: the cluster does not convert");
            return;
        }
    };
    let reasons: BTreeMap<&str, &str> = input
        .nodes
        .values()
        .filter_map(|f| {
            let claim = f.nodeclaim.as_deref()?;
            Some((claim, f.drifted.as_ref().map_or("", |d| d.reason.as_str())))
        })
        .collect();
    let text = rfc3339(now);
    for claim in &objects.nodeclaims {
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = claim.metadata.name.clone().unwrap_or_default();
        // A claim without a node yet is judged when it registers.
        let Some(&reason) = reasons.get(name.as_str()) else {
            continue;
        };
        let cloud = if reason.is_empty() && claim.is_true("Launched") {
            cloud_reason(ctx, claim, cache).await
        } else {
            None
        };
        let reason = (!reason.is_empty()).then_some(reason).or(cloud.as_deref());
        let Some(conditions) = updated_conditions(claim, reason, &text) else {
            continue;
        };
        let rv = claim.metadata.resource_version.as_deref();
        match patch_claim_conditions(&api, &name, rv, &conditions).await {
            Ok(()) => match reason {
                Some(r) => info!(nodeclaim = %name, reason = r, "drifted"),
                None => debug!(nodeclaim = %name, "no longer drifted"),
            },
            Err(e) => warn!(nodeclaim = %name, error = %e, "updating Drifted failed"),
        }
    }
}

/// Keeps `Drifted` up to date on every NodeClaim until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let cache = tokio::sync::Mutex::new(CloudDrift::new());
    super::every(&ctx, PERIOD, || async {
        let mut cache = cache.lock().await;
        let live = ctx.stores.nodeclaim_names();
        cache.retain(|name, _| live.contains(name));
        scan(&ctx, &mut cache).instrument(info_span!("drift")).await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::nodeclaim::{set_condition, NodeClaimStatus};

    fn claim(launched: bool, drifted: Option<&str>) -> NodeClaim {
        let mut c: NodeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {"name": "c"},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}}
        }))
        .expect("claim parses");
        let mut status = NodeClaimStatus::default();
        let t = "2026-12-01T08:00:00Z";
        if launched {
            set_condition(&mut status.conditions, "Launched", true, "Launched", "", t);
        }
        if let Some(r) = drifted {
            set_condition(&mut status.conditions, DRIFTED, true, r, r, t);
        }
        c.status = Some(status);
        c
    }

    const NOW: &str = "2026-12-01T09:00:00Z";

    #[test]
    fn drift_is_set_with_its_reason_and_removed_when_gone() {
        let set =
            updated_conditions(&claim(true, None), Some("RequirementsDrifted"), NOW).expect("set");
        let d = set.iter().find(|c| c.type_ == DRIFTED).expect("Drifted");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "RequirementsDrifted")
        );
        assert!(
            set.iter().any(|c| c.type_ == "Launched"),
            "other conditions kept"
        );
        let same = claim(true, Some("RequirementsDrifted"));
        assert_eq!(
            updated_conditions(&same, Some("RequirementsDrifted"), NOW),
            None
        );
        let other =
            updated_conditions(&same, Some("InstanceTypeNotFound"), NOW).expect("new reason");
        assert!(other
            .iter()
            .any(|c| c.type_ == DRIFTED && c.reason == "InstanceTypeNotFound"));
        let cleared = updated_conditions(&same, None, NOW).expect("removed");
        assert!(cleared.iter().all(|c| c.type_ != DRIFTED));
        assert_eq!(updated_conditions(&claim(true, None), None, NOW), None);
    }

    fn pool(labels: &[(&str, &str)]) -> NodePool {
        let mut np: NodePool = serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodePool",
            "metadata": {"name": "default"},
            "spec": {"template": {"spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                "taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}],
                "requirements": []}}}
        }))
        .expect("pool parses");
        for (k, v) in labels {
            np.spec
                .template
                .metadata
                .labels
                .insert((*k).into(), (*v).into());
        }
        np
    }

    #[test]
    fn the_template_hash_follows_static_fields_only() {
        let a = pool(&[("team", "x")]);
        assert_eq!(
            a.spec.template_hash(),
            pool(&[("team", "x")]).spec.template_hash()
        );
        assert_ne!(
            a.spec.template_hash(),
            pool(&[("team", "y")]).spec.template_hash()
        );
        let mut reordered = a.clone();
        reordered.spec.template.spec.taints.reverse();
        assert_eq!(
            a.spec.template_hash(),
            reordered.spec.template_hash(),
            "taint order"
        );
        let mut behavioural = a.clone();
        behavioural.spec.template.spec.expire_after =
            Some(crate::api::nodepool::FlexString("1h".into()));
        assert_eq!(a.spec.template_hash(), behavioural.spec.template_hash());
    }

    #[test]
    fn claims_of_another_hash_version_are_rehashed_unless_drifted() {
        let np = pool(&[]);
        let mut c = claim(true, None);
        let want = rehash(&c, &np).expect("no version yet");
        assert_eq!(want[NODEPOOL_HASH_VERSION], KARP_HASH_VERSION);
        assert_eq!(want[NODEPOOL_HASH], np.spec.template_hash());
        c.metadata.annotations = Some(BTreeMap::from([
            (NODEPOOL_HASH.to_string(), "123".to_string()),
            (NODEPOOL_HASH_VERSION.to_string(), "v3".to_string()),
        ]));
        assert!(
            rehash(&c, &np).is_some(),
            "Karpenter's version is re-annotated"
        );
        c.metadata.annotations = Some(want);
        assert_eq!(rehash(&c, &np), None);
        let drifted = claim(true, Some("RequirementsDrifted"));
        assert_eq!(rehash(&drifted, &np), None);
    }

    #[test]
    fn the_live_input_carries_pools_and_pod_disruption_budgets() {
        let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}
            }))
            .expect("pdb parses");
        let objects = LiveObjects {
            nodepools: vec![Arc::new(pool(&[]))],
            pdbs: vec![Arc::new(pdb)],
            ..LiveObjects::default()
        };
        let input = live_input(&objects, BTreeMap::new(), Timestamp(0)).expect("converts");
        assert_eq!(input.pdbs.len(), 1);
        assert!(input.pools.contains_key("default"));
    }

    #[test]
    fn a_claim_that_is_not_launched_is_not_drifted() {
        assert_eq!(
            updated_conditions(&claim(false, None), Some("RequirementsDrifted"), NOW),
            None
        );
        let stale = claim(false, Some("RequirementsDrifted"));
        let cleared =
            updated_conditions(&stale, Some("RequirementsDrifted"), NOW).expect("removed");
        assert!(cleared.iter().all(|c| c.type_ != DRIFTED));
    }
}
