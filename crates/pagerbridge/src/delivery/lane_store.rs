//! What a lane reads and writes in storage: its outbox and its send budget, nothing else.
//!
//! A narrow trait so the lane can be tested against a small fake; every [`Store`] is one.
//! It repeats six of [`Store`]'s signatures only until the `Store` split lands: then it becomes
//! `Outbox + SendBudget` and this file goes.

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::store::{BudgetDecision, QueuedEvent, Store, StoreError};

/// The storage a lane uses (see [`Store`] for what each method promises).
#[async_trait]
pub trait LaneStore: Send + Sync + 'static {
    async fn next_eligible(&self, target: &str) -> Result<Option<QueuedEvent>, StoreError>;
    async fn mark_delivered(&self, id: i64, now: Timestamp) -> Result<(), StoreError>;
    async fn record_failure(&self, id: i64, error: &str, now: Timestamp) -> Result<(), StoreError>;
    async fn dead_letter(&self, id: i64, reason: &str, now: Timestamp) -> Result<(), StoreError>;
    async fn take_budget(
        &self,
        target: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<BudgetDecision, StoreError>;
    async fn settle_budget(&self, slot: i64, at: Timestamp) -> Result<(), StoreError>;
}

#[async_trait]
impl<S: Store + ?Sized> LaneStore for S {
    async fn next_eligible(&self, target: &str) -> Result<Option<QueuedEvent>, StoreError> {
        Store::next_eligible(self, target).await
    }
    async fn mark_delivered(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        Store::mark_delivered(self, id, now).await
    }
    async fn record_failure(&self, id: i64, error: &str, now: Timestamp) -> Result<(), StoreError> {
        Store::record_failure(self, id, error, now).await
    }
    async fn dead_letter(&self, id: i64, reason: &str, now: Timestamp) -> Result<(), StoreError> {
        Store::dead_letter(self, id, reason, now).await
    }
    async fn take_budget(
        &self,
        target: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<BudgetDecision, StoreError> {
        Store::take_budget(self, target, limit, window, now).await
    }
    async fn settle_budget(&self, slot: i64, at: Timestamp) -> Result<(), StoreError> {
        Store::settle_budget(self, slot, at).await
    }
}
