//! Reporting an object the operator cannot decode: `Ready=False InvalidSpec` naming the
//! field, and a Warning Event, written once per change of the object. Nothing else is
//! done for it: an Application that cannot be read is neither registered nor deleted at
//! the provider until it is fixed (its finalizer holds a deletion meanwhile).

use super::context::Context;
use super::error::{Error, Result};
use super::events;
use crate::crd::conditions::{set_condition, ConditionType, DesiredCondition, Reason};
use crate::crd::decoded::{Decoded, Undecodable};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

/// A field manager of its own: applying as the kind's manager would drop the status fields
/// that manager owns (client id, credential) from an object that is only broken for now.
const MANAGER: &str = "dcr-operator/decode";

/// The condition an undecodable object gets.
pub fn condition(bad: &Undecodable) -> DesiredCondition {
    DesiredCondition::not_ready(
        Reason::InvalidSpec,
        format!(
            "the operator cannot read this object, so it does nothing with it until it is fixed: {}",
            bad.error
        ),
    )
}

/// Reports `obj` (which did not decode) once per generation and error.
pub async fn report<K>(obj: &Decoded<K>, bad: &Undecodable, ctx: &Context) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
{
    let desired = condition(bad);
    let mut conditions = bad.conditions.clone();
    let generation = obj.meta().generation;
    if !set_condition(&mut conditions, desired.clone(), generation, ctx.now()) {
        return Ok(Action::await_change());
    }
    tracing::warn!(error = %bad.error, "cannot decode the object");
    let ready = conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_str())
        .cloned();
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match obj.namespace() {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), &ns, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    };
    let patch = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": obj.name_any()},
        "status": {"observedGeneration": generation, "conditions": ready.into_iter().collect::<Vec<_>>()},
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::PatchStatus)?;
    events::publish(
        ctx,
        obj,
        EventType::Warning,
        desired.reason.as_str(),
        "Decode",
        desired.message,
    )
    .await;
    Ok(Action::await_change())
}
