//! Publishing Events. A failure to publish is logged, never fails a reconciliation.

use super::context::Context;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use kube::Resource;

/// Longest note the Events API stores.
const MAX_NOTE: usize = 1024;

/// Publishes an Event about `obj`. `reason` is PascalCase (a condition reason or an error
/// category); `note` must never contain a secret.
pub async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: &str, action: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(note)),
        action: action.to_string(),
        secondary: None,
    };
    let reference = obj.object_ref(&());
    let mut result = ctx.recorder.publish(&event, &reference).await;
    if reference.namespace.is_none() && is_namespace_mismatch(&result) {
        // Apiservers before 1.22 reject an events.k8s.io/v1 Event about a cluster-scoped
        // object in `default` unless the reference names that namespace too.
        let in_default = ObjectReference {
            namespace: Some("default".into()),
            ..reference
        };
        result = ctx.recorder.publish(&event, &in_default).await;
    }
    if let Err(e) = result {
        tracing::warn!(error = %e, reason, "cannot publish an Event");
    }
}

fn is_namespace_mismatch(result: &Result<(), kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("does not match event.namespace"))
}

fn truncate(mut note: String) -> String {
    if note.len() > MAX_NOTE {
        let mut end = MAX_NOTE - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}
