//! Leases: which replica drives a lane (or runs a singleton) right now.
//!
//! Several replicas share one database, but each lane must be driven by exactly one of them,
//! or two could send the same incident's events out of order. A lease names the work
//! (`lane:<target>`, later `housekeeping`, `silence`, `fallback`), its owner (a [`ReplicaId`],
//! random per process), an epoch and an expiry. The owner renews it well within its time to
//! live; once it has expired, any replica may take it, and taking it moves the epoch on.
//!
//! Expiry alone cannot stop a replica that was paused or cut off from the database and does
//! not know it lost the lease yet. So every send is *fenced*: the transaction that takes the
//! budget slot for it checks the [`Fence`] (owner and epoch, not expired) and refuses when the
//! lease is no longer ours, which bounds the damage to the one request already in flight.
//!
//! A lane's lease also carries the lane's [`LaneState`], as its owner last reported it
//! ([`LaneStates`]): only the owner knows it, and an admin request may reach any replica.
//! The report is fenced like a send, and a new owner (or a release) clears it.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::StoreError;

/// A replica's identity in leases: random per process, so a restarted replica is a new
/// owner and takes its old lanes over through a new epoch like anyone else would.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplicaId(String);

impl ReplicaId {
    /// A fresh random id (128 bits, hex).
    pub fn generate() -> Self {
        let bits: u128 = rand::random();
        Self(format!("{bits:032x}"))
    }

    /// An id as stored or configured; any non-empty text.
    pub fn new(id: impl Into<String>) -> Option<Self> {
        let id = id.into();
        (!id.is_empty()).then_some(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a lease is for. Lanes are `lane:<target>`; singletons have fixed names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseName(String);

impl LeaseName {
    /// The lease of a target's delivery lane.
    pub fn lane(target: &str) -> Self {
        Self(format!("lane:{target}"))
    }

    /// A singleton's lease (`housekeeping`, `silence`, `fallback`).
    pub fn singleton(name: &'static str) -> Self {
        Self(name.to_owned())
    }

    /// A name read back from storage.
    pub(crate) fn from_stored(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lease we hold: until `expires_at`, at this epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub epoch: i64,
    pub expires_at: Timestamp,
}

/// A lease as listed, whoever holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub name: LeaseName,
    pub owner: ReplicaId,
    pub epoch: i64,
    pub expires_at: Timestamp,
    /// A lane's state as its owner last reported it at this epoch; `None` for singletons,
    /// and until the owner reports. Only as current as the lease: once it has expired, the
    /// state is stale.
    pub lane_state: Option<LaneState>,
}

/// What a lane is doing, as the metric `pagerbridge_lane_state` and the admin API show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneState {
    /// Sending, or nothing to send.
    Healthy,
    /// PagerDuty answered 429: pausing as it asked.
    RateLimited,
    /// PagerDuty failed (5xx, timeout, network): pausing with backoff.
    BackingOff,
    /// No routing key, or an answer such as 401/403/404: retrying slowly.
    Misconfigured,
}

impl LaneState {
    pub const ALL: [LaneState; 4] = [
        LaneState::Healthy,
        LaneState::RateLimited,
        LaneState::BackingOff,
        LaneState::Misconfigured,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LaneState::Healthy => "healthy",
            LaneState::RateLimited => "rate_limited",
            LaneState::BackingOff => "backing_off",
            LaneState::Misconfigured => "misconfigured",
        }
    }

    /// A state as stored.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown lane state {text:?}")))
    }
}

/// The proof a send is ours to make: the lease's name, our id, and the epoch we acquired.
/// Checked in the transaction that takes the budget slot ([`super::SendBudget::take_budget`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub name: LeaseName,
    pub owner: ReplicaId,
    pub epoch: i64,
}

/// The lease table, shared by every replica.
#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Renews the lease if `owner` holds it, takes it if it is free or expired at `now` (with a
    /// new epoch), else `None`. One statement: of replicas racing for one lease, one wins.
    async fn acquire_or_renew(
        &self,
        name: &LeaseName,
        owner: &ReplicaId,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>, StoreError>;

    /// Gives the lease up at once (on shutdown), if `owner` still holds it at `epoch`, so
    /// another replica need not wait for it to expire.
    async fn release(
        &self,
        name: &LeaseName,
        owner: &ReplicaId,
        epoch: i64,
    ) -> Result<(), StoreError>;

    /// Every lease, by name.
    async fn leases(&self) -> Result<Vec<LeaseInfo>, StoreError>;
}

/// Where a lane reports its state, on its lease ([`LeaseInfo::lane_state`] reads it back).
/// Apart from [`Leases`] so that a lane, which reports but never takes leases, depends on
/// this alone.
#[async_trait]
pub trait LaneStates: Send + Sync + 'static {
    /// Records `state` on the lease `fence` names, if the fence holds at `now` (as for a
    /// send); returns whether it did. Called on a change of state only, not per send.
    async fn report_lane_state(
        &self,
        fence: &Fence,
        state: LaneState,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
}

/// Acquire or renew, the same SQL on both stores: `$1` name, `$2` owner, `$3` new expiry,
/// `$4` now. The update applies only when we own the row or it has expired; otherwise no row
/// comes back. The epoch moves only when the owner changes, so a renewal keeps our fence
/// valid. A new owner starts without a lane state: the old owner's is not its own.
/// PostgreSQL locks the conflicting row and re-checks the condition on its newest
/// version, so of two replicas racing for an expired lease the second sees the first's expiry
/// and gets nothing.
pub(super) const ACQUIRE_OR_RENEW: &str =
    "INSERT INTO leases (name, owner, epoch, expires_at) VALUES ($1, $2, 1, $3)
     ON CONFLICT (name) DO UPDATE SET
        epoch = CASE WHEN leases.owner = excluded.owner THEN leases.epoch
                     ELSE leases.epoch + 1 END,
        lane_state = CASE WHEN leases.owner = excluded.owner THEN leases.lane_state
                          ELSE NULL END,
        owner = excluded.owner,
        expires_at = excluded.expires_at
     WHERE leases.owner = excluded.owner OR leases.expires_at <= $4
     RETURNING epoch, expires_at";

