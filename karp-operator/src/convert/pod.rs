//! Pods (and pod templates) → karp-core pods: effective requests, node selector and affinity,
//! pod (anti-)affinity, topology spread, tolerations, host ports and volume requirements.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use karp_core::labels;
use karp_core::pod::{
    effective_requests, ContainerRequests, HostPort, InclusionPolicy, LabelSelector, Pod,
    PodAffinityTerm, SelectorOperator, SelectorRequirement, TopologySpreadConstraint, Weighted,
    WhenUnsatisfiable,
};
use karp_core::requirements::{Operator, Requirement, Requirements};
use karp_core::resources::{Quantity, Resources};
use karp_core::taints::{Effect, Taint, Toleration, TolerationOperator};

use super::{field_err, ConvertError, ObjectRef};

pub(crate) fn parse_quantity(
    object: &ObjectRef,
    field: &str,
    q: &str,
) -> Result<Quantity, ConvertError> {
    let parsed: Quantity = q.parse().map_err(|e| field_err(object, field, e))?;
    if parsed.nanos() < 0 {
        return Err(field_err(
            object,
            field,
            format!("quantity {q:?} must not be negative"),
        ));
    }
    Ok(parsed)
}

pub(crate) fn set_resources(
    object: &ObjectRef,
    field: &str,
    into: &mut Resources,
    list: Option<&BTreeMap<String, K8sQuantity>>,
    skip: impl Fn(&str) -> bool,
) -> Result<(), ConvertError> {
    for (name, q) in list.into_iter().flatten() {
        if skip(name) {
            continue;
        }
        let q = parse_quantity(object, &format!("{field}.{name}"), &q.0)?;
        into.set(name, &q);
    }
    Ok(())
}

/// Requests of a `resources` block, with limits standing in for absent requests (as Kubernetes defaults them).
fn requests_of(
    object: &ObjectRef,
    field: &str,
    rr: Option<&corev1::ResourceRequirements>,
) -> Result<Resources, ConvertError> {
    let mut r = Resources::new();
    let Some(rr) = rr else { return Ok(r) };
    let requests = rr.requests.as_ref();
    set_resources(
        object,
        &format!("{field}.limits"),
        &mut r,
        rr.limits.as_ref(),
        |n| requests.is_some_and(|m| m.contains_key(n)),
    )?;
    set_resources(
        object,
        &format!("{field}.requests"),
        &mut r,
        requests,
        |_| false,
    )?;
    Ok(r)
}

/// A pod spec's effective requests: containers, init containers (sidecars with `restartPolicy:
/// Always` keep running), pod-level resources when set, and `spec.overhead`.
///
/// # Errors
/// [`ConvertError::ConvertField`] naming the quantity that does not parse.
pub fn pod_requests(
    object: &ObjectRef,
    path: &str,
    spec: &corev1::PodSpec,
) -> Result<Resources, ConvertError> {
    let mut containers = Vec::with_capacity(spec.containers.len());
    for (i, c) in spec.containers.iter().enumerate() {
        let requests = requests_of(
            object,
            &format!("{path}.containers[{i}].resources"),
            c.resources.as_ref(),
        )?;
        containers.push(ContainerRequests {
            requests,
            restartable: false,
        });
    }
    let mut init = Vec::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let requests = requests_of(
            object,
            &format!("{path}.initContainers[{i}].resources"),
            c.resources.as_ref(),
        )?;
        init.push(ContainerRequests {
            requests,
            restartable: c.restart_policy.as_deref() == Some("Always"),
        });
    }
    let mut overhead = Resources::new();
    set_resources(
        object,
        &format!("{path}.overhead"),
        &mut overhead,
        spec.overhead.as_ref(),
        |_| false,
    )?;
    let mut total = effective_requests(&containers, &init, &overhead);
    if spec.resources.is_some() {
        // Pod-level resources replace the container sum for the resources they name.
        let pod_level = requests_of(
            object,
            &format!("{path}.resources"),
            spec.resources.as_ref(),
        )?;
        for (name, amount) in pod_level.iter() {
            let value = amount + overhead.get(name);
            match name {
                "cpu" => total.cpu = value,
                "memory" => total.memory = value,
                "ephemeral-storage" => total.ephemeral_storage = value,
                other => {
                    total.extended.insert(other.to_string(), value);
                }
            }
        }
    }
    Ok(total)
}

