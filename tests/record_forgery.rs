//! The credential record in a Secret cannot be forged by the namespace's own users. A
//! ServiceAccount with the `edit` ClusterRole in the namespace (what an app team has) edits
//! B's record to name A's keys and to mark B's live key superseded long ago: the operator
//! warns `CredentialRecordTampered`, revokes and adopts nothing on the record's strength,
//! issues B exactly one new secret and writes a record that verifies. A's Entra app and
//! keys are untouched. A record without MAC (as versions before the MAC wrote them) that
//! the status corroborates is signed in place, without a new secret.
//!
//! Run with `cargo test --test record_forgery`.

mod support;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::cluster::{wait_for, TIMEOUT};
use support::scenario::{Profile, Scenario};

const RECORD: &str = "dcr-operator.io/credential";
const MAC: &str = "dcr-operator.io/credential-mac";

/// A client acting as an app team member: a ServiceAccount bound to `edit` in the namespace.
async fn team_member(s: &Scenario) -> kube::Client {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "team-edit", "namespace": s.ns.name()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "member", "namespace": s.ns.name()}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(s.client.clone(), s.ns.name())
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding to edit");
    s.ns.service_account_client(&s.client, "member").await
}

fn password_ids(s: &Scenario, object_id: &str) -> Vec<String> {
    let state = s.emu.state();
    let app = state
        .applications()
        .find(|a| a.id == object_id)
        .expect("the Entra application");
    let mut ids: Vec<String> = app.passwords.iter().map(|p| p.key_id.clone()).collect();
    ids.sort();
    ids
}

struct Ids {
    object_id: String,
    key_id: String,
}

async fn ids(s: &Scenario, app: &str) -> Ids {
    let st = s.apps().get(app).await.unwrap().status.unwrap();
    Ids {
        object_id: st.application_object_id.unwrap(),
        key_id: st.credential.unwrap().key_id,
    }
}

