//! The disruption methods, in Karpenter's order; the first that produces a command ends the pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::balanced;
use super::budgets::Allowed;
use super::candidates::{sort_by_savings_ratio, Candidate};
use super::consolidation::{compute, filter_out_same_type, Outcome};
use super::model::{DisruptionInput, Reason};
use super::simulate::{simulate_with, Placement, Simulation};
use super::time::Timestamp;
use super::{Command, Decision, DisruptionOptions, Method};
use crate::scheduling::SchedulingCache;

/// Karpenter validates consolidation commands after this delay before executing them.
pub const CONSOLIDATION_TTL: Duration = Duration::from_secs(15);

/// One pass's state: candidates, budgets left, and the reason recorded for each node.
pub(super) struct Pass<'a> {
    pub input: &'a DisruptionInput,
    pub now: Timestamp,
    pub options: &'a DisruptionOptions,
    pub candidates: &'a [Candidate],
    pub budgets: BTreeMap<(String, Reason), Allowed>,
    pub reasons: BTreeMap<String, String>,
    /// Consolidation (not emptiness, drift or expiration) only looks at these pools' nodes
    /// (`None`: every pool).
    pub scope: Option<BTreeSet<String>>,
    /// Scheduling state shared by the pass's simulations.
    pub cache: SchedulingCache,
    /// New NodeClaims the pending pods need with no node removed (computed once, on first use).
    pub pending_claims: Option<usize>,
    /// Whether the global consolidator's command is a step of the target-directed search.
    pub aimed: bool,
}

impl<'a> Pass<'a> {
    pub(super) fn allowed(&self, pool: &str, reason: Reason) -> Allowed {
        self.budgets
            .get(&(pool.to_string(), reason))
            .copied()
            .unwrap_or(Allowed::Unlimited)
    }

    /// Simulate removing `nodes` with the provisioning scheduler and the pass's cache.
    pub(super) fn simulate(&self, nodes: &[&Candidate]) -> Simulation {
        let placement = Placement {
            cache: Some(&self.cache),
            ..Placement::default()
        };
        simulate_with(
            self.input,
            nodes,
            self.now,
            &self.options.scheduler,
            placement,
        )
    }

    pub(super) fn note(&mut self, node: &str, reason: impl Into<String>) {
        self.reasons.insert(node.to_string(), reason.into());
    }

    pub(super) fn budget_blocked(&mut self, node: &str, reason: Reason) {
        self.note(
            node,
            format!(
                "No allowed disruptions for disruption reason {} due to blocking budget",
                reason.as_str()
            ),
        );
    }

    pub(super) fn command(
        &self,
        method: Method,
        reason: Reason,
        nodes: &[&Candidate],
        sim: Option<Simulation>,
        at: Timestamp,
    ) -> Command {
        let names: BTreeSet<&str> = nodes.iter().map(|c| c.name.as_str()).collect();
        let (replacements, moves) = match &sim {
            Some(s) => (s.results.new_nodeclaims.clone(), s.moves(&names)),
            None => (Vec::new(), Vec::new()),
        };
        let before: f64 = nodes.iter().filter_map(|c| c.price()).sum();
        let after: f64 = replacements.iter().map(|r| r.cheapest.price).sum();
        Command {
            method,
            reason,
            decision: if replacements.is_empty() {
                Decision::Delete
            } else {
                Decision::Replace
            },
            candidates: names.iter().map(ToString::to_string).collect(),
            replacements,
            moves,
            savings_per_hour: before - after,
            at,
            simulation: sim,
        }
    }

    /// Every empty, consolidatable candidate within its pool's `Empty` budget, in one command.
    pub fn emptiness(&mut self) -> Option<Command> {
        let all: &'a [Candidate] = self.candidates;
        let mut ordered: Vec<&Candidate> = all.iter().filter(|c| c.empty).collect();
        sort_by_savings_ratio(&mut ordered);
        let mut chosen = Vec::new();
        for c in ordered {
            if let Some(b) = c.consolidation_blocker(self.now, true) {
                self.note(&c.name, b);
                continue;
            }
            let key = (c.facts.nodepool.clone(), Reason::Empty);
            let allowed = self.allowed(&key.0, Reason::Empty);
            if !allowed.any() {
                self.budget_blocked(&c.name, Reason::Empty);
                continue;
            }
            let mut left = allowed;
            left.take();
            self.budgets.insert(key, left);
            chosen.push(c);
        }
        if chosen.is_empty() {
            return None;
        }
        let at = self.now.plus(CONSOLIDATION_TTL);
        Some(self.command(Method::Emptiness, Reason::Empty, &chosen, None, at))
    }

