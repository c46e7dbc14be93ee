#!/usr/bin/env bash
# The audit trail's cost in instructions: the same sidecar with `[audit]` off and on, each under
# `valgrind --tool=callgrind`, counts the instructions of N identical requests after a warm-up.
#
#   bash benches/audit-callgrind.sh                  # N=2000, AUDIT_REQUEST="ping get create"
#   N=5000 AUDIT_REQUEST=get bash benches/audit-callgrind.sh
#   LOG_LEVEL=info SIDES=off BIN=/path/to/fincode-sidecar bash benches/audit-callgrind.sh
#
# LOG_LEVEL sets `log.level` (default warn: no access lines; info writes one per request);
# AUTH_MODE=login runs the sidecar in login mode (the mode config.example.toml recommends:
# the upstream answers the login with a JWT-sized token) instead of static-token mode;
# SIDES runs only `off` or `on`; HAPROXY=1 also counts haproxy forwarding ping; BIN measures
# a given binary (another commit's build, to compare two builds side by side) instead of
# building this checkout.
#
# Why instructions: on this shared two-core machine CPU time per request moves with whatever else
# runs, and under saturation (benches/load.sh AUDIT_COMPARE=1) it also folds in the scheduling
# effects of two different throughputs. Callgrind counts the user-space instructions every thread
# of the process executed (the audit writer included) between zeroing the counters after the
# warm-up and dumping them after the N-th response, and the count does not depend on the load.
# It does not count kernel work (syscalls: the writer's write and fdatasync per batch, socket
# I/O), which load.sh's CPU-time measure does.
#
# The upstream is nginx over TLS serving the same responses as load.sh; the client is one
# Python keep-alive connection (requests one after another, so every request does the same
# work; FRESH=1 opens a new connection for each request instead). Prints Ir per request off
# and on, and the ratio; with KEEP=1 the callgrind files stay in the printed directory for
# `callgrind_annotate --inclusive=yes`.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-2000}"
WARM="${WARM:-300}"
AUDIT_REQUEST="${AUDIT_REQUEST:-ping get create}"
LOG_LEVEL="${LOG_LEVEL:-warn}"
SIDES="${SIDES:-off on}"
UPSTREAM_PORT=18543 OFF_PORT=18180 ON_PORT=18184 OFF_ADMIN=19190 ON_ADMIN=19192
HAPROXY_PORT=18182

# shellcheck source=benches/lib.sh
source benches/lib.sh
need_tools valgrind nginx openssl
if [[ -z "${BIN:-}" ]]; then
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/fincode-sidecar"
fi

scratch_dir

make_certs "$DIR"

start_upstream

sidecar_config "$OFF_PORT" "$OFF_ADMIN" "$LOG_LEVEL" >"$DIR/off.toml"
{
  sidecar_config "$ON_PORT" "$ON_ADMIN" "$LOG_LEVEL"
  audit_config "$DIR/audit"
} >"$DIR/on.toml"
audit_secrets
export BENCH_FINCODE_TOKEN=bench-token

# One keep-alive connection, requests one after another (with FRESH=1, a new connection for
# each request, closed after its response); exits non-zero on any non-2xx.
cat >"$DIR/client.py" <<'PY'
import http.client, os, sys
port, kind, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
fresh = os.environ.get("FRESH") == "1"
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
body = ('{"amount":125000,"currency":"NGN","reference":"PCN-ORDER-88231",'
        '"customer_code":"CUST-000931","narration":"Order 88231 checkout",'
        '"callback_url":"https://shop.example/fincode/callback","payment_methods":["CARD","BANK"]}')
for _ in range(n):
    if fresh:
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    if kind == "ping":
        conn.request("GET", "/sandbox/ping")
    elif kind == "get":
        conn.request("GET", "/transactionmanagement/transactions/TXN-20261130-0000421337")
    else:
        conn.request("POST", "/transactionmanagement/create-transaction", body=body,
                     headers={"Content-Type": "application/json",
                              "X-Idempotency-Key": "bench-order-88231-attempt-1"})
    r = conn.getresponse()
    r.read()
    if not 200 <= r.status < 300:
        sys.exit(f"status {r.status}")
PY

wait_port "https://127.0.0.1:$UPSTREAM_PORT/" "upstream nginx" 600 0.2

# Total Ir in a callgrind dump file (the "summary:" or "totals:" line).
total_ir() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

if [[ "${FRESH:-}" == 1 ]]; then
  echo "valgrind --tool=callgrind; $N requests per kind after $WARM warm-up, a new connection each"
else
  echo "valgrind --tool=callgrind; $N requests per kind after $WARM warm-up, one keep-alive connection"
fi
printf '%-7s %14s %14s %9s\n' request "off Ir/req" "on Ir/req" "on/off"
declare -A IR
for kind in $AUDIT_REQUEST; do
  IR=()
  for side in $SIDES; do
    port=$OFF_PORT admin=$OFF_ADMIN
    if [[ $side == on ]]; then port=$ON_PORT admin=$ON_ADMIN; fi
    valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.$kind.$side.%p" \
      "$BIN" run --config "$DIR/$side.toml" >"$DIR/$side.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "http://127.0.0.1:$admin/healthz" "sidecar ($side, see $DIR/$side.log)" 600 0.2
    # Logged in (AUTH_MODE=login) before the first request.
    for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" && break; sleep 0.2; done
    python3 "$DIR/client.py" "$port" "$kind" "$WARM"
    callgrind_control -z "$pid" >/dev/null
    python3 "$DIR/client.py" "$port" "$kind" "$N"
    callgrind_control -d "$kind-$side" "$pid" >/dev/null
    dump=$(ls "$DIR"/cg."$kind.$side.$pid".* | grep -v "\.$pid$" | head -1)
    IR[$side]=$(awk -v ir="$(total_ir "$dump")" -v n="$N" 'BEGIN { printf "%.0f", ir / n }')
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
  done
  ratio=-
  if [[ -n "${IR[on]:-}" && -n "${IR[off]:-}" ]]; then
    ratio=$(awk -v a="${IR[on]}" -v b="${IR[off]}" 'BEGIN { printf "%.3f", a / b }')
  fi
  printf '%-7s %14s %14s %9s\n' "$kind" "${IR[off]:--}" "${IR[on]:--}" "$ratio"
done
# HAPROXY=1: the same count for haproxy (one thread, `http-reuse always`, verifying the
# upstream's certificate as load.sh's does) forwarding ping to the same upstream, for scale.
if [[ "${HAPROXY:-}" == 1 ]]; then
  need_tools haproxy
  haproxy_config "$HAPROXY_PORT" >"$DIR/haproxy.cfg"
  valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.haproxy.%p" \
    haproxy -f "$DIR/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port "http://127.0.0.1:$HAPROXY_PORT/" "haproxy (see $DIR/haproxy.log)" 600 0.2
  python3 "$DIR/client.py" "$HAPROXY_PORT" ping "$WARM"
  callgrind_control -z "$pid" >/dev/null
  python3 "$DIR/client.py" "$HAPROXY_PORT" ping "$N"
  callgrind_control -d haproxy "$pid" >/dev/null
  dump=$(ls "$DIR"/cg.haproxy."$pid".* | grep -v "\.$pid$" | head -1)
  printf '%-7s %14s  (haproxy, ping)\n' ping "$(awk -v ir="$(total_ir "$dump")" -v n="$N" 'BEGIN { printf "%.0f", ir / n }')"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
fi
if [[ -n "${KEEP:-}" ]]; then echo "callgrind files: $DIR"; fi
