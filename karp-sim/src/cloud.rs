//! [`SimCloud`]: an in-memory cloud implementing karp-core's [`CloudProvider`].
//!
//! It launches instances instantly from a fixed list of instance types, remembers what each launch
//! asked for (so the simulated kubelet can register a matching Node), and lets tests inject faults:
//! insufficient capacity for one offering (reported unavailable for a TTL, like a cloud's ICE
//! cache), or an arbitrary error for the next `create`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use karp_core::cloud::{
    CloudError, CloudProvider, Instance, InstanceType, LaunchRequest, Offering, UnavailableOffering,
};
use karp_core::labels;
use tokio::time::Instant;

/// The region instances report when the options do not name one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// How long an injected insufficient-capacity entry keeps its offering unavailable by default
/// (Karpenter's AWS provider caches ICE errors for 3 minutes).
pub const DEFAULT_ICE_TTL: Duration = Duration::from_secs(180);

/// The prefix of every provider ID the simulated cloud hands out.
pub const PROVIDER_ID_PREFIX: &str = "sim:///";

/// Options of a [`SimCloud`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimCloudOptions {
    /// Region instances and nodes report (`topology.kubernetes.io/region`).
    pub region: String,
    /// How long an injected insufficient-capacity entry stays active.
    pub ice_ttl: Duration,
}

impl Default for SimCloudOptions {
    fn default() -> Self {
        SimCloudOptions {
            region: DEFAULT_REGION.to_string(),
            ice_ttl: DEFAULT_ICE_TTL,
        }
    }
}

impl SimCloudOptions {
    /// Set the region.
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Set how long injected insufficient-capacity entries last.
    #[must_use]
    pub fn ice_ttl(mut self, ttl: Duration) -> Self {
        self.ice_ttl = ttl;
        self
    }
}

/// Whether a simulated instance is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstanceState {
    /// Launched and not deleted.
    Running,
    /// Deleted: the cloud no longer lists it; its kubelet has stopped.
    Terminated,
}

/// Everything the simulated cloud remembers about one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct SimInstance {
    /// What [`CloudProvider::get`] returns for it.
    pub instance: Instance,
    /// Its instance type.
    pub instance_type: Arc<InstanceType>,
    /// The launch request it was created for (labels, taints, startup taints).
    pub request: LaunchRequest,
    /// Its private IPv4 address (`10.x.y.z`, from the launch counter).
    pub private_ip: Ipv4Addr,
    /// Launch counter value (1 for the first launch).
    pub index: u64,
    /// When it was launched (tokio clock).
    pub launched_at: Instant,
    /// Running or terminated.
    pub state: InstanceState,
}

impl SimInstance {
    /// The name its kubelet registers the Node under (see [`node_name`]).
    #[must_use]
    pub fn node_name(&self, region: &str) -> String {
        node_name(self.private_ip, region)
    }
}

/// The Node name of an instance with private IP `ip` in `region`, as EKS kubelets name nodes:
/// `ip-10-0-0-1.us-east-1.compute.internal`.
#[must_use]
pub fn node_name(ip: Ipv4Addr, region: &str) -> String {
    let [a, b, c, d] = ip.octets();
    format!("ip-{a}-{b}-{c}-{d}.{region}.compute.internal")
}

/// The private IP of the `index`-th launch: `10.0.0.1` for the first, counting up through
/// `10.255.255.255`, then wrapping.
#[must_use]
pub fn private_ip(index: u64) -> Ipv4Addr {
    let n = (index % 0x00ff_ffff).max(1);
    let [_, b, c, d] = (n as u32).to_be_bytes();
    Ipv4Addr::new(10, b, c, d)
}

/// The EC2-style instance ID of the `index`-th launch: `i-` and 16 hex digits, a fixed bijective
/// scramble of the counter (so IDs look random but are the same in every run).
#[must_use]
pub fn instance_id(index: u64) -> String {
    // splitmix64 finalizer: bijective on u64.
    let mut z = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("i-{z:016x}")
}

/// Call and outcome counters of a [`SimCloud`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCloudStats {
    /// `create` calls, successful or not.
    pub create_calls: u64,
    /// Instances launched.
    pub creates: u64,
    /// `delete` calls, successful or not.
    pub delete_calls: u64,
    /// Instances terminated.
    pub deletes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct OfferingKey {
    instance_type: String,
    zone: String,
    capacity_type: String,
}