    /// The drifted ones of `candidates` (earliest drifted first, then name) that pod-level
    /// blockers do not hold back; notes the others. A `terminationGracePeriod` lets drift
    /// proceed past pod-level blockers.
    fn drifted(&mut self, candidates: impl Iterator<Item = &'a Candidate>) -> Vec<&'a Candidate> {
        let mut drifted: Vec<&Candidate> =
            candidates.filter(|c| c.facts.drifted.is_some()).collect();
        drifted.sort_by(|a, b| {
            let since = |c: &Candidate| c.facts.drifted.as_ref().map(|d| d.since);
            since(a).cmp(&since(b)).then_with(|| a.name.cmp(&b.name))
        });
        let mut eligible = Vec::new();
        for c in drifted {
            if let Some(b) = &c.pod_blocker {
                if c.facts.termination_grace_period.is_none() {
                    let b = b.clone();
                    self.note(&c.name, b);
                    continue;
                }
            }
            eligible.push(c);
        }
        eligible
    }

    /// Karpenter's static drift: drifted nodes of static pools (`spec.replicas`), each replaced
    /// one for one by a NodeClaim of its pool's template, as many as the pool's `Drifted` budget
    /// and its `limits.nodes` (which must leave room for the replacement) allow, all in one
    /// command. A pool still scaling down (more nodes than replicas) is left alone.
    pub fn static_drift(&mut self) -> Option<Command> {
        let all: &'a [Candidate] = self.candidates;
        let eligible = self.drifted(all.iter().filter(|c| c.static_pool));
        let mut by_pool: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
        for c in eligible {
            by_pool
                .entry(c.facts.nodepool.as_str())
                .or_default()
                .push(c);
        }
        let deleting = super::candidates::deleting_nodes(self.input);
        let mut chosen: Vec<&Candidate> = Vec::new();
        let mut replacements = Vec::new();
        for (pool_name, cands) in by_pool {
            let Some(pool) = self
                .input
                .snapshot
                .node_pools
                .iter()
                .find(|p| p.name == pool_name)
            else {
                continue;
            };
            let replicas = pool.replicas.unwrap_or(0);
            let (mut active, mut total) = (0u64, 0u64);
            for (name, f) in &self.input.nodes {
                if f.nodepool == pool_name {
                    total += 1;
                    active += u64::from(!deleting.contains(name.as_str()));
                }
            }
            if active > replicas {
                for c in &cands {
                    self.note(
                        &c.name,
                        format!(
                            "Static NodePool {pool_name:?} is scaling down to {replicas} nodes"
                        ),
                    );
                }
                continue;
            }
            let key = (pool_name.to_string(), Reason::Drifted);
            let mut allowed = self.allowed(pool_name, Reason::Drifted);
            let room = pool.limits.nodes.map_or(u64::MAX, |l| {
                u64::try_from(l).unwrap_or(0).saturating_sub(total)
            });
            let mut staged = 0u64;
            for c in cands {
                if !allowed.any() {
                    self.budget_blocked(&c.name, Reason::Drifted);
                    continue;
                }
                if staged >= room {
                    self.note(
                        &c.name,
                        "Static NodePool is at its node limit and cannot stage a replacement",
                    );
                    continue;
                }
                match crate::scheduling::template_nodeclaim(
                    pool,
                    &self.input.snapshot.daemonsets,
                    &format!("{pool_name}-static-{}", replacements.len()),
                    self.options.scheduler.max_instance_types,
                ) {
                    Ok(claim) => {
                        allowed.take();
                        staged += 1;
                        replacements.push(claim);
                        chosen.push(c);
                    }
                    Err(why) => self.note(
                        &c.name,
                        format!("Static NodePool {pool_name:?} cannot launch a replacement: {why}"),
                    ),
                }
            }
            self.budgets.insert(key, allowed);
        }
        if chosen.is_empty() {
            return None;
        }
        let mut cmd = self.command(
            Method::StaticDrift,
            Reason::Drifted,
            &chosen,
            None,
            self.now,
        );
        cmd.savings_per_hour -= replacements.iter().map(|r| r.cheapest.price).sum::<f64>();
        cmd.decision = super::Decision::Replace;
        cmd.replacements = replacements;
        Some(cmd)
    }

    /// Drifted candidates: every empty one within budget at once, else the first (earliest
    /// drifted, then name) whose pods can all be rescheduled, replaced by what they need.
    pub fn drift(&mut self) -> Option<Command> {
        let all: &'a [Candidate] = self.candidates;
        let eligible = self.drifted(all.iter().filter(|c| !c.static_pool));
        let mut empty = Vec::new();
        for &c in eligible.iter().filter(|c| c.reschedulable.is_empty()) {
            let key = (c.facts.nodepool.clone(), Reason::Drifted);
            let mut allowed = self.allowed(&key.0, Reason::Drifted);
            if allowed.any() {
                allowed.take();
                self.budgets.insert(key, allowed);
                empty.push(c);
            } else {
                self.budget_blocked(&c.name, Reason::Drifted);
            }
        }
        if !empty.is_empty() {
            return Some(self.command(Method::Drift, Reason::Drifted, &empty, None, self.now));
        }
        for c in eligible {
            if !self.allowed(&c.facts.nodepool, Reason::Drifted).any() {
                self.budget_blocked(&c.name, Reason::Drifted);
                continue;
            }
            let sim = self.simulate(&[c]);
            if let Some(f) = sim.running_pod_failure() {
                self.note(&c.name, f);
                continue;
            }
            return Some(self.command(Method::Drift, Reason::Drifted, &[c], Some(sim), self.now));
        }
        None
    }

    /// Every managed node past its `expireAfter`, forcefully: no budget, no blocker.
    pub fn expiration(&mut self, expired: &[Candidate]) -> Option<Command> {
        if expired.is_empty() {
            return None;
        }
        let refs: Vec<&Candidate> = expired.iter().collect();
        let sim = self.simulate(&refs);
        Some(self.command(
            Method::Expiration,
            Reason::Expired,
            &refs,
            Some(sim),
            self.now,
        ))
    }

    /// Candidates consolidation may take (within the scope), in savings-ratio order; notes the
    /// others.
    /// How many new NodeClaims the pending pods need on the cluster as it is (no node removed),
    /// simulated once per pass.
    pub(super) fn pending_claims(&mut self) -> usize {
        if let Some(n) = self.pending_claims {
            return n;
        }
        let n = if self
            .input
            .snapshot
            .pods
            .iter()
            .any(|p| p.node_name.is_none())
        {
            self.simulate(&[]).results.new_nodeclaims.len()
        } else {
            0
        };
        self.pending_claims = Some(n);
        n
    }

    /// Why Karpenter's consolidation cannot act in this pass whatever it removes, if so: its
    /// simulations schedule the pending pods too, and a move that needs more than one new
    /// NodeClaim is refused. When the pending pods alone already need two or more (a large
    /// Deployment waiting for capacity), removing nodes only adds pods and takes room away, so
    /// every simulation would be refused: the pass skips them (tens of thousands of pending pods
    /// rescheduled per candidate otherwise).
    pub(super) fn pending_blocker(&mut self) -> Option<String> {
        let n = self.pending_claims();
        (n > 1).then(|| {
            format!("Can't consolidate while pending pods need {n} new nodes (a move may create at most one)")
        })
    }

    pub(super) fn consolidatable(&mut self) -> Vec<&'a Candidate> {
        let mut out = Vec::new();
        let all: &'a [Candidate] = self.candidates;
        for c in all {
            if self
                .scope
                .as_ref()
                .is_some_and(|s| !s.contains(&c.facts.nodepool))
            {
                continue;
            }
            match c.consolidation_blocker(self.now, false) {
                // A static pool's node keeps what static drift said about it.
                Some(_) if c.static_pool && self.reasons.contains_key(&c.name) => {}
                Some(b) => {
                    self.reasons.insert(c.name.clone(), b);
                }
                None => out.push(c),
            }
        }
        sort_by_savings_ratio(&mut out);
        out
    }