fn annotation(secret: &Secret, key: &str) -> Option<String> {
    secret.annotations().get(key).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_record_revokes_and_adopts_nothing_and_the_application_converges() {
    let s = Scenario::start("record-forgery", Profile::Ideal).await;
    s.create_app("a", json!({})).await;
    s.create_app("b", json!({})).await;
    s.wait_ready(&s.apps(), "a", "True", Some("Ready")).await;
    s.wait_ready(&s.apps(), "b", "True", Some("Ready")).await;
    let (a, b) = (ids(&s, "a").await, ids(&s, "b").await);
    let a_keys = password_ids(&s, &a.object_id);
    let b_keys_before = password_ids(&s, &b.object_id);
    let b_secret = s.secrets().get("b-credentials").await.unwrap();
    assert!(annotation(&b_secret, MAC).is_some_and(|m| m.starts_with("v1:")));
    let adds_b = s.requests_seen("application.addPassword", &b.object_id, None);

    // The forgery, as the team member: B's record names A's key as current, and B's own
    // live key (and A's) as superseded long ago, so due for revocation now.
    let forged = json!({
        "keyId": a.key_id,
        "issuedAt": "2020-01-01T00:00:00Z",
        "expiresAt": "2999-01-01T00:00:00Z",
        "verifiedAt": "2020-01-01T00:00:00Z",
        "previous": [
            {"keyId": b.key_id, "revokeAfter": "2020-01-01T00:00:00Z"},
            {"keyId": a.key_id, "revokeAfter": "2020-01-01T00:00:00Z"}
        ]
    });
    let member: Api<Secret> = Api::namespaced(team_member(&s).await, s.ns.name());
    member
        .patch(
            "b-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {RECORD: forged.to_string()}}})),
        )
        .await
        .expect("the team member edits the record");

    // The operator notices, warns, and issues B one new secret under a valid record.
    wait_for("a CredentialRecordTampered Warning on b", TIMEOUT, || async {
        let found = s.events().await.into_iter().any(|e| {
            e.reason.as_deref() == Some("CredentialRecordTampered")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("b")
        });
        Ok::<_, String>(found.then_some(()))
    })
    .await;
    let fresh = wait_for(
        "b to get a new key under a record with a MAC",
        TIMEOUT,
        || async {
            let st = s
                .apps()
                .get("b")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let secret = s
                .secrets()
                .get("b-credentials")
                .await
                .map_err(|e| e.to_string())?;
            let key = st.credential.map(|c| c.key_id).unwrap_or_default();
            let record: serde_json::Value =
                serde_json::from_str(&annotation(&secret, RECORD).unwrap_or_default()).unwrap_or_default();
            let signed = annotation(&secret, MAC).is_some() && record["keyId"] == key.as_str();
            Ok::<_, String>((signed && key != b.key_id && key != a.key_id).then_some(key))
        },
    )
    .await;
    s.wait_ready(&s.apps(), "b", "True", Some("Ready")).await;
    let b_status = s.apps().get("b").await.unwrap().status.unwrap();
    assert_eq!(b_status.credential.as_ref().unwrap().key_id, fresh);
    // B's old key is superseded with the strategy's grace, not on the forged date, and A's
    // key is nowhere in B's books.
    let superseded: Vec<&str> = b_status
        .previous_credentials
        .iter()
        .map(|p| p.key_id.as_str())
        .collect();
    assert_eq!(superseded, [b.key_id.as_str()], "{b_status:?}");
    assert!(b_status.previous_credentials[0].revoke_after.0 > k8s_openapi::jiff::Timestamp::now());
    let record = annotation(&s.secrets().get("b-credentials").await.unwrap(), RECORD).unwrap();
    assert!(!record.contains(&a.key_id), "{record}");

    // Exactly one new password for B; no revocation at all, for A or B.
    assert_eq!(
        s.requests_seen("application.addPassword", &b.object_id, None),
        adds_b + 1
    );
    assert_eq!(s.requests_seen("application.removePassword", "", None), 0);
    let mut b_keys_now = b_keys_before.clone();
    b_keys_now.push(fresh.clone());
    b_keys_now.sort();
    assert_eq!(password_ids(&s, &b.object_id), b_keys_now);
    // A is untouched: same keys, same current key, still Ready.
    assert_eq!(password_ids(&s, &a.object_id), a_keys);
    assert_eq!(ids(&s, "a").await.key_id, a.key_id);
    s.wait_ready(&s.apps(), "a", "True", Some("Ready")).await;

    // The new secret works at the token endpoint.
    let secret = s.secrets().get("b-credentials").await.unwrap();
    let data = support::scenario::secret_data(&secret);
    s.token_with(&data["token_url"], &data["client_id"], &data["client_secret"])
        .await
        .expect("b's new secret works");
    s.assert_no_secret_leaks(&[&data["client_secret"]]).await;
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_mac_that_the_status_corroborates_is_signed_without_a_new_secret() {
    let s = Scenario::start("record-migration", Profile::Ideal).await;
    s.create_app("old", json!({})).await;
    s.wait_ready(&s.apps(), "old", "True", Some("Ready")).await;
    let old = ids(&s, "old").await;
    let adds = s.requests_seen("application.addPassword", &old.object_id, None);
    let before = s.secrets().get("old-credentials").await.unwrap();
    let record = annotation(&before, RECORD).unwrap();

    // What the previous version left: the same record, no MAC (removed as admin).
    s.secrets()
        .patch(
            "old-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {MAC: null}}})),
        )
        .await
        .unwrap();
    let signed = wait_for("the record to be signed again", TIMEOUT, || async {
        let secret = s
            .secrets()
            .get("old-credentials")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(annotation(&secret, MAC))
    })
    .await;
    assert!(signed.starts_with("v1:"));
    let after = s.secrets().get("old-credentials").await.unwrap();
    assert_eq!(
        annotation(&after, RECORD).unwrap(),
        record,
        "the record is kept as it was"
    );
    assert_eq!(after.data, before.data, "the secret is kept");
    assert_eq!(
        s.requests_seen("application.addPassword", &old.object_id, None),
        adds
    );
    assert_eq!(ids(&s, "old").await.key_id, old.key_id);
    let tampered = s
        .events()
        .await
        .into_iter()
        .any(|e| e.reason.as_deref() == Some("CredentialRecordTampered"));
    assert!(!tampered, "a corroborated record is not reported as tampered");
    s.teardown().await;
}
