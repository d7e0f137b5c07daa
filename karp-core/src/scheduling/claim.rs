//! NodeClaims opened during a pass, and existing nodes as placement targets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::topology::{PodGroups, Topology};
use super::{instance_type_requirement, ChosenOffering, NewNodeClaim, PodData};
use crate::cloud::InstanceType;
use crate::cluster::{Node, NodePool};
use crate::labels;
use crate::pod::{HostPort, Pod};
use crate::requirements::{Requirement, Requirements};
use crate::resources::Resources;
use crate::taints::{first_untolerated, Taint};

/// An instance type of a pool, with the requirements used to match it.
pub(super) struct TypeCtx {
    pub it: Arc<InstanceType>,
    /// The type's requirements plus `DoesNotExist` for provider labels it does not set.
    pub full: Requirements,
}

/// A NodePool prepared for the pass.
pub(super) struct PoolCtx {
    pub name: String,
    pub template: Requirements,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub daemon_overhead: Resources,
    pub types: Vec<TypeCtx>,
    provider_keys: BTreeSet<String>,
}

impl PoolCtx {
    pub fn new(pool: &NodePool, template: Requirements, daemon_overhead: Resources, provider_keys: BTreeSet<String>) -> Self {
        let mut types = Vec::new();
        for it in &pool.instance_types {
            let mut full = it.requirements.clone();
            for k in &provider_keys {
                if !full.has_key(k) {
                    full.add(Requirement::does_not_exist(k.clone()));
                }
            }
            // Keep only types the template allows and that have an offering it allows.
            if full.intersects(&template) && it.offerings.iter().any(|o| o.available && o.compatible(&template)) {
                types.push(TypeCtx { it: it.clone(), full });
            }
        }
        PoolCtx {
            name: pool.name.clone(),
            template,
            labels: pool.labels.clone(),
            taints: pool.taints.clone(),
            daemon_overhead,
            types,
            provider_keys,
        }
    }

    pub fn is_well_known(&self, key: &str) -> bool {
        labels::is_well_known(key) || self.provider_keys.contains(key)
    }

    /// Types whose capacity fits the pool's remaining limits.
    pub fn types_within_limits(&self, limits: &BTreeMap<String, i64>) -> Vec<u32> {
        (0..self.types.len() as u32)
            .filter(|&i| {
                let cap = &self.types[i as usize].it.capacity;
                limits.iter().all(|(k, v)| cap.get(k) <= *v)
            })
            .collect()
    }
}

/// A NodeClaim opened in this pass.
pub(super) struct Claim {
    pub pool: usize,
    pub hostname: String,
    pub requirements: Requirements,
    pub pods: Vec<usize>,
    /// Pod requests (without daemon overhead).
    pub requests: Resources,
    pub types: Vec<u32>,
    /// Component-wise max / min allocatable over `types` (quick accept / reject).
    max_alloc: Resources,
    min_alloc: Resources,
    host_ports: Vec<HostPort>,
}

fn bounds(pool: &PoolCtx, types: &[u32]) -> (Resources, Resources) {
    let mut max = Resources::new();
    let mut min: Option<Resources> = None;
    for &t in types {
        let a = pool.types[t as usize].it.allocatable();
        max = max.max(a);
        min = Some(match min {
            None => a.clone(),
            Some(m) => {
                let mut r = m.clone();
                r.cpu = r.cpu.min(a.cpu);
                r.memory = r.memory.min(a.memory);
                r.ephemeral_storage = r.ephemeral_storage.min(a.ephemeral_storage);
                r.pods = r.pods.min(a.pods);
                r.extended.retain(|k, v| {
                    if let Some(o) = a.extended.get(k) {
                        *v = (*v).min(*o);
                        true
                    } else {
                        false
                    }
                });
                r
            }
        });
    }
    (max, min.unwrap_or_default())
}

/// Whether the type can be launched under `reqs`: compatible labels and an available offering.
fn type_allowed(t: &TypeCtx, reqs: &Requirements) -> bool {
    t.full.intersects(reqs) && t.it.offerings.iter().any(|o| o.available && o.compatible(reqs))
}

/// Distinct values of `key` among `types` (restricted by `req`).
fn distinct_values(pool: &PoolCtx, types: &[u32], req: &Requirement) -> usize {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for &t in types {
        if let Some(r) = pool.types[t as usize].it.requirements.get(req.key()) {
            for v in r.values() {
                if req.has(v) {
                    seen.insert(v);
                }
            }
        }
    }
    seen.len()
}

/// The first requirement whose `minValues` the types no longer satisfy.
fn min_values_violation(pool: &PoolCtx, types: &[u32], reqs: &Requirements) -> Option<String> {
    for r in reqs.iter() {
        if let Some(min) = r.min_values() {
            let n = distinct_values(pool, types, r);
            if n < min {
                return Some(format!("minValues requirement on {} needs {min} distinct values, only {n} remain", r.key()));
            }
        }
    }
    None
}

