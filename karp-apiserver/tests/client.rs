//! kube::Client over the in-process tower Service: CRUD, concurrency, patches, finalizers, garbage
//! collection, subresources and CRDs.

use either::Either;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Binding, ConfigMap, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use karp_apiserver::{ApiServer, ChangeKind, Gvr};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, EvictParams, GroupVersionKind, ListParams,
    Patch, PatchParams, PostParams,
};
use kube::Client;
use serde_json::{json, Value};

fn client(server: &ApiServer) -> Client {
    Client::new(server.clone(), "default")
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

/// The Status of a failed call: (code, reason, message).
fn api_err<T: std::fmt::Debug>(r: kube::Result<T>) -> (u16, String, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn pod(name: &str, labels: Value) -> Pod {
    from(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}}),
    )
}

#[tokio::test]
async fn pods_nodes_and_configmaps_round_trip_as_typed_objects() {
    let server = ApiServer::new();
    let c = client(&server);
    let nodes: Api<Node> = Api::all(c.clone());
    let node: Node = from(json!({"metadata": {"name": "n1", "labels": {"zone": "a"}},
        "status": {"capacity": {"cpu": "4"}}}));
    let created = nodes.create(&PostParams::default(), &node).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.status.unwrap().capacity.unwrap()["cpu"].0,
        "4",
        "node status is kept on create"
    );

    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    pods.create(&PostParams::default(), &pod("a", json!({"app": "web"})))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("b", json!({"app": "db"})))
        .await
        .unwrap();
    let mut bound = pod("c", json!({"app": "web", "tier": "fe"}));
    bound.spec.as_mut().unwrap().node_name = Some("n1".into());
    pods.create(&PostParams::default(), &bound).await.unwrap();

    let names = |l: kube::core::ObjectList<Pod>| {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(pods.list(&ListParams::default()).await.unwrap()),
        ["a", "b", "c"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app in (db),!tier"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName="))
                .await
                .unwrap()
        ),
        ["a", "b"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName=n1"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("metadata.name!=a,status.phase=Pending"))
                .await
                .unwrap()
        ),
        ["b", "c"]
    );
    let all: Api<Pod> = Api::all(c.clone());
    let list = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 3);
    assert!(list.metadata.resource_version.is_some());

    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-system");
    let cm: ConfigMap = from(json!({"metadata": {"name": "cfg"}, "data": {"k": "v1"}}));
    let mut cm = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(cm.metadata.namespace.as_deref(), Some("kube-system"));
    cm.data.as_mut().unwrap().insert("k".into(), "v2".into());
    let replaced = cms
        .replace("cfg", &PostParams::default(), &cm)
        .await
        .unwrap();
    assert_eq!(replaced.data.unwrap()["k"], "v2");
    assert!(
        replaced.metadata.resource_version > cm.metadata.resource_version
            || replaced.metadata.resource_version.as_deref().unwrap().len()
                > cm.metadata.resource_version.as_deref().unwrap().len()
    );
    match cms.delete("cfg", &DeleteParams::default()).await.unwrap() {
        Either::Right(status) => assert_eq!(status.details.unwrap().name, "cfg"),
        Either::Left(_) => panic!("a configmap without finalizers is removed at once"),
    }
    let (code, reason, message) = api_err(cms.get("cfg").await);
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (404, "NotFound", "configmaps \"cfg\" not found")
    );
    // The body's namespace must match the request's; a missing namespace is 404.
    assert_eq!(
        api_err(
            Api::<ConfigMap>::namespaced(c.clone(), "nowhere")
                .create(&PostParams::default(), &cm)
                .await
        )
        .0,
        400
    );
    cm.metadata.namespace = None;
    cm.metadata.resource_version = None;
    let (code, _, message) = api_err(
        Api::<ConfigMap>::namespaced(c, "nowhere")
            .create(&PostParams::default(), &cm)
            .await,
    );
    assert_eq!(
        (code, message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
}

#[tokio::test]
async fn a_stale_resource_version_is_a_409_conflict_and_a_duplicate_name_is_already_exists() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&server));
    let cm: ConfigMap = from(json!({"metadata": {"name": "cfg"}, "data": {"k": "1"}}));
    let first = cms.create(&PostParams::default(), &cm).await.unwrap();
    let (code, reason, _) = api_err(cms.create(&PostParams::default(), &cm).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let mut a = first.clone();
    a.data.as_mut().unwrap().insert("k".into(), "2".into());
    cms.replace("cfg", &PostParams::default(), &a)
        .await
        .unwrap();
    let mut b = first.clone();
    b.data.as_mut().unwrap().insert("k".into(), "3".into());
    let (code, reason, message) = api_err(cms.replace("cfg", &PostParams::default(), &b).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );
    // A merge patch carrying a stale resourceVersion is a conflict too; one without is not.
    let stale = json!({"metadata": {"resourceVersion": first.metadata.resource_version}, "data": {"k": "4"}});
    assert_eq!(
        api_err(
            cms.patch("cfg", &PatchParams::default(), &Patch::Merge(&stale))
                .await
        )
        .0,
        409
    );
    let ok = cms
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "5"}})),
        )
        .await
        .unwrap();
    assert_eq!(ok.data.unwrap()["k"], "5");
    // A no-op update does not bump the resourceVersion.
    let current = cms.get("cfg").await.unwrap();
    let again = cms
        .replace("cfg", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        current.metadata.resource_version
    );
}

