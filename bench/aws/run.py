#!/usr/bin/env python3
"""AWS calls per minute of a running fleet, as a new user would run it, against moto.

Real processes on loopback: three `vantage status-endpoint`s stand for three Regions, one
agent per vantage probes them every second and reports every second, and the aggregator (one,
or N replicas with --replicas N) evaluates every second and drives Route 53 and CloudWatch in
moto_server, data-plane mode. After a warm-up, moto's request recorder counts every AWS call
for the measured span; the script prints the calls per minute by service and operation, per
replica where the operation is signed for a replica's Region, beside the figure the issue
measured before the planes were split (262 calls a minute: ListResourceRecordSets 101,
ChangeResourceRecordSets 41, GetMetricData 60, PutMetricData 60), and their ratio.

    bench/aws/run.py [--binary target/release/vantage] [--replicas 1] [--seconds 120]

Needs the project's venv (moto_server, boto3): ./scripts/test.sh creates it.
"""

import argparse
import base64
import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.environ.get("VANTAGE_VENV", os.path.join(ROOT, ".venv"))
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]
BEFORE = {
    "ListResourceRecordSets": 101,
    "ChangeResourceRecordSets": 41,
    "GetMetricData": 60,
    "PutMetricData": 60,
}
KEY = "bench-aws-calls-key-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"bench: {url} did not answer within {deadline:.0f}s")


