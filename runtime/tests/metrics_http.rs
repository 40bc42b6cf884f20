//! The `/metrics` listener over real TCP: many scrapes at once (renders are bounded, none is
//! refused), gzip only for scrapers that accept it, and the same exposition either way.

use std::io::Read;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vantage_runtime::metrics_http::{serve, CONCURRENT_RENDERS};

/// One `GET /metrics` with `Connection: close`: (head, body).
async fn scrape(addr: std::net::SocketAddr, gzip: bool) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let accept = if gzip {
        "accept-encoding: gzip\r\n"
    } else {
        ""
    };
    let request =
        format!("GET /metrics HTTP/1.1\r\nhost: test\r\n{accept}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    (head, raw[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_scrapes_at_once_are_all_answered_gzip_only_when_asked() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, handle, async {
        let _ = stopped.await;
    }));

    // Eight times the render bound, half of them asking for gzip.
    let scrapes: Vec<_> = (0..8 * CONCURRENT_RENDERS)
        .map(|i| tokio::spawn(scrape(addr, i % 2 == 0)))
        .collect();
    for (i, scrape) in scrapes.into_iter().enumerate() {
        let (head, body) = scrape.await.expect("scrape task");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("vary: accept-encoding"), "{head}");
        let text = if i % 2 == 0 {
            assert!(head.contains("content-encoding: gzip"), "{head}");
            let mut text = String::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut text)
                .expect("a gzip body");
            text
        } else {
            assert!(!head.contains("content-encoding"), "{head}");
            String::from_utf8(body).expect("UTF-8 text")
        };
        // The process metrics are always there, whole.
        assert!(text.contains("process_start_time_seconds"), "{text}");
        assert!(text.ends_with('\n'), "{text}");
    }
    let _ = stop.send(());
    serving.await.expect("serve task").expect("serve");
}