    /// Karpenter's multi-node consolidation: the largest prefix (binary search over 2..=100
    /// candidates within budget) that can be deleted or replaced by one cheaper node of a type
    /// not among (or cheaper than) the candidates'.
    pub fn multi_node(&mut self) -> Option<Command> {
        let candidates = self.consolidatable();
        let mut budgets = self.budgets.clone();
        let mut within = Vec::new();
        for c in candidates {
            let key = (c.facts.nodepool.clone(), Reason::Underutilized);
            let allowed = budgets.entry(key).or_insert(Allowed::Unlimited);
            if allowed.any() {
                allowed.take();
                within.push(c);
            }
        }
        if within.len() < 2 {
            return None;
        }
        let totals = balanced::pool_totals(self.candidates);
        let mut lo = 1;
        let mut hi = within.len().min(self.options.max_multi_node_candidates) - 1;
        let mut best: Option<(usize, Simulation)> = None;
        while lo <= hi {
            let mid = (lo + hi) / 2;
            let prefix = &within[..=mid];
            let valid = match compute(
                self.input,
                prefix,
                self.now,
                &self.options.scheduler,
                self.options.spot_to_spot_consolidation,
                Some(&self.cache),
            ) {
                Outcome::Delete(sim) => Some(sim),
                Outcome::Replace(mut sim) => {
                    match filter_out_same_type(&sim.results.new_nodeclaims[0], prefix) {
                        Ok(c) if !c.instance_types.is_empty() => {
                            sim.results.new_nodeclaims[0] = c;
                            Some(sim)
                        }
                        _ => None,
                    }
                }
                Outcome::NoOp(_) => None,
            };
            // A move a Balanced pool rejects is invalid like one that cannot be done.
            let valid = valid.filter(|sim| {
                let savings = balanced::estimated_savings(prefix, sim);
                balanced::approve(&totals, prefix, savings).is_ok()
            });
            match valid {
                Some(sim) => {
                    best = Some((mid, sim));
                    lo = mid + 1;
                }
                None => hi = mid - 1,
            }
        }
        let (mid, sim) = best?;
        let chosen: Vec<&Candidate> = within[..=mid].to_vec();
        let at = self.now.plus(CONSOLIDATION_TTL);
        Some(self.command(
            Method::MultiNode,
            Reason::Underutilized,
            &chosen,
            Some(sim),
            at,
        ))
    }

