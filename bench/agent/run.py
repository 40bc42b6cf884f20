#!/usr/bin/env python3
"""Agent benchmark: `vantage agent` with 1,000 targets at 1 s, and with 200 services at 10 s.

One run does all of this (stdlib only):

1. starts nginx (HTTPS, test CA) via `bench-probe --serve-only`;
2. starts a report sink on 127.0.0.1:0 that answers 200 to POST /v1/reports and records each
   body's size and the number of targets (and attempts) in it;
3. writes a fleet file: report_interval 1s, probe interval 1s, ca_file = the test CA,
   1 global endpoint + 999 Regions = 1,000 targets, one vantage, aggregator = the sink;
4. runs `vantage agent --metrics-listen ... --no-spool` for --secs seconds, scrapes /metrics
   mid-run, reads its CPU (utime+stime) and VmHWM from /proc before SIGTERM (and again after the
   last report is flushed, just before it exits, when possible);
5. runs the probe-only figure: `bench-probe --skip-cpu --skip-accuracy --scale-targets 1000
   --scale-interval-secs 1 --scale-secs SECS`;
6. prints a table comparing the two, plus report bytes per target per interval;
7. with --services N (default 200; 0 skips it): starts BIND 9 (`named`) on 127.0.0.1 serving
   one A record per service, writes a [[services]] fleet file (N services x --service-regions
   Regions, each Region with a status and a deep URL on the same nginx, each service's global
   URL and its DNS target asking that `named`; report_interval and probe interval 10s: with 3
   Regions, 8 targets per service, 1,600 in all), runs the agent for --services-secs and prints
   its missed slots and peak RSS beside the single-service run's, with the goals (0 missed
   slots, VmHWM <= 128 MB) and PASS/MISS. Without `named` the run stops with an install hint;
   --no-dns drops the DNS targets instead (and says so in the table).

8. with --exporters (instead of the above): starts moto_server on loopback (or a minimal fake
   endpoint with --fake-aws) and runs two agents at --targets side by side, exporters off and
   on, for --rounds rounds ([export.cloudwatch] mode "api" and [export.xray] PutTraceSegments at
   --xray-sample-rate, both pointed at that endpoint), and prints CPU per probe of each run, the
   median on/off ratio against the goal (< +5 %), and the exporters' counters.

Usage: python3 bench/agent/run.py [--secs 30] [--targets 1000] [--services 200]
                                  [--services-secs 65] [--target-dir /work/target]
       python3 bench/agent/run.py --exporters [--fake-aws] [--rounds 3] [--secs 30]
                                  [--xray-sample-rate 0.05]
"""

