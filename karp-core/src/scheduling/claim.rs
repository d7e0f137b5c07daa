//! NodeClaims opened during a pass, and existing nodes as placement targets.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::topology::{Pins, PodGroups, Topology, TopologyError, NO_PINS};
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
    /// Available offerings as (zone index, capacity type index, price, offering index).
    offers: Vec<(u16, u16, f64, usize)>,
}

/// Which zones and capacity types a set of requirements allows, by pool index.
struct OfferingMask {
    zones: Vec<bool>,
    capacity_types: Vec<bool>,
}

/// A NodePool prepared for the pass.
pub(super) struct PoolCtx {
    pub name: String,
    pub template: Requirements,
    pub labels: BTreeMap<String, String>,
    pub taints: Arc<Vec<Taint>>,
    pub daemon_overhead: Resources,
    pub types: Vec<TypeCtx>,
    /// Each type's allocatable, by type index, side by side (the hot loops read only these).
    allocatable: Vec<Resources>,
    /// Every extended resource name some type's allocatable has, in order.
    extended_names: Vec<String>,
    /// Each type's allocatable amount of each of `extended_names` (`None`: the type lacks it),
    /// `extended_names.len()` entries per type: [`Bounds`] combines these by position.
    extended: Vec<Option<i64>>,
    /// [`bounds`] over every type (what each new NodeClaim starts with).
    all_bounds: (Resources, Resources),
    provider_keys: BTreeSet<String>,
    zones: Vec<String>,
    capacity_types: Vec<String>,
}