def operation(entry):
    """(service, operation, region) of one recorded request."""
    headers = {k.lower(): v for k, v in entry["headers"].items()}
    auth = headers.get("authorization", "")
    scope = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/", auth)
    region, service = (scope.group(1), scope.group(2)) if scope else ("?", "?")
    target = headers.get("x-amz-target")
    if target:
        return service, target.split(".")[-1], region
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    action = urllib.parse.parse_qs(body).get("Action")
    if action:
        return service, action[0], region
    if "smithy-protocol" in headers:
        path = urllib.parse.urlparse(entry["url"]).path
        return service, path.rsplit("/", 1)[-1], region
    method = entry["method"]
    path = urllib.parse.urlparse(entry["url"]).path
    route53 = [
        ("GET", r"/hostedzone/[^/]+/rrset/?$", "ListResourceRecordSets"),
        ("POST", r"/hostedzone/[^/]+/rrset/?$", "ChangeResourceRecordSets"),
        ("GET", r"/change/", "GetChange"),
        ("GET", r"/healthcheck/[^/]+/status$", "GetHealthCheckStatus"),
        ("GET", r"/healthcheck/[^/]+$", "GetHealthCheck"),
        ("POST", r"/healthcheck/[^/]+$", "UpdateHealthCheck"),
        ("POST", r"/healthcheck/?$", "CreateHealthCheck"),
        ("GET", r"/healthcheck/?$", "ListHealthChecks"),
        ("GET", r"/hostedzone/[^/]+$", "GetHostedZone"),
    ]
    for m, pattern, name in route53:
        if method == m and re.search(pattern, path):
            return service, name, region
    return service, f"{method} {path}", region


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "vantage"))
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--seconds", type=float, default=120.0, help="measured span")
    p.add_argument("--warmup", type=float, default=20.0)
    args = p.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"bench: no {args.binary}; build it with cargo build --release (or pass --binary)")
    moto = os.path.join(VENV, "bin", "moto_server")
    if not os.access(moto, os.X_OK):
        sys.exit(f"bench: no {moto}; ./scripts/test.sh installs moto into {VENV}")
    sys.path.insert(0, next(iter(__import__("glob").glob(os.path.join(VENV, "lib", "python3*", "site-packages")))))
    import boto3  # noqa: E402  (from the project's venv)

    work = tempfile.mkdtemp(prefix="vantage-bench-aws-")
    children = []

    def spawn(cmd, env=None, log=None):
        out = open(os.path.join(work, log), "w") if log else subprocess.DEVNULL
        child = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
        children.append(child)
        return child

    try:
        moto_port = free_port()
        aws_env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "MOTO_RECORDER_FILEPATH": os.path.join(work, "recording.jsonl"),
        }
        spawn([moto, "-H", "127.0.0.1", "-p", str(moto_port)], env=aws_env, log="moto.log")
        endpoint = f"http://127.0.0.1:{moto_port}"
        wait_http(f"{endpoint}/moto-api/")
        route53 = boto3.client(
            "route53", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )
        zone = route53.create_hosted_zone(Name="example.com", CallerReference="bench")["HostedZone"]["Id"]
        route53.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={"Changes": [
                {"Action": "CREATE", "ResourceRecordSet": {
                    "Name": "api-origin.example.com.", "Type": "CNAME", "SetIdentifier": r,
                    "Weight": 100, "TTL": 60,
                    "ResourceRecords": [{"Value": f"{r}.origin.example.net"}]}}
                for r in REGIONS]},
        )

        status_ports = {r: free_port() for r in REGIONS}
        for r, port in status_ports.items():
            spawn([args.binary, "status-endpoint", "--listen", f"127.0.0.1:{port}", "--region", r],
                  log=f"status-{r}.log")
        for port in status_ports.values():
            wait_http(f"http://127.0.0.1:{port}/status")

        agg_ports = [free_port() for _ in range(args.replicas)]
        if args.replicas == 1:
            aggregator = f'url = "http://127.0.0.1:{agg_ports[0]}"\n'
        else:
            listed = ",\n".join(
                f'  {{ id = "r{i + 1}", region = "{REGIONS[i % len(REGIONS)]}", url = "http://127.0.0.1:{port}" }}'
                for i, port in enumerate(agg_ports))
            aggregator = f"replicas = [\n{listed},\n]\n"
        fleet = f'''[fleet]
name = "bench-aws"
report_interval = "1s"
[probe]
interval = "1s"
timeout = "900ms"
[global]
url = "http://127.0.0.1:{status_ports[REGIONS[0]]}/status"
'''
        for r in REGIONS:
            fleet += f'[[regions]]\nname = "{r}"\nstatus_url = "http://127.0.0.1:{status_ports[r]}/status"\n'
        for r in REGIONS:
            fleet += f'[[vantages]]\nregion = "{r}"\nkey_id = "k-{r}"\n'
        fleet += f'[aggregator]\n{aggregator}backend = "route53"\nevaluate_every = "1s"\n'
        if args.replicas > 1:
            fleet += f'[aggregator.lease]\ntable = "vantage-lease"\nendpoint_url = "{endpoint}"\n'
        fleet += "[aggregator.keys]\n"
        for r in REGIONS:
            fleet += f'k-{r} = {{ env = "BENCH_KEY", vantages = ["{r}"] }}\n'
        fleet += '[agents.auth]\nkey_id = "k-us-east-1"\nkey_env = "BENCH_KEY"\n'
        fleet += f'[route53]\nhosted_zone_id = "{zone}"\nrecord_name = "api-origin.example.com"\nendpoint_url = "{endpoint}"\n'
        for r in REGIONS:
            fleet += f'[route53.regions.{r}]\nset_identifier = "{r}"\n'
        fleet_path = os.path.join(work, "fleet.toml")
        with open(fleet_path, "w") as f:
            f.write(fleet)

        env = {**aws_env, "BENCH_KEY": KEY}
        if args.replicas > 1:
            subprocess.run([args.binary, "aggregator", "bootstrap", "--config", fleet_path],
                           env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
        for i, port in enumerate(agg_ports):
            cmd = [args.binary, "aggregator", "--config", fleet_path, "--listen", f"127.0.0.1:{port}",
                   "--decision-log", os.path.join(work, f"decisions-{i + 1}.jsonl")]
            if args.replicas > 1:
                cmd += ["--replica", f"r{i + 1}"]
            spawn(cmd, env=env, log=f"aggregator-{i + 1}.log")
        for r in REGIONS:
            spawn([args.binary, "agent", "--config", fleet_path, "--vantage", r, "--no-spool"],
                  env=env, log=f"agent-{r}.log")

        time.sleep(args.warmup)
        urllib.request.urlopen(urllib.request.Request(
            f"{endpoint}/moto-api/recorder/reset-recording", method="POST")).read()
        urllib.request.urlopen(urllib.request.Request(
            f"{endpoint}/moto-api/recorder/start-recording", method="POST")).read()
        time.sleep(args.seconds)
        urllib.request.urlopen(urllib.request.Request(
            f"{endpoint}/moto-api/recorder/stop-recording", method="POST")).read()
        with urllib.request.urlopen(f"{endpoint}/moto-api/recorder/download-recording") as r:
            lines = [json.loads(l) for l in r.read().decode().splitlines() if l.strip()]
        # The fleet must really have been deciding: every Region judged by the vantages.
        for port in agg_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/state") as r:
                state = json.loads(r.read())
            regions = state.get("decision", {}).get("regions", [])
            verdicts = {x.get("region"): x.get("verdict") for x in regions}
            if sorted(verdicts) != sorted(REGIONS) or set(verdicts.values()) != {"up"}:
                sys.exit(f"bench: aggregator on {port} is not deciding: {verdicts}; logs in {work}")
        for child in children:
            if child.poll() is not None and child.returncode not in (0, -signal.SIGTERM):
                sys.exit(f"bench: {child.args[:2]} exited {child.returncode}; logs in {work}")
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    minutes = args.seconds / 60.0
    calls = collections.Counter(operation(e) for e in lines)
    by_op = collections.Counter()
    for (service, op, _), n in calls.items():
        by_op[(service, op)] += n
    print(f"AWS calls per minute, steady state, {len(REGIONS)} Regions, {args.replicas} aggregator(s), "
          f"1 s probes, reports and evaluations ({args.seconds:.0f} s measured after {args.warmup:.0f} s)")
    print(f"  {'service':<12}{'operation':<28}{'now':>8}{'before':>8}")
    total = 0.0
    for (service, op), n in sorted(by_op.items()):
        per_minute = n / minutes
        total += per_minute
        before = BEFORE.get(op)
        print(f"  {service:<12}{op:<28}{per_minute:>8.1f}{before if before is not None else '':>8}")
    for op, before in BEFORE.items():
        if not any(o == op for (_, o) in by_op):
            print(f"  {'':<12}{op:<28}{0.0:>8.1f}{before:>8}")
    if args.replicas > 1:
        print("  per replica Region (CloudWatch and DynamoDB calls are signed for it):")
        for (service, op, region), n in sorted(calls.items()):
            if service != "route53":
                print(f"    {region:<16}{service:<12}{op:<28}{n / minutes:>8.1f}")
    route53 = sum(n for (s, _), n in by_op.items() if s == "route53") / minutes
    before_total = sum(BEFORE.values())
    print(f"  total {total:.1f} calls/min (before: {before_total}); Route 53 {route53:.1f}/min = "
          f"{route53 / 300 * 100:.1f} % of the account's 5 requests/s")
    print(f"ratio now/before: {total / before_total:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
