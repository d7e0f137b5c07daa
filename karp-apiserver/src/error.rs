//! API errors, rendered as `meta.k8s.io/v1 Status` objects.

use serde_json::{json, Value};

/// The `reason` of a failed request, as the Kubernetes API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// 400: the request is malformed.
    BadRequest,
    /// 403: the request is not allowed (e.g. content in a terminating namespace).
    Forbidden,
    /// 404: the resource or object does not exist.
    NotFound,
    /// 405: the verb is not supported on this resource.
    MethodNotAllowed,
    /// 409: an object with this name already exists.
    AlreadyExists,
    /// 409: optimistic concurrency failure (stale `resourceVersion`, already bound pod).
    Conflict,
    /// 410: the requested resourceVersion is older than the retained history.
    Gone,
    /// 410 inside a watch stream: the requested resourceVersion is too old.
    Expired,
    /// 415: the patch content type is not supported.
    UnsupportedMediaType,
    /// 422: the object is invalid.
    Invalid,
    /// 429: the request cannot be served now (an eviction would violate a disruption budget).
    TooManyRequests,
    /// 500: the server could not serve the request.
    InternalError,
}

impl Reason {
    /// The reason as written in a Status object.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Gone => "Gone",
            Reason::Expired => "Expired",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::Invalid => "Invalid",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::InternalError => "InternalError",
        }
    }

    /// The HTTP status code that goes with the reason.
    pub fn code(self) -> u16 {
        match self {
            Reason::BadRequest => 400,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::MethodNotAllowed => 405,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Gone | Reason::Expired => 410,
            Reason::UnsupportedMediaType => 415,
            Reason::Invalid => 422,
            Reason::TooManyRequests => 429,
            Reason::InternalError => 500,
        }
    }
}

/// A failed API request: what the HTTP API returns as a `Status` with `status: Failure`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} ({})", reason.as_str())]
pub struct ApiError {
    /// Why the request failed.
    pub reason: Reason,
    /// Human-readable message (the same text the real API server writes where known).
    pub message: String,
    /// `details` of the Status (name, group, kind, causes), when known.
    pub details: Option<Value>,
}

impl ApiError {
    /// An error with a reason and message.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// Adds `details` to the Status.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.reason.code()
    }

    /// True for 404 NotFound.
    pub fn is_not_found(&self) -> bool {
        self.reason == Reason::NotFound
    }

    /// True for 409 Conflict or AlreadyExists.
    pub fn is_conflict(&self) -> bool {
        matches!(self.reason, Reason::Conflict | Reason::AlreadyExists)
    }

    /// The `meta.k8s.io/v1 Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.code(),
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }

    pub(crate) fn invalid(kind: &str, name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(Reason::Invalid, format!("{kind} \"{name}\" is invalid: {message}"))
            .with_details(json!({"name": name, "kind": kind, "causes": [{"reason": "FieldValueInvalid", "message": message}]}))
    }

    /// 422 for field errors, as kube's `NewInvalid`: the message is
    /// `Kind.group "name" is invalid: <field>: <body>` (several as `[a, b]`, duplicates once), and
    /// `details.causes` carry each error's reason, field and body (what kubectl prints).
    pub(crate) fn invalid_fields(group: &str, kind: &str, name: &str, causes: &[Cause]) -> Self {
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut seen = Vec::new();
        for c in causes {
            let line = format!("{}: {}", c.field, c.message);
            if !seen.contains(&line) {
                seen.push(line);
            }
        }
        let message = match seen.as_slice() {
            [] => format!("{qualified_kind} \"{name}\" is invalid"),
            [one] => format!("{qualified_kind} \"{name}\" is invalid: {one}"),
            many => format!(
                "{qualified_kind} \"{name}\" is invalid: [{}]",
                many.join(", ")
            ),
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        Self::new(Reason::Invalid, message)
            .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    pub(crate) fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let qualified = qualified(group, plural);
        Self::new(
            Reason::NotFound,
            format!("{qualified} \"{name}\" not found"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub(crate) fn no_resource() -> Self {
        Self::new(
            Reason::NotFound,
            "the server could not find the requested resource",
        )
    }

    pub(crate) fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let qualified = qualified(group, plural);
        Self::new(
            Reason::AlreadyExists,
            format!("{qualified} \"{name}\" already exists"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub(crate) fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let qualified = qualified(group, plural);
        Self::new(
            Reason::Conflict,
            format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub(crate) fn stale(group: &str, plural: &str, name: &str) -> Self {
        Self::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            Reason::MethodNotAllowed,
            "the server does not allow this method on the requested resource",
        )
    }
}

/// One `details.causes` entry of an Invalid Status (kube's `StatusCause`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    /// `FieldValueInvalid`, `FieldValueForbidden`, …
    pub reason: &'static str,
    /// The field path (`spec.template.spec.requirements[0].key`, `<nil>` for the root).
    pub field: String,
    /// The error without the field (`Invalid value: "string": <detail>`).
    pub message: String,
}

/// `plural.group` (or `plural` for the core group), as Kubernetes names resources in messages.
pub(crate) fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// A `Status` with `status: Success`.
pub(crate) fn success_status(code: u16, details: Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": code,
        "details": details,
    })
}
