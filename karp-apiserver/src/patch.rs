//! Patch algorithms: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a strategic merge
//! patch that follows Kubernetes' merge keys for the common list fields.

use serde_json::{Map, Value};

use crate::error::{ApiError, Reason};

/// Applies an RFC 7386 merge patch to `target`.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn patch_err(msg: impl Into<String>) -> ApiError {
    ApiError::new(
        Reason::Invalid,
        format!(
            "the server rejected our request due to an error in our request: {}",
            msg.into()
        ),
    )
}

fn parse_pointer(p: &str) -> Result<Vec<String>, ApiError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {p:?}")))?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get_at<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for seg in path {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get_at_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for seg in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(seg)?,
            Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn add_at(doc: &mut Value, path: &[String], value: Value) -> Result<(), ApiError> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    let parent = get_at_mut(doc, parent)
        .ok_or_else(|| patch_err("add operation does not apply: parent does not exist"))?;
    match parent {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| patch_err(format!("invalid array index {last:?}")))?
            };
            if idx > a.len() {
                return Err(patch_err(format!("array index {idx} out of bounds")));
            }
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(patch_err(
            "add operation does not apply: parent is not a container",
        )),
    }
}

fn remove_at(doc: &mut Value, path: &[String]) -> Result<Value, ApiError> {
    let Some((last, parent)) = path.split_last() else {
        return Err(patch_err("cannot remove the whole document"));
    };
    let parent = get_at_mut(doc, parent)
        .ok_or_else(|| patch_err("remove operation does not apply: path does not exist"))?;
    match parent {
        Value::Object(m) => m.remove(last).ok_or_else(|| {
            patch_err(format!(
                "remove operation does not apply: {last:?} does not exist"
            ))
        }),
        Value::Array(a) => {
            let idx = last
                .parse::<usize>()
                .map_err(|_| patch_err(format!("invalid array index {last:?}")))?;
            if idx >= a.len() {
                return Err(patch_err(format!("array index {idx} out of bounds")));
            }
            Ok(a.remove(idx))
        }
        _ => Err(patch_err(
            "remove operation does not apply: parent is not a container",
        )),
    }
}

/// Applies an RFC 6902 JSON patch (a list of operations) to `doc`.
pub(crate) fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be a list of operations"))?;
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("JSON patch operation without \"op\""))?;
        let path = parse_pointer(
            op.get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("JSON patch operation without \"path\""))?,
        )?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                ApiError::bad_request(format!("JSON patch {name} operation without \"value\""))
            })
        };
        let from = || -> Result<Vec<String>, ApiError> {
            parse_pointer(op.get("from").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("JSON patch {name} operation without \"from\""))
            })?)
        };
        match name {
            "add" => add_at(doc, &path, value()?)?,
            "remove" => {
                remove_at(doc, &path)?;
            }
            "replace" => {
                let v = value()?;
                let slot = get_at_mut(doc, &path).ok_or_else(|| {
                    patch_err("replace operation does not apply: path does not exist")
                })?;
                *slot = v;
            }
            "move" => {
                let from = from()?;
                let v = remove_at(doc, &from)?;
                add_at(doc, &path, v)?;
            }
            "copy" => {
                let v = get_at(doc, &from()?).cloned().ok_or_else(|| {
                    patch_err("copy operation does not apply: from does not exist")
                })?;
                add_at(doc, &path, v)?;
            }
            "test" => {
                let want = value()?;
                if get_at(doc, &path) != Some(&want) {
                    return Err(patch_err(format!(
                        "test operation failed at {:?}",
                        op.get("path")
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown JSON patch operation {other:?}"
                )))
            }
        }
    }
    Ok(())
}

/// The merge key of a list field in a strategic merge patch, if it is merged by key.
fn merge_key(field: &str, patch: &[Value]) -> Option<&'static str> {
    let all_have = |k: &str| {
        !patch.is_empty()
            && patch
                .iter()
                .all(|e| e.get(k).is_some() || e.get("$patch").is_some())
    };
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "ports" if all_have("containerPort") => Some("containerPort"),
        "ports" if all_have("port") => Some("port"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "readinessGates" => Some("conditionType"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "tolerations" => None,
        _ if all_have("name") && patch.iter().all(Value::is_object) => Some("name"),
        _ => None,
    }
}

/// List fields whose primitive elements are merged as a set.
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Removes strategic-merge directives (`$patch`, `$setElementOrder/…`, …) from a value.
pub(crate) fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get("$patch").is_none_or(|p| p != "delete"))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Applies a strategic merge patch to `target`.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(patch);
            return;
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (t.get_mut(field), v.as_array()) {
                list.retain(|e| !del.contains(e));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(o) if o.get("$patch").and_then(Value::as_str) == Some("delete") => {
                t.remove(k);
            }
            Value::Object(_) => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(list) => {
                let merged = merge_list(t.get(k), list, k);
                t.insert(k.clone(), merged);
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
}

fn merge_list(current: Option<&Value>, patch: &[Value], field: &str) -> Value {
    let current: Vec<Value> = current
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Value::Array(
            patch
                .iter()
                .filter(|e| e.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
    }
    if merges_primitives(field) && patch.iter().all(|e| !e.is_object()) {
        let mut out = current;
        for e in patch {
            if !out.contains(e) {
                out.push(e.clone());
            }
        }
        return Value::Array(out);
    }
    let Some(key) = merge_key(field, patch) else {
        return strip_directives(&Value::Array(patch.to_vec()));
    };
    let mut out = current;
    for e in patch {
        let Some(kv) = e.get(key) else { continue };
        let pos = out.iter().position(|c| c.get(key) == Some(kv));
        if e.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                out.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => strategic_merge(&mut out[i], e),
            None => out.push(strip_directives(e)),
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn json_patch_supports_every_operation() {
        let mut doc = json!({"a": {"b": [1, 2, 3]}, "x": 1});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/a/b/-", "value": 4},
                {"op": "remove", "path": "/a/b/0"},
                {"op": "replace", "path": "/x", "value": 2},
                {"op": "copy", "from": "/x", "path": "/y"},
                {"op": "move", "from": "/y", "path": "/z"},
                {"op": "test", "path": "/z", "value": 2},
                {"op": "add", "path": "/k~1e", "value": true}
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"a": {"b": [2, 3, 4]}, "x": 2, "z": 2, "k/e": true})
        );
        assert!(json_patch(&mut doc, &json!([{"op": "test", "path": "/x", "value": 3}])).is_err());
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut doc, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_replaces_other_lists() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}],
            "tolerations": [{"key": "k"}], "nodeSelector": {"x": "y"}},
            "metadata": {"finalizers": ["f1"]}});
        strategic_merge(
            &mut doc,
            &json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                               {"name": "b", "$patch": "delete"},
                               {"name": "c", "image": "c:1"}],
                "tolerations": [{"key": "t"}], "nodeSelector": {"x": null}},
                "metadata": {"finalizers": ["f2"]}}),
        );
        assert_eq!(
            doc,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                {"name": "c", "image": "c:1"}],
                "tolerations": [{"key": "t"}], "nodeSelector": {}},
                "metadata": {"finalizers": ["f1", "f2"]}})
        );
    }
}
