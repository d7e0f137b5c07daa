//! An in-process Kubernetes API server that speaks the real HTTP API.
//!
//! karp has no real cluster to test against, so its end-to-end tests and `karp demo` run against
//! this server: generic JSON storage with resourceVersions, list and watch (bookmarks, 410 Gone),
//! create / update with optimistic concurrency, merge / JSON / strategic-merge / apply patches,
//! finalizers and deletionTimestamp, owner-reference garbage collection, status and scale
//! subresources, `pods/binding`, `pods/eviction` honouring PodDisruptionBudgets, and
//! CustomResourceDefinitions that register their resources when created and whose
//! `x-kubernetes-validations` CEL rules are evaluated on every write, refusing invalid objects with
//! kube-apiserver's 422 and message (OpenAPI structural checks are not made).
//!
//! Two ways in:
//! - [`ApiServer`] is a `tower::Service`, so `kube::Client::new(server.clone(), "default")`
//!   talks to it with no network (kube-runtime watchers, reflectors and controllers run unchanged);
//! - [`ApiServer::serve`] listens on a TCP socket (plain HTTP/1.1, no auth) and
//!   [`write_kubeconfig`] writes a kubeconfig, so `kubectl` can look at it.
//!
//! In-process helpers ([`ApiServer::apply_yaml`], [`ApiServer::get`], [`ApiServer::list`],
//! [`ApiServer::subscribe`], …) load fixtures and observe changes without HTTP.
//!
//! See the crate README for what is and is not implemented.

mod cel;
mod discovery;
mod error;
mod events;
pub mod guard;
mod patch;
mod pdb;
mod protobuf;
mod qos;
mod registry;
mod rest;
mod selector;
mod store;
mod table;
mod time;
pub mod tls;
mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;

pub use error::{ApiError, Reason};
pub use store::Eviction;

use store::{DeleteOpts, EventKind, Msg, State};

/// The body of every response the server produces (a buffered document or a watch stream).
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

pub use guard::ServeOptions;

/// A refused request's answer: a Kubernetes `Status`.
fn refused(r: &guard::Refusal) -> http::Response<ResponseBody> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": r.message, "reason": r.reason, "code": r.status.as_u16()
    });
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut resp = http::Response::new(ResponseBody::new(
        http_body_util::Full::new(bytes).map_err(|never| match never {}),
    ));
    *resp.status_mut() = r.status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Default number of events kept for watches that resume from a resourceVersion.
pub const DEFAULT_HISTORY: usize = 10_000;

/// Default interval between BOOKMARK events on watches that allow them. Short enough that a
/// restarted watcher rarely replays much, long enough to be noise-free in tests.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);

/// Server settings, built by value.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    history: usize,
    bookmark_interval: Duration,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        ApiServerConfig {
            history: DEFAULT_HISTORY,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
        }
    }
}

impl ApiServerConfig {
    /// How many events to keep for watches resuming from a resourceVersion (at least 1). A watch
    /// from a resourceVersion older than the kept history gets an ERROR event with 410 Expired.
    #[must_use]
    pub fn history(mut self, events: usize) -> Self {
        self.history = events.max(1);
        self
    }

    /// Interval between BOOKMARK events (`allowWatchBookmarks=true`); zero disables them.
    #[must_use]
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every;
        self
    }
}

pub(crate) struct Inner {
    state: Mutex<State>,
    config: ApiServerConfig,
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A resource: API group (`""` for core), version and plural name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gvr {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Plural resource name, e.g. `pods`.
    pub resource: String,
}

impl Gvr {
    /// A resource of any group.
    pub fn new(
        group: impl Into<String>,
        version: impl Into<String>,
        resource: impl Into<String>,
    ) -> Self {
        Gvr {
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
        }
    }

    /// A resource of the core `v1` group (`pods`, `nodes`, …).
    pub fn core(resource: impl Into<String>) -> Self {
        Gvr::new("", "v1", resource)
    }
}

/// What happened to an object, as seen by a [`Subscription`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The object was created.
    Added,
    /// The object was changed (including getting a deletionTimestamp).
    Modified,
    /// The object is gone.
    Deleted,
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The resource of the object (version as the object was written).
    pub gvr: Gvr,
    /// The object after the change (its last state for deletions).
    pub object: Value,
}

