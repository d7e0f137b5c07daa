//! Topology groups: pod counts per topology domain for spread constraints and pod (anti-)affinity.
//!
//! Follows Karpenter's model: every distinct constraint (type, key, selector, namespaces, skew,
//! node filter) is one group shared by all pods that own it. Spread and affinity count a pod in a
//! domain only once its node is pinned to a single domain; anti-affinity counts every domain the
//! pod might land in. Inverse anti-affinity groups keep pods out of the domains of pods whose
//! required anti-affinity selects them (symmetry).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::cluster::ClusterSnapshot;

use super::cache::Shared;
use crate::labels;
use crate::pod::{InclusionPolicy, LabelSelector, NamespaceSet, Pod, WhenUnsatisfiable};
use crate::requirements::{Requirement, Requirements};
use crate::taints::{first_untolerated, Taint, Toleration};

/// Which nodes a spread group counts (nodeAffinityPolicy / nodeTaintsPolicy).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub(crate) struct NodeFilter {
    /// OR-ed node requirement terms; empty means every node.
    terms: Vec<Requirements>,
    /// Tolerations the node's taints must be tolerated by, when the taints policy is Honor.
    tolerations: Option<Vec<Toleration>>,
}

impl NodeFilter {
    fn for_pod(pod: &Pod, affinity: InclusionPolicy, taints: InclusionPolicy) -> Self {
        let mut terms = Vec::new();
        if affinity == InclusionPolicy::Honor {
            let base = pod.node_selector.clone();
            if pod.required_node_affinity.is_empty() {
                if !base.is_empty() {
                    terms.push(base);
                }
            } else {
                for t in &pod.required_node_affinity {
                    terms.push(base.intersect(t));
                }
            }
        }
        let tolerations = (taints == InclusionPolicy::Honor).then(|| pod.tolerations.clone());
        NodeFilter { terms, tolerations }
    }

    fn matches(&self, node: &Requirements, taints: &[Taint]) -> bool {
        (self.terms.is_empty() || self.terms.iter().any(|t| t.intersects(node)))
            && self
                .tolerations
                .as_ref()
                .is_none_or(|tol| first_untolerated(taints, tol).is_none())
    }
}

/// The kind of a topology group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum GroupKind {
    Spread {
        max_skew: i32,
        min_domains: Option<i32>,
        filter: NodeFilter,
    },
    Affinity,
    AntiAffinity,
    /// The anti-affinity of already placed pods, seen from pods it selects.
    InverseAntiAffinity,
}

/// Identity of a group (Karpenter hashes the same fields).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupKey {
    pub kind: GroupKind,
    pub key: String,
    pub namespaces: NamespaceSet,
    pub selector: LabelSelector,
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: GroupKey,
    /// Count per domain id (index into the key's domain table).
    counts: Vec<i32>,
    /// Domains with a non-zero count.
    nonzero: BTreeSet<u32>,
    /// The key's slot in the topology's pin keys, if it has one.
    pin_slot: Option<usize>,
}

impl Group {
    fn selects(&self, pod: &Pod) -> bool {
        self.id.namespaces.contains(&pod.namespace) && self.id.selector.matches(&pod.labels)
    }

    fn count(&self, d: u32) -> i32 {
        self.counts.get(d as usize).copied().unwrap_or(0)
    }

    fn record(&mut self, d: u32) {
        let i = d as usize;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.nonzero.insert(d);
    }

    /// A person-readable description for unschedulable reasons.
    pub fn describe(&self) -> String {
        match &self.id.kind {
            GroupKind::Spread {
                max_skew,
                min_domains,
                ..
            } => {
                let md = min_domains
                    .map(|m| format!(", minDomains {m}"))
                    .unwrap_or_default();
                format!(
                    "topology spread constraint on {} (maxSkew {max_skew}{md})",
                    self.id.key
                )
            }
            GroupKind::Affinity => format!("pod affinity on {}", self.id.key),
            GroupKind::AntiAffinity => format!("pod anti-affinity on {}", self.id.key),
            GroupKind::InverseAntiAffinity => {
                format!("anti-affinity of other pods on {}", self.id.key)
            }
        }
    }
}

/// Interned domain names of one topology key.
#[derive(Debug, Clone, Default)]
struct Domains {
    ids: BTreeMap<String, u32>,
    names: Vec<String>,
}

