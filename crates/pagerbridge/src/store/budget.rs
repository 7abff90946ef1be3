//! The send budget of each routing key, shared by every replica and every target that uses the
//! key: a sliding window of recent requests, so that together they never exceed PagerDuty's
//! rate limit (which PagerDuty keeps per routing key). Budgets are named by [`BudgetId`],
//! never by the key.

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::{BudgetId, BudgetSecret, Fence, StoreError, from_millis, to_millis};

/// The answer of the shared send budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetDecision {
    /// One request may be made now; it holds this slot. Settle the slot with the time the
    /// answer came back ([`SendBudget::settle_budget`]).
    Granted { slot: i64 },
    /// The window is full until then.
    WaitUntil(Timestamp),
    /// The fence no longer holds: the lease expired or another replica took it over. Nothing
    /// was taken; the caller must not send, and gives the lease's work up.
    Fenced,
}

/// The shared sliding-window budget of requests per routing key.
#[async_trait]
pub trait SendBudget: Send + Sync + 'static {
    /// The secret budget ids are derived with: created on first use, race-free when several
    /// replicas start at once, the same ever after.
    async fn budget_secret(&self) -> Result<BudgetSecret, StoreError>;

    /// Takes one request from the budget if it holds fewer than `limit` requests in the last
    /// `window`. Each caller counts with its own limit and window against the one shared
    /// budget, so where two targets sharing a key configure different limits, neither exceeds
    /// its own (both should configure PagerDuty's).
    ///
    /// With a `fence`, the slot is taken only if that lease is still held at its epoch and
    /// unexpired at `now`, in the same transaction; `None` is for callers that are the only
    /// sender (tests, one-off commands).
    async fn take_budget(
        &self,
        fence: Option<&Fence>,
        budget: &BudgetId,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<BudgetDecision, StoreError>;

    /// Records when the request's answer came back: the slot counts from then on. PagerDuty
    /// counts a request when it arrives, somewhere between our send and its answer; counting
    /// from the answer means our window can never be shorter than PagerDuty's, whatever the
    /// latency. Until it is settled a slot is *in flight* and counts as if sent a whole
    /// window after it was taken ([`in_flight_until`]): however long the request waited for a
    /// connection, the database or PagerDuty, no other lane can take its place in the window
    /// meanwhile. A replica that dies before settling leaves its slot counted for two windows.
    async fn settle_budget(&self, slot: i64, at: Timestamp) -> Result<(), StoreError>;

    /// Gives back a slot granted for a request that was not made after all (a lane that asked
    /// for its slot beside reading its next event, and found none, or one it could not send,
    /// or could not read): it no longer counts. An unknown slot is no error.
    async fn release_budget(&self, slot: i64) -> Result<(), StoreError>;

    /// How many requests `budget` holds in the `window` up to `now`, as [`Self::take_budget`]
    /// counts them against a limit: slots still in flight included. For operators; nothing
    /// is taken or cleaned up.
    async fn budget_used(
        &self,
        budget: &BudgetId,
        window: Duration,
        now: Timestamp,
    ) -> Result<u64, StoreError>;
}

/// [`SendBudget::budget_used`], the same SQL on both stores: `$1` budget, `$2` the window's
/// start (ms). A slot in flight is stored with a time in the future, so it is counted too.
pub(super) const USED: &str =
    "SELECT COUNT(*) FROM budget_sends WHERE budget = $1 AND sent_at >= $2";

/// [`SendBudget::release_budget`], the same SQL on both stores: `$1` the slot.
pub(super) const RELEASE: &str = "DELETE FROM budget_sends WHERE id = $1";

/// [`SendBudget::budget_used`] on a store with a `pool` field ([`USED`] is the same on both
/// stores): evaluates to the count, returning the store error with `?`.
macro_rules! budget_used {
    ($pool:expr, $budget:expr, $window:expr, $now:expr) => {{
        let used: i64 = sqlx::query_scalar($crate::store::budget::USED)
            .bind($budget.as_str())
            .bind($crate::store::budget::window_start($now, $window))
            .fetch_one($pool)
            .await?;
        u64::try_from(used).unwrap_or_default()
    }};
}
pub(super) use budget_used;

/// The start of the window up to `now`, in stored ms: a slot exactly one window old still
/// counts, as in [`SendBudget::take_budget`].
pub(super) fn window_start(now: Timestamp, window: Duration) -> i64 {
    to_millis(now).saturating_sub(window_millis(window))
}

/// The time an unsettled slot is stored with (ms since the epoch): a window after it was
/// taken, so it is counted until it is settled (or for two windows, if never). Counting from
/// the moment it was taken instead would let it leave the window while its request was still
/// on the way: under load, the caller's `now` can be long gone when the slot is written.
pub(super) fn in_flight_until(now: Timestamp, window: Duration) -> i64 {
    to_millis(now).saturating_add(window_millis(window))
}

/// The window in ms, as the stores compare it.
pub(super) fn window_millis(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

/// When a full window may have room: the oldest settled slot (sent at `oldest_settled`, ms)
/// leaves it a window after its send. A slot still in flight (`in_flight`) may leave sooner,
/// given back by a lane that took it beside a read and found nothing to send
/// ([`SendBudget::release_budget`]), so while there is one the caller looks again shortly.
pub(super) fn when_full(
    oldest_settled: Option<i64>,
    in_flight: bool,
    now: Timestamp,
    window: Duration,
) -> Result<Timestamp, StoreError> {
    let soon = now.checked_add(IN_FLIGHT_RECHECK).unwrap_or(now);
    match oldest_settled {
        Some(oldest) => {
            let frees = from_millis(
                oldest
                    .saturating_add(window_millis(window))
                    .saturating_add(1),
            )?;
            Ok(if in_flight { frees.min(soon) } else { frees })
        }
        None => Ok(soon),
    }
}

/// How soon to look again at a full window that holds a slot still in flight.
const IN_FLIGHT_RECHECK: jiff::SignedDuration = jiff::SignedDuration::from_millis(50);

/// Stores `$1` as the budget secret unless there is one, and returns the one stored; the same
/// SQL on both stores. One statement, so replicas starting together cannot race: whichever
/// inserts first wins, the others' fresh secrets are discarded (the no-op update only makes
/// `RETURNING` give the existing row, which `DO NOTHING` would not).
pub(super) const TAKE_SECRET: &str = "INSERT INTO budget_secret (id, secret) VALUES (1, $1)
     ON CONFLICT (id) DO UPDATE SET secret = budget_secret.secret
     RETURNING secret";

/// Reads the stored secret; anything but 32 bytes is corruption (the table's check forbids it).
pub(super) fn stored_secret(bytes: &[u8]) -> Result<BudgetSecret, StoreError> {
    BudgetSecret::from_stored(bytes)
        .ok_or_else(|| StoreError::Corrupt("the budget secret is not 32 bytes".to_owned()))
}
