//! Fake HTTP servers, all on 127.0.0.1 with an OS-chosen port: a builder-style hyper server
//! (linkerd style: routes, delays, headers, HTTP/1.1 and HTTP/2, optionally over TLS with a
//! [`Leaf`](crate::ca::Leaf) from the test CA) and misbehaving endpoints (reset, black holes, a
//! refusing port).

use crate::ca::Leaf;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// What the server answers to one path.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Waited before the response head is sent.
    pub delay: Duration,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: Bytes::from_static(b"ok\n"),
            delay: Duration::ZERO,
        }
    }
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Reply {
            status,
            ..Reply::default()
        }
    }

    pub fn redirect(status: u16, location: &str) -> Self {
        Reply::new(status)
            .header("location", location)
            .body(Bytes::new())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Builds a [`TestServer`]: every path gets the default reply unless a route says otherwise.
pub struct ServerBuilder {
    default: Reply,
    routes: HashMap<String, Reply>,
    tls: Option<Leaf>,
    tls12_only: bool,
    alpn: Vec<Vec<u8>>,
}

/// A plain-HTTP server answering 200 "ok" to everything; see the builder methods.
pub fn server() -> ServerBuilder {
    ServerBuilder {
        default: Reply::default(),
        routes: HashMap::new(),
        tls: None,
        tls12_only: false,
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    }
}

impl ServerBuilder {
    pub fn status(mut self, status: u16) -> Self {
        self.default.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.default = self.default.header(name, value);
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.default.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.default.delay = delay;
        self
    }

    pub fn route(mut self, path: &str, reply: Reply) -> Self {
        self.routes.insert(path.to_owned(), reply);
        self
    }

    /// Serve over TLS with this certificate.
    pub fn tls(mut self, leaf: Leaf) -> Self {
        self.tls = Some(leaf);
        self
    }

    /// Speak TLS 1.2 only.
    pub fn tls12_only(mut self) -> Self {
        self.tls12_only = true;
        self
    }

    /// ALPN protocols offered over TLS (default h2 then http/1.1); empty for no ALPN.
    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    pub async fn start(self) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let acceptor = self.tls.as_ref().map(|leaf| {
            TlsAcceptor::from(Arc::new(leaf.server_config(&self.alpn, self.tls12_only)))
        });
        let state = Arc::new(State {
            default: self.default,
            routes: self.routes,
            accepts: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Seen::default()),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                shared.accepts.fetch_add(1, Ordering::SeqCst);
                let state = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(TokioIo::new(tcp), state).await,
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            {
                                let session = tls.get_ref().1;
                                let mut seen = state.seen.lock().unwrap();
                                seen.sni = session.server_name().map(str::to_owned);
                                seen.alpn = session.alpn_protocol().map(<[u8]>::to_vec);
                            }
                            serve(TokioIo::new(tls), state).await;
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            tls: self.tls.is_some(),
            state,
            task,
        }
    }
}

async fn serve<I>(io: I, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(state.respond(request).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

/// What the server saw last.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// SNI of the last TLS handshake.
    pub sni: Option<String>,
    /// ALPN protocol the last TLS handshake settled on.
    pub alpn: Option<Vec<u8>>,
    /// Host header (HTTP/1.1) or :authority (HTTP/2) of the last request.
    pub host: Option<String>,
    pub version: Option<Version>,
    pub path: Option<String>,
    /// Headers of the last request.
    pub headers: http::HeaderMap,
}

struct State {
    default: Reply,
    routes: HashMap<String, Reply>,
    accepts: AtomicUsize,
    requests: AtomicUsize,
    seen: Mutex<Seen>,
}

impl State {
    async fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let path = request.uri().path().to_owned();
        {
            let mut seen = self.seen.lock().unwrap();
            seen.host = request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .or_else(|| request.uri().authority().map(|a| a.to_string()));
            seen.version = Some(request.version());
            seen.path = Some(path.clone());
            seen.headers = request.headers().clone();
        }
        let reply = self.routes.get(&path).unwrap_or(&self.default).clone();
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let mut response = Response::new(Full::new(reply.body));
        *response.status_mut() = StatusCode::from_u16(reply.status).expect("status code");
        for (name, value) in &reply.headers {
            response.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        response
    }
}

/// A running server; stops accepting when dropped.
pub struct TestServer {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`, or `https://` for a TLS server.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port())
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.state.accepts.load(Ordering::SeqCst)
    }

    /// HTTP requests answered (or being answered) so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Seen {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A misbehaving TCP endpoint.
pub struct Stub {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    /// The first bytes the last client sent.
    received: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Stub {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn stub<F, Fut>(handle: F) -> Stub
where
    F: Fn(TcpStream, Arc<Mutex<Vec<u8>>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let accepts = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (counter, sink) = (accepts.clone(), received.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handle(tcp, sink.clone()));
        }
    });
    Stub {
        addr,
        accepts,
        received,
        task,
    }
}