#[tokio::test]
async fn generate_name_gives_distinct_names_and_a_missing_name_is_invalid() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&server));
    let cm: ConfigMap = from(json!({"metadata": {"generateName": "job-"}}));
    let a = cms
        .create(&PostParams::default(), &cm)
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let b = cms
        .create(&PostParams::default(), &cm)
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    assert!(a.starts_with("job-") && a.len() == 9 && a != b, "{a} {b}");
    let (code, reason, _) = api_err(
        cms.create(&PostParams::default(), &ConfigMap::default())
            .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
}

#[tokio::test]
async fn the_status_subresource_separates_spec_from_status() {
    let server = ApiServer::new();
    let pods: Api<Pod> = Api::default_namespaced(client(&server));
    let mut p = pod("p", json!({}));
    p.status = Some(from(json!({"phase": "Running"})));
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending"),
        "create resets pod status"
    );

    // Main resource writes ignore status.
    let patched = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Failed"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert_eq!(patched.metadata.labels.as_ref().unwrap()["x"], "y");
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "labels do not bump the generation"
    );

    // /status writes change only status.
    let st = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "z"}},
            "spec": {"nodeName": "sneaky"}, "status": {"phase": "Running", "podIP": "10.0.0.1"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        st.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(st.metadata.labels.as_ref().unwrap()["x"], "y");
    assert_eq!(st.spec.as_ref().unwrap().node_name, None);
    let mut replaced = st.clone();
    replaced.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let r = pods
        .replace_status("p", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(r.status.unwrap().phase.as_deref(), Some("Succeeded"));

    // Spec changes bump the generation.
    let g = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"activeDeadlineSeconds": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(g.metadata.generation, Some(2));
}

#[tokio::test]
async fn merge_json_strategic_and_apply_patches_follow_their_rules() {
    let server = ApiServer::new();
    let deps: Api<Deployment> = Api::default_namespaced(client(&server));
    let d: Deployment = from(
        json!({"metadata": {"name": "web", "labels": {"a": "1"}}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}],
            "tolerations": [{"key": "t1", "operator": "Exists"}]}}}}),
    );
    deps.create(&PostParams::default(), &d).await.unwrap();

    // Strategic merge: containers merge by name, env by name; tolerations are replaced.
    let smp = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}, {"name": "sidecar", "image": "side:1"}],
        "tolerations": [{"key": "t2", "operator": "Exists"}]}}}});
    let d = deps
        .patch("web", &PatchParams::default(), &Patch::Strategic(smp))
        .await
        .unwrap();
    let spec = d.spec.template.spec.unwrap();
    let containers: Vec<_> = spec
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone().unwrap()))
        .collect();
    assert_eq!(
        containers,
        [
            ("app".to_string(), "app:1".to_string()),
            ("sidecar".to_string(), "side:1".to_string())
        ]
    );
    let env: Vec<_> = spec.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(env, ["A", "B"]);
    assert_eq!(spec.tolerations.unwrap().len(), 1);
    assert_eq!(d.metadata.generation, Some(2));

    // Merge patch: maps merge, null deletes, lists are replaced.
    let d = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": null, "b": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        d.metadata.labels.unwrap().into_iter().collect::<Vec<_>>(),
        [("b".to_string(), "2".to_string())]
    );

    // JSON patch: test + replace; a failing test is 422 and changes nothing.
    let jp: json_patch::Patch = from(json!([{"op": "test", "path": "/spec/replicas", "value": 1},
                                                {"op": "replace", "path": "/spec/replicas", "value": 4}]));
    let d = deps
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(d.spec.replicas, Some(4));
    let bad: json_patch::Patch =
        from(json!([{"op": "test", "path": "/spec/replicas", "value": 1}]));
    assert_eq!(
        api_err(
            deps.patch("web", &PatchParams::default(), &Patch::<()>::Json(bad))
                .await
        )
        .0,
        422
    );

    // Server-side apply creates when absent and merges when present.
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "c", "image": "api:1"}]}}}});
    let pp = PatchParams::apply("karp").force();
    let created = deps
        .patch("api", &pp, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(created.spec.replicas, Some(2));
    let update = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "labels": {"l": "v"}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "api:2"}]}}}});
    let updated = deps
        .patch("api", &pp, &Patch::Apply(&update))
        .await
        .unwrap();
    assert_eq!(updated.metadata.labels.unwrap()["l"], "v");
    let spec = updated.spec;
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("api:2")
    );
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_the_last_one_is_removed() {
    let server = ApiServer::new();
    let mut changes = server.subscribe();
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&server));
    let cm: ConfigMap =
        from(json!({"metadata": {"name": "held", "finalizers": ["a.example/x", "b.example/y"]}}));
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let pending = match cms.delete("held", &DeleteParams::default()).await.unwrap() {
        Either::Left(obj) => obj,
        Either::Right(s) => panic!("object with finalizers was removed: {s:?}"),
    };
    assert!(pending.metadata.deletion_timestamp.is_some());
    // Deleting again changes nothing.
    assert!(cms
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .is_left());
    let fin = json!({"metadata": {"finalizers": ["b.example/y"]}});
    let still = cms
        .patch("held", &PatchParams::default(), &Patch::Merge(&fin))
        .await
        .unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    let fin = json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&fin))
        .await
        .unwrap();
    assert_eq!(api_err(cms.get("held").await).0, 404);
    let kinds: Vec<ChangeKind> = std::iter::from_fn(|| changes.try_recv())
        .map(|c| c.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Added,
            ChangeKind::Modified,
            ChangeKind::Modified,
            ChangeKind::Deleted
        ]
    );
}