fn pod_operator(object: &ObjectRef, field: &str, op: &str) -> Result<Operator, ConvertError> {
    match op {
        "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {
            Operator::parse(op).map_err(|e| field_err(object, field, e))
        }
        other => Err(field_err(
            object,
            field,
            format!(
                "unknown operator {other:?} (expected In, NotIn, Exists, DoesNotExist, Gt or Lt)"
            ),
        )),
    }
}

fn node_selector_requirements(
    object: &ObjectRef,
    path: &str,
    exprs: Option<&Vec<corev1::NodeSelectorRequirement>>,
) -> Result<Requirements, ConvertError> {
    let mut out = Requirements::new();
    for (j, e) in exprs.into_iter().flatten().enumerate() {
        let field = format!("{path}[{j}]");
        let op = pod_operator(object, &format!("{field}.operator"), &e.operator)?;
        let key = labels::normalize_key(&e.key).to_string();
        let r = Requirement::new(key, op, e.values.iter().flatten().cloned())
            .map_err(|err| field_err(object, &field, err))?;
        out.add(r);
    }
    Ok(out)
}

fn selector_operator(
    object: &ObjectRef,
    field: &str,
    op: &str,
) -> Result<SelectorOperator, ConvertError> {
    Ok(match op {
        "In" => SelectorOperator::In,
        "NotIn" => SelectorOperator::NotIn,
        "Exists" => SelectorOperator::Exists,
        "DoesNotExist" => SelectorOperator::DoesNotExist,
        other => {
            return Err(field_err(
                object,
                field,
                format!("unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"),
            ))
        }
    })
}

pub(crate) fn label_selector(
    object: &ObjectRef,
    path: &str,
    s: &metav1::LabelSelector,
) -> Result<LabelSelector, ConvertError> {
    let mut out = LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let field = format!("{path}.matchExpressions[{i}]");
        let operator = selector_operator(object, &format!("{field}.operator"), &e.operator)?;
        let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
        match operator {
            SelectorOperator::In | SelectorOperator::NotIn if values.is_empty() => {
                return Err(field_err(
                    object,
                    format!("{field}.values"),
                    format!("operator {} needs at least one value", e.operator),
                ))
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !values.is_empty() => {
                return Err(field_err(
                    object,
                    format!("{field}.values"),
                    format!("operator {} takes no values", e.operator),
                ))
            }
            _ => {}
        }
        out.match_expressions.push(SelectorRequirement {
            key: e.key.clone(),
            operator,
            values,
        });
    }
    out.match_expressions.sort();
    Ok(out)
}

fn affinity_term(
    object: &ObjectRef,
    path: &str,
    t: &corev1::PodAffinityTerm,
) -> Result<PodAffinityTerm, ConvertError> {
    if t.topology_key.is_empty() {
        return Err(field_err(object, format!("{path}.topologyKey"), "required"));
    }
    Ok(PodAffinityTerm {
        label_selector: t
            .label_selector
            .as_ref()
            .map(|s| label_selector(object, &format!("{path}.labelSelector"), s))
            .transpose()?,
        topology_key: labels::normalize_key(&t.topology_key).to_string(),
        namespaces: t.namespaces.clone().unwrap_or_default(),
        namespace_selector: t
            .namespace_selector
            .as_ref()
            .map(|s| label_selector(object, &format!("{path}.namespaceSelector"), s))
            .transpose()?,
        match_label_keys: t.match_label_keys.clone().unwrap_or_default(),
        mismatch_label_keys: t.mismatch_label_keys.clone().unwrap_or_default(),
    })
}

