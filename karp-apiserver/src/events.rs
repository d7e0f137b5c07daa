//! Events as one resource in two API groups, as kube-apiserver serves them: objects are stored in
//! the core/v1 shape, and `events.k8s.io/v1` reads and writes convert field by field (`regarding`
//! ↔ `involvedObject`, `note` ↔ `message`, `reportingController` ↔ `reportingComponent`,
//! `deprecatedSource` ↔ `source`, `deprecatedFirstTimestamp` / `deprecatedLastTimestamp` /
//! `deprecatedCount` ↔ `firstTimestamp` / `lastTimestamp` / `count`). So an Event a controller
//! records through events.k8s.io/v1 shows in `kubectl get events` and `kubectl describe`, and the
//! other way round.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::registry::ResourceDef;

/// (events.k8s.io/v1 field, core/v1 field) pairs that only differ in name.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Whether `def` is the events.k8s.io view of the core Events storage.
pub(crate) fn is_events_v1(def: &ResourceDef) -> bool {
    def.group == "events.k8s.io" && def.plural == "events"
}

fn rename(obj: &Value, from_v1: bool) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::with_capacity(m.len());
    for (k, v) in m {
        let renamed = RENAMED.iter().find_map(|(v1, core)| {
            if from_v1 {
                (k == v1).then_some(*core)
            } else {
                (k == core).then_some(*v1)
            }
        });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    Value::Object(out)
}

/// An events.k8s.io/v1 Event in the core/v1 shape the store keeps.
pub(crate) fn to_core(v1: &Value) -> Value {
    let mut core = rename(v1, true);
    if let Some(m) = core.as_object_mut() {
        m.insert("apiVersion".into(), Value::String("v1".into()));
    }
    core
}

/// A stored (core/v1) Event in the events.k8s.io/v1 shape.
pub(crate) fn to_v1(core: &Value) -> Value {
    let mut v1 = rename(core, false);
    if let Some(m) = v1.as_object_mut() {
        m.insert(
            "apiVersion".into(),
            Value::String("events.k8s.io/v1".into()),
        );
    }
    v1
}

/// A stored object as `def` serves it: borrowed when the stored shape already is `def`'s
/// (apiVersion and kind included), converted otherwise.
pub(crate) fn view<'a>(def: &ResourceDef, obj: &'a Value) -> Cow<'a, Value> {
    if is_events_v1(def) {
        let mut v = to_v1(obj);
        if let Some(m) = v.as_object_mut() {
            m.insert("kind".into(), Value::String(def.kind.clone()));
        }
        return Cow::Owned(v);
    }
    let same = obj.get("apiVersion").and_then(Value::as_str) == Some(def.api_version().as_str())
        && obj.get("kind").and_then(Value::as_str) == Some(def.kind.as_str());
    if same {
        Cow::Borrowed(obj)
    } else {
        let mut o = obj.clone();
        if let Some(m) = o.as_object_mut() {
            m.insert("apiVersion".into(), Value::String(def.api_version()));
            m.insert("kind".into(), Value::String(def.kind.clone()));
        }
        Cow::Owned(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_and_core_convert_both_ways_without_loss() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default", "uid": "u"},
            "note": "Pod should schedule on: nodeclaim/default-x",
            "reason": "Nominated", "type": "Normal", "action": "Nominate",
            "reportingController": "karpenter", "reportingInstance": "karp-0",
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:10.000000Z"},
            "deprecatedCount": 3,
        });
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], v1["note"]);
        assert_eq!(core["reportingComponent"], "karpenter");
        assert_eq!(core["count"], 3);
        assert_eq!(core["series"], v1["series"]);
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(to_v1(&core), v1);
    }
}
