//! A pod's quality-of-service class, which the API server sets in `status.qosClass` when the pod
//! is created (as Kubernetes' `GetPodQOS`): only CPU and memory count, summed over the init and
//! regular containers; a request left out defaults to its limit.
//! - `BestEffort`: no container requests or limits CPU or memory;
//! - `Guaranteed`: every container limits both, and the summed requests equal the summed limits;
//! - `Burstable`: anything else.

use serde_json::Value;

/// The class of `pod` (a Pod's JSON).
pub(crate) fn qos_class(pod: &Value) -> &'static str {
    const NAMES: [&str; 2] = ["cpu", "memory"];
    let (mut requests, mut limits) = ([None::<f64>; 2], [None::<f64>; 2]);
    let mut guaranteed = true;
    let containers = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten();
    for c in containers {
        let resources = &c["resources"];
        let mut limited = 0;
        for (i, name) in NAMES.iter().enumerate() {
            let limit = resources["limits"][name].as_str().and_then(quantity);
            let request = resources["requests"][name]
                .as_str()
                .and_then(quantity)
                .or(limit);
            if let Some(r) = request.filter(|r| *r != 0.0) {
                *requests[i].get_or_insert(0.0) += r;
            }
            if let Some(l) = limit.filter(|l| *l != 0.0) {
                *limits[i].get_or_insert(0.0) += l;
                limited += 1;
            }
        }
        guaranteed &= limited == NAMES.len();
    }
    if requests.iter().chain(&limits).all(Option::is_none) {
        return "BestEffort";
    }
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    let equal = requests.iter().zip(&limits).all(|(r, l)| match (r, l) {
        (Some(r), Some(l)) => same(*r, *l),
        (None, None) => true,
        _ => false,
    });
    if guaranteed && equal {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A Kubernetes quantity (`500m`, `1.5Gi`, `2e3`) as a number; `None` when it does not parse.
fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value) -> Value {
        json!({"spec": {"containers": containers}})
    }

    #[test]
    fn classes_follow_kubernetes_rules() {
        assert_eq!(qos_class(&pod(json!([{"name": "a"}]))), "BestEffort");
        // Other resources do not count.
        let gpu = json!([{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]);
        assert_eq!(qos_class(&pod(gpu)), "BestEffort");
        let req = json!([{"resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]);
        assert_eq!(qos_class(&pod(req)), "Burstable");
        // Requests default to limits; equal quantities written differently are equal.
        let lim = json!([{"resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                         "requests": {"cpu": "1000m"}}}]);
        assert_eq!(qos_class(&pod(lim)), "Guaranteed");
        let lower = json!([{"resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                           "requests": {"cpu": "500m"}}}]);
        assert_eq!(qos_class(&pod(lower)), "Burstable");
        // Every container must limit both.
        let mixed = json!([
            {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "sidecar"}
        ]);
        assert_eq!(qos_class(&pod(mixed)), "Burstable");
        let init = json!({"spec": {
            "initContainers": [{"resources": {"requests": {"memory": "64Mi"}}}],
            "containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&init), "Burstable");
    }

    #[test]
    fn quantities_parse_with_their_suffixes() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("1Gi"), Some(1024f64.powi(3)));
        assert_eq!(quantity("2e3"), Some(2000.0));
        assert_eq!(quantity("1.5k"), Some(1500.0));
        assert_eq!(quantity("abc"), None);
        assert_eq!(quantity("1x"), None);
    }
}
