//! The object store: generic JSON objects, resourceVersions, event history, watchers and the
//! server-side behaviours (finalizers, garbage collection, status subresources, CRDs, PDBs).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::error::{success_status, ApiError, Cause, Reason};
use crate::patch::strategic_merge;
use crate::pdb;
use crate::registry::{apply_defaults, crd_status, CrdRejected, Registry, ResourceDef};
use crate::time::rfc3339;

/// Objects are stored per (group, plural), shared by every version of the resource.
pub(crate) type StoreKey = (String, String);

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change in the history.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub key: StoreKey,
    pub namespace: String,
    pub kind: EventKind,
    pub object: Arc<Value>,
    pub old: Option<Arc<Value>>,
}

/// What a watcher's channel carries.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    Event(Arc<Event>),
    Bookmark(u64),
}

struct Watcher {
    key: Option<StoreKey>,
    namespace: Option<String>,
    tx: UnboundedSender<Msg>,
}

/// Which part of the object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The main resource: `status` changes are ignored for kinds with a status subresource.
    Main,
    /// The `/status` subresource: only `status` changes.
    Status,
    /// In-process fixture writes: everything the body says, status included.
    Fixture,
}

/// How dependents are treated when their owner goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Background,
    Orphan,
}

/// Parsed `DeleteOptions`.
#[derive(Debug, Clone)]
pub(crate) struct DeleteOpts {
    pub propagation: Propagation,
    pub grace_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Default for DeleteOpts {
    fn default() -> Self {
        DeleteOpts {
            propagation: Propagation::Background,
            grace_seconds: None,
            uid: None,
            resource_version: None,
        }
    }
}

impl DeleteOpts {
    /// Reads a DeleteOptions body (or an Eviction's `deleteOptions`) plus query overrides.
    pub fn from_body(body: Option<&Value>) -> Self {
        let mut o = DeleteOpts::default();
        if let Some(b) = body {
            if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
                o.set_policy(p);
            } else if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
                o.propagation = Propagation::Orphan;
            }
            o.grace_seconds = b.get("gracePeriodSeconds").and_then(Value::as_i64);
            o.uid = b
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.resource_version = b
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        o
    }

    pub fn set_policy(&mut self, p: &str) {
        self.propagation = if p == "Orphan" {
            Propagation::Orphan
        } else {
            Propagation::Background
        };
    }
}

/// What a delete did.
pub(crate) enum Deleted {
    /// The object stays (finalizers pending); here is its current state.
    Pending(Value),
    /// The object is gone; a Success Status.
    Gone(Value),
}

/// The store.
pub(crate) struct State {
    pub registry: Registry,
    objects: BTreeMap<StoreKey, BTreeMap<(String, String), Arc<Value>>>,
    rv: u64,
    counter: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    compacted: u64,
    watchers: Vec<Watcher>,
    /// Every eviction answered, in order.
    pub evictions: Vec<Eviction>,
    /// Owner uid → the objects whose ownerReferences name it (garbage collection without a scan).
    dependents: BTreeMap<String, BTreeSet<ObjectKey>>,
    /// Uids of the stored objects.
    uids: BTreeMap<String, ObjectKey>,
}

/// Where an object is stored: resource, namespace, name.
type ObjectKey = (StoreKey, String, String);

fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("uid").and_then(Value::as_str))
}

/// One eviction request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// The node the pod was bound to, if any.
    pub node: Option<String>,
    /// Whether the pod was evicted.
    pub allowed: bool,
    /// The PodDisruptionBudget that decided (`None`: no budget selects the pod, or budgets do
    /// not apply to it: see [`Eviction::budgets_apply`]).
    pub pdb: Option<String>,
    /// Whether budgets applied to the pod: as kube-apiserver, they do not for a pod that is
    /// terminating, Pending (not yet started), Succeeded or Failed.
    pub budgets_apply: bool,
    /// The refusal's message (empty when allowed).
    pub message: String,
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // `metadata` was set to an object just above.
        _ => unreachable!("metadata is an object"),
    }
}

/// Whether an eviction ignores PodDisruptionBudgets for this pod (kube-apiserver's rule: the pod
/// is terminating, or Pending, Succeeded or Failed).
fn pdb_ignored(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    terminating(pod) || matches!(phase, "Succeeded" | "Failed" | "Pending")
}