impl Domains {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.to_string(), id);
        self.names.push(name.to_string());
        id
    }
}

/// The global minimum count of a spread group over the domains the pod may use: 0 for hostname
/// (a new node is always possible) and when fewer than `minDomains` domains are eligible.
fn spread_min(
    group: &Group,
    key: &str,
    table: &Domains,
    pod_domains: Option<&Requirement>,
    min_domains: Option<i32>,
) -> i32 {
    if key == labels::HOSTNAME {
        return 0;
    }
    let mut min = i32::MAX;
    let mut eligible = 0;
    for (n, &d) in &table.ids {
        if pod_domains.is_none_or(|r| r.has(n)) {
            eligible += 1;
            min = min.min(group.count(d));
        }
    }
    if eligible == 0 || min_domains.is_some_and(|m| eligible < m) {
        0
    } else {
        min
    }
}

/// The groups one pod takes part in.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodGroups {
    /// Groups created from the pod's own constraints.
    pub owned: Vec<usize>,
    /// Inverse anti-affinity groups owned by this pod (its required anti-affinity terms).
    pub inverse_owned: Vec<usize>,
    /// Spread and affinity groups of other pods that count this pod (so its domain gets pinned).
    pub selected_by: Vec<usize>,
    /// Inverse anti-affinity groups (of other pods) that select this pod.
    pub inverse_selecting: Vec<usize>,
    /// Non-inverse groups that count this pod when it is placed.
    pub counted_in: Vec<usize>,
    /// Groups that forbid hostnames where they have a count (quick rejection).
    pub hostname_blockers: Vec<usize>,
    /// Number of groups that existed when the lists above were computed.
    pub known: usize,
}

impl PodGroups {
    /// Whether group `g` selects the pod (from the precomputed lists; `None` for groups created
    /// after they were computed).
    fn selects(&self, g: usize) -> Option<bool> {
        if g >= self.known {
            return None;
        }
        Some(
            self.counted_in.binary_search(&g).is_ok()
                || self.inverse_selecting.binary_search(&g).is_ok(),
        )
    }
}

/// A pod placed so far, kept for counting groups created later.
#[derive(Debug, Clone)]
struct Placed<'a> {
    pod: &'a Pod,
    reqs: Arc<Requirements>,
    taints: Arc<Vec<Taint>>,
}

/// All topology groups of a scheduling pass.
#[derive(Debug, Clone, Default)]
pub(crate) struct Topology<'a> {
    groups: Vec<Group>,
    index: BTreeMap<GroupKey, usize>,
    domains: BTreeMap<String, Domains>,
    /// Inverse groups (indices).
    inverse: Vec<usize>,
    /// Pods placed so far (bound pods and this pass).
    placed: Vec<Placed<'a>>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Up to [`PIN_SLOTS`] group keys other than the hostname, in order of first use: a
    /// NodeClaim keeps its pinned domain of each ([`Pins`]).
    pin_keys: Vec<String>,
}

/// How many topology keys a NodeClaim keeps its pinned domain of.
pub(crate) const PIN_SLOTS: usize = 4;

/// A NodeClaim's pinned domain id per [`Topology`] pin key (`u32::MAX`: not pinned, or not
/// known when last computed), kept in the claim so that a placement scan can refuse it without
/// reading its requirement map.
pub(crate) type Pins = [u32; PIN_SLOTS];

/// No pinned domain known.
pub(crate) const NO_PINS: Pins = [u32::MAX; PIN_SLOTS];

/// A constraint of a pod turned into a group key, plus whether it is inverse-owned.
fn pod_group_keys(
    pod: &Pod,
    c: &PodConstraints<'_>,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> (Vec<GroupKey>, Vec<GroupKey>) {
    let mut owned = Vec::new();
    let mut inverse = Vec::new();
    for tsc in &c.spread {
        let Some(selector) = pod.spread_selector(tsc) else {
            continue;
        };
        owned.push(GroupKey {
            kind: GroupKind::Spread {
                max_skew: tsc.max_skew.max(1),
                min_domains: tsc.min_domains,
                filter: NodeFilter::for_pod(pod, tsc.node_affinity_policy, tsc.node_taints_policy),
            },
            key: tsc.topology_key.clone(),
            namespaces: NamespaceSet::Only([pod.namespace.clone()].into_iter().collect()),
            selector,
        });
    }
    for (terms, kind) in [
        (&c.affinity, GroupKind::Affinity),
        (&c.anti_affinity, GroupKind::AntiAffinity),
    ] {
        for term in terms {
            let Some(selector) = pod.term_selector(term) else {
                continue;
            };
            owned.push(GroupKey {
                kind: kind.clone(),
                key: term.topology_key.clone(),
                namespaces: pod.term_namespaces(term, namespaces),
                selector,
            });
        }
    }
    for term in &pod.pod_anti_affinity {
        let Some(selector) = pod.term_selector(term) else {
            continue;
        };
        inverse.push(GroupKey {
            kind: GroupKind::InverseAntiAffinity,
            key: term.topology_key.clone(),
            namespaces: pod.term_namespaces(term, namespaces),
            selector,
        });
    }
    (owned, inverse)
}