fn owned_by(name: &str, uid: &str) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid, "controller": true}])
}

#[tokio::test]
async fn deleting_an_owner_collects_its_dependents() {
    let server = ApiServer::new();
    let c = client(&server);
    let rss: Api<ReplicaSet> = Api::default_namespaced(c.clone());
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let rs: ReplicaSet = from(
        json!({"metadata": {"name": "rs"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}}}),
    );
    let rs = rss.create(&PostParams::default(), &rs).await.unwrap();
    let uid = rs.metadata.uid.unwrap();
    for (name, fin) in [("p1", json!([])), ("p2", json!(["keep/me"]))] {
        let mut p = pod(name, json!({"app": "x"}));
        p.metadata.owner_references = Some(from(owned_by("rs", &uid)));
        p.metadata.finalizers = Some(from(fin));
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    rss.delete("rs", &DeleteParams::background()).await.unwrap();
    assert_eq!(api_err(pods.get("p1").await).0, 404);
    let p2 = pods.get("p2").await.unwrap();
    assert!(
        p2.metadata.deletion_timestamp.is_some(),
        "a dependent with finalizers is marked for deletion"
    );

    // Orphan propagation keeps dependents and drops the owner reference.
    let rs2: ReplicaSet = from(
        json!({"metadata": {"name": "rs2"}, "spec": {"selector": {"matchLabels": {"app": "y"}}}}),
    );
    let uid2 = rss
        .create(&PostParams::default(), &rs2)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let mut p3 = pod("p3", json!({"app": "y"}));
    p3.metadata.owner_references = Some(from(owned_by("rs2", &uid2)));
    pods.create(&PostParams::default(), &p3).await.unwrap();
    rss.delete("rs2", &DeleteParams::orphan()).await.unwrap();
    assert_eq!(
        pods.get("p3").await.unwrap().metadata.owner_references,
        None
    );

    // Deleting a namespace deletes everything in it.
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "team"}})),
    )
    .await
    .unwrap();
    let team: Api<Pod> = Api::namespaced(c.clone(), "team");
    team.create(&PostParams::default(), &pod("t1", json!({})))
        .await
        .unwrap();
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(team.get("t1").await).0, 404);
    assert_eq!(api_err(nss.get("team").await).0, 404);
}