import argparse
import http.server
import json
import os
import re
import signal
import statistics
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[run.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_secs(pid):
    """utime+stime of pid in seconds, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # Fields after the command name (which may contain spaces) start at ')'.
    rest = data[data.rindex(")") + 2:].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / CLK_TCK


def proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------
# Report sink


class Sink:
    def __init__(self):
        self.lock = threading.Lock()
        self.reports = []  # (monotonic arrival, body bytes, targets, attempts, ok, interval_start_ms)
        self.bad = 0

    def record(self, body):
        try:
            rep = json.loads(body)
            targets = rep.get("targets", [])
            attempts = sum(int(t.get("attempts", 0)) for t in targets)
            ok = sum(int(t.get("outcomes", {}).get("ok", 0)) for t in targets)
            missed = sum(int(t.get("missed_slots", 0)) for t in targets)
            # DNS targets: attempts, answers mapped to a Region, answers mapped to none.
            dns = [t for t in targets if t.get("kind") == "dns"]
            dns_attempts = sum(int(t.get("attempts", 0)) for t in dns)
            dns_matched = sum(sum(int(n) for n in (t.get("dns") or {}).get("regions", {}).values())
                              for t in dns)
            dns_unmatched = sum(int((t.get("dns") or {}).get("unmatched", 0)) for t in dns)
            entry = (time.monotonic(), len(body), len(targets), attempts, ok,
                     rep.get("interval_start_ms"), missed, len(dns), dns_attempts, dns_matched,
                     dns_unmatched)
        except (ValueError, AttributeError, TypeError):
            with self.lock:
                self.bad += 1
            return
        with self.lock:
            self.reports.append(entry)

    def snapshot(self):
        with self.lock:
            return list(self.reports), self.bad


def make_handler(sink):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.split("?")[0] == "/v1/reports":
                sink.record(body)
                out, code = b"{}", 200
            else:
                out, code = b"not found", 404
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    return Handler


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


# ---------------------------------------------------------------------------------------------


def start_nginx(bench_probe, hold_secs, tmp):
    """Start `bench-probe --serve-only`; return (proc, port, ca_path)."""
    out_path = os.path.join(tmp, "serve.out")
    out = open(out_path, "w")
    proc = subprocess.Popen(
        [bench_probe, "--serve-only", str(hold_secs), "--wait-quiet", "0"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    port = ca = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (port is None or ca is None):
        if proc.poll() is not None:
            break
        time.sleep(0.2)
        with open(out_path) as f:
            text = f.read()
        m = re.search(r"^nginx\s+https://127\.0\.0\.1:(\d+)/", text, re.M)
        if m:
            port = int(m.group(1))
        m = re.search(r"^CA\s+(\S+)", text, re.M)
        if m:
            ca = m.group(1)
    if port is None or ca is None:
        with open(out_path) as f:
            raise RuntimeError(f"bench-probe --serve-only did not come up:\n{f.read()}")
    return proc, port, ca


def write_fleet(path, n_targets, nginx_port, ca, sink_port):
    lines = [
        "[fleet]",
        'name = "agent-bench"',
        'report_interval = "1s"',
        "",
        "[probe]",
        'interval = "1s"',
        'timeout = "1s"',
        f'ca_file = "{ca}"',
        "",
        "[global]",
        f'url = "https://127.0.0.1:{nginx_port}/t/0"',
        "",
    ]
    for i in range(1, n_targets):
        lines += [
            "[[regions]]",
            f'name = "r-{i:04d}"',
            f'status_url = "https://127.0.0.1:{nginx_port}/t/{i}"',
            "",
        ]
    lines += [
        "[[vantages]]",
        'region = "r-0001"',
        "",
        "[aggregator]",
        f'url = "http://127.0.0.1:{sink_port}"',
        "",
        "[agents.auth]",
        'key_id = "bench"',
        'key_env = "VANTAGE_AGENT_KEY"',
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def stop(proc, name, timeout=10):
    """SIGTERM the process group, wait, then SIGKILL. Bounded."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop in {timeout}s; SIGKILL")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def run_agent(args, fleet, metrics_port, sink, tmp, vantage="r-0001", secs=None,
              log_name="agent.err", extra_env=None, on_start=None):
    secs = secs or args.secs
    env = dict(os.environ)
    env.update(extra_env or {})
    env["VANTAGE_AGENT_KEY"] = "bench-agent-key-0123456789abcdef"
    env.setdefault("RUST_LOG", "warn")
    cmd = [args.vantage, "agent", "--config", fleet, "--vantage", vantage,
           "--metrics-listen", f"127.0.0.1:{metrics_port}", "--no-spool"]
    log("agent: " + " ".join(cmd))
    err_path = os.path.join(tmp, log_name)
    err = open(err_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=err, stderr=subprocess.STDOUT,
                            start_new_session=True)
    if on_start is not None:
        on_start(proc)
    res = {"proc": proc}
    try:
        t0 = time.monotonic()
        cpu0 = proc_cpu_secs(proc.pid) or 0.0
        busy0 = machine_busy_secs()
        scraped = None
        deadline = t0 + secs
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                with open(err_path) as f:
                    raise RuntimeError(f"agent exited early ({proc.returncode}):\n{f.read()[-4000:]}")
            if scraped is None and time.monotonic() - t0 >= secs / 2:
                res["hwm_before_scrape_kb"] = proc_status_kb(proc.pid, "VmHWM")
                try:
                    url = f"http://127.0.0.1:{metrics_port}/metrics"
                    with urllib.request.urlopen(url, timeout=10) as r:
                        body = r.read()
                    # As Prometheus scrapes: it always sends Accept-Encoding: gzip.
                    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
                    with urllib.request.urlopen(req, timeout=10) as r:
                        wire = r.read()
                        encoding = r.headers.get("Content-Encoding", "")
                    if encoding != "gzip":
                        log(f"the gzip scrape came back with Content-Encoding {encoding!r}")
                    scraped = (len(body), body.count(b"\n"), len(wire) if encoding == "gzip" else 0)
                    log(f"scraped /metrics: {len(body)} bytes, {scraped[1]} lines; "
                        f"{scraped[2]} bytes gzip")
                except OSError as e:
                    scraped = (0, 0, 0)
                    log(f"scrape failed: {e}")
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        wall = time.monotonic() - t0
        res["cpu_end"] = (proc_cpu_secs(proc.pid) or 0.0) - cpu0
        if extra_env is not None:
            # The exporters' counters, read before the scrape's own CPU is counted below.
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
                    res["metrics_text"] = r.read().decode()
            except OSError as e:
                res["metrics_text"] = ""
                log(f"final scrape failed: {e}")
            cpu0 += (proc_cpu_secs(proc.pid) or 0.0) - cpu0 - res["cpu_end"]
        res["others_pct"] = 100 * (machine_busy_secs() - busy0 - res["cpu_end"]) / wall
        res["wall"] = wall
        res["hwm_kb"] = proc_status_kb(proc.pid, "VmHWM")
        res["rss_kb"] = proc_status_kb(proc.pid, "VmRSS")
        res["scrape"] = scraped
        reports_at_end, _ = sink.snapshot()
        res["reports_at_end"] = len(reports_at_end)
        # SIGTERM: finish the interval, report it, flush, exit. Poll /proc until it is gone to
        # catch the last CPU and VmHWM reading.
        os.kill(proc.pid, signal.SIGTERM)
        last_cpu, last_hwm = res["cpu_end"] + cpu0, res["hwm_kb"]
        stop_deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < stop_deadline:
            c = proc_cpu_secs(proc.pid)
            h = proc_status_kb(proc.pid, "VmHWM")
            if c is not None:
                last_cpu = c
            if h is not None:
                last_hwm = h
            time.sleep(0.02)
        res["cpu_after"] = last_cpu - cpu0
        res["hwm_after_kb"] = last_hwm
        res["stop_secs"] = time.monotonic() - t0 - wall
        if proc.poll() is None:
            log("agent still running 15 s after SIGTERM")
        res["exit"] = proc.poll()
    finally:
        stop(proc, "agent")
    return res, t0


