//! The [`Lease`] one replica keeps: it takes the lease when the rules of [`super::core`] allow,
//! renews it every third of its duration, answers "may I write weights now, and with which
//! token" from its own clock, and fences each weight batch in the store. Every change of hand
//! is a [`LeaseEvent`] for the decision log, and `vantage_lease_held` /
//! `vantage_lease_transitions_total` follow it. The aggregator's keeper task
//! ([`Aggregator::run_lease`]) drives it on `tokio::time`, so paused-clock tests run it too.
//!
//! A store that cannot be reached does not end a tenure at once: the holder keeps its lease
//! while it is locally valid (never past `expires_ms - max_clock_skew`), then counts it lost.

use super::core::{LeaseRecord, LeaseTiming};
use super::store::LeaseStore;
use super::{LeaseError, LeaseSettings, LeaseStatus};
use crate::backend::Backend;
use crate::service::{lock, names, unix_ms, Aggregator};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The clock a lease reads (Unix ms). The system clock in service; tests and the demo may
/// follow `tokio::time` instead, and shift it to play a replica whose clock is off.
#[derive(Clone)]
pub struct LeaseClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl LeaseClock {
    /// The system's wall clock: what replicas in different Regions agree on within the skew.
    pub fn system() -> Self {
        LeaseClock(Arc::new(|| unix_ms(SystemTime::now())))
    }

    /// `start_ms` now, then advancing with `tokio::time` (paused in tests).
    pub fn tokio_from(start_ms: u64) -> Self {
        let origin = tokio::time::Instant::now();
        LeaseClock(Arc::new(move || {
            start_ms + origin.elapsed().as_millis() as u64
        }))
    }

    /// This clock, `offset_ms` ahead (negative: behind).
    pub fn skewed(self, offset_ms: i64) -> Self {
        LeaseClock(Arc::new(move || {
            self.now_ms().saturating_add_signed(offset_ms)
        }))
    }

    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for LeaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LeaseClock({})", self.now_ms())
    }
}

/// Why a tenure ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LostReason {
    /// A renewal was refused: another replica took the lease (after our expiry).
    Taken,
    /// A fence before a weight batch was refused: the store no longer names our tenure.
    Fenced,
    /// The store could not be reached until the lease stopped being locally valid.
    Expired,
    /// Given up on clean shutdown.
    Released,
}

/// A change of hand, for the decision log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    Acquired {
        holder: String,
        token: u64,
    },
    Lost {
        holder: String,
        token: u64,
        reason: LostReason,
    },
}

impl LeaseEvent {
    /// The decision-log line: `{"event":"lease_acquired","holder":..,"token":..}` or
    /// `{"event":"lease_lost","holder":..,"token":..,"reason":..}`, with `at_ms`.
    pub fn to_json(&self, at_ms: u64) -> serde_json::Value {
        match self {
            LeaseEvent::Acquired { holder, token } => serde_json::json!({
                "event": "lease_acquired", "at_ms": at_ms, "holder": holder, "token": token,
            }),
            LeaseEvent::Lost {
                holder,
                token,
                reason,
            } => serde_json::json!({
                "event": "lease_lost", "at_ms": at_ms, "holder": holder, "token": token,
                "reason": reason,
            }),
        }
    }
}

/// What a fence before a weight batch found.
#[derive(Debug)]
pub enum Fence {
    /// The store still names our tenure: write, carrying this token.
    Passed(u64),
    /// The lease is not (or no longer locally) ours: another replica writes weights.
    NotHeld,
    /// The store refused: our tenure is over. The batch must not be written.
    Lost(LeaseEvent),
    /// The store could not answer: the batch waits (the keeper decides about the tenure).
    Failed(LeaseError),
}

/// What the keeper knows.
#[derive(Debug, Clone, Default)]
struct State {
    /// Our tenure as last written; `None` when we do not hold the lease.
    held: Option<LeaseRecord>,
    /// The record as last read or written (whoever holds it), for the status.
    seen: Option<LeaseRecord>,
}