#[tokio::test]
async fn binding_assigns_a_node_once() {
    let server = ApiServer::new();
    let c = client(&server);
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    pods.create(&PostParams::default(), &pod("p", json!({})))
        .await
        .unwrap();
    let binding = Binding {
        metadata: from(json!({"name": "p"})),
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some("n1".into()),
            ..Default::default()
        },
    };
    let body = serde_json::to_vec(&binding).unwrap();
    let req = |body: Vec<u8>| {
        http::Request::post("/api/v1/namespaces/default/pods/p/binding")
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    };
    let status: kube::core::Status = c.request(req(body.clone())).await.unwrap();
    assert_eq!(status.code, 201);
    let p = pods.get("p").await.unwrap();
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("n1"));
    let conds = p.status.unwrap().conditions.unwrap();
    assert!(conds
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.status == "True"));
    let again: kube::Result<kube::core::Status> = c.request(req(body)).await;
    let (code, reason, _) = api_err(again);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
}

async fn running_pods(server: &ApiServer, pods: &Api<Pod>, n: usize, owner: Option<&str>) {
    for i in 0..n {
        let mut p = pod(&format!("web-{i}"), json!({"app": "web"}));
        if let Some(uid) = owner {
            p.metadata.owner_references = Some(from(owned_by("web", uid)));
        }
        pods.create(&PostParams::default(), &p).await.unwrap();
        let st = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(
            &format!("web-{i}"),
            &PatchParams::default(),
            &Patch::Merge(&st),
        )
        .await
        .unwrap();
    }
    let _ = server;
}

async fn set_pdb(pdbs: &Api<PodDisruptionBudget>, field: &str, value: Value) {
    let pdb: PodDisruptionBudget = from(json!({"metadata": {"name": "web-pdb"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, field: value}}));
    let _ = pdbs.delete("web-pdb", &DeleteParams::default()).await;
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
}

