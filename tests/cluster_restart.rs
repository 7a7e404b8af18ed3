//! A kube-runtime watcher survives a kube-apiserver restart: a change made after the
//! restart reaches the same watch stream. Runs on a control plane of its own (the restart
//! would disturb other tests); skipped, saying so, on a cluster of the user's.
//!
//! Run with `cargo test --test cluster_restart`.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{DynamicObject, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::cluster::*;
use tokio::sync::mpsc;

/// Receives names from the watcher until `name` arrives.
async fn observe(rx: &mut mpsc::UnboundedReceiver<String>, name: &str, timeout: Duration) {
    let seen = tokio::time::timeout(timeout, async {
        while let Some(n) = rx.recv().await {
            if n == name {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "the watcher did not deliver {name} within {timeout:?}"
    );
}

#[tokio::test]
async fn a_watcher_survives_an_apiserver_restart() {
    let Some(mut cp) = private_control_plane("a_watcher_survives_an_apiserver_restart").await else {
        return;
    };
    let client = client_from_kubeconfig(cp.kubeconfig_path()).await.unwrap();
    let version = server_version(&client).await.unwrap();
    install_crd_yaml(&client, WIDGET_CRD_YAML, &version)
        .await
        .unwrap();
    let ns = "restart";
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &widget_resource());

    // A watcher on custom resources, as the operator's controllers have.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Ok(obj) = item {
                if tx.send(obj.name_any()).is_err() {
                    break;
                }
            }
        }
    });

    api.create(
        &PostParams::default(),
        &widget("before", json!({"size": "small"})),
    )
    .await
    .unwrap();
    observe(&mut rx, "before", TIMEOUT).await;

    let t0 = Instant::now();
    cp.restart_apiserver().await.expect("restart");
    eprintln!("kube-apiserver restarted in {:.1?}", t0.elapsed());

    // The same client (its connections died with the old process) and the same watcher.
    api.create(&PostParams::default(), &widget("after", json!({"size": "large"})))
        .await
        .unwrap();
    let t1 = Instant::now();
    observe(&mut rx, "after", TIMEOUT).await;
    eprintln!(
        "change after the restart observed {:.1?} after it was made",
        t1.elapsed()
    );
    task.abort();
}
