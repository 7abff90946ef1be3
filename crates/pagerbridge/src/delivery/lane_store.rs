//! What a lane reads and writes in storage: its outbox, its send budget and the state it
//! reports on its lease, nothing else.
//!
//! [`LaneStore`] names those narrow traits of the store together, so the lane's type says what
//! it touches and its tests need only a fake of those; every [`Store`](crate::store::Store)
//! is one.

use crate::store::{LaneStates, Outbox, SendBudget};

/// The storage a lane uses: [`Outbox`], [`SendBudget`] and [`LaneStates`] (see them for what
/// each method promises).
pub trait LaneStore: Outbox + SendBudget + LaneStates {}

impl<S: Outbox + SendBudget + LaneStates + ?Sized> LaneStore for S {}