#[tokio::test]
async fn eviction_honours_pod_disruption_budgets() {
    let server = ApiServer::new();
    let c = client(&server);
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(c.clone());
    running_pods(&server, &pods, 3, None).await;

    set_pdb(&pdbs, "minAvailable", json!(3)).await;
    let status = pdbs.get("web-pdb").await.unwrap().status.unwrap();
    assert_eq!(
        (
            status.current_healthy,
            status.desired_healthy,
            status.disruptions_allowed,
            status.expected_pods
        ),
        (Some(3), Some(3), Some(0), Some(3))
    );
    let (code, reason, message) = api_err(pods.evict("web-0", &EvictParams::default()).await);
    assert_eq!((code, reason.as_str()), (429, "TooManyRequests"));
    assert!(
        message.starts_with("Cannot evict pod as it would violate the pod's disruption budget."),
        "{message}"
    );
    assert!(message.contains("web-pdb"), "{message}");

    set_pdb(&pdbs, "minAvailable", json!(2)).await;
    let ok = pods.evict("web-0", &EvictParams::default()).await.unwrap();
    assert_eq!(ok.code, 201);
    assert_eq!(api_err(pods.get("web-0").await).0, 404);
    assert_eq!(
        pdbs.get("web-pdb")
            .await
            .unwrap()
            .status
            .unwrap()
            .disruptions_allowed,
        Some(0)
    );
    assert_eq!(
        api_err(pods.evict("web-1", &EvictParams::default()).await).0,
        429
    );

    // minAvailable 50% of 2 pods = 1 → one eviction allowed.
    set_pdb(&pdbs, "minAvailable", json!("50%")).await;
    pods.evict("web-1", &EvictParams::default()).await.unwrap();
    assert_eq!(
        api_err(pods.evict("web-2", &EvictParams::default()).await).0,
        429
    );

    // Pending pods are evicted without looking at budgets.
    pods.create(
        &PostParams::default(),
        &pod("web-pending", json!({"app": "web"})),
    )
    .await
    .unwrap();
    pods.evict("web-pending", &EvictParams::default())
        .await
        .unwrap();

    // Every answer is on record, refused ones with the budget that refused them.
    let record: Vec<(String, bool, Option<String>)> = server
        .evictions()
        .into_iter()
        .map(|e| (e.pod, e.allowed, e.pdb))
        .collect();
    let pdb = || Some("web-pdb".to_string());
    assert_eq!(
        record,
        [
            ("web-0".to_string(), false, pdb()),
            ("web-0".to_string(), true, pdb()),
            ("web-1".to_string(), false, pdb()),
            ("web-1".to_string(), true, pdb()),
            ("web-2".to_string(), false, pdb()),
            ("web-pending".to_string(), true, None),
        ]
    );
    assert!(server.evictions()[0].message.contains("web-pdb"));
}

#[tokio::test]
async fn max_unavailable_percentages_round_up_against_the_controller_scale() {
    let server = ApiServer::new();
    let c = client(&server);
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(c.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(c.clone());
    let rs: ReplicaSet = from(
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}}}),
    );
    let uid = rss
        .create(&PostParams::default(), &rs)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    running_pods(&server, &pods, 4, Some(&uid)).await;

    // 30% of 4 = 1.2 → 2 unavailable allowed.
    set_pdb(&pdbs, "maxUnavailable", json!("30%")).await;
    let st = pdbs.get("web-pdb").await.unwrap().status.unwrap();
    assert_eq!(
        (st.expected_pods, st.desired_healthy, st.disruptions_allowed),
        (Some(4), Some(2), Some(2))
    );
    pods.evict("web-0", &EvictParams::default()).await.unwrap();
    pods.evict("web-1", &EvictParams::default()).await.unwrap();
    assert_eq!(
        api_err(pods.evict("web-2", &EvictParams::default()).await).0,
        429
    );

    // maxUnavailable as an integer.
    set_pdb(&pdbs, "maxUnavailable", json!(3)).await;
    pods.evict("web-2", &EvictParams::default()).await.unwrap();
    assert_eq!(
        api_err(pods.evict("web-3", &EvictParams::default()).await).0,
        429
    );
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, default: 3}
              replicas: {type: integer}
"#;

