//! Test fixtures: builders for pods, instance types and node pools, and a fake cloud provider that
//! records calls and injects errors (feature `testing`).
//!
//! ```
//! use karp_core::testing::{instance_type, pod};
//!
//! let it = instance_type("m5.large").cpu("2").memory("8Gi").zones(["a", "b"]).price(0.096).build();
//! assert_eq!(it.offerings.len(), 4); // two zones × spot and on-demand
//! let p = pod("web-0").cpu("500m").label("app", "web").build();
//! assert_eq!(p.requests.cpu, 500);
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::cloud::{CloudError, CloudProvider, Instance, InstanceType, LaunchRequest, Offering};
use crate::cluster::{Node, NodePool};
use crate::labels;
use crate::pod::{
    HostPort, InclusionPolicy, LabelSelector, Pod, PodAffinityTerm, TopologySpreadConstraint,
    Weighted, WhenUnsatisfiable,
};
use crate::requirements::{Operator, Requirement, Requirements};
use crate::resources::{Quantity, Resources};
use crate::taints::{Effect, Taint, Toleration};

/// Default zones of built instance types.
pub const ZONES: [&str; 3] = ["test-zone-1", "test-zone-2", "test-zone-3"];

fn qty(s: &str) -> Quantity {
    s.parse()
        .unwrap_or_else(|e| panic!("test quantity {s:?}: {e}"))
}

/// Builder for [`InstanceType`].
#[derive(Debug, Clone)]
pub struct InstanceTypeBuilder {
    name: String,
    capacity: Resources,
    overhead: Resources,
    labels: BTreeMap<String, String>,
    zones: Vec<String>,
    capacity_types: Vec<String>,
    price: Option<f64>,
    spot_price: Option<f64>,
    offerings: Option<Vec<Offering>>,
}

/// Start building an instance type (2 CPU, 4Gi, 110 pods, three zones, spot and on-demand).
#[must_use]
pub fn instance_type(name: &str) -> InstanceTypeBuilder {
    let mut capacity = Resources::new();
    capacity.cpu = 2000;
    capacity.memory = 4 << 30;
    capacity.pods = 110;
    capacity.ephemeral_storage = 20 << 30;
    InstanceTypeBuilder {
        name: name.to_string(),
        capacity,
        overhead: Resources::new(),
        labels: BTreeMap::new(),
        zones: ZONES.iter().map(ToString::to_string).collect(),
        capacity_types: vec![
            labels::CAPACITY_SPOT.into(),
            labels::CAPACITY_ON_DEMAND.into(),
        ],
        price: None,
        spot_price: None,
        offerings: None,
    }
}

impl InstanceTypeBuilder {
    /// CPU capacity.
    #[must_use]
    pub fn cpu(mut self, q: &str) -> Self {
        self.capacity.cpu = qty(q).millis_ceil();
        self
    }
    /// Memory capacity.
    #[must_use]
    pub fn memory(mut self, q: &str) -> Self {
        self.capacity.memory = qty(q).value_ceil();
        self
    }
    /// Pod capacity.
    #[must_use]
    pub fn pods(mut self, n: i64) -> Self {
        self.capacity.pods = n;
        self
    }
    /// Any resource capacity.
    #[must_use]
    pub fn resource(mut self, name: &str, q: &str) -> Self {
        self.capacity.set(name, &qty(q));
        self
    }
    /// Overhead (reserved) of a resource.
    #[must_use]
    pub fn overhead(mut self, name: &str, q: &str) -> Self {
        self.overhead.set(name, &qty(q));
        self
    }
    /// A label the type offers.
    #[must_use]
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.to_string(), v.to_string());
        self
    }
    /// Architecture label.
    #[must_use]
    pub fn arch(self, arch: &str) -> Self {
        self.label(labels::ARCH, arch)
    }
    /// Zones of the generated offerings.
    #[must_use]
    pub fn zones<I: IntoIterator<Item = S>, S: Into<String>>(mut self, zones: I) -> Self {
        self.zones = zones.into_iter().map(Into::into).collect();
        self
    }
    /// Capacity types of the generated offerings.
    #[must_use]
    pub fn capacity_types<I: IntoIterator<Item = S>, S: Into<String>>(mut self, cts: I) -> Self {
        self.capacity_types = cts.into_iter().map(Into::into).collect();
        self
    }
    /// On-demand price (spot defaults to 60 % of it).
    #[must_use]
    pub fn price(mut self, p: f64) -> Self {
        self.price = Some(p);
        self
    }
    /// Spot price.
    #[must_use]
    pub fn spot_price(mut self, p: f64) -> Self {
        self.spot_price = Some(p);
        self
    }
    /// Explicit offerings (replaces zones / capacity types / prices).
    #[must_use]
    pub fn offerings(mut self, o: Vec<Offering>) -> Self {
        self.offerings = Some(o);
        self
    }
    /// Build.
    #[must_use]
    pub fn build(self) -> Arc<InstanceType> {
        let od = self.price.unwrap_or_else(|| {
            0.1 * (self.capacity.cpu as f64 / 1000.0)
                + 0.01 * (self.capacity.memory as f64 / f64::from(1 << 30))
        });
        let spot = self.spot_price.unwrap_or(od * 0.6);
        let offerings = self.offerings.unwrap_or_else(|| {
            let mut v = Vec::new();
            for z in &self.zones {
                for ct in &self.capacity_types {
                    let p = if ct == labels::CAPACITY_SPOT {
                        spot
                    } else {
                        od
                    };
                    v.push(Offering::new(z.clone(), ct.clone(), p));
                }
            }
            v
        });
        Arc::new(InstanceType::new(
            self.name,
            &self.labels,
            self.capacity,
            self.overhead,
            offerings,
        ))
    }
}

