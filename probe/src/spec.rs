//! What to probe and how: a validated description of one target. Built once, probed many times.

use super::assertion::Assertions;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Uri};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Problems with a probe description, found before any traffic is sent.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("malformed URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("unsupported URL scheme {0:?}: use http, https, tcp, tcps, grpc or grpcs")]
    Scheme(String),
    #[error("bad --resolve {0:?}: expected HOST:PORT:ADDR, e.g. api.example.com:443:192.0.2.10")]
    Resolve(String),
    #[error("bad header {0:?}: expected 'Name: value'")]
    Header(String),
    #[error("reading CA bundle {path}: {source}")]
    CaBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA bundle {0} holds no PEM certificate")]
    EmptyCaBundle(PathBuf),
    #[error("CA bundle {path}: certificate rejected: {reason}")]
    CaCertificate { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// What kind of exchange a target's URL asks for, from its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// `http://`, `https://`: one HTTP exchange with assertions.
    Http,
    /// `tcp://host:port`, `tcps://host:port`: connect (and TLS), then optionally send the
    /// body and match the banner against `expect_body`/`expect_body_regex`.
    Tcp,
    /// `grpc://host:port/service.Name`, `grpcs://...`: `grpc.health.v1.Health/Check` for the
    /// service named by the path (empty: the server as a whole).
    Grpc,
}

impl ProbeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Grpc => "grpc",
        }
    }
}

/// Which HTTP version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpVersionPref {
    /// HTTPS: offer h2 and http/1.1 by ALPN and use what the server picks. HTTP: HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: by ALPN over TLS, with prior knowledge (h2c) over plain HTTP.
    Http2,
}

/// Which address family to connect over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpPreference {
    /// Addresses in resolver order.
    #[default]
    Any,
    /// Only IPv4 addresses.
    V4Only,
    /// Only IPv6 addresses.
    V6Only,
    /// IPv4 addresses first, then IPv6.
    PreferV4,
    /// IPv6 addresses first, then IPv4.
    PreferV6,
}

/// Phase limits and the overall deadline. A phase ends at the earlier of its own limit and the
/// overall deadline, so the overall deadline always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub overall: Duration,
    pub dns: Duration,
    /// TCP connect; Route 53's checkers allow 4 s.
    pub connect: Duration,
    pub tls: Duration,
    /// Request sent to first response byte; Route 53's checkers allow 2 s.
    pub first_byte: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            overall: Duration::from_secs(10),
            dns: Duration::from_secs(2),
            connect: Duration::from_secs(4),
            tls: Duration::from_secs(4),
            first_byte: Duration::from_secs(2),
        }
    }
}

/// TLS settings. Verification is on unless `insecure` is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsOptions {
    /// Skip certificate verification (the handshake signature is still checked).
    pub insecure: bool,
    /// Extra trust anchors (PEM), added to the webpki roots.
    pub ca_file: Option<PathBuf>,
}

/// A `--resolve HOST:PORT:ADDR` override: connect to `addr` for `host:port` without DNS, while
/// SNI and `Host` keep the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOverride {
    pub host: String,
    pub port: u16,
    pub addr: IpAddr,
}

impl std::str::FromStr for ResolveOverride {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let bad = || SpecError::Resolve(s.to_owned());
        let (host, rest) = s.split_once(':').ok_or_else(bad)?;
        let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(ResolveOverride {
            host: host.to_ascii_lowercase(),
            port: port.parse().map_err(|_| bad())?,
            addr: addr.parse().map_err(|_| bad())?,
        })
    }
}

/// One probe target, validated.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub url: Uri,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub http_version: HttpVersionPref,
    pub timeouts: Timeouts,
    pub assertions: Assertions,
    /// Bytes of body read at most; the rest is not downloaded (assertions see this prefix).
    pub max_body_bytes: usize,
    pub tls: TlsOptions,
    pub resolve: Vec<ResolveOverride>,
    pub ip_preference: IpPreference,
    /// Redirects followed at most; 0 means redirects are not followed (the default).
    pub max_redirects: u8,
    /// Response header naming the Region that answered.
    pub region_header: HeaderName,
    /// Keep the connection open between probes instead of a fresh DNS + TCP + TLS each time.
    pub reuse_connection: bool,
}

/// Default cap on the body bytes read: 64 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default header naming the Region that answered.
pub const DEFAULT_REGION_HEADER: &str = "x-vantage-region";

