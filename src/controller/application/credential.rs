//! Pure: when to issue a new secret, which superseded keys may be revoked, and which keys
//! at the provider nobody records (leftovers of a crash between addPassword and the
//! Secret write). The checks run in order; the first that holds decides.
//!
//! The record in the Secret is believed only when the operator's MAC verifies, or, for a
//! record an earlier version wrote without one, when the status names the same keys and
//! times ([`vet`]). Otherwise it is [`RecordTrust::Forged`]: ignored, a new secret is
//! issued ([`IssueReason::RecordTampered`]) and only keys the status names are superseded.

use super::admission::EffectivePolicy;
use crate::crd::application::ApplicationStatus;
use crate::crd::conditions::Reason;
use crate::idp::SecretKey;
use crate::secret::{CredentialRecord, RecordTrust, StoredCredential};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeSet;
use std::time::Duration;

/// A key issued less than this long ago may not show in reads yet (Entra replication).
pub const REPLICATION_WINDOW: Duration = Duration::from_secs(120);

/// Superseded keys awaiting revocation at which a rotate request waits: each rotation adds
/// one that lives `revokePreviousAfter`, so requests in a loop would pile up live keys.
/// The request is served once the oldest is revoked (revoke-all is never held back).
pub const MAX_SUPERSEDED: usize = 8;

/// Why a new secret is issued. The string is the Event reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// First credential of the Application.
    Initial,
    /// The Secret, or its `client_secret`, is gone (deleted by hand): the value cannot be
    /// read back from the provider, so a new one is issued.
    SecretMissing,
    /// `client_secret` was edited by hand.
    SecretEdited,
    /// The recorded key no longer exists at the provider.
    KeyMissingAtProvider,
    /// The secret is within `renewBefore` of its expiry.
    Renewal,
    /// The `dcr-operator.io/rotate` annotation has a new value.
    RotateRequested,
    /// The `dcr-operator.io/revoke-all` annotation has a new value: a compromise response.
    RevokeAllRequested,
    /// The Secret's credential record was not written by the operator: what it names is
    /// not known to be ours, so a new secret replaces the one it came with.
    RecordTampered,
}

impl IssueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueReason::Initial => "Initial",
            IssueReason::SecretMissing => "SecretMissing",
            IssueReason::SecretEdited => "SecretEdited",
            IssueReason::KeyMissingAtProvider => "KeyMissingAtProvider",
            IssueReason::Renewal => "Renewal",
            IssueReason::RotateRequested => "RotateRequested",
            IssueReason::RevokeAllRequested => "RevokeAllRequested",
            IssueReason::RecordTampered => "RecordTampered",
        }
    }

    /// Whether the current secret still works, so the new one can be staged and delivered
    /// only once the provider accepts it (no window with a failing secret).
    pub fn keeps_current_secret(self) -> bool {
        matches!(self, IssueReason::Renewal | IssueReason::RotateRequested)
    }
}

/// What the decision looks at.
pub struct Observed<'a> {
    pub now: Timestamp,
    /// The owned Secret's contents, None when there is no Secret.
    pub stored: Option<&'a StoredCredential>,
    /// Whether the Application ever had a credential (status records one).
    pub had_credential: bool,
    /// The keys the provider lists for the application.
    pub provider_keys: &'a [SecretKey],
    /// The rotate annotation, and the value last acted upon.
    pub rotate_request: Option<&'a str>,
    pub last_rotate_request: Option<&'a str>,
    /// The revoke-all annotation, and the value last acted upon.
    pub revoke_all_request: Option<&'a str>,
    pub last_revoke_all_request: Option<&'a str>,
    /// The provider-side application was created again (deleted out of band): keys
    /// recorded for the old one are gone, however recent.
    pub application_replaced: bool,
    pub policy: EffectivePolicy,
}

/// When a credential should be replaced.
pub fn renew_at(record: &CredentialRecord, policy: &EffectivePolicy) -> Timestamp {
    let renew_before = SignedDuration::try_from(policy.renew_before).unwrap_or(SignedDuration::MAX);
    record
        .expires_at
        .checked_sub(renew_before)
        .unwrap_or(record.issued_at)
}

