//! The provider inventory: what Graph holds of the applications and service principals this
//! operator tagged, kept current with `/applications/delta` (contract §3.7) so that a resync
//! of many unchanged Applications costs O(1) Graph requests plus the changes instead of a GET
//! per Application.
//!
//! The inventory only ever answers "this object is known to be unchanged": anything it is
//! unsure of (not listed yet, changed since, written by us since, older than
//! [`InventoryConfig::reverify_after`]) is answered "unknown", and the caller reads the object
//! directly, which is exactly what it would do without an inventory. So the inventory can be
//! late but not wrong in a way that skips a repair:
//! - the first delta round lists every application whole; ours (by tag) are kept;
//! - later rounds name objects that changed; they are marked stale, never merged (Graph sends
//!   only changed properties, and cannot tell a new object from an update);
//! - the client marks an object stale on every write it makes to it, and a round or read that
//!   started before that write cannot make it fresh again;
//! - service principals come from one tagged listing per refresh
//!   (`GET /servicePrincipals?$filter=tags/any(…)`, 999 per page): Graph has no delta for them
//!   in the contract.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::client::GraphClient;
use super::models::{Application, DeltaCursor, DeltaItem, DeltaRound, ServicePrincipal};
use super::GraphError;

/// How the inventory of one client is kept.
#[derive(Debug, Clone)]
pub struct InventoryConfig {
    /// The tag every object of this operator instance carries (applications and service
    /// principals); objects without it are not kept.
    pub tag: String,
    /// A refresh (one delta round, one listing) is made when the last one is older than this.
    pub max_age: Duration,
    /// An object is read directly at least this often even if delta reports no change: a
    /// safety net against a change delta never showed (a read from a lagging replica).
    pub reverify_after: Duration,
}

/// How long a lookup waits for another caller's refresh before answering from what is known.
const REFRESH_WAIT: Duration = Duration::from_secs(2);

/// The properties the operator reads from an application (delta `$select`).
const APPLICATION_PROPERTIES: &[&str] = &[
    "id",
    "appId",
    "displayName",
    "description",
    "uniqueName",
    "tags",
    "signInAudience",
    "notes",
    "identifierUris",
    "web",
    "requiredResourceAccess",
    "passwordCredentials",
    "createdDateTime",
];

