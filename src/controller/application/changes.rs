//! Which Applications were edited since their last Ready pass. A resync of an unchanged
//! Application may trust the provider inventory (delta-tracked, no Graph read of its own); an
//! edit of any kind (spec, labels, annotations such as `kubectl annotate ... touch=1`) makes
//! the next pass read the provider directly, as someone who just touched the object expects.

use crate::crd::application::Application;
use kube::ResourceExt;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// Fingerprints of what users edit, as of each Application's last Ready pass (by UID).
#[derive(Default)]
pub struct ChangeTracker {
    ready: Mutex<HashMap<String, u64>>,
}

impl ChangeTracker {
    /// Whether `app` was edited since its last Ready pass in this process. An Application
    /// not seen Ready yet (the first pass after a start) counts as unchanged: its provider
    /// side is then judged by a fresh full inventory.
    pub fn edited_since_ready(&self, app: &Application) -> bool {
        let Some(uid) = app.uid() else { return true };
        let seen = self
            .ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&uid)
            .copied();
        seen.is_some_and(|f| f != fingerprint(app))
    }

    /// Records a Ready pass over `app` as it was read.
    pub fn ready(&self, app: &Application) {
        if let Some(uid) = app.uid() {
            self.ready
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(uid, fingerprint(app));
        }
    }

    /// Forgets a deleted Application.
    pub fn forget(&self, app: &Application) {
        if let Some(uid) = app.uid() {
            self.ready
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&uid);
        }
    }
}

/// What users change: the spec (generation), labels and annotations.
fn fingerprint(app: &Application) -> u64 {
    let mut h = DefaultHasher::new();
    app.metadata.generation.hash(&mut h);
    app.labels().hash(&mut h);
    app.annotations().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(generation: i64, poke: &str) -> Application {
        serde_json::from_value(json!({
            "apiVersion": "dcr-operator.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": "a", "namespace": "n", "uid": "u1", "generation": generation,
                         "annotations": {"poke": poke}},
            "spec": {"authStrategyRef": {"name": "s"}},
        }))
        .unwrap()
    }

    #[test]
    fn edits_after_a_ready_pass_are_noticed_and_status_writes_are_not() {
        let t = ChangeTracker::default();
        assert!(!t.edited_since_ready(&app(1, "a")), "never seen Ready: unchanged");
        t.ready(&app(1, "a"));
        assert!(!t.edited_since_ready(&app(1, "a")));
        assert!(t.edited_since_ready(&app(1, "b")), "annotation");
        assert!(t.edited_since_ready(&app(2, "a")), "spec");
        t.ready(&app(2, "a"));
        assert!(!t.edited_since_ready(&app(2, "a")));
        t.forget(&app(2, "a"));
        assert!(!t.edited_since_ready(&app(3, "z")));
    }
}
