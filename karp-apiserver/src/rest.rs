//! Request routing and the REST handlers.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::discovery;
use crate::error::{success_status, ApiError, Reason};
use crate::patch::{json_patch, merge_patch, strategic_merge};
use crate::registry::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{get_path, set_path, DeleteOpts, Deleted, Mode, State};
use crate::table::{table, Include};
use crate::watch::{self, WatchFilter, WatchStart};
use crate::{Inner, ResponseBody};

/// A request with its body read.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string (form encoding, as Go's url.ParseQuery).
pub(crate) fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(k))
            .or_insert_with(|| percent_decode(v));
    }
    out
}

fn full(code: u16, content_type: &str, body: Vec<u8>) -> Response<ResponseBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn json_response(code: u16, v: &Value) -> Response<ResponseBody> {
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub(crate) fn error_response(e: &ApiError) -> Response<ResponseBody> {
    json_response(e.code(), &e.to_status())
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

fn parse_json_or_yaml(body: &Bytes) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    serde_yaml::from_slice::<Value>(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML request body: {e}")))
}

fn body_value(req: &Req) -> Result<Value, ApiError> {
    let ctype = content_type(req);
    if ctype == "application/vnd.kubernetes.protobuf" {
        return crate::protobuf::decode(&req.body).map_err(|e| {
            ApiError::bad_request(format!("error decoding protobuf request body: {e}"))
        });
    }
    if ctype.contains("protobuf") || ctype.contains("cbor") {
        return Err(unsupported_media(&ctype));
    }
    let yaml = ctype.contains("yaml");
    if yaml {
        parse_json_or_yaml(&req.body)
    } else {
        parse_json(&req.body)
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|a| a.contains("as=Table"))
}

/// The state a mutating request works on: the real one, or a scratch copy for `dryRun=All`.
enum Writable<'a> {
    Real(MutexGuard<'a, State>),
    Scratch(Box<State>),
}

impl Deref for Writable<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        match self {
            Writable::Real(g) => g,
            Writable::Scratch(s) => s,
        }
    }
}

impl DerefMut for Writable<'_> {
    fn deref_mut(&mut self) -> &mut State {
        match self {
            Writable::Real(g) => g,
            Writable::Scratch(s) => s,
        }
    }
}

fn writable<'a>(inner: &'a Inner, req: &Req) -> Writable<'a> {
    let st = inner.state();
    // dryRun comes as a query parameter, or inside a DeleteOptions body.
    let in_body = || {
        req.method == Method::DELETE
            && serde_json::from_slice::<Value>(&req.body).is_ok_and(|b| {
                b.get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|v| v == "All"))
            })
    };
    if req.query.get("dryRun").is_some_and(|v| v == "All") || in_body() {
        Writable::Scratch(Box::new(st.scratch()))
    } else {
        Writable::Real(st)
    }
}

