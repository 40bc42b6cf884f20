//! Shutdown signals, one way for every long-running command: SIGTERM (what ECS, systemd and
//! `docker stop` send before SIGKILL) and SIGINT (Ctrl-C) both count.
//!
//! A command that drains (the agent finishes its interval) watches the count: the first signal
//! asks for a clean stop, a second for an immediate one. Others just wait for the first.

use tokio::sync::watch;

/// Counts SIGTERM and SIGINT from now on; the receiver sees 1 after the first, 2 after the
/// second, and so on. Must be called inside a Tokio runtime. The handlers are installed before
/// this returns, so a signal sent as soon as a command says it is ready is never missed (and
/// never kills the process with the default action).
pub fn signal_count() -> watch::Receiver<u32> {
    let (tx, rx) = watch::channel(0u32);
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    tokio::spawn(async move {
        #[cfg(unix)]
        let (mut term, mut int) = streams;
        loop {
            #[cfg(unix)]
            {
                tokio::select! {
                    () = next_signal(&mut term) => {}
                    () = next_signal(&mut int) => {}
                }
            }
            #[cfg(not(unix))]
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
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

/// The next delivery of `signal`; never, if its handler could not be installed.
#[cfg(unix)]
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// A flag that turns `true` at the first SIGTERM or SIGINT, for commands that stop through a
/// `watch::Receiver<bool>`. The handlers are installed before it returns.
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

/// Resolves at the first SIGTERM or SIGINT. The handlers are installed when this is called,
/// not when the future is first polled.
pub fn requested() -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut flag = stop_flag();
    async move {
        let _ = flag.wait_for(|stop| *stop).await;
    }
}
