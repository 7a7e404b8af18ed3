//! Publishing Events. A failure to publish is logged, never fails a reconciliation.

use super::context::Context;
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
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "cannot publish an Event");
    }
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