/// Release: expire the lease now and move the epoch on, so that not even a later renewal by
/// the same owner revives a fence of before the release; the lane state goes with it.
pub(super) const RELEASE: &str =
    "UPDATE leases SET expires_at = 0, epoch = epoch + 1, lane_state = NULL
     WHERE name = $1 AND owner = $2 AND epoch = $3";

pub(super) const LIST: &str =
    "SELECT name, owner, epoch, expires_at, lane_state FROM leases ORDER BY name";

/// Report a lane's state, fenced: `$1` name, `$2` owner, `$3` epoch, `$4` now, `$5` state.
pub(super) const REPORT_LANE_STATE: &str = "UPDATE leases SET lane_state = $5
     WHERE name = $1 AND owner = $2 AND epoch = $3 AND expires_at > $4";

/// Whether a fence holds: `$1` name, `$2` owner, `$3` epoch, `$4` now. A lease that expires
/// exactly now is gone (the acquire above takes it at that instant).
macro_rules! fence_holds_sql {
    () => {
        "SELECT 1 FROM leases WHERE name = $1 AND owner = $2 AND epoch = $3 AND expires_at > $4"
    };
}
pub(super) const FENCE_HOLDS: &str = fence_holds_sql!();

/// [`FENCE_HOLDS`], keeping the lease row locked until commit (PostgreSQL): a takeover, an
/// update of that row, waits for the transaction that checked the fence.
pub(super) const FENCE_HOLDS_FOR_SHARE: &str = concat!(fence_holds_sql!(), " FOR SHARE");

/// The expiry a lease taken at `now` for `ttl` gets, in stored milliseconds.
pub(super) fn expiry_millis(now: Timestamp, ttl: Duration) -> i64 {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    super::to_millis(now).saturating_add(ttl_ms)
}

/// A row of [`LIST`].
pub(super) fn info_from_parts(
    name: String,
    owner: String,
    epoch: i64,
    expires_at: i64,
    lane_state: Option<String>,
) -> Result<LeaseInfo, StoreError> {
    Ok(LeaseInfo {
        name: LeaseName::from_stored(name),
        owner: ReplicaId::new(owner)
            .ok_or_else(|| StoreError::Corrupt("a lease has an empty owner".to_owned()))?,
        epoch,
        expires_at: super::from_millis(expires_at)?,
        lane_state: lane_state.as_deref().map(LaneState::parse).transpose()?,
    })
}

/// Implements [`Leases`] and [`LaneStates`] for a store with a `pool` field: the statements above are the same on
/// both stores, so the code that runs them is written once.
macro_rules! impl_leases {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Leases for $store {
            async fn acquire_or_renew(
                &self,
                name: &$crate::store::LeaseName,
                owner: &$crate::store::ReplicaId,
                ttl: std::time::Duration,
                now: jiff::Timestamp,
            ) -> Result<Option<$crate::store::Lease>, $crate::store::StoreError> {
                let row: Option<(i64, i64)> =
                    sqlx::query_as($crate::store::leases::ACQUIRE_OR_RENEW)
                        .bind(name.as_str())
                        .bind(owner.as_str())
                        .bind($crate::store::leases::expiry_millis(now, ttl))
                        .bind($crate::store::to_millis(now))
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(|(epoch, expires_at)| {
                    Ok($crate::store::Lease {
                        epoch,
                        expires_at: $crate::store::from_millis(expires_at)?,
                    })
                })
                .transpose()
            }

            async fn release(
                &self,
                name: &$crate::store::LeaseName,
                owner: &$crate::store::ReplicaId,
                epoch: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::leases::RELEASE)
                    .bind(name.as_str())
                    .bind(owner.as_str())
                    .bind(epoch)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn leases(
                &self,
            ) -> Result<Vec<$crate::store::LeaseInfo>, $crate::store::StoreError> {
                let rows: Vec<(String, String, i64, i64, Option<String>)> =
                    sqlx::query_as($crate::store::leases::LIST)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter()
                    .map(|(name, owner, epoch, expires_at, state)| {
                        $crate::store::leases::info_from_parts(
                            name, owner, epoch, expires_at, state,
                        )
                    })
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::LaneStates for $store {
            async fn report_lane_state(
                &self,
                fence: &$crate::store::Fence,
                state: $crate::store::LaneState,
                now: jiff::Timestamp,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::leases::REPORT_LANE_STATE)
                    .bind(fence.name.as_str())
                    .bind(fence.owner.as_str())
                    .bind(fence.epoch)
                    .bind($crate::store::to_millis(now))
                    .bind(state.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}
pub(super) use impl_leases;

/// Whether an optional fence holds at `now`, checked with `$sql` ([`FENCE_HOLDS`] or
/// [`FENCE_HOLDS_FOR_SHARE`]) in the budget's transaction; no fence always holds. Evaluates to
/// a `bool`, returning the store error with `?`.
macro_rules! fence_holds {
    ($sql:expr, $fence:expr, $now:expr, $tx:expr) => {
        match $fence {
            None => true,
            Some(fence) => sqlx::query($sql)
                .bind(fence.name.as_str())
                .bind(fence.owner.as_str())
                .bind(fence.epoch)
                .bind($crate::store::to_millis($now))
                .fetch_optional($tx)
                .await?
                .is_some(),
        }
    };
}
pub(super) use fence_holds;