#[derive(Debug, Default)]
struct State {
    next_index: u64,
    /// By provider ID.
    instances: BTreeMap<String, SimInstance>,
    /// Injected insufficient capacity, until when.
    ice: BTreeMap<OfferingKey, Instant>,
    fail_next: VecDeque<CloudError>,
    stats: SimCloudStats,
    /// Drift reasons reported by `is_drifted`, by provider ID.
    drifted: BTreeMap<String, String>,
    /// Offerings short at launch though listed available.
    short: std::collections::BTreeSet<OfferingKey>,
}

impl State {
    fn expire_ice(&mut self, now: Instant) {
        self.ice.retain(|_, until| *until > now);
    }
}

/// An in-memory cloud: instant launches from a fixed catalog, fault injection, counters.
///
/// Share it as `Arc<SimCloud>` between the operator (as its [`CloudProvider`]) and the simulated
/// kubelet ([`crate::kubelet::Kubelet`]). Every method takes a short std mutex and never holds it
/// across an await.
///
/// ```
/// use std::sync::Arc;
/// use karp_core::cloud::{CloudProvider, InstanceType, LaunchRequest, Offering};
/// use karp_core::resources::Resources;
/// use karp_sim::cloud::{SimCloud, SimCloudOptions};
///
/// let m5 = Arc::new(InstanceType::new(
///     "m5.large",
///     &Default::default(),
///     Resources::from_pairs([("cpu", "2"), ("memory", "8Gi"), ("pods", "29")]).unwrap(),
///     Resources::from_pairs([("cpu", "70m"), ("memory", "574Mi")]).unwrap(),
///     vec![Offering::new("us-east-1a", "on-demand", 0.096), Offering::new("us-east-1a", "spot", 0.04)],
/// ));
/// let cloud = Arc::new(SimCloud::new(vec![m5], SimCloudOptions::default()));
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let request = LaunchRequest { nodeclaim: "default-abcde".into(), nodepool: "default".into(), ..Default::default() };
/// let instance = cloud.create(&request).await.unwrap();
/// assert_eq!(instance.capacity_type, "spot"); // spot is preferred when allowed
/// assert!(instance.provider_id.starts_with("sim:///us-east-1a/i-"));
/// assert_eq!(cloud.list().await.unwrap().len(), 1);
/// cloud.delete(&instance.provider_id).await.unwrap();
/// assert!(cloud.get(&instance.provider_id).await.unwrap_err().is_not_found());
/// # });
/// ```
#[derive(Debug)]
pub struct SimCloud {
    instance_types: Vec<Arc<InstanceType>>,
    options: SimCloudOptions,
    state: Mutex<State>,
}

/// The preference order of capacity types when several are allowed (Karpenter launches reserved
/// capacity first, then spot, then on-demand).
fn capacity_type_rank(ct: &str) -> u8 {
    match ct {
        labels::CAPACITY_RESERVED => 0,
        labels::CAPACITY_SPOT => 1,
        _ => 2,
    }
}

fn candidate_order(a: (&InstanceType, &Offering), b: (&InstanceType, &Offering)) -> Ordering {
    capacity_type_rank(&a.1.capacity_type)
        .cmp(&capacity_type_rank(&b.1.capacity_type))
        .then_with(|| a.1.price.total_cmp(&b.1.price))
        .then_with(|| a.0.name.cmp(&b.0.name))
        .then_with(|| a.1.zone.cmp(&b.1.zone))
}

/// The offering a launch picks: among instance types whose requirements intersect the request's
/// and whose allocatable holds its requests, the available offerings allowed by the request's
/// zone and capacity-type requirements and not `unavailable`, ordered by capacity type (reserved,
/// spot, on-demand), then price, then instance type name and zone.
///
/// # Errors
/// [`CloudError::InsufficientCapacity`] naming the offerings `unavailable` removed (empty when
/// nothing fitted at all).
pub fn select_offering<'a>(
    instance_types: &'a [Arc<InstanceType>],
    request: &LaunchRequest,
    unavailable: &dyn Fn(&InstanceType, &Offering) -> bool,
) -> Result<(&'a Arc<InstanceType>, &'a Offering), CloudError> {
    let mut best: Option<(&Arc<InstanceType>, &Offering)> = None;
    let mut failed = Vec::new();
    for it in instance_types {
        if !it.requirements.intersects(&request.requirements)
            || !request.requests.fits_in(it.allocatable())
        {
            continue;
        }
        for o in &it.offerings {
            if !o.available || !o.compatible(&request.requirements) {
                continue;
            }
            if unavailable(it, o) {
                failed.push(UnavailableOffering {
                    instance_type: it.name.clone(),
                    zone: o.zone.clone(),
                    capacity_type: o.capacity_type.clone(),
                });
                continue;
            }
            let better = best.is_none_or(|(bit, bo)| candidate_order((it, o), (bit, bo)).is_lt());
            if better {
                best = Some((it, o));
            }
        }
    }
    match best {
        Some(b) => Ok(b),
        None => {
            failed.sort();
            failed.dedup();
            Err(CloudError::InsufficientCapacity { offerings: failed })
        }
    }
}

