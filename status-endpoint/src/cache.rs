//! The dependency-check cache: a round's result is reused for a TTL, and concurrent callers
//! share one round in flight (single flight), so any number of `/status/deep` requests cause at
//! most one round of dependency checks per TTL per instance. The TTL counts from the end of a
//! round, so even a round that took the whole deadline is followed by a full TTL of rest.
//!
//! [`CacheState`] is the pure state machine (time is an argument); [`SingleFlight`] drives it
//! with a `watch` channel and runs each round in its own task, so a caller that goes away (a
//! closed connection) never cancels a round other callers are waiting for.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a request should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<T> {
    /// A fresh result is cached: use it.
    Fresh(T),
    /// A round is in flight: wait for it.
    Join,
    /// Nothing fresh and nothing in flight: this caller starts a round (now marked in flight).
    Start,
}

/// TTL cache + single-flight bookkeeping, with no clock and no I/O.
#[derive(Debug)]
pub struct CacheState<T> {
    ttl: Duration,
    latest: Option<(T, Instant)>,
    in_flight: bool,
    rounds_started: u64,
}

impl<T: Clone> CacheState<T> {
    pub fn new(ttl: Duration) -> Self {
        CacheState {
            ttl,
            latest: None,
            in_flight: false,
            rounds_started: 0,
        }
    }

    pub fn request(&mut self, now: Instant) -> Decision<T> {
        if let Some((value, at)) = &self.latest {
            if now.saturating_duration_since(*at) < self.ttl {
                return Decision::Fresh(value.clone());
            }
        }
        if self.in_flight {
            return Decision::Join;
        }
        self.in_flight = true;
        self.rounds_started += 1;
        Decision::Start
    }

    /// The round finished at `now` with `value`.
    pub fn complete(&mut self, value: T, now: Instant) {
        self.latest = Some((value, now));
        self.in_flight = false;
    }

    /// The round ended without a value (its task was cancelled); the next request starts anew.
    pub fn abandon(&mut self) {
        self.in_flight = false;
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    pub fn rounds_started(&self) -> u64 {
        self.rounds_started
    }
}

/// A round ended without a result (its task panicked or the runtime is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the dependency check round was abandoned")]
pub struct Abandoned;

type Refresh<T> = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = T> + Send>> + Send + Sync>;

/// [`CacheState`] behind a lock, with waiters notified through a `watch` channel.
pub struct SingleFlight<T> {
    state: Mutex<CacheState<T>>,
    /// Every completed (or abandoned, `None`) round is published here.
    done: watch::Sender<Option<T>>,
    refresh: Refresh<T>,
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    pub fn new<F, Fut>(ttl: Duration, refresh: F) -> Arc<Self>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        Arc::new(SingleFlight {
            state: Mutex::new(CacheState::new(ttl)),
            done: watch::channel(None).0,
            refresh: Arc::new(move || Box::pin(refresh())),
        })
    }

    /// The cached result if fresh; otherwise the result of the round in flight, or of a new one.
    pub async fn get(self: &Arc<Self>) -> Result<T, Abandoned> {
        let mut rx = {
            let mut state = self.lock();
            match state.request(Instant::now()) {
                Decision::Fresh(value) => return Ok(value),
                Decision::Join => self.done.subscribe(),
                Decision::Start => {
                    // Subscribed under the lock, so the completion cannot slip past us.
                    let rx = self.done.subscribe();
                    self.spawn_round();
                    rx
                }
            }
        };
        if rx.changed().await.is_err() {
            return Err(Abandoned);
        }
        let published = rx.borrow_and_update().clone();
        published.ok_or(Abandoned)
    }

    /// Rounds started so far (for metrics and tests).
    pub fn rounds_started(&self) -> u64 {
        self.lock().rounds_started()
    }

