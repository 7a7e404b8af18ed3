//! Contract tests for the realism switches: replication lag (§7, checklist 3), throttling
//! buckets and injected 429s (§2.2, checklist 6), injected 503/504, dropped connections and
//! latency (§2.1), and the tenant password-lifetime policy (§4.1), through plain HTTP.
//! Time-dependent cases run on a frozen emulated clock moved with `advance_clock`.

mod graph_support;

use std::time::{Duration, Instant};

use graph_support::*;
use reqwest::Method;
use sandbox::graph::{
    EmulatorConfig, FaultConfig, FaultScope, GraphPermission, Quota, SpLagError, ThrottleConfig,
};
use serde_json::{json, Value};

fn frozen() -> EmulatorConfig {
    EmulatorConfig::default().with_clock_speed(0.0)
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

fn retry_after(r: &Resp) -> f64 {
    r.header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("a number of seconds")
}

/// Contract §2.2: the 429 body carries innerError code/status "429" and "Please retry after".
fn assert_429(r: &Resp) {
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.code(), "TooManyRequests");
    let inner = &r.body["error"]["innerError"];
    assert_eq!(inner["code"], "429");
    assert_eq!(inner["status"], "429");
    assert_eq!(inner["message"], "Please retry after");
    assert_eq!(r.header("request-id"), inner["request-id"].as_str());
    assert!(inner["client-request-id"].is_string() && inner["date"].is_string());
}

