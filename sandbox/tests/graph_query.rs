//! Contract tests for listing, filtering, paging and advanced-query gating (§3.6,
//! checklist 7) and delta queries (§3.7), through plain HTTP.

mod graph_support;

use std::time::Duration;

use graph_support::*;
use sandbox::graph::EmulatorConfig;
use serde_json::{json, Value};

fn ids(r: &Resp) -> Vec<String> {
    r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

async fn seed_apps(env: &Env) -> Vec<Value> {
    let mut out = Vec::new();
    for (name, tags) in [
        ("ns1-alpha", vec!["k8s-operator", "ns:ns1"]),
        ("ns1-beta", vec!["k8s-operator", "ns:ns1"]),
        ("ns2-gamma", vec!["k8s-operator", "ns:ns2"]),
        ("manual-app", vec![]),
    ] {
        out.push(
            env.create_app(
                json!({"displayName": name, "tags": tags, "description": format!("{name} web app")}),
            )
            .await,
        );
    }
    out
}

#[tokio::test]
async fn s3_6_checklist7_tags_any_startswith_and_app_id_work_without_advanced_headers() {
    let env = Env::new().await;
    let apps = seed_apps(&env).await;
    let r = env
        .get("/applications?$filter=tags/any(t:t eq 'k8s-operator')")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r).len(), 3);
    assert_eq!(
        r.body["@odata.context"],
        format!("{}/$metadata#applications", env.emu.graph_v1())
    );
    let r = env.get("/applications?$filter=tags/any(t:t eq 'ns:ns1')").await;
    assert_eq!(ids(&r).len(), 2);
    let r = env
        .get("/applications?$filter=startsWith(displayName,'ns1-')")
        .await;
    assert_eq!(ids(&r).len(), 2);
    let r = env
        .get("/applications?$filter=startswith(displayName, 'NS2')")
        .await;
    assert_eq!(
        ids(&r),
        vec![apps[2]["id"].as_str().unwrap().to_string()],
        "case-insensitive"
    );
    let r = env
        .get(&format!(
            "/applications?$filter=appId eq '{}'",
            apps[3]["appId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ids(&r), vec![apps[3]["id"].as_str().unwrap().to_string()]);
    let r = env
        .get(&format!(
            "/applications?$filter=appId in ('{}', '{}')",
            apps[0]["appId"].as_str().unwrap(),
            apps[1]["appId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ids(&r).len(), 2);
    let r = env
        .get("/applications?$filter=tags/any(t:startswith(t,'ns:')) and startswith(displayName,'ns2')")
        .await;
    assert_eq!(ids(&r).len(), 1);
    let r = env
        .get("/applications?$filter=displayName eq 'manual-app'&$select=id,displayName")
        .await;
    assert_eq!(r.body["value"][0].as_object().unwrap().len(), 2);
    // Unknown property and syntax errors.
    assert_eq!(
        env.get("/applications?$filter=bogus eq 'x'").await.code(),
        "Request_UnsupportedQuery"
    );
    assert_eq!(
        env.get("/applications?$filter=displayName eq").await.code(),
        "Request_BadRequest"
    );
}

#[tokio::test]
async fn s3_6_paging_follows_next_link_until_absent() {
    let env = Env::new().await;
    for i in 0..12 {
        env.create_app(json!({"displayName": format!("page-{i:02}"), "tags": ["paged"]}))
            .await;
    }
    env.create_app(json!({"displayName": "other"})).await;
    let mut url = "/applications?$filter=tags/any(t:t eq 'paged')&$top=5".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = env.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.text);
        pages += 1;
        seen.extend(ids(&r));
        match r.body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&env.emu.graph_v1()), "an absolute URL: {next}");
                assert!(next.contains("skiptoken"));
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 12);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 12, "no duplicates across pages");
    // Default page size is 100; $top must be 1..=999.
    let r = env.get("/applications").await;
    assert!(r.body.get("@odata.nextLink").is_none());
    for top in ["0", "1000", "x"] {
        assert_eq!(
            env.get(&format!("/applications?$top={top}")).await.code(),
            "Request_BadRequest",
            "{top}"
        );
    }
}

