//! The admin API's wire format, in one place for both ends: the server ([`crate::http`]'s admin
//! routes) and the CLI (`pagerbridge admin`). Paths, query parameters, request bodies and
//! response bodies are defined here once, so a field renamed on one side is renamed on the
//! other, and the compiler finds every use.
//!
//! Requests are parsed here too, into types that only hold what the server accepts ("parse,
//! don't validate"): a query with an unknown or repeated parameter, a filter that selects
//! nothing by accident, a drop without a reason are each a [`Refused`] with a stable code,
//! which the server answers as 400.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::suppress::{IncidentSource, Status};
use crate::store::{Action, DeadLetterFilter, IncidentFilter, LaneState, StatusFilter};

/// `GET`: per target, pending events, dead letters, the oldest pending age, the lane's lease,
/// state and budget use.
pub const LANES: &str = "/api/v1/admin/lanes";
/// `GET`: every lease (lanes and singletons): its owner, epoch and expiry.
pub const LEASES: &str = "/api/v1/admin/leases";
/// `GET ?target=&limit=`: pending events, oldest first.
pub const QUEUE: &str = "/api/v1/admin/queue";
/// `GET ?target=&dedup_key=&action=&after_id=&limit=&include_dropped=`: dead letters.
pub const DEAD_LETTERS: &str = "/api/v1/admin/dead-letters";
/// `GET ?target=&state=&dedup_key=&limit=&after=`: incidents as PagerDuty last heard of them,
/// by target and dedup key.
pub const INCIDENTS: &str = "/api/v1/admin/incidents";
/// `POST` a [`ReplayRequest`]: dead letters back to the queue.
pub const REPLAY: &str = "/api/v1/admin/dead-letters/replay";
/// `POST` a [`DropRequest`]: give up on dead letters, with a reason.
pub const DROP: &str = "/api/v1/admin/dead-letters/drop";

/// Rows per listing unless `limit` says otherwise, and the most `limit` may ask for.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// Ids one replay or drop request may name; larger sets go in several requests.
pub const MAX_IDS: usize = 10_000;
/// A drop reason is for people; it need not be an essay.
pub const MAX_REASON_CHARS: usize = 1000;

/// A request the server refuses: a stable code for machines and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub error: &'static str,
    pub detail: String,
}

fn refused(error: &'static str, detail: impl Into<String>) -> Refused {
    Refused {
        error,
        detail: detail.into(),
    }
}

/// The query of [`LANES`]: it takes no parameter, so any parameter is refused.
pub fn parse_lanes_query(raw: Option<&str>) -> Result<(), Refused> {
    Params::parse(raw, &[]).map(drop)
}

/// The query of [`LEASES`]: it takes no parameter, so any parameter is refused.
pub fn parse_leases_query(raw: Option<&str>) -> Result<(), Refused> {
    Params::parse(raw, &[]).map(drop)
}

/// The query of [`QUEUE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueQuery {
    pub target: Option<String>,
    pub limit: u32,
}

impl QueueQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, Refused> {
        let params = Params::parse(raw, &["target", "limit"])?;
        Ok(Self {
            target: params.text("target").map(str::to_owned),
            limit: params.limit()?,
        })
    }

    /// The query string's pairs, as the CLI sends them.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("limit", self.limit.to_string())];
        if let Some(target) = &self.target {
            pairs.push(("target", target.clone()));
        }
        pairs
    }
}

/// The query of [`DEAD_LETTERS`]. Pages go by id: the next starts after `after_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQuery {
    pub target: Option<String>,
    pub dedup_key: Option<String>,
    pub action: Option<Action>,
    pub after_id: Option<i64>,
    pub limit: u32,
    pub include_dropped: bool,
}

impl Default for DeadLetterQuery {
    /// Every dead letter not dropped, a default page at a time.
    fn default() -> Self {
        Self {
            target: None,
            dedup_key: None,
            action: None,
            after_id: None,
            limit: DEFAULT_LIMIT,
            include_dropped: false,
        }
    }
}