    fn spawn_round(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let round = (self.refresh)();
        tokio::spawn(async move {
            // Published as abandoned if this task dies before completing (panic, shutdown).
            let mut guard = AbandonGuard(Some(Arc::clone(&this)));
            let value = round.await;
            guard.0 = None;
            let mut state = this.lock();
            state.complete(value.clone(), Instant::now());
            this.done.send_replace(Some(value));
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState<T>> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct AbandonGuard<T: Clone + Send + Sync + 'static>(Option<Arc<SingleFlight<T>>>);

impl<T: Clone + Send + Sync + 'static> Drop for AbandonGuard<T> {
    fn drop(&mut self) {
        if let Some(this) = self.0.take() {
            let mut state = this.lock();
            state.abandon();
            this.done.send_replace(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const TTL: Duration = Duration::from_secs(2);

    #[test]
    fn fresh_join_start() {
        let t0 = Instant::now();
        let mut s = CacheState::new(TTL);
        assert_eq!(s.request(t0), Decision::Start);
        assert_eq!(s.request(t0), Decision::Join);
        s.complete(7, t0 + Duration::from_millis(100));
        assert_eq!(
            s.request(t0 + Duration::from_millis(2099)),
            Decision::Fresh(7)
        );
        assert_eq!(s.request(t0 + Duration::from_millis(2100)), Decision::Start);
        s.abandon();
        assert_eq!(s.request(t0 + Duration::from_millis(2100)), Decision::Start);
        assert_eq!(s.rounds_started(), 3);
    }

    proptest! {
        /// Whatever the request pattern and round durations, rounds never overlap, and a new
        /// round starts only when the last result is at least a TTL old.
        #[test]
        fn at_most_one_round_per_ttl(steps in proptest::collection::vec((0u64..3000, any::<bool>()), 1..200)) {
            let origin = Instant::now();
            let mut now = origin;
            let mut s = CacheState::new(TTL);
            let mut last_done: Option<Instant> = None;
            let mut starts = 0u64;
            for (advance_ms, finish) in steps {
                now += Duration::from_millis(advance_ms);
                if finish && s.in_flight() {
                    s.complete(now, now);
                    last_done = Some(now);
                }
                match s.request(now) {
                    Decision::Start => {
                        starts += 1;
                        if let Some(done) = last_done {
                            prop_assert!(now.duration_since(done) >= TTL);
                        }
                    }
                    Decision::Join => prop_assert!(s.in_flight()),
                    Decision::Fresh(at) => prop_assert!(now.duration_since(at) < TTL),
                }
            }
            prop_assert_eq!(starts, s.rounds_started());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_callers_share_one_round_per_ttl() {
        let rounds = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&rounds);
        let cache = SingleFlight::new(TTL, move || {
            let counter = Arc::clone(&counter);
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                counter.fetch_add(1, Ordering::SeqCst) + 1
            }
        });
        let callers: Vec<_> = (0..500)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { cache.get().await })
            })
            .collect();
        for c in callers {
            assert_eq!(c.await.unwrap(), Ok(1));
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
        // Still fresh 1.9 s after the round ended.
        tokio::time::advance(Duration::from_millis(1900)).await;
        assert_eq!(cache.get().await, Ok(1));
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
        // Stale: the next caller starts round 2, others join it.
        tokio::time::advance(Duration::from_millis(100)).await;
        let (a, b) = tokio::join!(cache.get(), cache.get());
        assert_eq!((a, b), (Ok(2), Ok(2)));
        assert_eq!(cache.rounds_started(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_leaves_does_not_cancel_the_round() {
        let cache = SingleFlight::new(TTL, || async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            42
        });
        let first = tokio::time::timeout(Duration::from_millis(10), cache.get()).await;
        assert!(first.is_err(), "the first caller gave up");
        assert_eq!(cache.get().await, Ok(42));
        assert_eq!(cache.rounds_started(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_round_is_abandoned_not_stuck() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&calls);
        let cache = SingleFlight::new(TTL, move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("boom");
                }
                n
            }
        });
        assert_eq!(cache.get().await, Err(Abandoned));
        assert_eq!(cache.get().await, Ok(1));
    }
}