#[tokio::test]
async fn s7_checklist3_new_app_is_404_for_reads_patch_and_add_password_until_replicated() {
    let env = Env::with_config(frozen().with_replication_lag(Duration::from_secs(5))).await;
    let app = env
        .create_app(json!({"displayName": "lagging", "uniqueName": "dcr-lag"}))
        .await;
    let app_id = app["appId"].as_str().unwrap();
    let by_id = format!("/applications/{}", id(&app));
    for path in [
        by_id.clone(),
        format!("/applications(appId='{app_id}')"),
        "/applications(uniqueName='dcr-lag')".into(),
    ] {
        let r = env.get(&path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.code(), "Request_ResourceNotFound");
    }
    assert_eq!(env.patch(&by_id, json!({"displayName": "x"})).await.status, 404);
    assert_eq!(
        env.post(&format!("{by_id}/addPassword"), json!({})).await.status,
        404
    );
    assert_eq!(
        env.post(
            &format!("{by_id}/federatedIdentityCredentials"),
            json!({"name": "n", "issuer": "i", "subject": "s", "audiences": ["a"]})
        )
        .await
        .status,
        404
    );
    let list = env.get("/applications").await;
    assert!(!list.text.contains(id(&app)), "not listed either");
    let r = env.post("/servicePrincipals", json!({"appId": app_id})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "Request_BadRequest");
    assert_eq!(
        r.body["error"]["details"][0]["code"],
        "NoBackingApplicationObject"
    );
    // An upsert meanwhile misses the replica and collides at the unique index.
    let r = env
        .call(
            Method::PATCH,
            "/applications(uniqueName='dcr-lag')",
            Some(json!({"displayName": "again"})),
            &[("Prefer", "create-if-missing")],
        )
        .await;
    assert_eq!(r.status, 400);

    env.emu.advance_clock(Duration::from_secs(5));
    assert_eq!(env.get(&by_id).await.status, 200);
    assert_eq!(env.patch(&by_id, json!({"displayName": "x"})).await.status, 204);
    let pw = env.post(&format!("{by_id}/addPassword"), json!({})).await;
    assert_eq!(pw.status, 200);
    // The new service principal lags too, and so does the token endpoint's view of it.
    let sp = env.post("/servicePrincipals", json!({"appId": app_id})).await;
    assert_eq!(sp.status, 201);
    assert_eq!(
        env.get(&format!("/servicePrincipals/{}", id(&sp.body)))
            .await
            .status,
        404
    );
    let r = env
        .token_with_secret(app_id, pw.body["secretText"].as_str().unwrap())
        .await;
    assert_eq!(r.body["error_codes"], json!([7000229]));
    env.emu.advance_clock(Duration::from_secs(5));
    assert_eq!(
        env.get(&format!("/servicePrincipals/{}", id(&sp.body)))
            .await
            .status,
        200
    );
    assert_eq!(
        env.token_with_secret(app_id, pw.body["secretText"].as_str().unwrap())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn s7_checklist3_lag_in_real_time_ends_by_itself() {
    let env =
        Env::with_config(EmulatorConfig::default().with_replication_lag(Duration::from_millis(300))).await;
    let started = Instant::now();
    let app = env.create_app(json!({"displayName": "rt"})).await;
    let path = format!("/applications/{}", id(&app));
    assert_eq!(env.get(&path).await.status, 404);
    eventually(Duration::from_secs(5), || async {
        (env.get(&path).await.status == 200).then_some(())
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn s7_sp_create_during_lag_can_answer_the_observed_403_instead() {
    let cfg = EmulatorConfig {
        assumptions: sandbox::graph::Assumptions {
            sp_create_lag_error: SpLagError::LocalTenant403,
            ..Default::default()
        },
        ..frozen().with_replication_lag(Duration::from_secs(2))
    };
    let env = Env::with(cfg, GraphPermission::ApplicationReadWriteOwnedBy).await;
    let bind = format!(
        "https://graph.microsoft.com/v1.0/directoryObjects/{}",
        env.admin.sp_id
    );
    let app = env
        .create_app(json!({"displayName": "o", "owners@odata.bind": [bind]}))
        .await;
    let r = env
        .post("/servicePrincipals", json!({"appId": app["appId"]}))
        .await;
    assert_eq!(r.status, 403);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("When using this permission, the backing application"));
    env.emu.advance_clock(Duration::from_secs(2));
    assert_eq!(
        env.post("/servicePrincipals", json!({"appId": app["appId"]}))
            .await
            .status,
        201
    );
}

fn write_quota(limit: u32, window_secs: u64) -> ThrottleConfig {
    ThrottleConfig {
        app_tenant_writes: Quota::per_secs(limit, window_secs),
        ..ThrottleConfig::default()
    }
}

#[tokio::test]
async fn s2_2_checklist6_write_bucket_answers_429_with_fractional_retry_after_and_refills() {
    // 3 writes per 10 s per app + tenant: 0.3 writes/s.
    let env = Env::with_config(frozen().with_throttling(write_quota(3, 10))).await;
    for i in 0..3 {
        env.create_app(json!({"displayName": format!("w{i}")})).await;
    }
    let r = env.post("/applications", json!({"displayName": "w3"})).await;
    assert_429(&r);
    // Charged while throttled: at -1, two writes' worth at 0.3/s = 6.667 s (frozen clock: real = emulated).
    assert_eq!(r.header("retry-after"), Some("6.667"));
    assert_eq!(r.header("x-ms-throttle-information"), Some("WriteLimitExceeded"));
    assert_eq!(
        r.header("x-ms-throttle-scope").unwrap(),
        format!(
            "Tenant_Application/Write/{}/{}",
            env.admin.client_id, env.admin.tenant_id
        )
    );
    // Reads still succeed while writes are throttled.
    assert_eq!(env.get("/applications").await.status, 200);
    // All requests count, even throttled ones: hammering pushes the retry out.
    let again = env.post("/applications", json!({"displayName": "w3"})).await;
    assert!(retry_after(&again) > 6.667);
    env.emu
        .advance_clock(Duration::from_secs_f64(retry_after(&again)));
    assert_eq!(
        env.post("/applications", json!({"displayName": "w3"}))
            .await
            .status,
        201
    );
    // The request log shows the throttled requests and what they were told.
    let throttled: Vec<_> = env
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .collect();
    assert_eq!(throttled.len(), 2);
    assert!(throttled
        .iter()
        .all(|r| r.fault.as_deref() == Some("throttled") && r.retry_after.is_some()));
}

#[tokio::test]
async fn s2_2_retry_after_is_in_real_seconds_when_the_clock_runs_fast() {
    let env = Env::with_config(
        EmulatorConfig::default()
            .with_clock_speed(10.0)
            .with_throttling(write_quota(1, 10)),
    )
    .await;
    env.create_app(json!({"displayName": "a"})).await;
    let r = env.post("/applications", json!({"displayName": "b"})).await;
    assert_eq!(r.status, 429);
    let ra = retry_after(&r);
    // 2 writes at 0.1/s = 20 emulated seconds = 2 real seconds at 10x.
    assert!(ra > 1.5 && ra <= 2.0, "{ra}");
}

#[tokio::test]
async fn s2_2_tenant_bucket_spans_apps_and_scaled_buckets_keep_the_documented_rate() {
    let cfg = ThrottleConfig {
        tenant_writes: Quota::per_secs(2, 300),
        ..ThrottleConfig::default()
    };
    let env = Env::with_config(frozen().with_throttling(cfg)).await;
    let (_, other) = env.another_app(Some(GraphPermission::ApplicationReadWriteAll));
    env.create_app(json!({"displayName": "1"})).await;
    let r = env
        .call_as(
            Some(&other),
            Method::POST,
            "/applications",
            Some(json!({"displayName": "2"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    let r = env
        .call_as(
            Some(&other),
            Method::POST,
            "/applications",
            Some(json!({"displayName": "3"})),
            &[],
        )
        .await;
    assert_429(&r);
    assert!(r
        .header("x-ms-throttle-scope")
        .unwrap()
        .starts_with("Tenant/Write/"));

    // ThrottleConfig::scaled(1000): 3,000 writes / 150 s becomes 3 writes / 0.15 s.
    env.emu
        .update_config(|c| c.throttling = ThrottleConfig::scaled(1000.0));
    env.emu.reset_throttling();
    for i in 0..3 {
        env.create_app(json!({"displayName": format!("s{i}")})).await;
    }
    let r = env.post("/applications", json!({"displayName": "s3"})).await;
    assert_eq!(r.status, 429);
    assert_eq!(retry_after(&r), 0.1, "(1 - -1) / 20 writes per second");
}

#[tokio::test]
async fn s2_2_resource_unit_costs_and_limit_percentage_headers() {
    let env = Env::with_config(frozen().with_throttling(write_quota(10, 100))).await;
    let app = env.create_app(json!({"displayName": "ru"})).await;
    let unit = |r: &Resp| r.header("x-ms-resource-unit").map(str::to_string);
    assert_eq!(
        unit(&env.get("/applications").await).as_deref(),
        Some("2"),
        "GET applications = 2"
    );
    assert_eq!(
        unit(&env.get("/applications?$select=id").await).as_deref(),
        Some("1"),
        "$select -1"
    );
    assert_eq!(
        unit(&env.get("/applications?$top=5").await).as_deref(),
        Some("1"),
        "$top < 20 -1"
    );
    assert_eq!(
        unit(&env.get(&format!("/applications/{}", id(&app))).await).as_deref(),
        Some("1")
    );
    assert_eq!(
        unit(
            &env.get(&format!("/applications/{}?$expand=owners", id(&app)))
                .await
        )
        .as_deref(),
        Some("2"),
        "$expand +1"
    );
    // 1 write used; the 8th write reaches 80% of the bucket.
    for i in 2..8 {
        let r = env
            .post("/applications", json!({"displayName": format!("ru{i}")}))
            .await;
        assert!(r.header("x-ms-throttle-limit-percentage").is_none(), "{i}");
    }
    let r = env.post("/applications", json!({"displayName": "ru8"})).await;
    assert_eq!(r.header("x-ms-throttle-limit-percentage"), Some("0.8"));
}

#[tokio::test]
async fn s2_2_personal_account_apps_have_their_own_write_limit() {
    let cfg = ThrottleConfig {
        personal_account_app_writes: Quota::per_secs(2, 60),
        ..ThrottleConfig::default()
    };
    let env = Env::with_config(frozen().with_throttling(cfg)).await;
    let app = env
        .create_app(json!({"displayName": "p", "signInAudience": "AzureADandPersonalMicrosoftAccount"}))
        .await;
    let path = format!("/applications/{}", id(&app));
    assert_eq!(env.patch(&path, json!({"notes": "1"})).await.status, 204);
    assert_eq!(env.patch(&path, json!({"notes": "2"})).await.status, 429);
    // Other apps are not affected.
    env.create_app(json!({"displayName": "org"})).await;
}

#[tokio::test]
async fn s2_2_checklist6_injected_429s_with_fractional_retry_after() {
    let env = Env::new().await;
    env.emu
        .set_faults(FaultConfig::throttle_next(2, Duration::from_millis(350)));
    for _ in 0..2 {
        let r = env.get("/applications").await;
        assert_429(&r);
        assert_eq!(r.header("retry-after"), Some("0.35"));
        assert!(r.header("x-ms-throttle-scope").is_some() && r.header("x-ms-throttle-information").is_some());
    }
    assert_eq!(env.get("/applications").await.status, 200);
    let log = env.emu.requests();
    assert_eq!(
        log.iter()
            .filter(|r| r.fault.as_deref() == Some("injected-429"))
            .count(),
        2
    );
    assert!(log
        .iter()
        .filter(|r| r.status == 429)
        .all(|r| r.retry_after == Some(0.35)));
    // Retry-After may be absent (UNVERIFIED, §10): clients must fall back to backoff.
    env.emu.set_faults(FaultConfig {
        throttle_next: 1,
        throttle_retry_after: None,
        ..FaultConfig::default()
    });
    let r = env.get("/applications").await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_none());
    // Only the listed operations are throttled.
    env.emu
        .set_faults(FaultConfig::throttle_next(1, Duration::from_secs(1)).only(&["application.addPassword"]));
    let app = env.create_app(json!({"displayName": "only"})).await;
    assert_eq!(
        env.post(&format!("/applications/{}/addPassword", id(&app)), json!({}))
            .await
            .status,
        429
    );
    assert_eq!(
        env.post(&format!("/applications/{}/addPassword", id(&app)), json!({}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn s2_2_seeded_throttle_rate_is_reproducible() {
    let env = Env::new().await;
    let run = || async {
        env.emu.set_faults(FaultConfig {
            throttle_rate: 0.5,
            seed: Some(42),
            ..FaultConfig::default()
        });
        let mut pattern = Vec::new();
        for _ in 0..24 {
            pattern.push(env.get("/applications?$top=1").await.status);
        }
        pattern
    };
    let first = run().await;
    assert!(first.contains(&429) && first.contains(&200), "{first:?}");
    assert_eq!(first, run().await);
}

#[tokio::test]
async fn s2_1_checklist6_injected_503_and_504_with_optional_retry_after() {
    let env = Env::new().await;
    env.emu.set_faults(FaultConfig {
        error_next: 1,
        error_retry_after: Some(Duration::from_millis(1500)),
        ..FaultConfig::default()
    });
    let r = env.get("/applications").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1.5"));
    assert!(r.body["error"]["innerError"]["request-id"].is_string());
    assert_eq!(env.get("/applications").await.status, 200);
    env.emu.set_faults(FaultConfig {
        error_next: 1,
        error_status: 504,
        ..FaultConfig::default()
    });
    let r = env.get("/applications").await;
    assert_eq!(r.status, 504);
    assert!(r.header("retry-after").is_none());
    assert_eq!(env.emu.request_counts()["application.list"].by_status["503"], 1);
}

#[tokio::test]
async fn faults_token_endpoint_scope() {
    let env = Env::new().await;
    env.emu
        .set_faults(FaultConfig::error_next(1).in_scope(FaultScope::Token));
    assert_eq!(env.get("/applications").await.status, 200, "Graph unaffected");
    let r = env
        .token_with_secret(&env.admin.client_id, &env.admin.client_secret)
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"], "temporarily_unavailable");
    assert!(r.body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS"));
    assert_eq!(
        env.token_with_secret(&env.admin.client_id, &env.admin.client_secret)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn faults_dropped_connection_is_a_transport_error_and_the_request_is_not_applied() {
    let env = Env::new().await;
    env.emu
        .set_faults(FaultConfig::drop_next(1).only(&["application.create"]));
    let err = env
        .http
        .post(env.url("/applications"))
        .bearer_auth(&env.token)
        .json(&json!({"displayName": "dropped"}))
        .send()
        .await
        .and_then(|r| r.error_for_status());
    let err = match err {
        // Depending on timing hyper may have flushed the head: then reading the body fails.
        Ok(r) => r.text().await.expect_err("the body must fail"),
        Err(e) => e,
    };
    assert!(
        err.is_request() || err.is_body() || err.is_connect() || err.is_decode(),
        "{err:?}"
    );
    assert!(env
        .emu
        .state()
        .applications()
        .all(|a| a.display_name != "dropped"));
    let rec = env
        .emu
        .requests()
        .into_iter()
        .find(|r| r.operation == "application.create")
        .unwrap();
    assert_eq!((rec.status, rec.fault.as_deref()), (0, Some("dropped")));
    assert_eq!(
        env.post("/applications", json!({"displayName": "dropped"}))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn faults_latency_is_added() {
    let env = Env::new().await;
    env.emu.set_faults(FaultConfig {
        latency: Duration::from_millis(150),
        latency_rate: 1.0,
        ..FaultConfig::default()
    });
    let started = Instant::now();
    assert_eq!(env.get("/applications").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn s4_1_tenant_policy_caps_password_lifetime() {
    let cfg = EmulatorConfig::default().with_password_max_lifetime(Some(Duration::from_secs(90 * 86_400)));
    let env = Env::with_config(cfg).await;
    let app = env.create_app(json!({"displayName": "policy"})).await;
    let path = format!("/applications/{}/addPassword", id(&app));
    let r = env.post(&path, json!({})).await;
    assert_eq!(r.status, 400, "the 2-year default exceeds the policy");
    assert_eq!(r.code(), "CredentialInvalidLifetimeAsPerAppPolicy");
    let end = (env.emu.now() + chrono::TimeDelta::days(30)).to_rfc3339();
    assert_eq!(
        env.post(&path, json!({"passwordCredential": {"endDateTime": end}}))
            .await
            .status,
        200
    );
    // A tenant override through the control endpoint (null = no cap for this tenant).
    let url = format!(
        "{}/_emulator/tenants/{}/policy",
        env.emu.base_url(),
        env.admin.tenant_id
    );
    let r = env
        .http
        .put(&url)
        .json(&json!({"passwordMaxLifetime": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(env.post(&path, json!({})).await.status, 200);
    env.emu
        .set_tenant_password_policy(&env.admin.tenant_id, Some(Duration::from_secs(86_400)));
    assert_eq!(
        env.post(&path, json!({"passwordCredential": {"endDateTime": end}}))
            .await
            .status,
        400
    );
}
