//! CEL validation of custom resources: the `x-kubernetes-validations` rules of a CRD version's
//! openAPIV3Schema, compiled once when the CRD is registered ([`Validator::compile`]) and
//! evaluated on every create, update and patch ([`Validator::validate`]) with kube-apiserver's
//! semantics and error messages.
//!
//! # What is evaluated
//!
//! - Every rule is evaluated at the schema node that declares it (`properties`, `items`,
//!   `additionalProperties`, at any depth), with `self` bound to the value there: objects and
//!   maps are CEL maps, arrays lists, `integer` fields `int`, `number` fields `double`.
//! - At the root (and at `x-kubernetes-embedded-resource` nodes) `self.metadata` holds only
//!   `name` and `generateName`, as in Kubernetes.
//! - A rule on an absent or null field is not evaluated.
//! - Transition rules (those naming `oldSelf`) run only on updates, and only where the old value
//!   correlates: object fields by name, items of `x-kubernetes-list-type: map` lists by their
//!   `x-kubernetes-list-map-keys`; never under other lists.
//! - Ratcheting (Kubernetes' `CRDValidationRatcheting`, on by default since 1.30): on update, a
//!   failing rule that does not name `oldSelf` is not an error where the value (or, under an
//!   uncorrelatable list, the nearest correlatable ancestor) is unchanged, so old objects that
//!   predate a rule can still be written.
//! - `message`, `messageExpression`, `reason` (`FieldValueInvalid`, `FieldValueForbidden`,
//!   `FieldValueRequired`, `FieldValueDuplicate`) and `fieldPath` shape the error as kube does:
//!   `spec.x: Invalid value: "object": <message>`, `failed rule: <rule>` without a message, and
//!   `<error> evaluating rule: <message or rule>` when evaluation fails.
//! - The functions are cel's standard library, its strings extension (`split`, `indexOf`, …) and
//!   the Kubernetes regex library's `find` and `findAll`.
//!
//! # Caveats
//!
//! - No static type check and no cost budget: a rule that kube would reject when the CRD is created
//!   for its types or its estimated cost is accepted here, and fails (or passes) when evaluated.
//! - A rule calling a function this environment lacks (Kubernetes' `quantity`, `url`, `ip`, `cidr`,
//!   `isSorted`, … libraries) is skipped with a warning rather than failing every write.
//! - Strings with `format: date-time` or `duration` stay strings; `optionalOldSelf` is treated as
//!   an ordinary transition rule; rules inside `allOf`/`anyOf`/`oneOf` are not evaluated.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use ::cel::common::types::{CelInt, CelList, CelString};
use ::cel::objects::{Key, Map};
use ::cel::{Context, Env, ExecutionError, Program};
use serde_json::Value;

/// A CRD version whose rules cannot be compiled; the CRD is rejected (422) as kube-apiserver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CompileError {
    /// A `rule` or `messageExpression` does not parse.
    Rule {
        /// Where the rule is, e.g. `spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule`.
        field: String,
        /// The expression as written.
        source_text: String,
        /// The parser's message.
        message: String,
    },
    /// A `fieldPath` that does not name a field of the schema.
    FieldPath {
        /// Where the `fieldPath` is.
        field: String,
        /// The path as written.
        path: String,
        /// Why it is invalid.
        message: String,
    },
    /// The CEL environment itself could not be built (a bug, reported rather than panicking).
    Environment {
        /// The schema whose rules could not be compiled.
        field: String,
        /// The declaration error.
        message: String,
    },
}

impl CompileError {
    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            CompileError::Rule { field, .. }
            | CompileError::FieldPath { field, .. }
            | CompileError::Environment { field, .. } => field,
        }
    }

    /// The message without the field, as kube's `ErrorBody`.
    pub fn body(&self) -> String {
        match self {
            CompileError::Rule {
                source_text,
                message,
                ..
            } => format!("Invalid value: {source_text:?}: compilation failed: {message}"),
            CompileError::FieldPath { path, message, .. } => {
                format!("Invalid value: {path:?}: {message}")
            }
            CompileError::Environment { message, .. } => {
                format!("Internal error: the CEL environment could not be built: {message}")
            }
        }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field(), self.body())
    }
}

impl std::error::Error for CompileError {}

/// How a failed rule is reported: kube's `field.ErrorType` of the rule's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// `FieldValueInvalid` (the default).
    Invalid,
    /// `FieldValueForbidden`.
    Forbidden,
    /// `FieldValueRequired`.
    Required,
    /// `FieldValueDuplicate`.
    Duplicate,
}

impl FailureKind {
    fn from_reason(reason: Option<&str>) -> Self {
        match reason {
            Some("FieldValueForbidden") => FailureKind::Forbidden,
            Some("FieldValueRequired") => FailureKind::Required,
            Some("FieldValueDuplicate") => FailureKind::Duplicate,
            _ => FailureKind::Invalid,
        }
    }
}

