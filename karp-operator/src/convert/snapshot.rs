//! The one snapshot builder: typed cluster objects + the provider's instance types →
//! [`ClusterSnapshot`].
//!
//! ```
//! use std::sync::Arc;
//! use karp_operator::convert::{build_snapshot, BuildOptions, ClusterObjects, Input, PodSource, TypesByNodeClass};
//!
//! let pod: k8s_openapi::api::core::v1::Pod = serde_yaml::from_str(
//!     "metadata: {name: web, namespace: default}\nspec: {containers: [{name: a, resources: {requests: {cpu: 500m}}}]}",
//! ).unwrap();
//! let mut objects = ClusterObjects::default();
//! objects.pods.push(Input::live_pod(Arc::new(pod)));
//! let converted = build_snapshot(&objects, &mut TypesByNodeClass::default(), &BuildOptions::default()).unwrap();
//! assert_eq!(converted.snapshot.pods[0].requests.cpu, 500);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1 as corev1;
use karp_core::cloud::InstanceType;
use karp_core::cluster::{ClusterSnapshot, Node};
use karp_core::labels;
use karp_core::pod::Pod;
use karp_core::taints::Taint;
use kube::Resource;

use super::node::convert_node;
use super::nodeclaim::{claim_labels, claim_startup_taints, claim_taints, parse_quantities};
use super::nodepool::convert_nodepool;
use super::pod::{convert_pod, owned_by, pv_requirements, PodInput, Volumes};
use super::workloads::{workload_pods, Workload};
use super::{field_err, ConvertError, ObjectRef};
use crate::api::nodeclaim::{NodeClaim, UNREGISTERED_TAINT};
use crate::api::nodepool::NodePool;

/// One object to convert and where it came from.
#[derive(Debug, Clone)]
pub struct Input<T> {
    /// File (if any), kind, namespace and name: what errors name.
    pub origin: ObjectRef,
    /// The object.
    pub object: T,
}

impl<K: Resource<DynamicType = ()>> Input<Arc<K>> {
    /// An object read from the API server.
    #[must_use]
    pub fn live(object: Arc<K>) -> Self {
        Input {
            origin: ObjectRef::of(object.as_ref()),
            object,
        }
    }
}

impl Input<PodSource> {
    /// A pod read from the API server.
    #[must_use]
    pub fn live_pod(pod: Arc<corev1::Pod>) -> Self {
        Input {
            origin: ObjectRef::of(pod.as_ref()),
            object: PodSource::Pod(pod),
        }
    }
}

/// Where pods come from: a pod, or a workload whose replicas are simulated.
#[derive(Debug, Clone)]
pub enum PodSource {
    /// A pod (pending when `spec.nodeName` is empty, else bound to that node).
    Pod(Arc<corev1::Pod>),
    /// A workload read from manifests, expanded to its replicas.
    Workload(Arc<Workload>),
}

/// The typed objects a snapshot is built from, each in a deterministic order (the order of the
/// snapshot's pods, nodes, pools and daemonsets).
///
/// Callers choose which pods to pass: `karp plan` passes every pod of its input (unbound pods
/// are pending), the provisioner passes bound pods and the pods the kube-scheduler marked
/// unschedulable.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    /// Pods and workloads, in order.
    pub pods: Vec<Input<PodSource>>,
    /// Nodes (existing capacity).
    pub nodes: Vec<Input<Arc<corev1::Node>>>,
    /// NodeClaims: a claim behind a node adjusts that node (its startup and unregistered taints
    /// are going away, it is initialized when the claim is); a claim without a node yet is
    /// capacity in flight.
    pub nodeclaims: Vec<Input<Arc<NodeClaim>>>,
    /// NodePools (those being deleted are left out).
    pub nodepools: Vec<Input<Arc<NodePool>>>,
    /// DaemonSets (their pods' overhead lands on every new node they would run on).
    pub daemonsets: Vec<Input<Arc<DaemonSet>>>,
    /// Namespaces (their labels, for namespace selectors).
    pub namespaces: Vec<Input<Arc<corev1::Namespace>>>,
    /// PersistentVolumes (their node affinity constrains the pods using them).
    pub volumes: Vec<Input<Arc<corev1::PersistentVolume>>>,
    /// PersistentVolumeClaims (link pods to volumes).
    pub volume_claims: Vec<Input<Arc<corev1::PersistentVolumeClaim>>>,
}