/// The inventory of one client: its state and the single-flight refresh lock.
pub(crate) struct Inventory {
    config: InventoryConfig,
    state: std::sync::Mutex<InventoryState>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Inventory {
    pub(crate) fn new(config: InventoryConfig) -> Self {
        Self {
            config,
            state: std::sync::Mutex::new(InventoryState::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, InventoryState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn tag(&self) -> &str {
        &self.config.tag
    }

    /// A position in the sequence of writes, taken before a read.
    pub(crate) fn mark(&self) -> u64 {
        self.state().seq
    }

    /// The client wrote to application `id`: what is known of it is stale.
    pub(crate) fn touched_application(&self, id: &str) {
        self.state().touch_application(id);
    }

    /// The client wrote to (or deleted) service principal `id`.
    pub(crate) fn touched_service_principal(&self, id: &str) {
        self.state().touch_service_principal(id);
    }

    /// A direct read of application `app`, started at `mark`.
    pub(crate) fn read_application(&self, app: &Application, mark: u64) {
        if app.tags().contains(&self.config.tag) {
            self.state().record_application(app, mark, Instant::now());
        }
    }

    /// A direct read (or create) of service principal `sp`, started at `mark`.
    pub(crate) fn read_service_principal(&self, sp: &ServicePrincipal, mark: u64) {
        self.state().record_service_principal(sp, mark);
    }
}

/// What the inventory knows of one application.
#[derive(Debug, Clone)]
enum Entry {
    /// As listed or read at `at`, with no change reported or made since.
    Fresh { app: Box<Application>, at: Instant },
    /// Changed since it was last listed or read: read it directly.
    Stale,
}

/// The pure state, apart from the calls that feed it.
#[derive(Debug, Default)]
pub(crate) struct InventoryState {
    /// Incremented on every write the client makes.
    seq: u64,
    /// The write sequence number of the last write to each object.
    written: HashMap<String, u64>,
    /// Ours (tagged) only.
    applications: HashMap<String, Entry>,
    /// `None` until the first delta round completed.
    delta_link: Option<String>,
    /// When the last completed refresh started.
    synced_at: Option<Instant>,
    /// When the last refresh failed (no refresh is tried again for `max_age`).
    failed_at: Option<Instant>,
    /// Tagged service principals as of the last listing, plus those read or created since,
    /// each with the write mark at which it was learned and its `appId` (which application
    /// it serves: a principal id is trusted only for its own application).
    service_principals: HashMap<String, (u64, Option<String>)>,
}

impl InventoryState {
    fn touch_application(&mut self, id: &str) {
        self.seq += 1;
        self.written.insert(id.to_string(), self.seq);
        if let Some(e) = self.applications.get_mut(id) {
            *e = Entry::Stale;
        }
    }

    fn touch_service_principal(&mut self, id: &str) {
        self.seq += 1;
        self.written.insert(id.to_string(), self.seq);
        self.service_principals.remove(id);
    }

    /// Whether `id` was written after `mark` (so a read that started at `mark` may predate it).
    fn written_since(&self, id: &str, mark: u64) -> bool {
        self.written.get(id).is_some_and(|w| *w > mark)
    }

    fn record_application(&mut self, app: &Application, mark: u64, at: Instant) {
        if self.written_since(&app.id, mark) {
            return;
        }
        let entry = Entry::Fresh {
            app: Box::new(app.clone()),
            at,
        };
        self.applications.insert(app.id.clone(), entry);
    }

    fn record_service_principal(&mut self, sp: &ServicePrincipal, mark: u64) {
        if !self.written_since(&sp.id, mark) {
            self.service_principals
                .insert(sp.id.clone(), (mark, sp.app_id.clone()));
        }
    }

    /// Whether a refresh is due at `now`.
    fn due(&self, now: Instant, max_age: Duration) -> bool {
        let stale = self.synced_at.is_none_or(|t| now.duration_since(t) >= max_age);
        let backing_off = self.failed_at.is_some_and(|t| now.duration_since(t) < max_age);
        stale && !backing_off
    }

    /// Applies a delta round that started at `started` (write mark `mark`).
    fn apply_round(&mut self, round: DeltaRound, tag: &str, mark: u64, started: Instant) {
        let initial = self.delta_link.is_none();
        if initial {
            self.applications.clear();
        }
        for item in round.items {
            match item {
                DeltaItem::Removed { id, .. } => {
                    self.applications.remove(&id);
                }
                DeltaItem::Changed(app) => {
                    let ours = app.tags().iter().any(|t| t == tag);
                    if initial {
                        // The first round lists objects whole.
                        if ours {
                            self.record_application(&app, mark, started);
                        }
                    } else if ours || self.applications.contains_key(&app.id) {
                        // Only the changed properties, or a new object: read it when needed.
                        self.applications.insert(app.id.clone(), Entry::Stale);
                    }
                }
            }
        }
        self.delta_link = Some(round.delta_link);
    }

    /// Replaces the known service principals with a listing that started at `mark`; those
    /// learned after it started (created, read) are kept, since it may predate them.
    fn apply_listing(&mut self, listed: &[ServicePrincipal], mark: u64) {
        let mut known: HashMap<String, (u64, Option<String>)> = listed
            .iter()
            .filter(|sp| !self.written_since(&sp.id, mark))
            .map(|sp| (sp.id.clone(), (mark, sp.app_id.clone())))
            .collect();
        for (id, learned) in &self.service_principals {
            if learned.0 > mark {
                known.entry(id.clone()).or_insert(learned.clone());
            }
        }
        self.service_principals = known;
    }

    fn completed(&mut self, started: Instant) {
        self.synced_at = Some(started);
        self.failed_at = None;
    }

    fn failed(&mut self, at: Instant, restart: bool) {
        self.failed_at = Some(at);
        if restart {
            // A delta link Graph no longer accepts: start over with a full round.
            self.delta_link = None;
        }
    }

    /// Whether the last refresh is recent enough to trust: a refresh is due every `max_age`,
    /// so older knowledge means refreshes are failing (or nobody asked for a while).
    fn synced_within(&self, now: Instant, config: &InventoryConfig) -> bool {
        let horizon = config.max_age * 2 + Duration::from_secs(1);
        self.synced_at.is_some_and(|t| now.duration_since(t) < horizon)
    }

    /// The application `id` if it is known to be unchanged at `now`.
    fn application(&self, id: &str, now: Instant, config: &InventoryConfig) -> Option<Application> {
        let synced = self.synced_within(now, config);
        match self.applications.get(id) {
            Some(Entry::Fresh { app, at }) if synced && now.duration_since(*at) < config.reverify_after => {
                Some((**app).clone())
            }
            _ => None,
        }
    }

    /// Whether service principal `id` of application `app_id` is known to exist at `now`.
    fn has_service_principal(&self, id: &str, app_id: &str, now: Instant, config: &InventoryConfig) -> bool {
        self.synced_within(now, config)
            && self
                .service_principals
                .get(id)
                .is_some_and(|(_, of)| of.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(app_id)))
    }

    #[cfg(test)]
    fn known_applications(&self) -> usize {
        self.applications
            .values()
            .filter(|e| matches!(e, Entry::Fresh { .. }))
            .count()
    }
}

impl GraphClient {
    /// The application `id` as the inventory knows it, if it is known to be unchanged
    /// (refreshing the inventory first when due). `None`: read it directly.
    pub async fn known_application(&self, id: &str) -> Option<Application> {
        let inventory = self.inventory()?;
        self.refresh_inventory(inventory).await;
        inventory
            .state()
            .application(id, Instant::now(), &inventory.config)
    }

    /// Whether the service principal `id` of application `app_id` is known to exist
    /// (refreshing the inventory first when due). `false`: read it directly.
    pub async fn known_service_principal(&self, id: &str, app_id: &str) -> bool {
        let Some(inventory) = self.inventory() else {
            return false;
        };
        self.refresh_inventory(inventory).await;
        inventory
            .state()
            .has_service_principal(id, app_id, Instant::now(), &inventory.config)
    }

    /// One delta round and one listing of tagged service principals, when due; one caller
    /// does it while the others wait for its result, for at most [`REFRESH_WAIT`]: the
    /// first round of a large tenant pages through all its applications, and meanwhile the
    /// others read directly rather than stall.
    async fn refresh_inventory(&self, inventory: &Inventory) {
        let max_age = inventory.config.max_age;
        if !inventory.state().due(Instant::now(), max_age) {
            return;
        }
        let Ok(_single_flight) = tokio::time::timeout(REFRESH_WAIT, inventory.refreshing.lock()).await else {
            return;
        };
        if !inventory.state().due(Instant::now(), max_age) {
            return;
        }
        let started = Instant::now();
        let mark = inventory.mark();
        let cursor = match inventory.state().delta_link.clone() {
            Some(link) => DeltaCursor::Link(link),
            None => DeltaCursor::Initial {
                select: APPLICATION_PROPERTIES.iter().map(|p| p.to_string()).collect(),
            },
        };
        let round = match self.applications_delta(cursor).await {
            Ok(round) => round,
            Err(e) => return refresh_failed(inventory, "applications delta", &e),
        };
        let listing = match self.list_service_principals_by_tag(inventory.tag()).await {
            Ok(listing) => listing,
            Err(e) => return refresh_failed(inventory, "service principal listing", &e),
        };
        let mut state = inventory.state();
        let changes = round.items.len();
        state.apply_round(round, &inventory.config.tag, mark, started);
        state.apply_listing(&listing, mark);
        state.completed(started);
        debug!(
            changes,
            applications = state.applications.len(),
            service_principals = state.service_principals.len(),
            "inventory refreshed"
        );
    }
}

fn refresh_failed(inventory: &Inventory, what: &str, e: &GraphError) {
    // Until the next attempt, every lookup answers "unknown" and callers read directly.
    let restart = !e.is_transient() && !matches!(e, GraphError::Throttled { .. });
    warn!(error = %e, "inventory refresh failed ({what}); reading objects directly meanwhile");
    inventory.state().failed(Instant::now(), restart);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "dcr-operator:cluster:test";

    fn config() -> InventoryConfig {
        InventoryConfig {
            tag: TAG.into(),
            max_age: Duration::from_secs(10),
            reverify_after: Duration::from_secs(3600),
        }
    }

    fn app(id: &str, tagged: bool) -> Application {
        Application {
            id: id.into(),
            app_id: Some(format!("client-{id}")),
            tags: Some(if tagged { vec![TAG.into()] } else { vec![] }),
            ..Default::default()
        }
    }

    fn round(items: Vec<DeltaItem>) -> DeltaRound {
        DeltaRound {
            items,
            delta_link: "https://graph/v1.0/applications/delta?$deltatoken=x".into(),
        }
    }

    fn changed(a: Application) -> DeltaItem {
        DeltaItem::Changed(Box::new(a))
    }

    fn synced(items: Vec<DeltaItem>) -> (InventoryState, Instant) {
        let mut s = InventoryState::default();
        let t0 = Instant::now();
        s.apply_round(round(items), TAG, s.seq, t0);
        s.completed(t0);
        (s, t0)
    }

    #[test]
    fn the_first_round_keeps_only_tagged_applications_whole() {
        let (s, t0) = synced(vec![changed(app("a", true)), changed(app("b", false))]);
        assert_eq!(s.known_applications(), 1);
        assert_eq!(
            s.application("a", t0, &config()).unwrap().app_id.as_deref(),
            Some("client-a")
        );
        assert!(s.application("b", t0, &config()).is_none());
    }

    #[test]
    fn later_rounds_mark_changes_stale_and_never_merge_them() {
        let (mut s, t0) = synced(vec![changed(app("a", true)), changed(app("c", true))]);
        // An update lists only changed properties: "a" is read directly next time.
        let partial = Application {
            id: "a".into(),
            display_name: Some("renamed".into()),
            ..Default::default()
        };
        s.apply_round(
            round(vec![changed(partial), changed(app("n", true))]),
            TAG,
            s.seq,
            t0,
        );
        assert!(s.application("a", t0, &config()).is_none());
        assert!(
            s.application("n", t0, &config()).is_none(),
            "new objects are read first"
        );
        assert!(
            s.application("c", t0, &config()).is_some(),
            "unchanged stays known"
        );
        // Foreign applications never enter.
        s.apply_round(round(vec![changed(app("f", false))]), TAG, s.seq, t0);
        assert!(!s.applications.contains_key("f"));
    }

    #[test]
    fn removed_applications_are_forgotten() {
        let (mut s, t0) = synced(vec![changed(app("a", true))]);
        let removed = DeltaItem::Removed {
            id: "a".into(),
            reason: super::super::models::RemovedReason::Changed,
        };
        s.apply_round(round(vec![removed]), TAG, s.seq, t0);
        assert!(s.application("a", t0, &config()).is_none());
    }

    #[test]
    fn a_write_makes_an_application_stale_even_against_an_older_read() {
        let (mut s, t0) = synced(vec![changed(app("a", true))]);
        let before_write = s.seq;
        s.touch_application("a");
        assert!(s.application("a", t0, &config()).is_none());
        // A GET that started before the write may show the old state: not trusted.
        s.record_application(&app("a", true), before_write, t0);
        assert!(s.application("a", t0, &config()).is_none());
        // One that started after it is.
        s.record_application(&app("a", true), s.seq, t0);
        assert!(s.application("a", t0, &config()).is_some());
    }

    #[test]
    fn a_first_round_in_flight_during_a_write_does_not_resurrect_the_old_state() {
        let mut s = InventoryState::default();
        let mark = s.seq;
        s.touch_application("a");
        let t0 = Instant::now();
        s.apply_round(round(vec![changed(app("a", true))]), TAG, mark, t0);
        s.completed(t0);
        assert!(s.application("a", t0, &config()).is_none());
    }

    #[test]
    fn knowledge_expires_with_the_refresh_and_the_reverify_interval() {
        let (s, t0) = synced(vec![changed(app("a", true))]);
        let c = config();
        assert!(s.application("a", t0 + Duration::from_secs(20), &c).is_some());
        assert!(
            s.application("a", t0 + c.max_age * 3, &c).is_none(),
            "not refreshed"
        );
        let short = InventoryConfig {
            reverify_after: Duration::from_secs(5),
            ..config()
        };
        assert!(s.application("a", t0 + Duration::from_secs(6), &short).is_none());
        assert!(s.due(t0 + c.max_age, c.max_age));
        assert!(!s.due(t0 + Duration::from_secs(1), c.max_age));
    }

    #[test]
    fn a_failed_refresh_backs_off_and_an_invalid_link_restarts_from_a_full_round() {
        let (mut s, t0) = synced(vec![changed(app("a", true))]);
        let later = t0 + Duration::from_secs(20);
        s.failed(later, true);
        assert!(s.delta_link.is_none());
        assert!(!s.due(later + Duration::from_secs(1), Duration::from_secs(10)));
        assert!(s.due(later + Duration::from_secs(10), Duration::from_secs(10)));
        assert!(
            s.application("a", later + Duration::from_secs(5), &config())
                .is_none(),
            "too old to trust"
        );
    }

    #[test]
    fn service_principals_come_from_the_listing_and_writes_remove_them() {
        let (mut s, t0) = synced(vec![]);
        let sp = |id: &str| ServicePrincipal {
            id: id.into(),
            app_id: Some(format!("app-{id}")),
            ..Default::default()
        };
        let mark = s.seq;
        s.apply_listing(&[sp("p1"), sp("p2")], mark);
        assert!(s.has_service_principal("p1", "app-p1", t0, &config()));
        s.touch_service_principal("p1");
        assert!(!s.has_service_principal("p1", "app-p1", t0, &config()));
        // A listing that started before the delete still shows it: not trusted.
        s.apply_listing(&[sp("p1"), sp("p2")], mark);
        assert!(!s.has_service_principal("p1", "app-p1", t0, &config()));
        assert!(s.has_service_principal("p2", "app-p2", t0, &config()));
        // Created after the listing started: kept across the next listing that misses it.
        let before = s.seq;
        s.touch_service_principal("p3");
        s.record_service_principal(&sp("p3"), s.seq);
        s.apply_listing(&[sp("p2")], before);
        assert!(s.has_service_principal("p3", "app-p3", t0, &config()));
        assert!(!s.has_service_principal("p9", "app-p9", t0, &config()));
        assert!(
            !s.has_service_principal("p2", "app-p3", t0, &config()),
            "a principal is known only for its own application"
        );
    }
}
