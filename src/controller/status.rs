//! Writing status: server-side apply of `{apiVersion, kind, metadata, status}` on the
//! status subresource, with one field manager per controller, so the operator never
//! fights another writer over fields it does not own.

use super::error::{Error, Result};
use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use std::fmt::Debug;

/// Applies `status` to the object `name` (in `api`'s namespace) as `manager`.
pub async fn apply_status<K, S>(api: &Api<K>, manager: &str, name: &str, status: &S) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(manager).force(), &Patch::Apply(&patch))
        .await
        .map(|_| ())
        .map_err(Error::PatchStatus)
}
