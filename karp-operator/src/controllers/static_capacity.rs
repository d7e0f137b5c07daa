//! Static capacity: a NodePool with `spec.replicas` keeps exactly that many NodeClaims whatever the
//! pods need, as Karpenter's static provisioning and deprovisioning controllers do.
//!
//! - **Scale up.** While the pool has fewer NodeClaims than replicas (deleting ones count, so a
//!   node on its way out is replaced only once it is gone), NodeClaims of the pool's template are
//!   created (every instance type the template allows, cheapest first), as many as `limits.nodes`
//!   leaves room for. Only a Ready pool scales up.
//! - **Scale down.** While more of its NodeClaims than replicas are running (neither deleting nor
//!   marked by a disruption command, so a drift replacement in progress is not taken for
//!   surplus), the surplus is deleted: NodeClaims not launched yet first, then nodes with no pod
//!   but DaemonSet pods, then the others, those with a `karpenter.sh/do-not-disrupt` pod last,
//!   a higher `karpenter.sh/deprovisioning-priority` annotation first, then the lowest
//!   disruption cost (pods' eviction costs times the share of the node's lifetime left). Scale
//!   down bypasses disruption budgets; the termination controller still drains through the
//!   Eviction API, so PodDisruptionBudgets hold.
//!
//! Drift of static pools is the disruption controller's static drift; consolidation leaves their
//! nodes alone (karp-core's [`karp_core::disruption`]). The decision is [`decide`] (pure); the
//! executor runs every [`PERIOD`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use karp_core::disruption::Timestamp;
use kube::api::{Api, PostParams};
use kube::Resource;
use tracing::{debug, info, info_span, warn, Instrument};

use super::orchestration::DISRUPTION_REASON;
use super::provisioner::{claim_object, instance_types, is_daemonset_pod};
use super::writes::{delete_ignoring_404, kube_err};
use super::{Context, LiveObjects, OperatorError};
use crate::api::nodeclaim::NodeClaim;
use crate::api::nodepool::NodePool;
use crate::convert::snapshot::{build_snapshot, BuildOptions, TypesByNodeClass};

/// How often static pools are reconciled.
pub const PERIOD: Duration = Duration::from_secs(1);

/// The annotation ordering a static pool's NodeClaims for scale down (higher goes first).
pub const DEPROVISIONING_PRIORITY: &str = "karpenter.sh/deprovisioning-priority";

/// What one static pool needs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticStep {
    /// Create this many NodeClaims of the pool's template.
    Create {
        /// The pool.
        pool: String,
        /// How many.
        count: u64,
    },
    /// Fewer NodeClaims than replicas, and `limits.nodes` leaves no room.
    AtLimit {
        /// The pool.
        pool: String,
        /// Its NodeClaims.
        nodes: u64,
        /// Its replicas.
        replicas: u64,
    },
    /// Delete these NodeClaims (surplus over replicas), in order.
    Delete {
        /// The pool.
        pool: String,
        /// NodeClaim names.
        claims: Vec<String>,
    },
}

fn ready(np: &NodePool) -> bool {
    np.status
        .as_ref()
        .and_then(|s| s["conditions"].as_array())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn marked(claim: &NodeClaim) -> bool {
    claim.is_true(DISRUPTION_REASON)
}

/// A pod's eviction cost, as disruption computes it.
fn eviction_cost(p: &Pod) -> f64 {
    karp_core::disruption::candidates::eviction_cost_of(
        crate::convert::disruption::deletion_cost(p),
        p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
    )
}

/// How a running claim ranks for scale down (smaller goes first).
#[derive(Debug, Clone, PartialEq)]
struct Rank {
    launched: bool,
    nonempty: bool,
    do_not_disrupt: bool,
    priority: std::cmp::Reverse<i64>,
    cost: f64,
    name: String,
}

fn rank(claim: &NodeClaim, pods: &[&Pod], now: Timestamp) -> Rank {
    let active: Vec<&&Pod> = pods
        .iter()
        .filter(|p| super::termination::needs_eviction(p) || is_daemonset_pod(p))
        .filter(|p| !super::termination::is_terminal(p))
        .collect();
    let do_not_disrupt = active.iter().any(|p| super::termination::do_not_disrupt(p));
    let nonempty = active.iter().any(|p| !is_daemonset_pod(p)) || do_not_disrupt;
    let lifetime_left = super::expiration::expires_at(claim)
        .ok()
        .flatten()
        .and_then(|at| {
            let created = claim.metadata.creation_timestamp.as_ref()?;
            let created = crate::convert::disruption::millis(created);
            let total = (at.millis() - created.millis()).max(1);
            let left = (at.millis() - now.millis()).max(0);
            Some(left as f64 / total as f64)
        })
        .unwrap_or(1.0);
    let cost: f64 = active
        .iter()
        .filter(|p| !is_daemonset_pod(p))
        .map(|p| eviction_cost(p).max(0.0))
        .sum();
    Rank {
        launched: claim.provider_id().is_some(),
        nonempty,
        do_not_disrupt,
        priority: std::cmp::Reverse(
            claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEPROVISIONING_PRIORITY))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ),
        cost: cost * lifetime_left,
        name: claim.metadata.name.clone().unwrap_or_default(),
    }
}

