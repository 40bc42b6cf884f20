//! A real authoritative DNS server for tests: BIND 9's `named` on a loopback port chosen at run
//! time, in a temp directory of its own (configuration, zone file, journal, pid file), serving
//! one zone that accepts dynamic updates from 127.0.0.1. [`DnsServer::set`] replaces a name's
//! records with `nsupdate`, the way Route 53 changes a record set behind the global name: the
//! server's answers change at once, a resolver's cached view only when its TTL runs out.
//! `named` reads none of `/etc/bind`: the file it is given sets every path, and `controls {}`
//! turns off the rndc channel on port 953 that parallel servers would fight over.

use crate::dirs::{temp_dir, TempDir};
use crate::error::{io, Result};
use crate::process::{free_port, require, run_checked, with_log, ChildGuard};
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const NAMED: &str = "/usr/sbin/named";
pub const NSUPDATE: &str = "/usr/bin/nsupdate";
pub const DIG: &str = "/usr/bin/dig";

/// One record of the zone: owner name (absolute, with the trailing dot), TTL, type and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub name: String,
    pub ttl: u32,
    pub kind: &'static str,
    pub data: String,
}

impl DnsRecord {
    pub fn a(name: &str, ttl: u32, ip: &str) -> Self {
        Self::new(name, ttl, "A", ip)
    }

    pub fn cname(name: &str, ttl: u32, target: &str) -> Self {
        Self::new(name, ttl, "CNAME", target)
    }

    pub fn new(name: &str, ttl: u32, kind: &'static str, data: &str) -> Self {
        DnsRecord {
            name: name.to_owned(),
            ttl,
            kind,
            data: data.to_owned(),
        }
    }

    fn line(&self) -> String {
        format!("{} {} IN {} {}", self.name, self.ttl, self.kind, self.data)
    }
}

/// A running `named`, stopped when dropped.
pub struct DnsServer {
    /// UDP and TCP, on 127.0.0.1.
    pub addr: SocketAddr,
    /// The zone's origin, with the trailing dot (`example.test.`).
    pub zone: String,
    server: ChildGuard,
    nsupdate: PathBuf,
    _dir: TempDir,
}

impl DnsServer {
    /// Serves `zone` (e.g. `example.test.`) with `records` besides its SOA and NS.
    pub fn start(zone: &str, records: &[DnsRecord]) -> Result<Self> {
        let named = require(Path::new(NAMED), "BIND 9 (named; apt-get install -y bind9)")?;
        let nsupdate = require(
            Path::new(NSUPDATE),
            "nsupdate (apt-get install -y bind9-dnsutils)",
        )?;
        let dir = temp_dir("named");
        let root = dir.path();
        let zone_file = root.join("zone.db");
        let mut text = format!(
            "$ORIGIN {zone}\n$TTL 60\n@ IN SOA ns.{zone} hostmaster.{zone} 1 60 60 600 1\n\
             @ IN NS ns.{zone}\nns IN A 127.0.0.1\n"
        );
        for r in records {
            text.push_str(&r.line());
            text.push('\n');
        }
        std::fs::write(&zone_file, text).map_err(io("writing the zone file"))?;
        let log = root.join("named.log");
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let conf = root.join("named.conf");
            let d = root.display();
            std::fs::write(
                &conf,
                format!(
                    "options {{\n  directory \"{d}\";\n  pid-file \"{d}/named.pid\";\n\
                     session-keyfile \"{d}/session.key\";\n  managed-keys-directory \"{d}\";\n\
                     listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n\
                     recursion no;\n  dnssec-validation no;\n}};\ncontrols {{ }};\n\
                     zone \"{zone}\" {{\n  type primary;\n  file \"{}\";\n\
                     allow-update {{ 127.0.0.1; }};\n}};\n",
                    zone_file.display()
                ),
            )
            .map_err(io("writing named.conf"))?;
            let log_file = std::fs::File::create(&log).map_err(io("creating named.log"))?;
            let mut server = ChildGuard::spawn(
                "named",
                Command::new(&named)
                    .args(["-g", "-4", "-n", "1", "-c"])
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(log_file),
                "TERM",
            )?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let ready = server.wait_until(Duration::from_secs(20), || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    && std::fs::read_to_string(&log)
                        .is_ok_and(|l| l.contains("all zones loaded") || l.contains("running"))
            });
            match ready {
                Ok(()) => {
                    return Ok(DnsServer {
                        addr,
                        zone: zone.to_owned(),
                        server,
                        nsupdate,
                        _dir: dir,
                    })
                }
                Err(e) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    last_error = Some(with_log(e, &log));
                    if !text.contains("address in use") {
                        break;
                    }
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// Replaces every record of `name` and `kind` with `records` in one dynamic update (an
    /// empty list deletes the name's records of that type).
    pub fn set(&mut self, name: &str, kind: &str, records: &[DnsRecord]) -> Result<()> {
        self.server.check_running()?;
        let mut script = format!(
            "server {} {}\nzone {}\nupdate delete {name} {kind}\n",
            self.addr.ip(),
            self.addr.port(),
            self.zone
        );
        for r in records {
            script.push_str(&format!("update add {}\n", r.line()));
        }
        script.push_str("send\n");
        let mut child = Command::new(&self.nsupdate)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("starting nsupdate"))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())
            .map_err(io("writing nsupdate's script"))?;
        let out = child
            .wait_with_output()
            .map_err(io("waiting for nsupdate"))?;
        if !out.status.success() {
            return Err(crate::KitError::CommandFailed {
                what: "nsupdate".to_owned(),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    /// What the server itself answers now (`dig +short`), bypassing every cache.
    pub fn query(&self, name: &str, kind: &str) -> Result<Vec<String>> {
        let dig = require(Path::new(DIG), "dig (apt-get install -y bind9-dnsutils)")?;
        let out = run_checked(
            Command::new(dig).arg(format!("@{}", self.addr.ip())).args([
                "-p",
                &self.addr.port().to_string(),
                "+short",
                name,
                kind,
            ]),
            "dig",
        )?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}
