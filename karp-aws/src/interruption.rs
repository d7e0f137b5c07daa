//! Interruption handling input: EventBridge messages delivered to the interruption SQS queue
//! (spot interruption warnings, rebalance recommendations, instance state changes, AWS Health
//! scheduled changes), parsed into typed events with Karpenter's action for each.

use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde::Deserialize;

use crate::error::AwsError;
use crate::sdk::AwsClients;

/// What happened to the instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterruptionKind {
    /// `EC2 Spot Instance Interruption Warning`: two minutes until the spot instance is reclaimed.
    SpotInterruption,
    /// `EC2 Instance Rebalance Recommendation`: elevated risk of interruption.
    RebalanceRecommendation,
    /// `EC2 Instance State-change Notification` with the new state.
    StateChange(String),
    /// `AWS Health Event` of category `scheduledChange` for EC2 (maintenance, retirement).
    ScheduledChange,
}

/// What karp does about an event (Karpenter's choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptionAction {
    /// Delete the NodeClaim: cordon, drain, and replace the node before the instance goes away.
    CordonAndDrain,
    /// Record an Event only.
    NoAction,
}

/// One parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptionEvent {
    /// Kind.
    pub kind: InterruptionKind,
    /// Affected instance ids.
    pub instance_ids: Vec<String>,
    /// Zone, when the message says (spot interruptions; used to mark the offering unavailable).
    pub zone: Option<String>,
    /// The EventBridge event id.
    pub id: String,
}

impl InterruptionEvent {
    /// Karpenter's action: drain for spot interruptions, scheduled changes and instances that
    /// stop or terminate; nothing for rebalance recommendations and other states.
    #[must_use]
    pub fn action(&self) -> InterruptionAction {
        match &self.kind {
            InterruptionKind::SpotInterruption | InterruptionKind::ScheduledChange => {
                InterruptionAction::CordonAndDrain
            }
            InterruptionKind::StateChange(s)
                if matches!(
                    s.as_str(),
                    "stopping" | "stopped" | "shutting-down" | "terminated"
                ) =>
            {
                InterruptionAction::CordonAndDrain
            }
            _ => InterruptionAction::NoAction,
        }
    }
}

/// A message that is not an interruption event karp understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interruption message {what}")]
pub struct ParseError {
    /// What was wrong.
    pub what: String,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: String,
    #[serde(rename = "detail-type", default)]
    detail_type: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    detail: serde_json::Value,
}

/// Parses one EventBridge message body.
///
/// # Errors
/// [`ParseError`] for malformed JSON or an event kind karp does not handle.
pub fn parse_message(body: &str) -> Result<InterruptionEvent, ParseError> {
    let env: Envelope = serde_json::from_str(body).map_err(|e| ParseError {
        what: format!("is not EventBridge JSON: {e}"),
    })?;
    let detail_str = |k: &str| {
        env.detail
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    // Spot ARNs carry the zone: arn:aws:ec2:us-east-1b:instance/i-...
    let zone = env.resources.iter().find_map(|r| {
        let parts: Vec<&str> = r.split(':').collect();
        (parts.len() >= 5 && parts[2] == "ec2" && parts[3].len() > 2)
            .then(|| parts[3].to_string())
            .filter(|z| z.chars().last().is_some_and(|c| c.is_ascii_lowercase()))
    });
    let single = |kind: InterruptionKind| -> Result<InterruptionEvent, ParseError> {
        let id = detail_str("instance-id").ok_or_else(|| ParseError {
            what: format!("{:?} has no detail.instance-id", env.detail_type),
        })?;
        Ok(InterruptionEvent {
            kind,
            instance_ids: vec![id],
            zone: zone.clone(),
            id: env.id.clone(),
        })
    };
    match (env.source.as_str(), env.detail_type.as_str()) {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => {
            single(InterruptionKind::SpotInterruption)
        }
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => {
            single(InterruptionKind::RebalanceRecommendation)
        }
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            let state = detail_str("state").unwrap_or_default();
            single(InterruptionKind::StateChange(state))
        }
        ("aws.health", "AWS Health Event") => {
            let category = detail_str("eventTypeCategory").unwrap_or_default();
            let service = detail_str("service").unwrap_or_default();
            if category != "scheduledChange" || service != "EC2" {
                return Err(ParseError {
                    what: format!(
                        "is a Health event of {service}/{category}, not an EC2 scheduled change"
                    ),
                });
            }
            let ids: Vec<String> = env
                .detail
                .get("affectedEntities")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("entityValue").and_then(|v| v.as_str()))
                .map(str::to_string)
                .collect();
            Ok(InterruptionEvent {
                kind: InterruptionKind::ScheduledChange,
                instance_ids: ids,
                zone: None,
                id: env.id.clone(),
            })
        }
        (source, kind) => Err(ParseError {
            what: format!("has unsupported source/detail-type {source:?}/{kind:?}"),
        }),
    }
}