fn order(a: &Rank, b: &Rank) -> std::cmp::Ordering {
    (a.launched, a.nonempty, a.do_not_disrupt, a.priority)
        .cmp(&(b.launched, b.nonempty, b.do_not_disrupt, b.priority))
        .then_with(|| a.cost.total_cmp(&b.cost))
        .then_with(|| a.name.cmp(&b.name))
}

/// What every static pool needs at `now` (pure): pools in name order. `unseen` counts, per pool,
/// NodeClaims this controller created that the cache does not show yet: they count as the
/// pool's, so a lagging cache never makes it create a replica twice.
#[must_use]
pub fn decide(
    objects: &LiveObjects,
    now: Timestamp,
    unseen: &BTreeMap<String, u64>,
) -> Vec<StaticStep> {
    let mut pods_by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for p in &objects.pods {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            pods_by_node.entry(n).or_default().push(p);
        }
    }
    let mut pools: Vec<&Arc<NodePool>> = objects
        .nodepools
        .iter()
        .filter(|np| np.spec.replicas.is_some() && np.metadata.deletion_timestamp.is_none())
        .collect();
    pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut steps = Vec::new();
    for np in pools {
        let name = np.metadata.name.clone().unwrap_or_default();
        let replicas = u64::try_from(np.spec.replicas.unwrap_or(0)).unwrap_or(0);
        let claims: Vec<&Arc<NodeClaim>> = objects
            .nodeclaims
            .iter()
            .filter(|c| c.nodepool() == Some(name.as_str()))
            .collect();
        let total = claims.len() as u64 + unseen.get(&name).copied().unwrap_or(0);
        let running: Vec<&Arc<NodeClaim>> = claims
            .iter()
            .copied()
            .filter(|c| c.metadata.deletion_timestamp.is_none() && !marked(c))
            .collect();
        if running.len() as u64 > replicas {
            let surplus = running.len() - usize::try_from(replicas).unwrap_or(usize::MAX);
            let mut ranked: Vec<Rank> = running
                .iter()
                .map(|c| {
                    let node = c.status.as_ref().and_then(|s| s.node_name.as_deref());
                    let pods = node
                        .and_then(|n| pods_by_node.get(n))
                        .map_or(&[][..], Vec::as_slice);
                    rank(c, pods, now)
                })
                .collect();
            ranked.sort_by(order);
            steps.push(StaticStep::Delete {
                pool: name,
                claims: ranked.into_iter().take(surplus).map(|r| r.name).collect(),
            });
            continue;
        }
        if total >= replicas || !ready(np) {
            continue;
        }
        let limit = np
            .spec
            .limits
            .get("nodes")
            .and_then(|q| q.0.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        let count = (replicas - total).min(limit.saturating_sub(total));
        steps.push(if count == 0 {
            StaticStep::AtLimit {
                pool: name,
                nodes: total,
                replicas,
            }
        } else {
            StaticStep::Create { pool: name, count }
        });
    }
    steps
}

/// How long a created NodeClaim counts as its pool's before the cache shows it (a watch lagging
/// longer than this lets the controller create again; the surplus is then scaled down).
const UNSEEN_TTL: Duration = Duration::from_secs(60);

/// NodeClaims created by this controller, by pool, with when: until the cache shows them.
#[derive(Debug, Default)]
struct Created(BTreeMap<String, Vec<(String, std::time::Instant)>>);

impl Created {
    /// Forgets what the cache shows or what is too old; counts the rest per pool.
    fn unseen(&mut self, objects: &LiveObjects) -> BTreeMap<String, u64> {
        let seen: std::collections::BTreeSet<&str> = objects
            .nodeclaims
            .iter()
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        let mut out = BTreeMap::new();
        for (pool, names) in &mut self.0 {
            names.retain(|(n, at)| !seen.contains(n.as_str()) && at.elapsed() < UNSEEN_TTL);
            if !names.is_empty() {
                out.insert(pool.clone(), names.len() as u64);
            }
        }
        self.0.retain(|_, names| !names.is_empty());
        out
    }
}