/// Whether to issue a new secret, and why.
pub fn decide(o: &Observed<'_>) -> Option<IssueReason> {
    let Some(stored) = o.stored else {
        return Some(if o.had_credential {
            IssueReason::SecretMissing
        } else {
            IssueReason::Initial
        });
    };
    let revoke_all = o
        .revoke_all_request
        .is_some_and(|r| Some(r) != o.last_revoke_all_request);
    if stored.trust != RecordTrust::Verified {
        // (`vet` settles Unsigned before this.) A new revoke-all request is served by the
        // same one new key.
        return Some(if revoke_all {
            IssueReason::RevokeAllRequested
        } else {
            IssueReason::RecordTampered
        });
    }
    let (Some(record), Some(_)) = (&stored.record, &stored.client_secret) else {
        return Some(if o.had_credential {
            IssueReason::SecretMissing
        } else {
            IssueReason::Initial
        });
    };
    let interval = o.policy.min_request_interval;
    let revoke_all_held = request_allowed_at(record, record.revoke_all_request.is_some(), interval) > o.now;
    if revoke_all && !revoke_all_held {
        return Some(IssueReason::RevokeAllRequested);
    }
    if stored.tampered {
        return Some(IssueReason::SecretEdited);
    }
    let listed = |key: &str| o.provider_keys.iter().any(|k| k.key_id == key);
    if o.application_replaced || (!listed(&record.key_id) && !recent(o.now, record.issued_at)) {
        return Some(IssueReason::KeyMissingAtProvider);
    }
    if let Some(pending) = &record.pending {
        // A rotation is under way; stage it again only if its key vanished.
        let lost = stored.pending_secret.is_none()
            || (!listed(&pending.key_id) && !recent(o.now, pending.issued_at));
        return lost.then_some(IssueReason::Renewal);
    }
    if o.now >= renew_at(record, &o.policy) {
        return Some(IssueReason::Renewal);
    }
    if let Some(request) = o.rotate_request {
        let held = request_allowed_at(record, record.rotate_request.is_some(), interval) > o.now;
        if Some(request) != o.last_rotate_request && record.previous.len() < MAX_SUPERSEDED && !held {
            return Some(IssueReason::RotateRequested);
        }
    }
    None
}

