//! A renderer for the subset of Helm's Go templates that `charts/karp` uses, so tests can render
//! the chart with its default values and apply the result (Helm itself is not installable here).
//!
//! Supported: `{{ .Values.a.b }}`, `{{ .Release.Name }}`, `{{ .Release.Namespace }}`,
//! `{{ .Chart.Name }}` / `.Chart.Version` / `.Chart.AppVersion`, the pipes `| quote`, `| toJson`
//! and `| default <field>`, `{{ if <expr> }} ... {{ else }} ... {{ end }}` (Helm truthiness), and
//! `{{-` / `-}}` whitespace trimming. Anything else is an error naming the file and the action, so a template that grows
//! beyond the subset fails loudly instead of rendering wrong.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// Errors of [`render`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChartError {
    /// A chart file could not be read or parsed.
    #[error("{file}: {reason}")]
    ReadChart {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A template uses something the renderer does not support, or is malformed.
    #[error("{file}: template action {action:?}: {reason}")]
    RenderTemplate {
        /// The template file.
        file: String,
        /// The action (`{{ ... }}` content).
        action: String,
        /// Why.
        reason: String,
    },
}

/// What templates see besides values.
#[derive(Debug, Clone)]
pub struct Release {
    /// `.Release.Name`.
    pub name: String,
    /// `.Release.Namespace`.
    pub namespace: String,
}

struct Ctx<'a> {
    values: &'a Value,
    chart: &'a Value,
    release: &'a Release,
    file: String,
}

fn lookup<'v>(root: &'v Value, path: &[&str]) -> Option<&'v Value> {
    let mut v = root;
    for p in path {
        v = v.get(*p)?;
    }
    Some(v)
}

impl Ctx<'_> {
    fn err(&self, action: &str, reason: impl Into<String>) -> ChartError {
        ChartError::RenderTemplate {
            file: self.file.clone(),
            action: action.to_string(),
            reason: reason.into(),
        }
    }

    fn eval(&self, action: &str, expr: &str) -> Result<Value, ChartError> {
        let mut parts = expr.split('|').map(str::trim);
        let head = parts.next().unwrap_or_default();
        let mut v = self.field(action, head)?;
        for f in parts {
            v = match f.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["quote"] => Value::String(
                    serde_json::to_string(&scalar_text(&v))
                        .map_err(|e| self.err(action, e.to_string()))?,
                ),
                ["toJson"] => Value::String(
                    serde_json::to_string(&v).map_err(|e| self.err(action, e.to_string()))?,
                ),
                // Helm's `default`: the piped value unless it is empty, else the argument.
                ["default", field] => {
                    if truthy(&v) {
                        v
                    } else {
                        self.field(action, field)?
                    }
                }
                _ => return Err(self.err(action, format!("unsupported function {f:?}"))),
            };
        }
        Ok(v)
    }

    /// The value of a field path (`.Values.a.b`, `.Release.Name`, `.Chart.AppVersion`).
    fn field(&self, action: &str, head: &str) -> Result<Value, ChartError> {
        let path: Vec<&str> = head
            .strip_prefix('.')
            .ok_or_else(|| self.err(action, "expected a field path starting with '.'"))?
            .split('.')
            .collect();
        let v = match path.first().copied() {
            Some("Values") => lookup(self.values, &path[1..])
                .cloned()
                .unwrap_or(Value::Null),
            Some("Release") => match path.get(1).copied() {
                Some("Name") => Value::String(self.release.name.clone()),
                Some("Namespace") => Value::String(self.release.namespace.clone()),
                _ => return Err(self.err(action, "unsupported .Release field")),
            },
            Some("Chart") => {
                let key = match path.get(1).copied() {
                    Some("Name") => "name",
                    Some("Version") => "version",
                    Some("AppVersion") => "appVersion",
                    _ => return Err(self.err(action, "unsupported .Chart field")),
                };
                self.chart.get(key).cloned().unwrap_or(Value::Null)
            }
            _ => return Err(self.err(action, "only .Values, .Release and .Chart are supported")),
        };
        Ok(v)
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        Value::Tagged(_) => true,
    }
}