/// The instance types a NodePool can launch, from the cloud provider's side (a catalog for `karp
/// plan`, the provider's live offerings for the operator).
pub trait InstanceTypeSource {
    /// The instance types of the node class `node_class` that `nodepool` references.
    ///
    /// # Errors
    /// [`ConvertError`] when the node class is unknown or its catalog cannot be built.
    fn instance_types(
        &mut self,
        nodepool: &ObjectRef,
        node_class: Option<&str>,
    ) -> Result<Vec<Arc<InstanceType>>, ConvertError>;

    /// Checks the source itself when no NodePool asked for types (a bad catalog file is never
    /// silent).
    ///
    /// # Errors
    /// [`ConvertError`] describing what is wrong with the source.
    fn check(&mut self) -> Result<(), ConvertError> {
        Ok(())
    }
}

/// Instance types already computed per node class name (from a cloud provider); a node class
/// missing here has none.
#[derive(Debug, Clone, Default)]
pub struct TypesByNodeClass(pub BTreeMap<String, Vec<Arc<InstanceType>>>);

impl InstanceTypeSource for TypesByNodeClass {
    fn instance_types(
        &mut self,
        _nodepool: &ObjectRef,
        node_class: Option<&str>,
    ) -> Result<Vec<Arc<InstanceType>>, ConvertError> {
        Ok(node_class
            .and_then(|c| self.0.get(c))
            .cloned()
            .unwrap_or_default())
    }
}

/// How the builder treats objects that do not convert.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    /// Skip an object that does not convert and record why in [`Converted::skipped`] (the
    /// operator: one bad object must not stop provisioning for the rest); otherwise the first
    /// such object is the error (`karp plan`: bad input exits with status 2).
    pub skip_invalid: bool,
}

/// The converted snapshot, where its pods came from, and notes for people.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    /// What the scheduler plans against.
    pub snapshot: ClusterSnapshot,
    /// For each snapshot pod, the object it came from (same index as `snapshot.pods`).
    pub pod_origins: Vec<ObjectRef>,
    /// Warnings, one line each.
    pub warnings: Vec<String>,
    /// Objects left out because they did not convert (only with [`BuildOptions::skip_invalid`]).
    pub skipped: Vec<ConvertError>,
}

/// Builds the snapshot from typed objects, with instance types from `types`.
///
/// # Errors
/// [`ConvertError`] naming the object and the field; with [`BuildOptions::skip_invalid`] only
/// errors of the instance-type source itself (a bad catalog file) fail the build.
pub fn build_snapshot(
    objects: &ClusterObjects,
    types: &mut dyn InstanceTypeSource,
    options: &BuildOptions,
) -> Result<Converted, ConvertError> {
    let mut b = Builder {
        out: Converted::default(),
        pod_keys: BTreeMap::new(),
        options: *options,
    };
    let volumes = b.volumes(objects)?;
    b.pods(objects, &volumes)?;
    b.daemonsets(objects, &volumes)?;
    b.nodes(objects)?;
    b.pools(objects, types)?;
    b.node_prices();
    b.namespaces(objects);
    Ok(b.out)
}

struct Builder {
    out: Converted,
    pod_keys: BTreeMap<String, ObjectRef>,
    options: BuildOptions,
}