impl SimCloud {
    /// A cloud offering `instance_types` to every node pool.
    #[must_use]
    pub fn new(instance_types: Vec<Arc<InstanceType>>, options: SimCloudOptions) -> Self {
        SimCloud {
            instance_types,
            options,
            state: Mutex::new(State::default()),
        }
    }

    /// Its options.
    #[must_use]
    pub fn options(&self) -> &SimCloudOptions {
        &self.options
    }

    /// The region its instances report.
    #[must_use]
    pub fn region(&self) -> &str {
        &self.options.region
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Make launches skip an offering without reporting it unavailable from
    /// [`CloudProvider::instance_types`]: the cloud is short of it only when asked, as EC2
    /// CreateFleet skips an override without capacity and launches the next. Plans keep
    /// choosing it; launches fall back to the claim's other options.
    pub fn inject_shortage(&self, instance_type: &str, zone: &str, capacity_type: &str) {
        self.state().short.insert(OfferingKey {
            instance_type: instance_type.to_string(),
            zone: zone.to_string(),
            capacity_type: capacity_type.to_string(),
        });
    }

    /// Report the instance `provider_id` drifted from its node class with `reason` (as karp-aws
    /// reports `AMIDrift`, `SubnetDrift`, ...), until it is terminated.
    pub fn mark_drifted(&self, provider_id: &str, reason: &str) {
        self.state()
            .drifted
            .insert(provider_id.to_string(), reason.to_string());
    }

    /// Make launches of `instance_type` in `zone` with `capacity_type` fail with insufficient
    /// capacity, and report that offering unavailable from [`CloudProvider::instance_types`], for
    /// the configured TTL ([`SimCloudOptions::ice_ttl`]).
    pub fn inject_insufficient_capacity(
        &self,
        instance_type: &str,
        zone: &str,
        capacity_type: &str,
    ) {
        let until = Instant::now() + self.options.ice_ttl;
        self.state().ice.insert(
            OfferingKey {
                instance_type: instance_type.to_string(),
                zone: zone.to_string(),
                capacity_type: capacity_type.to_string(),
            },
            until,
        );
    }

    /// Remove every injected insufficient-capacity entry.
    pub fn clear_insufficient_capacity(&self) {
        self.state().ice.clear();
    }

    /// Make the next `create` call fail with `error` (queued: several calls queue several errors).
    pub fn fail_next_create(&self, error: CloudError) {
        self.state().fail_next.push_back(error);
    }

    /// Call and outcome counters.
    #[must_use]
    pub fn stats(&self) -> SimCloudStats {
        self.state().stats
    }

    /// Every instance ever launched, running or terminated, sorted by provider ID (what the
    /// simulated kubelet polls).
    #[must_use]
    pub fn instances(&self) -> Vec<SimInstance> {
        self.state().instances.values().cloned().collect()
    }

    /// Running instances with their instance type and launch request, sorted by provider ID.
    #[must_use]
    pub fn running_instances(&self) -> Vec<SimInstance> {
        self.state()
            .instances
            .values()
            .filter(|i| i.state == InstanceState::Running)
            .cloned()
            .collect()
    }

    /// One instance by provider ID, running or terminated.
    #[must_use]
    pub fn instance(&self, provider_id: &str) -> Option<SimInstance> {
        self.state().instances.get(provider_id).cloned()
    }

    /// The Node name the kubelet of `provider_id` registers (see [`node_name`]).
    #[must_use]
    pub fn node_name_of(&self, provider_id: &str) -> Option<String> {
        self.state()
            .instances
            .get(provider_id)
            .map(|i| i.node_name(&self.options.region))
    }

    /// Terminate an instance without going through the operator (a simulated spot reclaim or a
    /// person deleting it in the console). Returns whether it was running.
    pub fn terminate(&self, provider_id: &str) -> bool {
        let mut st = self.state();
        match st.instances.get_mut(provider_id) {
            Some(i) if i.state == InstanceState::Running => {
                i.state = InstanceState::Terminated;
                true
            }
            _ => false,
        }
    }

    fn instance_labels(&self, it: &InstanceType, o: &Offering) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::INSTANCE_TYPE.to_string(), it.name.clone()),
            (labels::ZONE.to_string(), o.zone.clone()),
            (labels::CAPACITY_TYPE.to_string(), o.capacity_type.clone()),
            (labels::REGION.to_string(), self.options.region.clone()),
        ])
    }
}

