//! Request building: the PagerDuty request for a queued event, the routing key put in only now
//! (storage never holds it).

use pagerduty_events::{AlertEvent, ChangeEvent, Endpoint, RequestBody, RoutingKey};
use serde::Deserialize;

use crate::store::{Action, QueuedEvent};

/// The request for a queued event; an event that no longer parses is unsendable, and the
/// error says why.
pub(crate) fn request_body(
    key: &RoutingKey,
    event: &QueuedEvent,
) -> Result<(Endpoint, RequestBody), serde_json::Error> {
    match event.action {
        Action::Change => {
            let change = ChangeEvent::deserialize(&event.event)?;
            Ok((Endpoint::ChangeEnqueue, RequestBody::change(key, &change)))
        }
        _ => {
            let alert = AlertEvent::deserialize(&event.event)?;
            Ok((Endpoint::Enqueue, RequestBody::alert(key, &alert)))
        }
    }
}