impl PoolCtx {
    pub fn new(
        pool: &NodePool,
        template: Requirements,
        daemon_overhead: Resources,
        provider_keys: BTreeSet<String>,
    ) -> Self {
        let mut types = Vec::new();
        // Inserted one by one: a few distinct values among thousands of offerings.
        let mut zone_set: BTreeSet<&str> = BTreeSet::new();
        let mut capacity_set: BTreeSet<&str> = BTreeSet::new();
        for o in pool.instance_types.iter().flat_map(|t| &t.offerings) {
            zone_set.insert(&o.zone);
            capacity_set.insert(&o.capacity_type);
        }
        let zones: Vec<String> = zone_set.into_iter().map(str::to_string).collect();
        let capacity_types: Vec<String> = capacity_set.into_iter().map(str::to_string).collect();
        for it in &pool.instance_types {
            // Keep only types the template allows and that have an offering it allows. Decided
            // before the type's full requirements are built: `full.intersects(&template)`, a
            // provider key the type lacks counting as `DoesNotExist`.
            let allowed = template
                .iter()
                .all(|tr| match it.requirements.get(tr.key()) {
                    Some(r) => r.intersects(tr),
                    None if provider_keys.contains(tr.key()) => {
                        Requirement::does_not_exist(tr.key()).intersects(tr)
                    }
                    None => true,
                });
            if allowed
                && it
                    .offerings
                    .iter()
                    .any(|o| o.available && o.compatible(&template))
            {
                let mut full = it.requirements.clone();
                for k in &provider_keys {
                    if !full.has_key(k) {
                        full.add(Requirement::does_not_exist(k.clone()));
                    }
                }
                let offers = it
                    .offerings
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.available)
                    .map(|(i, o)| {
                        let z = zones.binary_search(&o.zone).unwrap_or(0) as u16;
                        let c = capacity_types.binary_search(&o.capacity_type).unwrap_or(0) as u16;
                        (z, c, o.price, i)
                    })
                    .collect();
                types.push(TypeCtx {
                    it: it.clone(),
                    full,
                    offers,
                });
            }
        }
        let allocatable: Vec<Resources> =
            types.iter().map(|t| t.it.allocatable().clone()).collect();
        let (extended_names, extended) = extended_layout(&allocatable);
        let every: Vec<u32> = (0..types.len() as u32).collect();
        let all_bounds = bounds_of(&allocatable, &extended_names, &extended, &every);
        PoolCtx {
            extended_names,
            extended,
            allocatable,
            all_bounds,
            name: pool.name.clone(),
            template,
            labels: pool.labels.clone(),
            taints: Arc::new(pool.taints.clone()),
            daemon_overhead,
            types,
            provider_keys,
            zones,
            capacity_types,
        }
    }

    fn mask(&self, reqs: &Requirements) -> OfferingMask {
        let z = reqs.get(labels::ZONE);
        let c = reqs.get(labels::CAPACITY_TYPE);
        OfferingMask {
            zones: self
                .zones
                .iter()
                .map(|v| z.is_none_or(|r| r.has(v)))
                .collect(),
            capacity_types: self
                .capacity_types
                .iter()
                .map(|v| c.is_none_or(|r| r.has(v)))
                .collect(),
        }
    }

    /// Component-wise max and min allocatable over `types`.
    fn bounds(&self, types: &[u32]) -> (Resources, Resources) {
        if types.len() == self.types.len() {
            return self.all_bounds.clone();
        }
        bounds_of(
            &self.allocatable,
            &self.extended_names,
            &self.extended,
            types,
        )
    }

    /// Type `t`'s extended amounts by position in `extended_names`.
    fn extended_of(&self, t: u32) -> &[Option<i64>] {
        extended_row(&self.extended, self.extended_names.len(), t)
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

/// What the NodeClaims finalized in one pass share (one pass: pools are known by index).
#[derive(Default)]
pub(super) struct FinalizeCache {
    /// Per pool (by the claims' pool index), the `node.kubernetes.io/instance-type In [...]`
    /// requirement of each list of kept option indices.
    type_reqs: Vec<BTreeMap<Vec<u32>, Requirement>>,
    /// Per pool (by index), its types in launch order for an offering mask (zones then capacity
    /// types allowed): by their cheapest allowed offering's price, then name; types without one
    /// left out. A claim's options are this order filtered to its types, with no sort of its own.
    by_price: Vec<BTreeMap<Vec<bool>, PriceOrder>>,
}

/// Type indices with the price of their cheapest allowed offering, cheapest first.
type PriceOrder = Vec<(f64, u32)>;

impl PoolCtx {
    /// Every type with an offering `mask` allows, cheapest first (ties by name).
    fn price_order(&self, mask: &OfferingMask) -> PriceOrder {
        let mut order: PriceOrder = self
            .types
            .iter()
            .enumerate()
            .filter_map(|(t, tc)| {
                tc.offers
                    .iter()
                    .filter(|&&(z, c, _, _)| {
                        mask.zones[z as usize] && mask.capacity_types[c as usize]
                    })
                    .map(|&(_, _, p, _)| p)
                    .min_by(f64::total_cmp)
                    .map(|p| (p, t as u32))
            })
            .collect();
        order.sort_by(|a, b| {
            a.0.total_cmp(&b.0).then_with(|| {
                self.types[a.1 as usize]
                    .it
                    .name
                    .cmp(&self.types[b.1 as usize].it.name)
            })
        });
        order
    }
}

impl OfferingMask {
    /// The mask as one key: zones, then capacity types.
    fn key(&self) -> Vec<bool> {
        self.zones
            .iter()
            .chain(&self.capacity_types)
            .copied()
            .collect()
    }
}

/// Why a pod does not go on a claim or node. A pass tries each pod on many claims and discards
/// the reasons, so making one allocates nothing in the common cases: a fixed reason, or a
/// topology group that cannot be satisfied. The text is made only when a reason is reported
/// ([`Reject::describe`]).
#[derive(Debug, Clone)]
pub(super) enum Reject {
    /// A reason worded already.
    Text(Cow<'static, str>),
    /// A topology group refused the placement.
    Topology(TopologyError),
}

impl From<&'static str> for Reject {
    fn from(s: &'static str) -> Self {
        Reject::Text(Cow::Borrowed(s))
    }
}

impl From<String> for Reject {
    fn from(s: String) -> Self {
        Reject::Text(Cow::Owned(s))
    }
}

impl Reject {
    /// The reason in words (a topology group described by `topology`, which refused it).
    pub(super) fn describe(self, topology: &Topology<'_>) -> String {
        match self {
            Reject::Text(t) => t.into_owned(),
            Reject::Topology(e) => topology.describe_error(&e),
        }
    }
}

/// A NodeClaim opened in this pass.
pub(super) struct Claim {
    pub pool: usize,
    pub hostname: String,
    host: u32,
    pub requirements: Arc<Requirements>,
    pub pods: Vec<usize>,
    /// Pod requests (without daemon overhead).
    pub requests: Resources,
    /// Pod requests plus daemon overhead.
    with_daemons: Resources,
    pub types: Vec<u32>,
    /// Component-wise max / min allocatable over `types` (quick accept / reject).
    max_alloc: Resources,
    min_alloc: Resources,
    host_ports: Vec<HostPort>,
    /// Its pinned topology domains, from `requirements` (see [`Pins`]).
    pub pins: Pins,
}

/// The extended resource names of `allocatable` (sorted, each once) and every allocatable's
/// amount of each, by position (`None` where it lacks one): the layout [`bounds_of`] reads.
fn extended_layout(allocatable: &[Resources]) -> (Vec<String>, Vec<Option<i64>>) {
    let names: Vec<String> = allocatable
        .iter()
        .flat_map(|a| a.extended.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .cloned()
        .collect();
    let amounts = allocatable
        .iter()
        .flat_map(|a| names.iter().map(|n| a.extended.get(n).copied()))
        .collect();
    (names, amounts)
}

fn bounds_of(
    allocatable: &[Resources],
    names: &[String],
    extended: &[Option<i64>],
    types: &[u32],
) -> (Resources, Resources) {
    let mut b = Bounds::default();
    for &t in types {
        b.add(
            &allocatable[t as usize],
            extended_row(extended, names.len(), t),
        );
    }
    b.into_pair(names)
}

/// Type `t`'s row of an [`extended_layout`] with `k` names.
fn extended_row(extended: &[Option<i64>], k: usize, t: u32) -> &[Option<i64>] {
    let t = t as usize;
    &extended[t * k..(t + 1) * k]
}

/// Component-wise max and min of the allocatables added so far. Extended resources are kept
/// by position in the pool's `extended_names`: the maximum over the types that have one, the
/// minimum only while every type added has it (a type without it holds none).
#[derive(Default)]
struct Bounds {
    max: Resources,
    min: Resources,
    any: bool,
    ext_max: Vec<Option<i64>>,
    ext_min: Vec<Option<i64>>,
}

impl Bounds {
    /// Add an allocatable, `ext` being its extended amounts by the pool's name positions.
    fn add(&mut self, a: &Resources, ext: &[Option<i64>]) {
        let (max, min) = (&mut self.max, &mut self.min);
        if !self.any {
            for r in [&mut *max, &mut *min] {
                r.cpu = a.cpu;
                r.memory = a.memory;
                r.ephemeral_storage = a.ephemeral_storage;
                r.pods = a.pods;
            }
            self.ext_max = ext.to_vec();
            self.ext_min = ext.to_vec();
            self.any = true;
            return;
        }
        max.cpu = max.cpu.max(a.cpu);
        max.memory = max.memory.max(a.memory);
        max.ephemeral_storage = max.ephemeral_storage.max(a.ephemeral_storage);
        max.pods = max.pods.max(a.pods);
        min.cpu = min.cpu.min(a.cpu);
        min.memory = min.memory.min(a.memory);
        min.ephemeral_storage = min.ephemeral_storage.min(a.ephemeral_storage);
        min.pods = min.pods.min(a.pods);
        for ((hi, lo), v) in self.ext_max.iter_mut().zip(&mut self.ext_min).zip(ext) {
            *hi = match (*hi, *v) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            };
            *lo = match (*lo, *v) {
                (Some(x), Some(y)) => Some(x.min(y)),
                _ => None,
            };
        }
    }

    /// The max and min, with extended amounts named by `names`.
    fn into_pair(self, names: &[String]) -> (Resources, Resources) {
        let named = |ext: Vec<Option<i64>>| -> BTreeMap<String, i64> {
            names
                .iter()
                .zip(ext)
                .filter_map(|(n, v)| v.map(|v| (n.clone(), v)))
                .collect()
        };
        let (mut max, mut min) = (self.max, self.min);
        max.extended = named(self.ext_max);
        min.extended = named(self.ext_min);
        (max, min)
    }
}

/// The labels a NodeClaim's node carries besides those of its instance type and offering: the
/// template labels, and for every other label its requirements constrain (that no instance type
/// sets) a concrete value, as Karpenter sets one from the requirement (`In`: its first value; `Gt`
/// / `Gte`: the smallest allowed integer; `Exists` / `NotIn`: a generated value).
pub(super) fn node_labels(pool: &PoolCtx, reqs: &Requirements) -> BTreeMap<String, String> {
    let mut out = pool.labels.clone();
    for r in reqs.iter() {
        let key = r.key();
        if out.contains_key(key)
            || key == labels::HOSTNAME
            || pool.is_well_known(key)
            || r.allows_absent()
        {
            continue;
        }
        let value = match r.values().first() {
            Some(v) => Some((*v).to_string()),
            None => match r.bounds() {
                (Some(lo), _) => Some(lo.to_string()),
                (None, Some(hi)) => Some(hi.to_string()),
                (None, None) => (0..)
                    .map(|i| format!("karp-generated-{i}"))
                    .find(|v| r.has(v)),
            },
        };
        if let Some(v) = value.filter(|v| r.has(v)) {
            out.insert(key.to_string(), v);
        }
    }
    out
}

/// Whether the type can be launched under `reqs`: compatible labels on the `changed` keys and an
/// available offering in an allowed zone and capacity type.
fn type_allowed(t: &TypeCtx, reqs: &Requirements, changed: &[&str], mask: &OfferingMask) -> bool {
    changed.iter().all(|k| {
        *k == labels::ZONE
            || *k == labels::CAPACITY_TYPE
            || match (t.full.get(k), reqs.get(k)) {
                (Some(tr), Some(r)) => tr.intersects(r),
                _ => true,
            }
    }) && t
        .offers
        .iter()
        .any(|&(z, c, _, _)| mask.zones[z as usize] && mask.capacity_types[c as usize])
}

/// Keys whose requirement differs between `old` and `new`.
fn changed_keys<'a>(old: &Requirements, new: &'a Requirements) -> Vec<&'a str> {
    new.iter()
        .filter(|r| old.get(r.key()) != Some(*r))
        .map(Requirement::key)
        .collect()
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
                return Some(format!(
                    "minValues requirement on {} needs {min} distinct values, only {n} remain",
                    r.key()
                ));
            }
        }
    }
    None
}