/// Reads what arrives (noting the first chunk) until the peer closes, never writing a byte.
async fn swallow(mut tcp: TcpStream, received: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 4096];
    let mut first = true;
    while let Ok(n) = tcp.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if first {
            *received.lock().unwrap() = buf[..n].to_vec();
            first = false;
        }
    }
    // Held until the peer goes away (or the runtime shuts down).
}

/// Accepts, reads the start of the request, then closes with SO_LINGER 0 so the client's next
/// read fails with ECONNRESET.
pub async fn reset_server() -> Stub {
    stub(|mut tcp, received| async move {
        let mut buf = [0u8; 1024];
        if let Ok(n) = tcp.read(&mut buf).await {
            *received.lock().unwrap() = buf[..n].to_vec();
        }
        tcp.set_zero_linger().expect("SO_LINGER 0");
        drop(tcp);
    })
    .await
}

/// A TCP service with a banner (SMTP, SSH, Redis-style): on each connection it writes
/// `banner` (after reading the client's first bytes when `after_request`, noting them), then
/// holds the connection open without another byte, as a server waiting for the next command.
pub async fn banner_server(banner: &'static [u8], after_request: bool) -> Stub {
    stub(move |mut tcp, received| async move {
        use tokio::io::AsyncWriteExt;
        if after_request {
            let mut buf = [0u8; 1024];
            match tcp.read(&mut buf).await {
                Ok(n) if n > 0 => *received.lock().unwrap() = buf[..n].to_vec(),
                _ => return,
            }
        }
        if tcp.write_all(banner).await.is_ok() {
            swallow(tcp, received).await;
        }
    })
    .await
}

/// [`banner_server`] over TLS with `leaf` (no ALPN): the banner follows the handshake.
pub async fn tls_banner_server(leaf: &Leaf, banner: &'static [u8]) -> Stub {
    let acceptor = TlsAcceptor::from(Arc::new(leaf.server_config(&[], false)));
    stub(move |tcp, _received| {
        let acceptor = acceptor.clone();
        async move {
            use tokio::io::AsyncWriteExt;
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            if tls.write_all(banner).await.is_ok() && tls.flush().await.is_ok() {
                let mut buf = [0u8; 1024];
                while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        }
    })
    .await
}

/// Accepts each connection and closes it at once, without a byte.
pub async fn close_server() -> Stub {
    stub(|tcp, _| async move { drop(tcp) }).await
}

/// Accepts TCP connections and never answers.
pub async fn black_hole() -> Stub {
    stub(swallow).await
}

/// Accepts TCP and reads the ClientHello, but never answers it: the TLS handshake never
/// completes.
pub async fn tls_black_hole() -> Stub {
    stub(swallow).await
}

/// Answers each connection's first request with a fixed HTTP/1.1 200 (no `Connection: close`)
/// and then closes it, as a server whose keep-alive timeout has passed does.
pub async fn answer_once_server() -> Stub {
    stub(|mut tcp, received| async move {
        use tokio::io::AsyncWriteExt;
        let mut buf = [0u8; 4096];
        if let Ok(n) = tcp.read(&mut buf).await {
            *received.lock().unwrap() = buf[..n].to_vec();
        }
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
        let _ = tcp.shutdown().await;
    })
    .await
}

/// A port on 127.0.0.1 with nothing listening: bound, read back, released.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}