def run_probe_only(args):
    cmd = [args.bench_probe, "--skip-cpu", "--skip-accuracy",
           "--scale-targets", str(args.targets), "--scale-interval-secs", "1",
           "--scale-secs", str(args.secs), "--wait-quiet", "1"]
    log("probe-only: " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=args.secs + 180)
    except subprocess.TimeoutExpired:
        stop(proc, "bench-probe")
        raise RuntimeError("bench-probe scale run timed out")
    finally:
        stop(proc, "bench-probe")
    return proc.returncode, out


def parse_probe_only(out):
    """Figures from bench-probe's scale lines."""
    fig = {}
    m = re.search(r"probes ([\d,]+) \(expected[^)]*\), ok ([\d,]+)", out)
    if m:
        fig["probes"] = int(m.group(1).replace(",", ""))
        fig["ok"] = int(m.group(2).replace(",", ""))
    m = re.search(r"CPU ([\d.]+)% of one core \(([\d.]+) ms per probe\)", out)
    if m:
        fig["cpu_pct"], fig["cpu_per_probe_ms"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"peak RSS ([\d.]+) MB", out)
    if m:
        fig["rss_mb"] = float(m.group(1))
    return fig


def machine_busy_secs():
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / CLK_TCK


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


# ---------------------------------------------------------------------------------------------
# The [[services]] run: BIND 9 for the DNS targets, the fleet file, the figures.

NAMED = "/usr/sbin/named"
DNS_ZONE = "bench.test"
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1", "us-west-2", "eu-central-1",
           "ap-northeast-1"]
RSS_GOAL_MB = 128


def region_name(i):
    return REGIONS[i] if i < len(REGIONS) else f"region-{i}"


def service_name(i):
    return f"svc-{i:03d}"


def region_answer(r):
    """The A record that means Region r in a service's DNS answer."""
    return f"10.0.{r}.1"


def start_named(tmp, services, regions):
    """BIND 9 on 127.0.0.1, authoritative for bench.test: svc-NNN A the answer of Region
    NNN % regions. Returns (proc, port). Reads none of /etc/bind (every path is given)."""
    if not os.access(NAMED, os.X_OK):
        raise RuntimeError(f"{NAMED} not found: apt-get install -y bind9 (or pass --no-dns)")
    root = os.path.join(tmp, "named")
    os.makedirs(root)
    zone_file = os.path.join(root, "zone.db")
    lines = [f"$ORIGIN {DNS_ZONE}.", "$TTL 60",
             f"@ IN SOA ns.{DNS_ZONE}. hostmaster.{DNS_ZONE}. 1 60 60 600 1",
             f"@ IN NS ns.{DNS_ZONE}.", "ns IN A 127.0.0.1"]
    lines += [f"{service_name(s)} IN A {region_answer(s % regions)}" for s in range(services)]
    with open(zone_file, "w") as f:
        f.write("\n".join(lines) + "\n")
    log_path = os.path.join(root, "named.log")
    for _ in range(5):
        port = free_port()
        conf = os.path.join(root, "named.conf")
        with open(conf, "w") as f:
            f.write(
                f'options {{\n  directory "{root}";\n  pid-file "{root}/named.pid";\n'
                f'  session-keyfile "{root}/session.key";\n  managed-keys-directory "{root}";\n'
                f"  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n"
                f"  recursion no;\n  dnssec-validation no;\n}};\ncontrols {{ }};\n"
                f'zone "{DNS_ZONE}." {{\n  type primary;\n  file "{zone_file}";\n}};\n')
        logf = open(log_path, "w")
        proc = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-c", conf],
                                stdout=subprocess.DEVNULL, stderr=logf, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            with open(log_path) as f:
                text = f.read()
            if "running" in text or "all zones loaded" in text:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    return proc, port
                except OSError:
                    pass
            time.sleep(0.1)
        stop(proc, "named")
        with open(log_path) as f:
            text = f.read()
        if "address in use" not in text:
            raise RuntimeError(f"named did not come up:\n{text[-3000:]}")
    raise RuntimeError("named: no free port after 5 attempts")