#[tokio::test]
async fn s3_6_checklist7_advanced_queries_need_consistency_level_eventual_and_count() {
    let env = Env::new().await;
    seed_apps(&env).await;
    // $count segment
    let r = env.get("/applications/$count").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "Request_BadRequest");
    assert_eq!(r.body["error"]["message"], "$count is not currently supported.");
    let r = env.get_eventual("/applications/$count").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(r.text, "5", "4 seeded + the admin app");
    // $search
    let r = env.get("/applications?$search=\"displayName:alpha\"").await;
    assert_eq!(r.code(), "Request_UnsupportedQuery");
    let r = env
        .get_eventual("/applications?$search=\"displayName:alpha\"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r).len(), 1);
    // ne / not / endsWith / advanced properties
    for filter in [
        "displayName ne 'manual-app'",
        "not(displayName eq 'manual-app')",
        "endswith(displayName,'-beta')",
        "description eq 'x'",
        "web/redirectUris/any(u:u eq 'https://x')",
        "tags/$count eq 0",
    ] {
        let r = env.get(&format!("/applications?$filter={filter}")).await;
        assert_eq!(r.status, 400, "{filter}");
        assert_eq!(r.code(), "Request_UnsupportedQuery", "{filter}");
        let r = env.get_eventual(&format!("/applications?$filter={filter}")).await;
        assert_eq!(r.status, 400, "header alone is not enough: {filter}");
        let r = env
            .get_eventual(&format!("/applications?$filter={filter}&$count=true"))
            .await;
        assert_eq!(r.status, 200, "{filter}: {}", r.text);
    }
    let r = env
        .get_eventual("/applications?$filter=endswith(displayName,'-beta')&$count=true")
        .await;
    assert_eq!(ids(&r).len(), 1);
    assert_eq!(r.body["@odata.count"], 1);
    let r = env
        .get_eventual("/applications?$filter=tags/$count eq 0&$count=true")
        .await;
    assert_eq!(ids(&r).len(), 2, "manual-app and the admin app");
    // $orderby with $filter
    let r = env
        .get("/applications?$filter=startswith(displayName,'ns')&$orderby=displayName")
        .await;
    assert_eq!(r.code(), "Request_UnsupportedQuery");
    let r = env
        .get_eventual(
            "/applications?$filter=startswith(displayName,'ns')&$orderby=displayName desc&$count=true",
        )
        .await;
    assert_eq!(r.status, 200);
    let names: Vec<&str> = r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ns2-gamma", "ns1-beta", "ns1-alpha"]);
    let r = env.get("/applications?$orderby=displayName").await;
    assert_eq!(r.status, 200, "$orderby alone is fine");
    // ?$count=true without the header is silently ignored.
    let r = env.get("/applications?$count=true").await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("@odata.count").is_none());
}

#[tokio::test]
async fn s3_6_consistency_level_is_not_carried_into_next_link_and_count_is_on_the_first_page_only() {
    let env = Env::new().await;
    for i in 0..3 {
        env.create_app(json!({"displayName": format!("adv-{i}")})).await;
    }
    let first = env.get_eventual("/applications?$filter=endswith(displayName,'-0') or endswith(displayName,'-1') or endswith(displayName,'-2')&$count=true&$top=2").await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["@odata.count"], 3);
    let next = first.body["@odata.nextLink"].as_str().unwrap().to_string();
    let without = env.get(&next).await;
    assert_eq!(without.status, 400, "the client must resend ConsistencyLevel");
    let with = env.get_eventual(&next).await;
    assert_eq!(with.status, 200);
    assert_eq!(ids(&with).len(), 1);
    assert!(with.body.get("@odata.count").is_none());
}

