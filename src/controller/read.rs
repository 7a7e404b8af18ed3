//! Reading a referenced object: absent is an answer (the caller decides what it means), a
//! failed read is an [`Error::ReadObject`] naming what was read.

use super::error::{Error, Result};
use kube::api::Api;
use kube::Resource;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// `api.get_opt(name)`, the error naming the object as `{Kind} {name}`.
pub async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    api.get_opt(name).await.map_err(|source| Error::ReadObject {
        what: format!("{} {name}", K::kind(&())),
        source,
    })
}