def write_services_fleet(path, services, regions, nginx_port, ca, sink_port, dns_port):
    """N [[services]], each: global URL, `regions` Regions with status and deep URLs (every
    URL a distinct path on the loopback nginx), and (with dns_port) a DNS target asking the
    local named for svc-NNN.bench.test."""
    lines = [
        "[fleet]",
        'name = "agent-bench-services"',
        'report_interval = "10s"',
        "",
        "[probe]",
        'interval = "10s"',
        'timeout = "5s"',
        f'ca_file = "{ca}"',
        "",
    ]
    n = 0

    def url():
        nonlocal n
        n += 1
        return f"https://127.0.0.1:{nginx_port}/t/{n}"

    for s in range(services):
        svc = service_name(s)
        lines += ["[[services]]", f'name = "{svc}"', f'global = {{ url = "{url()}" }}']
        if dns_port:
            lines.append(f'dns = {{ name = "{svc}.{DNS_ZONE}", '
                         f'resolvers = ["127.0.0.1:{dns_port}"] }}')
        lines.append("")
        for r in range(regions):
            lines += [
                "[[services.regions]]",
                f'name = "{region_name(r)}"',
                f'status_url = "{url()}"',
                f'deep_url = "{url()}"',
            ]
            if dns_port:
                lines.append(f'dns_answers = ["{region_answer(r)}"]')
            lines.append("")
    lines += [
        "[[vantages]]",
        f'region = "{region_name(0)}"',
        "",
        "[aggregator]",
        f'url = "http://127.0.0.1:{sink_port}"',
        "",
        "[agents.auth]",
        'key_id = "bench"',
        'key_env = "VANTAGE_AGENT_KEY"',
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def figures(reports, n_targets, agent):
    """What the tables print, from the sink's reports and the agent's /proc readings."""
    in_window = reports[:agent["reports_at_end"]]
    full = [r for r in reports if r[2] == n_targets]
    sizes = [r[1] for r in full] or [r[1] for r in reports]
    per_target = [r[1] / r[2] for r in reports if r[2]]
    probes = sum(r[3] for r in reports)
    return {
        "in_window": len(in_window),
        "total": len(reports),
        "full": len(full),
        "attempts_window": sum(r[3] for r in in_window),
        "probes": probes,
        "ok": sum(r[4] for r in reports),
        "missed": sum(r[6] for r in reports),
        "dns_targets": max((r[7] for r in reports), default=0),
        "dns_attempts": sum(r[8] for r in reports),
        "dns_matched": sum(r[9] for r in reports),
        "dns_unmatched": sum(r[10] for r in reports),
        "hwm_before_scrape_mb": (agent.get("hwm_before_scrape_kb") or 0) / 1024,
        "per_target": sum(per_target) / len(per_target) if per_target else None,
        "size_mean": sum(sizes) / len(sizes) if sizes else None,
        "size_max": max(sizes) if sizes else None,
        "cpu_ms": agent["cpu_after"] * 1000 / probes if probes else None,
        "cpu_pct": 100 * agent["cpu_end"] / agent["wall"],
        "rss_mb": (agent["hwm_after_kb"] or agent["hwm_kb"] or 0) / 1024,
    }


def agent_line(agent):
    sc = agent.get("scrape")
    return (f"agent CPU {agent['cpu_end']:.2f} s over {agent['wall']:.1f} s before SIGTERM, "
            f"{agent['cpu_after']:.2f} s including the final flush ({agent['stop_secs']:.2f} s "
            f"to exit, exit code {agent['exit']}); VmHWM {fmt(agent['hwm_kb'], 'd')} kB before "
            f"SIGTERM, {fmt(agent['hwm_after_kb'], 'd')} kB at exit, "
            f"{fmt(agent.get('hwm_before_scrape_kb'), 'd')} kB just before the /metrics scrape; "
            f"/metrics scrape {sc[0] if sc else 'n/a'} bytes; other processes (nginx, sink, "
            f"anything else) used {agent['others_pct']:.0f}% of a core meanwhile "
            f"({os.cpu_count()} cores)")


def print_log_tail(path, what):
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    if lines:
        print()
        print(f"{what} ({len(lines)} lines, last 5):")
        for line in lines[-5:]:
            print("    " + line[:300])


def verdict(ok):
    return "PASS" if ok else "MISS"


def start_moto(tmp):
    """moto_server on 127.0.0.1:PORT from $VANTAGE_VENV (default: the workspace's .venv)."""
    venv = os.environ.get("VANTAGE_VENV") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", ".venv")
    exe = os.path.join(venv, "bin", "moto_server")
    if not os.access(exe, os.X_OK):
        sys.exit(f"missing {exe}: python3 -m venv .venv && .venv/bin/pip install 'moto[server]'")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2).read()
            return proc, port
        except OSError:
            time.sleep(0.3)
    stop(proc, "moto_server")
    sys.exit("moto_server did not answer within 60 s")


class FakeAws(http.server.BaseHTTPRequestHandler):
    """Answers PutMetricData (query protocol: XML) and PutTraceSegments (REST-JSON) at once,
    counting requests and body bytes: the agent's own export cost without moto's (it stores
    every sample of a Values/Counts datum one by one and cannot keep up with 1,000 targets)."""
    protocol_version = "HTTP/1.1"
    requests = 0
    body_bytes = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        FakeAws.requests += 1
        FakeAws.body_bytes += n
        if self.path.startswith("/TraceSegments"):
            body, ctype = b'{"UnprocessedTraceSegments":[]}', "application/json"
        elif "json" in (self.headers.get("content-type") or ""):
            body, ctype = b"{}", "application/x-amz-json-1.0"
        else:
            body = (b'<PutMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">'
                    b"<ResponseMetadata><RequestId>bench</RequestId></ResponseMetadata>"
                    b"</PutMetricDataResponse>")
            ctype = "text/xml"
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def export_counters(text):
    """{(name, exporter): value} of the vantage_export_* counters in a scrape."""
    out = {}
    for m in re.finditer(r'^(vantage_export_\w+)\{[^}]*exporter="(\w+)"[^}]*\}\s+(\S+)$',
                         text or "", re.M):
        out[(m.group(1), m.group(2))] = out.get((m.group(1), m.group(2)), 0) + float(m.group(3))
    return out


