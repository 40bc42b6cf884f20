//! nginx (the HTTPS target) and blackbox_exporter (the comparison prober), each a child process
//! with a generated configuration in the run's temporary directory.

use crate::certs::Certs;
use crate::procs::{self, ChildGuard, TempDir};
use anyhow::{bail, Context as _};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Nginx {
    pub port: u16,
    pub guard: ChildGuard,
}

/// Starts nginx answering `200 "ok\n"` over HTTPS on `port` of every address in `ips`.
pub fn start_nginx(
    exe: &Path,
    tmp: &TempDir,
    certs: &Certs,
    ips: &[String],
) -> anyhow::Result<Nginx> {
    let port = procs::free_port()?;
    let t = tmp.path().display();
    let mut conf = String::new();
    if procs::is_root() {
        conf.push_str("user root;\n");
    }
    let _ = writeln!(
        conf,
        "daemon off;\nmaster_process on;\nworker_processes 1;\nworker_rlimit_nofile 16384;\n\
         error_log {t}/error.log warn;\npid {t}/nginx.pid;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  default_type text/plain;\n\
           client_body_temp_path {t}/client_body;\n  proxy_temp_path {t}/proxy;\n\
           fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n\
           server {{"
    );
    for ip in ips {
        let _ = writeln!(conf, "    listen {ip}:{port} ssl;");
    }
    let _ = writeln!(
        conf,
        "    ssl_certificate {};\n    ssl_certificate_key {};\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_tickets off;\n\
             ssl_session_cache off;\n    keepalive_timeout 0;\n\
             location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}",
        certs.leaf_pem.display(),
        certs.leaf_key.display()
    );
    let conf_path = tmp.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(exe)
        .arg("-p")
        .arg(tmp.path())
        .arg("-e")
        .arg(tmp.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.join("nginx.stderr"))?)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut guard = ChildGuard::new("nginx", child);
    let addr: SocketAddr = format!("{}:{port}", ips[0]).parse()?;
    if let Err(e) = procs::wait_for_port(addr, Duration::from_secs(10), &mut guard) {
        bail!(
            "nginx did not start: {e}\n{}{}",
            procs::read_file_lossy(&tmp.join("nginx.stderr")),
            procs::read_file_lossy(&tmp.join("error.log"))
        );
    }
    Ok(Nginx { port, guard })
}

pub struct Blackbox {
    pub addr: SocketAddr,
    pub guard: ChildGuard,
}

pub const BLACKBOX_MODULE: &str = "https_fresh";

/// Starts blackbox_exporter with one module: HTTP prober, 5 s timeout, IPv4, trusting our CA.
pub fn start_blackbox(exe: &Path, tmp: &TempDir, certs: &Certs) -> anyhow::Result<Blackbox> {
    let port = procs::free_port()?;
    let config = format!(
        "modules:\n  {BLACKBOX_MODULE}:\n    prober: http\n    timeout: 5s\n    http:\n      \
         preferred_ip_protocol: ip4\n      tls_config:\n        ca_file: {}\n",
        certs.ca_pem.display()
    );
    let config_path = tmp.join("blackbox.yml");
    std::fs::write(&config_path, config)?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let child = Command::new(exe)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.join("blackbox.stderr"))?)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut guard = ChildGuard::new("blackbox_exporter", child);
    if let Err(e) = procs::wait_for_port(addr, Duration::from_secs(10), &mut guard) {
        bail!(
            "blackbox_exporter did not start: {e}\n{}",
            procs::read_file_lossy(&tmp.join("blackbox.stderr"))
        );
    }
    Ok(Blackbox { addr, guard })
}

/// What one `/probe` answer said.
#[derive(Debug, Clone, Default)]
pub struct BlackboxProbe {
    pub success: bool,
    /// `probe_http_duration_seconds{phase="processing"}`: connection ready to first response
    /// byte (Go's httptrace GotConn to GotFirstResponseByte).
    pub processing: Option<f64>,
    pub tls_version: Option<String>,
    pub error: Option<String>,
}

/// One blocking HTTP/1.0 GET of `/probe` (read to end of stream), parsed.
pub fn blackbox_probe(addr: SocketAddr, target: &str) -> BlackboxProbe {
    match blackbox_get(addr, target) {
        Ok(body) => parse_probe(&body),
        Err(e) => BlackboxProbe {
            error: Some(format!("{e:#}")),
            ..Default::default()
        },
    }
}

fn blackbox_get(addr: SocketAddr, target: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET /probe?module={BLACKBOX_MODULE}&target={target} HTTP/1.0\r\nHost: {addr}\r\n\r\n"
    )?;
    let mut buf = Vec::with_capacity(8192);
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("blackbox answer without header end")?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200 ") {
        bail!("blackbox answered {status:?}: {}", body.trim());
    }
    Ok(body.to_owned())
}

fn parse_probe(body: &str) -> BlackboxProbe {
    let mut p = BlackboxProbe::default();
    for line in body.lines() {
        if let Some(v) = line.strip_prefix("probe_success ") {
            p.success = v.trim() == "1";
        } else if let Some(v) =
            line.strip_prefix("probe_http_duration_seconds{phase=\"processing\"} ")
        {
            p.processing = v.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("probe_tls_version_info{version=\"") {
            p.tls_version = rest.split('"').next().map(str::to_owned);
        }
    }
    if !p.success {
        p.error = Some("probe_success 0".into());
    }
    p
}
