//! [`Prober`]: one target's probes, each a fresh DNS lookup, TCP connect, TLS handshake and
//! HTTP exchange (or a kept-open connection with `reuse_connection`), every step under the
//! earlier of its own limit and the overall deadline. `tcp(s)://` and `grpc(s)://` targets
//! go through the same resolver, connector and TLS handshake, then [`crate::tcp`] or
//! [`crate::grpc`] instead of the HTTP exchange, so their phases mean the same thing.

use crate::exchange::{
    build_request, classify_hyper, http_handshake, resolve_location, ConnectionTask, Sender,
};
use crate::result::{Failure, ProbeResult, StepError};
use crate::spec::{
    host_of, port_of, HttpVersionPref, IpPreference, ProbeKind, ProbeSpec, SpecError,
};
use crate::timed_io::SharedMarks;
use crate::tls::{self, TlsConfigCache};
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use rustls::pki_types::ServerName;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use vantage_protocol::{Outcome, Phase};
use vantage_runtime::sync::lock;

/// An open HTTP connection, with what was learned while opening it.
pub(crate) struct Connection {
    pub(crate) sender: Sender,
    marks: SharedMarks,
    _task: ConnectionTask,
    pub(crate) remote_addr: SocketAddr,
    pub(crate) tls_version: Option<&'static str>,
    pub(crate) cert_not_after: Option<SystemTime>,
    /// Scheme and authority the connection was opened for.
    origin: (bool, String, u16),
}

/// Probes one target. Cheap to call concurrently; with connection reuse on, concurrent probes
/// that find the kept connection busy open their own.
pub struct Prober {
    spec: Arc<ProbeSpec>,
    pub(crate) tls_configs: Arc<TlsConfigCache>,
    /// Kept-open connections, at most one per origin (a redirect chain may span origins).
    idle: Mutex<Vec<Connection>>,
    /// The last leaf certificate seen and its parsed notAfter: parsing X.509 on every probe
    /// would cost more than comparing a few hundred bytes.
    last_leaf: Mutex<Option<(Vec<u8>, Option<SystemTime>)>>,
}

impl Prober {
    /// Validates the spec and prepares its TLS configuration (shared through `tls_configs`).
    pub fn new(mut spec: ProbeSpec, tls_configs: Arc<TlsConfigCache>) -> Result<Self, SpecError> {
        spec.validate()?;
        // gRPC is HTTP/2 only: ALPN h2 over TLS, prior knowledge in plaintext.
        if spec.kind() == ProbeKind::Grpc {
            spec.http_version = HttpVersionPref::Http2;
        }
        // A CA bundle is checked even for http:// targets: a redirect may lead to https.
        if spec.kind() == ProbeKind::Tcp {
            if spec.uses_tls() || spec.tls.ca_file.is_some() {
                tls_configs.get_without_alpn(&spec.tls)?;
            }
        } else if spec.uses_tls() || spec.tls.ca_file.is_some() {
            tls_configs.get(&spec.tls, spec.http_version)?;
        }
        Ok(Prober {
            spec: Arc::new(spec),
            tls_configs,
            idle: Mutex::new(Vec::new()),
            last_leaf: Mutex::new(None),
        })
    }

    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    /// Runs one probe to completion or to the overall deadline.
    pub async fn probe(&self) -> ProbeResult {
        self.probe_with_headers(&HeaderMap::new()).await
    }

    /// [`probe`](Self::probe) with headers of this probe only added to (and replacing those of
    /// the same name in) the spec's: a trace header such as `X-Amzn-Trace-Id` differs per probe.
    pub async fn probe_with_headers(&self, extra: &HeaderMap) -> ProbeResult {
        let started = Instant::now();
        let deadline = started + self.spec.timeouts.overall;
        let mut result = ProbeResult::new();
        let run = match self.spec.kind() {
            ProbeKind::Http => self.run(deadline, extra, &mut result).await,
            ProbeKind::Tcp => crate::tcp::run(self, deadline, &mut result).await,
            ProbeKind::Grpc => crate::grpc::run(self, deadline, &mut result).await,
        };
        if let Err(e) = run {
            result.outcome = e.outcome;
            result.failure = Some(Failure {
                phase: e.phase,
                message: e.message,
            });
        }
        result.timings.set(Phase::Total, started.elapsed());
        result
    }