impl DeadLetterQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, Refused> {
        let params = Params::parse(
            raw,
            &[
                "target",
                "dedup_key",
                "action",
                "after_id",
                "limit",
                "include_dropped",
            ],
        )?;
        Ok(Self {
            target: params.text("target").map(str::to_owned),
            dedup_key: params.text("dedup_key").map(str::to_owned),
            action: params.action()?,
            after_id: params.number("after_id", "an event id")?,
            limit: params.limit()?,
            include_dropped: params.flag("include_dropped")?,
        })
    }

    /// The query string's pairs, as the CLI sends them; absent criteria are left out.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("limit", self.limit.to_string())];
        if let Some(target) = &self.target {
            pairs.push(("target", target.clone()));
        }
        if let Some(key) = &self.dedup_key {
            pairs.push(("dedup_key", key.clone()));
        }
        if let Some(action) = self.action {
            pairs.push(("action", action.as_str().to_owned()));
        }
        if self.include_dropped {
            pairs.push(("include_dropped", "true".to_owned()));
        }
        if let Some(after) = self.after_id {
            pairs.push(("after_id", after.to_string()));
        }
        pairs
    }

    /// The filter this listing applies (every dead letter the criteria allow).
    pub fn filter(&self) -> DeadLetterFilter {
        DeadLetterFilter {
            target: self.target.clone(),
            dedup_key: self.dedup_key.clone(),
            action: self.action,
            all: true,
            ..DeadLetterFilter::default()
        }
    }
}

/// Where a page of incidents starts: after the incident `<target>:<dedup_key>`, the last of
/// the page before. Target names never hold a `:` (dedup keys may), so the first one splits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IncidentCursor {
    pub target: String,
    pub dedup_key: String,
}

impl IncidentCursor {
    pub fn parse(text: &str) -> Option<Self> {
        let (target, dedup_key) = text.split_once(':')?;
        (!target.is_empty()).then(|| Self {
            target: target.to_owned(),
            dedup_key: dedup_key.to_owned(),
        })
    }
}

impl std::fmt::Display for IncidentCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.target, self.dedup_key)
    }
}

impl TryFrom<String> for IncidentCursor {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text).ok_or_else(|| format!("{text:?} is not <target>:<dedup_key>"))
    }
}

impl From<IncidentCursor> for String {
    fn from(cursor: IncidentCursor) -> Self {
        cursor.to_string()
    }
}

/// The query of [`INCIDENTS`]. Pages go by (target, dedup key): the next starts `after` the
/// last incident of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentQuery {
    pub target: Option<String>,
    pub state: Option<StatusFilter>,
    pub dedup_key: Option<String>,
    pub after: Option<IncidentCursor>,
    pub limit: u32,
}

