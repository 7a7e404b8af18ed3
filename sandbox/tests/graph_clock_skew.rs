//! `EmulatorConfig::clock_behind`: the emulated clock starts behind real time (clock skew
//! between the provider and its client), so what the emulator timestamps looks older to a
//! client with a real clock, while the emulator stays consistent with itself.

mod graph_support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use graph_support::*;
use sandbox::graph::EmulatorConfig;
use serde_json::json;

const BEHIND: Duration = Duration::from_secs(600);

fn age(t: &serde_json::Value) -> chrono::TimeDelta {
    let t: DateTime<Utc> = t.as_str().expect("a timestamp").parse().expect("RFC 3339");
    Utc::now() - t
}

#[tokio::test]
async fn timestamps_look_older_by_the_skew_and_new_secrets_still_work() {
    let env = Env::with_config(EmulatorConfig::default().with_clock_behind(BEHIND)).await;
    let (app, secret) = env.app_with_secret("skewed").await;
    assert!(
        age(&app["createdDateTime"]) >= chrono::TimeDelta::seconds(599),
        "created {} ago",
        age(&app["createdDateTime"])
    );
    let read = env
        .get(&format!("/applications/{}", app["id"].as_str().unwrap()))
        .await;
    let start = &read.body["passwordCredentials"][0]["startDateTime"];
    assert!(age(start) >= chrono::TimeDelta::seconds(599), "{start}");
    assert!(age(start) < chrono::TimeDelta::seconds(660), "{start}");
    // Inside the emulator everything agrees: the new secret works at once.
    let token = env
        .token_with_secret(app["appId"].as_str().unwrap(), &secret)
        .await;
    assert_eq!(token.status, 200, "{}", token.text);
}

#[tokio::test]
async fn the_skew_is_fixed_at_start_up() {
    let env = Env::with_config(EmulatorConfig::default().with_clock_behind(BEHIND)).await;
    env.emu.update_config(|c| c.clock_behind = Duration::ZERO);
    assert_eq!(env.emu.config().clock_behind, BEHIND);
    let r = read(
        env.http
            .patch(format!("{}/_emulator/config", env.emu.base_url()))
            .json(&json!({"clock_behind": 0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["clock_behind"], 600.0);
    assert!(Utc::now() - env.emu.now() >= chrono::TimeDelta::seconds(599));
}
