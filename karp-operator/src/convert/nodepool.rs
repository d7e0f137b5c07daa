//! NodePools → karp-core pools (everything but their instance types, which come from the
//! provider's [`super::InstanceTypeSource`]), with Karpenter's validation of the fields.

use karp_core::cluster::{Limits, NodePool};
use karp_core::labels;
use karp_core::requirements::{NodeSelectorRequirement, Operator, Requirement};
use karp_core::resources::Resources;

use super::pod::{parse_quantity, taint};
use super::{field_err, ConvertError, ObjectRef};
use crate::api::{duration, nodepool};

fn check_duration(
    object: &ObjectRef,
    field: &str,
    v: Option<&nodepool::FlexString>,
) -> Result<(), ConvertError> {
    match v.map(|d| duration::parse(&d.0)) {
        Some(Err(e)) => Err(field_err(object, field, e)),
        _ => Ok(()),
    }
}

/// Convert a NodePool's spec (everything but its instance types) and check the fields planning does not use.
///
/// # Errors
/// [`ConvertError::ConvertField`] naming the offending field.
pub fn convert_nodepool(
    object: &ObjectRef,
    np: &nodepool::NodePool,
) -> Result<NodePool, ConvertError> {
    let spec = &np.spec;
    let t = &spec.template.spec;
    let mut pool = NodePool::new(object.name.clone(), Vec::new());
    for (i, r) in t.requirements.iter().enumerate() {
        let field = format!("spec.template.spec.requirements[{i}]");
        let operator = Operator::parse(&r.operator)
            .map_err(|e| field_err(object, format!("{field}.operator"), e))?;
        let key = labels::normalize_key(&r.key).to_string();
        if labels::is_restricted(&key) {
            return Err(field_err(
                object,
                format!("{field}.key"),
                format!("label {key:?} is restricted"),
            ));
        }
        let min_values = match r.min_values {
            None => None,
            Some(n) => Some(usize::try_from(n).map_err(|_| {
                field_err(
                    object,
                    format!("{field}.minValues"),
                    format!("must be between 1 and 50, got {n}"),
                )
            })?),
        };
        let nsr = NodeSelectorRequirement {
            key,
            operator,
            values: r.values.iter().map(|v| v.0.clone()).collect(),
            min_values,
        };
        pool.requirements
            .add(Requirement::from_node_selector(&nsr).map_err(|e| field_err(object, &field, e))?);
    }
    for k in spec.template.metadata.labels.keys() {
        if labels::is_restricted(k) {
            return Err(field_err(
                object,
                format!("spec.template.metadata.labels.{k}"),
                format!("label {k:?} is restricted"),
            ));
        }
    }
    pool.labels = spec.template.metadata.labels.clone();
    for (i, tn) in t.taints.iter().enumerate() {
        pool.taints.push(taint(
            object,
            &format!("spec.template.spec.taints[{i}]"),
            &tn.key,
            tn.value.as_deref(),
            &tn.effect,
        )?);
    }
    for (i, tn) in t.startup_taints.iter().enumerate() {
        pool.startup_taints.push(taint(
            object,
            &format!("spec.template.spec.startupTaints[{i}]"),
            &tn.key,
            tn.value.as_deref(),
            &tn.effect,
        )?);
    }
    let mut limits = Limits::default();
    for (name, q) in &spec.limits {
        let parsed = parse_quantity(object, &format!("spec.limits.{name}"), &q.0)?;
        if name == "nodes" {
            limits.nodes = Some(parsed.value_ceil());
        } else {
            let mut r = Resources::new();
            r.set(name, &parsed);
            limits.resources.insert(name.clone(), r.get(name));
        }
    }
    pool.limits = limits;
    if let Some(w) = spec.weight {
        if !(1..=100).contains(&w) {
            return Err(field_err(
                object,
                "spec.weight",
                format!("must be between 1 and 100, got {w}"),
            ));
        }
        pool.weight = w;
    }
    if let Some(r) = spec.replicas {
        let Ok(replicas) = u64::try_from(r) else {
            return Err(field_err(
                object,
                "spec.replicas",
                format!("must be 0 or more, got {r}"),
            ));
        };
        if spec.weight.is_some() {
            return Err(field_err(
                object,
                "spec.weight",
                "'weight' is not supported on static NodePools (spec.replicas is set)",
            ));
        }
        if let Some(other) = spec.limits.keys().find(|k| *k != "nodes") {
            return Err(field_err(
                object,
                format!("spec.limits.{other}"),
                "only 'limits.nodes' is supported on static NodePools (spec.replicas is set)",
            ));
        }
        pool.replicas = Some(replicas);
    }
    check_duration(
        object,
        "spec.template.spec.expireAfter",
        t.expire_after.as_ref(),
    )?;
    check_duration(
        object,
        "spec.template.spec.terminationGracePeriod",
        t.termination_grace_period.as_ref(),
    )?;
    if let Some(d) = &spec.disruption {
        check_duration(
            object,
            "spec.disruption.expireAfter",
            d.expire_after.as_ref(),
        )?;
        check_duration(
            object,
            "spec.disruption.consolidateAfter",
            d.consolidate_after.as_ref(),
        )?;
        match d.consolidation_policy.as_deref() {
            None | Some("WhenEmpty" | "WhenEmptyOrUnderutilized" | "Balanced") => {}
            Some(other) => {
                return Err(field_err(
                    object,
                    "spec.disruption.consolidationPolicy",
                    format!(
                        "unknown value {other:?} (expected WhenEmpty, WhenEmptyOrUnderutilized or Balanced)"
                    ),
                ))
            }
        }
        if let Some(k) = d.consolidation_threshold {
            let field = "spec.disruption.consolidationThreshold";
            let range = karp_core::disruption::model::CONSOLIDATION_THRESHOLD_RANGE;
            if !u32::try_from(k).is_ok_and(|k| range.contains(&k)) {
                return Err(field_err(
                    object,
                    field,
                    format!(
                        "must be between {} and {}, got {k}",
                        range.start(),
                        range.end()
                    ),
                ));
            }
            if d.consolidation_policy.as_deref() != Some("Balanced") {
                return Err(field_err(
                    object,
                    field,
                    "consolidationThreshold is only valid when consolidationPolicy is Balanced",
                ));
            }
        }
        for (i, b) in d.budgets.iter().enumerate() {
            if let Some(n) = &b.nodes {
                let s = n.0.strip_suffix('%').unwrap_or(&n.0);
                let ok = !s.is_empty()
                    && s.bytes().all(|c| c.is_ascii_digit())
                    && (!n.0.ends_with('%') || s.parse::<u32>().is_ok_and(|p| p <= 100));
                if !ok {
                    return Err(field_err(
                        object,
                        format!("spec.disruption.budgets[{i}].nodes"),
                        format!(
                            "invalid value {:?} (expected a count or a percentage such as 10%)",
                            n.0
                        ),
                    ));
                }
            }
            check_duration(
                object,
                &format!("spec.disruption.budgets[{i}].duration"),
                b.duration.as_ref(),
            )?;
            for (j, r) in b.reasons.iter().enumerate() {
                if !matches!(r.as_str(), "Underutilized" | "Empty" | "Drifted") {
                    return Err(field_err(
                        object,
                        format!("spec.disruption.budgets[{i}].reasons[{j}]"),
                        format!("unknown reason {r:?} (expected Underutilized, Empty or Drifted)"),
                    ));
                }
            }
        }
    }
    let Some(r) = &t.node_class_ref else {
        return Err(field_err(
            object,
            "spec.template.spec.nodeClassRef",
            "required",
        ));
    };
    if r.name.is_empty() {
        return Err(field_err(
            object,
            "spec.template.spec.nodeClassRef.name",
            "required",
        ));
    }
    if let Some(g) = r.group.as_deref().filter(|g| *g != "karpenter.k8s.aws") {
        return Err(field_err(
            object,
            "spec.template.spec.nodeClassRef.group",
            format!("unsupported group {g:?} (expected karpenter.k8s.aws)"),
        ));
    }
    if let Some(k) = r.kind.as_deref().filter(|k| *k != "EC2NodeClass") {
        return Err(field_err(
            object,
            "spec.template.spec.nodeClassRef.kind",
            format!("unsupported kind {k:?} (expected EC2NodeClass)"),
        ));
    }
    pool.node_class = Some(r.name.clone());
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::manifests::parse_text;
    use crate::convert::manifests::Object;
    use karp_core::taints::{Effect, Taint};

    fn pool(spec_yaml: &str) -> Result<NodePool, ConvertError> {
        let text = format!("apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {{name: np}}\nspec:\n{spec_yaml}");
        let m = parse_text("np.yaml", &text).unwrap();
        let Object::NodePool(np) = &m.objects[0].object else {
            panic!("not a NodePool")
        };
        convert_nodepool(&m.objects[0].origin, np)
    }

    const REF: &str =
        "      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: c}\n";

    #[test]
    fn an_overflowing_duration_is_a_field_error() {
        let e = pool(&format!(
            "  template:\n    spec:\n{REF}      terminationGracePeriod: 18446744073709551615s1s\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.template.spec.terminationGracePeriod") && e.contains("maximum"),
            "{e}"
        );
    }

    #[test]
    fn nodepool_fields_convert() {
        let p = pool(&format!(
            r#"  weight: 10
  limits: {{cpu: "100", memory: 1000Gi, nodes: 5}}
  template:
    metadata: {{labels: {{team: a}}}}
    spec:
      requirements:
        - {{key: karpenter.k8s.aws/instance-cpu, operator: In, values: [4, "8"], minValues: 2}}
        - {{key: beta.kubernetes.io/arch, operator: In, values: [arm64]}}
      taints: [{{key: dedicated, effect: NoSchedule}}]
      startupTaints: [{{key: init, value: "true", effect: NoExecute}}]
{REF}"#
        ))
        .unwrap();
        assert_eq!(p.weight, 10);
        assert_eq!(p.limits.resources["cpu"], 100_000);
        assert_eq!(p.limits.resources["memory"], 1000 << 30);
        assert_eq!(p.limits.nodes, Some(5));
        let cpu = p
            .requirements
            .get("karpenter.k8s.aws/instance-cpu")
            .unwrap();
        assert_eq!((cpu.values(), cpu.min_values()), (vec!["4", "8"], Some(2)));
        assert!(
            p.requirements.get(labels::ARCH).is_some(),
            "beta keys are normalized"
        );
        assert_eq!(p.labels["team"], "a");
        assert_eq!(p.taints, [Taint::new("dedicated", "", Effect::NoSchedule)]);
        assert_eq!(p.startup_taints[0].effect, Effect::NoExecute);
        assert_eq!(p.node_class.as_deref(), Some("c"));
    }

    #[test]
    fn nodepool_field_errors_name_the_field() {
        let cases = [
            ("  weight: 0\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.weight"),
            ("  replicas: -1\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.replicas: must be 0 or more"),
            ("  replicas: 2\n  weight: 5\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.weight: 'weight' is not supported on static NodePools"),
            ("  replicas: 2\n  limits: {nodes: 3, cpu: 8}\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.limits.cpu: only 'limits.nodes' is supported on static NodePools"),
            ("  limits: {cpu: lots}\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.limits.cpu"),
            ("  template: {spec: {}}\n", "spec.template.spec.nodeClassRef: required"),
            ("  template: {spec: {nodeClassRef: {name: c, kind: Other}}}\n", "spec.template.spec.nodeClassRef.kind"),
            ("  template: {spec: {expireAfter: 30d, nodeClassRef: {name: c}}}\n", "spec.template.spec.expireAfter"),
            ("  disruption: {consolidationPolicy: Sometimes}\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.disruption.consolidationPolicy"),
            ("  disruption: {consolidationPolicy: Balanced, consolidationThreshold: 0}\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.disruption.consolidationThreshold: must be between 1 and 3, got 0"),
            ("  disruption: {consolidationPolicy: Balanced, consolidationThreshold: 4}\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.disruption.consolidationThreshold: must be between 1 and 3, got 4"),
            ("  disruption: {consolidationThreshold: 2}\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.disruption.consolidationThreshold: consolidationThreshold is only valid when consolidationPolicy is Balanced"),
            ("  disruption: {budgets: [{nodes: 150%}]}\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.disruption.budgets[0].nodes"),
            (
                "  template: {spec: {requirements: [{key: a, operator: In, values: [x], minValues: 2}], nodeClassRef: {name: c}}}\n",
                "spec.template.spec.requirements[0]: minValues 2",
            ),
            (
                "  template: {spec: {requirements: [{key: kubernetes.io/hostname, operator: Exists}], nodeClassRef: {name: c}}}\n",
                "spec.template.spec.requirements[0].key",
            ),
        ];
        for (spec, field) in cases {
            let e = pool(spec).unwrap_err().to_string();
            assert!(e.starts_with("np.yaml: NodePool np: "), "{e}");
            assert!(e.contains(field), "{field:?} not in {e}");
        }
    }
}