impl Default for IncidentQuery {
    /// Every incident, a default page at a time.
    fn default() -> Self {
        Self {
            target: None,
            state: None,
            dedup_key: None,
            after: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl IncidentQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, Refused> {
        let params = Params::parse(raw, &["target", "state", "dedup_key", "limit", "after"])?;
        let state = params
            .text("state")
            .map(|v| {
                StatusFilter::parse(v).ok_or_else(|| {
                    refused(
                        "invalid_parameter",
                        format!(
                            "state must be triggered, acknowledged, resolved or open, not {v:?}"
                        ),
                    )
                })
            })
            .transpose()?;
        let after = params
            .text("after")
            .map(|v| {
                IncidentCursor::parse(v).ok_or_else(|| {
                    refused(
                        "invalid_parameter",
                        format!("after must be <target>:<dedup_key> (a `next` cursor), not {v:?}"),
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            target: params.text("target").map(str::to_owned),
            state,
            dedup_key: params.text("dedup_key").map(str::to_owned),
            after,
            limit: params.limit()?,
        })
    }

    /// The query string's pairs, as the CLI sends them; absent criteria are left out.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("limit", self.limit.to_string())];
        if let Some(target) = &self.target {
            pairs.push(("target", target.clone()));
        }
        if let Some(state) = self.state {
            pairs.push(("state", state.as_str().to_owned()));
        }
        if let Some(key) = &self.dedup_key {
            pairs.push(("dedup_key", key.clone()));
        }
        if let Some(after) = &self.after {
            pairs.push(("after", after.to_string()));
        }
        pairs
    }

    /// The store's filter for this page.
    pub fn filter(&self) -> IncidentFilter {
        IncidentFilter {
            target: self.target.clone(),
            status: self.state,
            dedup_key: self.dedup_key.clone(),
            after: self
                .after
                .as_ref()
                .map(|c| (c.target.clone(), c.dedup_key.clone())),
            limit: self.limit,
        }
    }
}

/// A query string, checked against the parameters an endpoint knows: a typo is refused, not a
/// silently wider listing.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<&str>, known: &[&str]) -> Result<Self, Refused> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        for (index, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(refused(
                    "unknown_parameter",
                    format!(
                        "unknown query parameter {name:?}; this endpoint takes {}",
                        known.join(", ")
                    ),
                ));
            }
            if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(refused(
                    "invalid_parameter",
                    format!("query parameter {name:?} is given twice"),
                ));
            }
        }
        Ok(Self(pairs))
    }

    /// A parameter's value; an empty value counts as absent (`?target=` is "any target").
    fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn number<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, Refused> {
        self.text(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    refused(
                        "invalid_parameter",
                        format!("{name} must be {what}, not {v:?}"),
                    )
                })
            })
            .transpose()
    }

    fn limit(&self) -> Result<u32, Refused> {
        let what = format!("a whole number from 1 to {MAX_LIMIT}");
        match self.number::<u32>("limit", &what)? {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(refused(
                "invalid_parameter",
                format!("limit must be {what}, not {n}"),
            )),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, Refused> {
        match self.text(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(refused(
                "invalid_parameter",
                format!("{name} must be true or false, not {other:?}"),
            )),
        }
    }

    fn action(&self) -> Result<Option<Action>, Refused> {
        self.text("action")
            .map(|v| {
                Action::parse(v).map_err(|_| {
                    refused(
                        "invalid_parameter",
                        format!(
                            "action must be trigger, acknowledge, resolve or change, not {v:?}"
                        ),
                    )
                })
            })
            .transpose()
    }
}

/// The body of [`REPLAY`]: the filter itself, e.g. `{"ids": [42]}` or `{"all": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ReplayRequest {
    pub filter: DeadLetterFilter,
}

impl ReplayRequest {
    pub fn from_json(body: &[u8]) -> Result<Self, Refused> {
        checked_filter(json_object(body)?).map(|filter| Self { filter })
    }
}

/// The body of [`DROP`]: the filter's fields plus `"reason"`, kept with the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropRequest {
    #[serde(flatten)]
    pub filter: DeadLetterFilter,
    pub reason: String,
}

impl DropRequest {
    // Not `Deserialize`: serde's `flatten` would let unknown fields through the filter.
    pub fn from_json(body: &[u8]) -> Result<Self, Refused> {
        let mut body = json_object(body)?;
        let reason = match body.as_object_mut().and_then(|o| o.remove("reason")) {
            Some(Value::String(reason)) if !reason.trim().is_empty() => reason.trim().to_owned(),
            Some(Value::String(_)) | None => {
                return Err(refused(
                    "missing_reason",
                    "say why: dropping needs a non-empty \"reason\", kept with the record",
                ));
            }
            Some(_) => return Err(refused("invalid_filter", "\"reason\" must be a string")),
        };
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(refused(
                "invalid_filter",
                format!("\"reason\" is over {MAX_REASON_CHARS} characters"),
            ));
        }
        Ok(Self {
            filter: checked_filter(body)?,
            reason,
        })
    }
}

fn json_object(body: &[u8]) -> Result<Value, Refused> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| refused("invalid_json", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(refused(
            "invalid_filter",
            "the body must be a JSON object, e.g. {\"ids\": [42]}",
        ));
    }
    Ok(value)
}