/// A parsed resource path.
struct Target {
    def: ResourceDef,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

/// Serves one request.
pub(crate) fn handle(inner: &Arc<Inner>, req: Req) -> Response<ResponseBody> {
    match route(inner, &req) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn route(inner: &Arc<Inner>, req: &Req) -> Result<Response<ResponseBody>, ApiError> {
    let segs: Vec<String> = req
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get_only = |v: Value| -> Result<Response<ResponseBody>, ApiError> {
        if req.method != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        Ok(json_response(200, &v))
    };
    match segs.as_slice() {
        ["version"] => get_only(discovery::version()),
        ["healthz"] | ["readyz"] | ["livez"] => Ok(full(200, "text/plain", b"ok".to_vec())),
        ["api"] => get_only(discovery::api_versions()),
        ["apis"] => get_only(discovery::group_list(&inner.state().registry)),
        ["apis", g] => {
            let v =
                discovery::group(&inner.state().registry, g).ok_or_else(ApiError::no_resource)?;
            get_only(v)
        }
        ["api", "v1"] => {
            let v = discovery::resource_list(&inner.state().registry, "", "v1")
                .ok_or_else(ApiError::no_resource)?;
            get_only(v)
        }
        ["apis", g, v] => {
            let v = discovery::resource_list(&inner.state().registry, g, v)
                .ok_or_else(ApiError::no_resource)?;
            get_only(v)
        }
        ["openapi", "v3"] => get_only(discovery::openapi_v3_root(&inner.state().registry)),
        ["openapi", "v3", "api", v] => {
            let doc = discovery::openapi_v3_gv(&inner.state().registry, "", v)
                .ok_or_else(ApiError::no_resource)?;
            get_only(doc)
        }
        ["openapi", "v3", "apis", g, v] => {
            let doc = discovery::openapi_v3_gv(&inner.state().registry, g, v)
                .ok_or_else(ApiError::no_resource)?;
            get_only(doc)
        }
        ["api", "v1", rest @ ..] => resource(inner, req, "", "v1", rest),
        ["apis", g, v, rest @ ..] => resource(inner, req, g, v, rest),
        _ => Err(ApiError::no_resource()),
    }
}

fn resource(
    inner: &Arc<Inner>,
    req: &Req,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response<ResponseBody>, ApiError> {
    let (legacy_watch, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let (namespace, plural, name, sub) = if rest.len() >= 3
        && rest[0] == "namespaces"
        && !matches!(rest[2], "status" | "finalize")
    {
        if rest.len() > 5 {
            return Err(ApiError::no_resource());
        }
        (Some(rest[1].to_string()), rest[2], rest.get(3), rest.get(4))
    } else {
        if rest.len() > 3 || rest.is_empty() {
            return Err(ApiError::no_resource());
        }
        (None, rest[0], rest.get(1), rest.get(2))
    };
    let def = inner
        .state()
        .registry
        .get(group, version, plural)
        .cloned()
        .ok_or_else(ApiError::no_resource)?;
    if namespace.is_some() && !def.namespaced {
        return Err(ApiError::no_resource());
    }
    if def.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::no_resource());
    }
    if let Some(s) = sub {
        let ok = (*s == "status" && def.status)
            || (*s == "scale" && def.scale.is_some())
            || def.extra_subresources.iter().any(|(n, _)| n == s);
        if !ok {
            return Err(ApiError::no_resource());
        }
    }
    let t = Target {
        def,
        namespace,
        name: name.map(|s| s.to_string()),
        sub: sub.map(|s| s.to_string()),
    };
    let watch = legacy_watch
        || matches!(
            req.query.get("watch").map(String::as_str),
            Some("true" | "1")
        );
    match (&req.method, t.name.as_deref(), t.sub.as_deref()) {
        (&Method::GET, _, None) if watch => watch_handler(inner, req, &t),
        (&Method::GET, None, None) => list(inner, req, &t),
        (&Method::GET, Some(n), None | Some("status")) => get(inner, req, &t, n),
        (&Method::GET, Some(n), Some("scale")) => {
            let st = inner.state();
            let obj = st
                .get_obj(&t.def.store_key(), t.namespace.as_deref().unwrap_or(""), n)
                .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, n))?;
            Ok(json_response(200, &scale_of(&t.def, obj)))
        }
        (&Method::POST, None, None) => {
            let body = body_value(req)?;
            let obj = writable(inner, req).create(&t.def, t.namespace.as_deref(), body, false)?;
            Ok(json_response(201, &obj))
        }
        (&Method::POST, Some(n), Some("binding")) => {
            let body = body_value(req)?;
            let ns = t.namespace.as_deref().unwrap_or("default");
            Ok(json_response(
                201,
                &writable(inner, req).bind(&t.def, ns, n, &body)?,
            ))
        }
        (&Method::POST, Some(n), Some("eviction")) => {
            let body = body_value(req)?;
            if let Some(k) = body.get("kind").and_then(Value::as_str) {
                if k != "Eviction" {
                    return Err(ApiError::bad_request(format!(
                        "expected an Eviction, got {k}"
                    )));
                }
            }
            let ns = t.namespace.as_deref().unwrap_or("default");
            Ok(json_response(
                201,
                &writable(inner, req).evict(&t.def, ns, n, &body)?,
            ))
        }
        (&Method::PUT, Some(n), None | Some("status")) => {
            let body = body_value(req)?;
            let mode = if t.sub.is_some() {
                Mode::Status
            } else {
                Mode::Main
            };
            let obj = writable(inner, req).update(&t.def, t.namespace.as_deref(), n, body, mode)?;
            Ok(json_response(200, &obj))
        }
        (&Method::PUT, Some(n), Some("scale")) => {
            let body = body_value(req)?;
            Ok(json_response(
                200,
                &update_scale(&mut writable(inner, req), &t, n, body)?,
            ))
        }
        (&Method::PATCH, Some(n), None | Some("status")) => patch(inner, req, &t, n),
        (&Method::PATCH, Some(n), Some("scale")) => {
            let mut st = writable(inner, req);
            let obj = st
                .get_obj(&t.def.store_key(), t.namespace.as_deref().unwrap_or(""), n)
                .cloned()
                .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, n))?;
            let mut scale = scale_of(&t.def, &obj);
            apply_patch(&mut scale, req)?;
            Ok(json_response(200, &update_scale(&mut st, &t, n, scale)?))
        }
        (&Method::DELETE, Some(n), None) => {
            let opts = delete_opts(req)?;
            match writable(inner, req).delete(&t.def, t.namespace.as_deref(), n, &opts)? {
                Deleted::Pending(obj) => Ok(json_response(202, &obj)),
                Deleted::Gone(status) => Ok(json_response(200, &status)),
            }
        }
        (&Method::DELETE, None, None) => delete_collection(inner, req, &t),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn selectors(req: &Req) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(
        req.query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or(""),
    )?;
    let fields = FieldSelector::parse(
        req.query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or(""),
    )?;
    Ok((labels, fields))
}

