//! PodDisruptionBudget arithmetic, as the disruption controller and the eviction subresource do it.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::selector::LabelSelector;

/// The numbers a PDB's status carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Budget {
    pub expected: i64,
    pub desired: i64,
    pub current: i64,
    pub allowed: i64,
}

/// An IntOrString: `Ok(n)` for an integer, `Err(pct)` for a percentage.
fn int_or_percent(v: &Value) -> Option<Result<i64, i64>> {
    match v {
        Value::Number(n) => n.as_i64().map(Ok),
        Value::String(s) => {
            let s = s.trim();
            if let Some(p) = s.strip_suffix('%') {
                p.trim().parse().ok().map(Err)
            } else {
                s.parse().ok().map(Ok)
            }
        }
        _ => None,
    }
}

fn scaled_up(pct: i64, total: i64) -> i64 {
    // ceil(pct * total / 100) for non-negative values.
    pct.max(0).saturating_mul(total.max(0)).saturating_add(99) / 100
}

/// True when the pod is Running, has condition Ready=True and is not being deleted.
pub(crate) fn pod_healthy(pod: &Value) -> bool {
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return false;
    }
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return false;
    }
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// The PDB's selector; `None` (selects nothing) when it is null.
pub(crate) fn pdb_selector(pdb: &Value) -> Option<LabelSelector> {
    pdb.pointer("/spec/selector")
        .and_then(LabelSelector::from_object)
}

/// Computes the budget of `pdb` over the pods of its namespace.
///
/// `replicas_of` maps a controller uid to its `spec.replicas` (for percentages and maxUnavailable,
/// the expected count is the sum of the controllers' scales; pods without a known controller count
/// one each).
pub(crate) fn budget(pdb: &Value, pods: &[&Value], replicas_of: &BTreeMap<String, i64>) -> Budget {
    let Some(sel) = pdb_selector(pdb) else {
        return Budget::default();
    };
    let matching: Vec<&Value> = pods.iter().copied().filter(|p| sel.matches(p)).collect();
    let current = matching.iter().filter(|p| pod_healthy(p)).count() as i64;
    let scale = || {
        let mut seen = BTreeMap::new();
        let mut loose = 0;
        for p in &matching {
            let ctrl = p
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| {
                    refs.iter()
                        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                        .and_then(|r| r.get("uid").and_then(Value::as_str))
                });
            match ctrl.and_then(|uid| replicas_of.get(uid).map(|n| (uid, *n))) {
                Some((uid, n)) => {
                    seen.insert(uid.to_string(), n);
                }
                None => loose += 1,
            }
        }
        seen.values()
            .fold(loose, |acc: i64, n| acc.saturating_add(*n))
    };
    let spec = pdb.get("spec");
    let (expected, desired) = if let Some(mu) = spec
        .and_then(|s| s.get("maxUnavailable"))
        .and_then(int_or_percent)
    {
        let expected = scale();
        let max_unavailable = match mu {
            Ok(n) => n,
            Err(pct) => scaled_up(pct, expected),
        };
        (expected, expected.saturating_sub(max_unavailable).max(0))
    } else if let Some(ma) = spec
        .and_then(|s| s.get("minAvailable"))
        .and_then(int_or_percent)
    {
        match ma {
            Ok(n) => (matching.len() as i64, n),
            Err(pct) => {
                let expected = scale();
                (expected, scaled_up(pct, expected))
            }
        }
    } else {
        (matching.len() as i64, 0)
    };
    Budget {
        expected,
        desired,
        current,
        allowed: current.saturating_sub(desired).max(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ready: bool, owner: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"name": "p", "labels": {"app": "web"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        if let Some(uid) = owner {
            p["metadata"]["ownerReferences"] =
                json!([{"uid": uid, "controller": true, "kind": "ReplicaSet", "name": "rs"}]);
        }
        p
    }

    fn pdb(field: &str, v: Value) -> Value {
        json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, field: v}})
    }

    #[test]
    fn min_available_integer_counts_matching_pods() {
        let pods = [pod(true, None), pod(true, None), pod(false, None)];
        let refs: Vec<&Value> = pods.iter().collect();
        let b = budget(&pdb("minAvailable", json!(2)), &refs, &BTreeMap::new());
        assert_eq!(
            b,
            Budget {
                expected: 3,
                desired: 2,
                current: 2,
                allowed: 0
            }
        );
    }

    #[test]
    fn percentages_round_up_against_the_controller_scale() {
        let pods = [
            pod(true, Some("u")),
            pod(true, Some("u")),
            pod(true, Some("u")),
        ];
        let refs: Vec<&Value> = pods.iter().collect();
        let scales = BTreeMap::from([("u".to_string(), 4)]);
        // minAvailable 50% of 4 = 2 → 1 allowed.
        assert_eq!(
            budget(&pdb("minAvailable", json!("50%")), &refs, &scales).allowed,
            1
        );
        // maxUnavailable 30% of 4 = ceil(1.2) = 2 → desired 2 → 1 allowed.
        let b = budget(&pdb("maxUnavailable", json!("30%")), &refs, &scales);
        assert_eq!((b.expected, b.desired, b.allowed), (4, 2, 1));
        // maxUnavailable 0 → nothing allowed... but desired 4 > current 3.
        assert_eq!(
            budget(&pdb("maxUnavailable", json!(0)), &refs, &scales).allowed,
            0
        );
    }

    #[test]
    fn absurd_numbers_saturate_instead_of_overflowing() {
        let pods = [pod(true, Some("u"))];
        let refs: Vec<&Value> = pods.iter().collect();
        let scales = BTreeMap::from([("u".to_string(), i64::MAX)]);
        for (f, v) in [
            ("minAvailable", json!("9223372036854775807%")),
            ("maxUnavailable", json!(i64::MIN)),
            ("minAvailable", json!(i64::MIN)),
            ("maxUnavailable", json!("-5%")),
        ] {
            let _ = budget(&pdb(f, v), &refs, &scales);
        }
    }

    #[test]
    fn a_null_selector_selects_nothing() {
        let pods = [pod(true, None)];
        let refs: Vec<&Value> = pods.iter().collect();
        let b = budget(
            &json!({"spec": {"minAvailable": 1}}),
            &refs,
            &BTreeMap::new(),
        );
        assert_eq!(b, Budget::default());
    }
}
