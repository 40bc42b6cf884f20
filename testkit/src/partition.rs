//! A network partition on loopback: a TCP forwarder in front of one server that a test can cut
//! (new connections are dropped at once, open ones are closed) and heal. The kernel here has no
//! `netem`, so a partition between two processes is made in user space, in the path.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a forwarded connection may take to reach the target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A forwarder from its own loopback port to `target`; stops when dropped.
pub struct Partition {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Partition {
    /// Starts forwarding to `target` (which need not be listening yet).
    pub async fn start(target: SocketAddr) -> std::io::Result<Partition> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (open, watching) = watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !*watching.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, target, watching.clone()));
            }
        });
        Ok(Partition { addr, open, task })
    }

    /// `http://127.0.0.1:PORT`: the URL to give clients instead of the target's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts the path: open connections are closed and new ones dropped on accept.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Heals the path.
    pub fn heal(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut open: watch::Receiver<bool>) {
    let Ok(Ok(mut server)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = open.wait_for(|open| !*open) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_until_cut_and_again_when_healed() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let partition = Partition::start(target).await.unwrap();
        let roundtrip = |port: u16| async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            s.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
                .await
                .ok()?
                .ok()?;
            Some(buf)
        };
        assert_eq!(roundtrip(partition.port()).await, Some(*b"ping"));
        let mut held = TcpStream::connect(("127.0.0.1", partition.port()))
            .await
            .unwrap();
        held.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        held.read_exact(&mut one).await.unwrap();
        partition.cut();
        assert_eq!(roundtrip(partition.port()).await, None);
        // The connection open before the cut is closed too.
        let mut rest = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), held.read(&mut rest))
            .await
            .unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        partition.heal();
        assert_eq!(roundtrip(partition.port()).await, Some(*b"ping"));
    }
}