/// One replica's hold on the weights lease. Cheap to clone (clones share the state).
#[derive(Clone)]
pub struct Lease {
    store: Arc<dyn LeaseStore>,
    settings: LeaseSettings,
    timing: LeaseTiming,
    clock: LeaseClock,
    state: Arc<Mutex<State>>,
    status: watch::Sender<LeaseStatus>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("settings", &self.settings)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// A lease on `store` for `settings.holder`, on the system clock. Nothing is contacted
    /// until the first [`Self::step`].
    pub fn new(store: Arc<dyn LeaseStore>, settings: LeaseSettings) -> Lease {
        let status = LeaseStatus {
            held: false,
            holder: None,
            token: None,
            expires_ms: None,
        };
        Lease {
            store,
            timing: LeaseTiming::new(settings.duration, settings.max_clock_skew),
            settings,
            clock: LeaseClock::system(),
            state: Arc::new(Mutex::new(State::default())),
            status: watch::Sender::new(status),
        }
    }

    /// The same lease reading `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: LeaseClock) -> Lease {
        self.clock = clock;
        self
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The lease as this replica sees it now; `held` only while locally valid.
    pub fn status(&self) -> LeaseStatus {
        let state = lock(&self.state);
        let now = self.now_ms();
        match &state.held {
            Some(h) if self.timing.locally_valid(h, &self.settings.holder, now) => LeaseStatus {
                held: true,
                holder: Some(h.holder.clone()),
                token: Some(h.token),
                expires_ms: Some(h.expires_ms),
            },
            _ => LeaseStatus {
                held: false,
                holder: state.seen.as_ref().map(|r| r.holder.clone()),
                token: state.seen.as_ref().map(|r| r.token),
                expires_ms: state.seen.as_ref().map(|r| r.expires_ms),
            },
        }
    }

    /// The status after every keeper round and fence (it changes when the lease changes hand
    /// or is renewed).
    pub fn subscribe(&self) -> watch::Receiver<LeaseStatus> {
        self.status.subscribe()
    }

    /// Our fencing token while the lease is ours and locally valid.
    pub fn valid_token(&self) -> Option<u64> {
        let state = lock(&self.state);
        state
            .held
            .as_ref()
            .filter(|h| {
                self.timing
                    .locally_valid(h, &self.settings.holder, self.now_ms())
            })
            .map(|h| h.token)
    }

    /// How long the keeper may sleep: a third of the duration, less when a tenure whose
    /// renewals fail stops being locally valid sooner (so its loss is noticed on time).
    pub fn next_wake(&self) -> Duration {
        let every = self.settings.duration / 3;
        let state = lock(&self.state);
        let Some(h) = &state.held else {
            return every;
        };
        let valid_until = h.expires_ms.saturating_sub(self.timing.max_clock_skew_ms);
        let left = Duration::from_millis(valid_until.saturating_sub(self.now_ms()) + 1);
        every.min(left)
    }

    /// Checks in the store, right before a weight batch, that the lease is still ours.
    pub async fn fence(&self) -> Fence {
        let Some(token) = self.valid_token() else {
            return Fence::NotHeld;
        };
        let outcome = match self.store.fence(&self.settings.holder, token).await {
            Ok(true) if self.valid_token() == Some(token) => Fence::Passed(token),
            // The check took so long that the tenure ended locally meanwhile.
            Ok(true) => Fence::NotHeld,
            Ok(false) => match self.end_tenure(token, LostReason::Fenced) {
                Some(event) => Fence::Lost(event),
                None => Fence::NotHeld,
            },
            Err(e) => Fence::Failed(e),
        };
        self.publish();
        outcome
    }

    /// One keeper round: renew our tenure, or take the lease if it is free. Returns the change
    /// of hand, if any. A store error is logged and retried next round.
    pub async fn step(&self) -> Option<LeaseEvent> {
        let held = lock(&self.state).held.clone();
        let event = match held {
            Some(held) => self.renew(held).await,
            None => self.try_take().await,
        };
        self.publish();
        event
    }