/// When a new rotate (or revoke-all) request may be served: at once if none of its kind was
/// served before, else `interval` after the newest secret was issued. A request in a loop
/// thus issues at most one secret per interval (the time is read from the Secret's record,
/// so a restart does not reset it).
pub fn request_allowed_at(record: &CredentialRecord, served_before: bool, interval: Duration) -> Timestamp {
    if !served_before {
        return Timestamp::MIN;
    }
    let newest = record
        .pending
        .as_ref()
        .map_or(record.issued_at, |p| p.issued_at.max(record.issued_at));
    SignedDuration::try_from(interval)
        .ok()
        .and_then(|d| newest.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// A new request that waits for the per-Application rate limit: when it may be served, and
/// what the `Throttled` condition says meanwhile.
pub fn request_rate_limited(
    now: Timestamp,
    record: &CredentialRecord,
    requests: [(&str, Option<&str>, Option<&str>, bool); 2],
    interval: Duration,
) -> Option<(Timestamp, String)> {
    requests
        .into_iter()
        .filter_map(|(annotation, request, last, served_before)| {
            let request = request.filter(|r| Some(*r) != last)?;
            let at = request_allowed_at(record, served_before, interval);
            (at > now).then(|| {
                let message = format!(
                    "{annotation} request {request} is served at {at} ({} after the newest secret; the AuthStrategy's credentials.minRenewalInterval)",
                    humantime::format_duration(interval)
                );
                (at, message)
            })
        })
        .min_by_key(|(at, _)| *at)
}

/// Settles an [`RecordTrust::Unsigned`] record (written before records were signed): it
/// is believed, and rewritten with a MAC, when the status (which namespace users cannot
/// write) names the same current, staged and superseded keys with the same times;
/// otherwise it counts as forged. A signed or forged record is returned as it is.
pub fn vet(mut stored: StoredCredential, status: &ApplicationStatus) -> StoredCredential {
    if stored.trust != RecordTrust::Unsigned {
        return stored;
    }
    if stored.record.as_ref().is_some_and(|r| corroborated(r, status)) {
        stored.trust = RecordTrust::Verified;
        // Written again at this pass, now with its MAC.
        stored.details_stale = true;
    } else {
        stored.trust = RecordTrust::Forged;
        stored.record = None;
    }
    stored
}

/// Whether `status` names exactly the keys of `record`, with the same times (to the
/// second: status times have no fraction).
fn corroborated(record: &CredentialRecord, status: &ApplicationStatus) -> bool {
    let same = |a: Timestamp, b: Timestamp| a.as_second() == b.as_second();
    let current = status.credential.as_ref().is_some_and(|c| {
        c.key_id == record.key_id
            && same(c.issued_at.0, record.issued_at)
            && same(c.expires_at.0, record.expires_at)
    });
    let pending = match (&record.pending, &status.pending_credential) {
        (None, None) => true,
        (Some(r), Some(s)) => r.key_id == s.key_id && same(r.issued_at, s.issued_at.0),
        _ => false,
    };
    let previous = record.previous.len() == status.previous_credentials.len()
        && record.previous.iter().all(|r| {
            status
                .previous_credentials
                .iter()
                .any(|s| s.key_id == r.key_id && same(s.revoke_after.0, r.revoke_after))
        });
    current && pending && previous
}

/// Why a rotate request is not served yet, for the Ready message.
pub fn rotate_held(
    record: &CredentialRecord,
    rotate_request: Option<&str>,
    last_rotate_request: Option<&str>,
) -> Option<String> {
    let request = rotate_request.filter(|r| Some(*r) != last_rotate_request)?;
    (record.previous.len() >= MAX_SUPERSEDED).then(|| {
        format!(
            "; rotate request {request} waits until a superseded secret is revoked ({} await revocation, at most {MAX_SUPERSEDED})",
            record.previous.len()
        )
    })
}

/// The request value last acted upon, as the Secret's record or the status tells: the
/// record's when it matches the current request (status may be stale), else the status's.
pub fn acted_upon<'a>(
    request: Option<&str>,
    recorded: Option<&'a str>,
    in_status: Option<&'a str>,
) -> Option<&'a str> {
    match request {
        Some(r) if recorded == Some(r) => recorded,
        _ => in_status.or(recorded),
    }
}

/// Superseded keys whose grace has passed, provided the current secret has been proven.
/// (A pending key is never superseded: it is either promoted or replaced.)
pub fn revocable(now: Timestamp, record: &CredentialRecord) -> Vec<String> {
    if record.verified_at.is_none() {
        return vec![];
    }
    record
        .previous
        .iter()
        .filter(|p| p.revoke_after <= now)
        .map(|p| p.key_id.clone())
        .collect()
}

/// Keys at the provider that no record names, old enough not to be a key whose record is
/// still being written. `also_recorded` are keys named elsewhere (the status).
pub fn orphans(
    now: Timestamp,
    provider_keys: &[SecretKey],
    record: Option<&CredentialRecord>,
    also_recorded: &BTreeSet<String>,
) -> Vec<String> {
    let mut known: BTreeSet<String> = also_recorded.clone();
    if let Some(r) = record {
        known.extend(r.key_ids().map(str::to_string));
    }
    provider_keys
        .iter()
        .filter(|k| !known.contains(&k.key_id))
        .filter(|k| k.created_at.is_none_or(|start| !recent(now, start)))
        .map(|k| k.key_id.clone())
        .collect()
}

fn recent(now: Timestamp, then: Timestamp) -> bool {
    now.duration_since(then).as_secs_f64() < REPLICATION_WINDOW.as_secs_f64()
}