fn list(inner: &Arc<Inner>, req: &Req, t: &Target) -> Result<Response<ResponseBody>, ApiError> {
    let (labels, fields) = selectors(req)?;
    let (objs, rv) = {
        let st = inner.state();
        (
            st.list_objs(&t.def.store_key(), t.namespace.as_deref()),
            st.resource_version(),
        )
    };
    // Selectors see the object as this version serves it; objects already in that shape are
    // serialized in place, not copied.
    let items: Vec<std::borrow::Cow<'_, Value>> = objs
        .iter()
        .map(|o| crate::events::view(&t.def, o))
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect();
    if wants_table(&req.headers) {
        let include = Include::parse(req.query.get("includeObject").map(String::as_str));
        return Ok(json_response(
            200,
            &table(&t.def, &items, Some(rv), include, true),
        ));
    }
    #[derive(serde::Serialize)]
    struct ListOut<'a> {
        kind: String,
        #[serde(rename = "apiVersion")]
        api_version: String,
        metadata: Value,
        items: &'a [std::borrow::Cow<'a, Value>],
    }
    let out = ListOut {
        kind: format!("{}List", t.def.kind),
        api_version: t.def.api_version(),
        metadata: json!({"resourceVersion": rv.to_string()}),
        items: &items,
    };
    let body = serde_json::to_vec(&out).unwrap_or_default();
    Ok(full(200, "application/json", body))
}

fn get(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
    name: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let obj = {
        let st = inner.state();
        st.get_obj(
            &t.def.store_key(),
            t.namespace.as_deref().unwrap_or(""),
            name,
        )
        .map(|o| State::render(&t.def, o))
        .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, name))?
    };
    if wants_table(&req.headers) {
        let include = Include::parse(req.query.get("includeObject").map(String::as_str));
        return Ok(json_response(
            200,
            &table(&t.def, std::slice::from_ref(&obj), None, include, true),
        ));
    }
    Ok(json_response(200, &obj))
}

fn watch_handler(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
) -> Result<Response<ResponseBody>, ApiError> {
    let (labels, mut fields) = selectors(req)?;
    if let Some(n) = &t.name {
        let escaped = n
            .replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace('=', "\\=");
        let base = req.query.get("fieldSelector").cloned().unwrap_or_default();
        let combined = if base.is_empty() {
            format!("metadata.name={escaped}")
        } else {
            format!("{base},metadata.name={escaped}")
        };
        fields = FieldSelector::parse(&combined)?;
    }
    let send_initial = req.query.get("sendInitialEvents").map(String::as_str) == Some("true");
    let since = match req.query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(_) if send_initial => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let table_mode = wants_table(&req.headers)
        .then(|| Include::parse(req.query.get("includeObject").map(String::as_str)));
    let filter = WatchFilter {
        def: t.def.clone(),
        labels,
        fields,
        bookmarks: req.query.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
        table: table_mode,
    };
    let registered = {
        let mut st = writable(inner, req);
        let rv = st.resource_version();
        st.watch(Some(t.def.store_key()), t.namespace.clone(), since)
            .map(|w| (w, rv))
    };
    let ((initial, replay, rx, tx), rv) = match registered {
        Ok(x) => x,
        Err(e) => {
            return Ok(full(
                200,
                "application/json",
                watch::error_line(&e.to_status()).to_vec(),
            ))
        }
    };
    let start = WatchStart {
        initial,
        replay,
        rx,
        tx,
        initial_end: send_initial.then_some(rv),
        timeout,
    };
    let body = watch::body(inner.clone(), filter, start, inner.config.bookmark_interval);
    let mut r = Response::new(body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn unsupported_media(got: &str) -> ApiError {
    ApiError::new(
        Reason::UnsupportedMediaType,
        format!("the body of the request was in an unknown format ({got:?}) - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"),
    )
}

fn content_type(req: &Req) -> String {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Applies the request's patch (by content type) to `doc`; server-side apply merges like a
/// strategic merge patch.
fn apply_patch(doc: &mut Value, req: &Req) -> Result<(), ApiError> {
    match content_type(req).as_str() {
        "application/merge-patch+json" => merge_patch(doc, &parse_json(&req.body)?),
        "application/json-patch+json" => json_patch(doc, &parse_json(&req.body)?)?,
        "application/strategic-merge-patch+json" => strategic_merge(doc, &parse_json(&req.body)?),
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            strategic_merge(doc, &parse_json_or_yaml(&req.body)?)
        }
        other => return Err(unsupported_media(other)),
    }
    if !doc.is_object() {
        return Err(ApiError::bad_request(
            "the patch turned the object into a non-object",
        ));
    }
    Ok(())
}

fn patch(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
    name: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let mode = if t.sub.is_some() {
        Mode::Status
    } else {
        Mode::Main
    };
    let mut st = writable(inner, req);
    let ns = if t.def.namespaced {
        t.namespace.as_deref().unwrap_or("default")
    } else {
        ""
    };
    let existing = st.get_obj(&t.def.store_key(), ns, name).cloned();
    let is_apply = content_type(req).starts_with("application/apply-patch");
    match existing {
        None if is_apply && mode == Mode::Main => {
            let mut body = parse_json_or_yaml(&req.body)?;
            if !body.is_object() {
                return Err(ApiError::bad_request("an apply patch must be an object"));
            }
            set_path(&mut body, ".metadata.name", json!(name));
            let obj = st.create(
                &t.def,
                t.namespace.as_deref(),
                crate::patch::strip_directives(&body),
                false,
            )?;
            Ok(json_response(201, &obj))
        }
        None => Err(ApiError::not_found(&t.def.group, &t.def.plural, name)),
        Some(old) => {
            // Patches apply to the object as this version serves it.
            let mut doc = State::render(&t.def, &old);
            apply_patch(&mut doc, req)?;
            let obj = st.update(&t.def, t.namespace.as_deref(), name, doc, mode)?;
            Ok(json_response(200, &obj))
        }
    }
}

fn delete_opts(req: &Req) -> Result<DeleteOpts, ApiError> {
    let body = if req.body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json(&req.body)?)
    };
    let mut opts = DeleteOpts::from_body(body.as_ref());
    if let Some(p) = req.query.get("propagationPolicy") {
        opts.set_policy(p);
    }
    if let Some(g) = req
        .query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
    {
        opts.grace_seconds = Some(g);
    }
    Ok(opts)
}