/// Parses and checks a filter: unknown fields, an empty filter and an empty id list are refused.
fn checked_filter(body: Value) -> Result<DeadLetterFilter, Refused> {
    let filter: DeadLetterFilter = serde_json::from_value(body)
        .map_err(|e| refused("invalid_filter", format!("the filter is not valid: {e}")))?;
    if filter.ids.as_ref().is_some_and(Vec::is_empty) {
        return Err(refused("empty_filter", "ids must not be an empty list"));
    }
    if filter.ids.as_ref().is_some_and(|ids| ids.len() > MAX_IDS) {
        return Err(refused(
            "too_many_ids",
            format!("at most {MAX_IDS} ids per request; send several requests"),
        ));
    }
    if filter.is_empty() {
        return Err(refused(
            "empty_filter",
            "say which dead letters: ids, target, dedup_key, action, dead_since/dead_before, \
             or {\"all\": true} for every one",
        ));
    }
    if let (Some(since), Some(before)) = (filter.dead_since, filter.dead_before)
        && since >= before
    {
        return Err(refused(
            "invalid_filter",
            "dead_since must be before dead_before",
        ));
    }
    Ok(filter)
}

/// The answer of [`LANES`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanesResponse {
    pub lanes: Vec<Lane>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lane {
    pub target: String,
    /// Whether the target is in the configuration (an old target can still have events).
    pub configured: bool,
    pub pending: u64,
    pub dead: u64,
    pub oldest_pending_accepted_at: Option<Timestamp>,
    pub oldest_pending_age_seconds: Option<f64>,
    /// Which replica drives the lane, as of its last lease; `None` before any replica took it.
    /// An expired lease is shown as it is: its owner stalled or stopped and nobody took over.
    #[serde(default)]
    pub lease: Option<LaneLease>,
    /// What the lane is doing, as its owner last reported it; `None` when no replica holds
    /// an unexpired lease (or its owner has not reported yet).
    #[serde(default)]
    pub state: Option<LaneState>,
    /// The target's routing key's shared budget, now; `None` when the target has no key.
    #[serde(default)]
    pub budget: Option<LaneBudget>,
}

/// How much of a routing key's shared send budget is used: requests in the last window, by
/// every replica and every target sharing the key (requests still in flight included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneBudget {
    pub used: u64,
    /// The target's own limit on that budget (`rate_limit.requests`).
    pub limit: u32,
    pub window_seconds: f64,
}

/// A lane's lease ([`crate::store::Leases`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneLease {
    /// The owning replica's id (random per process).
    pub owner: String,
    /// Moves on at every change of owner.
    pub epoch: i64,
    pub expires_at: Timestamp,
}

/// The answer of [`LEASES`]: every lease, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasesResponse {
    pub leases: Vec<ListedLease>,
}

/// A lease as listed ([`crate::store::Leases`]): what it is for — `lane:<target>`, or a
/// singleton: `housekeeping`, `silence`, `fallback` — and which replica holds it, as of its last
/// acquisition or renewal. An expired lease is shown as it is: its owner stopped (a released
/// lease expired at the Unix epoch) or stalled, and nobody took over yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedLease {
    pub name: String,
    /// The owning replica's id (random per process on PostgreSQL, `sqlite` on SQLite).
    pub owner: String,
    /// Moves on at every change of owner (and at a release).
    pub epoch: i64,
    pub expires_at: Timestamp,
}

/// The answer of [`QUEUE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueResponse {
    pub events: Vec<PendingEvent>,
}

/// A pending event as listed: what it is and how delivery is going, not its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    pub id: i64,
    pub target: String,
    pub dedup_key: Option<String>,
    pub action: Action,
    pub severity: Option<pagerduty_events::Severity>,
    pub summary: Option<String>,
    pub accepted_at: Timestamp,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// The answer of [`DEAD_LETTERS`]; `next_after_id` is set when the page is full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLettersResponse {
    pub dead_letters: Vec<ListedDeadLetter>,
    pub next_after_id: Option<i64>,
}

/// A dead letter as listed: the event (without any routing key), why it died, what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedDeadLetter {
    pub id: i64,
    pub target: String,
    pub dedup_key: Option<String>,
    pub action: Action,
    pub summary: Option<String>,
    pub accepted_at: Timestamp,
    pub dead_at: Timestamp,
    pub reason: String,
    pub attempts: u32,
    pub superseded_by: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    pub event: Value,
}