/// Creates `count` NodeClaims of the static pool `pool`'s template; returns their names.
async fn create(
    ctx: &Context,
    objects: &LiveObjects,
    pool: &str,
    count: u64,
) -> Result<Vec<String>, OperatorError> {
    let Some(np) = objects
        .nodepools
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(pool))
    else {
        return Ok(Vec::new());
    };
    let types = instance_types(ctx, objects).await;
    let input = objects.cluster_objects(|_| false);
    let converted = build_snapshot(
        &input,
        &mut TypesByNodeClass(types),
        &BuildOptions { skip_invalid: true },
    )
    .map_err(|e| OperatorError::Convert(e.to_string()))?;
    let Some(view) = converted
        .snapshot
        .node_pools
        .iter()
        .find(|p| p.name == pool)
    else {
        return Err(OperatorError::Convert(format!(
            "NodePool {pool:?} does not convert (see its status conditions)"
        )));
    };
    let template = karp_core::scheduling::template_nodeclaim(
        view,
        &converted.snapshot.daemonsets,
        &format!("{pool}-static"),
        karp_core::scheduling::MAX_INSTANCE_TYPES,
    )
    .map_err(|e| OperatorError::Convert(format!("NodePool {pool:?}: {e}")))?;
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let mut names = Vec::new();
    for _ in 0..count {
        let object = claim_object(&template, np, Some(view), ctx.resolver.node_class_label());
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| kube_err("create NodeClaim", e))?;
        ctx.metrics.inc(
            "karpenter_nodeclaims_created_total",
            &[("nodepool", pool), ("reason", "provisioned")],
        );
        info!(nodeclaim = ?created.meta().name, nodepool = %pool, "static capacity: created");
        names.extend(created.meta().name.clone());
    }
    Ok(names)
}

async fn reconcile(ctx: &Context, created: &mut Created) {
    let objects = ctx.stores.objects();
    if !objects
        .nodepools
        .iter()
        .any(|np| np.spec.replicas.is_some())
    {
        return;
    }
    let now = Timestamp::from(ctx.settings.clock.now());
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let unseen = created.unseen(&objects);
    for step in decide(&objects, now, &unseen) {
        match step {
            StaticStep::Create { pool, count } => match create(ctx, &objects, &pool, count).await {
                Ok(names) => {
                    let at = std::time::Instant::now();
                    created
                        .0
                        .entry(pool)
                        .or_default()
                        .extend(names.into_iter().map(|n| (n, at)));
                }
                Err(e) => {
                    warn!(nodepool = %pool, error = %e, "static capacity: creating NodeClaims failed");
                }
            },
            StaticStep::AtLimit {
                pool,
                nodes,
                replicas,
            } => {
                debug!(nodepool = %pool, nodes, replicas, "static capacity: nodepool node limit reached");
            }
            StaticStep::Delete { pool, claims } => {
                info!(nodepool = %pool, deleting = claims.len(), "static capacity: deprovisioning NodeClaims to satisfy the replica count");
                for name in claims {
                    match delete_ignoring_404(&api, &name, "delete NodeClaim").await {
                        Ok(()) => {
                            ctx.metrics.inc(
                                "karpenter_nodeclaims_disrupted_total",
                                &[("reason", "overprovisioned"), ("nodepool", pool.as_str())],
                            );
                            if let Some(c) = objects
                                .nodeclaims
                                .iter()
                                .find(|c| c.metadata.name.as_deref() == Some(name.as_str()))
                            {
                                ctx.events
                                    .publish_nodeclaim(
                                        c,
                                        "Normal",
                                        "DisruptionTerminating",
                                        "Disrupting NodeClaim: Overprovisioned (static NodePool above its replicas)",
                                    )
                                    .await;
                            }
                        }
                        Err(e) => {
                            warn!(nodeclaim = %name, error = %e, "static capacity: deletion failed")
                        }
                    }
                }
            }
        }
    }
}

