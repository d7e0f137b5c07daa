//! NodePool status (resources and node counts of its nodes, `Ready` from its node class) and
//! EC2NodeClass status (resolved by the cloud's [`super::NodeClassResolver`], with a finalizer so
//! what the cloud created for it is cleaned up when it is deleted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{info_span, warn, Instrument};

use super::writes::{add_finalizer, remove_finalizer};
use super::Context;
use crate::api::ec2nodeclass::EC2NodeClassObject;
use crate::api::nodepool::{NodePool, KARP_HASH_VERSION, NODEPOOL_HASH, NODEPOOL_HASH_VERSION};
use crate::api::rfc3339;
use crate::convert::nodeclaim::{parse_quantities, quantities};

/// The finalizer karp puts on EC2NodeClasses.
pub const NODECLASS_FINALIZER: &str = "karpenter.k8s.aws/termination";

/// Re-resolve a Ready node class this often (AMIs, subnets and security groups change slowly;
/// a spec change re-resolves at once).
pub const RESOLVE_READY_TTL: Duration = Duration::from_secs(300);
/// Retry a node class that is not Ready this often.
pub const RESOLVE_NOT_READY_TTL: Duration = Duration::from_secs(15);

/// When a node class was last resolved, at which generation, and whether it was Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// `metadata.generation` resolved.
    pub generation: Option<i64>,
    /// When.
    pub at: Instant,
    /// Whether the result was Ready.
    pub ready: bool,
}

/// Whether a node class must be resolved again at `now` (pure): never resolved, its spec
/// changed, or its result is older than its TTL.
#[must_use]
pub fn needs_resolve(last: Option<&Resolved>, generation: Option<i64>, now: Instant) -> bool {
    match last {
        None => true,
        Some(r) if r.generation != generation => true,
        Some(r) => {
            let ttl = if r.ready {
                RESOLVE_READY_TTL
            } else {
                RESOLVE_NOT_READY_TTL
            };
            now.duration_since(r.at) >= ttl
        }
    }
}