/// One failed rule, as kube's `field.Error`: `Display` is `<field>: <body>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// How it is reported.
    pub kind: FailureKind,
    /// The field path (`spec.template.spec.requirements[0].key`; `<nil>` for the root).
    pub field: String,
    /// The schema type of the value (`object`, `array`, `string`, …), kube's "bad value".
    pub value_type: String,
    /// The rule's message (or `failed rule: …`, or the evaluation error).
    pub detail: String,
}

impl FieldError {
    /// The `details.causes[].reason` of the Status.
    pub fn cause_type(&self) -> &'static str {
        match self.kind {
            FailureKind::Invalid => "FieldValueInvalid",
            FailureKind::Forbidden => "FieldValueForbidden",
            FailureKind::Required => "FieldValueRequired",
            FailureKind::Duplicate => "FieldValueDuplicate",
        }
    }

    /// The message without the field, as kube's `ErrorBody` (`Invalid value: "object": msg`).
    pub fn body(&self) -> String {
        let head = match self.kind {
            FailureKind::Invalid => format!("Invalid value: {:?}", self.value_type),
            FailureKind::Duplicate => return format!("Duplicate value: {:?}", self.value_type),
            FailureKind::Forbidden => "Forbidden".to_string(),
            FailureKind::Required => "Required value".to_string(),
        };
        if self.detail.is_empty() {
            head
        } else {
            format!("{head}: {}", self.detail)
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// A property: `.name`.
    Field(String),
    /// A list index: `[0]`.
    Index(usize),
    /// A map key: `[key]`.
    Key(String),
}

/// kube's `field.Path.String()`; `<nil>` for the empty (root) path.
fn render_path(segs: &[Seg]) -> String {
    if segs.is_empty() {
        return "<nil>".to_string();
    }
    let mut out = String::new();
    for (i, s) in segs.iter().enumerate() {
        match s {
            Seg::Field(name) => {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(name);
            }
            Seg::Index(n) => out.push_str(&format!("[{n}]")),
            Seg::Key(k) => out.push_str(&format!("[{k}]")),
        }
    }
    out
}

/// What CEL types a schema gives its values (numbers are `int` or `double` by schema type).
#[derive(Debug, Default)]
enum Shape {
    /// `type: integer`.
    Integer,
    /// `type: number`: always a `double`, even when written `5`.
    Number,
    /// `type: array`.
    Array(Arc<Shape>),
    /// `type: object` with properties and/or additionalProperties.
    Object {
        properties: BTreeMap<String, Arc<Shape>>,
        additional: Option<Arc<Shape>>,
    },
    /// Anything else (strings, booleans, int-or-string, unknown): typed by the JSON value.
    #[default]
    Other,
}

impl Shape {
    fn of(schema: &Value) -> Arc<Shape> {
        let t = schema.get("type").and_then(Value::as_str).unwrap_or("");
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        Arc::new(match t {
            "integer" => Shape::Integer,
            "number" => Shape::Number,
            "array" => Shape::Array(schema.get("items").map_or_else(Arc::default, Shape::of)),
            _ if props.is_some() || additional.is_some() => Shape::Object {
                properties: props
                    .map(|p| p.iter().map(|(k, s)| (k.clone(), Shape::of(s))).collect())
                    .unwrap_or_default(),
                additional: additional.map(Shape::of),
            },
            _ => Shape::Other,
        })
    }

    fn property(&self, name: &str) -> Arc<Shape> {
        match self {
            Shape::Object {
                properties,
                additional,
            } => properties
                .get(name)
                .or(additional.as_ref())
                .cloned()
                .unwrap_or_default(),
            _ => Arc::default(),
        }
    }

    fn items(&self) -> Arc<Shape> {
        match self {
            Shape::Array(items) => items.clone(),
            _ => Arc::default(),
        }
    }
}

/// JSON to a CEL value, typed by `shape`.
fn to_cel(v: &Value, shape: &Shape) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (shape, n.as_i64()) {
            (Shape::Number, _) | (_, None) => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            (_, Some(i)) => cel::Value::Int(i),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_shape = shape.items();
            cel::Value::List(Arc::new(
                items.iter().map(|i| to_cel(i, &item_shape)).collect(),
            ))
        }
        Value::Object(m) => cel::Value::Map(Map {
            map: Arc::new(
                m.iter()
                    .map(|(k, v)| {
                        (
                            Key::String(Arc::new(k.clone())),
                            to_cel(v, &shape.property(k)),
                        )
                    })
                    .collect::<HashMap<_, _>>(),
            ),
        }),
    }
}

/// `self` for a resource root: `metadata` reduced to `name` and `generateName`.
fn root_to_cel(v: &Value, shape: &Shape) -> cel::Value {
    let Value::Object(m) = v else {
        return to_cel(v, shape);
    };
    let mut m = m.clone();
    if let Some(Value::Object(meta)) = m.get("metadata") {
        let kept: serde_json::Map<String, Value> = meta
            .iter()
            .filter(|(k, _)| *k == "name" || *k == "generateName")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        m.insert("metadata".into(), Value::Object(kept));
    }
    to_cel(&Value::Object(m), shape)
}