    async fn renew(&self, held: LeaseRecord) -> Option<LeaseEvent> {
        let next = self.timing.renewal(&held, self.now_ms());
        match self.store.renew(&next).await {
            Ok(true) => {
                let mut state = lock(&self.state);
                // A fence may have ended the tenure while the renewal was on its way.
                if state.held.as_ref().is_some_and(|h| h.token == next.token) {
                    state.held = Some(next.clone());
                    state.seen = Some(next);
                }
                None
            }
            Ok(false) => {
                let event = self.end_tenure(held.token, LostReason::Taken);
                if let Ok(record) = self.store.read().await {
                    lock(&self.state).seen = record;
                }
                event
            }
            Err(e)
                if self
                    .timing
                    .locally_valid(&held, &self.settings.holder, self.now_ms()) =>
            {
                tracing::warn!(error = %e, token = held.token, "cannot renew the weights lease; holding it while it is locally valid");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, token = held.token, "cannot renew the weights lease and it is no longer locally valid");
                self.end_tenure(held.token, LostReason::Expired)
            }
        }
    }

    async fn try_take(&self) -> Option<LeaseEvent> {
        let record = match self.store.read().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the weights lease; retrying");
                return None;
            }
        };
        lock(&self.state).seen = record.clone();
        let now = self.now_ms();
        if !self.timing.may_take(record.as_ref(), now) {
            return None;
        }
        let next = self
            .timing
            .takeover(record.as_ref(), &self.settings.holder, now);
        match self
            .store
            .acquire(&next, self.timing.stale_before(now))
            .await
        {
            Ok(true) => {
                let mut state = lock(&self.state);
                state.held = Some(next.clone());
                state.seen = Some(next.clone());
                metrics::counter!(names::LEASE_TRANSITIONS_TOTAL, "event" => "acquired")
                    .increment(1);
                Some(LeaseEvent::Acquired {
                    holder: next.holder,
                    token: next.token,
                })
            }
            // Another replica was quicker; the next round reads who.
            Ok(false) => None,
            Err(e) => {
                // The write may have landed: then the record names us and expires, and the
                // next takeover after it carries a larger token, so nothing is ever shared.
                tracing::warn!(error = %e, "cannot take the weights lease; retrying");
                None
            }
        }
    }

    /// Ends tenure `token` if it is still the current one.
    fn end_tenure(&self, token: u64, reason: LostReason) -> Option<LeaseEvent> {
        let mut state = lock(&self.state);
        let held = state.held.take_if(|h| h.token == token)?;
        metrics::counter!(names::LEASE_TRANSITIONS_TOTAL, "event" => "lost").increment(1);
        Some(LeaseEvent::Lost {
            holder: held.holder,
            token: held.token,
            reason,
        })
    }

    /// Gives the lease up (clean shutdown), so another replica need not wait for the expiry.
    pub async fn release(&self) -> Option<LeaseEvent> {
        let token = lock(&self.state).held.as_ref().map(|h| h.token)?;
        if let Err(e) = self.store.release(&self.settings.holder, token).await {
            tracing::warn!(error = %e, "cannot release the weights lease; it expires on its own");
        }
        let event = self.end_tenure(token, LostReason::Released);
        self.publish();
        event
    }

    fn publish(&self) {
        let status = self.status();
        metrics::gauge!(names::LEASE_HELD).set(if status.held { 1.0 } else { 0.0 });
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }
}

impl<B: Backend> Aggregator<B> {
    /// Acts on a change of hand: logs it, and on a takeover drops the cached view of Route 53,
    /// which nobody refreshed while another replica wrote the weights.
    pub(crate) fn lease_changed(&self, event: &LeaseEvent) {
        match event {
            LeaseEvent::Acquired { token, .. } => {
                self.planes.forget_observed();
                tracing::info!(token, "weights lease acquired: this replica writes weights")
            }
            LeaseEvent::Lost { token, reason, .. } => {
                tracing::warn!(
                    token,
                    ?reason,
                    "weights lease lost: this replica stops writing weights"
                )
            }
        }
        self.log_event(event.to_json(unix_ms(SystemTime::now())));
    }

    /// One keeper round inline (the demo drives its replicas this way); `None` without a
    /// lease.
    pub async fn lease_step(&self) -> Option<LeaseStatus> {
        let lease = self.lease()?;
        if let Some(event) = lease.step().await {
            self.lease_changed(&event);
        }
        Some(lease.status())
    }

    /// The keeper task: a round every third of the lease's duration (sooner when a failing
    /// tenure's local validity ends), until `stop`; then the lease is released.
    pub(crate) async fn run_lease(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(lease) = self.lease().cloned() else {
            return;
        };
        loop {
            if let Some(event) = lease.step().await {
                self.lease_changed(&event);
            }
            tokio::select! {
                () = tokio::time::sleep(lease.next_wake()) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        if let Some(event) = lease.release().await {
            self.lease_changed(&event);
        }
    }
}