/// The (possibly relaxed) constraints of a pending pod that create groups, borrowed from it.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodConstraints<'p> {
    pub spread: Vec<&'p crate::pod::TopologySpreadConstraint>,
    pub affinity: Vec<&'p crate::pod::PodAffinityTerm>,
    pub anti_affinity: Vec<&'p crate::pod::PodAffinityTerm>,
}

impl<'p> PodConstraints<'p> {
    /// Required and preferred terms, all treated as required; ScheduleAnyway spread included
    /// only when preferences are respected.
    pub fn of(pod: &'p Pod, respect_preferences: bool) -> Self {
        let spread = pod
            .topology_spread
            .iter()
            .filter(|t| {
                respect_preferences || t.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule
            })
            .collect();
        let mut affinity: Vec<_> = pod.pod_affinity.iter().collect();
        let mut anti_affinity: Vec<_> = pod.pod_anti_affinity.iter().collect();
        if respect_preferences {
            affinity.extend(pod.preferred_pod_affinity.iter().map(|w| &w.term));
            anti_affinity.extend(pod.preferred_pod_anti_affinity.iter().map(|w| &w.term));
        }
        PodConstraints {
            spread,
            affinity,
            anti_affinity,
        }
    }
}

/// Why the topology refused a placement: a group (by index) that cannot be satisfied, worded by
/// [`Topology::describe_error`] when it is reported.
#[derive(Debug, Clone)]
pub(crate) struct TopologyError {
    group: usize,
}