/// A NodePool with defaults (weight 0, no requirements) over `types`.
#[must_use]
pub fn nodepool(name: &str, types: Vec<Arc<InstanceType>>) -> NodePool {
    NodePool::new(name, types)
}

/// A requirement, panicking on invalid input (tests only).
#[must_use]
pub fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
    Requirement::new(key, op, values.iter().copied())
        .unwrap_or_else(|e| panic!("test requirement: {e}"))
}

/// Builder for [`Pod`].
#[derive(Debug, Clone)]
pub struct PodBuilder {
    pod: Pod,
}

/// Start building a pending pod in namespace `default` with no requests but its pod slot.
#[must_use]
pub fn pod(name: &str) -> PodBuilder {
    let mut p = Pod {
        namespace: "default".into(),
        name: name.into(),
        ..Default::default()
    };
    p.requests.pods = 1;
    PodBuilder { pod: p }
}

impl PodBuilder {
    /// Namespace.
    #[must_use]
    pub fn namespace(mut self, ns: &str) -> Self {
        self.pod.namespace = ns.into();
        self
    }
    /// CPU request.
    #[must_use]
    pub fn cpu(mut self, q: &str) -> Self {
        self.pod.requests.cpu = qty(q).millis_ceil();
        self
    }
    /// Memory request.
    #[must_use]
    pub fn memory(mut self, q: &str) -> Self {
        self.pod.requests.memory = qty(q).value_ceil();
        self
    }
    /// Any resource request.
    #[must_use]
    pub fn resource(mut self, name: &str, q: &str) -> Self {
        self.pod.requests.set(name, &qty(q));
        self
    }
    /// A label.
    #[must_use]
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.pod.labels.insert(k.into(), v.into());
        self
    }
    /// A nodeSelector entry.
    #[must_use]
    pub fn node_selector(mut self, k: &str, v: &str) -> Self {
        self.pod.node_selector.add(Requirement::in_values(k, [v]));
        self
    }
    /// A required node affinity term (OR-ed with other terms).
    #[must_use]
    pub fn required_term(mut self, reqs: Vec<Requirement>) -> Self {
        self.pod
            .required_node_affinity
            .push(reqs.into_iter().collect());
        self
    }
    /// A preferred node affinity term.
    #[must_use]
    pub fn preferred_term(mut self, weight: i32, reqs: Vec<Requirement>) -> Self {
        self.pod.preferred_node_affinity.push(Weighted {
            weight,
            term: reqs.into_iter().collect::<Requirements>(),
        });
        self
    }
    /// A required pod affinity term selecting `labels` on `key`.
    #[must_use]
    pub fn affinity(mut self, key: &str, labels: &[(&str, &str)]) -> Self {
        self.pod
            .pod_affinity
            .push(PodAffinityTerm::new(key, labels.iter().copied()));
        self
    }
    /// A required pod anti-affinity term selecting `labels` on `key`.
    #[must_use]
    pub fn anti_affinity(mut self, key: &str, labels: &[(&str, &str)]) -> Self {
        self.pod
            .pod_anti_affinity
            .push(PodAffinityTerm::new(key, labels.iter().copied()));
        self
    }
    /// A raw required pod affinity term.
    #[must_use]
    pub fn affinity_term(mut self, term: PodAffinityTerm) -> Self {
        self.pod.pod_affinity.push(term);
        self
    }
    /// A preferred pod affinity term.
    #[must_use]
    pub fn preferred_affinity(mut self, weight: i32, key: &str, labels: &[(&str, &str)]) -> Self {
        self.pod.preferred_pod_affinity.push(Weighted {
            weight,
            term: PodAffinityTerm::new(key, labels.iter().copied()),
        });
        self
    }
    /// A preferred pod anti-affinity term.
    #[must_use]
    pub fn preferred_anti_affinity(
        mut self,
        weight: i32,
        key: &str,
        labels: &[(&str, &str)],
    ) -> Self {
        self.pod.preferred_pod_anti_affinity.push(Weighted {
            weight,
            term: PodAffinityTerm::new(key, labels.iter().copied()),
        });
        self
    }
    /// A DoNotSchedule spread constraint on `key` selecting `labels`.
    #[must_use]
    pub fn spread(mut self, key: &str, max_skew: i32, labels: &[(&str, &str)]) -> Self {
        self.pod.topology_spread.push(TopologySpreadConstraint::new(
            key,
            max_skew,
            LabelSelector::labels(labels.iter().copied()),
        ));
        self
    }
    /// A ScheduleAnyway spread constraint.
    #[must_use]
    pub fn spread_soft(mut self, key: &str, max_skew: i32, labels: &[(&str, &str)]) -> Self {
        let mut t = TopologySpreadConstraint::new(
            key,
            max_skew,
            LabelSelector::labels(labels.iter().copied()),
        );
        t.when_unsatisfiable = WhenUnsatisfiable::ScheduleAnyway;
        self.pod.topology_spread.push(t);
        self
    }
    /// A raw spread constraint.
    #[must_use]
    pub fn spread_constraint(mut self, t: TopologySpreadConstraint) -> Self {
        self.pod.topology_spread.push(t);
        self
    }
    /// Spread with minDomains.
    #[must_use]
    pub fn spread_min_domains(
        mut self,
        key: &str,
        max_skew: i32,
        min_domains: i32,
        labels: &[(&str, &str)],
    ) -> Self {
        let mut t = TopologySpreadConstraint::new(
            key,
            max_skew,
            LabelSelector::labels(labels.iter().copied()),
        );
        t.min_domains = Some(min_domains);
        t.node_affinity_policy = InclusionPolicy::Honor;
        self.pod.topology_spread.push(t);
        self
    }
    /// A toleration.
    #[must_use]
    pub fn toleration(mut self, t: Toleration) -> Self {
        self.pod.tolerations.push(t);
        self
    }
    /// A host port (TCP, all addresses).
    #[must_use]
    pub fn host_port(mut self, port: i32) -> Self {
        self.pod.host_ports.push(HostPort {
            ip: String::new(),
            port,
            protocol: "TCP".into(),
        });
        self
    }
    /// A volume zone requirement.
    #[must_use]
    pub fn volume_zone(mut self, zone: &str) -> Self {
        self.pod
            .volume_requirements
            .add(Requirement::in_values(labels::ZONE, [zone]));
        self
    }
    /// Bind to a node.
    #[must_use]
    pub fn node(mut self, n: &str) -> Self {
        self.pod.node_name = Some(n.into());
        self
    }
    /// Build.
    #[must_use]
    pub fn build(self) -> Pod {
        self.pod
    }
}

