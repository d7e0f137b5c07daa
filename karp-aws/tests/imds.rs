//! The IMDS poller against the IMDSv2 emulator on loopback: session tokens, the three notice
//! paths, outages and revoked tokens.

use std::time::Duration;

use karp_aws::imds::{ImdsPollError, ImdsPoller};
use karp_aws::imds_emulator::ImdsEmulator;

const LONG_TTL: Duration = Duration::from_secs(21_600);

async fn setup() -> (ImdsEmulator, ImdsPoller) {
    let imds = ImdsEmulator::start().await.unwrap();
    let poller = ImdsPoller::new(Some(imds.url()), LONG_TTL).unwrap();
    (imds, poller)
}

#[tokio::test]
async fn no_notice_is_an_empty_poll_and_the_token_is_reused() {
    let (imds, mut poller) = setup().await;
    for _ in 0..3 {
        assert_eq!(poller.poll().await.unwrap(), Default::default());
    }
    assert_eq!(imds.tokens_issued(), 1, "one session token for every read");
    assert_eq!(imds.reads(), 9);
}

#[tokio::test]
async fn each_notice_kind_is_read() {
    let (imds, mut poller) = setup().await;
    imds.set_spot_action(Some(
        r#"{"action": "terminate", "time": "2026-12-07T08:22:00Z"}"#,
    ));
    let n = poller.poll().await.unwrap();
    let spot = n.spot.unwrap();
    assert_eq!(
        (spot.action.as_str(), spot.time.as_str()),
        ("terminate", "2026-12-07T08:22:00Z")
    );
    assert!(n.scheduled.is_empty() && n.rebalance.is_none());

    imds.set_spot_action(None);
    imds.set_scheduled_events(Some(
        r#"[{"NotBefore": "21 Jan 2027 09:00:43 GMT", "Code": "system-reboot",
             "Description": "scheduled reboot", "EventId": "instance-event-1",
             "NotAfter": "21 Jan 2027 09:17:23 GMT", "State": "active"}]"#,
    ));
    imds.set_rebalance(Some(r#"{"noticeTime": "2026-12-07T08:17:00Z"}"#));
    let n = poller.poll().await.unwrap();
    assert!(n.spot.is_none());
    assert_eq!(n.scheduled.len(), 1);
    assert_eq!(n.scheduled[0].code, "system-reboot");
    assert_eq!(n.rebalance.unwrap().notice_time, "2026-12-07T08:17:00Z");
}

#[tokio::test]
async fn a_malformed_body_is_a_parse_error_naming_the_path() {
    let (imds, mut poller) = setup().await;
    imds.set_scheduled_events(Some("{not json"));
    let e = poller.poll().await.unwrap_err();
    assert!(
        matches!(e, ImdsPollError::Parse { path, .. } if path.ends_with("maintenance/scheduled")),
        "{e:?}"
    );
    imds.set_scheduled_events(Some("[]"));
    assert!(poller.poll().await.is_ok());
}

#[tokio::test]
async fn an_outage_fails_polls_until_imds_is_back() {
    let (imds, mut poller) = setup().await;
    poller.poll().await.unwrap();
    imds.set_outage(true);
    let e = poller.poll().await.unwrap_err();
    assert!(
        matches!(e, ImdsPollError::Read { status: None, .. }),
        "{e:?}"
    );
    imds.set_outage(false);
    imds.set_rebalance(Some(r#"{"noticeTime": "2026-12-07T08:17:00Z"}"#));
    assert!(poller.poll().await.unwrap().rebalance.is_some());
}

#[tokio::test]
async fn a_revoked_token_is_replaced_at_the_next_poll() {
    let (imds, mut poller) = setup().await;
    poller.poll().await.unwrap();
    assert_eq!(imds.tokens_issued(), 1);
    // IMDS forgets its tokens (a restart): the cached token gets 401.
    imds.revoke_tokens();
    let e = poller.poll().await.unwrap_err();
    assert!(
        matches!(
            e,
            ImdsPollError::Read {
                status: Some(401),
                ..
            }
        ),
        "{e:?}"
    );
    imds.set_spot_action(Some(
        r#"{"action": "stop", "time": "2026-12-07T08:22:00Z"}"#,
    ));
    let n = poller.poll().await.unwrap();
    assert_eq!(n.spot.unwrap().action, "stop");
    assert_eq!(imds.tokens_issued(), 2, "a new session token after the 401");
}

#[tokio::test]
async fn a_short_token_ttl_is_refreshed_before_it_expires() {
    let imds = ImdsEmulator::start().await.unwrap();
    let mut poller = ImdsPoller::new(Some(imds.url()), Duration::from_secs(1)).unwrap();
    for _ in 0..3 {
        poller.poll().await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(imds.tokens_issued() >= 2, "{}", imds.tokens_issued());
}