# Frames that only the exporters run in the agent: its own export module (the X-Ray tracer's
# per-probe sampling included) and the AWS SDK, which nothing else in the agent uses.
EXPORTER_FRAMES = re.compile(r"vantage_agent::export::|aws_sdk_cloudwatch|aws_sdk_xray|aws_smithy_")
# The first matching frame names where a sample's time went, most specific first.
EXPORTER_PARTS = [
    ("FastGzip (PutMetricData body compression)", "FastGzip"),
    ("PutMetricData serialisation", "aws_sdk_cloudwatch::protocol_serde"),
    ("X-Ray segment documents", "vantage_agent::export::xray::Tracer::record"),
    ("X-Ray sampling", "vantage_agent::export::xray::Tracer::sample"),
    ("CloudWatch data from histograms", "vantage_agent::export::datum"),
    ("interval merge", "vantage_agent::export::Exporters::interval"),
    ("other SDK work (signing, HTTP, retries)", "aws_smithy_|aws_sdk_"),
    ("other export code", "vantage_agent::export::"),
]


def start_perf(pid, out):
    """perf record with DWARF call graphs on `pid` until it exits; (process, output path)."""
    perf = subprocess.Popen(["perf", "record", "-q", "-F", "299", "--call-graph", "dwarf,16384",
                             "-p", str(pid), "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return perf, out


def exporter_share(data):
    """(samples, samples with an exporter frame, [(part, samples)]) of a perf.data file."""
    try:
        text = subprocess.run(["perf", "script", "--no-inline", "-i", data, "-F", "ip,sym"], capture_output=True,
                              text=True, timeout=600).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"perf script failed: {e}")
        return None
    total, hits, parts = 0, 0, {}
    for sample in text.split("\n\n"):
        if not sample.strip():
            continue
        total += 1
        if not EXPORTER_FRAMES.search(sample):
            continue
        hits += 1
        for name, pattern in EXPORTER_PARTS:
            if re.search(pattern, sample):
                parts[name] = parts.get(name, 0) + 1
                break
    return total, hits, sorted(parts.items(), key=lambda kv: -kv[1])


def run_exporters(args, port, ca, serve, check, tmp):
    """The agent at --targets targets twice, exporters off then on (CloudWatch API and X-Ray
    PutTraceSegments at --xray-sample-rate, both on moto): CPU per probe and the ratio."""
    fake = None
    if args.fake_aws:
        moto = None
        fake = ThreadingServer(("127.0.0.1", 0), FakeAws)
        threading.Thread(target=fake.serve_forever, daemon=True).start()
        moto_port = fake.server_address[1]
        log(f"fake CloudWatch/X-Ray on 127.0.0.1:{moto_port}")
    else:
        moto, moto_port = start_moto(tmp)
        log(f"moto on 127.0.0.1:{moto_port}")
    aws_env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_EC2_METADATA_DISABLED": "true"}
    runs = {"off": [], "on": []}
    profiles = []
    # Each round runs both agents at once, side by side against the same nginx: whatever else
    # loads the machine loads both alike, so their ratio holds where two runs one after the
    # other on a shared machine differ by +-10 %.
    try:
        for r in range(args.rounds):
            results, errors = {}, []

            def one(mode, r=r, results=results, errors=errors):
                try:
                    sink = Sink()
                    fleet = os.path.join(tmp, f"fleet-export-{mode}-{r}.toml")
                    write_fleet(fleet, args.targets, port, ca, serve(sink))
                    if mode == "on":
                        with open(fleet, "a") as f:
                            f.write("\n".join([
                                "", "[export.cloudwatch]", "enabled = true", 'mode = "api"',
                                'namespace = "VantageBench"', 'region = "us-east-1"',
                                f'endpoint_url = "http://127.0.0.1:{moto_port}"', "",
                                "[export.xray]", "enabled = true",
                                f"sample_rate = {args.xray_sample_rate}", 'region = "us-east-1"',
                                f'endpoint_url = "http://127.0.0.1:{moto_port}"', ""]))
                    check(fleet)
                    profile = None
                    if args.profile and mode == "on" and r == 0:
                        profile = os.path.join(tmp, "perf-exporters.data")
                    agent, _ = run_agent(args, fleet, free_port(), sink, tmp,
                                         log_name=f"agent-export-{mode}-{r}.err",
                                         extra_env=aws_env,
                                         on_start=(lambda p, out=profile: profiles.append(
                                             start_perf(p.pid, out))) if profile else None)
                    results[mode] = (figures(sink.snapshot()[0], args.targets, agent), agent)
                except Exception as e:  # re-raised below, in the main thread
                    errors.append(e)

            threads = [threading.Thread(target=one, args=(mode,)) for mode in ("off", "on")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            for mode in ("off", "on"):
                runs[mode].append(results[mode])
    finally:
        stop(moto, "moto_server")
        if fake is not None:
            fake.shutdown()
            fake.server_close()
    counters = export_counters(runs["on"][-1][1].get("metrics_text"))
    share = None
    for perf, out in profiles:
        try:
            perf.wait(timeout=60)
        except subprocess.TimeoutExpired:
            perf.kill()
        share = exporter_share(out)
    print()
    print(f"exporter overhead: two vantage agents side by side ({args.rounds} rounds), "
          f"{args.targets} targets each at 1 s, report_interval 1 s, "
          f"{args.secs} s each, CloudWatch (API) + X-Ray (PutTraceSegments, sample rate "
          f"{args.xray_sample_rate}) on "
          f"{'a fake AWS endpoint' if args.fake_aws else 'moto'} over loopback")
    print()
    print("| round | exporters | probes (ok) | CPU per probe | CPU, % of a core |")
    print("|---|---|---|---|---|")
    for r in range(args.rounds):
        for name in ("off", "on"):
            f = runs[name][r][0]
            print(f"| {r + 1} | {name} | {f['probes']} ({f['ok']}) | {fmt(f['cpu_ms'], '.4f')} ms "
                  f"| {f['cpu_pct']:.1f}% |")
    ratios = [on[0]["cpu_ms"] / off[0]["cpu_ms"] for off, on in zip(runs["off"], runs["on"])
              if on[0]["cpu_ms"] and off[0]["cpu_ms"]]
    print()
    if ratios:
        ratio = statistics.median(ratios)
        print(f"CPU per probe, on / off, per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
              f"median {ratio:.3f} ({100 * (ratio - 1):+.1f}%); goal < +5%: {verdict(ratio < 1.05)}")
    if share is not None:
        total, hits, by_frame = share
        print(f"perf (round 1's exporting agent, its whole life, DWARF call graphs): {hits} of "
              f"{total} CPU samples ({100 * hits / max(total, 1):.1f}%) have an exporter frame "
              f"on the stack; goal < 5%: {verdict(total > 0 and hits / total < 0.05)}")
        for frame, n in by_frame:
            print(f"    {100 * n / max(total, 1):5.1f}%  {frame}")
    for exporter in ("cloudwatch", "xray"):
        got = {n.replace("vantage_export_", ""): int(v) for (n, e), v in counters.items()
               if e == exporter}
        print(f"{exporter}: {got or 'no counters scraped'}")
    if fake is not None:
        print(f"fake endpoint: {FakeAws.requests} requests, {FakeAws.body_bytes} body bytes")
    for mode in ("off", "on"):
        for _, agent in runs[mode]:
            print(f"{mode}: " + agent_line(agent))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--secs", type=int, default=30,
                    help="length of the single-service run and of bench-probe's (default 30)")
    ap.add_argument("--targets", type=int, default=1000,
                    help="targets of the single-service run (default 1000)")
    ap.add_argument("--services", type=int, default=200,
                    help="services of the [[services]] run (default 200; 0 skips it)")
    ap.add_argument("--service-regions", type=int, default=3,
                    help="Regions per service (default 3)")
    ap.add_argument("--services-secs", type=int, default=65,
                    help="length of the [[services]] run (default 65: six 10 s intervals)")
    ap.add_argument("--no-dns", action="store_true",
                    help="no DNS targets in the [[services]] run (only when named cannot run)")
    ap.add_argument("--skip-single", action="store_true",
                    help="skip the single-service run (and bench-probe's)")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "/work/target"))
    ap.add_argument("--skip-probe-only", action="store_true")
    ap.add_argument("--exporters", action="store_true",
                    help="only the exporter overhead: exporters off vs on (CloudWatch + X-Ray on moto)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="--exporters: rounds of an off and an on agent side by side; the median "
                         "ratio counts (default 3)")
    ap.add_argument("--profile", action="store_true",
                    help="--exporters: also perf-record the first exporting agent (linux-perf) and "
                         "print the share of its CPU samples spent in exporter code")
    ap.add_argument("--fake-aws", action="store_true",
                    help="--exporters against a minimal fake CloudWatch/X-Ray endpoint instead of moto")
    ap.add_argument("--xray-sample-rate", type=float, default=0.05,
                    help="X-Ray sample rate of --exporters (default 0.05, the agent's default)")
    args = ap.parse_args()
    args.vantage = os.path.join(args.target_dir, "release", "vantage")
    args.bench_probe = os.path.join(args.target_dir, "release", "bench-probe")
    for exe in (args.vantage, args.bench_probe):
        if not os.access(exe, os.X_OK):
            sys.exit(f"missing {exe}: cargo build --release -p vantage -p vantage-bench-probe")
    if args.skip_single and not args.services:
        sys.exit("nothing to run: --skip-single with --services 0")

    tmp = tempfile.mkdtemp(prefix="vantage-agent-bench-")
    nginx = named = None
    servers = []
    sink, svc_sink = Sink(), Sink()
    agent = svc = None
    per_service = 0
    try:
        hold = (0 if args.skip_single else args.secs) + \
            (args.services_secs if args.services else 0) + \
            (args.rounds * (args.secs + 15) if args.exporters else 0) + 180
        nginx, port, ca = start_nginx(args.bench_probe, hold, tmp)
        log(f"nginx on 127.0.0.1:{port}, CA {ca}")

        def serve(s):
            server = ThreadingServer(("127.0.0.1", 0), make_handler(s))
            servers.append(server)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            return server.server_address[1]

        def check(fleet):
            chk = subprocess.run([args.vantage, "check-config", fleet], capture_output=True,
                                 text=True, timeout=60)
            if chk.returncode != 0:
                raise RuntimeError(f"check-config failed:\n{chk.stdout}{chk.stderr}")

        if args.exporters:
            run_exporters(args, port, ca, serve, check, tmp)
            return
        if not args.skip_single:
            sink_port = serve(sink)
            log(f"report sink on 127.0.0.1:{sink_port}")
            fleet = os.path.join(tmp, "fleet.toml")
            write_fleet(fleet, args.targets, port, ca, sink_port)
            check(fleet)
            agent, _ = run_agent(args, fleet, free_port(), sink, tmp)
        if args.services:
            dns_port = None
            if not args.no_dns:
                named, dns_port = start_named(tmp, args.services, args.service_regions)
                log(f"named on 127.0.0.1:{dns_port}")
            per_service = 1 + 2 * args.service_regions + (0 if args.no_dns else 1)
            sink_port = serve(svc_sink)
            fleet = os.path.join(tmp, "fleet-services.toml")
            write_services_fleet(fleet, args.services, args.service_regions, port, ca,
                                 sink_port, dns_port)
            check(fleet)
            svc, _ = run_agent(args, fleet, free_port(), svc_sink, tmp,
                               vantage=region_name(0), secs=args.services_secs,
                               log_name="agent-services.err")
    finally:
        stop(nginx, "bench-probe --serve-only")
        stop(named, "named")
        for server in servers:
            server.shutdown()
            server.server_close()

    single = services = None
    if agent is not None:
        single = print_single(args, agent, sink, tmp)
    if svc is not None:
        services = print_services(args, svc, svc_sink, per_service, tmp)
    if single and services:
        print_side_by_side(args, single, services, per_service)