    async fn run(
        &self,
        deadline: Instant,
        extra: &HeaderMap,
        result: &mut ProbeResult,
    ) -> Result<(), StepError> {
        let spec = &*self.spec;
        let mut url = spec.url.clone();
        let mut method = spec.method.clone();
        let mut body = spec.body.clone();
        loop {
            let response = self
                .exchange(&url, &method, &body, extra, deadline, result)
                .await?;
            let status = response.status;
            let redirect = status.is_redirection() && status != StatusCode::NOT_MODIFIED;
            if redirect && spec.max_redirects > 0 {
                if let Some(next) = response
                    .headers
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| resolve_location(&url, l))
                {
                    if result.redirects >= spec.max_redirects {
                        return Err(StepError {
                            outcome: Outcome::RedirectLimit,
                            phase: None,
                            message: format!(
                                "more than {} redirects (next: {next})",
                                spec.max_redirects
                            ),
                        });
                    }
                    result.redirects += 1;
                    if status == StatusCode::SEE_OTHER
                        || (method == Method::POST && matches!(status.as_u16(), 301 | 302))
                    {
                        method = Method::GET;
                        body = Bytes::new();
                    }
                    url = next;
                    continue;
                }
            }
            spec.assertions
                .check_head(status.as_u16(), &response.headers)?;
            spec.assertions.check_body(&response.body)?;
            return Ok(());
        }
    }

    /// One request and response on a new or kept connection.
    async fn exchange(
        &self,
        url: &Uri,
        method: &Method,
        body: &Bytes,
        extra: &HeaderMap,
        deadline: Instant,
        result: &mut ProbeResult,
    ) -> Result<Response, StepError> {
        let spec = &*self.spec;
        let https = url.scheme_str() == Some("https");
        let origin = (https, host_of(url).to_ascii_lowercase(), port_of(url));
        let mut connection = match self.take_idle(&origin, deadline).await {
            Some(c) => {
                result.reused_connection = true;
                c
            }
            None => {
                result.reused_connection = false;
                self.connect(url, origin, deadline, result).await?
            }
        };
        result.remote_addr = Some(connection.remote_addr);
        result.tls_version = connection.tls_version;
        result.cert_not_after = connection.cert_not_after;

        let request = build_request(spec, url, method, body, extra, &connection.sender)?;
        let sent_at = Instant::now();
        let first_byte_limit = deadline.min(sent_at + spec.timeouts.first_byte);
        let sending = async {
            match &mut connection.sender {
                Sender::H1(s) => s.send_request(request).await,
                Sender::H2(s) => s.send_request(request).await,
            }
        };
        let response = match timeout_at(first_byte_limit, sending).await {
            Err(_) => return Err(StepError::timeout(Phase::Ttfb, first_byte_limit, sent_at)),
            Ok(Err(e)) => return Err(classify_hyper(&e, Phase::Ttfb)),
            Ok(Ok(r)) => r,
        };
        let head_at = Instant::now();
        // HTTP/1.1: bytes on the wire; HTTP/2 interleaves control frames with the response, so
        // the head's arrival is the honest first byte there.
        let (ttfb, first_byte_at) = match connection.sender {
            Sender::H1(_) => {
                let marks = *lock(&connection.marks);
                match (marks.time_to_first_byte(), marks.first_read_after_write) {
                    (Some(t), Some(at)) => (t, at),
                    _ => (head_at - sent_at, head_at),
                }
            }
            Sender::H2(_) => (head_at - sent_at, head_at),
        };
        result.timings.add(Phase::Ttfb, ttfb);
        result.http_version = Some(response.version());
        result.status = Some(response.status().as_u16());
        result.answered_by = response
            .headers()
            .get(&spec.region_header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);

        let (parts, mut incoming) = response.into_parts();
        let keep_body = spec.assertions.needs_body();
        let cap = spec.max_body_bytes;
        let mut kept = Vec::new();
        let mut read = 0usize;
        let mut complete = false;
        while read < cap {
            match timeout_at(deadline, incoming.frame()).await {
                Err(_) => return Err(StepError::timeout(Phase::Transfer, deadline, head_at)),
                Ok(None) => {
                    complete = true;
                    break;
                }
                Ok(Some(Err(e))) => return Err(classify_hyper(&e, Phase::Transfer)),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let take = data.len().min(cap - read);
                        if keep_body {
                            kept.extend_from_slice(&data[..take]);
                        }
                        read += take;
                    }
                }
            }
        }
        if !complete && incoming.is_end_stream() {
            complete = true;
        }
        result.body_bytes = read;
        result.timings.add(Phase::Transfer, first_byte_at.elapsed());
        drop(incoming);
        let close = parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if spec.reuse_connection && complete && !close {
            self.keep_idle(connection);
        }
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: kept,
        })
    }

    /// The kept connection for `origin`, if reuse is on and it is still usable.
    pub(crate) async fn take_idle(
        &self,
        origin: &(bool, String, u16),
        deadline: Instant,
    ) -> Option<Connection> {
        if !self.spec.reuse_connection {
            return None;
        }
        let mut c = {
            let mut idle = lock(&self.idle);
            let pos = idle.iter().position(|c| &c.origin == origin)?;
            idle.swap_remove(pos)
        };
        let ready = match &mut c.sender {
            Sender::H1(s) => timeout_at(deadline, s.ready()).await,
            Sender::H2(s) => timeout_at(deadline, s.ready()).await,
        };
        matches!(ready, Ok(Ok(()))).then_some(c)
    }

    pub(crate) fn keep_idle(&self, connection: Connection) {
        /// A target's redirect chain rarely spans more origins than this.
        const MAX_IDLE: usize = 4;
        let mut idle = lock(&self.idle);
        idle.retain(|c| c.origin != connection.origin);
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(connection);
    }

    /// DNS, TCP and TLS, each timed, then the HTTP handshake.
    pub(crate) async fn connect(
        &self,
        url: &Uri,
        origin: (bool, String, u16),
        deadline: Instant,
        result: &mut ProbeResult,
    ) -> Result<Connection, StepError> {
        let spec = &*self.spec;
        let (https, host, port) = (origin.0, host_of(url), origin.2);
        let addrs = self.resolve(host, port, deadline, result).await?;
        let (tcp, remote_addr) = self.connect_tcp(&addrs, deadline, result).await?;
        if !https {
            let h2 = spec.http_version == HttpVersionPref::Http2;
            let (sender, marks, task) =
                http_handshake(tcp, h2, spec.timeouts.first_byte, deadline).await?;
            return Ok(Connection {
                sender,
                marks,
                _task: task,
                remote_addr,
                tls_version: None,
                cert_not_after: None,
                origin,
            });
        }

        let config = self
            .tls_configs
            .get(&spec.tls, spec.http_version)
            .map_err(|e| StepError::new(Outcome::Tls, Phase::Tls, e.to_string()))?;
        let stream = self
            .tls_handshake(config, host, tcp, deadline, result)
            .await?;
        let session = stream.get_ref().1;
        let h2 = session.alpn_protocol() == Some(b"h2".as_slice());
        if spec.http_version == HttpVersionPref::Http2 && !h2 {
            return Err(StepError::new(
                Outcome::Protocol,
                Phase::Tls,
                "server did not agree to HTTP/2 (ALPN h2)",
            ));
        }
        let (tls_version, cert_not_after) = (result.tls_version, result.cert_not_after);
        let (sender, marks, task) =
            http_handshake(stream, h2, spec.timeouts.first_byte, deadline).await?;
        Ok(Connection {
            sender,
            marks,
            _task: task,
            remote_addr,
            tls_version,
            cert_not_after,
            origin,
        })
    }

    /// The TLS handshake, timed, under the earlier of the TLS limit and the deadline. Notes the
    /// TLS version and the leaf's notAfter in `result`.
    pub(crate) async fn tls_handshake(
        &self,
        config: Arc<rustls::ClientConfig>,
        host: &str,
        tcp: TcpStream,
        deadline: Instant,
        result: &mut ProbeResult,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, StepError> {
        let server_name = ServerName::try_from(host.to_owned()).map_err(|e| {
            StepError::new(
                Outcome::Tls,
                Phase::Tls,
                format!("bad TLS server name: {e}"),
            )
        })?;
        let tls_start = Instant::now();
        let tls_limit = deadline.min(tls_start + self.spec.timeouts.tls);
        let connector = tokio_rustls::TlsConnector::from(config);
        let stream = match timeout_at(tls_limit, connector.connect(server_name, tcp)).await {
            Err(_) => return Err(StepError::timeout(Phase::Tls, tls_limit, tls_start)),
            Ok(Err(e)) => {
                let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                let message = match rustls_error {
                    Some(re) => {
                        let (message, not_after) = tls::describe_tls_error(re);
                        result.cert_not_after = not_after;
                        message
                    }
                    None => format!("connection failed during TLS handshake: {e}"),
                };
                return Err(StepError::new(Outcome::Tls, Phase::Tls, message));
            }
            Ok(Ok(s)) => s,
        };
        result.timings.add(Phase::Tls, tls_start.elapsed());
        let session = stream.get_ref().1;
        result.tls_version = session.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1_3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1_2",
            _ => "other",
        });
        result.cert_not_after = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| self.leaf_not_after(leaf.as_ref()));
        Ok(stream)
    }

    fn leaf_not_after(&self, der: &[u8]) -> Option<SystemTime> {
        let mut last = lock(&self.last_leaf);
        if let Some((bytes, not_after)) = &*last {
            if bytes.as_slice() == der {
                return *not_after;
            }
        }
        let not_after = tls::certificate_not_after(der);
        *last = Some((der.to_vec(), not_after));
        not_after
    }

    pub(crate) async fn resolve(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
        result: &mut ProbeResult,
    ) -> Result<Vec<SocketAddr>, StepError> {
        let spec = &*self.spec;
        if let Some(addr) = spec.resolved_override(host, port) {
            return Ok(vec![addr]);
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let start = Instant::now();
        let limit = deadline.min(start + spec.timeouts.dns);
        let addrs: Vec<SocketAddr> =
            match timeout_at(limit, tokio::net::lookup_host((host, port))).await {
                Err(_) => return Err(StepError::timeout(Phase::Dns, limit, start)),
                Ok(Err(e)) => {
                    return Err(StepError::new(
                        Outcome::Dns,
                        Phase::Dns,
                        format!("cannot resolve {host}: {e}"),
                    ))
                }
                Ok(Ok(addrs)) => addrs.collect(),
            };
        result.timings.add(Phase::Dns, start.elapsed());
        let ordered = order_addresses(addrs, spec.ip_preference);
        if ordered.is_empty() {
            return Err(StepError::new(
                Outcome::Dns,
                Phase::Dns,
                format!("{host} has no address of the requested IP family"),
            ));
        }
        Ok(ordered)
    }

    /// Tries each address in order until one connects; the connect limit covers them all.
    pub(crate) async fn connect_tcp(
        &self,
        addrs: &[SocketAddr],
        deadline: Instant,
        result: &mut ProbeResult,
    ) -> Result<(TcpStream, SocketAddr), StepError> {
        let start = Instant::now();
        let limit = deadline.min(start + self.spec.timeouts.connect);
        let mut last_error = None;
        for &addr in addrs {
            match timeout_at(limit, TcpStream::connect(addr)).await {
                Err(_) => return Err(StepError::timeout(Phase::Connect, limit, start)),
                Ok(Err(e)) => last_error = Some((addr, e)),
                Ok(Ok(stream)) => {
                    result.timings.add(Phase::Connect, start.elapsed());
                    // Requests are small and written whole; Nagle would only delay them.
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, addr));
                }
            }
        }
        let message = match last_error {
            Some((addr, e)) => format!("connect to {addr}: {e}"),
            None => "no address to connect to".to_owned(),
        };
        Err(StepError::new(Outcome::Connect, Phase::Connect, message))
    }
}

