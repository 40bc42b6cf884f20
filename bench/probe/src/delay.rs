//! A loopback server that answers exactly `delay` after the request's last byte was read: a
//! thread per connection sleeps until 0.5 ms before the deadline, then spins to it (thread
//! sleeps overshoot by tens of microseconds, tokio's timers by up to a millisecond). The
//! response is prepared (and for TLS already encrypted) before the deadline, so at the deadline
//! only the write system call remains. The request is read by spinning on a non-blocking
//! socket, so its last byte is noticed as soon as it arrives.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
const SPIN: Duration = Duration::from_micros(500);

pub struct DelayServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Per response: how late the write started past its deadline and how long the write
    /// system call took (loopback delivery, which includes waking the reader), in ns.
    late_ns: Arc<Mutex<Vec<(u64, u64)>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl DelayServer {
    /// `tls`: the certificate and PKCS#8 key to serve HTTPS with; None for plain HTTP.
    pub fn start(delay: Duration, tls: Option<(&[u8], &[u8])>) -> anyhow::Result<Self> {
        let config = match tls {
            Some((cert, key)) => {
                let mut c = ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from(cert.to_vec())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
                )?;
                // Like the nginx target: no resumption, so no tickets after the handshake.
                c.send_tls13_tickets = 0;
                Some(Arc::new(c))
            }
            None => None,
        };
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let late_ns = Arc::new(Mutex::new(Vec::new()));
        let (stop2, late2) = (stop.clone(), late_ns.clone());
        let acceptor = std::thread::Builder::new()
            .name("delay-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (config, late) = (config.clone(), late2.clone());
                    let _ =
                        std::thread::Builder::new()
                            .name("delay-conn".into())
                            .spawn(move || {
                                let _ = serve(conn, delay, config, &late);
                            });
                }
            })?;
        Ok(DelayServer {
            addr,
            stop,
            late_ns,
            acceptor: Some(acceptor),
        })
    }
}

impl DelayServer {
    /// Takes the (lateness, write time) samples so far, in ns.
    pub fn take_lateness(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.late_ns.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for DelayServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Sleeps most of the way to `deadline`, then spins to it.
fn wait_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now + SPIN {
        std::thread::sleep(deadline - now - SPIN);
    }
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

fn note_late(deadline: Instant, write_started: Instant, late: &Mutex<Vec<(u64, u64)>>) {
    let wrote = write_started.elapsed().as_nanos() as u64;
    let l = write_started.saturating_duration_since(deadline).as_nanos() as u64;
    late.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((l, wrote));
}

fn has_header_end(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n")
}

/// A non-blocking socket read and written by spinning: the server sees the request's last byte
/// the moment the kernel has it, instead of one thread wake-up later (tens of microseconds on a
/// VM), so the measured error belongs to the client. Every wait is bounded by `limit`.
struct SpinIo<'a> {
    tcp: &'a TcpStream,
    limit: Instant,
}

impl SpinIo<'_> {
    fn spin<T>(
        &mut self,
        mut op: impl FnMut(&TcpStream) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        loop {
            match op(self.tcp) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= self.limit {
                        return Err(std::io::ErrorKind::TimedOut.into());
                    }
                    std::thread::yield_now();
                }
                other => return other,
            }
        }
    }
}

impl Read for SpinIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.spin(|mut t| t.read(buf))
    }
}

impl Write for SpinIo<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.spin(|mut t| t.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn serve(
    tcp: TcpStream,
    delay: Duration,
    tls: Option<Arc<ServerConfig>>,
    late: &Mutex<Vec<(u64, u64)>>,
) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    tcp.set_nonblocking(true)?;
    let mut io = SpinIo {
        tcp: &tcp,
        limit: Instant::now() + Duration::from_secs(10),
    };
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    match tls {
        None => {
            // Bounded: at most 64 KiB of request head, and 10 s.
            let last_byte_at = loop {
                let n = io.read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                let at = Instant::now();
                request.extend_from_slice(&chunk[..n]);
                if has_header_end(&request) {
                    break at;
                }
                anyhow::ensure!(request.len() < 65_536, "request head too large");
            };
            let deadline = last_byte_at + delay;
            wait_until(deadline);
            let write_started = Instant::now();
            io.write_all(RESPONSE)?;
            note_late(deadline, write_started, late);
        }
        Some(config) => {
            let mut conn = ServerConnection::new(config)?;
            let last_byte_at = loop {
                // Flush handshake records we owe the client before waiting for more.
                while conn.wants_write() {
                    conn.write_tls(&mut io)?;
                }
                let n = conn.read_tls(&mut io)?;
                if n == 0 {
                    return Ok(());
                }
                let state = conn.process_new_packets()?;
                let at = Instant::now();
                let plain = state.plaintext_bytes_to_read();
                if plain > 0 {
                    let mut take = vec![0u8; plain];
                    conn.reader().read_exact(&mut take)?;
                    request.extend_from_slice(&take);
                    if has_header_end(&request) {
                        break at;
                    }
                }
                anyhow::ensure!(request.len() < 65_536, "request head too large");
            };
            // Encrypt now; at the deadline only the socket write remains.
            while conn.wants_write() {
                conn.write_tls(&mut io)?;
            }
            conn.writer().write_all(RESPONSE)?;
            let deadline = last_byte_at + delay;
            wait_until(deadline);
            let write_started = Instant::now();
            while conn.wants_write() {
                conn.write_tls(&mut io)?;
            }
            note_late(deadline, write_started, late);
            conn.send_close_notify();
            while conn.wants_write() {
                conn.write_tls(&mut io)?;
            }
        }
    }
    // Let the client close first so it does not see a reset; blocking, bounded by a timeout.
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let _ = tcp.shutdown(Shutdown::Write);
    let _ = (&tcp).read(&mut chunk);
    Ok(())
}