/// The shared CEL environment: the standard library, the strings extension and the Kubernetes
/// regex library (`find`, `findAll`).
fn env() -> Result<&'static Arc<Env>, String> {
    static ENV: OnceLock<Result<Arc<Env>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::strings)
            .and_then(|()| env.add_extension(kubernetes_regex))
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(env))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The Kubernetes CEL regex library: `find` and `findAll` (`k8s.io/apiserver/pkg/cel/library/regex.go`).
fn kubernetes_regex(env: &mut Env) -> Result<(), cel::DeclarationError> {
    cel::add_member_overload!(env, fn find: (CelString, CelString) -> Result<CelString>)?;
    cel::add_member_overload!(env, fn find_all: (CelString, CelString) -> Result<CelList>)?;
    cel::add_member_overload!(env, fn find_all_n: (CelString, CelString, CelInt) -> Result<CelList>,
        name = "findAll")?;
    Ok(())
}

/// The compiled `pattern`. Rules run on every write with the same few patterns, so compiled
/// patterns are kept (up to [`REGEX_CACHE`] of them; the cache starts over when full).
fn regex(function: &str, pattern: &str) -> Result<regex::Regex, ExecutionError> {
    static CACHE: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(re) = cache.lock().ok().and_then(|c| c.get(pattern).cloned()) {
        return Ok(re);
    }
    let re = regex::Regex::new(pattern).map_err(|e| ExecutionError::function_error(function, e))?;
    if let Ok(mut c) = cache.lock() {
        if c.len() >= REGEX_CACHE {
            c.clear();
        }
        c.insert(pattern.to_string(), re.clone());
    }
    Ok(re)
}

/// How many compiled patterns [`regex`] keeps.
const REGEX_CACHE: usize = 256;

/// `s.find(re)`: the first match of `re` in `s`, or `""`.
fn find(this: &CelString<'_>, re: &CelString<'_>) -> Result<CelString<'static>, ExecutionError> {
    let re = regex("find", re.inner())?;
    Ok(re
        .find(this.inner())
        .map(|m| m.as_str().to_string())
        .unwrap_or_default()
        .into())
}

fn find_all_limited(
    this: &CelString<'_>,
    re: &CelString<'_>,
    limit: Option<usize>,
) -> Result<CelList<'static>, ExecutionError> {
    let re = regex("findAll", re.inner())?;
    let all = re
        .find_iter(this.inner())
        .take(limit.unwrap_or(usize::MAX))
        .map(|m| -> Box<dyn cel::common::value::Val> {
            Box::new(CelString::from(m.as_str().to_string()))
        })
        .collect::<Vec<_>>();
    Ok(CelList::from(all))
}

/// `s.findAll(re)`: every match of `re` in `s`.
fn find_all(this: &CelString<'_>, re: &CelString<'_>) -> Result<CelList<'static>, ExecutionError> {
    find_all_limited(this, re, None)
}

/// `s.findAll(re, n)`: at most `n` matches (all of them when `n` is negative).
fn find_all_n(
    this: &CelString<'_>,
    re: &CelString<'_>,
    n: &CelInt,
) -> Result<CelList<'static>, ExecutionError> {
    let n = *n.inner();
    find_all_limited(this, re, usize::try_from(n).ok())
}

/// One compiled `x-kubernetes-validations` entry.
struct Rule {
    source: String,
    message: Option<String>,
    message_expression: Option<Program>,
    kind: FailureKind,
    field_path: Vec<Seg>,
    program: Program,
    uses_old_self: bool,
}

impl Rule {
    /// kube's `ruleErrorString`: the message, or the rule.
    fn error_string(&self) -> &str {
        self.message.as_deref().unwrap_or(&self.source)
    }

    /// kube's `ruleMessageOrDefault`.
    fn default_message(&self) -> String {
        match &self.message {
            Some(m) => m.clone(),
            None => format!("failed rule: {}", self.source.trim()),
        }
    }
}

/// How a list's items correlate with the old list's.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListType {
    /// `atomic` (the default): items do not correlate.
    Atomic,
    /// `set`: an item correlates with an equal old item (for ratcheting only).
    Set,
    /// `map`: items correlate by these keys.
    Map(Vec<String>),
}

/// The validator of one schema node: its rules and the children that hold rules.
struct Node {
    value_type: String,
    shape: Arc<Shape>,
    resource_root: bool,
    rules: Vec<Rule>,
    properties: BTreeMap<String, Node>,
    items: Option<Box<Node>>,
    additional: Option<Box<Node>>,
    list: ListType,
    map_correlatable: bool,
}

/// A compiled [`Validator`] shared by every clone of a resource definition; equal only to
/// itself.
#[derive(Debug, Clone)]
pub(crate) struct SharedValidator(pub Arc<Validator>);

