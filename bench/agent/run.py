#!/usr/bin/env python3
"""Agent benchmark: `vantage agent` with 1,000 targets at 1 s, reports and metrics on.

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
6. prints a table comparing the two, plus report bytes per target per interval.

Usage: python3 bench/agent/run.py [--secs 30] [--targets 1000] [--target-dir /work/target]
"""

import argparse
import http.server
import json
import os
import re
import signal
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
            entry = (time.monotonic(), len(body), len(targets), attempts, ok,
                     rep.get("interval_start_ms"), missed)
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


def run_agent(args, fleet, metrics_port, sink, tmp):
    env = dict(os.environ)
    env["VANTAGE_AGENT_KEY"] = "bench-agent-key-0123456789abcdef"
    env.setdefault("RUST_LOG", "warn")
    cmd = [args.vantage, "agent", "--config", fleet, "--vantage", "r-0001",
           "--metrics-listen", f"127.0.0.1:{metrics_port}", "--no-spool"]
    log("agent: " + " ".join(cmd))
    err = open(os.path.join(tmp, "agent.err"), "w")
    proc = subprocess.Popen(cmd, env=env, stdout=err, stderr=subprocess.STDOUT,
                            start_new_session=True)
    res = {"proc": proc}
    try:
        t0 = time.monotonic()
        cpu0 = proc_cpu_secs(proc.pid) or 0.0
        busy0 = machine_busy_secs()
        scraped = None
        deadline = t0 + args.secs
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                with open(os.path.join(tmp, "agent.err")) as f:
                    raise RuntimeError(f"agent exited early ({proc.returncode}):\n{f.read()[-4000:]}")
            if scraped is None and time.monotonic() - t0 >= args.secs / 2:
                res["hwm_before_scrape_kb"] = proc_status_kb(proc.pid, "VmHWM")
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
                        body = r.read()
                    scraped = (len(body), body.count(b"\n"))
                    log(f"scraped /metrics: {len(body)} bytes, {scraped[1]} lines")
                except OSError as e:
                    scraped = (0, 0)
                    log(f"scrape failed: {e}")
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        wall = time.monotonic() - t0
        res["cpu_end"] = (proc_cpu_secs(proc.pid) or 0.0) - cpu0
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--secs", type=int, default=30, help="length of each run (default 30)")
    ap.add_argument("--targets", type=int, default=1000, help="targets (default 1000)")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "/work/target"))
    ap.add_argument("--skip-probe-only", action="store_true")
    args = ap.parse_args()
    args.vantage = os.path.join(args.target_dir, "release", "vantage")
    args.bench_probe = os.path.join(args.target_dir, "release", "bench-probe")
    for exe in (args.vantage, args.bench_probe):
        if not os.access(exe, os.X_OK):
            sys.exit(f"missing {exe}: cargo build --release -p vantage -p vantage-bench-probe")

    tmp = tempfile.mkdtemp(prefix="vantage-agent-bench-")
    nginx = server = None
    sink = Sink()
    try:
        nginx, port, ca = start_nginx(args.bench_probe, args.secs + 120, tmp)
        log(f"nginx on 127.0.0.1:{port}, CA {ca}")
        server = ThreadingServer(("127.0.0.1", 0), make_handler(sink))
        sink_port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        log(f"report sink on 127.0.0.1:{sink_port}")
        fleet = os.path.join(tmp, "fleet.toml")
        write_fleet(fleet, args.targets, port, ca, sink_port)
        chk = subprocess.run([args.vantage, "check-config", fleet], capture_output=True,
                             text=True, timeout=60)
        if chk.returncode != 0:
            raise RuntimeError(f"check-config failed:\n{chk.stdout}{chk.stderr}")
        agent, t0 = run_agent(args, fleet, free_port(), sink, tmp)
    finally:
        stop(nginx, "bench-probe --serve-only")
        if server is not None:
            server.shutdown()
            server.server_close()

    reports, bad = sink.snapshot()
    with open(os.path.join(tmp, "agent.err")) as f:
        agent_log = f.read()

    probe_only_out, probe_only = None, {}
    if not args.skip_probe_only:
        rc, probe_only_out = run_probe_only(args)
        probe_only = parse_probe_only(probe_only_out)
        if rc != 0:
            log(f"bench-probe exited {rc}")

    # Figures -------------------------------------------------------------------------------
    # Reports delivered before SIGTERM cover the measured window; the one after is the flush.
    in_window = reports[:agent["reports_at_end"]]
    full = [r for r in reports if r[2] == args.targets]
    attempts_window = sum(r[3] for r in in_window)
    attempts_all = sum(r[3] for r in reports)
    ok_all = sum(r[4] for r in reports)
    sizes = [r[1] for r in full] or [r[1] for r in reports]
    per_target = [r[1] / r[2] for r in reports if r[2]]

    cpu = agent["cpu_after"]
    probes = attempts_all
    a_cpu_ms = cpu * 1000 / probes if probes else None
    a_cpu_pct = 100 * agent["cpu_end"] / agent["wall"]
    a_rss = (agent["hwm_after_kb"] or agent["hwm_kb"] or 0) / 1024
    p_cpu_ms = probe_only.get("cpu_per_probe_ms")
    if p_cpu_ms is None and probe_only.get("cpu_pct") and probe_only.get("probes"):
        p_cpu_ms = probe_only["cpu_pct"] / 100 * args.secs * 1000 / probe_only["probes"]

    print()
    print(f"vantage agent, {args.targets} targets at 1 s, report_interval 1 s, "
          f"{args.secs} s, loopback nginx (HTTPS, fresh TLS handshake per probe)")
    print()
    print("| | probes (ok) | CPU per probe | CPU, % of a core | peak RSS (VmHWM, MB = KiB/1024 as bench-probe) |")
    print("|---|---|---|---|---|")
    print(f"| agent (reports + /metrics on) | {probes} ({ok_all}) | {fmt(a_cpu_ms, '.3f')} ms "
          f"| {a_cpu_pct:.1f}% | {a_rss:.1f} MB |")
    print(f"| probe-only (bench-probe scale) | {probe_only.get('probes', 'n/a')} "
          f"({probe_only.get('ok', 'n/a')}) | {fmt(p_cpu_ms, '.3f')} ms "
          f"| {fmt(probe_only.get('cpu_pct'), '.1f')}% | {fmt(probe_only.get('rss_mb'), '.1f')} MB |")
    ratio = a_cpu_ms / p_cpu_ms if a_cpu_ms and p_cpu_ms else None
    print(f"| ratio agent / probe-only | | {fmt(ratio, '.2f')}x | | |")
    print()
    print("| reports | value |")
    print("|---|---|")
    print(f"| reports received (before SIGTERM / total) | {len(in_window)} / {len(reports)}"
          f"{f' ({bad} unparsable)' if bad else ''} |")
    print(f"| reports with all {args.targets} targets | {len(full)} |")
    if per_target:
        print(f"| bytes per target per interval (mean) | {sum(per_target) / len(per_target):.0f} |")
    if sizes:
        print(f"| bytes per {args.targets}-target report (mean / max) | "
              f"{sum(sizes) / len(sizes):,.0f} / {max(sizes):,} |")
    print(f"| attempts in reports (window / total) | {attempts_window} / {attempts_all} |")
    print(f"| missed slots in reports | {sum(r[6] for r in reports)} |")
    print()
    sc = agent.get("scrape")
    print(f"agent CPU {agent['cpu_end']:.2f} s over {agent['wall']:.1f} s before SIGTERM, "
          f"{cpu:.2f} s including the final flush ({agent['stop_secs']:.2f} s to exit, "
          f"exit code {agent['exit']}); VmHWM {fmt(agent['hwm_kb'], 'd')} kB before SIGTERM, "
          f"{fmt(agent['hwm_after_kb'], 'd')} kB at exit, "
          f"{fmt(agent.get('hwm_before_scrape_kb'), 'd')} kB just before the /metrics scrape; "
          f"/metrics scrape {sc[0] if sc else 'n/a'} bytes; other processes (nginx, sink, "
          f"anything else) used {agent['others_pct']:.0f}% of a core meanwhile "
          f"({os.cpu_count()} cores)")
    if probe_only_out is not None:
        print()
        print("bench-probe scale output (verbatim, last lines):")
        for line in probe_only_out.strip().splitlines()[-25:]:
            print("    " + line)
    warn = [l for l in agent_log.splitlines() if l.strip()]
    if warn:
        print()
        print(f"agent log ({len(warn)} lines, last 5):")
        for line in warn[-5:]:
            print("    " + line[:300])


if __name__ == "__main__":
    main()