/// A stream of every change in the server, in resourceVersion order, from [`ApiServer::subscribe`].
///
/// # Caveats
/// The buffer is unbounded: drop the subscription when no longer reading it.
pub struct Subscription {
    rx: UnboundedReceiver<Msg>,
}

impl Subscription {
    fn convert(msg: Msg) -> Option<Change> {
        let Msg::Event(ev) = msg else { return None };
        let api_version = ev
            .object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let version = registry::split_api_version(api_version).1.to_string();
        Some(Change {
            kind: match ev.kind {
                EventKind::Added => ChangeKind::Added,
                EventKind::Modified => ChangeKind::Modified,
                EventKind::Deleted => ChangeKind::Deleted,
            },
            gvr: Gvr::new(ev.key.0.clone(), version, ev.key.1.clone()),
            object: (*ev.object).clone(),
        })
    }

    /// Waits for the next change; `None` once the server is gone.
    pub async fn recv(&mut self) -> Option<Change> {
        loop {
            let msg = self.rx.recv().await?;
            if let Some(c) = Self::convert(msg) {
                return Some(c);
            }
        }
    }

    /// The next change if one is already queued.
    pub fn try_recv(&mut self) -> Option<Change> {
        loop {
            let msg = self.rx.try_recv().ok()?;
            if let Some(c) = Self::convert(msg) {
                return Some(c);
            }
        }
    }
}

