//! kube-runtime over the in-process server: raw watches, watcher, reflector, 410 Gone relists and a
//! Controller.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use karp_apiserver::{ApiServer, ApiServerConfig};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::Client;
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"v": "0"}}),
    )
    .unwrap()
}

async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn summary(e: &WatchEvent<ConfigMap>) -> String {
    match e {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(s) => format!("ERROR {}", s.code),
    }
}

#[tokio::test]
async fn a_watch_sees_added_modified_deleted_in_order_and_selector_transitions() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(Client::new(server.clone(), "default"));
    cms.create(&PostParams::default(), &cm("before", json!({"app": "x"})))
        .await
        .unwrap();

    // resourceVersion 0: current objects first, then changes.
    let all = cms.watch(&WatchParams::default(), "0").await.unwrap();
    let selected = cms
        .watch(&WatchParams::default().labels("app=x"), "0")
        .await
        .unwrap();
    let rv = server.resource_version();
    let from_rv = cms.watch(&WatchParams::default(), &rv).await.unwrap();

    cms.create(&PostParams::default(), &cm("a", json!({"app": "x"})))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();

    let all: Vec<String> = all.take(6).map(|e| summary(&e.unwrap())).collect().await;
    assert_eq!(
        all,
        [
            "ADDED before",
            "ADDED a",
            "MODIFIED a",
            "MODIFIED a",
            "MODIFIED a",
            "DELETED a"
        ]
    );
    let selected: Vec<String> = selected
        .take(6)
        .map(|e| summary(&e.unwrap()))
        .collect()
        .await;
    assert_eq!(
        selected,
        [
            "ADDED before",
            "ADDED a",
            "MODIFIED a",
            "DELETED a",
            "ADDED a",
            "DELETED a"
        ]
    );
    let from_rv: Vec<String> = from_rv
        .take(5)
        .map(|e| summary(&e.unwrap()))
        .collect()
        .await;
    assert_eq!(
        from_rv,
        [
            "ADDED a",
            "MODIFIED a",
            "MODIFIED a",
            "MODIFIED a",
            "DELETED a"
        ]
    );
}

#[tokio::test]
async fn bookmarks_carry_the_current_resource_version_and_timeouts_end_the_stream() {
    let server = ApiServer::with_config(
        ApiServerConfig::default().bookmark_interval(Duration::from_millis(50)),
    );
    let cms: Api<ConfigMap> = Api::default_namespaced(Client::new(server.clone(), "default"));
    cms.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let rv = server.resource_version();
    let wp = WatchParams {
        bookmarks: true,
        ..WatchParams::default()
    }
    .timeout(1);
    let events: Vec<_> = cms
        .watch(&wp, &rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(events.len() >= 2, "bookmarks every 50 ms over one second");
    for e in &events {
        match e {
            WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
            other => panic!("unexpected {}", summary(other)),
        }
    }
}

#[tokio::test]
async fn a_watch_from_an_expired_resource_version_gets_410_gone() {
    let server = ApiServer::with_history(3);
    let cms: Api<ConfigMap> = Api::default_namespaced(Client::new(server.clone(), "default"));
    let first = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    for i in 0..5 {
        cms.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let rv = first.metadata.resource_version.unwrap();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(s))) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn a_watcher_relists_after_410_and_a_reflector_converges() {
    // A tiny history and a 1 s watch timeout: while the pod watch is quiet, configmap writes push
    // its resourceVersion out of the history, so the re-watch gets 410 and the watcher relists.
    let server = ApiServer::with_history(2);
    let client = Client::new(server.clone(), "default");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap()
    };
    pods.create(&PostParams::default(), &pod("p0"))
        .await
        .unwrap();

    let (reader, writer) = reflector::store::<Pod>();
    let inits = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(AtomicUsize::new(0));
    let (i2, g2) = (inits.clone(), gone.clone());
    let stream = watcher(
        pods.clone(),
        watcher::Config::default().timeout(1).disable_bookmarks(),
    );
    let task = tokio::spawn(async move {
        let mut s = reflector::reflector(writer, stream).boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(watcher::Event::Init) => {
                    i2.fetch_add(1, Ordering::SeqCst);
                }
                Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                    g2.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    });
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 1);

    pods.create(&PostParams::default(), &pod("p1"))
        .await
        .unwrap();
    eventually("p1 in the store", || {
        reader
            .get(&reflector::ObjectRef::new("p1").within("default"))
            .is_some()
    })
    .await;
    for i in 0..4 {
        cms.create(
            &PostParams::default(),
            &cm(&format!("noise-{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    eventually("a 410 and a relist", || {
        gone.load(Ordering::SeqCst) >= 1 && inits.load(Ordering::SeqCst) >= 2
    })
    .await;
    // Changes after the relist still arrive.
    pods.delete("p0", &DeleteParams::default()).await.unwrap();
    pods.create(&PostParams::default(), &pod("p2"))
        .await
        .unwrap();
    eventually("the store converges", || {
        let mut names: Vec<String> = reader
            .state()
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names == ["p1", "p2"]
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn a_controller_reconciles_after_a_change() {
    let server = ApiServer::new();
    let client = Client::new(server.clone(), "default");
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();

    struct Ctx {
        api: Api<ConfigMap>,
    }
    async fn reconcile(obj: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
        let v = obj
            .data
            .as_ref()
            .and_then(|d| d.get("v"))
            .cloned()
            .unwrap_or_default();
        let seen = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("seen"))
            .cloned();
        if seen.as_deref() != Some(v.as_str()) {
            let patch = json!({"metadata": {"annotations": {"seen": v}}});
            ctx.api
                .patch(
                    obj.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<ConfigMap>, _: &kube::Error, _: Arc<Ctx>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }
    let ctx = Arc::new(Ctx { api: cms.clone() });
    let controller = tokio::spawn(
        Controller::new(cms.clone(), watcher::Config::default())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {}),
    );
    let seen = || {
        server
            .get(
                &karp_apiserver::Gvr::core("configmaps"),
                Some("default"),
                "c",
            )
            .and_then(|o| {
                o["metadata"]["annotations"]["seen"]
                    .as_str()
                    .map(str::to_string)
            })
    };
    eventually("the first reconcile", || seen().as_deref() == Some("0")).await;
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    eventually("the reconcile after the change", || {
        seen().as_deref() == Some("1")
    })
    .await;
    controller.abort();
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_a_bookmark() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(Client::new(server.clone(), "default"));
    cms.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = watcher(cms.clone(), watcher::Config::default().streaming_lists())
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    cms.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    eventually("two objects", || reader.state().len() == 2).await;
    task.abort();
}