fn delete_collection(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
) -> Result<Response<ResponseBody>, ApiError> {
    let (labels, fields) = selectors(req)?;
    let opts = delete_opts(req)?;
    let mut st = writable(inner, req);
    let victims: Vec<(String, String)> = st
        .list_objs(&t.def.store_key(), t.namespace.as_deref())
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .map(|o| {
            (
                o.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                o.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    for (ns, name) in victims {
        let ns = Some(ns).filter(|n| !n.is_empty());
        match st.delete(&t.def, ns.as_deref(), &name, &opts) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &success_status(200, json!({"group": t.def.group, "kind": t.def.plural})),
    ))
}

/// The autoscaling/v1 Scale of a scalable object.
fn scale_of(def: &ResourceDef, obj: &Value) -> Value {
    let Some(paths) = &def.scale else {
        return json!({});
    };
    let selector = paths
        .label_selector
        .as_deref()
        .and_then(|p| get_path(obj, p))
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => LabelSelector::from_object(other)
                .map(|l| l.to_query())
                .unwrap_or_default(),
        });
    let mut meta = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj.pointer(&format!("/metadata/{f}")) {
            meta[f] = v.clone();
        }
    }
    let mut status = json!({"replicas": get_path(obj, &paths.status_replicas).and_then(Value::as_i64).unwrap_or(0)});
    if let Some(s) = selector {
        status["selector"] = json!(s);
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
           "spec": {"replicas": get_path(obj, &paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
           "status": status})
}

fn update_scale(st: &mut State, t: &Target, name: &str, scale: Value) -> Result<Value, ApiError> {
    let Some(paths) = t.def.scale.clone() else {
        return Err(ApiError::no_resource());
    };
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "Scale",
                name,
                "spec.replicas: Invalid value: must be a non-negative integer",
            )
        })?;
    let ns = if t.def.namespaced {
        t.namespace.as_deref().unwrap_or("default")
    } else {
        ""
    };
    let obj = st
        .get_obj(&t.def.store_key(), ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, name))?;
    let mut new = (*obj).clone();
    set_path(&mut new, &paths.spec_replicas, json!(replicas));
    match scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(rv) => set_path(&mut new, ".metadata.resourceVersion", json!(rv)),
        None => {
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
        }
    }
    let updated = st.update(&t.def, t.namespace.as_deref(), name, new, Mode::Main)?;
    Ok(scale_of(&t.def, &updated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_like_go() {
        let q = parse_query(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&x=%zz&bare",
        ));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "%zz");
        assert_eq!(q["bare"], "");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%4"), "a%4");
    }
}
