//! Reconcile units with scripted API responses (tower-test): failures the embedded API server does
//! not produce on demand, answered exactly as a real API server would.

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use karp_operator::api::nodeclaim::{NodeClaim, TERMINATION_FINALIZER};
use karp_operator::controllers::writes::{add_finalizer, remove_finalizer};
use karp_operator::controllers::OperatorError;
use kube::client::Body;
use kube::{Api, Client};

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("scripted {reason}"), "reason": reason, "code": code
    });
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn claim(finalizers: &[&str]) -> NodeClaim {
    NodeClaim {
        metadata: ObjectMeta {
            name: Some("default-abcde".into()),
            resource_version: Some("42".into()),
            finalizers: Some(finalizers.iter().map(|f| (*f).to_string()).collect()),
            ..ObjectMeta::default()
        },
        ..NodeClaim::default()
    }
}

async fn body_json(req: Request<Body>) -> serde_json::Value {
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn removing_a_finalizer_from_a_claim_that_is_already_gone_succeeds() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api: Api<NodeClaim> = Api::all(Client::new(mock, "default"));
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("one request");
        assert_eq!(req.method(), http::Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/apis/karpenter.sh/v1/nodeclaims/default-abcde"
        );
        let body = body_json(req).await;
        // Only karp's finalizer goes; the write is conditional on the version karp saw.
        assert_eq!(
            body["metadata"]["finalizers"],
            serde_json::json!(["example.com/keep"])
        );
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        send.send_response(status(404, "NotFound"));
    });
    remove_finalizer(
        &api,
        &claim(&["example.com/keep", TERMINATION_FINALIZER]),
        TERMINATION_FINALIZER,
    )
    .await
    .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_conflicting_finalizer_write_is_an_error_to_retry_not_a_silent_success() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api: Api<NodeClaim> = Api::all(Client::new(mock, "default"));
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("one request");
        let body = body_json(req).await;
        assert_eq!(
            body["metadata"]["finalizers"],
            serde_json::json!([TERMINATION_FINALIZER])
        );
        send.send_response(status(409, "Conflict"));
    });
    let err = add_finalizer(&api, &claim(&[]), TERMINATION_FINALIZER)
        .await
        .unwrap_err();
    assert!(
        matches!(err, OperatorError::Kube("add finalizer", _)),
        "{err:?}"
    );
    server.await.unwrap();
    // A finalizer already present needs no request at all (the mock would hang otherwise).
    let (mock, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api: Api<NodeClaim> = Api::all(Client::new(mock, "default"));
    add_finalizer(
        &api,
        &claim(&[TERMINATION_FINALIZER]),
        TERMINATION_FINALIZER,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn server_errors_on_removal_are_reported() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api: Api<NodeClaim> = Api::all(Client::new(mock, "default"));
    let server = tokio::spawn(async move {
        let (_req, send) = handle.next_request().await.expect("one request");
        send.send_response(status(500, "InternalError"));
    });
    let err = remove_finalizer(
        &api,
        &claim(&[TERMINATION_FINALIZER]),
        TERMINATION_FINALIZER,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("remove finalizer"), "{err}");
    server.await.unwrap();
}

fn claim_list(provider_id: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "NodeClaimList", "apiVersion": "karpenter.sh/v1", "metadata": {"resourceVersion": "1"},
        "items": [{
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": "default-abcde"},
            "spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}},
            "status": {"providerID": provider_id}
        }]
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn spot_interruption() -> karp_aws::interruption::InterruptionEvent {
    karp_aws::interruption::InterruptionEvent {
        kind: karp_aws::interruption::InterruptionKind::SpotInterruption,
        instance_ids: vec!["i-1".into()],
        zone: Some("us-east-1a".into()),
        id: "e1".into(),
    }
}

fn json(code: u16, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// Runs `handle_event` against scripted answers: `list` for the NodeClaim list, an empty Node
/// list, `delete` (when given) for the claim's deletion, and acceptance for every Event. Returns
/// the result and the requests made (`METHOD path`), in order.
async fn handle_with(
    list: Response<Body>,
    delete: Option<Response<Body>>,
) -> (Result<(), OperatorError>, Vec<String>) {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock, "default");
    let server = tokio::spawn(async move {
        let mut list = Some(list);
        let mut delete = delete;
        let mut seen = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_string();
            seen.push(format!("{} {path}", req.method()));
            let response = if path.ends_with("/events") {
                let body = body_json(req).await;
                json(201, &body)
            } else if path.ends_with("/nodes") {
                json(
                    200,
                    &serde_json::json!({"kind": "NodeList", "apiVersion": "v1",
                        "metadata": {"resourceVersion": "1"}, "items": []}),
                )
            } else if path.ends_with("/nodeclaims") {
                list.take().expect("one NodeClaim list")
            } else {
                delete.take().expect("one scripted delete")
            };
            send.send_response(response);
        }
        seen
    });
    let ctx = karp_operator::controllers::interruption::InterruptionContext {
        claims: Api::all(client.clone()),
        nodes: Api::all(client.clone()),
        events: karp_operator::controllers::Events::new(client, "test"),
        metrics: std::sync::Arc::new(karp_operator::runtime::metrics::Metrics::new()),
        drain_on_rebalance: false,
        mark_unavailable: Box::new(|_, _| {}),
    };
    let r =
        karp_operator::controllers::interruption::handle_event(&ctx, &spot_interruption()).await;
    drop(ctx);
    (r, server.await.unwrap())
}

#[tokio::test]
async fn an_interruption_is_not_handled_when_the_claims_cannot_be_listed() {
    let (r, seen) = handle_with(status(500, "InternalError"), None).await;
    assert!(r.is_err(), "the message must stay queued");
    assert_eq!(seen, ["GET /apis/karpenter.sh/v1/nodeclaims"]);
}

#[tokio::test]
async fn an_interruption_is_not_handled_when_its_claim_cannot_be_deleted() {
    let (r, seen) = handle_with(
        claim_list("aws:///us-east-1a/i-1"),
        Some(status(500, "InternalError")),
    )
    .await;
    assert!(r.is_err(), "the message must stay queued");
    assert!(
        seen.iter().any(|r| r.starts_with("DELETE ")),
        "the claim's deletion was tried: {seen:?}"
    );
}

#[tokio::test]
async fn an_interruption_whose_claim_is_already_gone_is_handled() {
    let (r, seen) = handle_with(
        claim_list("aws:///us-east-1a/i-1"),
        Some(status(404, "NotFound")),
    )
    .await;
    assert!(r.is_ok(), "{r:?}");
    // The SpotInterrupted event before the delete, TerminatingOnInterruption after it.
    let kinds: Vec<&str> = seen
        .iter()
        .map(|r| {
            if r.ends_with("/events") {
                "event"
            } else {
                r.split(' ').next().unwrap_or_default()
            }
        })
        .collect();
    assert_eq!(
        kinds,
        ["GET", "GET", "event", "DELETE", "event"],
        "{seen:?}"
    );
}