/// A response as the assertions see it.
struct Response {
    status: StatusCode,
    headers: HeaderMap,
    /// Body prefix, kept only when an assertion needs it.
    body: Vec<u8>,
}

fn order_addresses(addrs: Vec<SocketAddr>, preference: IpPreference) -> Vec<SocketAddr> {
    // `Any` keeps resolver order: it already reflects the system's address selection rules.
    if preference == IpPreference::Any {
        return addrs;
    }
    let (v4, v6): (Vec<_>, Vec<_>) = addrs.into_iter().partition(SocketAddr::is_ipv4);
    match preference {
        IpPreference::Any | IpPreference::PreferV4 => v4.into_iter().chain(v6).collect(),
        IpPreference::V4Only => v4,
        IpPreference::V6Only => v6,
        IpPreference::PreferV6 => v6.into_iter().chain(v4).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn address_preference_orders_and_filters() {
        let v4: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let both = vec![v6, v4];
        assert_eq!(
            order_addresses(both.clone(), IpPreference::V4Only),
            vec![v4]
        );
        assert_eq!(
            order_addresses(both.clone(), IpPreference::V6Only),
            vec![v6]
        );
        assert_eq!(
            order_addresses(both.clone(), IpPreference::PreferV4),
            vec![v4, v6]
        );
        assert_eq!(order_addresses(both, IpPreference::PreferV6), vec![v6, v4]);
    }
}
