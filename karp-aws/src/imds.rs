//! Node-local interruption notices from the EC2 instance metadata service (IMDSv2), as AWS Node
//! Termination Handler's IMDS mode reads them: the spot instance action, scheduled maintenance
//! events and rebalance recommendations. [`ImdsPoller`] reads the three paths through aws-config's
//! IMDS client (session token, its refresh, endpoint override); the parsers are pure.
//!
//! ```
//! use karp_aws::imds::{parse_scheduled_events, parse_spot_action};
//!
//! let spot = parse_spot_action(r#"{"action": "terminate", "time": "2026-12-07T08:22:00Z"}"#)
//!     .unwrap();
//! assert_eq!(spot.action, "terminate");
//! let events = parse_scheduled_events(
//!     r#"[{"Code": "system-reboot", "EventId": "instance-event-1", "State": "active",
//!          "NotBefore": "21 Jan 2027 09:00:43 GMT", "Description": "scheduled reboot"}]"#,
//! )
//! .unwrap();
//! assert!(!events[0].is_canceled());
//! ```

use std::time::Duration;

use aws_config::imds::client::error::ImdsError;
use serde::Deserialize;

/// The spot instance action path (404 until EC2 decides to interrupt the spot instance).
pub const SPOT_ACTION_PATH: &str = "/latest/meta-data/spot/instance-action";
/// The scheduled maintenance events path (a JSON list, empty or 404 when there are none).
pub const SCHEDULED_EVENTS_PATH: &str = "/latest/meta-data/events/maintenance/scheduled";
/// The rebalance recommendation path (404 until EC2 recommends a rebalance).
pub const REBALANCE_PATH: &str = "/latest/meta-data/events/recommendations/rebalance";

/// `spot/instance-action`: EC2 will stop, hibernate or terminate the spot instance at `time`
/// (two minutes after the notice).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SpotAction {
    /// `terminate`, `stop` or `hibernate`.
    pub action: String,
    /// When (RFC 3339, UTC).
    pub time: String,
}

/// One entry of `events/maintenance/scheduled`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduledEvent {
    /// `instance-reboot`, `system-reboot`, `system-maintenance`, `instance-retirement` or
    /// `instance-stop`.
    pub code: String,
    /// The event's ID (`instance-event-…`).
    pub event_id: String,
    /// `active`, `canceled` or `completed`.
    #[serde(default)]
    pub state: String,
    /// Earliest start (`21 Jan 2019 09:00:43 GMT`).
    #[serde(default)]
    pub not_before: String,
    /// Latest end, when EC2 says.
    #[serde(default)]
    pub not_after: Option<String>,
    /// What EC2 says about it.
    #[serde(default)]
    pub description: String,
}

impl ScheduledEvent {
    /// Whether EC2 canceled the event.
    #[must_use]
    pub fn is_canceled(&self) -> bool {
        self.state.eq_ignore_ascii_case("canceled")
    }

    /// Whether the event is over.
    #[must_use]
    pub fn is_completed(&self) -> bool {
        self.state.eq_ignore_ascii_case("completed")
    }
}

/// `events/recommendations/rebalance`: the instance is at elevated risk of interruption.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rebalance {
    /// When EC2 emitted the recommendation (RFC 3339, UTC).
    pub notice_time: String,
}

/// What the three paths said at one poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImdsNotices {
    /// The spot instance action, when there is one.
    pub spot: Option<SpotAction>,
    /// Scheduled maintenance events (any state).
    pub scheduled: Vec<ScheduledEvent>,
    /// The rebalance recommendation, when there is one.
    pub rebalance: Option<Rebalance>,
}

/// A failed poll.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImdsPollError {
    /// The endpoint could not be configured.
    #[error("configuring the IMDS client for {endpoint}: {reason}")]
    Configure {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A path could not be read (IMDS unreachable, token refused, server error).
    #[error("reading {path} from IMDS: {reason}")]
    Read {
        /// The path.
        path: &'static str,
        /// The HTTP status, when IMDS answered.
        status: Option<u16>,
        /// Why.
        reason: String,
    },
    /// A path's body is not what EC2 documents.
    #[error("parsing {path} from IMDS: {reason}")]
    Parse {
        /// The path.
        path: &'static str,
        /// Why.
        reason: String,
    },
}

/// Parses `spot/instance-action`.
///
/// # Errors
/// A message when the body is not the documented JSON object.
pub fn parse_spot_action(body: &str) -> Result<SpotAction, String> {
    serde_json::from_str(body).map_err(|e| e.to_string())
}

/// Parses `events/maintenance/scheduled` (an empty body is no events).
///
/// # Errors
/// A message when the body is not the documented JSON list.
pub fn parse_scheduled_events(body: &str) -> Result<Vec<ScheduledEvent>, String> {
    if body.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(body).map_err(|e| e.to_string())
}

/// Parses `events/recommendations/rebalance`.
///
/// # Errors
/// A message when the body is not the documented JSON object.
pub fn parse_rebalance(body: &str) -> Result<Rebalance, String> {
    serde_json::from_str(body).map_err(|e| e.to_string())
}