impl PartialEq for SharedValidator {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The compiled rules of one CRD version's schema.
pub(crate) struct Validator {
    root: Node,
    rules: usize,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// Where a schema node is, for compile errors (`…openAPIV3Schema.properties[spec].items`).
fn schema_child(at: &str, part: &str) -> String {
    format!("{at}.{part}")
}

/// A parsed `fieldPath`: `.a.b`, `.a['b.c']`, `.map['key']`, resolved against the schema.
fn parse_field_path(path: &str, mut schema: &Value) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        let (name, tail) = if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").ok_or("unterminated ['…']")?;
            (&r[..end], &r[end + 2..])
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            (&r[..end], &r[end..])
        } else {
            return Err(format!("expected [ or . but got: {rest}"));
        };
        if name.is_empty() {
            return Err("empty field name".to_string());
        }
        if let Some(sub) = schema.get("properties").and_then(|p| p.get(name)) {
            segs.push(Seg::Field(name.to_string()));
            schema = sub;
        } else if let Some(sub) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            segs.push(Seg::Key(name.to_string()));
            schema = sub;
        } else {
            return Err("does not refer to a valid field".to_string());
        }
        rest = tail;
    }
    Ok(segs)
}

fn compile_rules(env: &Env, schema: &Value, at: &str, errors: &mut Vec<CompileError>) -> Vec<Rule> {
    let Some(list) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let mut rules = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let here = format!("{at}.x-kubernetes-validations[{i}]");
        let Some(source) = r.get("rule").and_then(Value::as_str) else {
            continue;
        };
        if source.trim().is_empty() {
            continue;
        }
        let program = match env.compile(source) {
            Ok(p) => p,
            Err(e) => {
                errors.push(CompileError::Rule {
                    field: format!("{here}.rule"),
                    source_text: source.to_string(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let message_expression = match r.get("messageExpression").and_then(Value::as_str) {
            Some(m) if !m.trim().is_empty() => match env.compile(m) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(CompileError::Rule {
                        field: format!("{here}.messageExpression"),
                        source_text: m.to_string(),
                        message: e.to_string(),
                    });
                    continue;
                }
            },
            _ => None,
        };
        let field_path = match r.get("fieldPath").and_then(Value::as_str) {
            Some(p) if !p.is_empty() => match parse_field_path(p, schema) {
                Ok(segs) => segs,
                Err(message) => {
                    errors.push(CompileError::FieldPath {
                        field: format!("{here}.fieldPath"),
                        path: p.to_string(),
                        message,
                    });
                    continue;
                }
            },
            _ => Vec::new(),
        };
        let uses_old_self = program.references().has_variable("oldSelf");
        rules.push(Rule {
            source: source.to_string(),
            message: r
                .get("message")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string),
            message_expression,
            kind: FailureKind::from_reason(r.get("reason").and_then(Value::as_str)),
            field_path,
            program,
            uses_old_self,
        });
    }
    rules
}

fn compile_node(
    env: &Env,
    schema: &Value,
    shape: Arc<Shape>,
    at: &str,
    resource_root: bool,
    errors: &mut Vec<CompileError>,
) -> Option<(Node, usize)> {
    let rules = compile_rules(env, schema, at, errors);
    let mut count = rules.len();
    let mut properties = BTreeMap::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let embedded = sub
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                == Some(true);
            if let Some((node, n)) = compile_node(
                env,
                sub,
                shape.property(name),
                &schema_child(at, &format!("properties[{name}]")),
                embedded,
                errors,
            ) {
                count += n;
                properties.insert(name.clone(), node);
            }
        }
    }
    let mut child = |key: &str, sub: Option<&Value>, shape: Arc<Shape>| {
        let sub = sub.filter(|s| s.is_object())?;
        let embedded = sub
            .get("x-kubernetes-embedded-resource")
            .and_then(Value::as_bool)
            == Some(true);
        compile_node(env, sub, shape, &schema_child(at, key), embedded, errors)
    };
    let items = child("items", schema.get("items"), shape.items());
    let additional = child(
        "additionalProperties",
        schema.get("additionalProperties"),
        match &*shape {
            Shape::Object {
                additional: Some(a),
                ..
            } => a.clone(),
            _ => Arc::default(),
        },
    );
    count += items.as_ref().map_or(0, |(_, n)| *n) + additional.as_ref().map_or(0, |(_, n)| *n);
    if count == 0 {
        return None;
    }
    let list = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => ListType::Map(
            schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some("set") => ListType::Set,
        _ => ListType::Atomic,
    };
    let map_correlatable = matches!(
        schema.get("x-kubernetes-map-type").and_then(Value::as_str),
        None | Some("granular") | Some("atomic")
    );
    Some((
        Node {
            value_type: schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            shape,
            resource_root,
            rules,
            properties,
            items: items.map(|(n, _)| Box::new(n)),
            additional: additional.map(|(n, _)| Box::new(n)),
            list,
            map_correlatable,
        },
        count,
    ))
}