impl Claim {
    pub fn new(
        pool_idx: usize,
        pool: &PoolCtx,
        hostname: String,
        host: u32,
        types: Vec<u32>,
    ) -> Self {
        let mut requirements = pool.template.clone();
        requirements.add(Requirement::in_values(labels::HOSTNAME, [hostname.clone()]));
        let (max_alloc, min_alloc) = pool.bounds(&types);
        Claim {
            pool: pool_idx,
            hostname,
            host,
            requirements: Arc::new(requirements),
            pods: Vec::new(),
            requests: Resources::new(),
            with_daemons: pool.daemon_overhead.clone(),
            types,
            max_alloc,
            min_alloc,
            host_ports: Vec::new(),
            pins: NO_PINS,
        }
    }

    /// A NodeClaim with given requirements and pods, keeping every type of the pool that allows
    /// the requirements and holds the pods plus the daemonset overhead (no topology checks: the
    /// caller guarantees the pods' topology, e.g. by keeping an earlier placement).
    pub fn with_pods(
        pool_idx: usize,
        pool: &PoolCtx,
        hostname: String,
        host: u32,
        requirements: Requirements,
        pods: Vec<usize>,
        requests: Resources,
    ) -> Option<Self> {
        let with_daemons = requests.plus(&pool.daemon_overhead);
        let keys: Vec<&str> = requirements.keys().collect();
        let mask = pool.mask(&requirements);
        let types: Vec<u32> = (0..pool.types.len() as u32)
            .filter(|&t| {
                let tc = &pool.types[t as usize];
                with_daemons.fits_in(&pool.allocatable[t as usize])
                    && type_allowed(tc, &requirements, &keys, &mask)
            })
            .collect();
        if types.is_empty() {
            return None;
        }
        let (max_alloc, min_alloc) = pool.bounds(&types);
        Some(Claim {
            pool: pool_idx,
            hostname,
            host,
            requirements: Arc::new(requirements),
            pods,
            requests,
            with_daemons,
            types,
            max_alloc,
            min_alloc,
            host_ports: Vec::new(),
            pins: NO_PINS,
        })
    }

