//! Shutdown signals, one way for every long-running command: SIGTERM (what ECS, systemd and
//! `docker stop` send before SIGKILL) and SIGINT (Ctrl-C) both count.
//!
//! A command that drains (the agent finishes its interval) watches the count: the first signal
//! asks for a clean stop, a second for an immediate one. Others just wait for the first.

use tokio::sync::watch;

/// Counts SIGTERM and SIGINT from now on; the receiver sees 1 after the first, 2 after the
/// second, and so on. Must be called inside a Tokio runtime.
pub fn signal_count() -> watch::Receiver<u32> {
    let (tx, rx) = watch::channel(0u32);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            let terminated = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let terminated = std::future::pending::<()>();
            tokio::pin!(terminated);
            tokio::select! {
                result = tokio::signal::ctrl_c() => {
                    if result.is_err() {
                        // No SIGINT handler could be installed: SIGTERM still counts.
                        terminated.await;
                    }
                }
                () = &mut terminated => {}
            }
            // `send_modify`, not `send(*tx.borrow() + 1)`: the borrow's read guard would still
            // be held when `send` takes the write lock, and the task would deadlock.
            if tx.is_closed() {
                return;
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    rx
}

/// A flag that turns `true` at the first SIGTERM or SIGINT, for commands that stop through a
/// `watch::Receiver<bool>`.
pub fn stop_flag() -> watch::Receiver<bool> {
    let mut count = signal_count();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = count.wait_for(|n| *n > 0) => { let _ = tx.send(true); }
            () = tx.closed() => {}
        }
    });
    rx
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn requested() {
    let mut flag = stop_flag();
    let _ = flag.wait_for(|stop| *stop).await;
}