/// The NodePool status karp wants (pure): resources and node count of its nodes, and
/// `Ready` / `NodeClassReady` conditions whose `lastTransitionTime` is kept from `current` unless
/// their status changed. `None` when `current` already says exactly this.
#[must_use]
pub fn nodepool_status(
    resources: &BTreeMap<String, String>,
    nodes: i64,
    class: Option<&str>,
    class_ready: bool,
    generation: Option<i64>,
    current: Option<&serde_json::Value>,
    now: &str,
) -> Option<serde_json::Value> {
    let message = if class_ready {
        String::new()
    } else {
        format!("EC2NodeClass {:?} is not ready", class.unwrap_or_default())
    };
    let status = if class_ready { "True" } else { "False" };
    let transition = |type_: &str| -> String {
        current
            .and_then(|c| c["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .filter(|c| c["status"] == status)
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or(now)
            .to_string()
    };
    let desired = json!({
        "resources": resources,
        "nodes": nodes,
        "conditions": [
            {
                "type": "Ready",
                "status": status,
                "reason": if class_ready { "Ready" } else { "NodeClassNotReady" },
                "message": message,
                "lastTransitionTime": transition("Ready"),
                "observedGeneration": generation,
            },
            {
                "type": "NodeClassReady",
                "status": status,
                "reason": if class_ready { "NodeClassReady" } else { "NodeClassNotReady" },
                "message": message,
                "lastTransitionTime": transition("NodeClassReady"),
                "observedGeneration": generation,
            }
        ]
    });
    let unchanged = current.is_some_and(|c| {
        desired
            .as_object()
            .is_some_and(|d| d.iter().all(|(k, v)| c.get(k) == Some(v)))
    });
    (!unchanged).then_some(desired)
}

async fn nodeclasses(ctx: &Context, resolved: &mut BTreeMap<String, Resolved>) {
    let api: Api<EC2NodeClassObject> = Api::all(ctx.client.clone());
    let classes = ctx.stores.nodeclasses.state();
    resolved.retain(|name, _| {
        classes
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(name.as_str()))
    });
    for nc in classes {
        let name = nc.metadata.name.clone().unwrap_or_default();
        if nc.metadata.deletion_timestamp.is_some() {
            // Wait for its NodeClaims to go, then clean up.
            let in_use = ctx.stores.nodeclaims.state().iter().any(|c| {
                c.spec.node_class_ref.as_ref().map(|r| r.name.as_str()) == Some(name.as_str())
            });
            if in_use {
                continue;
            }
            if let Err(e) = ctx.resolver.delete(&nc.to_nodeclass()).await {
                warn!(nodeclass = %name, error = %e, "node class cleanup failed");
                continue;
            }
            if let Err(e) = remove_finalizer(&api, &nc, NODECLASS_FINALIZER).await {
                warn!(nodeclass = %name, error = %e, "removing the finalizer failed");
            }
            continue;
        }
        if let Err(e) = add_finalizer(&api, &nc, NODECLASS_FINALIZER).await {
            warn!(nodeclass = %name, error = %e, "adding the finalizer failed");
            continue;
        }
        let generation = nc.metadata.generation;
        if !needs_resolve(resolved.get(&name), generation, Instant::now()) {
            continue;
        }
        match ctx.resolver.resolve(&nc.to_nodeclass()).await {
            Ok(mut status) => {
                let ready = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                resolved.insert(
                    name.clone(),
                    Resolved {
                        generation,
                        at: Instant::now(),
                        ready,
                    },
                );
                // Keep transition times of unchanged conditions.
                let old = nc.status.clone().unwrap_or_default();
                let now = rfc3339(SystemTime::now());
                for c in &mut status.conditions {
                    let prev = old.conditions.iter().find(|o| o.type_ == c.type_);
                    c.last_transition_time = match prev {
                        Some(p) if p.status == c.status => p.last_transition_time.clone(),
                        _ => Some(now.clone()),
                    };
                    c.observed_generation = nc.metadata.generation;
                    if c.message.is_none() {
                        c.message = Some(String::new());
                    }
                }
                if Some(&status) == nc.status.as_ref() {
                    continue;
                }
                if let Err(e) = api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await
                {
                    warn!(nodeclass = %name, error = %e, "status update failed");
                }
            }
            Err(e) => warn!(nodeclass = %name, error = %e, "node class resolution failed"),
        }
    }
}

/// The hash annotations `np` should carry (see [`NodePoolSpec::template_hash`]), when it does not
/// carry them yet.
///
/// [`NodePoolSpec::template_hash`]: crate::api::nodepool::NodePoolSpec::template_hash
#[must_use]
pub fn missing_hash(np: &NodePool) -> Option<BTreeMap<String, String>> {
    let want = BTreeMap::from([
        (NODEPOOL_HASH.to_string(), np.spec.template_hash()),
        (
            NODEPOOL_HASH_VERSION.to_string(),
            KARP_HASH_VERSION.to_string(),
        ),
    ]);
    let have = np.metadata.annotations.as_ref();
    let current = want
        .iter()
        .all(|(k, v)| have.and_then(|a| a.get(k)) == Some(v));
    (!current).then_some(want)
}

/// Stamp karp's template hash on a NodePool whose annotations lack or miss it.
async fn stamp_hash(api: &Api<NodePool>, np: &NodePool) {
    let Some(want) = missing_hash(np) else {
        return;
    };
    let name = np.metadata.name.clone().unwrap_or_default();
    let patch = json!({ "metadata": { "annotations": want } });
    if let Err(e) = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        warn!(nodepool = %name, error = %e, "stamping the template hash failed");
    }
}

