//! Faults on the operator's connection to the embedded API server, for soak tests: a tower
//! layer around [`ApiServer`] that answers some requests itself with a 500 (any non-watch
//! request) or a 409 Conflict (writes), and cuts some watches short (their `timeoutSeconds`
//! lowered to 1–4 s, so the stream ends and the reflector must resume), at seeded rates. The
//! simulators keep a clean connection; only karp's controllers see the faults.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use karp_apiserver::{ApiServer, ResponseBody};

/// Fault rates per request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiFaults {
    /// Non-watch requests answered 500 InternalError.
    pub server_errors: f64,
    /// Writes (POST, PUT, PATCH, DELETE) answered 409 Conflict.
    pub conflicts: f64,
    /// Watches cut short.
    pub dropped_watches: f64,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for ApiFaults {
    fn default() -> Self {
        ApiFaults {
            server_errors: 0.02,
            conflicts: 0.03,
            dropped_watches: 0.5,
            seed: 7,
        }
    }
}

/// Faults injected so far, and the switch.
#[derive(Debug, Default)]
pub struct ApiFaultState {
    /// 500 answers.
    pub server_errors: AtomicU64,
    /// 409 answers.
    pub conflicts: AtomicU64,
    /// Watches cut short.
    pub dropped_watches: AtomicU64,
    /// Requests passed through.
    pub passed: AtomicU64,
    disabled: AtomicBool,
    rng: Mutex<u64>,
}

impl ApiFaultState {
    /// Turns injection on or off.
    pub fn set_enabled(&self, on: bool) {
        self.disabled.store(!on, Ordering::SeqCst);
    }

    fn draw(&self, p: f64) -> bool {
        if p <= 0.0 || self.disabled.load(Ordering::SeqCst) {
            return false;
        }
        let mut s = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        #[allow(clippy::cast_precision_loss)]
        let u = (*s >> 11) as f64 / (1u64 << 53) as f64;
        u < p
    }

    /// `kind=count` pairs for a report.
    #[must_use]
    pub fn summary(&self) -> String {
        format!(
            "api_500={} api_409={} watches_dropped={} api_passed={}",
            self.server_errors.load(Ordering::SeqCst),
            self.conflicts.load(Ordering::SeqCst),
            self.dropped_watches.load(Ordering::SeqCst),
            self.passed.load(Ordering::SeqCst)
        )
    }
}

/// [`ApiServer`] behind the fault layer.
#[derive(Clone)]
pub struct FaultyApi {
    inner: ApiServer,
    faults: ApiFaults,
    state: Arc<ApiFaultState>,
}

impl FaultyApi {
    /// `server` with `faults`, counting into `state` (seeded from `faults.seed`).
    #[must_use]
    pub fn new(server: ApiServer, faults: ApiFaults, state: Arc<ApiFaultState>) -> Self {
        *state
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = faults.seed;
        FaultyApi {
            inner: server,
            faults,
            state,
        }
    }
}

fn status(code: u16, reason: &str, message: &str) -> http::Response<ResponseBody> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

/// `uri` with `timeoutSeconds=secs` (replacing any other value).
fn shortened(uri: &http::Uri, secs: u64) -> Option<http::Uri> {
    let query: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("timeoutSeconds="))
        .collect();
    let mut q = query.join("&");
    if !q.is_empty() {
        q.push('&');
    }
    q.push_str(&format!("timeoutSeconds={secs}"));
    format!("{}?{q}", uri.path()).parse().ok()
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for FaultyApi
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let write = matches!(
            *req.method(),
            http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
        );
        if !watch && self.state.draw(self.faults.server_errors) {
            self.state.server_errors.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async {
                Ok(status(
                    500,
                    "InternalError",
                    "fault injected by the embedded cluster",
                ))
            });
        }
        if write && self.state.draw(self.faults.conflicts) {
            self.state.conflicts.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async {
                Ok(status(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again (fault injected)",
                ))
            });
        }
        if watch && self.state.draw(self.faults.dropped_watches) {
            let secs = 1 + self.state.server_errors.load(Ordering::SeqCst) % 4;
            if let Some(uri) = shortened(req.uri(), secs) {
                *req.uri_mut() = uri;
                self.state.dropped_watches.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.state.passed.fetch_add(1, Ordering::SeqCst);
        self.inner.call(req)
    }
}
