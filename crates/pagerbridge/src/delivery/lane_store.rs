//! What a lane reads and writes in storage: its outbox and its send budget, nothing else.
//!
//! [`LaneStore`] names that pair of the store's narrow traits, so the lane's type says what it
//! touches and its tests need only a fake of those two; every [`Store`](crate::store::Store)
//! is one.

use crate::store::{Outbox, SendBudget};

/// The storage a lane uses: [`Outbox`] and [`SendBudget`] (see them for what each method
/// promises).
pub trait LaneStore: Outbox + SendBudget {}

impl<S: Outbox + SendBudget + ?Sized> LaneStore for S {}