def print_single(args, agent, sink, tmp):
    reports, bad = sink.snapshot()
    probe_only_out, probe_only = None, {}
    if not args.skip_probe_only:
        rc, probe_only_out = run_probe_only(args)
        probe_only = parse_probe_only(probe_only_out)
        if rc != 0:
            log(f"bench-probe exited {rc}")

    # Reports delivered before SIGTERM cover the measured window; the one after is the flush.
    f = figures(reports, args.targets, agent)
    p_cpu_ms = probe_only.get("cpu_per_probe_ms")
    if p_cpu_ms is None and probe_only.get("cpu_pct") and probe_only.get("probes"):
        p_cpu_ms = probe_only["cpu_pct"] / 100 * args.secs * 1000 / probe_only["probes"]

    print()
    print(f"vantage agent, {args.targets} targets at 1 s, report_interval 1 s, "
          f"{args.secs} s, loopback nginx (HTTPS, fresh TLS handshake per probe)")
    print()
    print("| | probes (ok) | CPU per probe | CPU, % of a core | peak RSS (VmHWM, MB = KiB/1024 as bench-probe) |")
    print("|---|---|---|---|---|")
    print(f"| agent (reports + /metrics on) | {f['probes']} ({f['ok']}) | {fmt(f['cpu_ms'], '.3f')} ms "
          f"| {f['cpu_pct']:.1f}% | {f['rss_mb']:.1f} MB |")
    print(f"| probe-only (bench-probe scale) | {probe_only.get('probes', 'n/a')} "
          f"({probe_only.get('ok', 'n/a')}) | {fmt(p_cpu_ms, '.3f')} ms "
          f"| {fmt(probe_only.get('cpu_pct'), '.1f')}% | {fmt(probe_only.get('rss_mb'), '.1f')} MB |")
    ratio = f["cpu_ms"] / p_cpu_ms if f["cpu_ms"] and p_cpu_ms else None
    print(f"| ratio agent / probe-only | | {fmt(ratio, '.2f')}x | | |")
    print()
    print_scrape(agent.get("scrape"), args.targets)
    print()
    print_reports(f, args.targets, bad)
    print()
    print(agent_line(agent))
    if probe_only_out is not None:
        print()
        print("bench-probe scale output (verbatim, last lines):")
        for line in probe_only_out.strip().splitlines()[-25:]:
            print("    " + line)
    print_log_tail(os.path.join(tmp, "agent.err"), "agent log")
    return f