fn finalizers(obj: &Value) -> usize {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn terminating(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The object without the fields that do not count as a change (resourceVersion, managedFields).
fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    o
}

/// The object without metadata and status: what `generation` tracks.
fn generation_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

/// Evaluates a simple `.a.b` path.
pub(crate) fn get_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
    {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

/// Sets a simple `.a.b` path, creating objects on the way.
pub(crate) fn set_path(obj: &mut Value, path: &str, value: Value) {
    let segs: Vec<&str> = path
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .collect();
    let mut cur = obj;
    for (i, seg) in segs.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(m) = cur.as_object_mut() else { return };
        if i + 1 == segs.len() {
            m.insert(seg.to_string(), value);
            return;
        }
        cur = m.entry(seg.to_string()).or_insert_with(|| json!({}));
    }
}

impl State {
    pub fn new(history_limit: usize) -> Self {
        let mut s = State {
            registry: Registry::builtin(),
            objects: BTreeMap::new(),
            rv: 0,
            counter: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            watchers: Vec::new(),
            evictions: Vec::new(),
            dependents: BTreeMap::new(),
            uids: BTreeMap::new(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            s.ensure_namespace(ns);
        }
        s
    }

    /// A copy of the objects and registry with no history and no watchers: dry runs write to it.
    pub fn scratch(&self) -> State {
        State {
            registry: self.registry.clone(),
            objects: self.objects.clone(),
            rv: self.rv,
            counter: self.counter,
            history: VecDeque::new(),
            history_limit: self.history_limit,
            compacted: self.rv,
            watchers: Vec::new(),
            evictions: Vec::new(),
            dependents: self.dependents.clone(),
            uids: self.uids.clone(),
        }
    }

    /// Keeps the uid and owner indexes in step with one stored object changing from `before` to
    /// `after` (None: absent).
    fn reindex(&mut self, at: &ObjectKey, before: Option<&Value>, after: Option<&Value>) {
        if let Some(b) = before {
            if let Some(uid) = meta_str(b, "uid") {
                self.uids.remove(uid);
            }
            for owner in owner_uids(b) {
                if let Some(set) = self.dependents.get_mut(owner) {
                    set.remove(at);
                    if set.is_empty() {
                        self.dependents.remove(owner);
                    }
                }
            }
        }
        if let Some(a) = after {
            if let Some(uid) = meta_str(a, "uid") {
                self.uids.insert(uid.to_string(), at.clone());
            }
            for owner in owner_uids(a) {
                self.dependents
                    .entry(owner.to_string())
                    .or_default()
                    .insert(at.clone());
            }
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn ensure_namespace(&mut self, ns: &str) {
        let key = (String::new(), "namespaces".to_string());
        if self
            .objects
            .get(&key)
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
        {
            return;
        }
        let obj = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let obj = self.stamp_new(obj);
        self.commit(
            key,
            String::new(),
            ns.to_string(),
            EventKind::Added,
            obj,
            None,
        );
    }

    fn stamp_new(&mut self, mut obj: Value) -> Value {
        self.counter += 1;
        let h = splitmix(self.counter);
        let uid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (h >> 32) as u32,
            (h >> 16) as u16,
            h & 0xfff,
            (h >> 12) & 0xfff,
            self.counter
        );
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now()));
        m.insert("generation".into(), json!(1));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("managedFields");
        m.remove("selfLink");
        obj
    }

    fn generated_name(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.counter += 1;
        let mut h = splitmix(self.counter ^ 0x5eed);
        let mut s = prefix.to_string();
        for _ in 0..5 {
            s.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
            h /= ALPHABET.len() as u64;
        }
        s
    }

    // ---- reads ----

    pub fn get_obj(&self, key: &StoreKey, ns: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Objects of a resource, in (namespace, name) order; `ns` None = every namespace.
    pub fn list_objs(&self, key: &StoreKey, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(m) = self.objects.get(key) else {
            return Vec::new();
        };
        match ns {
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => m.values().cloned().collect(),
        }
    }

    /// The object as served for `def` (apiVersion of the requested version).
    pub fn render(def: &ResourceDef, obj: &Value) -> Value {
        crate::events::view(def, obj).into_owned()
    }

    // ---- commit and watchers ----

    fn commit(
        &mut self,
        key: StoreKey,
        ns: String,
        name: String,
        kind: EventKind,
        mut obj: Value,
        old: Option<Arc<Value>>,
    ) -> Arc<Value> {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let obj = Arc::new(obj);
        let map = self.objects.entry(key.clone()).or_default();
        let at: ObjectKey = (key.clone(), ns.clone(), name.clone());
        let before = match kind {
            EventKind::Deleted => map.remove(&(ns.clone(), name)),
            _ => map.insert((ns.clone(), name), obj.clone()),
        };
        let after = (kind != EventKind::Deleted).then_some(obj.as_ref());
        self.reindex(&at, before.as_deref(), after);
        let ev = Arc::new(Event {
            rv: self.rv,
            key,
            namespace: ns,
            kind,
            object: obj.clone(),
            old,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        self.watchers.retain(|w| {
            let wanted = w.key.as_ref().is_none_or(|k| *k == ev.key)
                && w.namespace.as_ref().is_none_or(|n| *n == ev.namespace);
            if wanted {
                w.tx.send(Msg::Event(ev.clone())).is_ok()
            } else {
                !w.tx.is_closed()
            }
        });
        obj
    }

    /// Registers a watcher. With `since` = Some(rv), replays the retained events after rv (410 when
    /// they are no longer all retained); with None, returns the current objects to send as ADDED.
    #[allow(clippy::type_complexity)]
    pub fn watch(
        &mut self,
        key: Option<StoreKey>,
        namespace: Option<String>,
        since: Option<u64>,
    ) -> Result<
        (
            Vec<Arc<Value>>,
            Vec<Arc<Event>>,
            UnboundedReceiver<Msg>,
            UnboundedSender<Msg>,
        ),
        ApiError,
    > {
        let mut initial = Vec::new();
        let mut replay = Vec::new();
        match since {
            Some(rv) if rv < self.compacted => {
                return Err(ApiError::new(
                    Reason::Expired,
                    format!("too old resource version: {rv} ({})", self.compacted + 1),
                ));
            }
            Some(rv) => {
                for e in &self.history {
                    if e.rv > rv
                        && key.as_ref().is_none_or(|k| *k == e.key)
                        && namespace.as_ref().is_none_or(|n| *n == e.namespace)
                    {
                        replay.push(e.clone());
                    }
                }
            }
            None => {
                if let Some(k) = &key {
                    initial = self.list_objs(k, namespace.as_deref());
                }
            }
        }
        let (tx, rx) = unbounded_channel();
        self.watchers.push(Watcher {
            key,
            namespace,
            tx: tx.clone(),
        });
        Ok((initial, replay, rx, tx))
    }

    /// Sends a bookmark (the current resourceVersion) through a watcher's own channel, ordered
    /// after every event already sent to it.
    pub fn bookmark(&self, tx: &UnboundedSender<Msg>) {
        let _ = tx.send(Msg::Bookmark(self.rv));
    }

    // ---- writes ----

    /// A request body in the stored shape (events.k8s.io Events become core Events).
    fn to_storage(def: &ResourceDef, body: Value) -> Value {
        if crate::events::is_events_v1(def) {
            crate::events::to_core(&body)
        } else {
            body
        }
    }

    fn check_type(def: &ResourceDef, body: &Value) -> Result<(), ApiError> {
        if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
            if av != def.api_version() {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    def.api_version()
                )));
            }
        }
        if let Some(k) = body.get("kind").and_then(Value::as_str) {
            if k != def.kind {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    def.kind
                )));
            }
        }
        Ok(())
    }

    fn resolve_namespace(
        def: &ResourceDef,
        path_ns: Option<&str>,
        body: &Value,
    ) -> Result<String, ApiError> {
        if !def.namespaced {
            return Ok(String::new());
        }
        let body_ns = meta_str(body, "namespace").filter(|s| !s.is_empty());
        match (path_ns, body_ns) {
            (Some(p), Some(b)) if p != b => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            (Some(p), _) => Ok(p.to_string()),
            (None, Some(b)) => Ok(b.to_string()),
            (None, None) => Ok("default".to_string()),
        }
    }

    fn check_namespace(&mut self, ns: &str, fixture: bool) -> Result<(), ApiError> {
        if ns.is_empty() {
            return Ok(());
        }
        let key = (String::new(), "namespaces".to_string());
        match self.get_obj(&key, "", ns) {
            Some(n) if terminating(n) => Err(ApiError::new(
                Reason::Forbidden,
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
            None if fixture => {
                self.ensure_namespace(ns);
                Ok(())
            }
            None => Err(ApiError::not_found("", "namespaces", ns)),
        }
    }

    /// Server-side changes every write of a kind gets (CRD defaults, CRD status).
    fn prepare(&mut self, def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
        if let Some(schema) = &def.schema {
            apply_defaults(obj, schema);
        }
        if def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions" {
            let name = meta_str(obj, "name").unwrap_or_default().to_string();
            let group = obj
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let plural = obj
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if name != format!("{plural}.{group}") {
                return Err(ApiError::invalid(
                    "CustomResourceDefinition",
                    &name,
                    "metadata.name: Invalid value: must be spec.names.plural+\".\"+spec.group",
                ));
            }
            let status = crd_status(obj, &now());
            let keep_times = obj.get("status").and_then(|s| s.get("conditions")).cloned();
            obj["status"] = status;
            if let Some(Value::Array(old)) = keep_times {
                // Keep transition times stable across updates.
                if let Some(Value::Array(new)) = obj.pointer_mut("/status/conditions") {
                    for c in new.iter_mut() {
                        if let Some(o) = old.iter().find(|o| {
                            o.get("type") == c.get("type") && o.get("status") == c.get("status")
                        }) {
                            c["lastTransitionTime"] =
                                o.get("lastTransitionTime").cloned().unwrap_or(Value::Null);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Registers (or re-registers) a CRD; 422 when it cannot be served or its CEL rules do not
    /// compile (the previous registration, if any, stays).
    fn register_crd(&mut self, crd: &Value, previous: Option<&Value>) -> Result<(), ApiError> {
        let rejected = match self.registry.register_crd(crd) {
            Ok(()) => return Ok(()),
            Err(r) => r,
        };
        if let Some(p) = previous {
            if let Err(e) = self.registry.register_crd(p) {
                tracing::warn!(error = ?e, "the previous CustomResourceDefinition no longer registers");
            }
        }
        let name = meta_str(crd, "name").unwrap_or_default();
        Err(match rejected {
            CrdRejected::Unusable => ApiError::invalid(
                "CustomResourceDefinition",
                name,
                "spec: Invalid value: the group, names (plural, kind) and served versions are required and may not redefine a built-in resource",
            ),
            CrdRejected::Rules(errors) => {
                let causes: Vec<Cause> = errors
                    .iter()
                    .map(|e| Cause {
                        reason: "FieldValueInvalid",
                        field: e.field().to_string(),
                        message: e.body(),
                    })
                    .collect();
                ApiError::invalid_fields(
                    "apiextensions.k8s.io",
                    "CustomResourceDefinition",
                    name,
                    &causes,
                )
            }
        })
    }

    /// Evaluates the kind's CEL validation rules on a write (`old`: the stored object, for
    /// updates); 422 with every failed rule, as kube-apiserver answers.
    fn check_rules(def: &ResourceDef, new: &Value, old: Option<&Value>) -> Result<(), ApiError> {
        let Some(validator) = &def.validator else {
            return Ok(());
        };
        let failures = validator.0.validate(new, old);
        if failures.is_empty() {
            return Ok(());
        }
        let causes: Vec<Cause> = failures
            .iter()
            .map(|f| Cause {
                reason: f.cause_type(),
                field: f.field.clone(),
                message: f.body(),
            })
            .collect();
        let name = meta_str(new, "name").unwrap_or_default();
        Err(ApiError::invalid_fields(
            &def.group, &def.kind, name, &causes,
        ))
    }

    fn is_crd(def: &ResourceDef) -> bool {
        def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions"
    }

    /// Creates an object (POST).
    pub fn create(
        &mut self,
        def: &ResourceDef,
        path_ns: Option<&str>,
        body: Value,
        fixture: bool,
    ) -> Result<Value, ApiError> {
        let Value::Object(_) = body else {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        };
        Self::check_type(def, &body)?;
        let body = Self::to_storage(def, body);
        let ns = Self::resolve_namespace(def, path_ns, &body)?;
        let mut obj = body;
        obj["apiVersion"] = json!(def.storage_api_version());
        obj["kind"] = json!(def.kind);
        let mut name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let key = def.store_key();
        if name.is_empty() {
            let Some(prefix) = meta_str(&obj, "generateName")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
            else {
                return Err(ApiError::invalid(
                    &def.kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            };
            loop {
                name = self.generated_name(&prefix);
                if self.get_obj(&key, &ns, &name).is_none() {
                    break;
                }
            }
        }
        if name.contains('/') || name == "." || name == ".." {
            return Err(ApiError::invalid(
                &def.kind,
                &name,
                "metadata.name: Invalid value: may not contain '/'",
            ));
        }
        self.check_namespace(&ns, fixture)?;
        if self.get_obj(&key, &ns, &name).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            if def.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
        }
        let mut obj = self.stamp_new(obj);
        if !fixture && def.status {
            match (def.group.as_str(), def.plural.as_str()) {
                ("", "nodes")
                | ("", "persistentvolumes")
                | ("", "persistentvolumeclaims")
                | ("", "services") => {}
                ("", "pods") => {
                    let qos = crate::qos::qos_class(&obj);
                    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
                }
                ("", "namespaces") => obj["status"] = json!({"phase": "Active"}),
                _ => {
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        if def.group.is_empty() && def.plural == "namespaces" {
            let labels = meta_mut(&mut obj)
                .entry("labels")
                .or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        self.prepare(def, &mut obj)?;
        Self::check_rules(def, &obj, None)?;
        if Self::is_crd(def) {
            self.register_crd(&obj, None)?;
        }
        let stored = self.commit(key, ns.clone(), name, EventKind::Added, obj, None);
        self.after_write(def, &ns);
        Ok(Self::render(def, &stored))
    }

    /// Replaces an object (PUT, or the result of a patch).
    pub fn update(
        &mut self,
        def: &ResourceDef,
        path_ns: Option<&str>,
        name: &str,
        body: Value,
        mode: Mode,
    ) -> Result<Value, ApiError> {
        let Value::Object(_) = body else {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        };
        Self::check_type(def, &body)?;
        let body = Self::to_storage(def, body);
        let ns = Self::resolve_namespace(def, path_ns, &body)?;
        let body_name = meta_str(&body, "name").unwrap_or_default();
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let key = def.store_key();
        let old = self
            .get_obj(&key, &ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
        if let Some(rv) = meta_str(&body, "resourceVersion").filter(|s| !s.is_empty()) {
            if Some(rv) != meta_str(&old, "resourceVersion") {
                return Err(ApiError::stale(&def.group, &def.plural, name));
            }
        }
        let mut new = match mode {
            Mode::Status => {
                let mut n = (*old).clone();
                match body.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                n
            }
            Mode::Main | Mode::Fixture => {
                let mut n = body;
                if mode == Mode::Main && def.status {
                    match old.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            if let Some(m) = n.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                let old_meta = meta(&old).cloned().unwrap_or_default();
                let m = meta_mut(&mut n);
                m.insert("name".into(), json!(name));
                for f in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "namespace",
                    "managedFields",
                ] {
                    match old_meta.get(f) {
                        Some(v) => m.insert(f.into(), v.clone()),
                        None => m.remove(f),
                    };
                }
                n
            }
        };
        new["apiVersion"] = json!(def.storage_api_version());
        new["kind"] = json!(def.kind);
        meta_mut(&mut new).insert(
            "resourceVersion".into(),
            old.pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null),
        );
        self.prepare(def, &mut new)?;
        Self::check_rules(def, &new, Some(&old))?;
        if generation_part(&new) != generation_part(&old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                + 1;
            meta_mut(&mut new).insert("generation".into(), json!(g));
        }
        if comparable(&new) == comparable(&old) {
            return Ok(Self::render(def, &old));
        }
        if Self::is_crd(def) && !terminating(&new) {
            self.register_crd(&new, Some(&old))?;
        }
        let result = self.write_existing(def, &ns, name, new, old);
        self.after_write(def, &ns);
        Ok(Self::render(def, &result))
    }

    /// Stores a changed object; removes it instead when it is terminating without finalizers.
    fn write_existing(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        new: Value,
        old: Arc<Value>,
    ) -> Value {
        let key = def.store_key();
        if terminating(&new) && finalizers(&new) == 0 && !self.namespace_has_content(def, name) {
            let mut gone = new;
            self.remove(def, ns, name, &mut gone, Some(old), Propagation::Background);
            return gone;
        }
        (*self.commit(
            key,
            ns.to_string(),
            name.to_string(),
            EventKind::Modified,
            new,
            Some(old),
        ))
        .clone()
    }

    fn namespace_has_content(&self, def: &ResourceDef, name: &str) -> bool {
        if !(def.group.is_empty() && def.plural == "namespaces") {
            return false;
        }
        self.objects.iter().any(|((g, p), m)| {
            !(g.is_empty() && p == "namespaces") && m.keys().any(|(ns, _)| ns == name)
        })
    }

    /// Removes an object for good: DELETED event, CRD unregistration, garbage collection.
    fn remove(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        obj: &mut Value,
        old: Option<Arc<Value>>,
        propagation: Propagation,
    ) {
        let key = def.store_key();
        let uid = meta_str(obj, "uid").unwrap_or_default().to_string();
        let stored = self.commit(
            key,
            ns.to_string(),
            name.to_string(),
            EventKind::Deleted,
            obj.clone(),
            old,
        );
        *obj = (*stored).clone();
        if Self::is_crd(def) {
            for k in self.registry.unregister_crd(name) {
                let victims: Vec<((String, String), Arc<Value>)> = self
                    .objects
                    .get(&k)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                for ((vns, vname), v) in victims {
                    self.commit(
                        k.clone(),
                        vns,
                        vname,
                        EventKind::Deleted,
                        (*v).clone(),
                        Some(v),
                    );
                }
            }
        }
        if !uid.is_empty() {
            self.collect_dependents(&uid, propagation);
        }
        if def.namespaced {
            self.maybe_finish_namespace(ns);
        }
        self.after_write(def, ns);
    }

    fn def_for_key(&self, key: &StoreKey, obj: &Value) -> Option<ResourceDef> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (_, version) = crate::registry::split_api_version(api_version);
        self.registry
            .get(&key.0, version, &key.1)
            .or_else(|| self.registry.all().find(|d| d.store_key() == *key))
            .cloned()
    }

    /// Garbage collection: dependents whose ownerReferences point to `uid`.
    fn collect_dependents(&mut self, uid: &str, propagation: Propagation) {
        let dependents: Vec<ObjectKey> = self
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for (key, ns, name) in dependents {
            let Some(obj) = self.get_obj(&key, &ns, &name).cloned() else {
                continue;
            };
            let Some(def) = self.def_for_key(&key, &obj) else {
                continue;
            };
            let remaining: Vec<Value> = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter(|o| o.get("uid").and_then(Value::as_str) != Some(uid))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let other_owner_alive = remaining
                .iter()
                .filter_map(|o| o.get("uid").and_then(Value::as_str))
                .any(|u| self.uid_exists(u));
            if propagation == Propagation::Orphan || other_owner_alive {
                let mut new = (*obj).clone();
                if remaining.is_empty() {
                    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("ownerReferences");
                    }
                } else {
                    new["metadata"]["ownerReferences"] = Value::Array(remaining);
                }
                self.write_existing(&def, &ns, &name, new, obj);
            } else if !terminating(&obj) || finalizers(&obj) == 0 {
                let _ = self.delete(
                    &def,
                    Some(&ns).filter(|n| !n.is_empty()).map(String::as_str),
                    &name,
                    &DeleteOpts::default(),
                );
            }
        }
    }

    fn uid_exists(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    fn maybe_finish_namespace(&mut self, ns: &str) {
        let key = (String::new(), "namespaces".to_string());
        let Some(n) = self.get_obj(&key, "", ns).cloned() else {
            return;
        };
        if !terminating(&n) || finalizers(&n) > 0 {
            return;
        }
        let has_content = self.objects.iter().any(|((g, p), m)| {
            !(g.is_empty() && p == "namespaces") && m.keys().any(|(o, _)| o == ns)
        });
        if has_content {
            return;
        }
        if let Some(def) = self.registry.get("", "v1", "namespaces").cloned() {
            let mut gone = (*n).clone();
            self.remove(&def, "", ns, &mut gone, Some(n), Propagation::Background);
        }
    }

    /// Deletes an object (honouring finalizers) and collects its dependents.
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        path_ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let ns = if def.namespaced {
            path_ns.unwrap_or("default").to_string()
        } else {
            String::new()
        };
        let key = def.store_key();
        let old = self
            .get_obj(&key, &ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
        if let Some(uid) = &opts.uid {
            if meta_str(&old, "uid") != Some(uid.as_str()) {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&old, "uid").unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            if meta_str(&old, "resourceVersion") != Some(rv.as_str()) {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta_str(&old, "resourceVersion").unwrap_or_default()
                    ),
                ));
            }
        }
        let uid = meta_str(&old, "uid").unwrap_or_default().to_string();
        let details = json!({"name": name, "group": def.group, "kind": def.plural, "uid": uid});
        if opts.propagation == Propagation::Orphan {
            self.collect_dependents(&uid, Propagation::Orphan);
        }
        let is_namespace = def.group.is_empty() && def.plural == "namespaces";
        if is_namespace {
            if terminating(&old) {
                return Ok(Deleted::Pending(Self::render(def, &old)));
            }
            let mut new = (*old).clone();
            meta_mut(&mut new).insert("deletionTimestamp".into(), json!(now()));
            meta_mut(&mut new).insert("deletionGracePeriodSeconds".into(), json!(0));
            new["status"] = json!({"phase": "Terminating"});
            self.commit(
                key.clone(),
                String::new(),
                name.to_string(),
                EventKind::Modified,
                new,
                Some(old),
            );
            let contents: Vec<(StoreKey, String)> = self
                .objects
                .iter()
                .filter(|((g, p), _)| !(g.is_empty() && p == "namespaces"))
                .flat_map(|(k, m)| {
                    m.keys()
                        .filter(|(o, _)| o == name)
                        .map(|(_, n)| (k.clone(), n.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            for (k, n) in contents {
                let Some(obj) = self.get_obj(&k, name, &n).cloned() else {
                    continue;
                };
                let Some(d) = self.def_for_key(&k, &obj) else {
                    continue;
                };
                let _ = self.delete(&d, Some(name), &n, &DeleteOpts::default());
            }
            self.maybe_finish_namespace(name);
            return Ok(match self.get_obj(&key, "", name) {
                Some(o) => Deleted::Pending(Self::render(def, o)),
                None => Deleted::Gone(success_status(200, details)),
            });
        }
        if finalizers(&old) > 0 {
            if terminating(&old) {
                return Ok(Deleted::Pending(Self::render(def, &old)));
            }
            let mut new = (*old).clone();
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(now()));
            m.insert(
                "deletionGracePeriodSeconds".into(),
                json!(opts.grace_seconds.unwrap_or(0).max(0)),
            );
            let stored = self.commit(
                key,
                ns.clone(),
                name.to_string(),
                EventKind::Modified,
                new,
                Some(old),
            );
            self.after_write(def, &ns);
            return Ok(Deleted::Pending(Self::render(def, &stored)));
        }
        let mut gone = (*old).clone();
        self.remove(def, &ns, name, &mut gone, Some(old), opts.propagation);
        Ok(Deleted::Gone(success_status(200, details)))
    }

    // ---- in-process fixtures ----

    /// Creates the object or merges it into the existing one, keeping `status` as given.
    pub fn apply_fixture(&mut self, mut obj: Value) -> Result<Value, ApiError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let def = self
            .registry
            .by_kind(&api_version, &kind)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    Reason::NotFound,
                    format!("no resource for apiVersion {api_version:?} kind {kind:?}"),
                )
            })?;
        let ns = if def.namespaced {
            let ns = meta_str(&obj, "namespace")
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_string();
            meta_mut(&mut obj).insert("namespace".into(), json!(ns));
            Some(ns)
        } else {
            None
        };
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let existing = if name.is_empty() {
            None
        } else {
            self.get_obj(&def.store_key(), ns.as_deref().unwrap_or(""), &name)
                .cloned()
        };
        match existing {
            None => self.create(&def, ns.as_deref(), obj, true),
            Some(old) => {
                let mut merged = (*old).clone();
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                strategic_merge(&mut merged, &obj);
                self.update(&def, ns.as_deref(), &name, merged, Mode::Fixture)
            }
        }
    }

    // ---- subresources ----

    /// `pods/{name}/binding`.
    pub fn bind(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let target = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::invalid("Binding", name, "target.name: Required value"))?;
        let key = def.store_key();
        let pod = self
            .get_obj(&key, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found("", "pods", name))?;
        if let Some(uid) = body.pointer("/metadata/uid").and_then(Value::as_str) {
            if meta_str(&pod, "uid") != Some(uid) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    "the UID in the binding does not match the pod",
                ));
            }
        }
        if let Some(node) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                &format!("pod {name} is already assigned to node \"{node}\""),
            ));
        }
        if terminating(&pod) {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        let mut new = (*pod).clone();
        set_path(&mut new, ".spec.nodeName", json!(target));
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()});
        let conds = new
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut);
        match conds {
            Some(cs) => {
                cs.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                cs.push(cond);
            }
            None => set_path(&mut new, ".status.conditions", json!([cond])),
        }
        self.update(def, Some(ns), name, new, Mode::Fixture)?;
        Ok(success_status(201, json!({"name": name, "kind": "pods"})))
    }

    /// The controller scales (`spec.replicas`) by uid in a namespace, for PDB arithmetic.
    fn controller_scales(&self, ns: &str) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for plural in [
            "replicasets",
            "statefulsets",
            "deployments",
            "replicationcontrollers",
        ] {
            let group = if plural == "replicationcontrollers" {
                ""
            } else {
                "apps"
            };
            for o in self.list_objs(&(group.to_string(), plural.to_string()), Some(ns)) {
                if let Some(uid) = meta_str(&o, "uid") {
                    out.insert(
                        uid.to_string(),
                        o.pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(1),
                    );
                }
            }
        }
        out
    }

    fn pdb_key() -> StoreKey {
        ("policy".to_string(), "poddisruptionbudgets".to_string())
    }

    fn pod_key() -> StoreKey {
        (String::new(), "pods".to_string())
    }

    /// `pods/{name}/eviction`.
    pub fn evict(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let pod = self
            .get_obj(&def.store_key(), ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found("", "pods", name))?;
        let opts = DeleteOpts::from_body(body.get("deleteOptions"));
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .map(str::to_string);
        let (pdb, refusal) = self.decide_eviction(&pod, ns);
        self.evictions.push(Eviction {
            namespace: ns.to_string(),
            pod: name.to_string(),
            node,
            budgets_apply: !pdb_ignored(&pod),
            allowed: refusal.is_none(),
            pdb,
            message: refusal
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
        });
        if let Some(e) = refusal {
            return Err(e);
        }
        self.delete(def, Some(ns), name, &opts)?;
        Ok(success_status(201, json!({"name": name, "kind": "pods"})))
    }

    /// Whether `pod` may be evicted now: the deciding budget (if one selects the pod) and the
    /// refusal (`None`: allowed).
    fn decide_eviction(&self, pod: &Value, ns: &str) -> (Option<String>, Option<ApiError>) {
        let name = meta_str(pod, "name").unwrap_or_default();
        if pdb_ignored(pod) {
            return (None, None);
        }
        let pdbs: Vec<Arc<Value>> = self
            .list_objs(&Self::pdb_key(), Some(ns))
            .into_iter()
            .filter(|p| pdb::pdb_selector(p).is_some_and(|s| s.matches(pod)))
            .collect();
        if pdbs.len() > 1 {
            return (
                None,
                Some(ApiError::new(
                    Reason::InternalError,
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                )),
            );
        }
        let Some(p) = pdbs.first() else {
            return (None, None);
        };
        let pdb_name = meta_str(p, "name").unwrap_or_default().to_string();
        let pods = self.list_objs(&Self::pod_key(), Some(ns));
        let refs: Vec<&Value> = pods.iter().map(|p| p.as_ref()).collect();
        let b = pdb::budget(p, &refs, &self.controller_scales(ns));
        let healthy = pdb::pod_healthy(pod);
        let always = p
            .pointer("/spec/unhealthyPodEvictionPolicy")
            .and_then(Value::as_str)
            == Some("AlwaysAllow");
        let allowed = if healthy {
            b.allowed > 0
        } else {
            always || b.current >= b.desired
        };
        if allowed {
            return (Some(pdb_name), None);
        }
        let cause = format!(
            "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
            b.desired, b.current
        );
        let e = ApiError::new(
            Reason::TooManyRequests,
            format!("Cannot evict pod as it would violate the pod's disruption budget. {cause}"),
        )
        .with_details(json!({"name": name, "kind": "pods",
            "causes": [{"reason": "DisruptionBudget", "message": cause}], "retryAfterSeconds": 0}));
        (Some(pdb_name), Some(e))
    }

    /// Keeps PodDisruptionBudget statuses up to date after pod or PDB writes.
    fn after_write(&mut self, def: &ResourceDef, ns: &str) {
        let relevant = (def.group.is_empty() && matches!(def.plural.as_str(), "pods"))
            || (def.group == "policy" && def.plural == "poddisruptionbudgets")
            || (def.group == "apps"
                && matches!(
                    def.plural.as_str(),
                    "replicasets" | "statefulsets" | "deployments"
                ));
        if !relevant || ns.is_empty() {
            return;
        }
        let pdbs = self.list_objs(&Self::pdb_key(), Some(ns));
        if pdbs.is_empty() {
            return;
        }
        let pods = self.list_objs(&Self::pod_key(), Some(ns));
        let refs: Vec<&Value> = pods.iter().map(|p| p.as_ref()).collect();
        let scales = self.controller_scales(ns);
        for p in pdbs {
            if terminating(&p) {
                continue;
            }
            let b = pdb::budget(&p, &refs, &scales);
            let cond_status = if b.allowed > 0 { "True" } else { "False" };
            let reason = if b.allowed > 0 {
                "SufficientPods"
            } else {
                "InsufficientPods"
            };
            let old_cond = p.pointer("/status/conditions/0").cloned();
            let ltt = old_cond
                .filter(|c| c.get("status").and_then(Value::as_str) == Some(cond_status))
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now()));
            let status = json!({
                "observedGeneration": p.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
                "disruptionsAllowed": b.allowed,
                "currentHealthy": b.current,
                "desiredHealthy": b.desired,
                "expectedPods": b.expected,
                "conditions": [{"type": "DisruptionAllowed", "status": cond_status, "reason": reason,
                                "message": "", "observedGeneration": p.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
                                "lastTransitionTime": ltt}],
            });
            if p.get("status") == Some(&status) {
                continue;
            }
            let mut new = (*p).clone();
            new["status"] = status;
            let name = meta_str(&p, "name").unwrap_or_default().to_string();
            self.commit(
                Self::pdb_key(),
                ns.to_string(),
                name,
                EventKind::Modified,
                new,
                Some(p),
            );
        }
    }
}
