//! Where the lease record lives, behind one object-safe trait: [`MemoryLeaseStore`] (one
//! process: the demo's replicas share it, and the paused-clock tests) and
//! [`super::DynamoLeaseStore`] (the fleet's replicas, one DynamoDB item). Every write is
//! conditional, with the conditions of [`super::core`]; a refused condition is an answer
//! (`Ok(false)`: not taken, or lost), not an error. A store reads no clock: callers pass
//! their own reading in the record and the staleness bound.

use super::core::{holder_condition, takeover_condition, LeaseRecord};
use super::LeaseError;
use crate::service::lock;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What a [`LeaseStore`] call returns: boxed, so the trait stays usable as `dyn LeaseStore`.
pub type LeaseFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LeaseError>> + Send + 'a>>;

/// The lease record's home. `Ok(true)`: the conditional write happened; `Ok(false)`: its
/// condition did not hold (someone else holds the lease, or took it from us).
pub trait LeaseStore: Send + Sync {
    /// The stored record, read strongly consistently; `None` when there is none yet.
    fn read(&self) -> LeaseFuture<'_, Option<LeaseRecord>>;

    /// Writes `next` if no record is stored, or the stored one expired before
    /// `stale_before_ms` and carries a smaller token than `next`.
    fn acquire<'a>(&'a self, next: &'a LeaseRecord, stale_before_ms: u64) -> LeaseFuture<'a, bool>;

    /// Moves the expiry to `next.expires_ms` if the stored record still has `next`'s holder
    /// and token.
    fn renew<'a>(&'a self, next: &'a LeaseRecord) -> LeaseFuture<'a, bool>;

    /// Checks, in the store and at this moment, that `holder` still holds the lease with
    /// `token`: called right before every weight batch.
    fn fence<'a>(&'a self, holder: &'a str, token: u64) -> LeaseFuture<'a, bool>;

    /// Ends `holder`'s tenure `token` at once (expiry 0, token kept, so tokens still only
    /// grow), so another replica need not wait for the expiry. On clean shutdown.
    fn release<'a>(&'a self, holder: &'a str, token: u64) -> LeaseFuture<'a, bool>;
}

/// The lease in this process's memory. Clones share one record, so replicas in one process
/// (the demo) contend for it as they would for the DynamoDB item.
#[derive(Debug, Clone, Default)]
pub struct MemoryLeaseStore {
    record: Arc<Mutex<Option<LeaseRecord>>>,
    /// While set, every call fails as an unreachable store would (tests, the demo's faults).
    unavailable: Arc<AtomicBool>,
}

impl MemoryLeaseStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail with [`LeaseError::Unavailable`] (true) or work again (false).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::Relaxed);
    }

    /// The stored record, without the availability check (for tests and the demo's view).
    pub fn peek(&self) -> Option<LeaseRecord> {
        lock(&self.record).clone()
    }

    /// Runs `f` on the record, as one atomic step of the store.
    fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Option<LeaseRecord>) -> T,
    ) -> LeaseFuture<'static, T> {
        let result = if self.unavailable.load(Ordering::Relaxed) {
            Err(LeaseError::Unavailable)
        } else {
            Ok(f(&mut lock(&self.record)))
        };
        Box::pin(std::future::ready(result))
    }
}

impl LeaseStore for MemoryLeaseStore {
    fn read(&self) -> LeaseFuture<'_, Option<LeaseRecord>> {
        self.with(|r| r.clone())
    }

    fn acquire<'a>(&'a self, next: &'a LeaseRecord, stale_before_ms: u64) -> LeaseFuture<'a, bool> {
        self.with(|r| {
            let ok = takeover_condition(r.as_ref(), next, stale_before_ms);
            if ok {
                *r = Some(next.clone());
            }
            ok
        })
    }

    fn renew<'a>(&'a self, next: &'a LeaseRecord) -> LeaseFuture<'a, bool> {
        self.with(|r| match r {
            Some(stored) if holder_condition(Some(stored), &next.holder, next.token) => {
                stored.expires_ms = next.expires_ms;
                true
            }
            _ => false,
        })
    }

    fn fence<'a>(&'a self, holder: &'a str, token: u64) -> LeaseFuture<'a, bool> {
        self.with(|r| holder_condition(r.as_ref(), holder, token))
    }

    fn release<'a>(&'a self, holder: &'a str, token: u64) -> LeaseFuture<'a, bool> {
        self.with(|r| match r {
            Some(stored) if holder_condition(Some(stored), holder, token) => {
                stored.expires_ms = 0;
                true
            }
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, token: u64, expires_ms: u64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            token,
            expires_ms,
        }
    }

    #[tokio::test]
    async fn conditional_writes_as_dynamodb_makes_them() {
        let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::new());
        assert_eq!(store.read().await.unwrap(), None);
        assert!(store.acquire(&rec("a", 1, 1_000), 0).await.unwrap());
        // Not expired: b cannot take it.
        assert!(!store.acquire(&rec("b", 2, 2_000), 500).await.unwrap());
        assert!(store.renew(&rec("a", 1, 3_000)).await.unwrap());
        assert!(!store.renew(&rec("b", 1, 3_000)).await.unwrap());
        assert!(store.fence("a", 1).await.unwrap());
        assert!(!store.fence("a", 2).await.unwrap());
        // Expired before the bound: b takes it, and a is fenced out.
        assert!(store.acquire(&rec("b", 2, 9_000), 3_001).await.unwrap());
        assert!(!store.fence("a", 1).await.unwrap());
        assert!(!store.renew(&rec("a", 1, 9_500)).await.unwrap());
        assert!(!store.release("a", 1).await.unwrap());
        assert!(store.release("b", 2).await.unwrap());
        assert_eq!(store.read().await.unwrap(), Some(rec("b", 2, 0)));
        // Released: free at once, but never for a token already handed out.
        assert!(!store.acquire(&rec("a", 2, 9_000), 1).await.unwrap());
        assert!(store.acquire(&rec("a", 3, 9_000), 1).await.unwrap());
    }

    #[tokio::test]
    async fn clones_share_the_record_and_faults() {
        let a = MemoryLeaseStore::new();
        let b = a.clone();
        assert!(a.acquire(&rec("a", 1, 1_000), 0).await.unwrap());
        assert_eq!(b.peek(), Some(rec("a", 1, 1_000)));
        b.set_unavailable(true);
        assert!(matches!(
            a.fence("a", 1).await,
            Err(LeaseError::Unavailable)
        ));
        b.set_unavailable(false);
        assert!(a.fence("a", 1).await.unwrap());
    }
}
