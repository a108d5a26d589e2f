"""Talks to the live Prometheus of deploy/cluster/test.sh through its HTTP API.

  promcheck.py rules PROMETHEUSRULE.json OUT.json
      The groups of a PrometheusRule as the API server stores it (kubectl get
      -o json) as a Prometheus rule file (JSON is YAML).
  promcheck.py alerts URL SINCE TIMEOUT_S NAME=firing[:MIN_S]|NAME=inactive ...
      Waits until each alert NAME is firing (or neither pending nor firing);
      prints, per alert, the seconds since SINCE (a Unix time: when the
      fault began or ended) and when it went pending. Exits 1 on timeout,
      or if one fired sooner than MIN_S after SINCE (a for: window not
      honoured).
  promcheck.py targets URL JOB N
      Waits until N targets of JOB are up.
  promcheck.py dashboard URL DASHBOARD.json NAMESPACE
      Runs every query of the dashboard (panels and variables) with Grafana's
      variables replaced; each must return data, or be in NO_DATA_WHEN_IDLE
      (the reason is printed). Exits 1 otherwise.

Standard library only; every request has a 5 s timeout.
"""

import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

# Queries that return nothing on a healthy bridge that has not seen the
# event they count, by metric name in the query. docs/kubernetes.md lists them.
NO_DATA_WHEN_IDLE = {
    # None at present: the bridge creates its series at zero, so every query
    # returned data in deploy/cluster/test.sh. A metric added here needs its
    # reason in docs/kubernetes.md too.
}


def get(url, path, **params):
    q = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{q}", timeout=5) as r:
        return json.loads(r.read())


def cmd_rules(src, out):
    obj = json.loads(Path(src).read_text())
    groups = obj["spec"]["groups"]
    Path(out).write_text(json.dumps({"groups": groups}, indent=1))
    n = sum(len(g["rules"]) for g in groups)
    print(f"ok   {n} rules of PrometheusRule {obj['metadata']['namespace']}/{obj['metadata']['name']} (as the API server stores it) written to {out}")


def alert_state(url, name):
    states = [a["state"] for a in get(url, "/api/v1/alerts")["data"]["alerts"] if a["labels"].get("alertname") == name]
    if "firing" in states:
        return "firing"
    return "pending" if "pending" in states else "inactive"


def cmd_alerts(url, since, timeout, wants):
    t0 = time.time()
    left = {}
    for w in wants:
        name, _, state = w.partition("=")
        state, _, min_s = state.partition(":")
        left[name] = (state, float(min_s or 0))
    pending = {}
    while left and time.time() - t0 < timeout:
        for name, (want, min_s) in list(left.items()):
            s = alert_state(url, name)
            if s == "pending" and name not in pending:
                pending[name] = time.time() - since
            if s == want:
                took = time.time() - since
                if took < min_s:
                    sys.exit(f"FAIL alert {name} {want} {took:.1f} s after the fault, before its for: window of {min_s:g} s")
                extra = f" (pending after {pending[name]:.1f} s)" if name in pending and want == "firing" else ""
                print(f"{name} {want} after {took:.1f} s{extra}")
                del left[name]
        time.sleep(0.5)
    if left:
        sys.exit(f"FAIL not within {timeout:g} s: " + ", ".join(f"{n} {w} (is {alert_state(url, n)})" for n, (w, _) in left.items()))


def cmd_targets(url, job, n, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        ts = [t for t in get(url, "/api/v1/targets")["data"]["activeTargets"] if t["labels"].get("job") == job]
        up = [t for t in ts if t["health"] == "up"]
        if len(up) >= n:
            print(f"ok   {len(up)} targets of job {job} up after {time.time() - t0:.1f} s: {', '.join(t['labels']['instance'] for t in up)}")
            return
        time.sleep(0.5)
    sys.exit(f"FAIL fewer than {n} targets of job {job} up within {timeout} s: {ts}")


def cmd_dashboard(url, dashboard, namespace):
    d = json.loads(Path(dashboard).read_text())
    subst = {"$__rate_interval": "1m", "$__range": "15m", "$__interval": "15s", "$namespace": namespace, "$pod": ".*"}
    queries = []
    for panel in d["panels"]:
        for t in panel.get("targets", []):
            queries.append((f"panel {panel['id']} {panel['title']!r} {t['refId']}", t["expr"]))
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.*), *([a-z_]+)\)", var["query"]["query"])
            queries.append((f"variable {var['name']}", m.group(1)))
    bad, idle, data = [], [], 0
    for what, expr in queries:
        for k, v in subst.items():
            expr = expr.replace(k, v)
        r = get(url, "/api/v1/query", query=expr)
        if r.get("status") != "success":
            bad.append(f"{what}: {r}")
            continue
        result = r["data"]["result"]
        if result:
            data += 1
            continue
        reasons = [reason for metric, reason in NO_DATA_WHEN_IDLE.items() if re.search(rf"\b{metric}\b", expr)]
        if reasons:
            idle.append(f"{what}: no data, documented: {reasons[0]}")
        else:
            bad.append(f"{what}: no data: {expr}")
    for line in idle:
        print(f"ok   {line}")
    if bad:
        for line in bad:
            print(f"FAIL {line}", file=sys.stderr)
        sys.exit(f"FAIL {len(bad)} of {len(queries)} dashboard queries")
    print(f"ok   {len(queries)} dashboard queries against the live Prometheus: {data} returned data, {len(idle)} no data as documented")


def main():
    a = sys.argv[1:]
    if a[:1] == ["rules"]:
        cmd_rules(a[1], a[2])
    elif a[:1] == ["alerts"]:
        cmd_alerts(a[1], float(a[2]), float(a[3]), a[4:])
    elif a[:1] == ["targets"]:
        cmd_targets(a[1], a[2], int(a[3]))
    elif a[:1] == ["dashboard"]:
        cmd_dashboard(a[1], a[2], a[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