/// The state of one walk: the errors found so far.
struct Walk {
    env: Arc<Env>,
    path: Vec<Seg>,
    errors: Vec<FieldError>,
}

impl Validator {
    /// Compiles every rule of `schema` (an openAPIV3Schema). `at` names the schema in errors
    /// (e.g. `spec.versions[0].schema.openAPIV3Schema`). `Ok(None)` when there are no rules.
    ///
    /// # Errors
    /// Every rule or messageExpression that does not parse, and every invalid fieldPath.
    pub fn compile(schema: &Value, at: &str) -> Result<Option<Validator>, Vec<CompileError>> {
        let env = env().map_err(|message| {
            vec![CompileError::Environment {
                field: at.to_string(),
                message,
            }]
        })?;
        let mut errors = Vec::new();
        let compiled = compile_node(env, schema, Shape::of(schema), at, true, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(compiled.map(|(root, rules)| Validator { root, rules }))
    }

    /// How many rules were compiled.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// Evaluates the rules on `new` (a create when `old` is None, an update otherwise). Returns
    /// the failures in schema order (empty when the object is valid).
    pub fn validate(&self, new: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let Ok(env) = env() else {
            // compile() succeeded, so the environment exists.
            return Vec::new();
        };
        let mut walk = Walk {
            env: env.clone(),
            path: Vec::new(),
            errors: Vec::new(),
        };
        walk.node(&self.root, new, old, false);
        walk.errors
    }
}

impl Walk {
    /// Validates `new` against `node`. `old` is the correlated old value (None: no correlation);
    /// `ancestor_unchanged` whether the nearest correlated ancestor equals its old value.
    fn node(&mut self, node: &Node, new: &Value, old: Option<&Value>, ancestor_unchanged: bool) {
        if new.is_null() {
            return;
        }
        let unchanged = match old {
            Some(o) => o == new,
            None => ancestor_unchanged,
        };
        if !node.rules.is_empty() {
            self.rules(node, new, old, unchanged);
        }
        match new {
            Value::Object(map) => {
                let old_map = old
                    .filter(|_| node.map_correlatable)
                    .and_then(Value::as_object);
                for (name, child) in &node.properties {
                    if let Some(v) = map.get(name) {
                        self.path.push(Seg::Field(name.clone()));
                        self.node(child, v, old_map.and_then(|m| m.get(name)), unchanged);
                        self.path.pop();
                    }
                }
                if let Some(child) = &node.additional {
                    for (k, v) in map {
                        self.path.push(Seg::Key(k.clone()));
                        self.node(child, v, old_map.and_then(|m| m.get(k)), unchanged);
                        self.path.pop();
                    }
                }
            }
            Value::Array(items) => {
                let Some(child) = &node.items else { return };
                let old_items = old.and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    let (old_item, item_unchanged) = match (&node.list, old_items) {
                        (ListType::Map(keys), Some(olds)) => {
                            (correlate_by_keys(item, olds, keys), unchanged)
                        }
                        (ListType::Set, Some(olds)) => (None, olds.contains(item)),
                        _ => (None, unchanged),
                    };
                    self.path.push(Seg::Index(i));
                    self.node(child, item, old_item, item_unchanged);
                    self.path.pop();
                }
            }
            _ => {}
        }
    }

    /// Evaluates the rules declared at `node`.
    fn rules(&mut self, node: &Node, new: &Value, old: Option<&Value>, unchanged: bool) {
        let to_cel_here = |v: &Value| {
            if node.resource_root {
                root_to_cel(v, &node.shape)
            } else {
                to_cel(v, &node.shape)
            }
        };
        let wanted: Vec<&Rule> = node
            .rules
            .iter()
            .filter(|r| {
                if r.uses_old_self {
                    old.is_some()
                } else {
                    !unchanged
                }
            })
            .collect();
        if wanted.is_empty() {
            return;
        }
        let mut ctx = Context::with_env(self.env.clone());
        ctx.add_variable_from_value("self", to_cel_here(new));
        if let Some(o) = old.filter(|_| wanted.iter().any(|r| r.uses_old_self)) {
            ctx.add_variable_from_value("oldSelf", to_cel_here(o));
        }
        for rule in wanted {
            let detail = match rule.program.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => continue,
                Ok(cel::Value::Bool(false)) => self.message(rule, &ctx),
                Ok(other) => format!(
                    "rule did not evaluate to a boolean (got {other:?}) evaluating rule: {}",
                    rule.error_string()
                ),
                Err(ExecutionError::UndeclaredReference(name)) => {
                    tracing::warn!(
                        rule = %rule.source,
                        function = %name,
                        "CEL rule uses a function this server does not implement; not evaluated"
                    );
                    continue;
                }
                Err(e) => eval_error(&e, rule),
            };
            let mut segs = self.path.clone();
            segs.extend(rule.field_path.iter().cloned());
            self.errors.push(FieldError {
                kind: rule.kind,
                field: render_path(&segs),
                value_type: node.value_type.clone(),
                detail,
            });
        }
    }

    /// The message of a rule that evaluated to false: its messageExpression's value when that
    /// gives a non-empty single-line string, else its message, else `failed rule: <rule>`.
    fn message(&self, rule: &Rule, ctx: &Context<'_, '_>) -> String {
        if let Some(expr) = &rule.message_expression {
            match expr.execute(ctx) {
                Ok(cel::Value::String(s)) if !s.trim().is_empty() && !s.contains('\n') => {
                    return s.trim().to_string();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, rule = %rule.source, "messageExpression failed")
                }
            }
        }
        rule.default_message()
    }
}