/// A received message: its receipt handle (for deletion) and the parse result.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// SQS receipt handle.
    pub receipt_handle: String,
    /// The event, or why it was not understood (delete it either way: it will not parse later).
    pub event: Result<InterruptionEvent, ParseError>,
    /// How many times SQS has delivered it.
    pub receive_count: u32,
}

/// The interruption queue.
#[derive(Debug, Clone)]
pub struct InterruptionQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl InterruptionQueue {
    /// Opens the queue by name (resolved with GetQueueUrl) or by URL.
    ///
    /// # Errors
    /// [`AwsError`] when the queue does not exist.
    pub async fn open(clients: &AwsClients, name_or_url: &str) -> Result<Self, AwsError> {
        let url = if name_or_url.starts_with("http://") || name_or_url.starts_with("https://") {
            name_or_url.to_string()
        } else {
            clients
                .sqs
                .get_queue_url()
                .queue_name(name_or_url)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("GetQueueUrl", &e))?
                .queue_url()
                .ok_or_else(|| AwsError::invalid_response("GetQueueUrl", "no queue URL"))?
                .to_string()
        };
        Ok(InterruptionQueue {
            sqs: clients.sqs.clone(),
            url,
        })
    }

    /// The queue URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Receives up to 10 messages, long-polling up to `wait_seconds`.
    ///
    /// # Errors
    /// [`AwsError`] when ReceiveMessage fails.
    pub async fn receive(&self, wait_seconds: i32) -> Result<Vec<Received>, AwsError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_seconds.clamp(0, 20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ReceiveMessage", &e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let receipt_handle = m.receipt_handle()?.to_string();
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    receipt_handle,
                    event: parse_message(m.body().unwrap_or_default()),
                    receive_count,
                })
            })
            .collect())
    }

    /// Deletes a handled message.
    ///
    /// # Errors
    /// [`AwsError`] when DeleteMessage fails.
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), AwsError> {
        self.sqs
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DeleteMessage", &e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages in the shapes EventBridge delivers (from AWS's documented examples).
    const SPOT: &str = r#"{"version":"0","id":"1e5527d7-bb36-4607-3370-4164db56a40e","detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","account":"123456789012","time":"1970-01-01T00:00:00Z","region":"us-east-1","resources":["arn:aws:ec2:us-east-1b:instance/i-0b662ef9931388ba0"],"detail":{"instance-id":"i-0b662ef9931388ba0","instance-action":"terminate"}}"#;
    const HEALTH: &str = r#"{"version":"0","id":"7bf73129-1428-4cd3-a780-95db273d1602","detail-type":"AWS Health Event","source":"aws.health","account":"123456789012","time":"2026-01-01T00:00:00Z","region":"us-east-1","resources":[],"detail":{"eventArn":"arn:aws:health:us-east-1::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/x","service":"EC2","eventTypeCode":"AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED","eventTypeCategory":"scheduledChange","affectedEntities":[{"entityValue":"i-1"},{"entityValue":"i-2"}]}}"#;

    #[test]
    fn spot_interruptions_drain_and_name_the_zone() {
        let e = parse_message(SPOT).unwrap();
        assert_eq!(e.kind, InterruptionKind::SpotInterruption);
        assert_eq!(e.instance_ids, vec!["i-0b662ef9931388ba0"]);
        assert_eq!(e.zone.as_deref(), Some("us-east-1b"));
        assert_eq!(e.action(), InterruptionAction::CordonAndDrain);
    }

    #[test]
    fn other_kinds_parse_with_karpenters_actions() {
        let h = parse_message(HEALTH).unwrap();
        assert_eq!(h.kind, InterruptionKind::ScheduledChange);
        assert_eq!(h.instance_ids, vec!["i-1", "i-2"]);
        assert_eq!(h.action(), InterruptionAction::CordonAndDrain);
        let rebalance = SPOT.replace(
            "EC2 Spot Instance Interruption Warning",
            "EC2 Instance Rebalance Recommendation",
        );
        assert_eq!(
            parse_message(&rebalance).unwrap().action(),
            InterruptionAction::NoAction
        );
        for (state, action) in [
            ("stopping", InterruptionAction::CordonAndDrain),
            ("terminated", InterruptionAction::CordonAndDrain),
            ("running", InterruptionAction::NoAction),
        ] {
            let msg = format!(
                r#"{{"id":"x","detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","detail":{{"instance-id":"i-9","state":"{state}"}}}}"#
            );
            let e = parse_message(&msg).unwrap();
            assert_eq!(e.kind, InterruptionKind::StateChange(state.into()));
            assert_eq!(e.action(), action, "{state}");
        }
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        assert!(parse_message("{").is_err());
        assert!(parse_message("[]").is_err());
        assert!(parse_message(
            r#"{"source":"aws.ec2","detail-type":"EC2 Spot Instance Interruption Warning"}"#
        )
        .is_err());
        let rds = HEALTH.replace("\"service\":\"EC2\"", "\"service\":\"RDS\"");
        assert!(parse_message(&rds).is_err());
        assert!(parse_message(r#"{"source":"aws.s3","detail-type":"Object Created"}"#).is_err());
    }
}