fn affinity_terms(
    object: &ObjectRef,
    path: &str,
    required: Option<&Vec<corev1::PodAffinityTerm>>,
    preferred: Option<&Vec<corev1::WeightedPodAffinityTerm>>,
) -> Result<(Vec<PodAffinityTerm>, Vec<Weighted<PodAffinityTerm>>), ConvertError> {
    let mut req = Vec::new();
    for (i, t) in required.into_iter().flatten().enumerate() {
        req.push(affinity_term(
            object,
            &format!("{path}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
            t,
        )?);
    }
    let mut pref = Vec::new();
    for (i, w) in preferred.into_iter().flatten().enumerate() {
        let p = format!("{path}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        if !(1..=100).contains(&w.weight) {
            return Err(field_err(
                object,
                format!("{p}.weight"),
                format!("must be between 1 and 100, got {}", w.weight),
            ));
        }
        pref.push(Weighted {
            weight: w.weight,
            term: affinity_term(
                object,
                &format!("{p}.podAffinityTerm"),
                &w.pod_affinity_term,
            )?,
        });
    }
    Ok((req, pref))
}

fn inclusion_policy(
    object: &ObjectRef,
    field: &str,
    v: Option<&str>,
    default: InclusionPolicy,
) -> Result<InclusionPolicy, ConvertError> {
    match v {
        None | Some("") => Ok(default),
        Some("Honor") => Ok(InclusionPolicy::Honor),
        Some("Ignore") => Ok(InclusionPolicy::Ignore),
        Some(other) => Err(field_err(
            object,
            field,
            format!("unknown policy {other:?} (expected Honor or Ignore)"),
        )),
    }
}

fn spread(
    object: &ObjectRef,
    path: &str,
    t: &corev1::TopologySpreadConstraint,
) -> Result<TopologySpreadConstraint, ConvertError> {
    if t.max_skew <= 0 {
        return Err(field_err(
            object,
            format!("{path}.maxSkew"),
            format!("must be greater than 0, got {}", t.max_skew),
        ));
    }
    if t.topology_key.is_empty() {
        return Err(field_err(object, format!("{path}.topologyKey"), "required"));
    }
    let when_unsatisfiable = match t.when_unsatisfiable.as_str() {
        "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
        "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
        other => {
            return Err(field_err(
                object,
                format!("{path}.whenUnsatisfiable"),
                format!("unknown value {other:?} (expected DoNotSchedule or ScheduleAnyway)"),
            ))
        }
    };
    if let Some(m) = t.min_domains {
        if m <= 0 {
            return Err(field_err(
                object,
                format!("{path}.minDomains"),
                format!("must be greater than 0, got {m}"),
            ));
        }
    }
    Ok(TopologySpreadConstraint {
        max_skew: t.max_skew,
        topology_key: labels::normalize_key(&t.topology_key).to_string(),
        when_unsatisfiable,
        label_selector: t
            .label_selector
            .as_ref()
            .map(|s| label_selector(object, &format!("{path}.labelSelector"), s))
            .transpose()?,
        min_domains: t.min_domains,
        node_affinity_policy: inclusion_policy(
            object,
            &format!("{path}.nodeAffinityPolicy"),
            t.node_affinity_policy.as_deref(),
            InclusionPolicy::Honor,
        )?,
        node_taints_policy: inclusion_policy(
            object,
            &format!("{path}.nodeTaintsPolicy"),
            t.node_taints_policy.as_deref(),
            InclusionPolicy::Ignore,
        )?,
        match_label_keys: t.match_label_keys.clone().unwrap_or_default(),
    })
}

fn effect(object: &ObjectRef, field: &str, e: &str) -> Result<Effect, ConvertError> {
    Effect::parse(e).ok_or_else(|| {
        field_err(
            object,
            field,
            format!(
                "invalid taint effect {e:?} (expected NoSchedule, PreferNoSchedule or NoExecute)"
            ),
        )
    })
}

fn toleration(
    object: &ObjectRef,
    path: &str,
    t: &corev1::Toleration,
) -> Result<Toleration, ConvertError> {
    let operator = match t.operator.as_deref() {
        None | Some("") | Some("Equal") => TolerationOperator::Equal,
        Some("Exists") => TolerationOperator::Exists,
        Some(other) => {
            return Err(field_err(
                object,
                format!("{path}.operator"),
                format!("unknown operator {other:?} (expected Equal or Exists)"),
            ))
        }
    };
    let effect = match t.effect.as_deref() {
        None | Some("") => None,
        Some(e) => Some(effect(object, &format!("{path}.effect"), e)?),
    };
    Ok(Toleration {
        key: t.key.clone().unwrap_or_default(),
        operator,
        value: t.value.clone().unwrap_or_default(),
        effect,
    })
}

pub(crate) fn taint(
    object: &ObjectRef,
    path: &str,
    key: &str,
    value: Option<&str>,
    e: &str,
) -> Result<Taint, ConvertError> {
    if key.is_empty() {
        return Err(field_err(object, format!("{path}.key"), "required"));
    }
    Ok(Taint::new(
        key,
        value.unwrap_or_default(),
        effect(object, &format!("{path}.effect"), e)?,
    ))
}

/// Volume requirements known from the input: PVC name (namespace, name) → PV node affinity.
#[derive(Debug, Default)]
pub(crate) struct Volumes {
    pub(crate) claims: BTreeMap<(String, String), String>,
    pub(crate) volumes: BTreeMap<String, Requirements>,
}

impl Volumes {
    fn requirements(&self, namespace: &str, claim: &str) -> Option<&Requirements> {
        let pv = self
            .claims
            .get(&(namespace.to_string(), claim.to_string()))?;
        self.volumes.get(pv)
    }
}

/// The labels and spec of a pod to convert.
pub(crate) struct PodInput<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) spec: &'a corev1::PodSpec,
    /// Field path of the pod spec (`spec`, `spec.template.spec`).
    pub(crate) path: &'a str,
}

