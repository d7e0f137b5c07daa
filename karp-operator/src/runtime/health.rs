//! The operator's HTTP endpoints: `/metrics` (Prometheus), `/healthz` (the process is alive) and
//! `/readyz` (the controllers' caches are synced, or this replica is a standby).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

use super::metrics::Metrics;

/// Health flags the endpoints report.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the process is serving.
    pub alive: AtomicBool,
    /// Set when ready (caches synced, or standing by for leadership).
    pub ready: AtomicBool,
    /// Set while this replica leads.
    pub leader: AtomicBool,
}

fn respond(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let (status, body, ctype) = match req.uri().path() {
        "/metrics" => {
            let mut text = metrics.render();
            text.push_str(&format!(
                "# TYPE karpenter_leader gauge\nkarpenter_leader {}\n",
                u8::from(health.leader.load(Ordering::SeqCst))
            ));
            (StatusCode::OK, text, "text/plain; version=0.0.4")
        }
        "/healthz" if health.alive.load(Ordering::SeqCst) => {
            (StatusCode::OK, "ok\n".to_string(), "text/plain")
        }
        "/readyz" if health.ready.load(Ordering::SeqCst) => {
            (StatusCode::OK, "ok\n".to_string(), "text/plain")
        }
        "/healthz" | "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready\n".to_string(),
            "text/plain",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_string(),
            "text/plain",
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves the endpoints on `listener` forever.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    health.alive.store(true, Ordering::SeqCst);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let health = Arc::clone(&health);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = respond(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(r) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "metrics connection");
            }
        });
    }
}