impl Builder {
    /// `Ok(Some(v))` on success; a conversion error is skipped (`Ok(None)`) or returned.
    fn keep<T>(&mut self, r: Result<T, ConvertError>) -> Result<Option<T>, ConvertError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if self.options.skip_invalid => {
                self.out.skipped.push(e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn volumes(&mut self, objects: &ClusterObjects) -> Result<Volumes, ConvertError> {
        let mut volumes = Volumes::default();
        for pv in &objects.volumes {
            if let Some(Some(r)) = self.keep(pv_requirements(&pv.origin, &pv.object))? {
                volumes.volumes.insert(pv.origin.name.clone(), r);
            }
        }
        for pvc in &objects.volume_claims {
            if let Some(v) = pvc
                .object
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .filter(|v| !v.is_empty())
            {
                let ns = pvc.origin.namespace.clone().unwrap_or_default();
                volumes.claims.insert((ns, pvc.origin.name.clone()), v);
            }
        }
        Ok(volumes)
    }

    fn push_pod(&mut self, origin: &ObjectRef, pod: Pod) -> Result<(), ConvertError> {
        let key = pod.key();
        if let Some(first) = self.pod_keys.get(&key) {
            let object = ObjectRef {
                kind: format!("{} (pod {key})", origin.kind),
                ..origin.clone()
            };
            let e = ConvertError::DuplicateObject {
                object: Box::new(object),
                first: first.to_string(),
            };
            return self.keep::<()>(Err(e)).map(|_| ());
        }
        self.pod_keys.insert(key, origin.clone());
        self.out.snapshot.pods.push(pod);
        self.out.pod_origins.push(origin.clone());
        Ok(())
    }

    fn pods(&mut self, objects: &ClusterObjects, volumes: &Volumes) -> Result<(), ConvertError> {
        let deployments: BTreeSet<(String, String)> = objects
            .pods
            .iter()
            .filter(|i| matches!(&i.object, PodSource::Workload(w) if matches!(**w, Workload::Deployment(_))))
            .map(|i| {
                (
                    i.origin.namespace.clone().unwrap_or_default(),
                    i.origin.name.clone(),
                )
            })
            .collect();
        let mut generated = 0usize;
        for input in &objects.pods {
            let o = &input.origin;
            match &input.object {
                PodSource::Pod(p) => {
                    let converted = pod(o, p, volumes, &mut generated);
                    if let Some(Some(pod)) = self.keep(converted)? {
                        self.push_pod(o, pod)?;
                    }
                }
                PodSource::Workload(w) => {
                    let mut warnings = Vec::new();
                    let pods = workload_pods(o, w, &deployments, volumes, &mut warnings);
                    self.out.warnings.extend(warnings);
                    for pod in self.keep(pods)?.into_iter().flatten() {
                        self.push_pod(o, pod)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn daemonsets(
        &mut self,
        objects: &ClusterObjects,
        volumes: &Volumes,
    ) -> Result<(), ConvertError> {
        for d in &objects.daemonsets {
            if let Some(pod) = self.keep(daemonset(&d.origin, &d.object, volumes))? {
                self.out.snapshot.daemonsets.push(pod);
            }
        }
        Ok(())
    }

    fn nodes(&mut self, objects: &ClusterObjects) -> Result<(), ConvertError> {
        let claims_by_provider: BTreeMap<&str, &NodeClaim> = objects
            .nodeclaims
            .iter()
            .filter_map(|c| c.object.provider_id().map(|p| (p, c.object.as_ref())))
            .collect();
        let mut registered: BTreeSet<&str> = BTreeSet::new();
        for n in &objects.nodes {
            let provider_id = n
                .object
                .spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref());
            registered.extend(provider_id);
            let Some(mut node) = self.keep(convert_node(&n.origin, &n.object))? else {
                continue;
            };
            if let Some(claim) = provider_id.and_then(|p| claims_by_provider.get(p)) {
                // Seen through its claim: the unregistered and startup taints are going away,
                // and a node is only initialized once its claim says so.
                let startup: Vec<Taint> = claim_startup_taints(claim);
                node.taints
                    .retain(|t| t.key != UNREGISTERED_TAINT && !startup.contains(t));
                node.initialized = claim.is_true("Initialized");
            }
            self.out.snapshot.nodes.push(node);
        }
        for c in &objects.nodeclaims {
            let claim = &c.object;
            if claim.metadata.deletion_timestamp.is_some()
                || claim.provider_id().is_some_and(|p| registered.contains(p))
            {
                continue;
            }
            self.out.snapshot.nodes.push(in_flight(claim));
        }
        Ok(())
    }

    fn pools(
        &mut self,
        objects: &ClusterObjects,
        types: &mut dyn InstanceTypeSource,
    ) -> Result<(), ConvertError> {
        for np in &objects.nodepools {
            if np.object.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(mut pool) = self.keep(convert_nodepool(&np.origin, &np.object))? else {
                continue;
            };
            let class = pool.node_class.clone();
            let Some(t) = self.keep(types.instance_types(&np.origin, class.as_deref()))? else {
                continue;
            };
            pool.instance_types = t;
            self.out.snapshot.node_pools.push(pool);
        }
        if objects.nodepools.is_empty() {
            types.check()?;
        }
        Ok(())
    }

    /// Prices of existing nodes, when some pool's instance types know their offering.
    fn node_prices(&mut self) {
        let snapshot = &mut self.out.snapshot;
        let mut by_name: BTreeMap<&str, &InstanceType> = BTreeMap::new();
        for t in snapshot.node_pools.iter().flat_map(|p| &p.instance_types) {
            by_name.entry(t.name.as_str()).or_insert(t);
        }
        for n in &mut snapshot.nodes {
            let (Some(it), Some(zone), Some(ct)) = (
                n.labels.get(labels::INSTANCE_TYPE),
                n.labels.get(labels::ZONE),
                n.labels.get(labels::CAPACITY_TYPE),
            ) else {
                continue;
            };
            n.price = by_name.get(it.as_str()).and_then(|t| {
                t.offerings
                    .iter()
                    .find(|o| &o.zone == zone && &o.capacity_type == ct)
                    .map(|o| o.price)
            });
        }
    }

    /// Namespace labels: the given namespaces, and every namespace a pod uses.
    fn namespaces(&mut self, objects: &ClusterObjects) {
        let snapshot = &mut self.out.snapshot;
        for n in &objects.namespaces {
            let mut labels = n.object.metadata.labels.clone().unwrap_or_default();
            labels.insert("kubernetes.io/metadata.name".into(), n.origin.name.clone());
            snapshot.namespaces.insert(n.origin.name.clone(), labels);
        }
        let used: BTreeSet<String> = snapshot
            .pods
            .iter()
            .chain(&snapshot.daemonsets)
            .map(|p| p.namespace.clone())
            .collect();
        for ns in used {
            snapshot
                .namespaces
                .entry(ns.clone())
                .or_insert_with(|| [("kubernetes.io/metadata.name".to_string(), ns)].into());
        }
    }
}

/// A pod to plan with, or `None` for one that takes no capacity decision (terminal, or a pending
/// DaemonSet pod: the DaemonSet's business, as in Karpenter). A pod with only `generateName`
/// gets `<generateName><n>`.
fn pod(
    o: &ObjectRef,
    p: &corev1::Pod,
    volumes: &Volumes,
    generated: &mut usize,
) -> Result<Option<Pod>, ConvertError> {
    if matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Ok(None);
    }
    let Some(spec) = &p.spec else {
        return Err(field_err(o, "spec", "required"));
    };
    let pending = spec.node_name.as_deref().is_none_or(str::is_empty);
    if pending && owned_by(&p.metadata, "DaemonSet").is_some() {
        return Ok(None);
    }
    let name = if o.name.is_empty() {
        *generated += 1;
        format!(
            "{}{generated}",
            p.metadata.generate_name.as_deref().unwrap_or("pod-")
        )
    } else {
        o.name.clone()
    };
    let ns = o.namespace.clone().unwrap_or_else(|| "default".into());
    convert_pod(
        o,
        &PodInput {
            namespace: &ns,
            name: &name,
            labels: p.metadata.labels.clone().unwrap_or_default(),
            spec,
            path: "spec",
        },
        volumes,
    )
    .map(Some)
}

/// A DaemonSet's pod template as the pod it runs on every node.
fn daemonset(o: &ObjectRef, d: &DaemonSet, volumes: &Volumes) -> Result<Pod, ConvertError> {
    let template = &d.spec.template;
    let pod_spec = template
        .spec
        .as_ref()
        .ok_or_else(|| field_err(o, "spec.template.spec", "required"))?;
    let ns = o.namespace.clone().unwrap_or_else(|| "default".into());
    convert_pod(
        o,
        &PodInput {
            namespace: &ns,
            name: &o.name,
            labels: template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            spec: pod_spec,
            path: "spec.template.spec",
        },
        volumes,
    )
}

/// A NodeClaim without a node yet: capacity that is coming (not initialized).
fn in_flight(claim: &NodeClaim) -> Node {
    let status = claim.status.clone().unwrap_or_default();
    let allocatable = if status.allocatable.is_empty() {
        parse_quantities(&claim.spec.resources.clone().unwrap_or_default().requests)
    } else {
        parse_quantities(&status.allocatable)
    };
    let name = claim.metadata.name.clone().unwrap_or_default();
    let mut node = Node::new(name, claim_labels(claim), allocatable);
    node.taints = claim_taints(claim);
    node.initialized = false;
    node
}