/// The in-process Kubernetes API server. Cheap to clone (an `Arc` inside); every clone is the
/// same server.
///
/// # Example
///
/// A `kube::Client` round trip with no network:
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube::api::{Api, PostParams};
///
/// let server = karp_apiserver::ApiServer::new();
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// rt.block_on(async {
///     let client = kube::Client::new(server.clone(), "default");
///     let cms: Api<ConfigMap> = Api::default_namespaced(client);
///     let mut cm = ConfigMap::default();
///     cm.metadata.name = Some("settings".into());
///     cm.data = Some([("mode".to_string(), "fast".to_string())].into());
///     cms.create(&PostParams::default(), &cm).await.unwrap();
///     let got = cms.get("settings").await.unwrap();
///     assert_eq!(got.data.unwrap()["mode"], "fast");
/// });
/// // The same object, read in-process.
/// let cm = server.get(&karp_apiserver::Gvr::core("configmaps"), Some("default"), "settings");
/// assert_eq!(cm.unwrap()["data"]["mode"], "fast");
/// ```
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// A server with the default settings and the namespaces `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease`.
    pub fn new() -> Self {
        Self::with_config(ApiServerConfig::default())
    }

    /// A server with the given settings.
    pub fn with_config(config: ApiServerConfig) -> Self {
        ApiServer {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(config.history)),
                config,
            }),
        }
    }

    /// A server that keeps only the last `events` events for resuming watches (tests use a tiny
    /// history to force 410 Gone).
    pub fn with_history(events: usize) -> Self {
        Self::with_config(ApiServerConfig::default().history(events))
    }

    /// Serves the HTTP API on `listener` (plain HTTP/1.1) with [`ServeOptions::default`]: no
    /// token, but the host, content-type and body-size checks of [`guard::admit`]. Runs until the
    /// future is dropped; spawns one task per connection, so it must run inside a tokio runtime.
    pub fn serve(&self, listener: TcpListener) -> impl Future<Output = ()> + Send + 'static {
        self.serve_with(listener, ServeOptions::default())
    }

    /// Serves the HTTP API on `listener`, admitting only what [`guard::admit`] admits under
    /// `options` (a refused request gets a Kubernetes `Status` with 401, 403, 413 or 415).
    pub fn serve_with(
        &self,
        listener: TcpListener,
        options: ServeOptions,
    ) -> impl Future<Output = ()> + Send + 'static {
        let server = self.clone();
        let listen_host = listener
            .local_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let options = std::sync::Arc::new(options);
        async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let server = server.clone();
                let options = std::sync::Arc::clone(&options);
                let listen_host = listen_host.clone();
                let tls = options.tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let mut s = server.clone();
                            let admitted =
                                guard::admit(req.method(), req.headers(), &listen_host, &options);
                            let limit = options.max_body_bytes;
                            async move {
                                if let Err(refusal) = admitted {
                                    return Ok::<_, Infallible>(refused(&refusal));
                                }
                                let req = req.map(|b| http_body_util::Limited::new(b, limit));
                                tower::Service::call(&mut s, req).await
                            }
                        },
                    );
                    let served = match tls {
                        Some(config) => {
                            match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                                Ok(tls) => {
                                    hyper::server::conn::http1::Builder::new()
                                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                                        .await
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    return;
                                }
                            }
                        }
                        None => {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await
                        }
                    };
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }

    /// Creates or updates every object of a multi-document YAML (or JSON) text, in order, like
    /// `kubectl apply` but keeping `status` as written (fixtures). `List` documents are expanded.
    /// Namespaces that do not exist are created. CustomResourceDefinitions register their
    /// resources, so later documents may use them.
    ///
    /// # Errors
    /// The first document that does not parse or that the server rejects; earlier documents stay
    /// applied.
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        for (i, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
            let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| {
                ApiError::new(Reason::BadRequest, format!("document {}: {e}", i + 1))
            })?;
            if v.is_null() {
                continue;
            }
            let items = match v.get("items").and_then(Value::as_array) {
                Some(items)
                    if v.get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.ends_with("List")) =>
                {
                    items.clone()
                }
                _ => vec![v],
            };
            for item in items {
                out.push(self.apply(item)?);
            }
        }
        Ok(out)
    }

    /// Creates the object, or merges it into the existing one (strategic merge), keeping `status`
    /// as given. The object needs `apiVersion`, `kind` and `metadata.name` (or `generateName`).
    ///
    /// # Errors
    /// Unknown kinds (404), invalid objects (422), bad input (400).
    pub fn apply(&self, object: Value) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::new(
                Reason::BadRequest,
                "an object must be a JSON object",
            ));
        }
        self.inner.state().apply_fixture(object)
    }

    /// The object, if it exists (`namespace` is ignored for cluster-scoped resources).
    pub fn get(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Option<Value> {
        let st = self.inner.state();
        let def = st.registry.get(&gvr.group, &gvr.version, &gvr.resource)?;
        let ns = if def.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        st.get_obj(&def.store_key(), ns, name)
            .map(|o| State::render(def, o))
    }

    /// Every object of a resource, in (namespace, name) order; `namespace` None = all namespaces.
    pub fn list(&self, gvr: &Gvr, namespace: Option<&str>) -> Vec<Value> {
        let st = self.inner.state();
        let Some(def) = st.registry.get(&gvr.group, &gvr.version, &gvr.resource) else {
            return Vec::new();
        };
        let ns = if def.namespaced { namespace } else { None };
        st.list_objs(&def.store_key(), ns)
            .iter()
            .map(|o| State::render(def, o))
            .collect()
    }

    /// Calls `f` on every stored object of a resource in place (no copies), in (namespace,
    /// name) order; `namespace` None = all namespaces. For tallies over tens of thousands of
    /// objects in one pass.
    pub fn for_each(&self, gvr: &Gvr, namespace: Option<&str>, mut f: impl FnMut(&Value)) {
        let st = self.inner.state();
        let Some(def) = st.registry.get(&gvr.group, &gvr.version, &gvr.resource) else {
            return;
        };
        let ns = if def.namespaced { namespace } else { None };
        for o in st.list_objs(&def.store_key(), ns) {
            f(&o);
        }
    }

    /// How many objects of a resource satisfy `pred` (called on each stored object in place, no
    /// copies: cheap enough for a status line over tens of thousands of pods).
    pub fn count(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        pred: impl Fn(&Value) -> bool,
    ) -> usize {
        let mut n = 0;
        self.for_each(gvr, namespace, |o| n += usize::from(pred(o)));
        n
    }

    /// Deletes an object as a DELETE request would (finalizers honoured, dependents collected).
    ///
    /// # Errors
    /// 404 when the resource or the object does not exist.
    pub fn delete(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Result<(), ApiError> {
        let mut st = self.inner.state();
        let def = st
            .registry
            .get(&gvr.group, &gvr.version, &gvr.resource)
            .cloned()
            .ok_or_else(ApiError::no_resource)?;
        st.delete(&def, namespace, name, &DeleteOpts::default())
            .map(|_| ())
    }

    /// Subscribes to every change from now on.
    pub fn subscribe(&self) -> Subscription {
        let mut st = self.inner.state();
        let now = st.resource_version();
        let rx = match st.watch(None, None, Some(now)) {
            Ok((_, _, rx, _)) => rx,
            // Watching from the current version never expires.
            Err(_) => tokio::sync::mpsc::unbounded_channel().1,
        };
        Subscription { rx }
    }

    /// Every eviction the server answered (allowed or refused, with the deciding
    /// PodDisruptionBudget), in order: tests count them to prove no budget was violated.
    pub fn evictions(&self) -> Vec<Eviction> {
        self.inner.state().evictions.clone()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> String {
        self.inner.state().resource_version().to_string()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for ApiServer
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let span = tracing::debug_span!(
                "request",
                method = %parts.method,
                path = %parts.uri.path(),
                status = tracing::field::Empty
            );
            let response = match body.collect().await {
                Ok(collected) => {
                    let req = rest::Req {
                        method: parts.method,
                        path: parts.uri.path().to_string(),
                        query: rest::parse_query(parts.uri.query()),
                        headers: parts.headers,
                        body: collected.to_bytes(),
                    };
                    span.in_scope(|| rest::handle(&inner, req))
                }
                Err(_) => rest::error_response(&ApiError::new(
                    Reason::BadRequest,
                    "error reading the request body",
                )),
            };
            span.record("status", response.status().as_u16());
            span.in_scope(|| tracing::debug!("request served"));
            Ok(response)
        })
    }
}