impl ProbeSpec {
    /// A GET of `url` with every default: fresh connection, verification on, 2xx/3xx expected.
    /// A `tcp`/`tcps`/`grpc`/`grpcs` URL gives a TCP or gRPC health probe instead.
    pub fn get(url: &str) -> Result<Self, SpecError> {
        let url = parse_target_url(url)?;
        Ok(ProbeSpec {
            url,
            method: Method::GET,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            http_version: HttpVersionPref::Auto,
            timeouts: Timeouts::default(),
            assertions: Assertions::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tls: TlsOptions::default(),
            resolve: Vec::new(),
            ip_preference: IpPreference::Any,
            max_redirects: 0,
            region_header: HeaderName::from_static(DEFAULT_REGION_HEADER),
            reuse_connection: false,
        })
    }

    /// Checks the combination of settings; called by [`super::Prober::new`].
    pub fn validate(&self) -> Result<(), SpecError> {
        let t = &self.timeouts;
        for (name, d) in [
            ("timeout", t.overall),
            ("dns timeout", t.dns),
            ("connect timeout", t.connect),
            ("tls timeout", t.tls),
            ("first-byte timeout", t.first_byte),
        ] {
            if d.is_zero() {
                return Err(SpecError::Invalid(format!(
                    "{name} must be greater than zero"
                )));
            }
        }
        if t.overall > Duration::from_secs(60) {
            return Err(SpecError::Invalid(
                "timeout must be at most 60s (the latency histograms end at 60s)".into(),
            ));
        }
        Ok(())
    }

    pub fn is_https(&self) -> bool {
        self.url.scheme_str() == Some("https")
    }

    /// The kind of exchange, from the URL's scheme.
    pub fn kind(&self) -> ProbeKind {
        kind_of(&self.url)
    }

    /// The target is reached over TLS (`https`, `tcps`, `grpcs`).
    pub fn uses_tls(&self) -> bool {
        matches!(self.url.scheme_str(), Some("https" | "tcps" | "grpcs"))
    }

    /// Host as written in the URL, without IPv6 brackets.
    pub fn host(&self) -> &str {
        host_of(&self.url)
    }

    pub fn port(&self) -> u16 {
        port_of(&self.url)
    }

    /// The address a `--resolve` override gives for this host and port, if any.
    pub fn resolved_override(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.resolve
            .iter()
            .find(|r| r.port == port && r.host.eq_ignore_ascii_case(host))
            .map(|r| SocketAddr::new(r.addr, port))
    }
}

pub(crate) fn host_of(url: &Uri) -> &str {
    let host = url.host().unwrap_or_default();
    host.trim_start_matches('[').trim_end_matches(']')
}

pub(crate) fn port_of(url: &Uri) -> u16 {
    url.port_u16()
        .unwrap_or(if url.scheme_str() == Some("https") {
            443
        } else {
            80
        })
}

pub(crate) fn kind_of(url: &Uri) -> ProbeKind {
    match url.scheme_str() {
        Some("tcp" | "tcps") => ProbeKind::Tcp,
        Some("grpc" | "grpcs") => ProbeKind::Grpc,
        _ => ProbeKind::Http,
    }
}

/// Parses and checks a probe target's URL: http(s) as [`parse_url`], or `tcp`/`tcps` with a
/// port and no path, or `grpc`/`grpcs` with a port and an optional service name as the path.
pub fn parse_target_url(text: &str) -> Result<Uri, SpecError> {
    let scheme = text.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let Some(scheme @ ("tcp" | "tcps" | "grpc" | "grpcs")) = scheme.as_deref() else {
        return parse_url(text);
    };
    let bad = |reason: &str| SpecError::Url {
        url: text.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = text
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    check_authority(&uri, &bad)?;
    if uri.port_u16().is_none() {
        return Err(bad("a port is required, e.g. tcp://db.example.com:5432"));
    }
    if uri.query().is_some() {
        return Err(bad("a query string has no meaning here"));
    }
    let path = uri.path();
    if scheme.starts_with("tcp") && !(path.is_empty() || path == "/") {
        return Err(bad("a tcp URL has no path; send bytes with probe.body"));
    }
    if scheme.starts_with("grpc") {
        let service = path.trim_start_matches('/');
        if service.contains('/') {
            return Err(bad(
                "the path is the health service name, e.g. grpcs://h:443/my.pkg.Service",
            ));
        }
    }
    Ok(uri)
}

/// The gRPC health service name a `grpc(s)://` URL names: its path without the leading `/`.
pub fn grpc_service_of(url: &Uri) -> &str {
    url.path().trim_start_matches('/')
}

fn check_authority(uri: &Uri, bad: &dyn Fn(&str) -> SpecError) -> Result<(), SpecError> {
    match uri.host() {
        Some(h) if !h.is_empty() => {}
        _ => return Err(bad("missing host")),
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad(
            "credentials in the URL are not supported; use --header Authorization",
        ));
    }
    if uri.port().is_some() && uri.port_u16().is_none_or(|p| p == 0) {
        return Err(bad("port must be 1..=65535"));
    }
    Ok(())
}