#[tokio::test]
async fn s3_7_delta_initial_sync_then_changes_soft_deletes_and_purges() {
    let env = Env::new().await;
    let a = env.create_app(json!({"displayName": "d-a"})).await;
    let b = env.create_app(json!({"displayName": "d-b"})).await;
    let c = env.create_app(json!({"displayName": "d-c"})).await;
    // Initial sync in pages of 2 (4 apps with the admin app).
    let mut url = "/applications/delta?$top=2&$select=displayName".to_string();
    let mut seen = Vec::new();
    let delta_link = loop {
        let r = env.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for v in r.body["value"].as_array().unwrap() {
            assert!(v["id"].is_string(), "id is always returned");
            assert!(v.get("tags").is_none(), "$select applies");
            seen.push(v["id"].as_str().unwrap().to_string());
        }
        if let Some(next) = r.body["@odata.nextLink"].as_str() {
            assert!(next.contains("$skiptoken="));
            url = next.to_string();
        } else {
            break r.body["@odata.deltaLink"]
                .as_str()
                .expect("the last page has a deltaLink")
                .to_string();
        }
    };
    assert_eq!(seen.len(), 4);
    assert!(delta_link.contains("$deltatoken="));
    // No changes: empty, with a new deltaLink.
    let r = env.get(&delta_link).await;
    assert_eq!(r.body["value"], json!([]));
    let link = r.body["@odata.deltaLink"].as_str().unwrap().to_string();
    // Change one, soft-delete one, soft-delete + purge one, create one.
    assert_eq!(
        env.patch(
            &format!("/applications/{}", a["id"].as_str().unwrap()),
            json!({"displayName": "d-a2"})
        )
        .await
        .status,
        204
    );
    assert_eq!(
        env.delete(&format!("/applications/{}", b["id"].as_str().unwrap()))
            .await
            .status,
        204
    );
    assert_eq!(
        env.delete(&format!("/applications/{}", c["id"].as_str().unwrap()))
            .await
            .status,
        204
    );
    assert_eq!(
        env.delete(&format!("/directory/deletedItems/{}", c["id"].as_str().unwrap()))
            .await
            .status,
        204
    );
    let d = env.create_app(json!({"displayName": "d-d"})).await;
    // The round is paged too: $top is encoded in the token with the other options.
    let (values, next_link) = round(&env, &link).await;
    assert_eq!(values.len(), 4);
    let find = |x: &Value| {
        values
            .iter()
            .find(|v| v["id"] == x["id"])
            .cloned()
            .unwrap_or_else(|| panic!("{} missing", x["id"]))
    };
    assert_eq!(find(&a)["displayName"], "d-a2", "$select is encoded in the token");
    assert_eq!(find(&b)["@removed"], json!({"reason": "changed"}));
    assert_eq!(find(&c)["@removed"], json!({"reason": "deleted"}));
    assert_eq!(find(&d)["displayName"], "d-d");
    assert_eq!(round(&env, &next_link).await.0, Vec::<Value>::new());
}