fn ice_key(it: &InstanceType, o: &Offering) -> OfferingKey {
    OfferingKey {
        instance_type: it.name.clone(),
        zone: o.zone.clone(),
        capacity_type: o.capacity_type.clone(),
    }
}

#[async_trait]
impl CloudProvider for SimCloud {
    fn name(&self) -> &str {
        "sim"
    }

    async fn create(&self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        let now = Instant::now();
        let mut st = self.state();
        st.stats.create_calls += 1;
        if let Some(e) = st.fail_next.pop_front() {
            return Err(e);
        }
        st.expire_ice(now);
        let (it, o) = {
            let (ice, short) = (&st.ice, &st.short);
            select_offering(&self.instance_types, request, &|it, o| {
                let key = ice_key(it, o);
                ice.contains_key(&key) || short.contains(&key)
            })?
        };
        st.next_index += 1;
        let index = st.next_index;
        let provider_id = format!("{PROVIDER_ID_PREFIX}{}/{}", o.zone, instance_id(index));
        let instance = Instance {
            provider_id: provider_id.clone(),
            nodeclaim: Some(request.nodeclaim.clone()),
            instance_type: it.name.clone(),
            zone: o.zone.clone(),
            capacity_type: o.capacity_type.clone(),
            labels: self.instance_labels(it, o),
        };
        st.instances.insert(
            provider_id,
            SimInstance {
                instance: instance.clone(),
                instance_type: Arc::clone(it),
                request: request.clone(),
                private_ip: private_ip(index),
                index,
                launched_at: now,
                state: InstanceState::Running,
            },
        );
        st.stats.creates += 1;
        tracing::debug!(
            nodeclaim = %request.nodeclaim,
            instance_type = %it.name,
            zone = %o.zone,
            capacity_type = %o.capacity_type,
            "sim cloud launched instance"
        );
        Ok(instance)
    }

    async fn delete(&self, provider_id: &str) -> Result<(), CloudError> {
        let mut st = self.state();
        st.stats.delete_calls += 1;
        match st.instances.get_mut(provider_id) {
            Some(i) if i.state == InstanceState::Running => {
                i.state = InstanceState::Terminated;
                st.stats.deletes += 1;
                Ok(())
            }
            _ => Err(CloudError::NotFound {
                provider_id: provider_id.to_string(),
            }),
        }
    }

    async fn get(&self, provider_id: &str) -> Result<Instance, CloudError> {
        match self.state().instances.get(provider_id) {
            Some(i) if i.state == InstanceState::Running => Ok(i.instance.clone()),
            _ => Err(CloudError::NotFound {
                provider_id: provider_id.to_string(),
            }),
        }
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        Ok(self
            .state()
            .instances
            .values()
            .filter(|i| i.state == InstanceState::Running)
            .map(|i| i.instance.clone())
            .collect())
    }

    async fn instance_types(
        &self,
        _nodepool: &str,
        _node_class: Option<&str>,
    ) -> Result<Vec<Arc<InstanceType>>, CloudError> {
        let mut st = self.state();
        st.expire_ice(Instant::now());
        if st.ice.is_empty() {
            return Ok(self.instance_types.clone());
        }
        Ok(self
            .instance_types
            .iter()
            .map(|it| {
                if !it
                    .offerings
                    .iter()
                    .any(|o| o.available && st.ice.contains_key(&ice_key(it, o)))
                {
                    return Arc::clone(it);
                }
                let mut copy = InstanceType::clone(it);
                for o in &mut copy.offerings {
                    if st.ice.contains_key(&ice_key(it, o)) {
                        o.available = false;
                    }
                }
                Arc::new(copy)
            })
            .collect())
    }

    async fn is_drifted(&self, instance: &Instance) -> Result<Option<String>, CloudError> {
        Ok(self.state().drifted.get(&instance.provider_id).cloned())
    }
}