/// How long one IMDS request may take (the poll runs every 2 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads the three notice paths from IMDS.
#[derive(Debug)]
pub struct ImdsPoller {
    endpoint: Option<String>,
    token_ttl: Duration,
    client: aws_config::imds::Client,
}

impl ImdsPoller {
    /// A poller on `endpoint` (default: aws-config's, `http://169.254.169.254`, or the
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` environment variable) with session tokens of
    /// `token_ttl` (aws-config refreshes them before they expire).
    ///
    /// # Errors
    /// [`ImdsPollError::Configure`] when `endpoint` is not a URL.
    pub fn new(endpoint: Option<&str>, token_ttl: Duration) -> Result<Self, ImdsPollError> {
        let endpoint = endpoint.map(str::to_string);
        let client = Self::client(endpoint.as_deref(), token_ttl)?;
        Ok(ImdsPoller {
            endpoint,
            token_ttl,
            client,
        })
    }

    fn client(
        endpoint: Option<&str>,
        token_ttl: Duration,
    ) -> Result<aws_config::imds::Client, ImdsPollError> {
        let mut builder = aws_config::imds::Client::builder()
            .token_ttl(token_ttl)
            .max_attempts(2)
            .connect_timeout(REQUEST_TIMEOUT)
            .read_timeout(REQUEST_TIMEOUT);
        if let Some(e) = endpoint {
            builder = builder
                .endpoint(e)
                .map_err(|err| ImdsPollError::Configure {
                    endpoint: e.to_string(),
                    reason: err.to_string(),
                })?;
        }
        Ok(builder.build())
    }

    /// Reads one path: `None` for 404 (no such notice).
    async fn get(&mut self, path: &'static str) -> Result<Option<String>, ImdsPollError> {
        match self.client.get(path).await {
            Ok(body) => Ok(Some(body.as_ref().to_string())),
            Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => Ok(None),
            Err(e) => {
                let status = match &e {
                    ImdsError::ErrorResponse(r) => Some(r.response().status().as_u16()),
                    _ => None,
                };
                if status == Some(401) {
                    // The cached session token was refused (IMDS restarted, or the token was
                    // revoked): a new client fetches a new token at the next poll.
                    self.client = Self::client(self.endpoint.as_deref(), self.token_ttl)?;
                }
                Err(ImdsPollError::Read {
                    path,
                    status,
                    reason: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
                })
            }
        }
    }

    /// Reads the three paths.
    ///
    /// # Errors
    /// [`ImdsPollError`] when a path cannot be read or parsed; the next poll starts over.
    pub async fn poll(&mut self) -> Result<ImdsNotices, ImdsPollError> {
        let parse =
            |path: &'static str| move |reason: String| ImdsPollError::Parse { path, reason };
        let spot = match self.get(SPOT_ACTION_PATH).await? {
            Some(b) => Some(parse_spot_action(&b).map_err(parse(SPOT_ACTION_PATH))?),
            None => None,
        };
        let scheduled = match self.get(SCHEDULED_EVENTS_PATH).await? {
            Some(b) => parse_scheduled_events(&b).map_err(parse(SCHEDULED_EVENTS_PATH))?,
            None => Vec::new(),
        };
        let rebalance = match self.get(REBALANCE_PATH).await? {
            Some(b) => Some(parse_rebalance(&b).map_err(parse(REBALANCE_PATH))?),
            None => None,
        };
        Ok(ImdsNotices {
            spot,
            scheduled,
            rebalance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_bodies_parse() {
        let r = parse_rebalance(r#"{"noticeTime": "2026-12-07T08:17:00Z"}"#).unwrap();
        assert_eq!(r.notice_time, "2026-12-07T08:17:00Z");
        let events = parse_scheduled_events(
            r#"[{"NotBefore": "21 Jan 2027 09:00:43 GMT", "Code": "system-reboot",
                 "Description": "Canceled - scheduled reboot", "EventId": "instance-event-0d59937288b749b32",
                 "NotAfter": "21 Jan 2027 09:17:23 GMT", "State": "canceled"}]"#,
        )
        .unwrap();
        assert_eq!(events[0].event_id, "instance-event-0d59937288b749b32");
        assert!(events[0].is_canceled() && !events[0].is_completed());
        assert_eq!(
            events[0].not_after.as_deref(),
            Some("21 Jan 2027 09:17:23 GMT")
        );
        assert!(parse_scheduled_events("").unwrap().is_empty());
        assert!(parse_scheduled_events("[]").unwrap().is_empty());
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        assert!(parse_spot_action("terminate").is_err());
        assert!(parse_spot_action(r#"{"action": 3}"#).is_err());
        assert!(parse_scheduled_events("{").is_err());
        assert!(parse_scheduled_events(r#"[{"Code": "x"}]"#).is_err());
        assert!(parse_rebalance("[]").is_err());
    }

    #[test]
    fn a_bad_endpoint_is_a_configuration_error() {
        let e = ImdsPoller::new(Some("not a url"), Duration::from_secs(60)).unwrap_err();
        assert!(matches!(e, ImdsPollError::Configure { .. }), "{e:?}");
    }
}
