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
    states: Vec<PodState<'a>>,
    by_pod: BTreeMap<usize, usize>,
    opened: usize,
    /// Pods added to each existing node (parallel to the scheduler's existing slots).
    existing_pods: Vec<Vec<usize>>,
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
                            .record(states[s].orig, &states[s].groups, &reqs, &taints);
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
                        .record(states[s].orig, &states[s].groups, &reqs, &taints);
                }
            }
        }
        let existing_pods = vec![Vec::new(); sched.existing.len()];
        Replay {
            sched,
            states,
            by_pod,
            opened: 0,
            existing_pods,
        }
    }

    fn pool_position(&self, pool: &str) -> Result<usize, String> {
        self.sched
            .pools
            .iter()
            .position(|x| x.name == pool)
            .ok_or_else(|| format!("nodepool {pool:?} does not exist"))
    }

    /// Open an empty NodeClaim of `pool` with every instance type of the pool.
    ///
    /// # Errors
    /// When the pool does not exist.
    pub fn open(&mut self, pool: &str) -> Result<usize, String> {
        let p = self.pool_position(pool)?;
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

    /// Open a NodeClaim that keeps an earlier placement: `pods` (already recorded in the topology
    /// under `hostname`) on requirements `requirements`; more pods may be added.
    ///
    /// # Errors
    /// When the pool is unknown or no instance type holds the pods.
    pub fn open_with(
        &mut self,
        hostname: &str,
        pool: &str,
        requirements: Requirements,
        pods: Vec<usize>,
    ) -> Result<usize, String> {
        let p = self.pool_position(pool)?;
        let ctx = &self.sched.pools[p];
        let requests = pods.iter().fold(Resources::new(), |acc, &i| {
            acc.plus(&self.sched.snapshot.pods[i].requests)
        });
        let host = self.sched.topology.register_hostname(hostname);
        let mut reqs = requirements;
        reqs.add(Requirement::in_values(
            labels::HOSTNAME,
            [hostname.to_string()],
        ));
        let mut c = Claim::with_pods(
            p,
            ctx,
            hostname.to_string(),
            host,
            reqs,
            pods.clone(),
            requests,
        )
        .ok_or_else(|| format!("no instance type holds the pods of nodeclaim {hostname}"))?;
        for &i in &pods {
            if let Some(&s) = self.by_pod.get(&i) {
                c.add_host_ports(self.states[s].orig);
            }
        }
        self.sched.claims.push(c);
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
        let topology = &mut self.sched.topology;
        c.try_add(st.orig, &st.data, &st.groups, pool, topology)
            .map_err(|e| e.describe(topology))?;
        c.pods.push(pod);
        Ok(())
    }

    /// Add pending pod `pod` (snapshot index) to the existing node named `node`, with the
    /// checks the scheduler makes there (room, taints, host ports, requirements, topology).
    ///
    /// # Errors
    /// When the node is not a destination (absent or deleting), or the scheduler's reason when
    /// the pod does not fit.
    pub fn add_existing(&mut self, node: &str, pod: usize) -> Result<(), String> {
        let s = *self
            .by_pod
            .get(&pod)
            .ok_or_else(|| format!("pod {pod} is not pending"))?;
        let i = self
            .sched
            .existing
            .iter()
            .position(|e| e.name == node)
            .ok_or_else(|| format!("node {node} is not a destination"))?;
        let st = &self.states[s];
        let topology = &mut self.sched.topology;
        self.sched.existing[i]
            .try_add(st.orig, &st.data, &st.groups, topology)
            .map_err(|e| e.describe(topology))?;
        self.existing_pods[i].push(pod);
        Ok(())
    }

    /// [`Replay::finish`], with the pods [`Replay::add_existing`] placed on existing nodes (by
    /// node name).
    ///
    /// # Errors
    /// As [`Replay::finish`].
    pub fn finish_with_existing(
        mut self,
    ) -> Result<(Vec<NewNodeClaim>, Vec<ExistingPlacement>), String> {
        let mut existing: Vec<ExistingPlacement> = self
            .sched
            .existing
            .iter()
            .zip(std::mem::take(&mut self.existing_pods))
            .filter(|(_, pods)| !pods.is_empty())
            .map(|(slot, pods)| ExistingPlacement {
                node: slot.name.clone(),
                pods,
            })
            .collect();
        existing.sort_by(|a, b| a.node.cmp(&b.node));
        Ok((self.finish()?, existing))
    }

    /// Finalize every opened NodeClaim (empty ones are dropped).
    ///
    /// # Errors
    /// When a NodeClaim cannot be finalized (for example `minValues` after truncation).
    pub fn finish(self) -> Result<Vec<NewNodeClaim>, String> {
        let mut out = Vec::new();
        let mut options = super::claim::FinalizeCache::default();
        for c in self.sched.claims.iter().filter(|c| !c.pods.is_empty()) {
            out.push(c.finalize(
                &self.sched.pools[c.pool],
                self.sched.options.max_instance_types,
                &mut options,
            )?);
        }
        super::limit_reservations(&mut out);
        Ok(out)
    }
}
