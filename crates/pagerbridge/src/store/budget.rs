//! The per-target send budget, shared by every replica: a sliding window of recent requests,
//! so that together they never exceed PagerDuty's rate limit.

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::StoreError;

/// The answer of the shared send budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetDecision {
    /// One request may be made now; it holds this slot. Settle the slot with the time the
    /// answer came back ([`SendBudget::settle_budget`]).
    Granted { slot: i64 },
    /// The window is full until then.
    WaitUntil(Timestamp),
}

/// The shared sliding-window budget of requests per target.
#[async_trait]
pub trait SendBudget: Send + Sync + 'static {
    /// Takes one request from the target's sliding-window budget if there is room.
    async fn take_budget(
        &self,
        target: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<BudgetDecision, StoreError>;

    /// Moves a slot's time to when the request ended. PagerDuty counts a request when it
    /// arrives, somewhere between our send and its answer; counting the slot from the answer
    /// means our window can never be shorter than PagerDuty's, whatever the latency.
    async fn settle_budget(&self, slot: i64, at: Timestamp) -> Result<(), StoreError>;
}