pub(crate) fn convert_pod(
    object: &ObjectRef,
    input: &PodInput<'_>,
    volumes: &Volumes,
) -> Result<Pod, ConvertError> {
    let path = input.path;
    let spec = input.spec;
    let requests = pod_requests(object, path, spec)?;
    let node_selector: Requirements = spec
        .node_selector
        .iter()
        .flatten()
        .map(|(k, v)| Requirement::in_values(labels::normalize_key(k), [v.clone()]))
        .collect();
    let mut pod = Pod {
        namespace: input.namespace.to_string(),
        name: input.name.to_string(),
        labels: input.labels.clone(),
        requests,
        node_selector,
        node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
        priority: spec.priority.unwrap_or(0),
        ..Pod::default()
    };
    if let Some(aff) = &spec.affinity {
        if let Some(na) = &aff.node_affinity {
            let p = format!("{path}.affinity.nodeAffinity");
            if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
                for (i, term) in req.node_selector_terms.iter().enumerate() {
                    let tp = format!("{p}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}].matchExpressions");
                    pod.required_node_affinity.push(node_selector_requirements(
                        object,
                        &tp,
                        term.match_expressions.as_ref(),
                    )?);
                }
            }
            for (i, w) in na
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .enumerate()
            {
                let wp = format!("{p}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
                if !(1..=100).contains(&w.weight) {
                    return Err(field_err(
                        object,
                        format!("{wp}.weight"),
                        format!("must be between 1 and 100, got {}", w.weight),
                    ));
                }
                let term = node_selector_requirements(
                    object,
                    &format!("{wp}.preference.matchExpressions"),
                    w.preference.match_expressions.as_ref(),
                )?;
                pod.preferred_node_affinity.push(Weighted {
                    weight: w.weight,
                    term,
                });
            }
        }
        if let Some(pa) = &aff.pod_affinity {
            let (req, pref) = affinity_terms(
                object,
                &format!("{path}.affinity.podAffinity"),
                pa.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                pa.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
            )?;
            pod.pod_affinity = req;
            pod.preferred_pod_affinity = pref;
        }
        if let Some(pa) = &aff.pod_anti_affinity {
            let (req, pref) = affinity_terms(
                object,
                &format!("{path}.affinity.podAntiAffinity"),
                pa.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                pa.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
            )?;
            pod.pod_anti_affinity = req;
            pod.preferred_pod_anti_affinity = pref;
        }
    }
    for (i, t) in spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
    {
        pod.topology_spread.push(spread(
            object,
            &format!("{path}.topologySpreadConstraints[{i}]"),
            t,
        )?);
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        pod.tolerations
            .push(toleration(object, &format!("{path}.tolerations[{i}]"), t)?);
    }
    let host_network = spec.host_network == Some(true);
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    for c in spec.containers.iter().chain(sidecars) {
        for p in c.ports.iter().flatten() {
            // With hostNetwork the API server defaults hostPort to containerPort.
            let port = p
                .host_port
                .filter(|&h| h > 0)
                .or((host_network && p.container_port > 0).then_some(p.container_port));
            if let Some(port) = port {
                pod.host_ports.push(HostPort {
                    ip: p.host_ip.clone().unwrap_or_default(),
                    port,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                });
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(claim) = &v.persistent_volume_claim {
            if let Some(reqs) = volumes.requirements(input.namespace, &claim.claim_name) {
                pod.volume_requirements.add_all(reqs);
            }
        }
    }
    Ok(pod)
}

pub(crate) fn pv_requirements(
    object: &ObjectRef,
    pv: &corev1::PersistentVolume,
) -> Result<Option<Requirements>, ConvertError> {
    let Some(terms) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return Ok(None);
    };
    // Karpenter uses the first term (terms are OR-ed; one zone per volume in practice).
    let Some(first) = terms.node_selector_terms.first() else {
        return Ok(None);
    };
    let path = "spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions";
    let mut out = Requirements::new();
    for (j, e) in first.match_expressions.iter().flatten().enumerate() {
        let field = format!("{path}[{j}]");
        let op = Operator::parse(&e.operator)
            .map_err(|err| field_err(object, format!("{field}.operator"), err))?;
        let r = Requirement::new(
            labels::normalize_key(&e.key),
            op,
            e.values.iter().flatten().cloned(),
        )
        .map_err(|err| field_err(object, &field, err))?;
        out.add(r);
    }
    Ok(Some(out))
}

pub(crate) fn owned_by(meta: &metav1::ObjectMeta, kind: &str) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == kind && o.controller == Some(true))
        .map(|o| o.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> ObjectRef {
        ObjectRef {
            file: Some("t.yaml".into()),
            kind: "Pod".into(),
            namespace: Some("default".into()),
            name: "p".into(),
        }
    }

    fn spec(yaml: &str) -> corev1::PodSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn effective_requests_count_sidecars_init_peak_and_overhead() {
        let s = spec(
            r#"
containers:
  - {name: app, resources: {requests: {cpu: "1", memory: 1Gi}}}
  - {name: limited, resources: {limits: {cpu: 500m, memory: 256Mi}}}
initContainers:
  - {name: sidecar, restartPolicy: Always, resources: {requests: {cpu: 250m, memory: 64Mi}}}
  - {name: migrate, resources: {requests: {cpu: "3", memory: 128Mi}}}
overhead: {cpu: 100m, memory: 32Mi}
"#,
        );
        let r = pod_requests(&origin(), "spec", &s).unwrap();
        // max(1 + 0.5 + 0.25, 3 + 0.25) + 0.1 cpu; max(1Gi + 256Mi + 64Mi, 128Mi + 64Mi) + 32Mi memory.
        assert_eq!(r.cpu, 3350);
        assert_eq!(r.memory, (1 << 30) + (256 + 64 + 32) * (1 << 20));
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn limits_stand_in_for_missing_requests_only() {
        let s = spec(
            r#"containers: [{name: a, resources: {requests: {cpu: 200m}, limits: {cpu: "2", memory: 1Gi}}}]"#,
        );
        let r = pod_requests(&origin(), "spec", &s).unwrap();
        assert_eq!((r.cpu, r.memory), (200, 1 << 30));
    }

    #[test]
    fn bad_quantities_name_the_field() {
        let s = spec(r#"containers: [{name: a, resources: {requests: {cpu: abc}}}]"#);
        let e = pod_requests(&origin(), "spec.template.spec", &s)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.yaml: Pod default/p: spec.template.spec.containers[0].resources.requests.cpu: quantity \"abc\""), "{e}");
    }

    #[test]
    fn pod_constraints_convert_with_normalized_keys_and_defaults() {
        let s = spec(
            r#"
containers: [{name: a, ports: [{containerPort: 80, hostPort: 8080}]}]
nodeSelector: {"failure-domain.beta.kubernetes.io/zone": us-east-1a}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions: [{key: beta.kubernetes.io/arch, operator: In, values: [arm64]}]
        - matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 10
        preference: {matchExpressions: [{key: karpenter.sh/capacity-type, operator: In, values: [spot]}]}
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector: {matchLabels: {app: web}}
        matchLabelKeys: [version]
        namespaceSelector: {}
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway, minDomains: 3,
     labelSelector: {matchExpressions: [{key: app, operator: Exists}]}}
tolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}]
"#,
        );
        let input = PodInput {
            namespace: "default",
            name: "p",
            labels: BTreeMap::new(),
            spec: &s,
            path: "spec",
        };
        let p = convert_pod(&origin(), &input, &Volumes::default()).unwrap();
        assert!(p.node_selector.get(labels::ZONE).is_some());
        assert_eq!(p.required_node_affinity.len(), 2);
        assert!(p.required_node_affinity[0]
            .get(labels::ARCH)
            .unwrap()
            .has("arm64"));
        assert_eq!(p.preferred_node_affinity[0].weight, 10);
        assert_eq!(p.pod_anti_affinity[0].match_label_keys, ["version"]);
        assert_eq!(
            p.pod_anti_affinity[0].namespace_selector,
            Some(LabelSelector::default())
        );
        let t = &p.topology_spread[0];
        assert_eq!(
            (t.when_unsatisfiable, t.min_domains),
            (WhenUnsatisfiable::ScheduleAnyway, Some(3))
        );
        assert_eq!(
            (t.node_affinity_policy, t.node_taints_policy),
            (InclusionPolicy::Honor, InclusionPolicy::Ignore)
        );
        assert_eq!(
            p.host_ports,
            [HostPort {
                ip: String::new(),
                port: 8080,
                protocol: "TCP".into()
            }]
        );
        assert_eq!(p.tolerations[0].effect, Some(Effect::NoSchedule));
    }

    #[test]
    fn unknown_operators_and_effects_are_field_errors() {
        let s = spec(
            r#"
containers: [{name: a}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: k, operator: Like, values: [x]}]}]}}}
"#,
        );
        let input = PodInput {
            namespace: "default",
            name: "p",
            labels: BTreeMap::new(),
            spec: &s,
            path: "spec",
        };
        let e = convert_pod(&origin(), &input, &Volumes::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: unknown operator \"Like\""), "{e}");
        let s = spec("containers: [{name: a}]\ntolerations: [{key: k, effect: NoWay}]\n");
        let input = PodInput {
            namespace: "default",
            name: "p",
            labels: BTreeMap::new(),
            spec: &s,
            path: "spec",
        };
        let e = convert_pod(&origin(), &input, &Volumes::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.tolerations[0].effect: invalid taint effect \"NoWay\""),
            "{e}"
        );
    }
}