impl Claim {
    pub fn new(pool_idx: usize, pool: &PoolCtx, hostname: String, types: Vec<u32>) -> Self {
        let mut requirements = pool.template.clone();
        requirements.add(Requirement::in_values(labels::HOSTNAME, [hostname.clone()]));
        let (max_alloc, min_alloc) = bounds(pool, &types);
        Claim {
            pool: pool_idx,
            hostname,
            requirements,
            pods: Vec::new(),
            requests: Resources::new(),
            types,
            max_alloc,
            min_alloc,
            host_ports: Vec::new(),
        }
    }

    /// Largest capacity among the remaining options (for limits).
    pub fn max_capacity(&self, pool: &PoolCtx) -> Resources {
        self.types.iter().fold(Resources::new(), |m, &t| m.max(&pool.types[t as usize].it.capacity))
    }

    /// Try to add the pod; on success the claim is updated (the caller records the pod index).
    pub fn try_add(&mut self, pod: &Pod, data: &PodData, groups: &PodGroups, pool: &PoolCtx, topology: &mut Topology) -> Result<(), String> {
        let total = self.requests.plus(&pod.requests);
        let with_daemons = total.plus(&pool.daemon_overhead);
        // Quick rejections first: they decide most attempts in large passes.
        if !with_daemons.fits_in(&self.max_alloc) && !self.pods.is_empty() {
            return Err("no remaining instance type has room".to_string());
        }
        if topology.hostname_blocked(groups, pod, &self.hostname) {
            return Err("pod anti-affinity on kubernetes.io/hostname".to_string());
        }
        if let Some(t) = first_untolerated(&pool.taints, &data.tolerations) {
            return Err(format!("did not tolerate taint {t}"));
        }
        if let Some(hp) = pod.host_ports.iter().find(|hp| self.host_ports.iter().any(|u| u.conflicts(hp))) {
            return Err(format!("host port {}/{} is already used on the node", hp.port, hp.protocol));
        }
        self.requirements
            .compatible(&data.requirements, &|k| pool.is_well_known(k))
            .map_err(|e| format!("incompatible requirements, {e}"))?;
        let mut reqs = self.requirements.clone();
        let mut changed = reqs.add_all(&data.requirements);
        let before = reqs.clone();
        topology.add_requirements(pod, groups, &data.strict, &mut reqs, &pool.taints).map_err(|e| e.0)?;
        changed |= before != reqs;
        if reqs.is_unsatisfiable() {
            return Err(format!("incompatible requirements, {reqs}"));
        }
        // Instance types still able to hold everything.
        let quick_fit = with_daemons.fits_in(&self.min_alloc);
        let remaining: Vec<u32> = if quick_fit && !changed {
            self.types.clone()
        } else {
            self.types
                .iter()
                .copied()
                .filter(|&t| {
                    let tc = &pool.types[t as usize];
                    (quick_fit || with_daemons.fits_in(tc.it.allocatable())) && (!changed || type_allowed(tc, &reqs))
                })
                .collect()
        };
        if remaining.is_empty() {
            return Err(self.explain_no_type(pool, &reqs, &pod.requests, &with_daemons));
        }
        if let Some(v) = min_values_violation(pool, &remaining, &reqs) {
            return Err(v);
        }
        topology.record(pod, groups, &reqs, &pool.taints);
        if remaining.len() != self.types.len() {
            let (max_alloc, min_alloc) = bounds(pool, &remaining);
            self.max_alloc = max_alloc;
            self.min_alloc = min_alloc;
        }
        self.types = remaining;
        self.requirements = reqs;
        self.requests = total;
        self.host_ports.extend(pod.host_ports.iter().cloned());
        Ok(())
    }

    fn explain_no_type(&self, pool: &PoolCtx, reqs: &Requirements, pod_requests: &Resources, total: &Resources) -> String {
        let by_reqs = self.types.iter().filter(|&&t| type_allowed(&pool.types[t as usize], reqs)).count();
        let by_res = self.types.iter().filter(|&&t| total.fits_in(pool.types[t as usize].it.allocatable())).count();
        let overhead = if pool.daemon_overhead.is_zero() {
            String::new()
        } else {
            format!(" plus daemonset overhead {{{}}}", pool.daemon_overhead.describe())
        };
        let mut shown = reqs.clone();
        shown.remove(labels::HOSTNAME);
        if self.types.is_empty() {
            "no instance type of the nodepool matches its requirements and offerings".to_string()
        } else if by_reqs == 0 {
            format!("no instance type satisfies requirements {shown} with an available offering")
        } else if by_res == 0 {
            if self.pods.is_empty() {
                format!("no instance type has enough resources for requests {{{}}}{overhead}", pod_requests.describe())
            } else {
                format!("no instance type has enough resources for {{{}}}", total.describe())
            }
        } else {
            format!(
                "no instance type satisfies both requirements and resources ({by_reqs} types match requirements {shown}, {by_res} have room for {{{}}}{overhead})",
                pod_requests.describe()
            )
        }
    }