/// Writes a kubeconfig for `url` (e.g. `http://127.0.0.1:PORT`): cluster, user and context
/// named `karp`, namespace `default`.
///
/// # Errors
/// Writing the file failed.
pub fn write_kubeconfig(path: &Path, url: &str) -> std::io::Result<()> {
    write_kubeconfig_with_token(path, url, None)
}

/// Writes a kubeconfig for `url` whose user presents `token` as a bearer token (when given).
/// The file is created readable by its owner only (0600): it holds a credential.
///
/// # Errors
/// The file cannot be written.
pub fn write_kubeconfig_with_token(
    path: &Path,
    url: &str,
    token: Option<&str>,
) -> std::io::Result<()> {
    write_kubeconfig_secure(path, url, token, None)
}

/// Writes a kubeconfig for `url` whose user presents `token` (when given) and that trusts
/// `ca_pem` as the server's certificate authority (when given; `url` is then `https://`).
/// The file is created readable by its owner only (0600): it holds a credential.
///
/// # Errors
/// The file cannot be written.
pub fn write_kubeconfig_secure(
    path: &Path,
    url: &str,
    token: Option<&str>,
    ca_pem: Option<&str>,
) -> std::io::Result<()> {
    use base64::Engine as _;
    use std::io::Write as _;
    let user = token.map_or_else(|| "{}".to_string(), |t| format!("\n    token: {t}"));
    let ca = ca_pem.map_or_else(String::new, |pem| {
        format!(
            "\n    certificate-authority-data: {}",
            base64::engine::general_purpose::STANDARD.encode(pem)
        )
    });
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: karp\n  cluster:\n    server: {url}{ca}\n\
         contexts:\n- name: karp\n  context:\n    cluster: karp\n    user: karp\n    namespace: default\n\
         current-context: karp\nusers:\n- name: karp\n  user: {user}\npreferences: {{}}\n"
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // An existing file keeps its mode on open: tighten it.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())
}
