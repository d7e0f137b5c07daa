//! The input filter shared by the `plan` and `disrupt` targets (each includes this file with
//! `#[path = "common/skip.rs"] mod skip;`).

/// Workload sizes above this are skipped: expanding `replicas: 2000000000` is slow by design,
/// not a bug the fuzzer should keep finding.
const MAX_COUNT: i64 = 200;

/// Whether some `replicas` / `parallelism` / `completions` field asks for more than `MAX_COUNT`.
fn too_many_pods(v: &serde_yaml::Value, depth: usize) -> bool {
    if depth > 64 {
        return true;
    }
    match v {
        serde_yaml::Value::Mapping(m) => m.iter().any(|(k, v)| {
            let counted = matches!(k.as_str(), Some("replicas" | "parallelism" | "completions"));
            (counted && v.as_i64().is_none_or(|n| n > MAX_COUNT) && !v.is_null())
                || too_many_pods(v, depth + 1)
        }),
        serde_yaml::Value::Sequence(s) => s.iter().any(|v| too_many_pods(v, depth + 1)),
        serde_yaml::Value::Tagged(t) => too_many_pods(&t.value, depth + 1),
        _ => false,
    }
}

/// Whether `text` asks for more than `MAX_COUNT` pods in one workload (then the input is
/// skipped).
pub fn skip(text: &str) -> bool {
    use serde::Deserialize as _;
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(v) => {
                if too_many_pods(&v, 0) {
                    return true;
                }
            }
            // Unparsable text is rejected by karp too; let it through to exercise the errors.
            Err(_) => return false,
        }
    }
    false
}

/// The manifest text of a fuzz input: its first byte holds the target's flags (bit 0: prepend
/// `prefix`), the rest is the text; `None` for an empty input or one [`skip`] rejects.
pub fn input(data: &[u8], prefix: &str) -> Option<(u8, String)> {
    let (&first, rest) = data.split_first()?;
    let body = String::from_utf8_lossy(rest);
    if skip(&body) {
        return None;
    }
    let text = if first & 1 == 1 {
        format!("{prefix}{body}")
    } else {
        body.into_owned()
    };
    Some((first, text))
}