    /// Karpenter's single-node consolidation: candidates in savings-ratio order with NodePools
    /// interleaved (pools in the order of their best candidate), the first that can be deleted
    /// or replaced by one cheaper node.
    pub fn single_node(&mut self) -> Option<Command> {
        let candidates = self.consolidatable();
        let mut by_pool: Vec<(String, Vec<&Candidate>)> = Vec::new();
        for c in candidates {
            match by_pool.iter_mut().find(|(p, _)| *p == c.facts.nodepool) {
                Some((_, v)) => v.push(c),
                None => by_pool.push((c.facts.nodepool.clone(), vec![c])),
            }
        }
        let totals = balanced::pool_totals(self.candidates);
        let depth = by_pool.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        let interleaved: Vec<&Candidate> = (0..depth)
            .flat_map(|i| by_pool.iter().filter_map(move |(_, v)| v.get(i).copied()))
            .collect();
        for c in interleaved {
            if !self.allowed(&c.facts.nodepool, Reason::Underutilized).any() {
                self.budget_blocked(&c.name, Reason::Underutilized);
                continue;
            }
            let outcome = compute(
                self.input,
                &[c],
                self.now,
                &self.options.scheduler,
                self.options.spot_to_spot_consolidation,
                Some(&self.cache),
            );
            let sim = match outcome {
                Outcome::Delete(sim) | Outcome::Replace(sim) => sim,
                Outcome::NoOp(why) => {
                    self.note(&c.name, why);
                    continue;
                }
            };
            let savings = balanced::estimated_savings(&[c], &sim);
            if let Err(why) = balanced::approve(&totals, &[c], savings) {
                self.note(&c.name, why);
                continue;
            }
            let at = self.now.plus(CONSOLIDATION_TTL);
            return Some(self.command(
                Method::SingleNode,
                Reason::Underutilized,
                &[c],
                Some(sim),
                at,
            ));
        }
        None
    }
}
