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

/// Runs `handle_event` against scripted answers: the list, then (if asked) the delete.
async fn handle_with(
    list: Response<Body>,
    delete: Option<Response<Body>>,
) -> Result<(), OperatorError> {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api: Api<NodeClaim> = Api::all(Client::new(mock, "default"));
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("a list");
        assert_eq!(req.method(), http::Method::GET);
        send.send_response(list);
        if let Some(delete) = delete {
            let (req, send) = handle.next_request().await.expect("a delete");
            assert_eq!(req.method(), http::Method::DELETE);
            send.send_response(delete);
        }
    });
    let r = karp_operator::controllers::interruption::handle_event(
        &api,
        &spot_interruption(),
        &|_, _| {},
    )
    .await;
    server.await.unwrap();
    r
}

#[tokio::test]
async fn an_interruption_is_not_handled_when_the_claims_cannot_be_listed() {
    let r = handle_with(status(500, "InternalError"), None).await;
    assert!(r.is_err(), "the message must stay queued");
}

#[tokio::test]
async fn an_interruption_is_not_handled_when_its_claim_cannot_be_deleted() {
    let r = handle_with(
        claim_list("aws:///us-east-1a/i-1"),
        Some(status(500, "InternalError")),
    )
    .await;
    assert!(r.is_err(), "the message must stay queued");
}

#[tokio::test]
async fn an_interruption_whose_claim_is_already_gone_is_handled() {
    let r = handle_with(
        claim_list("aws:///us-east-1a/i-1"),
        Some(status(404, "NotFound")),
    )
    .await;
    assert!(r.is_ok(), "{r:?}");
}