/// Parses and checks an absolute http(s) URL.
pub fn parse_url(text: &str) -> Result<Uri, SpecError> {
    let bad = |reason: &str| SpecError::Url {
        url: text.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = text
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => return Err(SpecError::Scheme(other.to_owned())),
        None => return Err(bad("missing scheme, e.g. https://api.example.com/status")),
    }
    check_authority(&uri, &bad)?;
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(parse_url("https://api.example.com/status").is_ok());
        assert!(parse_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_url("https://[::1]:8443/x").is_ok());
        assert!(matches!(parse_url("ftp://x/"), Err(SpecError::Scheme(_))));
        assert!(matches!(
            parse_url("example.com/x"),
            Err(SpecError::Url { .. })
        ));
        assert!(matches!(parse_url("https://"), Err(SpecError::Url { .. })));
        assert!(matches!(
            parse_url("https://a b/"),
            Err(SpecError::Url { .. })
        ));
        assert!(matches!(
            parse_url("https://u:p@x/"),
            Err(SpecError::Url { .. })
        ));
        assert!(matches!(
            parse_url("https://x:0/"),
            Err(SpecError::Url { .. })
        ));
    }

    #[test]
    fn tcp_and_grpc_urls_are_checked() {
        let t = parse_target_url("tcp://db.example.com:5432").unwrap();
        assert_eq!(kind_of(&t), ProbeKind::Tcp);
        assert_eq!(port_of(&t), 5432);
        assert_eq!(
            kind_of(&parse_target_url("tcps://h:993/").unwrap()),
            ProbeKind::Tcp
        );
        let g = parse_target_url("grpcs://h:443/my.pkg.Svc").unwrap();
        assert_eq!(
            (kind_of(&g), grpc_service_of(&g)),
            (ProbeKind::Grpc, "my.pkg.Svc")
        );
        let whole = parse_target_url("grpc://[::1]:50051").unwrap();
        assert_eq!(grpc_service_of(&whole), "");
        assert_eq!(host_of(&whole), "::1");
        for bad in [
            "tcp://h",
            "tcp://h:0",
            "tcp://h:25/x",
            "tcp://h:25?x=1",
            "grpc://h",
            "grpc://h:1/a/b",
            "tcps://u:p@h:1",
        ] {
            assert!(
                matches!(parse_target_url(bad), Err(SpecError::Url { .. })),
                "{bad}"
            );
        }
        // The http parser, which the aggregator's URL goes through, still refuses them.
        assert!(matches!(parse_url("tcp://h:25"), Err(SpecError::Scheme(_))));
        assert_eq!(
            kind_of(&parse_target_url("https://h/x").unwrap()),
            ProbeKind::Http
        );
    }

    #[test]
    fn resolve_overrides_parse() {
        let r: ResolveOverride = "API.example.com:443:192.0.2.1".parse().unwrap();
        assert_eq!(r.host, "api.example.com");
        assert_eq!(r.port, 443);
        let r6: ResolveOverride = "h:8443:[::1]".parse().unwrap();
        assert_eq!(r6.addr, "::1".parse::<IpAddr>().unwrap());
        for bad in ["h:443", "h:x:1.2.3.4", ":443:1.2.3.4", "h:443:nope"] {
            assert!(bad.parse::<ResolveOverride>().is_err(), "{bad}");
        }
        let mut spec = ProbeSpec::get("https://api.example.com/").unwrap();
        spec.resolve.push(r);
        assert_eq!(
            spec.resolved_override("api.example.com", 443),
            Some("192.0.2.1:443".parse().unwrap())
        );
        assert_eq!(spec.resolved_override("api.example.com", 80), None);
    }
}