/// The answer of [`INCIDENTS`]; `next` is set when the page is full: pass it as `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentsResponse {
    pub incidents: Vec<ListedIncident>,
    pub next: Option<IncidentCursor>,
}

/// An incident as the bridge last told PagerDuty of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedIncident {
    pub dedup_key: String,
    pub target: String,
    /// As of the last event queued, sent or not yet.
    pub state: Status,
    pub fingerprint: Option<String>,
    /// Where its last trigger came from; `None` for incidents from before sources were kept.
    pub source: Option<IncidentSource>,
    /// `None` for incidents from before first events were kept.
    pub first_event_at: Option<Timestamp>,
    /// When its last event was queued.
    pub last_event_at: Timestamp,
    /// When PagerDuty last accepted one of its events.
    pub last_sent_at: Option<Timestamp>,
}

/// The answer of [`REPLAY`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayResponse {
    /// How many went back to the queue: `replayed_ids.len()`.
    pub replayed: usize,
    pub replayed_ids: Vec<i64>,
    /// Left dead because a newer event of their incident superseded them.
    pub superseded: Vec<Superseded>,
}

impl ReplayResponse {
    pub fn new(replayed_ids: Vec<i64>, superseded: Vec<Superseded>) -> Self {
        Self {
            replayed: replayed_ids.len(),
            replayed_ids,
            superseded,
        }
    }
}

/// A dead letter a replay left dead, and the newer event of its incident that superseded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    pub id: i64,
    pub by: i64,
}