/// The condition reason while a new secret is not yet accepted by the provider.
pub const ACTIVATING: Reason = Reason::Progressing;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::PreviousKey;

    const DAY: i64 = 86_400;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn policy() -> EffectivePolicy {
        EffectivePolicy {
            lifetime: Duration::from_secs(90 * DAY as u64),
            renew_before: Duration::from_secs(30 * DAY as u64),
            revoke_previous_after: Duration::from_secs(3600),
            min_request_interval: Duration::from_secs(3600),
        }
    }

    fn record() -> CredentialRecord {
        CredentialRecord {
            rotate_request: None,
            revoke_all_request: None,
            key_id: "k1".into(),
            issued_at: t(0),
            expires_at: t(90 * DAY),
            verified_at: Some(t(5)),
            previous: vec![],
            pending: None,
        }
    }

    fn stored(record: Option<CredentialRecord>, tampered: bool) -> StoredCredential {
        StoredCredential {
            record,
            trust: RecordTrust::Verified,
            client_secret: Some(crate::sensitive::SecretString::new("v")),
            pending_secret: Some(crate::sensitive::SecretString::new("p")),
            tampered,
            details_stale: false,
        }
    }

    fn key(id: &str, start: Option<Timestamp>) -> SecretKey {
        SecretKey {
            key_id: id.into(),
            created_at: start,
        }
    }

    fn observed<'a>(
        now: Timestamp,
        stored: Option<&'a StoredCredential>,
        keys: &'a [SecretKey],
    ) -> Observed<'a> {
        Observed {
            now,
            stored,
            had_credential: true,
            provider_keys: keys,
            rotate_request: None,
            last_rotate_request: None,
            revoke_all_request: None,
            last_revoke_all_request: None,
            application_replaced: false,
            policy: policy(),
        }
    }

    #[test]
    fn a_valid_listed_credential_is_kept() {
        let s = stored(Some(record()), false);
        let keys = [key("k1", Some(t(0)))];
        assert_eq!(decide(&observed(t(DAY), Some(&s), &keys)), None);
    }

    #[test]
    fn the_first_credential_and_a_deleted_secret_are_told_apart() {
        let keys = [];
        let mut o = observed(t(0), None, &keys);
        o.had_credential = false;
        assert_eq!(decide(&o), Some(IssueReason::Initial));
        o.had_credential = true;
        assert_eq!(decide(&o), Some(IssueReason::SecretMissing));
    }

    #[test]
    fn an_edited_secret_is_replaced() {
        let s = stored(Some(record()), true);
        let keys = [key("k1", Some(t(0)))];
        assert_eq!(
            decide(&observed(t(DAY), Some(&s), &keys)),
            Some(IssueReason::SecretEdited)
        );
    }

    #[test]
    fn a_key_missing_at_the_provider_is_replaced_once_replication_had_time() {
        let s = stored(Some(record()), false);
        assert_eq!(
            decide(&observed(t(30), Some(&s), &[])),
            None,
            "just issued: may not be listed yet"
        );
        assert_eq!(
            decide(&observed(t(DAY), Some(&s), &[])),
            Some(IssueReason::KeyMissingAtProvider)
        );
    }

    #[test]
    fn renewal_starts_renew_before_expiry() {
        let s = stored(Some(record()), false);
        let keys = [key("k1", Some(t(0)))];
        assert_eq!(decide(&observed(t(60 * DAY - 1), Some(&s), &keys)), None);
        assert_eq!(
            decide(&observed(t(60 * DAY), Some(&s), &keys)),
            Some(IssueReason::Renewal)
        );
    }

    #[test]
    fn a_new_rotate_annotation_value_rotates_once() {
        let s = stored(Some(record()), false);
        let keys = [key("k1", Some(t(0)))];
        let mut o = observed(t(DAY), Some(&s), &keys);
        o.rotate_request = Some("2026-11-21");
        assert_eq!(decide(&o), Some(IssueReason::RotateRequested));
        o.last_rotate_request = Some("2026-11-21");
        assert_eq!(decide(&o), None);
    }

    #[test]
    fn rotate_requests_wait_while_too_many_superseded_keys_are_live() {
        let mut r = record();
        r.previous = (0..MAX_SUPERSEDED)
            .map(|i| crate::secret::PreviousKey {
                key_id: format!("old{i}"),
                revoke_after: t(DAY + 3600),
            })
            .collect();
        let s = stored(Some(r.clone()), false);
        let keys = [key("k1", Some(t(0)))];
        let mut o = observed(t(DAY), Some(&s), &keys);
        o.rotate_request = Some("again");
        assert_eq!(decide(&o), None, "held");
        let note = rotate_held(&r, Some("again"), None).unwrap();
        assert!(
            note.contains("waits until a superseded secret is revoked"),
            "{note}"
        );
        o.revoke_all_request = Some("incident");
        assert_eq!(
            decide(&o),
            Some(IssueReason::RevokeAllRequested),
            "never held back"
        );
        r.previous.pop();
        let s = stored(Some(r.clone()), false);
        let mut o = observed(t(DAY), Some(&s), &keys);
        o.rotate_request = Some("again");
        assert_eq!(decide(&o), Some(IssueReason::RotateRequested));
        assert_eq!(rotate_held(&r, Some("again"), None), None);
    }

    #[test]
    fn requests_in_a_loop_issue_at_most_one_secret_per_interval() {
        // A rotate request was served by the key issued at t(0); the next waits an hour.
        let mut r = record();
        r.rotate_request = Some("first".into());
        let s = stored(Some(r.clone()), false);
        let keys = [key("k1", Some(t(0)))];
        let mut o = observed(t(600), Some(&s), &keys);
        o.rotate_request = Some("second");
        o.last_rotate_request = Some("first");
        assert_eq!(decide(&o), None, "10 minutes after the last issuance: held");
        let rotate = ("rotate", Some("second"), Some("first"), true);
        let none = ("revoke-all", None, None, false);
        let (at, message) = request_rate_limited(t(600), &r, [rotate, none], o.policy.min_request_interval)
            .expect("reported");
        assert_eq!(at, t(3600));
        assert!(
            message.contains("rotate request second is served at"),
            "{message}"
        );
        o.now = t(3600);
        assert_eq!(decide(&o), Some(IssueReason::RotateRequested), "due");
        assert_eq!(
            request_rate_limited(t(3600), &r, [rotate, none], o.policy.min_request_interval),
            None
        );
        // A staged key counts as the newest issuance.
        let mut staged = r.clone();
        staged.pending = Some(crate::secret::PendingKey {
            key_id: "k2".into(),
            issued_at: t(3000),
            expires_at: t(90 * DAY),
        });
        assert_eq!(
            request_allowed_at(&staged, true, Duration::from_secs(3600)),
            t(6600)
        );
        // The first request of a kind is served at once; so is a revoke-all after rotations.
        assert_eq!(
            request_allowed_at(&r, false, Duration::from_secs(3600)),
            Timestamp::MIN
        );
        let mut o = observed(t(600), Some(&s), &keys);
        o.revoke_all_request = Some("incident");
        assert_eq!(decide(&o), Some(IssueReason::RevokeAllRequested));
        // A second revoke-all within the interval waits too.
        let mut r2 = r.clone();
        r2.revoke_all_request = Some("incident".into());
        let s2 = stored(Some(r2), false);
        let mut o = observed(t(600), Some(&s2), &keys);
        o.revoke_all_request = Some("incident-2");
        o.last_revoke_all_request = Some("incident");
        assert_eq!(decide(&o), None);
        // An absurd interval saturates instead of overflowing.
        assert_eq!(request_allowed_at(&r, true, Duration::MAX), Timestamp::MAX);
    }

    #[test]
    fn revoke_all_comes_before_everything_but_a_missing_secret() {
        let s = stored(Some(record()), true);
        let keys = [key("k1", Some(t(0)))];
        let mut o = observed(t(DAY), Some(&s), &keys);
        o.revoke_all_request = Some("incident-42");
        assert_eq!(decide(&o), Some(IssueReason::RevokeAllRequested));
        o.last_revoke_all_request = Some("incident-42");
        assert_eq!(decide(&o), Some(IssueReason::SecretEdited));
    }

    #[test]
    fn a_replaced_application_needs_a_new_key_at_once() {
        let s = stored(Some(record()), false);
        let mut o = observed(t(30), Some(&s), &[]);
        o.application_replaced = true;
        assert_eq!(decide(&o), Some(IssueReason::KeyMissingAtProvider));
    }

    #[test]
    fn a_rotation_under_way_is_not_started_again() {
        let mut r = record();
        r.pending = Some(crate::secret::PendingKey {
            key_id: "k2".into(),
            issued_at: t(60 * DAY),
            expires_at: t(150 * DAY),
        });
        let s = stored(Some(r), false);
        let keys = [key("k1", Some(t(0))), key("k2", Some(t(60 * DAY)))];
        assert_eq!(
            decide(&observed(t(60 * DAY + 10), Some(&s), &keys)),
            None,
            "renewal due, but staged already"
        );
        let only_old = [key("k1", Some(t(0)))];
        assert_eq!(
            decide(&observed(t(61 * DAY), Some(&s), &only_old)),
            Some(IssueReason::Renewal),
            "the staged key vanished: stage again"
        );
    }

    #[test]
    fn only_renewal_and_rotation_keep_the_current_secret() {
        assert!(IssueReason::Renewal.keeps_current_secret());
        assert!(IssueReason::RotateRequested.keeps_current_secret());
        for r in [
            IssueReason::Initial,
            IssueReason::SecretMissing,
            IssueReason::SecretEdited,
            IssueReason::KeyMissingAtProvider,
            IssueReason::RevokeAllRequested,
            IssueReason::RecordTampered,
        ] {
            assert!(!r.keeps_current_secret(), "{r:?}");
        }
    }

    #[test]
    fn previous_keys_are_revoked_after_grace_and_only_once_the_new_one_works() {
        let mut r = record();
        r.previous = vec![PreviousKey {
            key_id: "k0".into(),
            revoke_after: t(3600),
        }];
        assert!(revocable(t(3599), &r).is_empty());
        assert_eq!(revocable(t(3600), &r), vec!["k0".to_string()]);
        r.verified_at = None;
        assert!(
            revocable(t(99_999), &r).is_empty(),
            "never before the new secret is proven"
        );
    }

    #[test]
    fn orphans_are_unrecorded_keys_older_than_the_replication_window() {
        let mut r = record();
        r.previous = vec![PreviousKey {
            key_id: "k0".into(),
            revoke_after: t(3600),
        }];
        let keys = [
            key("k0", Some(t(0))),
            key("k1", Some(t(0))),
            key("leak", Some(t(0))),
            key("fresh", Some(t(1000))),
        ];
        let also = BTreeSet::from(["status-key".to_string()]);
        assert_eq!(orphans(t(1010), &keys, Some(&r), &also), vec!["leak".to_string()]);
        assert_eq!(
            orphans(t(1000 + 121), &keys, Some(&r), &also),
            vec!["leak".to_string(), "fresh".to_string()]
        );
    }

    #[test]
    fn a_request_counts_as_served_when_the_record_or_the_status_says_so() {
        // The record is written with the key issued for the request; status may lag.
        assert_eq!(acted_upon(Some("r2"), Some("r2"), Some("r1")), Some("r2"));
        assert_eq!(acted_upon(Some("r2"), Some("r1"), Some("r2")), Some("r2"));
        // Neither: the request is new, whatever was served before.
        assert_eq!(acted_upon(Some("r3"), Some("r2"), Some("r1")), Some("r1"));
        assert_eq!(acted_upon(Some("r3"), Some("r2"), None), Some("r2"));
        assert_eq!(acted_upon(None, None, None), None);
    }

    fn status_of(r: &CredentialRecord) -> ApplicationStatus {
        use crate::crd::application::{CredentialStatus, PendingCredential, PreviousCredential};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        // Status times have whole seconds.
        let whole = |t: Timestamp| Time(Timestamp::from_second(t.as_second()).unwrap());
        ApplicationStatus {
            credential: Some(CredentialStatus {
                key_id: r.key_id.clone(),
                issued_at: whole(r.issued_at),
                expires_at: whole(r.expires_at),
                renew_at: whole(r.expires_at),
            }),
            previous_credentials: r
                .previous
                .iter()
                .map(|p| PreviousCredential {
                    key_id: p.key_id.clone(),
                    revoke_after: whole(p.revoke_after),
                })
                .collect(),
            pending_credential: r.pending.as_ref().map(|p| PendingCredential {
                key_id: p.key_id.clone(),
                issued_at: whole(p.issued_at),
            }),
            ..Default::default()
        }
    }

    fn unsigned(r: CredentialRecord) -> StoredCredential {
        StoredCredential {
            trust: RecordTrust::Unsigned,
            ..stored(Some(r), false)
        }
    }

    #[test]
    fn a_forged_record_is_replaced_and_decides_nothing_else() {
        let mut s = stored(None, false);
        s.trust = RecordTrust::Forged;
        let keys = [key("k1", Some(t(0)))];
        let mut o = observed(t(DAY), Some(&s), &keys);
        assert_eq!(decide(&o), Some(IssueReason::RecordTampered));
        o.had_credential = false;
        assert_eq!(decide(&o), Some(IssueReason::RecordTampered));
        o.revoke_all_request = Some("incident");
        assert_eq!(
            decide(&o),
            Some(IssueReason::RevokeAllRequested),
            "one key serves both"
        );
    }

    #[test]
    fn an_unsigned_record_the_status_corroborates_is_kept_and_signed() {
        let mut r = record();
        r.issued_at = Timestamp::from_second(1_700_000_000).unwrap() + SignedDuration::from_millis(250);
        r.previous = vec![PreviousKey {
            key_id: "k0".into(),
            revoke_after: t(3600),
        }];
        r.pending = Some(crate::secret::PendingKey {
            key_id: "k2".into(),
            issued_at: t(50),
            expires_at: t(DAY),
        });
        let vetted = vet(unsigned(r.clone()), &status_of(&r));
        assert_eq!(vetted.trust, RecordTrust::Verified);
        assert_eq!(vetted.record, Some(r.clone()));
        assert!(vetted.details_stale, "rewritten with its MAC at once");
    }

    #[test]
    fn an_unsigned_record_the_status_does_not_corroborate_is_forged() {
        let r = record();
        let status = status_of(&r);
        let mut edits: Vec<CredentialRecord> = Vec::new();
        // A key adopted, a key named current, times moved, a staged key invented.
        let mut e = r.clone();
        e.previous.push(PreviousKey {
            key_id: "adopt-me".into(),
            revoke_after: t(DAY),
        });
        edits.push(e);
        let mut e = r.clone();
        e.key_id = "someone-elses".into();
        edits.push(e);
        let mut e = r.clone();
        e.expires_at = t(DAY);
        edits.push(e);
        let mut e = r.clone();
        e.pending = Some(crate::secret::PendingKey {
            key_id: "k9".into(),
            issued_at: t(0),
            expires_at: t(DAY),
        });
        edits.push(e);
        for e in edits {
            let vetted = vet(unsigned(e.clone()), &status);
            assert_eq!(
                (vetted.trust, vetted.record),
                (RecordTrust::Forged, None),
                "{e:?}"
            );
        }
        // No status at all (it was lost): nothing corroborates.
        let vetted = vet(unsigned(r.clone()), &ApplicationStatus::default());
        assert_eq!(vetted.trust, RecordTrust::Forged);
        // Signed and forged records pass through untouched.
        let signed = stored(Some(r.clone()), false);
        assert_eq!(vet(signed, &ApplicationStatus::default()).record, Some(r));
    }
}
