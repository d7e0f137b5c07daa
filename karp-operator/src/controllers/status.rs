//! NodePool status (resources and node counts of its nodes, `Ready` from its node class) and
//! EC2NodeClass status (resolved by the cloud's [`super::NodeClassResolver`], with a finalizer so
//! what the cloud created for it is cleaned up when it is deleted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{info_span, warn, Instrument};

use super::writes::{add_finalizer, remove_finalizer};
use super::Context;
use crate::api::ec2nodeclass::EC2NodeClassObject;
use crate::api::nodepool::NodePool;
use crate::api::rfc3339;
use crate::convert::nodeclaim::{parse_quantities, quantities};

/// The finalizer karp puts on EC2NodeClasses.
pub const NODECLASS_FINALIZER: &str = "karpenter.k8s.aws/termination";

fn ready_condition(ready: bool, message: &str, generation: Option<i64>) -> serde_json::Value {
    json!({
        "type": "Ready",
        "status": if ready { "True" } else { "False" },
        "reason": if ready { "Ready" } else { "NodeClassNotReady" },
        "message": message,
        "lastTransitionTime": rfc3339(SystemTime::now()),
        "observedGeneration": generation,
    })
}

async fn nodeclasses(ctx: &Context) {
    let api: Api<EC2NodeClassObject> = Api::all(ctx.client.clone());
    for nc in ctx.stores.nodeclasses.state() {
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
        match ctx.resolver.resolve(&nc.to_nodeclass()).await {
            Ok(mut status) => {
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

async fn nodepools(ctx: &Context) {
    let api: Api<NodePool> = Api::all(ctx.client.clone());
    let nodes = ctx.stores.nodes.state();
    let classes = ctx.stores.nodeclasses.state();
    for np in ctx.stores.nodepools.state() {
        let name = np.metadata.name.clone().unwrap_or_default();
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
        let message = if class_ready {
            String::new()
        } else {
            format!("EC2NodeClass {:?} is not ready", class.unwrap_or_default())
        };
        let patch = json!({"status": {
            "resources": resources,
            "nodes": count,
            "conditions": [
                ready_condition(class_ready, &message, np.metadata.generation),
                {
                    "type": "NodeClassReady",
                    "status": if class_ready { "True" } else { "False" },
                    "reason": if class_ready { "NodeClassReady" } else { "NodeClassNotReady" },
                    "message": message,
                    "lastTransitionTime": rfc3339(SystemTime::now()),
                    "observedGeneration": np.metadata.generation,
                }
            ]
        }});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            warn!(nodepool = %name, error = %e, "status update failed");
        }
    }
}

/// Refreshes node class and node pool status until shutdown (first at once, then every resync).
pub async fn run(ctx: Arc<Context>) {
    loop {
        nodeclasses(&ctx)
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