impl<'a> Topology<'a> {
    /// Build the topology from the snapshot: domains from node pools, instance types and nodes;
    /// groups of every pending pod; counts of bound pods.
    pub fn new(
        snapshot: &'a ClusterSnapshot,
        pending: &[(usize, PodConstraints<'_>)],
        shared: &Shared,
    ) -> (Self, Vec<PodGroups>) {
        let mut t = Topology {
            namespaces: snapshot.namespaces.clone(),
            ..Default::default()
        };
        for n in &snapshot.nodes {
            for (k, v) in &n.labels {
                t.intern_domain(k, Some(v));
            }
        }
        for (_, domains) in &shared.pools {
            for (k, v) in domains.iter() {
                t.intern_domain(k, v.as_deref());
            }
        }
        // Bound pods, placed on their nodes.
        for p in &snapshot.pods {
            if let Some((reqs, taints)) = p.node_name.as_ref().and_then(|n| shared.nodes.get(n)) {
                t.placed.push(Placed {
                    pod: p,
                    reqs: reqs.clone(),
                    taints: taints.clone(),
                });
            }
        }
        // Inverse groups of bound pods with required anti-affinity.
        for i in 0..t.placed.len() {
            let placed = t.placed[i].clone();
            let (_, inverse) =
                pod_group_keys(placed.pod, &PodConstraints::default(), &t.namespaces);
            for key in inverse {
                let g = t.ensure(key);
                t.record_possible(g, &placed.reqs);
            }
        }
        let mut per_pod = Vec::with_capacity(pending.len());
        for (idx, c) in pending {
            let (owned, inverse) = pod_group_keys(&snapshot.pods[*idx], c, &t.namespaces);
            let owned: Vec<usize> = owned.into_iter().map(|k| t.ensure(k)).collect();
            let inverse_owned: Vec<usize> = inverse.into_iter().map(|k| t.ensure(k)).collect();
            per_pod.push(PodGroups {
                owned,
                inverse_owned,
                ..Default::default()
            });
        }
        // Now that every group exists, find the ones that count or constrain each pod.
        for ((idx, _), g) in pending.iter().zip(per_pod.iter_mut()) {
            t.index_pod(&snapshot.pods[*idx], g);
        }
        (t, per_pod)
    }

    fn index_pod(&self, pod: &Pod, g: &mut PodGroups) {
        g.owned.sort_unstable();
        g.owned.dedup();
        g.selected_by = self.selecting(pod, &g.owned, 0);
        g.inverse_selecting = self
            .inverse
            .iter()
            .copied()
            .filter(|&i| self.groups[i].selects(pod))
            .collect();
        g.counted_in = (0..self.groups.len())
            .filter(|&i| {
                self.groups[i].id.kind != GroupKind::InverseAntiAffinity
                    && self.groups[i].selects(pod)
            })
            .collect();
        g.hostname_blockers = g
            .owned
            .iter()
            .copied()
            .filter(|&i| self.groups[i].id.kind == GroupKind::AntiAffinity)
            .chain(g.inverse_selecting.iter().copied())
            .filter(|&i| self.groups[i].id.key == labels::HOSTNAME)
            .collect();
        g.known = self.groups.len();
    }

    /// The groups a pod owns under its current constraints (creating and counting new ones).
    pub fn groups_for(&mut self, pod: &Pod, c: &PodConstraints<'_>) -> PodGroups {
        let (owned, inverse) = pod_group_keys(pod, c, &self.namespaces);
        let owned: Vec<usize> = owned.into_iter().map(|k| self.ensure(k)).collect();
        let inverse_owned: Vec<usize> = inverse.into_iter().map(|k| self.ensure(k)).collect();
        let mut g = PodGroups {
            owned,
            inverse_owned,
            ..Default::default()
        };
        self.index_pod(pod, &mut g);
        g
    }

    fn selects(&self, g: usize, pod: &Pod, groups: &PodGroups) -> bool {
        groups
            .selects(g)
            .unwrap_or_else(|| self.groups[g].selects(pod))
    }

    /// Spread / affinity groups from index `from` on, not owned by the pod, that select it.
    fn selecting(&self, pod: &Pod, owned: &[usize], from: usize) -> Vec<usize> {
        (from..self.groups.len())
            .filter(|g| owned.binary_search(g).is_err())
            .filter(|&g| {
                let grp = &self.groups[g];
                matches!(grp.id.kind, GroupKind::Spread { .. } | GroupKind::Affinity)
                    && grp.selects(pod)
            })
            .collect()
    }

    fn ensure(&mut self, key: GroupKey) -> usize {
        if let Some(&g) = self.index.get(&key) {
            return g;
        }
        let inverse = key.kind == GroupKind::InverseAntiAffinity;
        let id = self.groups.len();
        let pin_slot = if key.key == labels::HOSTNAME {
            None
        } else if let Some(i) = self.pin_keys.iter().position(|k| *k == key.key) {
            Some(i)
        } else if self.pin_keys.len() < PIN_SLOTS {
            self.pin_keys.push(key.key.clone());
            Some(self.pin_keys.len() - 1)
        } else {
            None
        };
        self.groups.push(Group {
            id: key.clone(),
            counts: Vec::new(),
            nonzero: BTreeSet::new(),
            pin_slot,
        });
        self.index.insert(key, id);
        self.domains
            .entry(self.groups[id].id.key.clone())
            .or_default();
        if inverse {
            self.inverse.push(id);
        } else {
            // Count every pod placed so far.
            let placed = std::mem::take(&mut self.placed);
            for p in &placed {
                if self.groups[id].selects(p.pod) {
                    self.count_into(id, &p.reqs, &p.taints);
                }
            }
            self.placed = placed;
        }
        id
    }

    /// Make sure `key` has a domain table, and intern `value` in it.
    fn intern_domain(&mut self, key: &str, value: Option<&str>) {
        if !self.domains.contains_key(key) {
            self.domains.insert(key.to_string(), Domains::default());
        }
        if let (Some(d), Some(v)) = (self.domains.get_mut(key), value) {
            d.intern(v);
        }
    }

    /// Register a new hostname (a NodeClaim opened in this pass); returns its domain id.
    pub fn register_hostname(&mut self, hostname: &str) -> u32 {
        self.domains
            .entry(labels::HOSTNAME.to_string())
            .or_default()
            .intern(hostname)
    }

    /// The domain id of a hostname, registering it if new.
    pub fn hostname_id(&mut self, hostname: &str) -> u32 {
        self.register_hostname(hostname)
    }

    fn domain_id(&self, key: &str, name: &str) -> Option<u32> {
        self.domains.get(key).and_then(|d| d.ids.get(name).copied())
    }

    /// Every known domain of `key` that `req` allows.
    fn possible_domains(&self, key: &str, req: Option<&Requirement>) -> Vec<u32> {
        let Some(d) = self.domains.get(key) else {
            return Vec::new();
        };
        match req {
            Some(r) if r.len().is_some() => r
                .values()
                .iter()
                .filter_map(|v| d.ids.get(*v).copied())
                .collect(),
            Some(r) => d
                .ids
                .iter()
                .filter(|(name, _)| r.has(name))
                .map(|(_, id)| *id)
                .collect(),
            None => d.ids.values().copied().collect(),
        }
    }

    fn record_possible(&mut self, g: usize, reqs: &Requirements) {
        let key = self.groups[g].id.key.clone();
        for d in self.possible_domains(&key, reqs.get(&key)) {
            self.groups[g].record(d);
        }
    }

    /// Counts a pod that group `g` selects (the caller checked) on a node with `reqs` and
    /// `taints`.
    fn count_into(&mut self, g: usize, reqs: &Requirements, taints: &[Taint]) {
        let group = &self.groups[g];
        match &group.id.kind {
            GroupKind::Spread { filter, .. } => {
                if !filter.matches(reqs, taints) {
                    return;
                }
                self.record_single(g, reqs);
            }
            GroupKind::Affinity => self.record_single(g, reqs),
            GroupKind::AntiAffinity => self.record_possible(g, reqs),
            GroupKind::InverseAntiAffinity => {}
        }
    }

    fn record_single(&mut self, g: usize, reqs: &Requirements) {
        let key = &self.groups[g].id.key;
        if let Some(v) = reqs.get(key).and_then(Requirement::single_value) {
            let d = match self.domain_id(key, v) {
                Some(d) => d,
                None => {
                    let key = key.clone();
                    self.domains.entry(key).or_default().intern(v)
                }
            };
            self.groups[g].record(d);
        }
    }

    /// Record a pod placed on a node with `reqs` (and `taints`).
    pub fn record(
        &mut self,
        pod: &'a Pod,
        groups: &PodGroups,
        reqs: &Arc<Requirements>,
        taints: &Arc<Vec<Taint>>,
    ) {
        // `counted_in` lists the groups (known when it was computed) that select the pod.
        for &g in &groups.counted_in {
            self.count_into(g, reqs, taints);
        }
        for g in groups.known..self.groups.len() {
            if self.groups[g].id.kind != GroupKind::InverseAntiAffinity
                && self.groups[g].selects(pod)
            {
                self.count_into(g, reqs, taints);
            }
        }
        for &g in &groups.inverse_owned {
            self.record_possible(g, reqs);
        }
        self.placed.push(Placed {
            pod,
            reqs: reqs.clone(),
            taints: taints.clone(),
        });
    }

    /// Quick check before the full computation: whether a hostname anti-affinity (own or of
    /// other pods) already excludes the pod from hostname domain `host`.
    pub fn hostname_blocked(&self, groups: &PodGroups, host: u32) -> bool {
        groups
            .hostname_blockers
            .iter()
            .any(|&g| self.groups[g].count(host) > 0)
    }

    /// The domains the pod's groups with a pin slot refuse outright, as (slot, domain ids): a
    /// NodeClaim pinned to one of them would be refused by [`Topology::add_requirements`] (the
    /// same pinned-domain answer). Computed once per placement scan: counts change only when a
    /// pod is placed.
    pub fn refused_pins(
        &self,
        pod: &Pod,
        groups: &PodGroups,
        strict: &Requirements,
    ) -> Vec<(usize, Vec<u32>)> {
        let mut out = Vec::new();
        for &g in groups.owned.iter().chain(&groups.inverse_selecting) {
            let Some(slot) = self.groups[g].pin_slot else {
                continue;
            };
            let key = self.groups[g].id.key.as_str();
            let Some(table) = self.domains.get(key) else {
                continue;
            };
            let pod_domains = strict.get(key);
            let refused: Vec<u32> = table
                .names
                .iter()
                .enumerate()
                .filter(|(_, n)| self.pinned_allowed(g, pod, groups, pod_domains, n) == Some(false))
                .map(|(d, _)| d as u32)
                .collect();
            if !refused.is_empty() {
                out.push((slot, refused));
            }
        }
        out
    }

    /// Whether `pins` (a claim's) hold a domain [`Topology::refused_pins`] listed (an unknown
    /// pin, `u32::MAX`, is never a listed domain id).
    pub fn pins_refused(refused: &[(usize, Vec<u32>)], pins: &Pins) -> bool {
        refused.iter().any(|(slot, ids)| ids.contains(&pins[*slot]))
    }

    /// The pinned domain ids of `reqs` for the pin keys known now.
    pub fn pins_of(&self, reqs: &Requirements) -> Pins {
        let mut pins = NO_PINS;
        for (slot, key) in self.pin_keys.iter().enumerate() {
            if let Some(d) = reqs
                .get(key)
                .and_then(Requirement::single_value)
                .and_then(|v| self.domain_id(key, v))
            {
                pins[slot] = d;
            }
        }
        pins
    }

    /// Whether a hostname anti-affinity excludes the pod from every hostname domain known so far
    /// (so from every node and NodeClaim of the pass): one blocking group already counts a pod
    /// in each of them. Counts only grow, so this stays true for the rest of the pass; a pod of
    /// a self anti-affinity group skips the scan of every NodeClaim that holds one of its peers.
    pub fn hostname_blocked_everywhere(&self, groups: &PodGroups) -> bool {
        let hosts = self
            .domains
            .get(labels::HOSTNAME)
            .map_or(0, |d| d.names.len());
        hosts > 0
            && groups
                .hostname_blockers
                .iter()
                .any(|&g| self.groups[g].nonzero.len() >= hosts)
    }

    /// The words of a [`TopologyError`] this topology returned.
    pub(crate) fn describe_error(&self, e: &TopologyError) -> String {
        format!("{} cannot be satisfied", self.groups[e.group].describe())
    }

    /// Narrow `node` (a node's or NodeClaim's requirements, already intersected with the pod's)
    /// by every group the pod takes part in; clones `node` only when something narrows.
    ///
    /// `strict` are the pod's strict requirements (the domains it may use for counting).
    pub fn add_requirements(
        &self,
        pod: &Pod,
        groups: &PodGroups,
        strict: &Requirements,
        node: &mut Cow<'_, Requirements>,
        taints: &[Taint],
    ) -> Result<(), TopologyError> {
        for &g in groups.owned.iter().chain(&groups.inverse_selecting) {
            let group = &self.groups[g];
            let key = group.id.key.as_str();
            let pod_domains = strict.get(key);
            let current = node.get(key);
            let allowed = match current.and_then(Requirement::single_value) {
                Some(v) => match self.pinned_allowed(g, pod, groups, pod_domains, v) {
                    Some(true) => continue,
                    Some(false) => return Err(TopologyError { group: g }),
                    None => self.allowed(g, pod, groups, pod_domains, current),
                },
                None => self.allowed(g, pod, groups, pod_domains, current),
            };
            if current.is_some_and(|r| r.is_subset_of(&allowed)) {
                continue;
            }
            node.to_mut().add(allowed);
            if node.get(key).is_some_and(Requirement::is_empty) {
                return Err(TopologyError { group: g });
            }
        }
        // Pin every domain that a group counts this pod in, so counts stay exact.
        let late = if self.groups.len() > groups.known {
            self.selecting(pod, &groups.owned, groups.known)
        } else {
            Vec::new()
        };
        for &g in groups.owned.iter().chain(&groups.selected_by).chain(&late) {
            self.pin(g, pod, groups, node, taints);
        }
        Ok(())
    }

    /// Narrow an open domain of group `g` to one value: the least loaded for spread, the most
    /// loaded for affinity, the first free one for anti-affinity.
    fn pin(
        &self,
        g: usize,
        pod: &Pod,
        groups: &PodGroups,
        node: &mut Cow<'_, Requirements>,
        taints: &[Taint],
    ) {
        let group = &self.groups[g];
        let key = group.id.key.as_str();
        if node.get(key).is_some_and(|r| r.single_value().is_some()) {
            return;
        }
        if let GroupKind::Spread { filter, .. } = &group.id.kind {
            if !filter.matches(node, taints) {
                return;
            }
        }
        if group.id.kind == GroupKind::InverseAntiAffinity
            || !self.selects(g, pod, groups) && group.id.kind == GroupKind::AntiAffinity
        {
            return;
        }
        let Some(table) = self.domains.get(key) else {
            return;
        };
        let mut candidates: Vec<(i32, &str)> = self
            .possible_domains(key, node.get(key))
            .into_iter()
            .map(|d| (group.count(d), table.names[d as usize].as_str()))
            .collect();
        candidates.sort_by(|a, b| match group.id.kind {
            GroupKind::Affinity => b.0.cmp(&a.0).then(a.1.cmp(b.1)),
            _ => a.0.cmp(&b.0).then(a.1.cmp(b.1)),
        });
        if let Some((_, d)) = candidates.first() {
            node.to_mut()
                .add(Requirement::in_values(key, [d.to_string()]));
        }
    }
    /// Fast path for a node pinned to domain `v`: whether the group allows it (`None` when the
    /// domain is unknown and the general computation must decide).
    fn pinned_allowed(
        &self,
        g: usize,
        pod: &Pod,
        groups: &PodGroups,
        pod_domains: Option<&Requirement>,
        v: &str,
    ) -> Option<bool> {
        let group = &self.groups[g];
        let key = group.id.key.as_str();
        let table = self.domains.get(key)?;
        let d = *table.ids.get(v)?;
        if !pod_domains.is_none_or(|r| r.has(v)) {
            return Some(false);
        }
        Some(match &group.id.kind {
            GroupKind::Spread {
                max_skew,
                min_domains,
                ..
            } => {
                let min = spread_min(group, key, table, pod_domains, *min_domains);
                group.count(d) + i32::from(self.selects(g, pod, groups)) - min <= *max_skew
            }
            GroupKind::Affinity => {
                if group.count(d) > 0 {
                    true
                } else {
                    let elsewhere = group
                        .nonzero
                        .iter()
                        .any(|&o| pod_domains.is_none_or(|r| r.has(&table.names[o as usize])));
                    !elsewhere && self.selects(g, pod, groups)
                }
            }
            GroupKind::AntiAffinity | GroupKind::InverseAntiAffinity => group.count(d) == 0,
        })
    }

    fn allowed(
        &self,
        g: usize,
        pod: &Pod,
        groups: &PodGroups,
        pod_domains: Option<&Requirement>,
        node_domains: Option<&Requirement>,
    ) -> Requirement {
        let group = &self.groups[g];
        let key = group.id.key.as_str();
        let Some(table) = self.domains.get(key) else {
            return Requirement::in_values(key, Vec::<String>::new());
        };
        let pod_has = |name: &str| pod_domains.is_none_or(|r| r.has(name));
        let node_candidates = self.possible_domains(key, node_domains);
        let name = |d: u32| table.names[d as usize].as_str();
        let mut out: Vec<&str> = Vec::new();
        match &group.id.kind {
            GroupKind::Spread {
                max_skew,
                min_domains,
                ..
            } => {
                let min = spread_min(group, key, table, pod_domains, *min_domains);
                let self_count = i32::from(self.selects(g, pod, groups));
                let mut best: Option<(i32, &str)> = None;
                for d in node_candidates {
                    let n = name(d);
                    if !pod_has(n) {
                        continue;
                    }
                    let c = group.count(d) + self_count;
                    if c - min <= *max_skew && best.is_none_or(|(bc, bn)| (c, n) < (bc, bn)) {
                        best = Some((c, n));
                    }
                }
                if let Some((_, n)) = best {
                    out.push(n);
                }
            }
            GroupKind::Affinity => {
                for &d in &group.nonzero {
                    let n = name(d);
                    if pod_has(n) {
                        out.push(n);
                    }
                }
                if out.is_empty() && self.selects(g, pod, groups) {
                    // Bootstrap: the first domain the node can be in, else the first the pod allows.
                    let first_node = node_candidates
                        .iter()
                        .map(|&d| name(d))
                        .filter(|n| pod_has(n))
                        .min();
                    let first_any = table.ids.keys().map(String::as_str).find(|n| pod_has(n));
                    if let Some(n) = first_node.or(first_any) {
                        out.push(n);
                    }
                }
            }
            GroupKind::AntiAffinity | GroupKind::InverseAntiAffinity => {
                for d in node_candidates {
                    let n = name(d);
                    if group.count(d) == 0 && pod_has(n) {
                        out.push(n);
                    }
                }
            }
        }
        Requirement::in_values(key, out)
    }
}