# The mid-run /metrics scrape at 1,000 targets before metrics.phase_histograms (every target x
# phase x 20 buckets, every outcome registered at zero), and the issue's goal.
SCRAPE_BEFORE_BYTES = 15_900_000
SCRAPE_GOAL_BYTES = 1_500_000


def print_scrape(scraped, n_targets):
    size, lines, wire = scraped if scraped else (0, 0, 0)
    print(f"| /metrics scrape, {n_targets} targets | now (default metrics.phase_histograms) "
          f"| before (every phase a histogram) | goal |")
    print("|---|---|---|---|")
    goal = verdict(0 < size <= SCRAPE_GOAL_BYTES) if n_targets == 1000 else "n/a"
    print(f"| bytes (uncompressed) | {size / 1e6:.2f} MB ({lines} lines) "
          f"| {SCRAPE_BEFORE_BYTES / 1e6:.1f} MB | <= {SCRAPE_GOAL_BYTES / 1e6:.1f} MB: {goal} |")
    goal = verdict(0 < wire <= SCRAPE_GOAL_BYTES) if n_targets == 1000 else "n/a"
    print(f"| bytes on the wire (gzip, as Prometheus asks) | {wire / 1e6:.3f} MB "
          f"| (was served uncompressed) | <= {SCRAPE_GOAL_BYTES / 1e6:.1f} MB: {goal} |")


