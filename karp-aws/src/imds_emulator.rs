//! A small EC2 instance metadata service (IMDSv2) on loopback for tests (feature
//! `test-support`): the session-token endpoint with its TTL, the three interruption paths with
//! scripted bodies, outages (connections dropped) and revoked tokens (401 until the client
//! fetches a new one). Only what karp's IMDS monitor reads is served; every other path is 404.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::imds::{REBALANCE_PATH, SCHEDULED_EVENTS_PATH, SPOT_ACTION_PATH};

const TOKEN_PATH: &str = "/latest/api/token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

#[derive(Debug, Default)]
struct State {
    bodies: BTreeMap<&'static str, String>,
    tokens: BTreeMap<String, Instant>,
    issued: usize,
    reads: usize,
    outage: bool,
}

/// Why a connection was cut.
#[derive(Debug)]
struct Outage;

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IMDS outage")
    }
}

impl std::error::Error for Outage {}

/// The running emulator; it stops when dropped.
#[derive(Debug)]
pub struct ImdsEmulator {
    url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ImdsEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn respond(state: &Mutex<State>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut s = lock(state);
    let now = Instant::now();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut ttl_header = None;
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::PUT, TOKEN_PATH) => {
            match header(TTL_HEADER).and_then(|v| v.parse::<u64>().ok()) {
                Some(ttl @ 1..=21_600) => {
                    s.issued += 1;
                    let token = format!("token-{}-{}", s.issued, std::process::id());
                    s.tokens
                        .insert(token.clone(), now + Duration::from_secs(ttl));
                    // IMDS echoes the token's TTL, which clients cache it by.
                    ttl_header = Some(ttl);
                    (StatusCode::OK, token)
                }
                _ => (StatusCode::BAD_REQUEST, "invalid TTL".to_string()),
            }
        }
        (&Method::GET, path) => {
            let valid = header(TOKEN_HEADER)
                .and_then(|t| s.tokens.get(&t).copied())
                .is_some_and(|expiry| expiry > now);
            if valid {
                s.reads += 1;
                match [SPOT_ACTION_PATH, SCHEDULED_EVENTS_PATH, REBALANCE_PATH]
                    .into_iter()
                    .find(|p| *p == path)
                    .and_then(|p| s.bodies.get(p))
                {
                    Some(b) => (StatusCode::OK, b.clone()),
                    None => (StatusCode::NOT_FOUND, "Not Found".to_string()),
                }
            } else {
                (StatusCode::UNAUTHORIZED, "Unauthorized".to_string())
            }
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, String::new()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Some(ttl) = ttl_header {
        r.headers_mut().insert(TTL_HEADER, ttl.into());
    }
    r
}

impl ImdsEmulator {
    /// Starts the emulator on a free loopback port.
    ///
    /// # Errors
    /// The I/O error when no port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if lock(&served).outage {
                    drop(stream);
                    continue;
                }
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        // During an outage, kept-alive connections are cut too (a service
                        // error makes hyper close the connection unanswered).
                        let r = if lock(&state).outage {
                            Err(Outage)
                        } else {
                            Ok(respond(&state, &req))
                        };
                        async move { r }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(ImdsEmulator { url, state, task })
    }

    /// The endpoint (`http://127.0.0.1:<port>`).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    fn set(&self, path: &'static str, body: Option<&str>) {
        let mut s = lock(&self.state);
        match body {
            Some(b) => {
                s.bodies.insert(path, b.to_string());
            }
            None => {
                s.bodies.remove(path);
            }
        }
    }

    /// Sets (or clears, with `None`) the `spot/instance-action` body.
    pub fn set_spot_action(&self, body: Option<&str>) {
        self.set(SPOT_ACTION_PATH, body);
    }

    /// Sets (or clears) the `events/maintenance/scheduled` body.
    pub fn set_scheduled_events(&self, body: Option<&str>) {
        self.set(SCHEDULED_EVENTS_PATH, body);
    }

    /// Sets (or clears) the `events/recommendations/rebalance` body.
    pub fn set_rebalance(&self, body: Option<&str>) {
        self.set(REBALANCE_PATH, body);
    }

    /// Starts or ends an outage: while on, every connection is dropped unanswered.
    pub fn set_outage(&self, on: bool) {
        lock(&self.state).outage = on;
    }

    /// Forgets every issued token, as an IMDS restart does: requests carrying one get 401.
    pub fn revoke_tokens(&self) {
        lock(&self.state).tokens.clear();
    }

    /// How many session tokens were issued.
    #[must_use]
    pub fn tokens_issued(&self) -> usize {
        lock(&self.state).issued
    }

    /// How many metadata reads carried a valid token.
    #[must_use]
    pub fn reads(&self) -> usize {
        lock(&self.state).reads
    }
}