/// Runs the static capacity controller until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let created = tokio::sync::Mutex::new(Created::default());
    super::every(&ctx, PERIOD, || {
        let (ctx, created) = (&ctx, &created);
        async move { reconcile(ctx, &mut *created.lock().await).await }
            .instrument(info_span!("static_capacity"))
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(replicas: i64, limit_nodes: Option<u64>, ready: bool) -> Arc<NodePool> {
        let mut v = json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
            "metadata": {"name": "static"},
            "spec": {"replicas": replicas, "template": {"spec": {"nodeClassRef": {"name": "c"}}}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        });
        if let Some(l) = limit_nodes {
            v["spec"]["limits"] = json!({"nodes": l});
        }
        Arc::new(serde_json::from_value(v).expect("pool"))
    }

    /// A claim of the static pool; `node` when launched and registered.
    fn claim(name: &str, node: Option<&str>) -> NodeClaim {
        let mut v = json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": name, "labels": {"karpenter.sh/nodepool": "static"},
                "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"nodeClassRef": {"name": "c"}, "expireAfter": "Never"}
        });
        if let Some(n) = node {
            v["status"] = json!({"providerID": format!("aws:///z/{name}"), "nodeName": n});
        }
        serde_json::from_value(v).expect("claim")
    }

    fn pod(name: &str, node: &str, owner: &str, annotations: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner, "name": "o", "uid": "u"}]},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": "Running"}
            }))
            .expect("pod"),
        )
    }

    fn now() -> Timestamp {
        Timestamp::from_utc(2026, 12, 7, 0, 0, 0)
    }

    fn none() -> BTreeMap<String, u64> {
        BTreeMap::new()
    }

    fn objects(pool: Arc<NodePool>, claims: Vec<NodeClaim>, pods: Vec<Arc<Pod>>) -> LiveObjects {
        LiveObjects {
            nodepools: vec![pool],
            nodeclaims: claims.into_iter().map(Arc::new).collect(),
            pods,
            ..LiveObjects::default()
        }
    }

    #[test]
    fn a_ready_pool_below_its_replicas_creates_within_limits_nodes() {
        let one = || vec![claim("a", Some("n-a"))];
        let create = |count| StaticStep::Create {
            pool: "static".into(),
            count,
        };
        assert_eq!(
            decide(&objects(pool(3, None, true), one(), vec![]), now(), &none()),
            [create(2)]
        );
        assert_eq!(
            decide(
                &objects(pool(3, Some(2), true), one(), vec![]),
                now(),
                &none()
            ),
            [create(1)]
        );
        assert_eq!(
            decide(
                &objects(pool(3, Some(1), true), one(), vec![]),
                now(),
                &none()
            ),
            [StaticStep::AtLimit {
                pool: "static".into(),
                nodes: 1,
                replicas: 3
            }]
        );
        assert!(decide(
            &objects(pool(3, None, false), one(), vec![]),
            now(),
            &none()
        )
        .is_empty());
        // Claims created but not in the cache yet count: nothing is created twice.
        let unseen = BTreeMap::from([("static".to_string(), 2)]);
        assert!(decide(&objects(pool(3, None, true), one(), vec![]), now(), &unseen).is_empty());
        // A deleting claim still counts: it is replaced once gone.
        let mut deleting = claim("b", Some("n-b"));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let mut claims = one();
        claims.push(deleting);
        assert_eq!(
            decide(
                &objects(pool(3, None, true), claims, vec![]),
                now(),
                &none()
            ),
            [create(1)]
        );
    }

    #[test]
    fn scale_down_takes_unlaunched_then_empty_then_cheapest_and_do_not_disrupt_last() {
        let claims = vec![
            claim("a", Some("n-a")),
            claim("b", None),
            claim("c", Some("n-c")),
            claim("d", Some("n-d")),
            claim("e", Some("n-e")),
        ];
        let pods = vec![
            pod("web-1", "n-a", "ReplicaSet", json!({})),
            pod("web-2", "n-e", "ReplicaSet", json!({})),
            pod("web-3", "n-e", "ReplicaSet", json!({})),
            pod("agent", "n-c", "DaemonSet", json!({})),
            pod(
                "db",
                "n-d",
                "ReplicaSet",
                json!({"karpenter.sh/do-not-disrupt": "true"}),
            ),
        ];
        assert_eq!(
            decide(
                &objects(pool(1, None, true), claims.clone(), pods.clone()),
                now(),
                &none()
            ),
            [StaticStep::Delete {
                pool: "static".into(),
                claims: vec!["b".into(), "c".into(), "a".into(), "e".into()]
            }]
        );
        // A higher deprovisioning priority goes first among non-empty nodes.
        let mut claims = claims;
        claims[4]
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(DEPROVISIONING_PRIORITY.into(), "10".into());
        assert_eq!(
            decide(&objects(pool(3, None, true), claims, pods), now(), &none()),
            [StaticStep::Delete {
                pool: "static".into(),
                claims: vec!["b".into(), "c".into()]
            }]
        );
    }

    #[test]
    fn a_claim_marked_by_a_disruption_command_is_not_surplus() {
        let mut marked = claim("x", Some("n-x"));
        marked
            .status
            .get_or_insert_with(Default::default)
            .conditions = vec![crate::api::nodeclaim::Condition {
            type_: DISRUPTION_REASON.into(),
            status: "True".into(),
            ..Default::default()
        }];
        let claims = vec![marked, claim("y", Some("n-y")), claim("z", None)];
        assert!(decide(
            &objects(pool(2, None, true), claims, vec![]),
            now(),
            &none()
        )
        .is_empty());
    }
}