/// The answer of [`DROP`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropResponse {
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn replay(body: Value) -> Result<ReplayRequest, Refused> {
        ReplayRequest::from_json(body.to_string().as_bytes())
    }

    #[test]
    fn filters_are_checked() {
        let refused = |body: Value| replay(body).expect_err("refused").error;
        assert_eq!(refused(json!({})), "empty_filter");
        assert_eq!(refused(json!({"all": false})), "empty_filter");
        assert_eq!(refused(json!({"ids": []})), "empty_filter");
        assert_eq!(refused(json!({"target_name": "x"})), "invalid_filter");
        assert_eq!(refused(json!({"ids": "1"})), "invalid_filter");
        assert_eq!(refused(json!({"action": "explode"})), "invalid_filter");
        assert_eq!(refused(json!([1])), "invalid_filter");
        assert_eq!(
            ReplayRequest::from_json(b"{").expect_err("refused").error,
            "invalid_json"
        );
        assert_eq!(
            refused(
                json!({"dead_since": "2026-01-02T00:00:00Z", "dead_before": "2026-01-01T00:00:00Z"})
            ),
            "invalid_filter"
        );
        let ok = replay(json!({"target": "db", "action": "trigger"})).expect("valid");
        assert_eq!(ok.filter.target.as_deref(), Some("db"));
        assert_eq!(ok.filter.action, Some(Action::Trigger));
        assert!(replay(json!({"all": true})).expect("valid").filter.all);
    }

    #[test]
    fn a_drop_needs_a_reason_and_a_filter() {
        let drop = |body: Value| DropRequest::from_json(body.to_string().as_bytes());
        let code = |body: Value| drop(body).expect_err("refused").error;
        assert_eq!(code(json!({"ids": [1]})), "missing_reason");
        assert_eq!(code(json!({"ids": [1], "reason": "  "})), "missing_reason");
        assert_eq!(code(json!({"ids": [1], "reason": 7})), "invalid_filter");
        assert_eq!(code(json!({"reason": "x"})), "empty_filter");
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        assert_eq!(code(json!({"ids": [1], "reason": long})), "invalid_filter");
        let ok = drop(json!({"ids": [1, 2], "reason": " duplicate "})).expect("valid");
        assert_eq!(ok.reason, "duplicate");
        assert_eq!(ok.filter, DeadLetterFilter::ids([1, 2]));
    }

    #[test]
    fn requests_round_trip_as_the_cli_sends_them() {
        let replay_request = ReplayRequest {
            filter: DeadLetterFilter::ids([4, 2]),
        };
        let body = serde_json::to_vec(&replay_request).expect("serializes");
        assert_eq!(body, br#"{"ids":[4,2]}"#);
        assert_eq!(ReplayRequest::from_json(&body), Ok(replay_request));

        let drop_request = DropRequest {
            filter: DeadLetterFilter::ids([7]),
            reason: "known noise".to_owned(),
        };
        let body = serde_json::to_vec(&drop_request).expect("serializes");
        assert_eq!(body, br#"{"ids":[7],"reason":"known noise"}"#);
        assert_eq!(DropRequest::from_json(&body), Ok(drop_request));
    }

    /// Encodes pairs as the CLI does (`url` query pairs) and parses them as the server does.
    fn encoded(pairs: &[(&'static str, String)]) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    #[test]
    fn queries_round_trip_as_the_cli_sends_them() {
        let queue = QueueQuery {
            target: Some("a b&c".to_owned()),
            limit: 7,
        };
        assert_eq!(QueueQuery::parse(Some(&encoded(&queue.pairs()))), Ok(queue));
        let dead = DeadLetterQuery {
            target: Some("db".to_owned()),
            dedup_key: Some("k/1".to_owned()),
            action: Some(Action::Resolve),
            after_id: Some(41),
            limit: MAX_LIMIT,
            include_dropped: true,
        };
        assert_eq!(
            DeadLetterQuery::parse(Some(&encoded(&dead.pairs()))),
            Ok(dead)
        );
        let incidents = IncidentQuery {
            target: Some("db".to_owned()),
            state: Some(StatusFilter::Open),
            dedup_key: Some("k:1&2".to_owned()),
            after: Some(IncidentCursor {
                target: "db".to_owned(),
                dedup_key: "a:b c".to_owned(),
            }),
            limit: 2,
        };
        assert_eq!(
            IncidentQuery::parse(Some(&encoded(&incidents.pairs()))),
            Ok(incidents)
        );
        assert_eq!(IncidentQuery::parse(None), Ok(IncidentQuery::default()));
        let none = DeadLetterQuery::parse(None).expect("defaults");
        assert_eq!(none, DeadLetterQuery::default());
        assert_eq!(none.pairs(), vec![("limit", DEFAULT_LIMIT.to_string())]);
    }

    #[test]
    fn query_parameters_are_checked() {
        let parse = |q: &str| QueueQuery::parse(Some(q));
        assert_eq!(
            parse("tagret=x").err().map(|e| e.error),
            Some("unknown_parameter")
        );
        assert_eq!(
            parse("limit=1&limit=2").err().map(|e| e.error),
            Some("invalid_parameter")
        );
        let query = parse("target=a%20b&limit=").expect("valid");
        assert_eq!(query.target.as_deref(), Some("a b"));
        assert_eq!(query.limit, DEFAULT_LIMIT);
        for bad in ["limit=0", "limit=1001", "limit=-1", "limit=ten"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse_lanes_query(Some("x=1")).is_err());
        assert!(parse_lanes_query(None).is_ok());
        assert!(parse_leases_query(Some("name=silence")).is_err());
        assert!(parse_leases_query(None).is_ok());
        for bad in ["include_dropped=yes", "action=explode", "after_id=x"] {
            assert!(DeadLetterQuery::parse(Some(bad)).is_err(), "{bad}");
        }
        for bad in [
            "state=closed",
            "state=Triggered",
            "limit=0",
            "after=nocolon",
            "after=:key",
            "after_id=3",
            "dedupkey=x",
        ] {
            assert!(IncidentQuery::parse(Some(bad)).is_err(), "{bad}");
        }
        let query = IncidentQuery::parse(Some("state=resolved&after=db:k:2")).expect("valid");
        assert_eq!(query.state, Some(StatusFilter::Is(Status::Resolved)));
        assert_eq!(
            query.filter().after,
            Some(("db".to_owned(), "k:2".to_owned())),
            "split at the first colon: target names have none"
        );
    }

    #[test]
    fn answers_round_trip() {
        let listed = DeadLettersResponse {
            dead_letters: vec![ListedDeadLetter {
                id: 3,
                target: "db".to_owned(),
                dedup_key: Some("k".to_owned()),
                action: Action::Trigger,
                summary: Some("Disk full".to_owned()),
                accepted_at: "2026-11-29T21:00:00Z".parse().expect("timestamp"),
                dead_at: "2026-11-29T21:00:01.5Z".parse().expect("timestamp"),
                reason: "PagerDuty rejected the event (HTTP 400)".to_owned(),
                attempts: 1,
                superseded_by: None,
                dropped_at: None,
                drop_reason: None,
                event: json!({"event_action": "trigger"}),
            }],
            next_after_id: Some(3),
        };
        let text = serde_json::to_value(&listed).expect("serializes");
        assert!(
            text["dead_letters"][0].get("dropped_at").is_none(),
            "absent when not dropped: {text}"
        );
        assert_eq!(
            serde_json::from_value::<DeadLettersResponse>(text).expect("parses"),
            listed
        );
        let leases = LeasesResponse {
            leases: vec![ListedLease {
                name: "housekeeping".to_owned(),
                owner: "sqlite".to_owned(),
                epoch: 2,
                expires_at: "2026-11-29T21:00:10Z".parse().expect("timestamp"),
            }],
        };
        let text = serde_json::to_value(&leases).expect("serializes");
        assert_eq!(
            text,
            json!({"leases": [{"name": "housekeeping", "owner": "sqlite", "epoch": 2,
                               "expires_at": "2026-11-29T21:00:10Z"}]})
        );
        assert_eq!(
            serde_json::from_value::<LeasesResponse>(text).expect("parses"),
            leases
        );
        let lanes = LanesResponse {
            lanes: vec![Lane {
                target: "db".to_owned(),
                configured: true,
                pending: 1,
                dead: 0,
                oldest_pending_accepted_at: None,
                oldest_pending_age_seconds: None,
                lease: None,
                state: Some(LaneState::RateLimited),
                budget: Some(LaneBudget {
                    used: 3,
                    limit: 120,
                    window_seconds: 60.0,
                }),
            }],
        };
        let text = serde_json::to_value(&lanes).expect("serializes");
        assert_eq!(text["lanes"][0]["state"], "rate_limited");
        assert_eq!(
            text["lanes"][0]["budget"],
            json!({"used": 3, "limit": 120, "window_seconds": 60.0})
        );
        assert_eq!(
            serde_json::from_value::<LanesResponse>(text).expect("parses"),
            lanes
        );
        let incidents = IncidentsResponse {
            incidents: vec![ListedIncident {
                dedup_key: "k".to_owned(),
                target: "db".to_owned(),
                state: Status::Acknowledged,
                fingerprint: None,
                source: Some(IncidentSource::Alertmanager),
                first_event_at: None,
                last_event_at: "2026-11-29T21:00:00Z".parse().expect("timestamp"),
                last_sent_at: None,
            }],
            next: Some(IncidentCursor {
                target: "db".to_owned(),
                dedup_key: "k".to_owned(),
            }),
        };
        let text = serde_json::to_value(&incidents).expect("serializes");
        assert_eq!(
            text,
            json!({"incidents": [{"dedup_key": "k", "target": "db", "state": "acknowledged",
                                  "fingerprint": null, "source": "alertmanager",
                                  "first_event_at": null,
                                  "last_event_at": "2026-11-29T21:00:00Z",
                                  "last_sent_at": null}],
                   "next": "db:k"})
        );
        assert_eq!(
            serde_json::from_value::<IncidentsResponse>(text).expect("parses"),
            incidents
        );
        let replayed = ReplayResponse::new(vec![1, 2], vec![Superseded { id: 3, by: 9 }]);
        assert_eq!(
            serde_json::to_value(&replayed).expect("serializes"),
            json!({"replayed": 2, "replayed_ids": [1, 2], "superseded": [{"id": 3, "by": 9}]})
        );
    }
}