/// An existing initialized node built from an instance type, in `zone`, owned by `pool`.
#[must_use]
pub fn node_from(
    name: &str,
    it: &InstanceType,
    zone: &str,
    pool: &str,
    capacity_type: &str,
) -> Node {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for r in it.requirements.iter() {
        if let Some(v) = r.single_value() {
            labels.insert(r.key().to_string(), v.to_string());
        }
    }
    labels.insert(labels::ZONE.into(), zone.into());
    labels.insert(labels::CAPACITY_TYPE.into(), capacity_type.into());
    labels.insert(labels::NODEPOOL.into(), pool.into());
    let mut n = Node::new(name, labels, it.allocatable().clone());
    n.capacity = it.capacity.clone();
    n
}

/// A NoSchedule taint.
#[must_use]
pub fn taint(key: &str, value: &str, effect: Effect) -> Taint {
    Taint::new(key, value, effect)
}

/// A cloud provider that launches nothing real: it records every call, hands out instances from
/// its instance types, and returns queued errors first.
#[derive(Debug, Default)]
pub struct FakeCloudProvider {
    /// Instance types offered to every pool.
    pub instance_types: Vec<Arc<InstanceType>>,
    /// Calls made, in order (`create nodeclaim-1`, `delete fake:///i-1`, ...).
    pub calls: Mutex<Vec<String>>,
    /// Errors to return from the next calls, in order.
    pub errors: Mutex<VecDeque<CloudError>>,
    /// Instances alive.
    pub instances: Mutex<BTreeMap<String, Instance>>,
}

