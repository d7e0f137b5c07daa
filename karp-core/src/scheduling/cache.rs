//! State many scheduling simulations of one cluster share.
//!
//! Disruption planning runs the scheduler dozens of times on snapshots that differ only in which
//! nodes are gone and which pods are pending. Most of a pass's setup depends on neither: the
//! NodePools' prepared instance types and daemonset overhead, the topology domains their types
//! can reach, and each node's labels turned into requirements. A [`SchedulingCache`] keeps those
//! and hands them to every pass that uses it, checking each entry against the snapshot first
//! (an entry is reused only for an identical NodePool, DaemonSet list or node labels and taints),
//! so a cached pass decides exactly what an uncached one does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use crate::cluster::{ClusterSnapshot, Node, NodePool};
use crate::labels;
use crate::pod::Pod;
use crate::requirements::Requirements;
use crate::taints::Taint;

use super::claim::PoolCtx;
use super::daemon_overhead;

/// A node's labels as requirements, and its taints, shared by the scheduler and the topology.
pub(crate) type NodeInfo = (Arc<Requirements>, Arc<Vec<Taint>>);

/// The topology domains a NodePool's instance types can reach, in the order the topology interns
/// them: (key, value), or (key, `None`) for a key the types constrain without listing values.
pub(crate) type PoolDomains = Arc<Vec<(String, Option<String>)>>;

/// Scheduling state shared by many passes over snapshots of one cluster (see the module docs).
///
/// Meant to live as long as one planning pass (the disruption planner makes one per pass):
/// entries are never evicted, so a cache kept across a changing cluster grows with every node
/// and NodePool version it has seen.
///
/// ```
/// use karp_core::cluster::ClusterSnapshot;
/// use karp_core::scheduling::{schedule, schedule_cached, SchedulerOptions, SchedulingCache};
/// use karp_core::testing::{instance_type, nodepool, pod};
///
/// let types = vec![instance_type("small").cpu("2").memory("4Gi").price(0.05).build()];
/// let snapshot = ClusterSnapshot {
///     node_pools: vec![nodepool("default", types)],
///     pods: vec![pod("web").cpu("1").build()],
///     ..Default::default()
/// };
/// let cache = SchedulingCache::default();
/// let options = SchedulerOptions::default();
/// let first = schedule_cached(&snapshot, &options, &cache);
/// let again = schedule_cached(&snapshot, &options, &cache);
/// assert_eq!(first, again);
/// assert_eq!(first, schedule(&snapshot, &options));
/// ```
#[derive(Default)]
pub struct SchedulingCache {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SchedulingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("SchedulingCache")
            .field("pools", &inner.pools.len())
            .field("nodes", &inner.nodes.len())
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    /// The DaemonSets the pool entries were prepared with.
    daemonsets: Option<Vec<Pod>>,
    pools: Vec<CachedPool>,
    nodes: BTreeMap<String, CachedNode>,
}

struct CachedPool {
    pool: NodePool,
    ctx: Arc<PoolCtx>,
    domains: PoolDomains,
}

struct CachedNode {
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
    info: NodeInfo,
}

/// Whether two NodePools are the same for scheduling (instance types compared by pointer first).
fn same_pool(a: &NodePool, b: &NodePool) -> bool {
    a.name == b.name
        && a.weight == b.weight
        && a.requirements == b.requirements
        && a.labels == b.labels
        && a.taints == b.taints
        && a.startup_taints == b.startup_taints
        && a.limits == b.limits
        && a.node_class == b.node_class
        && a.instance_types.len() == b.instance_types.len()
        && a.instance_types
            .iter()
            .zip(&b.instance_types)
            .all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
}

/// Prepare a NodePool for a pass: its instance types filtered by the template, with the
/// daemonset overhead of its nodes.
pub(crate) fn pool_ctx(pool: &NodePool, daemonsets: &[Pod]) -> PoolCtx {
    let template = pool.template_requirements();
    // Borrowed and inserted one by one: the types repeat a handful of keys, so nothing is
    // copied or sorted per type.
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for t in &pool.instance_types {
        for k in t.requirements.keys() {
            keys.insert(k);
        }
    }
    let provider_keys: BTreeSet<String> = keys.into_iter().map(str::to_string).collect();
    let overhead = daemon_overhead(daemonsets, pool, &template, &provider_keys);
    PoolCtx::new(pool, template, overhead, provider_keys)
}

