#!/usr/bin/env python3
"""Writes grafana/dashboards/*.json: the five vantage dashboards, built here so their panels,
variables and queries stay consistent. Edit this file, run `python3 grafana/dashboards/build.py`
and commit both; tests/grafana.rs fails when the JSON differs from what this writes. With an
argument, writes into that directory instead."""
import json, os, sys
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${datasource}"}

def ds_var():
    return {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
            "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": ""}

def q_var(name, label, query, multi=True):
    return {"type": "query", "name": name, "label": label, "datasource": DS,
            "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
            "hide": 0, "includeAll": True, "allValue": ".*", "multi": multi,
            "options": [], "refresh": 2, "regex": "", "sort": 1}

class D:
    def __init__(self, uid, title, desc, variables):
        self.uid, self.title, self.desc, self.vars = uid, title, desc, variables
        self.panels, self.next_id, self.y, self.x, self.rowh = [], 1, 0, 0, 0
        self.annotations = [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                             "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                             "type": "dashboard"}]
    def place(self, w, h):
        if self.x + w > 24:
            self.x = 0; self.y += self.rowh; self.rowh = 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w; self.rowh = max(self.rowh, h)
        return pos
    def newline(self):
        if self.x:
            self.x = 0; self.y += self.rowh; self.rowh = 0
    def panel(self, kind, title, desc, targets, unit=None, w=12, h=8, options=None, custom=None, mappings=None,
              repeat=None, extra=None):
        fc = {"defaults": {}, "overrides": []}
        if unit: fc["defaults"]["unit"] = unit
        if custom: fc["defaults"]["custom"] = custom
        if mappings: fc["defaults"]["mappings"] = mappings
        p = {"id": self.next_id, "type": kind, "title": title, "description": desc, "datasource": DS,
             "gridPos": self.place(w, h), "fieldConfig": fc, "options": options or {},
             "targets": [dict({"refId": chr(65 + i), "datasource": DS, "range": True, "instant": False}, **t)
                         for i, t in enumerate(targets)]}
        if repeat:
            p["repeat"] = repeat; p["repeatDirection"] = "h"; p["maxPerRow"] = 4
        if extra: p.update(extra)
        self.next_id += 1
        self.panels.append(p)
        return p
    def row(self, title, repeat=None):
        self.newline()
        r = {"id": self.next_id, "type": "row", "title": title, "collapsed": False, "panels": [],
             "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}}
        if repeat: r["repeat"] = repeat
        self.next_id += 1; self.y += 1
        self.panels.append(r)
    def annotation(self, name, expr, title, text, color):
        self.annotations.append({"name": name, "datasource": DS, "enable": True, "hide": False, "iconColor": color,
                                 "target": {"refId": "Anno", "expr": expr, "titleFormat": title, "textFormat": text,
                                            "step": "15s", "useValueForTime": False}})
    def write(self, fname):
        d = {"uid": self.uid, "title": self.title, "description": self.desc, "tags": ["vantage"],
             "editable": True, "graphTooltip": 1, "timezone": "utc", "refresh": "30s", "schemaVersion": 39,
             "version": 1, "time": {"from": "now-1h", "to": "now"}, "fiscalYearStartMonth": 0, "liveNow": False,
             "links": [{"title": "vantage dashboards", "type": "dashboards", "tags": ["vantage"], "asDropdown": True,
                        "icon": "external link", "includeVars": True, "keepTime": True, "targetBlank": False,
                        "tooltip": "", "url": ""}],
             "annotations": {"list": self.annotations}, "templating": {"list": self.vars}, "panels": self.panels}
        with open(os.path.join(OUT, fname), "w") as f:
            json.dump(d, f, indent=2); f.write("\n")

def t(expr, legend):
    return {"expr": expr, "legendFormat": legend}

SEL = 'service=~"$service", region=~"$region"'
PSEL = 'service=~"$service", region=~"$region", vantage=~"$vantage"'
ts = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": True}
legend = {"legend": {"displayMode": "table", "placement": "right", "showLegend": True, "calcs": ["lastNotNull"]},
          "tooltip": {"mode": "multi", "sort": "desc"}}
stl = {"mergeValues": True, "showValue": "auto", "alignValue": "center", "rowHeight": 0.9,
       "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}, "tooltip": {"mode": "single", "sort": "none"}}
def vmap(pairs):
    return [{"type": "value", "options": {str(k): {"text": txt, "color": col, "index": i}
                                          for i, (k, txt, col) in enumerate(pairs)}}]

# 1. Fleet overview
d = D("vantage-fleet", "vantage / Fleet overview",
      "Where traffic goes and why: each Region's verdict and place in service, its weight, the share of the global endpoint's answers it serves, and every transition the aggregator made (annotations).",
      [ds_var(), q_var("service", "Service", "label_values(vantage_region_in_service, service)"),
       q_var("region", "Region", 'label_values(vantage_region_in_service{service=~"$service"}, region)'),
       q_var("vantage", "Vantage", 'label_values(vantage_probe_total{service=~"$service"}, vantage)')])
# From the in-service gauge rather than vantage_region_transitions_total: a counter series is
# born at 1 with its first transition, and increase() cannot see that one.
d.annotation("Region taken out", f'(changes(vantage_region_in_service{{{SEL}}}[1m]) > 0) and (vantage_region_in_service{{{SEL}}} == 0)',
             "{{service}} {{region}} out", "{{region}} of {{service}} taken out of service", "red")
d.annotation("Region put back", f'(changes(vantage_region_in_service{{{SEL}}}[1m]) > 0) and (vantage_region_in_service{{{SEL}}} == 1)',
             "{{service}} {{region}} in", "{{region}} of {{service}} put back in service", "green")
d.panel("state-timeline", "Region verdict", "The aggregator's quorum verdict per Region at each evaluation (vantage_region_verdict): up, down, or unknown with too little data.",
        [t(f'max by (service, region) (vantage_region_verdict{{{SEL}}})', "{{service}} {{region}}")], w=24, h=7,
        options=stl, mappings=vmap([(1, "up", "green"), (0, "down", "red"), (-1, "unknown", "gray")]), custom={"fillOpacity": 80, "lineWidth": 0})
d.panel("state-timeline", "In service", "Whether the Region takes traffic (vantage_region_in_service): the decision after hysteresis, flap damping and the safety rules.",
        [t(f'max by (service, region) (vantage_region_in_service{{{SEL}}})', "{{service}} {{region}}")], w=24, h=7,
        options=stl, mappings=vmap([(1, "in", "green"), (0, "out", "red")]), custom={"fillOpacity": 80, "lineWidth": 0})
d.panel("timeseries", "Weights", "Route 53 weight per Region (vantage_region_weight, 0..255; 0 when out).",
        [t(f'max by (service, region) (vantage_region_weight{{{SEL}}})', "{{service}} {{region}}")], unit="none", options=legend, custom=ts)
d.panel("timeseries", "Traffic share", "Share of the global endpoint's answers each Region served over the window (vantage_global_traffic_share, from the x-vantage-region header).",
        [t(f'max by (service, region) (vantage_global_traffic_share{{{SEL}}})', "{{service}} {{region}}")], unit="percentunit", options=legend, custom=ts)
d.panel("timeseries", "Success ratio by Region and vantage", "Probes that succeeded over 5 minutes (recording rule service_region_vantage:vantage_probe_success:ratio_rate5m).",
        [t(f'service_region_vantage:vantage_probe_success:ratio_rate5m{{{PSEL}}}', "{{region}} from {{vantage}}")], unit="percentunit", w=24, options=legend, custom=ts)
d.write("fleet-overview.json")

# 2. Latency
L = D("vantage-latency", "vantage / Latency",
      "Probe latency as the agents measure it: a heatmap of the total phase per Region and vantage, percentiles from the recording rules, and where the time goes phase by phase.",
      [ds_var(), q_var("service", "Service", "label_values(vantage_probe_total, service)"),
       q_var("region", "Region", 'label_values(vantage_probe_total{service=~"$service"}, region)'),
       q_var("vantage", "Vantage", 'label_values(vantage_probe_total{service=~"$service"}, vantage)')])
L.panel("timeseries", "p50 / p90 / p99 (total)", "From the recording rules over the total phase histogram, per Region and vantage.",
        [t(f'service_region_vantage:vantage_probe_latency_seconds:p50_rate5m{{{PSEL}}}', "p50 {{region}} from {{vantage}}"),
         t(f'service_region_vantage:vantage_probe_latency_seconds:p90_rate5m{{{PSEL}}}', "p90 {{region}} from {{vantage}}"),
         t(f'service_region_vantage:vantage_probe_latency_seconds:p99_rate5m{{{PSEL}}}', "p99 {{region}} from {{vantage}}")],
        unit="s", w=24, options=legend, custom=ts)
L.panel("timeseries", "p50 / p99 per phase", "Phases exported as histograms (metrics.phase_histograms; total by default).",
        [t(f'histogram_quantile(0.5, sum by (phase, le) (rate(vantage_probe_phase_duration_seconds_bucket{{{PSEL}}}[$__rate_interval])))', "p50 {{phase}}"),
         t(f'histogram_quantile(0.99, sum by (phase, le) (rate(vantage_probe_phase_duration_seconds_bucket{{{PSEL}}}[$__rate_interval])))', "p99 {{phase}}")],
        unit="s", options=legend, custom=ts)
L.panel("timeseries", "Mean per phase", "Phases without a histogram: seconds spent over probes that timed the phase (vantage_probe_phase_elapsed_seconds / vantage_probe_phase_observations_total).",
        [t(f'sum by (phase) (rate(vantage_probe_phase_elapsed_seconds{{{PSEL}}}[$__rate_interval])) / sum by (phase) (rate(vantage_probe_phase_observations_total{{{PSEL}}}[$__rate_interval]))', "{{phase}}")],
        unit="s", options=legend, custom=ts)
L.panel("timeseries", "Probe outcomes", "Probes per second by outcome code (ok, connect, tls, timeout, http_status, ...).",
        [t(f'sum by (outcome) (rate(vantage_probe_total{{{PSEL}}}[$__rate_interval]))', "{{outcome}}")], unit="reqps", w=24, options=legend, custom=ts)
L.row("Heatmaps from $vantage", repeat="vantage")
L.panel("heatmap", "Total latency: $region from $vantage", "Probes per bucket of the total phase (vantage_probe_phase_duration_seconds{phase=\"total\"}).",
        [{"expr": f'sum by (le) (rate(vantage_probe_phase_duration_seconds_bucket{{phase="total", {PSEL}}}[$__rate_interval]))',
          "legendFormat": "{{le}}", "format": "heatmap"}],
        w=8, options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5, "steps": 64},
                      "tooltip": {"mode": "single", "yHistogram": True}, "legend": {"show": True}}, repeat="region")
L.write("latency.json")

# 3. Status endpoints
S = D("vantage-status", "vantage / Status endpoints",
      "Each Region's status endpoint: its dependency checks (status, latency), the answers it gives, and Aurora and DynamoDB replication lag. `service` and `region` are the scrape target's labels (grafana/prometheus/prometheus.yml); status endpoints are not probed from a vantage, so there is no vantage variable.",
      [ds_var(), q_var("service", "Service", "label_values(vantage_status_rounds_total, service)"),
       q_var("region", "Region", 'label_values(vantage_status_rounds_total{service=~"$service"}, region)')])
S.panel("state-timeline", "Dependency status", "Last status of each check (vantage_status_check_status): pass, warn, fail.",
        [t(f'max by (region, check) (vantage_status_check_status{{{SEL}}})', "{{region}} {{check}}")], w=24,
        options=stl, mappings=vmap([(0, "pass", "green"), (1, "warn", "yellow"), (2, "fail", "red")]), custom={"fillOpacity": 80, "lineWidth": 0})
S.panel("timeseries", "Check latency p50 / p99", "Duration of each dependency check (vantage_status_check_duration_seconds).",
        [t(f'histogram_quantile(0.5, sum by (region, check, le) (rate(vantage_status_check_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "p50 {{region}} {{check}}"),
         t(f'histogram_quantile(0.99, sum by (region, check, le) (rate(vantage_status_check_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "p99 {{region}} {{check}}")],
        unit="s", options=legend, custom=ts)
S.panel("timeseries", "Answers", "Answers per second by path (status, deep) and health status (vantage_status_answers_total).",
        [t(f'sum by (region, path, status) (rate(vantage_status_answers_total{{{SEL}}}[$__rate_interval]))', "{{region}} /{{path}} {{status}}")], unit="reqps", options=legend, custom=ts)
S.panel("timeseries", "Aurora replication lag", "Lag the reader check measured (vantage_status_replication_lag_seconds).",
        [t(f'max by (region, check) (vantage_status_replication_lag_seconds{{{SEL}}})', "{{region}} {{check}}")], unit="s", options=legend, custom=ts)
S.panel("timeseries", "DynamoDB replication lag", "Age of each peer Region's heartbeat item in this Region's replica (vantage_status_dynamodb_replication_lag_seconds).",
        [t(f'max by (region, table, peer) (vantage_status_dynamodb_replication_lag_seconds{{{SEL}}})', "{{table}} in {{region}} from {{peer}}")], unit="s", options=legend, custom=ts)
S.write("status-endpoints.json")

# 4. Agents
A = D("vantage-agents", "vantage / Agents",
      "The agents themselves: probes per second, missed slots, the report spool and its deliveries, CPU and memory.",
      [ds_var(), q_var("service", "Service", "label_values(vantage_probe_total, service)"),
       q_var("region", "Region", 'label_values(vantage_probe_total{service=~"$service"}, region)'),
       q_var("vantage", "Vantage", "label_values(vantage_probe_missed_slots_total, vantage)")])
# process_* carry no vantage label: joined on the instance to a series that has one.
JOIN = 'on (instance) group_left (vantage) group by (instance, vantage) (vantage_probe_missed_slots_total{vantage=~"$vantage"})'
A.panel("timeseries", "Probes per second", "Probes run by each agent (vantage_probe_total).",
        [t(f'sum by (vantage) (rate(vantage_probe_total{{{PSEL}}}[$__rate_interval]))', "{{vantage}}")], unit="reqps", options=legend, custom=ts)
A.panel("timeseries", "Missed slots", "Probe slots skipped because a probe or the scheduler ran late (vantage_probe_missed_slots_total); anything above 0 means the agent is overloaded.",
        [t(f'sum by (vantage) (increase(vantage_probe_missed_slots_total{{{PSEL}}}[$__rate_interval]))', "{{vantage}}")], unit="none", options=legend, custom=ts)
A.panel("timeseries", "Spool depth", "Reports waiting for delivery (vantage_spool_reports) per agent and replica.",
        [t('sum by (vantage, replica) (vantage_spool_reports{vantage=~"$vantage"})', "{{vantage}} {{replica}}")], unit="none", options=legend, custom=ts)
A.panel("timeseries", "Delivery results", "Report delivery attempts per second by result (vantage_report_deliveries_total).",
        [t('sum by (vantage, result) (rate(vantage_report_deliveries_total{vantage=~"$vantage"}[$__rate_interval]))', "{{vantage}} {{result}}")], unit="reqps", options=legend, custom=ts)
A.panel("timeseries", "Delivery time p99", "One delivery attempt to the aggregator (vantage_report_delivery_duration_seconds).",
        [t('histogram_quantile(0.99, sum by (vantage, le) (rate(vantage_report_delivery_duration_seconds_bucket{vantage=~"$vantage"}[$__rate_interval])))', "{{vantage}}")], unit="s", options=legend, custom=ts)
A.panel("timeseries", "CPU", "CPU time per second of each agent process (process_cpu_seconds_total).",
        [t(f'rate(process_cpu_seconds_total{{job="vantage-agent"}}[$__rate_interval]) * {JOIN}', "{{vantage}}")], unit="percentunit", options=legend, custom=ts)
A.panel("timeseries", "RSS", "Resident memory of each agent process (process_resident_memory_bytes).",
        [t(f'process_resident_memory_bytes{{job="vantage-agent"}} * {JOIN}', "{{vantage}}")], unit="bytes", options=legend, custom=ts)
A.write("agents.json")

# 5. Aggregator
G = D("vantage-aggregator", "vantage / Aggregator",
      "The aggregator: reports ingested and rejected, evaluation time, reconcile passes and their results, the weights lease, memory.",
      [ds_var(), q_var("service", "Service", "label_values(vantage_region_in_service, service)"),
       q_var("region", "Region", 'label_values(vantage_region_in_service{service=~"$service"}, region)')])
G.panel("timeseries", "Reports ingested", "Reports per second by result (vantage_aggregator_reports_total): accepted, duplicate, stale, rejected.",
        [t('sum by (instance, result) (rate(vantage_aggregator_reports_total[$__rate_interval]))', "{{instance}} {{result}}")], unit="reqps", options=legend, custom=ts)
G.panel("timeseries", "Rejections by reason", "Reports refused, by reason (vantage_aggregator_reports_total{result=\"rejected\"}).",
        [t('sum by (instance, reason) (increase(vantage_aggregator_reports_total{result="rejected"}[$__rate_interval]))', "{{instance}} {{reason}}")], unit="none", options=legend, custom=ts)
G.panel("timeseries", "Evaluation time", "One evaluation of every service (vantage_aggregator_evaluation_duration_seconds, a summary).",
        [t('max by (instance, quantile) (vantage_aggregator_evaluation_duration_seconds{quantile=~"0.5|0.99"})', "{{instance}} q{{quantile}}")], unit="s", options=legend, custom=ts)
G.panel("timeseries", "Reconcile results", "Control-plane passes per second by plane and result (vantage_reconcile_total).",
        [t('sum by (instance, backend, plane, result) (rate(vantage_reconcile_total[$__rate_interval]))', "{{instance}} {{plane}} {{result}}")], unit="ops", options=legend, custom=ts)
G.panel("state-timeline", "Lease holder", "Which replica holds the weights lease (vantage_lease_held; replicas only).",
        [t('max by (instance) (vantage_lease_held)', "{{instance}}")], options=stl, mappings=vmap([(1, "holder", "green"), (0, "standby", "gray")]), custom={"fillOpacity": 80, "lineWidth": 0})
G.panel("timeseries", "Region transitions", "Times each Region was taken out or put back (changes of vantage_region_in_service; vantage_region_transitions_total counts the same from the process start, but its series is born with the first transition, which increase() cannot see).",
        [t(f'sum by (service, region) (changes(vantage_region_in_service{{{SEL}}}[$__rate_interval]))', "{{service}} {{region}}")], unit="none", options=legend, custom=ts)
G.panel("timeseries", "Window series", "(target, vantage, interval) entries in the sliding window (vantage_aggregator_window_series).",
        [t('max by (instance) (vantage_aggregator_window_series)', "{{instance}}")], unit="none", options=legend, custom=ts)
G.panel("timeseries", "RSS", "Resident memory of each aggregator process (process_resident_memory_bytes).",
        [t('process_resident_memory_bytes{job="vantage-aggregator"}', "{{instance}}")], unit="bytes", options=legend, custom=ts)
G.write("aggregator.json")