#[tokio::test]
async fn a_crd_registers_its_kind_for_crud_with_status_and_scale() {
    let server = ApiServer::new();
    let c = client(&server);
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd: CustomResourceDefinition = serde_yaml::from_str(WIDGET_CRD).unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let conds = created.status.unwrap().conditions.unwrap();
    assert!(conds
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True"));

    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::default_namespaced_with(c.clone(), &ar);
    let w = DynamicObject::new("w1", &ar)
        .data(json!({"spec": {"replicas": 1}, "status": {"ready": true}}));
    let w = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(w.data["spec"]["size"], 3, "schema defaults are applied");
    assert!(
        w.data.get("status").is_none(),
        "status is dropped on create"
    );
    let w = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true, "replicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["ready"], true);
    let scale = widgets
        .patch_scale(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(5));
    assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["replicas"], 5);
    assert_eq!(
        widgets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let (code, _, _) = api_err(widgets.get("w1").await);
    assert_eq!(code, 404);
    assert!(server
        .list(&Gvr::new("example.com", "v1", "widgets"), None)
        .is_empty());
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_spec_replicas() {
    let server = ApiServer::new();
    let deps: Api<Deployment> = Api::default_namespaced(client(&server));
    let d: Deployment = from(
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
    );
    deps.create(&PostParams::default(), &d).await.unwrap();
    let s = deps.get_scale("web").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(1));
    assert_eq!(s.status.unwrap().selector.as_deref(), Some("app=web"));
    deps.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    let d = deps.get("web").await.unwrap();
    assert_eq!(d.spec.replicas, Some(3));
    assert_eq!(d.metadata.generation, Some(2));
}

#[tokio::test]
async fn delete_collection_removes_what_the_selector_matches() {
    let server = ApiServer::new();
    let pods: Api<Pod> = Api::default_namespaced(client(&server));
    for (n, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        pods.create(&PostParams::default(), &pod(n, json!({"app": app})))
            .await
            .unwrap();
    }
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=x"),
    )
    .await
    .unwrap();
    let left: Vec<_> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["c"]);
}