/// kube's detail for a rule whose evaluation failed.
fn eval_error(e: &ExecutionError, rule: &Rule) -> String {
    match e {
        ExecutionError::NoSuchOverload(o) => format!(
            "'no such overload: {o}': call arguments did not match a supported operator, function or macro signature for rule: {}",
            rule.error_string()
        ),
        // cel-go's wording.
        ExecutionError::NoSuchKey(k) => {
            format!("no such key: {k} evaluating rule: {}", rule.error_string())
        }
        other => format!("{other} evaluating rule: {}", rule.error_string()),
    }
}

/// The old item of a `map` list with the same values for every key.
fn correlate_by_keys<'a>(item: &Value, olds: &'a [Value], keys: &[String]) -> Option<&'a Value> {
    if keys.is_empty() {
        return None;
    }
    olds.iter()
        .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(rule: &str, value: Value) -> Result<cel::Value, ExecutionError> {
        let env = env().unwrap();
        let program = env.compile(rule).unwrap();
        let mut ctx = Context::with_env(env.clone());
        ctx.add_variable_from_value("self", to_cel(&value, &Shape::Other));
        program.execute(&ctx)
    }

    fn holds(rule: &str, value: Value) -> bool {
        match eval(rule, value) {
            Ok(cel::Value::Bool(b)) => b,
            other => panic!("{rule}: {other:?}"),
        }
    }

    fn validator(schema: Value) -> Validator {
        Validator::compile(&schema, "schema").unwrap().unwrap()
    }

    fn messages(v: &Validator, new: Value, old: Option<Value>) -> Vec<String> {
        v.validate(&new, old.as_ref())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn find_returns_the_first_match_or_the_empty_string() {
        assert!(holds(
            "self.find('^([^/]+)') == 'karpenter.sh'",
            json!("karpenter.sh/nodepool")
        ));
        assert!(holds("self.find('[0-9]+') == ''", json!("abc")));
        assert!(holds("self.find('[0-9]+') == '123'", json!("abc 123 45")));
        assert!(holds(
            "self.findAll('[0-9]+') == ['123', '45']",
            json!("abc 123 45")
        ));
        assert!(holds(
            "self.findAll('[0-9]+', 1) == ['123']",
            json!("abc 123 45")
        ));
        assert!(holds(
            "self.findAll('[0-9]+', -1).size() == 2",
            json!("abc 123 45")
        ));
        assert!(eval("self.find('(')", json!("x")).is_err());
    }

    #[test]
    fn the_string_and_list_functions_the_karpenter_rules_use_are_there() {
        assert!(holds(
            "self.split('@')[0] == 'al2023'",
            json!("al2023@latest")
        ));
        assert!(holds(
            "self.matches('^[a-zA-Z0-9]+@.+$')",
            json!("al2023@v1")
        ));
        assert!(!holds("self.matches('^[a-zA-Z0-9]+@.+$')", json!("al2023")));
        assert!(holds(
            "self.startsWith('-') && self.endsWith('m')",
            json!("-100m")
        ));
        assert!(holds("int(self[0]) >= 0", json!(["10"])));
        assert!(eval("int(self[0]) >= 0", json!(["ten"])).is_err());
        assert!(holds(
            "self.all(k, k != '' && self[k] != '')",
            json!({"a": "b"})
        ));
        assert!(!holds(
            "self.all(k, k != '' && self[k] != '')",
            json!({"a": ""})
        ));
        assert!(holds(
            "self.exists(x, has(x.id))",
            json!([{"name": "a"}, {"id": "b"}])
        ));
        assert!(holds(
            "self.filter(x, has(x.rootVolume)?x.rootVolume==true:false).size() <= 1",
            json!([{"rootVolume": true}, {"rootVolume": false}, {}])
        ));
        assert!(holds("'a' in self", json!({"a": 1})));
        assert!(holds("self.x in ['a', 'b']", json!({"x": "b"})));
        assert!(holds("self.size() == 2", json!([1, 2])));
    }

    #[test]
    fn a_missing_field_is_an_error_and_has_is_false() {
        assert!(holds("!has(self.a)", json!({})));
        assert!(matches!(
            eval("self.a == 1", json!({})),
            Err(ExecutionError::NoSuchKey(_))
        ));
    }

    #[test]
    fn numbers_follow_the_schema_type() {
        let shape = Shape::of(&json!({"type": "object", "properties": {
            "i": {"type": "integer"}, "n": {"type": "number"}}}));
        let v = to_cel(&json!({"i": 5, "n": 5}), &shape);
        let cel::Value::Map(m) = v else {
            panic!("not a map")
        };
        assert_eq!(
            m.get(&Key::String(Arc::new("i".into()))),
            Some(&cel::Value::Int(5))
        );
        assert_eq!(
            m.get(&Key::String(Arc::new("n".into()))),
            Some(&cel::Value::Float(5.0))
        );
    }

    #[test]
    fn rules_run_where_declared_with_kube_paths_and_messages() {
        let v = validator(
            json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {
                "name": {"type": "string", "x-kubernetes-validations": [{"rule": "self != ''", "message": "name may not be empty"}]},
                "tags": {"type": "object", "additionalProperties": {"type": "string",
                    "x-kubernetes-validations": [{"rule": "self.size() < 3"}]}},
                "items": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}},
                    "x-kubernetes-validations": [{"rule": "self.a > 0", "message": "a must be positive"}]}}
            }}}}),
        );
        assert_eq!(v.rule_count(), 3);
        assert!(messages(&v, json!({"spec": {}}), None).is_empty());
        assert_eq!(
            messages(
                &v,
                json!({"spec": {"name": "", "tags": {"k": "long"}, "items": [{"a": 1}, {"a": 0}, {}]}}),
                None
            ),
            vec![
                "spec.items[1]: Invalid value: \"object\": a must be positive".to_string(),
                "spec.items[2]: Invalid value: \"object\": no such key: a evaluating rule: a must be positive".to_string(),
                "spec.name: Invalid value: \"string\": name may not be empty".to_string(),
                "spec.tags[k]: Invalid value: \"string\": failed rule: self.size() < 3".to_string(),
            ]
        );
    }

    #[test]
    fn a_root_rule_sees_only_name_and_generate_name_of_metadata() {
        let v = validator(json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "self.metadata.name.size() <= 3", "message": "short names"},
            {"rule": "!has(self.metadata.labels)"}]}));
        assert!(messages(
            &v,
            json!({"metadata": {"name": "abc", "labels": {"a": "b"}}}),
            None
        )
        .is_empty());
        assert_eq!(
            messages(&v, json!({"metadata": {"name": "abcd"}}), None),
            vec!["<nil>: Invalid value: \"object\": short names"]
        );
    }

    #[test]
    fn transition_rules_run_only_on_update_where_the_old_value_correlates() {
        let v = validator(
            json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec is immutable"}],
            "properties": {"list": {"type": "array", "items": {"type": "object",
                "x-kubernetes-validations": [{"rule": "self.v == oldSelf.v", "message": "v is immutable"}]}},
              "mlist": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
                "items": {"type": "object", "x-kubernetes-validations": [{"rule": "self.v == oldSelf.v", "message": "mv is immutable"}]}}}}}}),
        );
        assert!(messages(&v, json!({"spec": {"a": 1}}), None).is_empty());
        let old = json!({"spec": {"list": [{"v": 1}], "mlist": [{"k": "a", "v": 1}]}});
        assert!(messages(&v, old.clone(), Some(old.clone())).is_empty());
        // The spec changed: its rule fails; list items never correlate; map-list items do.
        let new = json!({"spec": {"list": [{"v": 2}], "mlist": [{"k": "b", "v": 5}, {"k": "a", "v": 2}]}});
        assert_eq!(
            messages(&v, new, Some(old)),
            vec![
                "spec: Invalid value: \"object\": spec is immutable",
                "spec.mlist[1]: Invalid value: \"object\": mv is immutable",
            ]
        );
        // No old spec: nothing to compare with.
        assert!(messages(&v, json!({"spec": {"a": 1}}), Some(json!({}))).is_empty());
    }

    #[test]
    fn an_unchanged_value_is_ratcheted_on_update() {
        let v = validator(json!({"type": "object", "properties": {
            "a": {"type": "string", "x-kubernetes-validations": [{"rule": "self != ''", "message": "a empty"}]},
            "l": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [{"rule": "self != ''", "message": "item empty"}]}}}}));
        let bad = json!({"a": "", "l": [""]});
        assert_eq!(messages(&v, bad.clone(), None).len(), 2);
        assert!(messages(&v, bad.clone(), Some(bad.clone())).is_empty());
        let changed_list = json!({"a": "", "l": ["", "x"]});
        assert_eq!(
            messages(&v, changed_list, Some(bad)),
            vec!["l[0]: Invalid value: \"string\": item empty"]
        );
    }

    #[test]
    fn message_expression_reason_and_field_path_shape_the_error() {
        let v = validator(
            json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"x": {"type": "integer"}, "m": {"type": "object", "additionalProperties": {"type": "string"}}},
            "x-kubernetes-validations": [
                {"rule": "self.x < 3", "messageExpression": "'x is ' + string(self.x)", "fieldPath": ".x"},
                {"rule": "self.x < 2", "reason": "FieldValueForbidden", "message": "forbidden x"},
                {"rule": "self.x < 1", "reason": "FieldValueRequired", "messageExpression": "''", "message": "fallback", "fieldPath": ".m['a.b']"},
                {"rule": "self.x < 0", "reason": "FieldValueDuplicate"}]}}}),
        );
        let errs = v.validate(&json!({"spec": {"x": 5}}), None);
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "spec.x: Invalid value: \"object\": x is 5",
                "spec: Forbidden: forbidden x",
                "spec.m[a.b]: Required value: fallback",
                "spec: Duplicate value: \"object\"",
            ]
        );
        assert_eq!(errs[1].cause_type(), "FieldValueForbidden");
    }

    #[test]
    fn rules_that_do_not_parse_are_compile_errors() {
        let errs = Validator::compile(
            &json!({"type": "object", "properties": {"a": {"type": "string",
                "x-kubernetes-validations": [{"rule": "self ==", "message": "m"}, {"rule": "true", "fieldPath": ".nope"}]}}}),
            "spec.versions[0].schema.openAPIV3Schema",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        let first = errs[0].to_string();
        assert!(
            first.starts_with("spec.versions[0].schema.openAPIV3Schema.properties[a].x-kubernetes-validations[0].rule: Invalid value: \"self ==\": compilation failed: "),
            "{first}"
        );
        assert!(errs[1].to_string().contains("fieldPath"));
    }

    #[test]
    fn a_schema_without_rules_has_no_validator() {
        assert!(Validator::compile(&json!({"type": "object"}), "s")
            .unwrap()
            .is_none());
    }

    #[test]
    fn unknown_functions_skip_the_rule_and_non_boolean_results_fail_it() {
        let v = validator(json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "quantity(self.q).isGreaterThan(quantity('1'))"},
            {"rule": "1", "message": "not a bool"}]}));
        assert_eq!(
            messages(&v, json!({"q": "2"}), None),
            vec!["<nil>: Invalid value: \"object\": rule did not evaluate to a boolean (got Int(1)) evaluating rule: not a bool"]
        );
    }

    /// A tiny deterministic generator (no dependency): random JSON never panics the validator.
    #[test]
    fn random_objects_and_rules_never_panic() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn value(next: &mut dyn FnMut() -> u64, depth: u32) -> Value {
            match (next() % if depth > 3 { 5 } else { 7 }, next() % 4) {
                (0, _) => Value::Null,
                (1, b) => json!(b == 0),
                (2, n) => json!(n as i64 - 2),
                (3, _) => json!(1.5),
                (4, n) => json!(["", "-1", "a@b", "kubernetes.io/x", "in"][n as usize]),
                (5, n) => Value::Array((0..n).map(|_| value(next, depth + 1)).collect()),
                (_, n) => {
                    let keys = ["a", "id", "tags", "values", "operator"];
                    Value::Object(
                        (0..n)
                            .map(|i| (keys[i as usize].to_string(), value(next, depth + 1)))
                            .collect(),
                    )
                }
            }
        }
        let rules = [
            "self.all(x, x.operator == 'In' ? x.values.size() != 0 : true)",
            "self.all(x, int(x.values[0]) >= 0)",
            "self.find('^([^/]+)').endsWith('k8s.io')",
            "self.split('@')[1] == 'latest'",
            "self == oldSelf",
            "self.all(k, self[k] != '')",
            "has(self.a) || self.size() > 1",
            "self.filter(x, x.a).size() <= 1",
            "self.id.matches(self.a)",
            "self / 0 == 1",
        ];
        let schemas: Vec<Value> = rules
            .iter()
            .map(|r| {
                json!({"type": "object", "x-kubernetes-validations": [{"rule": r}],
                    "properties": {"a": {"type": "array", "items": {"type": "object",
                        "x-kubernetes-validations": [{"rule": r}]}},
                        "tags": {"type": "object", "additionalProperties": {"type": "string",
                            "x-kubernetes-validations": [{"rule": r}]}}}})
            })
            .collect();
        let validators: Vec<Validator> = schemas.iter().map(|s| validator(s.clone())).collect();
        for _ in 0..300 {
            let new = value(&mut next, 0);
            let old = value(&mut next, 0);
            for v in &validators {
                let _ = v.validate(&new, Some(&old));
                let _ = v.validate(&new, None);
            }
        }
        for junk in [
            "",
            "(((",
            "self.",
            "'\\",
            "1 +* 2",
            "a.b(",
            "[1,2",
            "{'a':",
            "\u{0}",
            "self.all(x,",
        ] {
            let _ = Validator::compile(
                &json!({"type": "object", "x-kubernetes-validations": [{"rule": junk}]}),
                "s",
            );
        }
    }
}