    /// Record the host ports of a pod placed without [`Claim::try_add`].
    pub fn add_host_ports(&mut self, pod: &Pod) {
        self.host_ports.extend(pod.host_ports.iter().cloned());
    }

    /// Largest capacity of resource `name` among the remaining options (for limits).
    pub fn max_capacity(&self, pool: &PoolCtx, name: &str) -> i64 {
        self.types
            .iter()
            .map(|&t| pool.types[t as usize].it.capacity.get(name))
            .max()
            .unwrap_or(0)
    }

    /// Try to add the pod; on success the claim is updated (the caller records the pod index).
    pub fn try_add<'t>(
        &mut self,
        pod: &'t Pod,
        data: &PodData,
        groups: &PodGroups,
        pool: &PoolCtx,
        topology: &mut Topology<'t>,
    ) -> Result<(), Reject> {
        // Quick rejections first: they decide most attempts in large passes.
        if !self.pods.is_empty()
            && !self
                .with_daemons
                .sum_fits_in(&pod.requests, &self.max_alloc)
        {
            return Err("no remaining instance type has room".into());
        }
        if topology.hostname_blocked(groups, self.host) {
            return Err("pod anti-affinity on kubernetes.io/hostname".into());
        }
        if let Some(t) = first_untolerated(&pool.taints, &data.tolerations) {
            return Err(format!("did not tolerate taint {t}").into());
        }
        if let Some(hp) = pod
            .host_ports
            .iter()
            .find(|hp| self.host_ports.iter().any(|u| u.conflicts(hp)))
        {
            return Err(format!(
                "host port {}/{} is already used on the node",
                hp.port, hp.protocol
            )
            .into());
        }
        self.requirements
            .compatible(&data.requirements, &|k| pool.is_well_known(k))
            .map_err(|e| Reject::from(format!("incompatible requirements, {e}")))?;
        let mut reqs: Cow<'_, Requirements> =
            if self.requirements.is_narrowed_by(&data.requirements) {
                Cow::Owned(self.requirements.intersect(&data.requirements))
            } else {
                Cow::Borrowed(&*self.requirements)
            };
        topology
            .add_requirements(pod, groups, &data.strict, &mut reqs, &pool.taints)
            .map_err(Reject::Topology)?;
        let changed = matches!(reqs, Cow::Owned(_));
        if changed && reqs.is_unsatisfiable() {
            return Err(format!("incompatible requirements, {reqs}").into());
        }
        let total = self.requests.plus(&pod.requests);
        let with_daemons = total.plus(&pool.daemon_overhead);
        // Instance types still able to hold everything.
        let quick_fit = with_daemons.fits_in(&self.min_alloc);
        // `None`: every type stays. Otherwise the types that stay, with their bounds (taken in
        // the same pass over them).
        let narrowed: Option<(Vec<u32>, Bounds)> = if quick_fit && !changed {
            None
        } else {
            let keys = if changed {
                changed_keys(&self.requirements, &reqs)
            } else {
                Vec::new()
            };
            let mask = pool.mask(&reqs);
            let mut kept = Vec::with_capacity(self.types.len());
            let mut b = Bounds::default();
            for &t in &self.types {
                let a = &pool.allocatable[t as usize];
                if (quick_fit || with_daemons.fits_in(a))
                    && (!changed || type_allowed(&pool.types[t as usize], &reqs, &keys, &mask))
                {
                    kept.push(t);
                    b.add(a, pool.extended_of(t));
                }
            }
            Some((kept, b))
        }
        .filter(|(r, _)| r.len() != self.types.len());
        let remaining = narrowed.as_ref().map_or(&self.types[..], |(r, _)| r);
        if remaining.is_empty() {
            return Err(self
                .explain_no_type(pool, &reqs, &pod.requests, &with_daemons)
                .into());
        }
        if let Some(v) = min_values_violation(pool, remaining, &reqs) {
            return Err(v.into());
        }
        if let Cow::Owned(r) = reqs {
            self.requirements = Arc::new(r);
        }
        topology.record(pod, groups, &self.requirements, &pool.taints);
        if changed {
            self.pins = topology.pins_of(&self.requirements);
        }
        if let Some((remaining, b)) = narrowed {
            let (max_alloc, min_alloc) = b.into_pair(&pool.extended_names);
            self.max_alloc = max_alloc;
            self.min_alloc = min_alloc;
            self.types = remaining;
        }
        self.requests = total;
        self.with_daemons = with_daemons;
        self.host_ports.extend(pod.host_ports.iter().cloned());
        Ok(())
    }

    fn explain_no_type(
        &self,
        pool: &PoolCtx,
        reqs: &Requirements,
        pod_requests: &Resources,
        total: &Resources,
    ) -> String {
        let keys: Vec<&str> = reqs.keys().collect();
        let mask = pool.mask(reqs);
        let by_reqs = self
            .types
            .iter()
            .filter(|&&t| type_allowed(&pool.types[t as usize], reqs, &keys, &mask))
            .count();
        let by_res = self
            .types
            .iter()
            .filter(|&&t| total.fits_in(&pool.allocatable[t as usize]))
            .count();
        let overhead = if pool.daemon_overhead.is_zero() {
            String::new()
        } else {
            format!(
                " plus daemonset overhead {{{}}}",
                pool.daemon_overhead.describe()
            )
        };
        let mut shown = reqs.clone();
        shown.remove(labels::HOSTNAME);
        if self.types.is_empty() {
            "no instance type of the nodepool matches its requirements and offerings".to_string()
        } else if by_reqs == 0 {
            format!("no instance type satisfies requirements {shown} with an available offering")
        } else if by_res == 0 {
            if self.pods.is_empty() {
                format!(
                    "no instance type has enough resources for requests {{{}}}{overhead}",
                    pod_requests.describe()
                )
            } else {
                format!(
                    "no instance type has enough resources for {{{}}}",
                    total.describe()
                )
            }
        } else {
            format!(
                "no instance type satisfies both requirements and resources ({by_reqs} types match requirements {shown}, {by_res} have room for {{{}}}{overhead})",
                pod_requests.describe()
            )
        }
    }

    /// Order the options by price, truncate, and describe the NodeClaim. It keeps the
    /// instance-type requirement (`type_reqs`) of each option list seen in this pass (claims of one pool often
    /// end with the same options; the requirement's values are shared, not copied).
    pub fn finalize(
        &self,
        pool: &PoolCtx,
        max_types: usize,
        cache: &mut FinalizeCache,
    ) -> Result<NewNodeClaim, String> {
        let mut reqs = (*self.requirements).clone();
        let mask = pool.mask(&reqs);
        // The claim's types in the pool's launch order for this mask, the cheapest `max_types`.
        if cache.by_price.len() <= self.pool {
            cache.by_price.resize_with(self.pool + 1, BTreeMap::new);
            cache.type_reqs.resize_with(self.pool + 1, BTreeMap::new);
        }
        let order = cache.by_price[self.pool]
            .entry(mask.key())
            .or_insert_with(|| pool.price_order(&mask));
        let mut member = vec![false; pool.types.len()];
        for &t in &self.types {
            member[t as usize] = true;
        }
        let options: Vec<(f64, &Arc<InstanceType>, u32)> = order
            .iter()
            .filter(|&&(_, t)| member[t as usize])
            .take(max_types.max(1))
            .map(|&(p, t)| (p, &pool.types[t as usize].it, t))
            .collect();
        let kept: Vec<u32> = options.iter().map(|o| o.2).collect();
        if let Some(v) = min_values_violation(pool, &kept, &reqs) {
            return Err(format!(
                "after truncating to the {max_types} cheapest instance types, {v}"
            ));
        }
        let types: Vec<Arc<InstanceType>> = options.iter().map(|o| o.1.clone()).collect();
        let Some(first) = types.first() else {
            return Err("no instance type with an available offering remains".to_string());
        };
        // Capacity types actually offered by the options (marked by index, named once).
        let mut offered_idx = vec![false; pool.capacity_types.len()];
        for &t in &kept {
            for &(z, c, _, _) in &pool.types[t as usize].offers {
                if mask.zones[z as usize] && mask.capacity_types[c as usize] {
                    offered_idx[c as usize] = true;
                }
            }
        }
        let offered: BTreeSet<String> = offered_idx
            .iter()
            .zip(&pool.capacity_types)
            .filter(|(on, _)| **on)
            .map(|(_, c)| c.clone())
            .collect();
        reqs.add(Requirement::in_values(labels::CAPACITY_TYPE, offered));
        let type_reqs = &mut cache.type_reqs[self.pool];
        let type_req = match type_reqs.get(kept.as_slice()) {
            Some(r) => r.clone(),
            None => {
                let r = instance_type_requirement(&types);
                type_reqs.insert(kept, r.clone());
                r
            }
        };
        reqs.add(type_req);
        let offering = first.cheapest_offering(&reqs).cloned();
        let first_name = first.name.clone();
        reqs.remove(labels::HOSTNAME);
        let Some(o) = offering else {
            return Err("no instance type with an available offering remains".to_string());
        };
        Ok(NewNodeClaim {
            nodepool: pool.name.clone(),
            hostname: self.hostname.clone(),
            requirements: reqs,
            // Moved, not cloned: every clone of a type's `Arc` is an atomic write to the type.
            instance_types: types,
            pods: self.pods.clone(),
            requests: self.requests.plus(&pool.daemon_overhead),
            daemon_overhead: pool.daemon_overhead.clone(),
            labels: node_labels(pool, &self.requirements),
            taints: pool.taints.to_vec(),
            cheapest: ChosenOffering {
                instance_type: first_name,
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
    host: u32,
    requirements: Arc<Requirements>,
    taints: Arc<Vec<Taint>>,
    available: Resources,
    host_ports: Vec<HostPort>,
}

impl ExistingSlot {
    pub fn new(
        node: &Node,
        used: &Resources,
        host_ports: Vec<HostPort>,
        info: &super::cache::NodeInfo,
    ) -> Self {
        ExistingSlot {
            name: node.name.clone(),
            hostname: node
                .labels
                .get(labels::HOSTNAME)
                .cloned()
                .unwrap_or_else(|| node.name.clone()),
            host: u32::MAX,
            requirements: info.0.clone(),
            taints: info.1.clone(),
            available: node.allocatable.minus(used),
            host_ports,
        }
    }

    /// Look up the node's hostname domain (after the topology is built).
    pub fn bind(&mut self, topology: &mut Topology<'_>) {
        self.host = topology.hostname_id(&self.hostname);
    }

    pub fn try_add<'t>(
        &mut self,
        pod: &'t Pod,
        data: &PodData,
        groups: &PodGroups,
        topology: &mut Topology<'t>,
    ) -> Result<(), Reject> {
        if !pod.requests.fits_in(&self.available) {
            return Err("not enough resources on the node".into());
        }
        if topology.hostname_blocked(groups, self.host) {
            return Err("pod anti-affinity on kubernetes.io/hostname".into());
        }
        if let Some(t) = first_untolerated(&self.taints, &data.tolerations) {
            return Err(format!("did not tolerate taint {t}").into());
        }
        if pod
            .host_ports
            .iter()
            .any(|hp| self.host_ports.iter().any(|u| u.conflicts(hp)))
        {
            return Err("host port conflict".into());
        }
        self.requirements
            .compatible(&data.requirements, &|_| false)
            .map_err(|e| Reject::from(e.to_string()))?;
        let mut reqs: Cow<'_, Requirements> = Cow::Borrowed(&*self.requirements);
        topology
            .add_requirements(pod, groups, &data.strict, &mut reqs, &self.taints)
            .map_err(Reject::Topology)?;
        if reqs.is_unsatisfiable() {
            return Err("topology".into());
        }
        topology.record(pod, groups, &self.requirements, &self.taints);
        self.available = self.available.minus(&pod.requests);
        self.host_ports.extend(pod.host_ports.iter().cloned());
        Ok(())
    }
}

#[cfg(test)]
mod bounds_tests {
    use super::{bounds_of, extended_layout};
    use crate::resources::Resources;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn allocatable() -> impl Strategy<Value = Resources> {
        (
            0i64..64,
            0i64..64,
            proptest::collection::btree_map(
                proptest::sample::select(vec!["a", "b/gpu", "c", "vpc/pod-eni", "z"])
                    .prop_map(String::from),
                0i64..8,
                0..5,
            ),
        )
            .prop_map(|(cpu, memory, extended)| Resources {
                cpu,
                memory,
                pods: 110,
                extended,
                ..Resources::default()
            })
    }

    proptest! {
        /// The dense bounds equal the definition: per resource the maximum over the types that
        /// have it, and the minimum over the types, a type lacking an extended resource
        /// leaving it out of the minimum.
        #[test]
        fn bounds_equal_the_definition(
            types in proptest::collection::vec(allocatable(), 1..8),
            pick in proptest::collection::vec(any::<bool>(), 8),
        ) {
            let (names, dense) = extended_layout(&types);
            let chosen: Vec<u32> = (0..types.len() as u32).filter(|&i| pick[i as usize]).collect();
            prop_assume!(!chosen.is_empty());
            let (max, min) = bounds_of(&types, &names, &dense, &chosen);
            let of = |i: &u32| &types[*i as usize];
            prop_assert_eq!(max.cpu, chosen.iter().map(|i| of(i).cpu).max().unwrap());
            prop_assert_eq!(min.memory, chosen.iter().map(|i| of(i).memory).min().unwrap());
            let mut want_max: BTreeMap<String, i64> = BTreeMap::new();
            for i in &chosen {
                for (k, v) in &of(i).extended {
                    let e = want_max.entry(k.clone()).or_insert(*v);
                    *e = (*e).max(*v);
                }
            }
            let want_min: BTreeMap<String, i64> = names
                .iter()
                .filter_map(|n| {
                    chosen
                        .iter()
                        .map(|i| of(i).extended.get(n).copied())
                        .collect::<Option<Vec<i64>>>()
                        .map(|v| (n.clone(), v.into_iter().min().unwrap()))
                })
                .collect();
            prop_assert_eq!(max.extended, want_max);
            prop_assert_eq!(min.extended, want_min);
        }
    }
}