def print_reports(f, n_targets, bad):
    print("| reports | value |")
    print("|---|---|")
    print(f"| reports received (before SIGTERM / total) | {f['in_window']} / {f['total']}"
          f"{f' ({bad} unparsable)' if bad else ''} |")
    print(f"| reports with all {n_targets} targets | {f['full']} |")
    if f["per_target"] is not None:
        print(f"| bytes per target per interval (mean) | {f['per_target']:.0f} |")
    if f["size_mean"] is not None:
        print(f"| bytes per {n_targets}-target report (mean / max) | "
              f"{f['size_mean']:,.0f} / {f['size_max']:,} |")
    print(f"| attempts in reports (window / total) | {f['attempts_window']} / {f['probes']} |")
    print(f"| missed slots in reports | {f['missed']} |")
    if f["dns_targets"]:
        print(f"| DNS targets per report; attempts, answers mapped to a Region / to none | "
              f"{f['dns_targets']}; {f['dns_attempts']}, {f['dns_matched']} / "
              f"{f['dns_unmatched']} |")


def print_services(args, agent, sink, per_service, tmp):
    reports, bad = sink.snapshot()
    n_targets = args.services * per_service
    f = figures(reports, n_targets, agent)
    kinds = "global + status + deep" + ("" if args.no_dns else " + dns")
    print()
    print(f"vantage agent, {args.services} services x {args.service_regions} Regions "
          f"({kinds} = {n_targets} targets) at 10 s, report_interval 10 s, "
          f"{args.services_secs} s, loopback nginx"
          + ("" if args.no_dns else " and BIND 9 (named) for the DNS targets")
          + (" -- DNS targets SKIPPED (--no-dns)" if args.no_dns else ""))
    print()
    print(f"| | probes (ok) | CPU per probe | CPU, % of a core | peak RSS (VmHWM; goal <= "
          f"{RSS_GOAL_MB} MB) | missed slots (goal 0) |")
    print("|---|---|---|---|---|---|")
    print(f"| agent (reports + /metrics on) | {f['probes']} ({f['ok']}) | "
          f"{fmt(f['cpu_ms'], '.3f')} ms | {f['cpu_pct']:.1f}% | {f['rss_mb']:.1f} MB: "
          f"{verdict(f['rss_mb'] <= RSS_GOAL_MB)} | {f['missed']}: {verdict(f['missed'] == 0)} |")
    print()
    print_reports(f, n_targets, bad)
    print()
    print(agent_line(agent))
    print_log_tail(os.path.join(tmp, "agent-services.err"), "agent log")
    return f


def print_side_by_side(args, single, services, per_service):
    n = args.services * per_service
    print()
    print("| | single service | services | goal (services) |")
    print("|---|---|---|---|")
    print(f"| fleet | {args.targets} targets (global + status) at 1 s, reports every 1 s "
          f"| {args.services} services x {args.service_regions} Regions, {n} targets at 10 s, "
          f"reports every 10 s | |")
    print(f"| run | {args.secs} s | {args.services_secs} s | |")
    print(f"| probes (ok) | {single['probes']} ({single['ok']}) "
          f"| {services['probes']} ({services['ok']}) | |")
    print(f"| reports with every target / received | {single['full']} / {single['total']} "
          f"| {services['full']} / {services['total']} | |")
    print(f"| missed slots | {single['missed']} | {services['missed']} "
          f"| 0: {verdict(services['missed'] == 0)} |")
    print(f"| peak RSS (VmHWM, MB = KiB/1024) | {single['rss_mb']:.1f} MB "
          f"| {services['rss_mb']:.1f} MB | <= {RSS_GOAL_MB} MB: "
          f"{verdict(services['rss_mb'] <= RSS_GOAL_MB)} |")
    print(f"| VmHWM just before the mid-run /metrics scrape | "
          f"{single['hwm_before_scrape_mb']:.1f} MB | {services['hwm_before_scrape_mb']:.1f} MB "
          f"| |")
    print(f"| CPU, % of a core | {single['cpu_pct']:.1f}% | {services['cpu_pct']:.1f}% | |")
    print(f"| CPU per probe | {fmt(single['cpu_ms'], '.3f')} ms "
          f"| {fmt(services['cpu_ms'], '.3f')} ms | |")
    print(f"| bytes per report (mean) | {fmt(single['size_mean'], ',.0f')} "
          f"| {fmt(services['size_mean'], ',.0f')} | |")


if __name__ == "__main__":
    main()
