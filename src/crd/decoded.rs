//! `Decoded<K>`: an object that may not decode, so one bad object affects only itself.
//!
//! A watch decodes whole lists: without this, one object the types refuse (a value the
//! schema admits on a cluster that skips CEL, or stored before a schema change) fails the
//! list, and with it every object of the kind. Like kube's `DeserializeGuard`, but the error
//! names the field (`spec.credentials.lifetime: ...`), so it can be reported on the object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::Resource;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;

/// Longest decode error kept (it lands in a condition message and an Event note).
const MAX_ERROR_LENGTH: usize = 512;

/// An object of kind `K`, or why it could not be decoded.
#[derive(Clone, Debug)]
pub struct Decoded<K>(pub Result<K, Undecodable>);

/// An object the types refuse: its metadata and the error, naming the field.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{error}")]
pub struct Undecodable {
    /// `path: message`, e.g. `spec.credentials.lifetime: duration "1e9h" is not ...`.
    pub error: String,
    pub metadata: ObjectMeta,
    /// `status.conditions` as stored, as far as they decode (so a report is written once).
    pub conditions: Vec<Condition>,
}

impl<K> Decoded<K> {
    /// The object, if it decoded.
    pub fn ok(&self) -> Option<&K> {
        self.0.as_ref().ok()
    }
}

/// Decodes `value` as `K`; the error says where it failed.
pub fn decode<K: DeserializeOwned>(value: &serde_json::Value) -> Result<K, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let text = format!("{path}: {}", e.into_inner());
        text.chars().take(MAX_ERROR_LENGTH).collect()
    })
}

impl<'de, K> Deserialize<'de> for Decoded<K>
where
    K: DeserializeOwned + Resource,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match decode::<K>(&value) {
            Ok(object) => Ok(Decoded(Ok(object))),
            Err(error) => {
                // Without readable metadata there is nothing to report on: fail as before.
                let metadata = value
                    .get("metadata")
                    .cloned()
                    .map(serde_json::from_value::<ObjectMeta>)
                    .transpose()
                    .map_err(D::Error::custom)?
                    .ok_or_else(|| D::Error::custom(format!("object without metadata: {error}")))?;
                let conditions = stored_conditions(&value);
                Ok(Decoded(Err(Undecodable {
                    error,
                    metadata,
                    conditions,
                })))
            }
        }
    }
}

/// The conditions in `status.conditions` that decode; the others are skipped.
fn stored_conditions(value: &serde_json::Value) -> Vec<Condition> {
    value
        .pointer("/status/conditions")
        .and_then(serde_json::Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|c| serde_json::from_value(c.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl<K: Resource> Resource for Decoded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(k) => k.meta(),
            Err(e) => &e.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(k) => k.meta_mut(),
            Err(e) => &mut e.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Application;
    use serde_json::json;

    #[test]
    fn a_valid_object_decodes() {
        let d: Decoded<Application> = serde_json::from_value(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {"authStrategyRef": {"name": "s"}}
        }))
        .unwrap();
        assert_eq!(d.ok().unwrap().spec.auth_strategy_ref.name, "s");
    }

    #[test]
    fn an_invalid_object_keeps_its_metadata_and_names_the_field() {
        let d: Decoded<Application> = serde_json::from_value(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "a", "namespace": "n", "uid": "u"},
            "spec": {"authStrategyRef": {"name": "s"}, "credentials": {"lifetime": "99999999999999999999h"}}
        }))
        .unwrap();
        assert_eq!(d.meta().name.as_deref(), Some("a"));
        let err = d.0.unwrap_err();
        assert!(
            err.error.starts_with("spec.credentials.lifetime: "),
            "{}",
            err.error
        );
        assert!(err.error.contains("exceeds the maximum"), "{}", err.error);
    }

    #[test]
    fn one_bad_item_does_not_fail_the_list() {
        let items: Vec<Decoded<Application>> = serde_json::from_value(json!([
            {"metadata": {"name": "bad"}, "spec": {"authStrategyRef": 5}},
            {"metadata": {"name": "good"}, "spec": {"authStrategyRef": {"name": "s"}}}
        ]))
        .unwrap();
        assert!(items[0].ok().is_none());
        assert!(items[1].ok().is_some());
    }

    #[test]
    fn long_errors_are_cut() {
        let long = "x".repeat(5000);
        let d: Decoded<Application> = serde_json::from_value(json!({
            "metadata": {"name": "a"},
            "spec": {"authStrategyRef": {"name": "s"}, "deletionPolicy": long}
        }))
        .unwrap();
        assert!(d.0.unwrap_err().error.chars().count() <= MAX_ERROR_LENGTH);
    }
}