/// The topology domains `pool`'s instance types can reach (hostname excluded), each once, in
/// the order the topology interns them.
pub(crate) fn pool_domains(pool: &NodePool) -> PoolDomains {
    let template = pool.template_requirements();
    // The values seen per key, looked up by reference: most types repeat what earlier ones
    // named, and nothing is copied for them.
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for it in &pool.instance_types {
        template.for_each_intersected(&it.requirements, |key, values| {
            if key == labels::HOSTNAME {
                return;
            }
            if !seen.contains_key(key) {
                out.push((key.to_string(), None));
                seen.insert(key.to_string(), BTreeSet::new());
            }
            let Some(seen_values) = seen.get_mut(key) else {
                return;
            };
            for v in values {
                if !seen_values.contains(v) {
                    seen_values.insert(v.to_string());
                    out.push((key.to_string(), Some(v.to_string())));
                }
            }
        });
    }
    Arc::new(out)
}

/// A node's labels as requirements, and its taints.
pub(crate) fn node_info(node: &Node) -> NodeInfo {
    (
        Arc::new(Requirements::from_labels(&node.labels)),
        Arc::new(node.taints.clone()),
    )
}

/// What a pass needs per pool and per node, from `cache` where it holds an identical entry.
pub(crate) struct Shared {
    /// Per snapshot NodePool (snapshot order): its prepared context and domains.
    pub pools: Vec<(Arc<PoolCtx>, PoolDomains)>,
    /// Per snapshot node name.
    pub nodes: BTreeMap<String, NodeInfo>,
}

impl Shared {
    /// Build everything without a cache.
    pub fn build(snapshot: &ClusterSnapshot) -> Self {
        Shared {
            pools: snapshot
                .node_pools
                .iter()
                .map(|p| (Arc::new(pool_ctx(p, &snapshot.daemonsets)), pool_domains(p)))
                .collect(),
            nodes: snapshot
                .nodes
                .iter()
                .map(|n| (n.name.clone(), node_info(n)))
                .collect(),
        }
    }

    /// Take what `cache` holds for `snapshot`, build and store the rest.
    pub fn from_cache(snapshot: &ClusterSnapshot, cache: &SchedulingCache) -> Self {
        let mut inner = cache.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.daemonsets.as_deref() != Some(snapshot.daemonsets.as_slice()) {
            inner.daemonsets = Some(snapshot.daemonsets.clone());
            inner.pools.clear();
        }
        let mut pools = Vec::with_capacity(snapshot.node_pools.len());
        for p in &snapshot.node_pools {
            let hit = inner
                .pools
                .iter()
                .find(|c| same_pool(&c.pool, p))
                .map(|c| (c.ctx.clone(), c.domains.clone()));
            let entry = hit.unwrap_or_else(|| {
                let ctx = Arc::new(pool_ctx(p, &snapshot.daemonsets));
                let domains = pool_domains(p);
                inner.pools.push(CachedPool {
                    pool: p.clone(),
                    ctx: ctx.clone(),
                    domains: domains.clone(),
                });
                (ctx, domains)
            });
            pools.push(entry);
        }
        let mut nodes = BTreeMap::new();
        for n in &snapshot.nodes {
            let info = match inner.nodes.get(&n.name) {
                Some(c) if c.labels == n.labels && c.taints == n.taints => c.info.clone(),
                _ => {
                    let info = node_info(n);
                    inner.nodes.insert(
                        n.name.clone(),
                        CachedNode {
                            labels: n.labels.clone(),
                            taints: n.taints.clone(),
                            info: info.clone(),
                        },
                    );
                    info
                }
            };
            nodes.insert(n.name.clone(), info);
        }
        Shared { pools, nodes }
    }
}
