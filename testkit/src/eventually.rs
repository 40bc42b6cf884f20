//! Bounded waiting for tests: poll a condition until it holds or a limit passes, and await a
//! future under a limit. A bug then fails the test with what was awaited instead of hanging
//! the suite. The limits run on `tokio::time`, so paused-clock tests advance them too.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Polls `probe` every 100 ms until it returns `Some`; panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `done` every 10 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `f`; panics naming `what` after `limit`.
pub async fn within<T>(what: &str, limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

/// The blocking twin of [`wait_for`] for tests without a runtime: polls `done` every 20 ms.
pub fn wait_for_blocking(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_the_first_value_seen() {
        let mut n = 0;
        let v = eventually("three polls", Duration::from_secs(5), || {
            n += 1;
            let seen = (n == 3).then_some(n);
            async move { seen }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "never: not seen within")]
    async fn eventually_gives_up_after_the_limit() {
        eventually("never", Duration::from_secs(1), || async { None::<()> }).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for a pending future")]
    async fn within_gives_up_after_the_limit() {
        within(
            "a pending future",
            Duration::from_secs(1),
            std::future::pending::<()>(),
        )
        .await;
    }
}
