//! `meta.k8s.io/v1 Table` output for `kubectl get`.

use serde_json::{json, Value};

use crate::registry::ResourceDef;
use crate::time::{human_age, now_secs, parse_rfc3339};

enum Cell {
    Path(&'static str),
    Computed(fn(&Value) -> Value),
}

struct Col {
    name: String,
    type_: String,
    priority: i64,
    description: String,
    cell: CellSrc,
}

enum CellSrc {
    Builtin(Cell),
    JsonPath(String, String),
}

fn age(obj: &Value) -> Value {
    match obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
    {
        Some(t) => json!(human_age(now_secs() - t)),
        None => json!("<unknown>"),
    }
}

fn name(obj: &Value) -> Value {
    obj.pointer("/metadata/name").cloned().unwrap_or(json!(""))
}

fn int_at(obj: &Value, p: &str) -> i64 {
    obj.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn pod_ready(p: &Value) -> Value {
    let total = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |cs| {
            cs.iter()
                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                .count()
        });
    json!(format!("{ready}/{total}"))
}

fn pod_status(p: &Value) -> Value {
    if p.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return json!("Terminating");
    }
    let s = p
        .pointer("/status/reason")
        .or_else(|| p.pointer("/status/phase"))
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    json!(s)
}

fn pod_restarts(p: &Value) -> Value {
    let n: i64 = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |cs| {
            cs.iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .fold(0i64, i64::saturating_add)
        });
    json!(n)
}

fn node_status(n: &Value) -> Value {
    let ready = n
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                .and_then(|c| c.get("status").and_then(Value::as_str))
        });
    let mut s = match ready {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    json!(s)
}

fn node_roles(n: &Value) -> Value {
    let roles: Vec<String> = n
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    json!(if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    })
}

fn ready_of_replicas(o: &Value) -> Value {
    json!(format!(
        "{}/{}",
        int_at(o, "/status/readyReplicas"),
        int_at(o, "/spec/replicas")
    ))
}

fn ns_status(o: &Value) -> Value {
    o.pointer("/status/phase")
        .cloned()
        .unwrap_or(json!("Active"))
}

fn builtin_columns(def: &ResourceDef) -> Vec<(&'static str, &'static str, i64, Cell)> {
    use Cell::{Computed as C, Path as P};
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "pods") => vec![
            ("Ready", "string", 0, C(pod_ready)),
            ("Status", "string", 0, C(pod_status)),
            ("Restarts", "integer", 0, C(pod_restarts)),
            ("Age", "string", 0, C(age)),
            ("IP", "string", 1, P("/status/podIP")),
            ("Node", "string", 1, P("/spec/nodeName")),
        ],
        ("", "nodes") => vec![
            ("Status", "string", 0, C(node_status)),
            ("Roles", "string", 0, C(node_roles)),
            ("Age", "string", 0, C(age)),
            ("Version", "string", 0, P("/status/nodeInfo/kubeletVersion")),
        ],
        ("", "namespaces") => vec![
            ("Status", "string", 0, C(ns_status)),
            ("Age", "string", 0, C(age)),
        ],
        ("apps", "deployments") => vec![
            ("Ready", "string", 0, C(ready_of_replicas)),
            (
                "Up-to-date",
                "integer",
                0,
                C(|o| json!(int_at(o, "/status/updatedReplicas"))),
            ),
            (
                "Available",
                "integer",
                0,
                C(|o| json!(int_at(o, "/status/availableReplicas"))),
            ),
            ("Age", "string", 0, C(age)),
        ],
        ("apps", "replicasets") => vec![
            (
                "Desired",
                "integer",
                0,
                C(|o| json!(int_at(o, "/spec/replicas"))),
            ),
            (
                "Current",
                "integer",
                0,
                C(|o| json!(int_at(o, "/status/replicas"))),
            ),
            (
                "Ready",
                "integer",
                0,
                C(|o| json!(int_at(o, "/status/readyReplicas"))),
            ),
            ("Age", "string", 0, C(age)),
        ],
        ("apps", "statefulsets") => vec![
            ("Ready", "string", 0, C(ready_of_replicas)),
            ("Age", "string", 0, C(age)),
        ],
        ("policy", "poddisruptionbudgets") => vec![
            ("Min Available", "string", 0, P("/spec/minAvailable")),
            ("Max Unavailable", "string", 0, P("/spec/maxUnavailable")),
            (
                "Allowed Disruptions",
                "integer",
                0,
                C(|o| json!(int_at(o, "/status/disruptionsAllowed"))),
            ),
            ("Age", "string", 0, C(age)),
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![("Created At", "date", 0, P("/metadata/creationTimestamp"))]
        }
        _ => vec![("Age", "string", 0, C(age))],
    }
}

