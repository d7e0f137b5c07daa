//! Replaying a chosen assignment of pods to new NodeClaims through the scheduler's own checks.
//!
//! Packers that decide placements another way (the MILP) hand their node-by-node assignment to
//! a [`Replay`]: every pod is added with the same taint, host-port, requirement, topology and
//! capacity checks the scheduler uses, and the NodeClaims are finalized the same way (options
//! ordered by price, truncated, `minValues`). Placements the packer keeps from another plan are
//! recorded first so topology sees them.

use super::*;

/// A scheduling pass driven by an explicit assignment.
pub(crate) struct Replay<'a> {
    sched: Scheduler<'a>,
    states: Vec<PodState>,
    by_pod: BTreeMap<usize, usize>,
    opened: usize,
}

impl<'a> Replay<'a> {
    /// Prepare a pass over `snapshot`, with the existing placements and the NodeClaims of `keep`
    /// already recorded.
    pub fn new(
        snapshot: &'a ClusterSnapshot,
        options: &'a SchedulerOptions,
        keep_existing: &[ExistingPlacement],
        keep_claims: &[NewNodeClaim],
    ) -> Self {
        let mut sched = Scheduler::new(snapshot, options);
        let states = sched.prepare();
        let by_pod: BTreeMap<usize, usize> =
            states.iter().enumerate().map(|(i, s)| (s.idx, i)).collect();
        let nodes: BTreeMap<&str, &crate::cluster::Node> = snapshot
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n))
            .collect();
        for e in keep_existing {
            if let Some(n) = nodes.get(e.node.as_str()) {
                let reqs = Arc::new(Requirements::from_labels(&n.labels));
                let taints = Arc::new(n.taints.clone());
                for p in &e.pods {
                    if let Some(&s) = by_pod.get(p) {
                        sched
                            .topology
                            .record(&states[s].orig, &states[s].groups, &reqs, &taints);
                    }
                }
            }
        }
        for c in keep_claims {
            sched.topology.register_hostname(&c.hostname);
            let mut r = c.requirements.clone();
            r.add(Requirement::in_values(
                labels::HOSTNAME,
                [c.hostname.clone()],
            ));
            let reqs = Arc::new(r);
            let taints = Arc::new(c.taints.clone());
            for p in &c.pods {
                if let Some(&s) = by_pod.get(p) {
                    sched
                        .topology
                        .record(&states[s].orig, &states[s].groups, &reqs, &taints);
                }
            }
        }
        Replay {
            sched,
            states,
            by_pod,
            opened: 0,
        }
    }

    /// Re-derive a kept NodeClaim that lost some pods: same requirements (minus the instance
    /// type and capacity type narrowing, re-derived from the pool), only `pods`, options recomputed
    /// for the smaller load.
    ///
    /// # Errors
    /// When the pool is unknown or no instance type remains.
    pub fn shrink(
        &mut self,
        claim: &NewNodeClaim,
        pods: Vec<usize>,
    ) -> Result<NewNodeClaim, String> {
        let p = self
            .sched
            .pools
            .iter()
            .position(|x| x.name == claim.nodepool)
            .ok_or_else(|| format!("nodepool {:?} does not exist", claim.nodepool))?;
        let ctx = &self.sched.pools[p];
        let mut reqs = claim.requirements.clone();
        reqs.remove(labels::INSTANCE_TYPE);
        reqs.remove(labels::CAPACITY_TYPE);
        reqs.add_all(&ctx.template);
        let requests = pods.iter().fold(Resources::new(), |acc, &i| {
            acc.plus(&self.sched.snapshot.pods[i].requests)
        });
        let host = self.sched.topology.register_hostname(&claim.hostname);
        let c = Claim::with_pods(p, ctx, claim.hostname.clone(), host, reqs, pods, requests)
            .ok_or_else(|| format!("no instance type remains for nodeclaim {}", claim.hostname))?;
        c.finalize(ctx, self.sched.options.max_instance_types)
    }

    /// Open an empty NodeClaim of `pool` with every instance type of the pool.
    ///
    /// # Errors
    /// When the pool does not exist.
    pub fn open(&mut self, pool: &str) -> Result<usize, String> {
        let p = self
            .sched
            .pools
            .iter()
            .position(|x| x.name == pool)
            .ok_or_else(|| format!("nodepool {pool:?} does not exist"))?;
        let ctx = &self.sched.pools[p];
        let hostname = format!("{pool}-packed-{}", self.opened);
        self.opened += 1;
        let host = self.sched.topology.register_hostname(&hostname);
        let types: Vec<u32> = (0..ctx.types.len() as u32).collect();
        self.sched
            .claims
            .push(Claim::new(p, ctx, hostname, host, types));
        Ok(self.sched.claims.len() - 1)
    }

    /// Add pending pod `pod` (snapshot index) to NodeClaim `claim`.
    ///
    /// # Errors
    /// The scheduler's reason when the pod does not fit.
    pub fn add(&mut self, claim: usize, pod: usize) -> Result<(), String> {
        let s = *self
            .by_pod
            .get(&pod)
            .ok_or_else(|| format!("pod {pod} is not pending"))?;
        let st = &self.states[s];
        let c = &mut self.sched.claims[claim];
        let pool = &self.sched.pools[c.pool];
        c.try_add(
            &st.orig,
            &st.data,
            &st.groups,
            pool,
            &mut self.sched.topology,
        )?;
        c.pods.push(pod);
        Ok(())
    }

    /// Finalize every opened NodeClaim (empty ones are dropped).
    ///
    /// # Errors
    /// When a NodeClaim cannot be finalized (for example `minValues` after truncation).
    pub fn finish(self) -> Result<Vec<NewNodeClaim>, String> {
        let mut out = Vec::new();
        for c in self.sched.claims.iter().filter(|c| !c.pods.is_empty()) {
            out.push(c.finalize(
                &self.sched.pools[c.pool],
                self.sched.options.max_instance_types,
            )?);
        }
        Ok(out)
    }
}
