//! What the HTTP listener admits before a request reaches the API: a bearer token (when one is
//! set), a `Host` the server answers to (DNS rebinding), a content type Kubernetes clients send
//! (so a web page's cross-site `text/plain` form post is refused), and a body-size limit.
//!
//! In-process callers (`kube::Client` over the [`crate::ApiServer`] service) are not affected.

use http::{HeaderMap, Method, StatusCode};

/// The largest request body accepted by default (Kubernetes objects are at most ~1.5 MiB in
/// etcd; this leaves room for large lists of patches).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;

/// The request content types the server accepts for a body: JSON, YAML, Kubernetes protobuf
/// (kubectl's typed clients) and the patch types.
pub const CONTENT_TYPES: [&str; 7] = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// How the HTTP listener guards the API.
#[derive(Clone)]
pub struct ServeOptions {
    /// Bearer token every request must carry (`Authorization: Bearer <token>`); `None` admits
    /// any caller (tests).
    pub token: Option<String>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Host names (without port) requests may address, besides loopback names and the listen
    /// address; `*` admits any.
    pub extra_hosts: Vec<String>,
    /// Serve HTTPS with this configuration (plain HTTP without).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("extra_hosts", &self.extra_hosts)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            extra_hosts: Vec::new(),
            tls: None,
        }
    }
}

/// Why a request was refused: HTTP status, Kubernetes reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: StatusCode,
    /// Kubernetes `Status.reason`.
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
}

fn refuse(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason,
        message: message.into(),
    }
}

/// Compares without stopping at the first difference (no timing hint about the token).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The host part of a `Host` header value (`[::1]:6443` → `::1`, `localhost:6443` → `localhost`).
fn host_name(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    value.rsplit_once(':').map_or(value, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            value
        }
    })
}

/// Decides whether a request is admitted (pure). `listen_host` is the address the server is
/// bound to.
///
/// # Errors
/// The [`Refusal`] to answer with.
pub fn admit(
    method: &Method,
    headers: &HeaderMap,
    listen_host: &str,
    options: &ServeOptions,
) -> Result<(), Refusal> {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_name)
        .unwrap_or_default();
    let known = ["localhost", "127.0.0.1", "::1", listen_host]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host))
        || options
            .extra_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host));
    if !known {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("host {host:?} is not served here"),
        ));
    }
    if let Some(token) = &options.token {
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same(given.as_bytes(), token.as_bytes()) {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a bearer token is required (see the kubeconfig karp cluster wrote)",
            ));
        }
    }
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<usize>().ok())
        .unwrap_or(0);
    if length > options.max_body_bytes {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "request body of {length} bytes exceeds {}",
                options.max_body_bytes
            ),
        ));
    }
    let has_body = length > 0 || headers.contains_key(http::header::TRANSFER_ENCODING);
    if has_body || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        let ctype = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        match ctype {
            Some(c) if CONTENT_TYPES.contains(&c.as_str()) => {}
            // A body-less write (some DELETEs) may leave it out.
            None if !has_body => {}
            other => {
                return Err(refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!(
                        "content type {:?} is not accepted",
                        other.unwrap_or_default()
                    ),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn secured() -> ServeOptions {
        ServeOptions {
            token: Some("s3cret".into()),
            ..ServeOptions::default()
        }
    }

    #[test]
    fn a_kubectl_request_with_the_token_is_admitted() {
        let h = headers(&[
            ("host", "127.0.0.1:6443"),
            ("authorization", "Bearer s3cret"),
            ("content-type", "application/apply-patch+yaml"),
            ("content-length", "120"),
        ]);
        assert_eq!(admit(&Method::PATCH, &h, "127.0.0.1", &secured()), Ok(()));
        let get = headers(&[
            ("host", "localhost:6443"),
            ("authorization", "Bearer s3cret"),
        ]);
        assert_eq!(admit(&Method::GET, &get, "127.0.0.1", &secured()), Ok(()));
    }

    #[test]
    fn requests_without_the_token_are_unauthorized() {
        for auth in [None, Some("Bearer wrong"), Some("Basic czNjcmV0")] {
            let mut pairs = vec![("host", "127.0.0.1:6443")];
            if let Some(a) = auth {
                pairs.push(("authorization", a));
            }
            let r = admit(&Method::GET, &headers(&pairs), "127.0.0.1", &secured()).unwrap_err();
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn a_rebound_dns_name_is_forbidden() {
        let h = headers(&[
            ("host", "evil.example:6443"),
            ("authorization", "Bearer s3cret"),
        ]);
        let r = admit(&Method::GET, &h, "127.0.0.1", &secured()).unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let v6 = headers(&[("host", "[::1]:6443"), ("authorization", "Bearer s3cret")]);
        assert!(admit(&Method::GET, &v6, "127.0.0.1", &secured()).is_ok());
    }

    #[test]
    fn a_cross_site_text_plain_post_and_oversized_bodies_are_refused() {
        let form = headers(&[
            ("host", "127.0.0.1:6443"),
            ("content-type", "text/plain"),
            ("content-length", "40"),
        ]);
        let r = admit(&Method::POST, &form, "127.0.0.1", &ServeOptions::default()).unwrap_err();
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let big = headers(&[
            ("host", "127.0.0.1:6443"),
            ("content-type", "application/json"),
            ("content-length", "999999999"),
        ]);
        let r = admit(&Method::POST, &big, "127.0.0.1", &ServeOptions::default()).unwrap_err();
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
