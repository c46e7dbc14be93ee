#!/usr/bin/env bash
# Validate the Prometheus rules, their unit tests and the Grafana dashboard.
#
#   deploy/prometheus/check.sh          (from anywhere; needs promtool and python3)
#   PROMTOOL=/path/to/promtool deploy/prometheus/check.sh
#
# 1. promtool check rules deploy/prometheus/alerts.yaml
# 2. promtool test rules  deploy/prometheus/alerts_test.yaml
# 3. deploy/grafana/dashboard.json is valid JSON
# 4. every `expr` of the dashboard (and of the rules) names only the sidecar's metrics
#    (METRICS below; rules may also use the series they record), and the dashboard
#    shows every one of them
# 5. every dashboard `expr` parses as PromQL (promtool, Grafana variables substituted)
set -euo pipefail

cd "$(dirname "$0")/../.."

PROMTOOL=${PROMTOOL:-promtool}
if ! command -v "$PROMTOOL" >/dev/null 2>&1; then
    echo "check.sh: promtool not found; install it (Debian/Ubuntu: apt-get install prometheus) or set PROMTOOL" >&2
    exit 1
fi

RULES=deploy/prometheus/alerts.yaml
TESTS=deploy/prometheus/alerts_test.yaml
DASHBOARD=deploy/grafana/dashboard.json

# The metric contract of the sidecar. Histograms are listed by base name; their
# _bucket/_sum/_count series are allowed.
METRICS='
histogram http_server_request_duration_seconds
histogram http_client_request_duration_seconds
histogram fincode_webhook_delivery_duration_seconds
histogram fincode_webhook_ack_duration_seconds
counter   fincode_sidecar_errors_total
counter   fincode_transactions_total
counter   fincode_token_refreshes_total
counter   fincode_logins_total
gauge     fincode_login_rejected
gauge     fincode_token_expiry_timestamp_seconds
gauge     fincode_token_refresh_timestamp_seconds
counter   fincode_retries_total
counter   fincode_retry_budget_exhausted_total
gauge     fincode_circuit_breaker_state
counter   fincode_circuit_breaker_transitions_total
counter   fincode_rate_limited_total
counter   fincode_rate_limit_waits_total
histogram fincode_rate_limit_wait_seconds
counter   fincode_shed_total
counter   fincode_webhooks_received_total
counter   fincode_webhooks_rejected_total
counter   fincode_webhooks_duplicates_total
counter   fincode_webhook_deliveries_total
gauge     fincode_webhook_queue_depth
counter   fincode_audit_records_written_total
counter   fincode_audit_records_lost_total
counter   fincode_audit_write_failures_total
counter   fincode_audit_checkpoints_total
counter   fincode_audit_segments_deleted_total
gauge     fincode_audit_queue_depth
gauge     fincode_audit_available
histogram fincode_audit_write_seconds
counter   fincode_config_reloads_total
gauge     fincode_config_reload_failing
gauge     fincode_config_restart_pending_keys
counter   fincode_access_log_dropped_total
'

echo "== promtool check rules $RULES"
"$PROMTOOL" check rules "$RULES"

echo "== promtool test rules $TESTS"
"$PROMTOOL" test rules "$TESTS"

echo "== JSON $DASHBOARD"
python3 -m json.tool "$DASHBOARD" >/dev/null
echo "  valid JSON"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== metric names in expressions"
METRICS="$METRICS" python3 - "$DASHBOARD" "$RULES" "$tmp/dashboard_exprs.yaml" <<'PY'
import json
import os
import re
import sys

dashboard_path, rules_path, out_path = sys.argv[1:4]

allowed, families = set(), {}
for line in os.environ["METRICS"].split("\n"):
    if not line.strip():
        continue
    typ, name = line.split()
    names = {name}
    if typ == "histogram":
        names = {name + s for s in ("_bucket", "_sum", "_count")}
    allowed |= names
    families[name] = names

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2", "start", "end"}


def metric_names(expr):
    """Metric names a PromQL expression selects (good enough for linting, not a parser)."""
    e = re.sub(r"#[^\n]*", " ", expr)                                    # comments
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', e)  # strings
    e = re.sub(r"\$\{[^}]*\}|\$\w+", " ", e)                             # Grafana variables
    e = re.sub(r"\{[^}]*\}", " ", e)                                     # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                                    # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", e):
        if m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def walk(node, found):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                found.append(v)
            else:
                walk(v, found)
    elif isinstance(node, list):
        for v in node:
            walk(v, found)


errors = []

# --- dashboard
dash = json.load(open(dashboard_path))
if dash.get("schemaVersion") != 39:
    errors.append(f"dashboard schemaVersion is {dash.get('schemaVersion')}, want 39")
if not any(v.get("type") == "datasource" and v.get("query") == "prometheus"
           for v in dash.get("templating", {}).get("list", [])):
    errors.append("dashboard has no Prometheus datasource template variable")
ids, cells = set(), {}
for p in dash.get("panels", []):
    if p["id"] in ids:
        errors.append(f"duplicate panel id {p['id']}")
    ids.add(p["id"])
    g = p["gridPos"]
    if g["x"] + g["w"] > 24:
        errors.append(f"panel {p['id']} {p['title']!r} is wider than the grid")
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                errors.append(f"panel {p['id']} {p['title']!r} overlaps panel {cells[(x, y)]}")
                break
            cells[(x, y)] = p["id"]
        else:
            continue
        break

exprs = []
walk(dash, exprs)
used = set()
for expr in exprs:
    names = metric_names(expr)
    used |= names
    for n in sorted(names - allowed):
        errors.append(f"dashboard expr uses unknown metric {n!r}: {expr}")
for fam, names in sorted(families.items()):
    if not names & used:
        errors.append(f"no dashboard panel shows {fam}")
print(f"  dashboard: {len(exprs)} expressions, {len(used)} metric names, all known")

# Every dashboard expression as a recording rule, so that promtool parses it.
def grafana_vars(expr):
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$__interval", "1m")
    return re.sub(r"\$\{[^}]*\}|\$\w+", "x", expr)

with open(out_path, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, expr in enumerate(exprs):
        f.write(f"      - record: dashboard:expr_{i}\n        expr: {json.dumps(grafana_vars(expr))}\n")

# --- rules (needs PyYAML; promtool has already validated them)
try:
    import yaml
except ImportError:
    print("  rules: PyYAML not installed, metric names of the rules not checked")
else:
    rules = [r for g in yaml.safe_load(open(rules_path))["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    for r in rules:
        for n in sorted(metric_names(r["expr"]) - allowed - recorded):
            errors.append(f"rule {r.get('alert') or r.get('record')} uses unknown metric {n!r}")
        if "alert" in r:
            missing = [k for k in ("summary", "description", "runbook_url") if k not in r.get("annotations", {})]
            if "for" not in r or r.get("labels", {}).get("severity") not in ("page", "ticket") or missing:
                errors.append(f"alert {r['alert']}: needs for:, labels.severity page|ticket and "
                              f"annotations summary, description, runbook_url")
    print(f"  rules: {len(rules)} rules, metric names all known")

if errors:
    for e in errors:
        print("ERROR:", e, file=sys.stderr)
    sys.exit(1)
PY

echo "== PromQL of the dashboard"
"$PROMTOOL" check rules "$tmp/dashboard_exprs.yaml" | sed '/^$/d; s/^/  /'

echo "SUCCESS: rules, rule tests and dashboard are valid"