/// Contract §3.7: "Updated objects show `id` plus at least the changed properties" and new
/// objects appear whole. The emulator lists exactly the changed ones, so a client that took
/// an update for the whole object would see its other properties vanish.
#[tokio::test]
async fn s3_7_delta_lists_updates_as_id_plus_the_changed_properties() {
    let env = Env::new().await;
    let a = env
        .create_app(json!({"displayName": "p-a", "tags": ["keep"], "description": "before"}))
        .await;
    let id = a["id"].as_str().unwrap().to_string();
    let (_, link) = round(&env, "/applications/delta").await;
    let path = format!("/applications/{id}");
    assert_eq!(
        env.patch(&path, json!({"description": "after"})).await.status,
        204
    );
    let (values, link) = round(&env, &link).await;
    let update = values.iter().find(|v| v["id"] == id.as_str()).expect("listed");
    let keys: Vec<&String> = update.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["description", "id"], "{update}");
    assert_eq!(update["description"], "after");

    let add = env
        .post(&format!("{path}/addPassword"), json!({"passwordCredential": {}}))
        .await;
    assert_eq!(add.status, 200, "{}", add.text);
    let (values, _) = round(&env, &link).await;
    let update = values.iter().find(|v| v["id"] == id.as_str()).expect("listed");
    assert!(
        update.get("displayName").is_none() && update.get("tags").is_none(),
        "{update}"
    );
    assert_eq!(
        update["passwordCredentials"].as_array().map(Vec::len),
        Some(1),
        "{update}"
    );

    // A new object, and one created and then changed within the round, appear whole.
    let (_, link) = round(&env, "/applications/delta?$deltatoken=latest").await;
    let n = env.create_app(json!({"displayName": "p-n", "tags": ["t"]})).await;
    let n_id = n["id"].as_str().unwrap();
    assert_eq!(
        env.patch(&format!("/applications/{n_id}"), json!({"notes": "x"}))
            .await
            .status,
        204
    );
    let (values, _) = round(&env, &link).await;
    let new = values.iter().find(|v| v["id"] == n_id).expect("listed");
    assert_eq!(new["displayName"], "p-n");
    assert_eq!(new["tags"], json!(["t"]));
}

/// Follow one delta round's nextLinks; returns its values and the final deltaLink.
async fn round(env: &Env, link: &str) -> (Vec<Value>, String) {
    let mut values = Vec::new();
    let mut url = link.to_string();
    loop {
        let r = env.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.text);
        values.extend(r.body["value"].as_array().unwrap().iter().cloned());
        match (
            r.body["@odata.nextLink"].as_str(),
            r.body["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), None) => url = next.to_string(),
            (None, Some(delta)) => return (values, delta.to_string()),
            other => panic!("exactly one of nextLink/deltaLink expected: {other:?}"),
        }
    }
}

#[tokio::test]
async fn s3_7_delta_latest_and_id_filter() {
    let env = Env::new().await;
    let a = env.create_app(json!({"displayName": "l-a"})).await;
    let b = env.create_app(json!({"displayName": "l-b"})).await;
    let r = env.get("/applications/delta?$deltatoken=latest").await;
    assert_eq!(r.body["value"], json!([]), "latest: no data");
    let link = r.body["@odata.deltaLink"].as_str().unwrap().to_string();
    assert_eq!(env.get(&link).await.body["value"], json!([]));
    let filter = format!(
        "/applications/delta?$filter=id eq '{}'",
        a["id"].as_str().unwrap()
    );
    let r = env.get(&filter).await;
    assert_eq!(ids(&r), vec![a["id"].as_str().unwrap().to_string()]);
    let link = r.body["@odata.deltaLink"].as_str().unwrap().to_string();
    env.patch(
        &format!("/applications/{}", b["id"].as_str().unwrap()),
        json!({"notes": "x"}),
    )
    .await;
    assert_eq!(env.get(&link).await.body["value"], json!([]), "b is filtered out");
    assert_eq!(
        env.get("/applications/delta?$filter=startswith(displayName,'l')")
            .await
            .code(),
        "Request_UnsupportedQuery"
    );
}

#[tokio::test]
async fn s3_7_delta_reports_an_app_created_under_replication_lag_once_it_replicates() {
    let cfg = EmulatorConfig::default()
        .with_clock_speed(0.0)
        .with_replication_lag(Duration::from_secs(5));
    let env = Env::with_config(cfg).await;
    let r = env.get("/applications/delta?$deltatoken=latest").await;
    let link = r.body["@odata.deltaLink"].as_str().unwrap().to_string();
    let app = env.create_app(json!({"displayName": "lagging"})).await;
    let r = env.get(&link).await;
    assert_eq!(r.body["value"], json!([]), "not replicated yet");
    let link = r.body["@odata.deltaLink"].as_str().unwrap().to_string();
    env.emu.advance_clock(Duration::from_secs(5));
    let r = env.get(&link).await;
    assert_eq!(ids(&r), vec![app["id"].as_str().unwrap().to_string()]);
}
