//! The Node object a simulated kubelet registers for an instance, and the status patches it sends
//! later (pure functions; [`crate::kubelet`] sends them).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Taint as K8sTaint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use karp_core::labels;
use karp_core::taints::{Effect, Taint};

use crate::cloud::SimInstance;
use crate::view::{resource_list, taint_to};

/// The taint every node registers with until karp registers its NodeClaim.
pub const UNREGISTERED_TAINT_KEY: &str = "karpenter.sh/unregistered";

/// The kubelet version nodes report.
pub const KUBELET_VERSION: &str = "v1.33.0-sim";

/// The `karpenter.sh/unregistered:NoExecute` taint.
#[must_use]
pub fn unregistered_taint() -> Taint {
    Taint::new(UNREGISTERED_TAINT_KEY, "", Effect::NoExecute)
}

/// What the Ready condition says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Registered, not ready yet (`KubeletNotReady`).
    NotReady,
    /// Ready (`KubeletReady`).
    Ready,
    /// The kubelet stopped reporting (`NodeStatusUnknown`): its instance is gone.
    Unknown,
}

impl Readiness {
    /// The Ready condition's status string.
    #[must_use]
    pub fn status(self) -> &'static str {
        match self {
            Readiness::NotReady => "False",
            Readiness::Ready => "True",
            Readiness::Unknown => "Unknown",
        }
    }
}

/// The labels the node of `inst` registers with: the launch request's labels, then every
/// single-valued label of the instance type's requirements, then the facts of the launch (zone,
/// region, capacity type, instance type) and `kubernetes.io/hostname`.
#[must_use]
pub fn node_labels(inst: &SimInstance, region: &str, node_name: &str) -> BTreeMap<String, String> {
    let mut out = inst.request.labels.clone();
    for r in inst.instance_type.requirements.iter() {
        if let Some(v) = r.single_value() {
            out.insert(r.key().to_string(), v.to_string());
        }
    }
    out.insert(
        labels::INSTANCE_TYPE.into(),
        inst.instance.instance_type.clone(),
    );
    out.insert(labels::ZONE.into(), inst.instance.zone.clone());
    out.insert(labels::REGION.into(), region.to_string());
    out.insert(
        labels::CAPACITY_TYPE.into(),
        inst.instance.capacity_type.clone(),
    );
    out.insert(labels::HOSTNAME.into(), node_name.to_string());
    out
}

/// The taints the node of `inst` registers with: the request's taints, its startup taints and
/// `karpenter.sh/unregistered:NoExecute`, without duplicates, in that order.
#[must_use]
pub fn node_taints(inst: &SimInstance) -> Vec<Taint> {
    let mut out: Vec<Taint> = Vec::new();
    for t in inst
        .request
        .taints
        .iter()
        .chain(&inst.request.startup_taints)
        .cloned()
        .chain([unregistered_taint()])
    {
        if !out.iter().any(|o| o.key == t.key && o.effect == t.effect) {
            out.push(t);
        }
    }
    out
}

/// The startup taints of `inst` the kubelet's "daemon" removes once the node is ready (those that
/// are not also regular taints of the request).
#[must_use]
pub fn removable_startup_taints(inst: &SimInstance) -> Vec<Taint> {
    inst.request
        .startup_taints
        .iter()
        .filter(|s| {
            !inst
                .request
                .taints
                .iter()
                .any(|t| t.key == s.key && t.effect == s.effect)
        })
        .cloned()
        .collect()
}

/// `taints` without any entry matching a startup taint (same key and effect), or `None` when
/// nothing would change.
#[must_use]
pub fn without_startup_taints(taints: &[K8sTaint], startup: &[Taint]) -> Option<Vec<K8sTaint>> {
    let kept: Vec<K8sTaint> = taints
        .iter()
        .filter(|t| {
            !startup
                .iter()
                .any(|s| s.key == t.key && s.effect.as_str() == t.effect)
        })
        .cloned()
        .collect();
    (kept.len() != taints.len()).then_some(kept)
}

/// The node conditions a kubelet reports for `readiness`, stamped `now`.
#[must_use]
pub fn node_conditions(readiness: Readiness, now: &Time) -> Vec<NodeCondition> {
    let pressure = |type_: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: if readiness == Readiness::Unknown {
            "Unknown".into()
        } else {
            "False".into()
        },
        reason: Some(if readiness == Readiness::Unknown {
            "NodeStatusUnknown".into()
        } else {
            reason.into()
        }),
        message: Some(if readiness == Readiness::Unknown {
            "Kubelet stopped posting node status.".into()
        } else {
            message.into()
        }),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    let (reason, message) = match readiness {
        Readiness::NotReady => (
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false",
        ),
        Readiness::Ready => ("KubeletReady", "kubelet is posting ready status"),
        Readiness::Unknown => ("NodeStatusUnknown", "Kubelet stopped posting node status."),
    };
    vec![
        pressure(
            "MemoryPressure",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        pressure(
            "DiskPressure",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        pressure(
            "PIDPressure",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        NodeCondition {
            type_: "Ready".into(),
            status: readiness.status().into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
        },
    ]
}

/// The full node status of `inst` with the conditions of `readiness`.
#[must_use]
pub fn node_status(
    inst: &SimInstance,
    region: &str,
    readiness: Readiness,
    now: &Time,
) -> NodeStatus {
    let name = inst.node_name(region);
    let it = &inst.instance_type;
    let label = |k: &str, d: &str| it.label(k).unwrap_or(d).to_string();
    NodeStatus {
        capacity: Some(resource_list(&it.capacity)),
        allocatable: Some(resource_list(it.allocatable())),
        conditions: Some(node_conditions(readiness, now)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: inst.private_ip.to_string(),
            },
            NodeAddress {
                type_: "InternalDNS".into(),
                address: name.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name,
            },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: label(labels::ARCH, "amd64"),
            operating_system: label(labels::OS, "linux"),
            boot_id: format!("boot-{}", inst.index),
            machine_id: format!("machine-{}", inst.index),
            system_uuid: format!("uuid-{}", inst.index),
            container_runtime_version: "containerd://1.7.27".into(),
            kernel_version: "6.1.0-sim".into(),
            kube_proxy_version: KUBELET_VERSION.into(),
            kubelet_version: KUBELET_VERSION.into(),
            os_image: "Amazon Linux 2023 (simulated)".into(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// The Node object the kubelet of `inst` creates at registration (not ready yet).
#[must_use]
pub fn node_object(inst: &SimInstance, region: &str, now: &Time) -> Node {
    let name = inst.node_name(region);
    Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(node_labels(inst, region, &name)),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(inst.instance.provider_id.clone()),
            taints: Some(node_taints(inst).iter().map(taint_to).collect()),
            ..NodeSpec::default()
        }),
        status: Some(node_status(inst, region, Readiness::NotReady, now)),
    }
}

/// The Ready condition's status on `node` (`None` when it has none).
#[must_use]
pub fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// The IP the kubelet gives its `n`-th pod (`10.128.0.1` upwards, apart from node addresses).
#[must_use]
pub fn pod_ip(n: u64) -> Ipv4Addr {
    let n = (n % 0x007f_ffff).max(1);
    let [_, b, c, d] = (n as u32).to_be_bytes();
    Ipv4Addr::new(10, 128 | b, c, d)
}