/// Renders one template text.
fn render_text(ctx: &Ctx<'_>, text: &str) -> Result<String, ChartError> {
    let mut out = String::new();
    // Stack of "emitting" flags for nested ifs.
    let mut emit: Vec<bool> = vec![true];
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let (before, after) = rest.split_at(start);
        let end = after.find("}}").ok_or_else(|| {
            ctx.err(
                after.lines().next().unwrap_or_default(),
                "unterminated action",
            )
        })?;
        let mut inner = &after[2..end];
        let mut literal = before.to_string();
        if let Some(s) = inner.strip_prefix('-') {
            inner = s;
            literal = literal.trim_end().to_string();
        }
        let trim_after = inner.ends_with('-');
        if trim_after {
            inner = &inner[..inner.len() - 1];
        }
        if emit.iter().all(|e| *e) {
            out.push_str(&literal);
        }
        let action = inner.trim();
        rest = &after[end + 2..];
        if trim_after {
            rest = rest.trim_start();
        }
        if let Some(cond) = action.strip_prefix("if ") {
            let v = ctx.eval(action, cond.trim())?;
            emit.push(truthy(&v));
        } else if action == "else" {
            // The branch that emits is the other one; enclosing ifs still decide.
            match emit.len() {
                1 => return Err(ctx.err(action, "else without if")),
                _ => {
                    let taken = emit.pop().unwrap_or(true);
                    emit.push(!taken);
                }
            }
        } else if action == "end" {
            if emit.len() == 1 {
                return Err(ctx.err(action, "end without if"));
            }
            emit.pop();
        } else if action.starts_with('.') {
            let v = ctx.eval(action, action)?;
            if emit.iter().all(|e| *e) {
                out.push_str(&scalar_text(&v));
            }
        } else {
            return Err(ctx.err(action, "unsupported action"));
        }
    }
    if emit.len() != 1 {
        return Err(ctx.err("if", "missing end"));
    }
    out.push_str(rest);
    Ok(out)
}

fn read(path: &Path) -> Result<String, ChartError> {
    std::fs::read_to_string(path).map_err(|e| ChartError::ReadChart {
        file: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Renders every template of the chart at `dir` with its `values.yaml` (merged with `overrides`,
/// a mapping whose keys replace the defaults'), in file-name order; returns (file, YAML).
///
/// # Errors
/// [`ChartError`] naming the file and the template action.
pub fn render(
    dir: &Path,
    release: &Release,
    overrides: Option<&Value>,
) -> Result<Vec<(PathBuf, String)>, ChartError> {
    let parse = |p: &Path| -> Result<Value, ChartError> {
        serde_yaml::from_str(&read(p)?).map_err(|e| ChartError::ReadChart {
            file: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    let chart = parse(&dir.join("Chart.yaml"))?;
    let mut values = parse(&dir.join("values.yaml"))?;
    if let Some(o) = overrides {
        merge(&mut values, o);
    }
    let tdir = dir.join("templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tdir)
        .map_err(|e| ChartError::ReadChart {
            file: tdir.display().to_string(),
            reason: e.to_string(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let ctx = Ctx {
            values: &values,
            chart: &chart,
            release,
            file: f.display().to_string(),
        };
        let text = render_text(&ctx, &read(&f)?)?;
        out.push((f, text));
    }
    Ok(out)
}

fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) => merge(bv, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(values: &'a Value, chart: &'a Value, release: &'a Release) -> Ctx<'a> {
        Ctx {
            values,
            chart,
            release,
            file: "t.yaml".into(),
        }
    }

    #[test]
    fn renders_values_pipes_and_conditionals() {
        let values: Value =
            serde_yaml::from_str("a: {b: 2, s: hi, on: true, off: false, m: {x: 1}}").unwrap();
        let chart: Value = serde_yaml::from_str("name: karp\nappVersion: '1.0'").unwrap();
        let release = Release {
            name: "r".into(),
            namespace: "ns".into(),
        };
        let c = ctx(&values, &chart, &release);
        let t = "n: {{ .Values.a.b }}\ns: {{ .Values.a.s | quote }}\nm: {{ .Values.a.m | toJson }}\nr: {{ .Release.Name }}/{{ .Release.Namespace }}\nv: {{ .Chart.AppVersion }}\n{{- if .Values.a.on }}\nyes: 1\n{{- end }}\n{{- if .Values.a.off }}\nno: 1\n{{- end }}\n";
        let out = render_text(&c, t).unwrap();
        assert_eq!(
            out,
            "n: 2\ns: \"hi\"\nm: {\"x\":1}\nr: r/ns\nv: 1.0\nyes: 1\n"
        );
        // `default` keeps a non-empty value and replaces an empty or missing one.
        let t = "{{ .Values.a.s | default .Chart.AppVersion }} {{ .Values.a.none | default .Chart.AppVersion | quote }}";
        assert_eq!(render_text(&c, t).unwrap(), "hi \"1.0\"");
        // `else` inverts the innermost if only.
        let t = "{{ if .Values.a.off }}a{{ else }}b{{ end }}{{ if .Values.a.on }}c{{ else }}d{{ end }}{{ if .Values.a.off }}{{ if .Values.a.on }}e{{ else }}f{{ end }}{{ end }}";
        assert_eq!(render_text(&c, t).unwrap(), "bc");
        for bad in [
            "{{ include \"x\" . }}",
            "{{ .Values.a | upper }}",
            "{{ if .Values.a.on }}",
            "{{ end }}",
            "{{ else }}",
            "{{ .Values.a.s | default }}",
            "{{ .Foo }}",
            "{{ .Values",
        ] {
            assert!(render_text(&c, bad).is_err(), "{bad}");
        }
    }
}