/// The age of the first of `paths` that holds an RFC 3339 time (`<unknown>` when none does).
fn age_of_first(e: &Value, paths: &[&str]) -> Value {
    match paths
        .iter()
        .find_map(|p| e.pointer(p).and_then(Value::as_str).and_then(parse_rfc3339))
    {
        Some(t) => json!(human_age(now_secs() - t)),
        None => json!("<unknown>"),
    }
}

/// When an Event (core shape) was last seen: the series' last observation, else
/// `lastTimestamp`, else `eventTime`, else creation.
fn event_last_seen(e: &Value) -> Value {
    age_of_first(
        e,
        &[
            "/series/lastObservedTime",
            "/lastTimestamp",
            "/eventTime",
            "/metadata/creationTimestamp",
        ],
    )
}

/// When an Event was first seen: `firstTimestamp`, else `eventTime`, else creation.
fn event_first_seen(e: &Value) -> Value {
    age_of_first(
        e,
        &[
            "/firstTimestamp",
            "/eventTime",
            "/metadata/creationTimestamp",
        ],
    )
}

/// `kind/name` of the regarded object, kind in lower case (as kubectl prints it).
fn event_object(e: &Value) -> Value {
    let o = e.get("involvedObject").or_else(|| e.get("regarding"));
    let kind = o
        .and_then(|o| o.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase();
    let name = o
        .and_then(|o| o.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    json!(format!("{kind}/{name}"))
}

fn event_source(e: &Value) -> Value {
    let component = e
        .pointer("/source/component")
        .or_else(|| e.get("reportingComponent"))
        .or_else(|| e.get("reportingController"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let host = e
        .pointer("/source/host")
        .or_else(|| e.get("reportingInstance"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    json!(if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    })
}

fn event_count(e: &Value) -> Value {
    let n = e
        .pointer("/series/count")
        .or_else(|| e.get("count"))
        .or_else(|| e.get("deprecatedCount"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    json!(n)
}

/// kube-apiserver's Event columns (both API groups): no leading Name column.
fn event_columns() -> Vec<Col> {
    let col = |name: &str, type_: &str, priority: i64, cell: Cell| Col {
        name: name.into(),
        type_: type_.into(),
        priority,
        description: String::new(),
        cell: CellSrc::Builtin(cell),
    };
    vec![
        col("Last Seen", "string", 0, Cell::Computed(event_last_seen)),
        col("Type", "string", 0, Cell::Path("/type")),
        col("Reason", "string", 0, Cell::Path("/reason")),
        col("Object", "string", 0, Cell::Computed(event_object)),
        col(
            "Subobject",
            "string",
            1,
            Cell::Path("/involvedObject/fieldPath"),
        ),
        col("Source", "string", 1, Cell::Computed(event_source)),
        col(
            "Message",
            "string",
            0,
            Cell::Computed(|e| {
                e.get("message")
                    .or_else(|| e.get("note"))
                    .cloned()
                    .unwrap_or(json!(""))
            }),
        ),
        col("First Seen", "string", 1, Cell::Computed(event_first_seen)),
        col("Count", "integer", 1, Cell::Computed(event_count)),
        col("Name", "string", 1, Cell::Computed(name)),
    ]
}

fn columns(def: &ResourceDef) -> Vec<Col> {
    if def.plural == "events" && (def.group.is_empty() || def.group == "events.k8s.io") {
        return event_columns();
    }
    let mut cols = vec![Col {
        name: "Name".into(),
        type_: "string".into(),
        priority: 0,
        description: "Name must be unique within a namespace.".into(),
        cell: CellSrc::Builtin(Cell::Computed(name)),
    }];
    if def.crd.is_some() {
        for c in &def.printer_columns {
            cols.push(Col {
                name: c.name.clone(),
                type_: c.type_.clone(),
                priority: c.priority,
                description: c.description.clone(),
                cell: CellSrc::JsonPath(c.json_path.clone(), c.type_.clone()),
            });
        }
        if def.printer_columns.is_empty() {
            cols.push(Col {
                name: "Age".into(),
                type_: "date".into(),
                priority: 0,
                description: String::new(),
                cell: CellSrc::JsonPath(".metadata.creationTimestamp".into(), "date".into()),
            });
        }
    } else {
        for (n, t, p, cell) in builtin_columns(def) {
            cols.push(Col {
                name: n.into(),
                type_: t.into(),
                priority: p,
                description: String::new(),
                cell: CellSrc::Builtin(cell),
            });
        }
    }
    cols
}

fn format_cell(v: Option<&Value>, type_: &str) -> Value {
    let Some(v) = v else { return Value::Null };
    match type_ {
        "date" => match v.as_str().and_then(parse_rfc3339) {
            Some(t) => json!(human_age(now_secs() - t)),
            None => Value::Null,
        },
        "integer" | "number" | "boolean" => v.clone(),
        _ => match v {
            Value::String(_) => v.clone(),
            other => json!(other.to_string()),
        },
    }
}

/// Evaluates a simple JSONPath: `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.k=="v")].b`, `{.a}`.
pub(crate) fn jsonpath<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let p = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut cur: Vec<&Value> = vec![obj];
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let key = read_key(&chars, &mut i);
                if key.is_empty() {
                    continue;
                }
                cur = cur.into_iter().filter_map(|v| v.get(&key)).collect();
            }
            '[' => {
                let start = i + 1;
                let mut depth = 0;
                while i < chars.len() {
                    match chars[i] {
                        '[' | '(' => depth += 1,
                        ']' | ')' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 && chars[i] == ']' {
                        break;
                    }
                    i += 1;
                }
                let inner: String = chars[start..i.min(chars.len())].iter().collect();
                i += 1;
                cur = apply_bracket(cur, inner.trim());
            }
            _ => {
                // A path without a leading dot: treat as a key.
                let key = read_key(&chars, &mut i);
                cur = cur.into_iter().filter_map(|v| v.get(&key)).collect();
            }
        }
    }
    cur
}

/// A field name up to the next unescaped `.` or `[`, with `\\.` (and any `\\x`) taken
/// literally, as kubectl's JSONPath reads `.metadata.labels.node\\.kubernetes\\.io/zone`.
fn read_key(chars: &[char], i: &mut usize) -> String {
    let mut key = String::new();
    while *i < chars.len() {
        match chars[*i] {
            '\\' if *i + 1 < chars.len() => {
                key.push(chars[*i + 1]);
                *i += 2;
            }
            '.' | '[' => break,
            c => {
                key.push(c);
                *i += 1;
            }
        }
    }
    key
}

fn apply_bracket<'a>(cur: Vec<&'a Value>, inner: &str) -> Vec<&'a Value> {
    if inner == "*" {
        return cur
            .into_iter()
            .flat_map(|v| match v {
                Value::Array(a) => a.iter().collect::<Vec<_>>(),
                Value::Object(m) => m.values().collect(),
                _ => Vec::new(),
            })
            .collect();
    }
    if let Ok(n) = inner.parse::<i64>() {
        return cur
            .into_iter()
            .filter_map(|v| {
                let a = v.as_array()?;
                let idx = if n < 0 {
                    (a.len() as i64).checked_add(n)?
                } else {
                    n
                };
                a.get(usize::try_from(idx).ok()?)
            })
            .collect();
    }
    if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        let filter = filter.trim();
        let (lhs, op, rhs) = if let Some((l, r)) = filter.split_once("==") {
            (l, true, Some(r))
        } else if let Some((l, r)) = filter.split_once("!=") {
            (l, false, Some(r))
        } else {
            (filter, true, None)
        };
        let field = lhs
            .trim()
            .trim_start_matches('@')
            .trim_start_matches('.')
            .to_string();
        let want = rhs.map(|r| r.trim().trim_matches('"').trim_matches('\'').to_string());
        return cur
            .into_iter()
            .flat_map(|v| {
                v.as_array()
                    .map(|a| a.iter().collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .filter(|e| {
                let got = jsonpath(e, &format!(".{field}")).into_iter().next();
                match &want {
                    None => got.is_some(),
                    Some(w) => {
                        let s = got.map(|g| match g {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        });
                        (s.as_deref() == Some(w.as_str())) == op
                    }
                }
            })
            .collect();
    }
    let key = inner.trim_matches('\'').trim_matches('"');
    cur.into_iter().filter_map(|v| v.get(key)).collect()
}

/// How rows carry their object (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn row(def: &ResourceDef, cols: &[Col], obj: &Value, include: Include) -> Value {
    let cells: Vec<Value> = cols
        .iter()
        .map(|c| match &c.cell {
            CellSrc::Builtin(Cell::Computed(f)) => f(obj),
            CellSrc::Builtin(Cell::Path(p)) => match obj.pointer(p) {
                Some(Value::String(s)) => json!(s),
                Some(Value::Null) | None => json!("<none>"),
                Some(v) => v.clone(),
            },
            CellSrc::JsonPath(p, t) => format_cell(jsonpath(obj, p).into_iter().next(), t),
        })
        .collect();
    let mut r = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Object => r["object"] = obj.clone(),
        Include::Metadata => {
            r["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))});
        }
    }
    let _ = def;
    r
}

/// A Table of `objs`; `headers` false leaves the column definitions out (watch events after the first).
pub(crate) fn table(
    def: &ResourceDef,
    objs: &[impl std::borrow::Borrow<Value>],
    rv: Option<u64>,
    include: Include,
    headers: bool,
) -> Value {
    let cols = columns(def);
    let defs: Vec<Value> = if headers {
        cols.iter()
            .map(|c| {
                let format = if c.name == "Name" { "name" } else { "" };
                json!({"name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() },
                       "format": format, "description": c.description, "priority": c.priority})
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| row(def, &cols, o.borrow(), include))
        .collect();
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": defs, "rows": rows});
    if let Some(rv) = rv {
        t["metadata"]["resourceVersion"] = json!(rv.to_string());
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_reads_fields_indexes_and_filters() {
        let o = json!({"status": {"conditions": [{"type": "Init", "status": "True"}, {"type": "Ready", "status": "False"}]},
                       "spec": {"l": [1, 2, 3]}});
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("False")]
        );
        assert_eq!(jsonpath(&o, "{.spec.l[1]}"), vec![&json!(2)]);
        assert_eq!(jsonpath(&o, ".spec.l[-1]"), vec![&json!(3)]);
        assert_eq!(jsonpath(&o, ".spec.l[*]").len(), 3);
        assert!(jsonpath(&o, ".nope.x").is_empty());
        assert!(jsonpath(&o, ".status.conditions[?(@.type=='Gone')]").is_empty());
        let _ = jsonpath(&o, "[[[((");
        // Escaped dots are part of the key (CRD printer columns on labels).
        let n = json!({"metadata": {"labels": {"node.kubernetes.io/instance-type": "m5.large"}}});
        assert_eq!(
            jsonpath(&n, ".metadata.labels.node\\.kubernetes\\.io/instance-type"),
            vec![&json!("m5.large")]
        );
        assert!(jsonpath(&n, ".metadata.labels.node.kubernetes.io/instance-type").is_empty());
        let _ = jsonpath(&n, ".metadata\\");
        assert!(jsonpath(&o, &format!(".spec.l[{}]", i64::MIN)).is_empty());
    }
}