    /// Order the options by price, truncate, and describe the NodeClaim.
    pub fn finalize(&self, pool: &PoolCtx, max_types: usize) -> Result<NewNodeClaim, String> {
        let mut reqs = self.requirements.clone();
        let mut options: Vec<(f64, &Arc<InstanceType>, u32)> = self
            .types
            .iter()
            .filter_map(|&t| {
                let it = &pool.types[t as usize].it;
                it.cheapest_offering(&reqs).map(|o| (o.price, it, t))
            })
            .collect();
        options.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        options.truncate(max_types.max(1));
        let kept: Vec<u32> = options.iter().map(|o| o.2).collect();
        if let Some(v) = min_values_violation(pool, &kept, &reqs) {
            return Err(format!("after truncating to the {max_types} cheapest instance types, {v}"));
        }
        let types: Vec<Arc<InstanceType>> = options.iter().map(|o| o.1.clone()).collect();
        let Some(first) = types.first() else {
            return Err("no instance type with an available offering remains".to_string());
        };
        // Capacity types actually offered by the options.
        let offered: BTreeSet<String> = types
            .iter()
            .flat_map(|t| t.offerings.iter().filter(|o| o.available && o.compatible(&reqs)).map(|o| o.capacity_type.clone()))
            .collect();
        reqs.add(Requirement::in_values(labels::CAPACITY_TYPE, offered));
        reqs.add(instance_type_requirement(&types));
        let offering = first.cheapest_offering(&reqs).cloned();
        reqs.remove(labels::HOSTNAME);
        let Some(o) = offering else {
            return Err("no instance type with an available offering remains".to_string());
        };
        Ok(NewNodeClaim {
            nodepool: pool.name.clone(),
            hostname: self.hostname.clone(),
            requirements: reqs,
            instance_types: types.clone(),
            pods: self.pods.clone(),
            requests: self.requests.plus(&pool.daemon_overhead),
            daemon_overhead: pool.daemon_overhead.clone(),
            labels: pool.labels.clone(),
            taints: pool.taints.clone(),
            cheapest: ChosenOffering {
                instance_type: first.name.clone(),
                zone: o.zone,
                capacity_type: o.capacity_type,
                price: o.price,
            },
        })
    }
}

/// An existing node (or in-flight NodeClaim) as a placement target.
pub(super) struct ExistingSlot {
    pub name: String,
    hostname: String,
    requirements: Requirements,
    taints: Vec<Taint>,
    available: Resources,
    host_ports: Vec<HostPort>,
}

impl ExistingSlot {
    pub fn new(node: &Node, used: &Resources, host_ports: Vec<HostPort>) -> Self {
        ExistingSlot {
            name: node.name.clone(),
            hostname: node.labels.get(labels::HOSTNAME).cloned().unwrap_or_else(|| node.name.clone()),
            requirements: Requirements::from_labels(&node.labels),
            taints: node.taints.clone(),
            available: node.allocatable.minus(used),
            host_ports,
        }
    }

    pub fn try_add(&mut self, pod: &Pod, data: &PodData, groups: &PodGroups, topology: &mut Topology) -> Result<(), String> {
        if !pod.requests.fits_in(&self.available) {
            return Err(format!("not enough resources on node {}", self.name));
        }
        if topology.hostname_blocked(groups, pod, &self.hostname) {
            return Err("pod anti-affinity on kubernetes.io/hostname".to_string());
        }
        if let Some(t) = first_untolerated(&self.taints, &data.tolerations) {
            return Err(format!("did not tolerate taint {t}"));
        }
        if pod.host_ports.iter().any(|hp| self.host_ports.iter().any(|u| u.conflicts(hp))) {
            return Err("host port conflict".to_string());
        }
        self.requirements.compatible(&data.requirements, &|_| false).map_err(|e| e.to_string())?;
        let mut reqs = self.requirements.clone();
        topology.add_requirements(pod, groups, &data.strict, &mut reqs, &self.taints).map_err(|e| e.0)?;
        if reqs.is_unsatisfiable() {
            return Err("topology".to_string());
        }
        topology.record(pod, groups, &self.requirements, &self.taints);
        self.available = self.available.minus(&pod.requests);
        self.host_ports.extend(pod.host_ports.iter().cloned());
        Ok(())
    }
}