async fn raw(server: &ApiServer, method: &str, uri: &str, ctype: &str, body: &str) -> (u16, Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ctype)
        .body(body.to_string())
        .unwrap();
    let resp = server.clone().oneshot(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_input_gets_status_errors_never_a_panic() {
    let server = ApiServer::new();
    let cases = [
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            "{not json",
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            "[1,2]",
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            r#"{"kind":"Node","apiVersion":"v1","metadata":{"name":"x"}}"#,
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/nothings",
            "",
            "",
            404,
            "NotFound",
        ),
        ("GET", "/apis/no.such/v1/things", "", "", 404, "NotFound"),
        (
            "GET",
            "/api/v1/namespaces/default/pods/a/b/c/d",
            "",
            "",
            404,
            "NotFound",
        ),
        ("GET", "/api/v1/nodes/n1/eviction", "", "", 404, "NotFound"),
        (
            "PUT",
            "/api/v1/namespaces/default/pods",
            "application/json",
            "{}",
            405,
            "MethodNotAllowed",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/pods/x",
            "text/plain",
            "{}",
            404,
            "NotFound",
        ),
        (
            "GET",
            "/api/v1/pods?labelSelector=a+in+b",
            "",
            "",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/pods?watch=1&resourceVersion=abc",
            "",
            "",
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/vnd.kubernetes.protobuf",
            "k8s\0",
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/cbor",
            "\u{a0}",
            415,
            "UnsupportedMediaType",
        ),
    ];
    for (method, uri, ctype, body, code, reason) in cases {
        let (got, status) = raw(&server, method, uri, ctype, body).await;
        assert_eq!(
            (got, status["reason"].as_str()),
            (code, Some(reason)),
            "{method} {uri}: {status}"
        );
        assert_eq!(status["kind"], "Status");
    }
    server
        .apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
        .unwrap();
    let (code, status) = raw(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c",
        "text/plain",
        "{}",
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let (code, _) = raw(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c",
        "application/json-patch+json",
        r#"[{"op":"remove","path":"/nope"}]"#,
    )
    .await;
    assert_eq!(code, 422);
    let (code, _) = raw(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c",
        "application/merge-patch+json",
        "[]",
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn in_process_helpers_load_fixtures_and_report_changes() {
    let server = ApiServer::new();
    let mut changes = server.subscribe();
    let applied = server
        .apply_yaml(
            "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {phase: Running}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: apps}\nspec: {containers: [{name: c, image: i}]}\n\
             status: {phase: Running}\n---\n",
        )
        .unwrap();
    assert_eq!(applied.len(), 2);
    let p = server.get(&Gvr::core("pods"), Some("apps"), "p").unwrap();
    assert_eq!(
        p["status"]["phase"], "Running",
        "fixtures keep their status"
    );
    assert!(
        server.get(&Gvr::core("namespaces"), None, "apps").is_some(),
        "missing namespaces are created"
    );
    server.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"l": "v"}}})).unwrap();
    assert_eq!(
        server.get(&Gvr::core("nodes"), None, "n1").unwrap()["metadata"]["labels"]["l"],
        "v"
    );
    assert_eq!(server.list(&Gvr::core("pods"), None).len(), 1);
    server
        .delete(&Gvr::core("pods"), Some("apps"), "p")
        .unwrap();
    assert!(server
        .delete(&Gvr::core("pods"), Some("apps"), "p")
        .unwrap_err()
        .is_not_found());
    let seen: Vec<(ChangeKind, String)> = std::iter::from_fn(|| changes.try_recv())
        .map(|c| (c.kind, c.gvr.resource))
        .collect();
    assert_eq!(
        seen,
        [
            (ChangeKind::Added, "nodes".to_string()),
            (ChangeKind::Added, "namespaces".to_string()),
            (ChangeKind::Added, "pods".to_string()),
            (ChangeKind::Modified, "nodes".to_string()),
            (ChangeKind::Deleted, "pods".to_string()),
        ]
    );
    assert!(server.apply_yaml("kind: [").is_err());
    assert!(server
        .apply(json!({"apiVersion": "v9", "kind": "Nope", "metadata": {"name": "x"}}))
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn dry_run_requests_answer_without_changing_anything() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&server));
    let rv = server.resource_version();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let cm: ConfigMap = from(json!({"metadata": {"name": "dry"}, "data": {"k": "v"}}));
    let answered = cms.create(&dry, &cm).await.unwrap();
    assert_eq!(answered.metadata.name.as_deref(), Some("dry"));
    assert_eq!(api_err(cms.get("dry").await).0, 404);
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let rv_after_create = server.resource_version();
    assert_ne!(rv, rv_after_create);
    let dp = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    cms.delete("dry", &dp).await.unwrap();
    let pp = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let patched = cms
        .patch("dry", &pp, &Patch::Merge(json!({"data": {"k": "w"}})))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "w");
    assert_eq!(cms.get("dry").await.unwrap().data.unwrap()["k"], "v");
    assert_eq!(server.resource_version(), rv_after_create);
}

#[tokio::test]
async fn lists_are_served_whole_as_the_watch_cache_serves_them() {
    // kubectl and kube-runtime ask for pages of 500; like kube-apiserver's watch cache, the
    // embedded server answers with the whole list and no continue token, which clients take as
    // the last page (paging measured slower: 17.4 s against 9.5 s for kubectl on 20 000 pods).
    let server = ApiServer::new();
    let pods: Api<Pod> = Api::default_namespaced(client(&server));
    for name in ["a", "b", "c"] {
        pods.create(&PostParams::default(), &pod(name, json!({"app": "web"})))
            .await
            .unwrap();
    }
    let list = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(list.items.len(), 3);
    assert_eq!(list.metadata.continue_, None);
}