async fn nodepools(ctx: &Context) {
    let api: Api<NodePool> = Api::all(ctx.client.clone());
    let nodes = ctx.stores.nodes.state();
    let classes = ctx.stores.nodeclasses.state();
    for np in ctx.stores.nodepools.state() {
        let name = np.metadata.name.clone().unwrap_or_default();
        stamp_hash(&api, &np).await;
        let mut total = karp_core::resources::Resources::new();
        let mut count = 0i64;
        for n in &nodes {
            let pool = n
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(karp_core::labels::NODEPOOL));
            if pool != Some(&name) {
                continue;
            }
            count += 1;
            let cap: BTreeMap<String, String> = n
                .status
                .as_ref()
                .and_then(|s| s.capacity.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            total = total.plus(&parse_quantities(&cap));
        }
        let mut resources = quantities(&total);
        resources.insert("nodes".into(), count.to_string());
        for (k, v) in &resources {
            if let Ok(q) = v.parse::<karp_core::resources::Quantity>() {
                #[allow(clippy::cast_precision_loss)]
                let value = q.value_ceil() as f64;
                ctx.metrics.set(
                    "karpenter_nodepools_usage",
                    &[("nodepool", &name), ("resource_type", k)],
                    value,
                );
            }
        }
        let class = np
            .spec
            .template
            .spec
            .node_class_ref
            .as_ref()
            .map(|r| r.name.clone());
        let class_ready = class.as_ref().is_some_and(|c| {
            classes.iter().any(|nc| {
                nc.metadata.name.as_ref() == Some(c)
                    && nc.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|x| x.type_ == "Ready" && x.status == "True")
                    })
            })
        });
        let Some(status) = nodepool_status(
            &resources,
            count,
            class.as_deref(),
            class_ready,
            np.metadata.generation,
            np.status.as_ref(),
            &rfc3339(SystemTime::now()),
        ) else {
            continue;
        };
        let patch = json!({ "status": status });
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            warn!(nodepool = %name, error = %e, "status update failed");
        }
    }
}

/// Refreshes node class and node pool status until shutdown (first at once, then every resync):
/// node classes are resolved again only when their spec changed or their result expired, and
/// status is written only when it changed.
pub async fn run(ctx: Arc<Context>) {
    let mut resolved: BTreeMap<String, Resolved> = BTreeMap::new();
    loop {
        nodeclasses(&ctx, &mut resolved)
            .instrument(info_span!("nodeclass_status"))
            .await;
        nodepools(&ctx)
            .instrument(info_span!("nodepool_status"))
            .await;
        let period = ctx.settings.resync.min(std::time::Duration::from_secs(2));
        tokio::select! {
            () = ctx.shutdown_requested() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_classes_are_resolved_again_only_on_change_or_expiry() {
        let t0 = Instant::now();
        assert!(needs_resolve(None, Some(1), t0));
        let ready = Resolved {
            generation: Some(1),
            at: t0,
            ready: true,
        };
        assert!(!needs_resolve(
            Some(&ready),
            Some(1),
            t0 + Duration::from_secs(2)
        ));
        assert!(needs_resolve(
            Some(&ready),
            Some(2),
            t0 + Duration::from_secs(2)
        ));
        assert!(needs_resolve(Some(&ready), Some(1), t0 + RESOLVE_READY_TTL));
        let failing = Resolved {
            ready: false,
            ..ready
        };
        assert!(!needs_resolve(
            Some(&failing),
            Some(1),
            t0 + Duration::from_secs(2)
        ));
        assert!(needs_resolve(
            Some(&failing),
            Some(1),
            t0 + RESOLVE_NOT_READY_TTL
        ));
    }

    #[test]
    fn an_unchanged_nodepool_status_is_not_written_again() {
        let resources = BTreeMap::from([("cpu".to_string(), "4".to_string())]);
        let first =
            nodepool_status(&resources, 2, Some("default"), true, Some(1), None, "t1").unwrap();
        assert_eq!(first["conditions"][0]["lastTransitionTime"], "t1");
        // Same facts later: nothing to write.
        assert!(nodepool_status(
            &resources,
            2,
            Some("default"),
            true,
            Some(1),
            Some(&first),
            "t2"
        )
        .is_none());
        // A new node: written, transition times kept.
        let second = nodepool_status(
            &resources,
            3,
            Some("default"),
            true,
            Some(1),
            Some(&first),
            "t3",
        )
        .unwrap();
        assert_eq!(second["conditions"][0]["lastTransitionTime"], "t1");
        // The class goes not ready: the conditions transition now.
        let third = nodepool_status(
            &resources,
            3,
            Some("default"),
            false,
            Some(1),
            Some(&second),
            "t4",
        )
        .unwrap();
        assert_eq!(third["conditions"][0]["lastTransitionTime"], "t4");
        assert_eq!(third["conditions"][1]["status"], "False");
    }
}