impl FakeCloudProvider {
    /// A provider offering `types`.
    #[must_use]
    pub fn new(instance_types: Vec<Arc<InstanceType>>) -> Self {
        FakeCloudProvider {
            instance_types,
            ..Default::default()
        }
    }

    /// Queue an error for the next call.
    pub fn fail_next(&self, e: CloudError) {
        self.errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(e);
    }

    fn call(&self, what: String) -> Result<(), CloudError> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(what);
        match self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn instances(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Instance>> {
        self.instances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl CloudProvider for FakeCloudProvider {
    fn name(&self) -> &str {
        "fake"
    }

    async fn create(&self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        self.call(format!("create {}", request.nodeclaim))?;
        let mut best: Option<(f64, &InstanceType, &Offering)> = None;
        for it in &self.instance_types {
            if !it.requirements.intersects(&request.requirements)
                || !request.requests.fits_in(it.allocatable())
            {
                continue;
            }
            if let Some(o) = it.cheapest_offering(&request.requirements) {
                if best.is_none_or(|(p, _, _)| o.price < p) {
                    best = Some((o.price, it, o));
                }
            }
        }
        let Some((_, it, o)) = best else {
            return Err(CloudError::InsufficientCapacity {
                offerings: Vec::new(),
            });
        };
        let mut instances = self.instances();
        let id = format!("fake:///{}/i-{}", o.zone, instances.len() + 1);
        let inst = Instance {
            provider_id: id.clone(),
            nodeclaim: Some(request.nodeclaim.clone()),
            instance_type: it.name.clone(),
            zone: o.zone.clone(),
            capacity_type: o.capacity_type.clone(),
            labels: BTreeMap::new(),
        };
        instances.insert(id, inst.clone());
        Ok(inst)
    }

    async fn delete(&self, provider_id: &str) -> Result<(), CloudError> {
        self.call(format!("delete {provider_id}"))?;
        match self.instances().remove(provider_id) {
            Some(_) => Ok(()),
            None => Err(CloudError::NotFound {
                provider_id: provider_id.into(),
            }),
        }
    }

    async fn get(&self, provider_id: &str) -> Result<Instance, CloudError> {
        self.call(format!("get {provider_id}"))?;
        self.instances()
            .get(provider_id)
            .cloned()
            .ok_or_else(|| CloudError::NotFound {
                provider_id: provider_id.into(),
            })
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        self.call("list".into())?;
        Ok(self.instances().values().cloned().collect())
    }

    async fn instance_types(
        &self,
        nodepool: &str,
        _node_class: Option<&str>,
    ) -> Result<Vec<Arc<InstanceType>>, CloudError> {
        self.call(format!("instance_types {nodepool}"))?;
        Ok(self.instance_types.clone())
    }

    async fn is_drifted(&self, instance: &Instance) -> Result<Option<String>, CloudError> {
        self.call(format!("is_drifted {}", instance.provider_id))?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// The fake never awaits anything, so one poll completes it.
    fn ready<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("fake provider future was not ready"),
        }
    }

    #[test]
    fn fake_provider_records_calls_and_injects_errors() {
        let cp = FakeCloudProvider::new(vec![instance_type("small").price(0.1).build()]);
        let req = LaunchRequest {
            nodeclaim: "nc-1".into(),
            nodepool: "default".into(),
            node_class: None,
            requirements: Requirements::new(),
            requests: Resources::new(),
            ..LaunchRequest::default()
        };
        let inst = ready(cp.create(&req)).unwrap();
        assert_eq!(inst.instance_type, "small");
        assert_eq!(inst.capacity_type, "spot");
        cp.fail_next(CloudError::InsufficientCapacity { offerings: vec![] });
        assert!(ready(cp.create(&req))
            .unwrap_err()
            .is_insufficient_capacity());
        assert!(ready(cp.delete(&inst.provider_id)).is_ok());
        assert!(ready(cp.delete(&inst.provider_id))
            .unwrap_err()
            .is_not_found());
        assert_eq!(ready(cp.list()).unwrap().len(), 0);
        let calls = cp.calls.lock().unwrap().clone();
        assert_eq!(calls[0], "create nc-1");
        assert_eq!(calls.len(), 5);
    }
}
