//! The shared server loop against raw TCP clients: the connection cap, oversize heads, stalled
//! and idle connections, and the drain at shutdown. Timeouts are checked on the paused clock.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use vantage_runtime::http_server::{serve, Limits};

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

/// Starts a server answering `ok` (after 300 ms on `/slow`); the sender stops it.
async fn start(limits: Limits) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let make = |_peer| {
        service_fn(|request: Request<Incoming>| async move {
            if request.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        })
    };
    let task = tokio::spawn(async move {
        serve(listener, make, limits, None, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, task)
}

/// Reads one response head and its 2-byte body (what every answer here is), or `None` at EOF.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return Some(text);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                return (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into())
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits for the server to close `stream`, discarding anything it sends first.
async fn closed(stream: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            break;
        }
    }
}

// Attack: more connections than the cap. The extra one waits in the backlog, is not served
// while the cap is reached, and is served as soon as a slot frees.
#[tokio::test]
async fn at_the_cap_a_connection_waits_and_is_served_once_one_frees() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::API
    };
    let (addr, _stop, _task) = start(limits).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(GET).await.unwrap();
    assert!(read_response(&mut first)
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(GET).await.unwrap();
    let waiting =
        tokio::time::timeout(Duration::from_millis(400), read_response(&mut second)).await;
    assert!(waiting.is_err(), "served beyond the cap: {waiting:?}");

    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(5), read_response(&mut second))
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}

// Attack: a request head larger than the bound, or with too many fields, to exhaust memory.
#[tokio::test]
async fn oversize_heads_get_431() {
    let (addr, _stop, _task) = start(Limits::API).await;
    let big = format!(
        "GET / HTTP/1.1\r\nhost: test\r\nx-big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let many: String = (0..70).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nhost: test\r\n{many}\r\n");
    for head in [big, many] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(head.as_bytes()).await;
        let answer = read_response(&mut s).await.unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    }
    // Within the bound is fine.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nhost: test\r\nx-ok: {}\r\n\r\n",
        "a".repeat(4096)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    assert!(read_response(&mut s)
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
}

// Attack: keep-alive connections opened, used once and left idle to pin the slots.
#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(5),
        ..Limits::API
    };
    let (addr, _stop, _task) = start(limits).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(GET).await.unwrap();
    assert!(read_response(&mut s)
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    closed(&mut s).await;
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_secs(5) && idle < Duration::from_secs(6),
        "{idle:?}"
    );
}

// Attack: slowloris. A connection that sends nothing, or half a head and then holds, is closed
// at the header timeout; a slow handler is not mistaken for an idle connection.
#[tokio::test(start_paused = true)]
async fn stalled_heads_are_closed_at_the_header_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        ..Limits::API
    };
    let (addr, _stop, _task) = start(limits).await;
    for sent in [&b""[..], b"GET / HTTP/1.1\r\nhost: te"] {
        let start = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(sent).await.unwrap();
        closed(&mut s).await;
        let held = start.elapsed();
        assert!(
            held >= Duration::from_secs(2) && held < Duration::from_secs(3),
            "{sent:?}: {held:?}"
        );
    }
    let limits = Limits {
        idle_timeout: Duration::from_millis(100),
        ..Limits::API
    };
    let (addr, _stop, _task) = start(limits).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s)
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
}

// Shutdown: a request in flight finishes, then nothing more is accepted.
#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let (addr, stop, task) = start(Limits::API).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();
    let answer = read_response(&mut s).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns after the drain")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}
