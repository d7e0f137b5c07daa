//! Label selectors (string and `metav1.LabelSelector` forms) and field selectors.

use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector {
    reqs: Vec<(String, Op)>,
}

fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth <= 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(rest: &str, raw: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {raw}: expected a set in parentheses"
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),!h`.
    pub(crate) fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for raw in split_top_level(s) {
            if let Some(key) = raw.strip_prefix('!') {
                reqs.push((key.trim().to_string(), Op::NotExists));
                continue;
            }
            let key_end = raw
                .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '<' | '>' | '('))
                .unwrap_or(raw.len());
            let key = raw[..key_end].to_string();
            if key.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: {raw}"
                )));
            }
            let rest = raw[key_end..].trim_start();
            let op = if rest.is_empty() {
                Op::Exists
            } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
                Op::Eq(v.trim().to_string())
            } else if let Some(v) = rest.strip_prefix("!=") {
                Op::NotEq(v.trim().to_string())
            } else if let Some(v) = rest.strip_prefix("notin") {
                Op::NotIn(parse_set(v, &raw)?)
            } else if let Some(v) = rest.strip_prefix("in") {
                Op::In(parse_set(v, &raw)?)
            } else if let Some(v) = rest.strip_prefix('>') {
                Op::Gt(v.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!("unable to parse requirement: {raw}"))
                })?)
            } else if let Some(v) = rest.strip_prefix('<') {
                Op::Lt(v.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!("unable to parse requirement: {raw}"))
                })?)
            } else {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: {raw}"
                )));
            };
            reqs.push((key, op));
        }
        Ok(LabelSelector { reqs })
    }

    /// Builds a selector from a `metav1.LabelSelector` object. `None` for a null selector.
    pub(crate) fn from_object(sel: &Value) -> Option<Self> {
        let obj = sel.as_object()?;
        let mut reqs = Vec::new();
        if let Some(ml) = obj.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                reqs.push((
                    k.clone(),
                    Op::Eq(v.as_str().unwrap_or_default().to_string()),
                ));
            }
        }
        if let Some(exprs) = obj.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                {
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::NotExists,
                    // An unknown operator selects nothing.
                    _ => Op::In(Vec::new()),
                };
                reqs.push((key, op));
            }
        }
        Some(LabelSelector { reqs })
    }

    /// The selector in string form (`a=b,c in (d)`), as a Scale's `status.selector` carries it.
    pub(crate) fn to_query(&self) -> String {
        self.reqs
            .iter()
            .map(|(k, op)| match op {
                Op::Eq(v) => format!("{k}={v}"),
                Op::NotEq(v) => format!("{k}!={v}"),
                Op::In(vs) => format!("{k} in ({})", vs.join(",")),
                Op::NotIn(vs) => format!("{k} notin ({})", vs.join(",")),
                Op::Exists => k.clone(),
                Op::NotExists => format!("!{k}"),
                Op::Gt(n) => format!("{k}>{n}"),
                Op::Lt(n) => format!("{k}<{n}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True when `labels` (a JSON object or null) satisfies every requirement.
    pub(crate) fn matches_labels(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.reqs.iter().all(|(k, op)| {
            let v = labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            match op {
                Op::Eq(want) => v == Some(want.as_str()),
                Op::NotEq(want) => v != Some(want.as_str()),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }

    /// True when the object's `metadata.labels` satisfy the selector.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.matches_labels(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector {
    reqs: Vec<(Vec<String>, bool, String)>,
}

fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in v.chars() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    out
}

fn split_unescaped(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == ',' {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

impl FieldSelector {
    /// Parses `metadata.name=x,spec.nodeName!=`.
    pub(crate) fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for raw in split_unescaped(s) {
            let (path, eq, value) = if let Some((p, v)) = raw.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = raw.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = raw.split_once('=') {
                (p, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {raw}: expected an operator"
                )));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {raw}"
                )));
            }
            reqs.push((path, eq, unescape(value.trim())));
        }
        Ok(FieldSelector { reqs })
    }

    /// True when every requirement holds; a missing field reads as the empty string.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            let mut found = true;
            for seg in path {
                match cur.get(seg) {
                    Some(v) => cur = v,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            let got = if !found {
                String::new()
            } else {
                match cur {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                }
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "tier": "fe", "n": "5"}},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_operators_match_like_kubernetes() {
        let p = pod();
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&p);
        assert!(m("app=web"));
        assert!(m("app==web,tier=fe"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, api)"));
        assert!(!m("app notin (web,api)"));
        assert!(m("missing notin (x)"));
        assert!(m("tier"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("n>4,n<6"));
        assert!(m(""));
        assert!(LabelSelector::parse("=x").is_err());
        assert!(LabelSelector::parse("a in x").is_err());
    }

    #[test]
    fn field_selector_reads_dotted_paths_and_missing_fields_as_empty() {
        let p = pod();
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&p);
        assert!(m("metadata.name=p,metadata.namespace=ns"));
        assert!(m("spec.nodeName==n1"));
        assert!(m("status.phase!=Pending"));
        assert!(!m("spec.nodeName="));
        assert!(m("spec.schedulerName="));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn object_selector_round_trips_to_query() {
        let sel = LabelSelector::from_object(&json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]}))
        .unwrap();
        assert!(sel.matches(&pod()));
        assert_eq!(sel.to_query(), "app=web,tier in (fe)");
        assert!(LabelSelector::from_object(&Value::Null).is_none());
    }
}
