#!/usr/bin/env bash
# Load benchmark: the sidecar against nginx and haproxy, configured alike, in one run.
#
# A TLS upstream (nginx serving a fixed FinCode-shaped JSON over HTTPS) sits behind three
# proxies that take plain HTTP from the client and keep a pool of TLS keep-alive
# connections to the upstream: fincode-sidecar, nginx and haproxy. wrk loads each in turn
# (and the upstream directly) with the same settings, and the script prints requests/s,
# p50/p99 latency, peak RSS, CPU per request (utime + stime of the proxy's process over the
# measured run, from /proc/<pid>/stat, divided by the requests served: steady on a noisy
# machine where requests/s is not), and the sidecar/nginx and sidecar/haproxy ratios. The
# sidecar runs four ways: at log.level "warn" (no access log); at "info" (one JSON access
# line per request, written to /dev/null); "full", every feature on (the access log, the
# audit trail with fsync per batch, metrics, traces sampled at 1 % to a local OTLP sink);
# and "full-1t", the same with one tokio worker thread (TOKIO_WORKER_THREADS=1), to compare
# on equal terms with the one-worker nginx and one-thread haproxy.
# Then two more measurements:
# - fixed rate: p50/p99 at RATE requests/s (default 2000, well below any proxy's
#   saturation) over 32 keep-alive connections, with `examples/loadgen.rs` (an open-loop
#   client: latency counts from when a request was due, as wrk2 does, unless its
#   connection was idle then: the client's own 1 ms timer tick is not the proxy's), for
#   full, full-1t, nginx and haproxy taking turns over FIXED_ROUNDS rounds (medians);
# - new connection per request: wrk with `Connection: close`, direct to the upstream over a
#   fresh TLS handshake each time, and through the full sidecar (a fresh plain TCP
#   connection; the sidecar keeps its TLS pool), haproxy and the warn sidecar, in turns over
#   the same FIXED_ROUNDS rounds (medians).
# Everything binds 127.0.0.1 only and is stopped on exit.
#
#   bash benches/load.sh                 # DURATION=10s CONNECTIONS=32 by default
#   BASELINE_BIN=/path/to/old/fincode-sidecar bash benches/load.sh
#                                        # also an older build, side by side in the same run
#   AUDIT_COMPARE=1 bash benches/load.sh # instead: the audit trail's cost, see below
#
# AUDIT_COMPARE=1 runs two sidecars with the same config, one with `[audit]` on (a trail in
# the temp dir, fsync = "batch" or AUDIT_FSYNC, keys from BENCH_AUDIT_SIGNING_KEY and BENCH_REDACT_HASH_KEY,
# random when unset), and loads them in alternating order (off,on / on,off / ...) for ROUNDS
# rounds (3 by default) to cancel drift. For each run it prints requests/s, p99 and the
# sidecar's CPU per request: utime+stime of its process (/proc/<pid>/stat, all threads,
# the audit writer included) over the measured wrk run, divided by the requests wrk
# completed; its user-space part (utime) beside it, and the `audit-writer` thread's own CPU
# per request in the "on" process. Then the median on/off ratio, and whether the "on" trail verifies (after a
# graceful stop) with a record per request served. nginx-as-proxy and haproxy do not run.
# AUDIT_REQUEST picks the request, one or several in turn (default "ping"):
#   ping    GET /sandbox/ping, a fixed 34-byte JSON: no ids for the audit layer to find;
#   get     GET /transactionmanagement/transactions/{id}: a path id, and a 533-byte
#           transaction JSON whose id, reference and customer code become pseudonyms;
#   create  POST /transactionmanagement/create-transaction with a JSON body and an
#           X-Idempotency-Key (both read for ids), answered with the same transaction JSON.
# AUDIT_BASE picks the config both sidecars share: "full" (the default; DESIGN.md section 7's
# measure, every feature on: log.level info with an access line per request, traces sampled
# at 1 % to a local OTLP sink, metrics) or "warn" (no access log, no traces). Both write
# their logs to a file in the temp dir (the "on" one's keeps the checkpoint lines).
# AUDIT_RATE=N loads both sidecars at N requests/s with examples/loadgen.rs (open loop)
# instead of saturating them with wrk: the same requests at the same pace on both sides, so
# the ratio is the audit's own work, without the extra wake-ups a slower, saturated side
# pays per request. p99 is then loadgen's (see examples/loadgen.rs for what it counts).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
UPSTREAM_PORT=18443 SIDECAR_PORT=18080 NGINX_PORT=18081 HAPROXY_PORT=18082 ADMIN_PORT=19090
BASELINE_PORT=18083 BASELINE_ADMIN_PORT=19091
INFO_PORT=18085 INFO_ADMIN_PORT=19093
FULL_PORT=18086 FULL_ADMIN_PORT=19094 FULL1_PORT=18087 FULL1_ADMIN_PORT=19095 OTLP_PORT=18318
RATE="${RATE:-2000}"
BASELINE_BIN="${BASELINE_BIN:-}"
AUDIT_COMPARE="${AUDIT_COMPARE:-}"
AUDIT_PORT=18084 AUDIT_ADMIN_PORT=19092
ROUNDS="${ROUNDS:-3}"
AUDIT_REQUEST="${AUDIT_REQUEST:-ping}"
AUDIT_RATE="${AUDIT_RATE:-}"
AUDIT_BASE="${AUDIT_BASE:-full}"
if [[ -n "$AUDIT_COMPARE" ]]; then
  case $AUDIT_BASE in full | warn) ;; *)
    echo "error: AUDIT_BASE: unknown base config $AUDIT_BASE (full or warn)" >&2
    exit 2
    ;;
  esac
  for mix in $AUDIT_REQUEST; do
    case $mix in ping | get | create) ;; *)
      echo "error: AUDIT_REQUEST: unknown request $mix (ping, get or create)" >&2
      exit 2
      ;;
    esac
  done
fi

# shellcheck source=benches/lib.sh
source benches/lib.sh
need_tools wrk nginx haproxy openssl
cargo build --release --quiet --bin fincode-sidecar --example loadgen
LOADGEN="$PWD/target/release/examples/loadgen"
BIN="$PWD/target/release/fincode-sidecar"

scratch_dir

# --- certificates: a CA and a leaf for 127.0.0.1 ---------------------------------------
make_certs "$DIR"

nginx_common() {
  cat <<CONF
daemon off;
worker_processes 1;
pid $DIR/$1.pid;
error_log $DIR/$1.err warn;
events { worker_connections 4096; }
CONF
}
temp_paths() {
  cat <<CONF
    access_log off;
    client_body_temp_path $DIR/$1-body; proxy_temp_path $DIR/$1-proxy;
    fastcgi_temp_path $DIR/$1-fcgi; uwsgi_temp_path $DIR/$1-uwsgi; scgi_temp_path $DIR/$1-scgi;
    keepalive_requests 1000000;
CONF
}

# --- the TLS upstream (HTTP/1.1 only, so every proxy uses the same protocol) ----------
{
  nginx_common upstream
  echo "http {"
  temp_paths upstream
  upstream_server "$UPSTREAM_PORT"
  cat <<CONF
    # The OTLP/HTTP sink of the full sidecar's traces: accepts every export.
    server {
        listen 127.0.0.1:$OTLP_PORT;
        location / { return 200; }
    }
}
CONF
} >"$DIR/upstream.conf"
nginx -p "$DIR" -c "$DIR/upstream.conf" & PIDS+=($!)

# --- nginx as a proxy -------------------------------------------------------------------
{
  nginx_common proxy
  echo "http {"
  temp_paths proxy
  cat <<CONF
    upstream fincode { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass https://fincode;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_trusted_certificate $DIR/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name 127.0.0.1;
            proxy_ssl_session_reuse on;
        }
    }
}
CONF
} >"$DIR/proxy.conf"
if [[ -z "$AUDIT_COMPARE" ]]; then
  nginx -p "$DIR" -c "$DIR/proxy.conf" & PIDS+=($!)
  NGINX_PROXY_PID=$!
fi

# --- haproxy ----------------------------------------------------------------------------
haproxy_config "$HAPROXY_PORT" >"$DIR/haproxy.cfg"
if [[ -z "$AUDIT_COMPARE" ]]; then
  haproxy -f "$DIR/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!)
  HAPROXY_PID=$!
fi

# --- the sidecar (static-token mode: credential injection on, as in production) --------
# The traces section of "every feature on": 1 % of requests sampled, exported to the sink.
traces_config() {
  cat <<CONF
[traces]
otlp_endpoint = "http://127.0.0.1:$OTLP_PORT/v1/traces"
sample_ratio = 0.01
CONF
}
# AUDIT_COMPARE's two sidecars share one base config (AUDIT_BASE): "full", DESIGN.md
# section 7's measure of CPU per request (every feature on, the access log included: info,
# traces at 1 %), or "warn" (no access log, no traces: the proxy's bare cost, against which
# the audit's share is largest).
audit_base_config() { # PORT ADMIN_PORT
  case $AUDIT_BASE in
    full) sidecar_config "$1" "$2" info; traces_config ;;
    warn) sidecar_config "$1" "$2" warn ;;
  esac
}
if [[ -n "$AUDIT_COMPARE" ]]; then
  audit_base_config "$SIDECAR_PORT" "$ADMIN_PORT" >"$DIR/sidecar.toml"
else
  sidecar_config "$SIDECAR_PORT" "$ADMIN_PORT" >"$DIR/sidecar.toml"
fi
BENCH_FINCODE_TOKEN=bench-token "$BIN" run --config "$DIR/sidecar.toml" >"$DIR/sidecar.log" 2>&1 &
PIDS+=($!)
SIDECAR_PID=$!

# --- the same sidecar at log.level = "info": one JSON access line per request ----------------
if [[ -z "$AUDIT_COMPARE" ]]; then
  sidecar_config "$INFO_PORT" "$INFO_ADMIN_PORT" info >"$DIR/sidecar-info.toml"
  BENCH_FINCODE_TOKEN=bench-token "$BIN" run --config "$DIR/sidecar-info.toml" >/dev/null 2>"$DIR/sidecar-info.err" &
  PIDS+=($!)
  INFO_PID=$!
fi

# --- every feature on: the access log, the audit trail, metrics, traces at 1 % ---------------
# Once with the default worker threads (one per core) and once with one worker thread.
if [[ -z "$AUDIT_COMPARE" ]]; then
  audit_secrets
  full_config() { # PORT ADMIN_PORT NAME
    sidecar_config "$1" "$2" info
    audit_config "$DIR/audit-$3"
    traces_config
  }
  full_config "$FULL_PORT" "$FULL_ADMIN_PORT" full >"$DIR/full.toml"
  full_config "$FULL1_PORT" "$FULL1_ADMIN_PORT" full-1t >"$DIR/full-1t.toml"
  BENCH_FINCODE_TOKEN=bench-token "$BIN" run --config "$DIR/full.toml" >/dev/null 2>"$DIR/full.err" &
  PIDS+=($!)
  FULL_PID=$!
  TOKIO_WORKER_THREADS=1 BENCH_FINCODE_TOKEN=bench-token "$BIN" run --config "$DIR/full-1t.toml" \
    >/dev/null 2>"$DIR/full-1t.err" &
  PIDS+=($!)
  FULL1_PID=$!
fi

# --- optionally, an older build of the sidecar with the same config ------------------------
if [[ -n "$BASELINE_BIN" ]]; then
  sidecar_config "$BASELINE_PORT" "$BASELINE_ADMIN_PORT" >"$DIR/baseline.toml"
  BENCH_FINCODE_TOKEN=bench-token "$BASELINE_BIN" run --config "$DIR/baseline.toml" \
    >"$DIR/baseline.log" 2>&1 &
  PIDS+=($!)
  BASELINE_PID=$!
fi

# --- AUDIT_COMPARE: the same sidecar with the audit trail on, on other ports ----------------
if [[ -n "$AUDIT_COMPARE" ]]; then
  audit_secrets
  {
    audit_base_config "$AUDIT_PORT" "$AUDIT_ADMIN_PORT"
    audit_config "$DIR/audit" "${AUDIT_FSYNC:-batch}"
  } >"$DIR/audit.toml"
  # Its log keeps the checkpoint lines that `audit verify --checkpoints` checks against.
  BENCH_FINCODE_TOKEN=bench-token "$BIN" run --config "$DIR/audit.toml" >"$DIR/audit-sidecar.log" 2>&1 &
  PIDS+=($!)
  AUDIT_PID=$!
fi

wait_port "https://127.0.0.1:$UPSTREAM_PORT/" "upstream nginx"
if [[ -z "$AUDIT_COMPARE" ]]; then
  wait_port "http://127.0.0.1:$NGINX_PORT/" "nginx proxy"
  wait_port "http://127.0.0.1:$HAPROXY_PORT/" "haproxy"
  wait_port "http://127.0.0.1:$INFO_PORT/sandbox/ping" "fincode-sidecar at info (see $DIR/sidecar-info.err)"
  wait_port "http://127.0.0.1:$FULL_PORT/sandbox/ping" "fincode-sidecar, every feature on (see $DIR/full.err)"
  wait_port "http://127.0.0.1:$FULL1_PORT/sandbox/ping" "fincode-sidecar, one worker (see $DIR/full-1t.err)"
fi
wait_port "http://127.0.0.1:$SIDECAR_PORT/sandbox/ping" "fincode-sidecar (see $DIR/sidecar.log)"
if [[ -n "$BASELINE_BIN" ]]; then
  wait_port "http://127.0.0.1:$BASELINE_PORT/sandbox/ping" "baseline sidecar (see $DIR/baseline.log)"
fi
if [[ -n "$AUDIT_COMPARE" ]]; then
  wait_port "http://127.0.0.1:$AUDIT_PORT/sandbox/ping" "audit sidecar (see $DIR/audit-sidecar.log)"
fi

# ms from wrk's "1.23ms" / "456.00us" / "1.02s"
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "nan" }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

CLK_TCK=$(getconf CLK_TCK)
# CPU time the process has used (utime + stime, every thread, live and exited), in ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# The user-space part of it (utime), to tell the proxy's own work from the kernel's.
user_ticks() { awk '{ sub(/^.*\) /, ""); print $12 }' "/proc/$1/stat"; }
# CPU time (utime + stime, in ticks) of process $1's threads named $2 (`audit-writer`).
thread_ticks() {
  local task total=0
  for task in /proc/"$1"/task/*; do
    if [[ $(cat "$task/comm" 2>/dev/null) == "$2" ]]; then
      total=$((total + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$task/stat")))
    fi
  done
  echo "$total"
}

declare -A RPS P50 P99 CPU_US USER_PCT
# run NAME URL [PID]: a warm-up, then the measured wrk run; with PID, that process's CPU
# (utime + stime over the measured run) per request served, in µs.
run() {
  local name=$1 url=$2 pid=${3:-} before=0 after=0 user_before=0 user_after=0 out
  wrk -t1 -c"$CONNECTIONS" -d2s "$url" >/dev/null # warm-up: fill the pools
  [[ -n "$pid" ]] && before=$(cpu_ticks "$pid") user_before=$(user_ticks "$pid")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
  [[ -n "$pid" ]] && after=$(cpu_ticks "$pid") user_after=$(user_ticks "$pid")
  if echo "$out" | grep -q "Non-2xx"; then
    echo "error: $name answered non-2xx:" >&2; echo "$out" >&2; exit 1
  fi
  RPS[$name]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  P50[$name]=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  P99[$name]=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  CPU_US[$name]="-" USER_PCT[$name]="-"
  if [[ -n "$pid" ]]; then
    CPU_US[$name]=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" \
      -v n="$(echo "$out" | awk '/requests in/ {print $1}')" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    USER_PCT[$name]=$(awk -v u=$((user_after - user_before)) -v t=$((after - before)) \
      'BEGIN { if (t > 0) printf "%.0f", 100 * u / t; else print "-" }')
  fi
}

# --- AUDIT_COMPARE: CPU per request with the audit trail off and on -----------------------
if [[ -n "$AUDIT_COMPARE" ]]; then
  median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
  cat >"$DIR/create.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Idempotency-Key"] = "bench-order-88231-attempt-1"
wrk.body = '{"amount":125000,"currency":"NGN","reference":"PCN-ORDER-88231",'
  .. '"customer_code":"CUST-000931","narration":"Order 88231 checkout",'
  .. '"callback_url":"https://shop.example/fincode/callback","payment_methods":["CARD","BANK"]}'
LUA
  # The same create request for loadgen (AUDIT_RATE): its body, its headers.
  printf '%s' '{"amount":125000,"currency":"NGN","reference":"PCN-ORDER-88231",''"customer_code":"CUST-000931","narration":"Order 88231 checkout",''"callback_url":"https://shop.example/fincode/callback","payment_methods":["CARD","BANK"]}' \
    >"$DIR/create.json"
  # The path and extra wrk (and loadgen) arguments of one request kind (see AUDIT_REQUEST above).
  request() {
    case $1 in
      ping) REQ_PATH=/sandbox/ping REQ_ARGS=() GEN_ARGS=() ;;
      get) REQ_PATH=/transactionmanagement/transactions/TXN-20261130-0000421337 REQ_ARGS=() GEN_ARGS=() ;;
      create)
        REQ_PATH=/transactionmanagement/create-transaction REQ_ARGS=(-s "$DIR/create.lua")
        GEN_ARGS=(--body-file "$DIR/create.json" --header "Content-Type: application/json"
          --header "X-Idempotency-Key: bench-order-88231-attempt-1")
        ;;
    esac
  }
  ANSWERED=0 ON_RUNS=0 # responses wrk got from the "on" sidecar, and its wrk runs (warm-ups too)
  # Warm-up, then the measured run with the process's CPU read before and after.
  measure() {
    local side=$1 pid=$2 url=$3 warm out before after user_before user_after writer_before writer_after
    if [[ -n "$AUDIT_RATE" ]]; then
      measure_rate "$@"
      return
    fi
    warm=$(wrk -t1 -c"$CONNECTIONS" -d2s "${REQ_ARGS[@]}" "$url")
    before=$(cpu_ticks "$pid") user_before=$(user_ticks "$pid") writer_before=$(thread_ticks "$pid" audit-writer)
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${REQ_ARGS[@]}" "$url")
    after=$(cpu_ticks "$pid") user_after=$(user_ticks "$pid") writer_after=$(thread_ticks "$pid" audit-writer)
    if echo "$warm$out" | grep -q "Non-2xx"; then
      echo "error: the sidecar with audit $side answered non-2xx:" >&2; echo "$out" >&2; exit 1
    fi
    M_REQS=$(echo "$out" | awk '/requests in/ {print $1}')
    M_RPS=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    M_P99=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    M_CPU_US=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$M_REQS" \
      'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    M_USER_US=$(awk -v t=$((user_after - user_before)) -v hz="$CLK_TCK" -v n="$M_REQS" \
      'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    M_WRITER_US=$(awk -v t=$((writer_after - writer_before)) -v hz="$CLK_TCK" -v n="$M_REQS" \
      'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    if [[ $side == on ]]; then
      ANSWERED=$((ANSWERED + M_REQS + $(echo "$warm" | awk '/requests in/ {print $1}')))
      ON_RUNS=$((ON_RUNS + 2))
    fi
  }
  # measure at AUDIT_RATE requests/s with examples/loadgen.rs (open loop, CONNECTIONS
  # keep-alive connections): both sidecars serve the same requests at the same pace, so
  # the CPU per request compares the work itself, not two throughputs (at saturation the
  # slower side also pays more wake-ups per request, which widens the gap it measures).
  measure_rate() {
    local side=$1 pid=$2 url=$3 warm out before after user_before user_after writer_before writer_after
    warm=$("$LOADGEN" --url "$url" --rate "$AUDIT_RATE" --duration 2s --warmup 0s \
      --connections "$CONNECTIONS" "${GEN_ARGS[@]}") || {
      echo "error: loadgen against the sidecar with audit $side failed: $warm" >&2; exit 1; }
    before=$(cpu_ticks "$pid") user_before=$(user_ticks "$pid") writer_before=$(thread_ticks "$pid" audit-writer)
    out=$("$LOADGEN" --url "$url" --rate "$AUDIT_RATE" --duration "$DURATION" --warmup 0s \
      --connections "$CONNECTIONS" "${GEN_ARGS[@]}") || {
      echo "error: loadgen against the sidecar with audit $side failed: $out" >&2; exit 1; }
    after=$(cpu_ticks "$pid") user_after=$(user_ticks "$pid") writer_after=$(thread_ticks "$pid" audit-writer)
    M_REQS=$(echo "$out" | awk '{print $2}')
    M_RPS=$(echo "$out" | awk '{print $6}')
    M_P99=$(echo "$out" | awk '{print $12}')
    M_CPU_US=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$M_REQS" \
      'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    M_USER_US=$(awk -v t=$((user_after - user_before)) -v hz="$CLK_TCK" -v n="$M_REQS" \
      'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    M_WRITER_US=$(awk -v t=$((writer_after - writer_before)) -v hz="$CLK_TCK" -v n="$M_REQS" \
      'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    if [[ $side == on ]]; then
      ANSWERED=$((ANSWERED + M_REQS + $(echo "$warm" | awk '{print $2}')))
      ON_RUNS=$((ON_RUNS + 2))
    fi
  }

  echo
  echo "audit off: pid $SIDECAR_PID, audit on: pid $AUDIT_PID (fsync = \"${AUDIT_FSYNC:-batch}\", trail in $DIR/audit)"
  echo "base config of both (AUDIT_BASE): $AUDIT_BASE ($(
    [[ $AUDIT_BASE == full ]] && echo 'log.level info: an access line per request to a log file; traces at 1 % to the OTLP sink' ||
      echo 'log.level warn: no access log; no traces'))"
  if [[ -n "$AUDIT_RATE" ]]; then
    echo "loadgen --rate $AUDIT_RATE --connections $CONNECTIONS --duration $DURATION (after a 2 s warm-up each; open loop, the same pace on both sides), $(nproc) cores, loopback, TLS upstream, CLK_TCK $CLK_TCK"
  else
    echo "wrk -t1 -c$CONNECTIONS -d$DURATION --latency (after a 2 s warm-up each), $(nproc) cores, loopback, TLS upstream, CLK_TCK $CLK_TCK"
  fi
  declare -A CPU USR WRITER RPSR P99R
  for mix in $AUDIT_REQUEST; do
    request "$mix"
    echo
    echo "request $mix: ${REQ_ARGS[*]:+(${REQ_ARGS[*]}) }$REQ_PATH"
    printf '%-5s %-7s %10s %9s %8s %8s %10s %9s %8s %8s %8s %9s\n' round order "off req/s" "off us/req" "off user" "off p99" \
      "on req/s" "on us/req" "on user" "writer" "on p99" "cpu on/off"
    ratios=() offs=() ons=() rps_ratios=()
    for round in $(seq 1 "$ROUNDS"); do
      if ((round % 2)); then order=(off on); else order=(on off); fi
      for side in "${order[@]}"; do
        if [[ $side == off ]]; then
          measure off "$SIDECAR_PID" "http://127.0.0.1:$SIDECAR_PORT$REQ_PATH"
        else
          measure on "$AUDIT_PID" "http://127.0.0.1:$AUDIT_PORT$REQ_PATH"
        fi
        CPU[$side]=$M_CPU_US USR[$side]=$M_USER_US WRITER[$side]=$M_WRITER_US RPSR[$side]=$M_RPS P99R[$side]=$M_P99
      done
      r=$(ratio "${CPU[on]}" "${CPU[off]}")
      ratios+=("$r") offs+=("${CPU[off]}") ons+=("${CPU[on]}")
      rps_ratios+=("$(ratio "${RPSR[on]}" "${RPSR[off]}")")
      printf '%-5s %-7s %10s %9s %8s %8s %10s %9s %8s %8s %8s %9s\n' "$round" "${order[0]},${order[1]}" \
        "${RPSR[off]}" "${CPU[off]}" "${USR[off]}" "${P99R[off]}" "${RPSR[on]}" "${CPU[on]}" "${USR[on]}" "${WRITER[on]}" "${P99R[on]}" "$r"
    done
    echo "median over $ROUNDS rounds ($mix): CPU per request off $(median "${offs[@]}") µs, on $(median "${ons[@]}") µs;" \
      "CPU on/off $(median "${ratios[@]}") (target <= 1.10); req/s on/off $(median "${rps_ratios[@]}")"
  done

  # The "on" trail: stop that sidecar gracefully (last checkpoint), then verify it.
  metrics=$(curl -s "http://127.0.0.1:$AUDIT_ADMIN_PORT/metrics")
  written=$(echo "$metrics" | awk '$1 == "fincode_audit_records_written_total" {print $2}')
  lost=$(echo "$metrics" | awk '$1 == "fincode_audit_records_lost_total" {print $2}')
  batches=$(echo "$metrics" | awk '$1 == "fincode_audit_write_seconds_count" {print $2}')
  syncs=$(echo "$metrics" | awk '$1 == "fincode_audit_syncs_total" {print $2}')
  # How much of the trail the page cache still holds (the writer hands synced pages back).
  trail_bytes=$(du -cb "$DIR"/audit/*.jsonl | awk 'END {print $1}')
  cached_bytes=$(fincore -b -n -o RES "$DIR"/audit/*.jsonl 2>/dev/null | awk '{s += $1} END {print s + 0}')
  kill -TERM "$AUDIT_PID"
  stopped=0
  wait "$AUDIT_PID" || stopped=$?
  public_key=$("$BIN" audit public-key --key-env BENCH_AUDIT_SIGNING_KEY)
  verified=0
  "$BIN" audit verify "$DIR/audit" --public-key "$public_key" \
    --checkpoints "$DIR/audit-sidecar.log" >"$DIR/verify.out" 2>&1 || verified=$?
  http_records=$(cat "$DIR"/audit/*.jsonl | grep -c '"kind":"http"' || true)
  echo
  echo "audit trail of the \"on\" sidecar (stopped with SIGTERM, exit $stopped):"
  sed 's/^/  /' "$DIR/verify.out"
  echo "  audit verify --public-key --checkpoints <its log>: exit $verified"
  echo "  http records $http_records; responses counted by the client $ANSWERED ($ON_RUNS runs, warm-ups included) + 1 start-up probe;" \
    "difference $((http_records - ANSWERED - 1)) (calls in flight when wrk stops are recorded too: at most $((CONNECTIONS * ON_RUNS)))"
  echo "  fincode_audit_records_written_total ${written:-?} (all kinds), fincode_audit_records_lost_total ${lost:-?}," \
    "batches (one write each) ${batches:-?}, $(ratio "${written:-0}" "${batches:-1}") records per batch; fsyncs ${syncs:-?}"
  echo "  trail ${trail_bytes:-?} bytes, of which in the page cache while running: ${cached_bytes:-?} bytes (fincore)"
  if ((verified != 0)); then
    echo "error: the audit trail does not verify" >&2
    exit 1
  fi
  exit 0
fi

# nginx's worker does the work and holds the memory; the pid file names the master.
nginx_worker=$(pgrep -P "$(cat "$DIR/proxy.pid")" | head -1 || true)
run direct "https://127.0.0.1:$UPSTREAM_PORT/api/v6/services/sandbox/ping"
run sidecar "http://127.0.0.1:$SIDECAR_PORT/sandbox/ping" "$SIDECAR_PID"
run sidecar-info "http://127.0.0.1:$INFO_PORT/sandbox/ping" "$INFO_PID"
run full "http://127.0.0.1:$FULL_PORT/sandbox/ping" "$FULL_PID"
run full-1t "http://127.0.0.1:$FULL1_PORT/sandbox/ping" "$FULL1_PID"
if [[ -n "$BASELINE_BIN" ]]; then
  run baseline "http://127.0.0.1:$BASELINE_PORT/sandbox/ping" "$BASELINE_PID"
fi
run nginx "http://127.0.0.1:$NGINX_PORT/api/v6/services/sandbox/ping" "${nginx_worker:-$NGINX_PROXY_PID}"
run haproxy "http://127.0.0.1:$HAPROXY_PORT/api/v6/services/sandbox/ping" "$HAPROXY_PID"

# fixed NAME URL: p50/p99 at RATE requests/s over 32 keep-alive connections (open loop),
# FIXED_ROUNDS rounds (default 3) of DURATION/FIXED_ROUNDS each, the proxies taking turns
# within a round: on this shared host a 10-second row taken after another sees different
# conditions, so each proxy's p50/p99 is the median of its rounds and the p99 ratios are
# medians of the per-round ratios (the same host minutes for both).
FIXED_ROUNDS="${FIXED_ROUNDS:-3}"
FIXED_NAMES=(full full-1t nginx haproxy)
declare -A FIXED_URL=(
  [full]="http://127.0.0.1:$FULL_PORT/sandbox/ping"
  [full-1t]="http://127.0.0.1:$FULL1_PORT/sandbox/ping"
  [nginx]="http://127.0.0.1:$NGINX_PORT/api/v6/services/sandbox/ping"
  [haproxy]="http://127.0.0.1:$HAPROXY_PORT/api/v6/services/sandbox/ping"
)
declare -A FIXED_P50S FIXED_P99S FIXED_RATIOS FIXED_P50 FIXED_P99
fixed_seconds=$(awk -v d="${DURATION%s}" -v r="$FIXED_ROUNDS" 'BEGIN { s = int(d / r); print (s < 2 ? 2 : s) }')
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for ((round = 1; round <= FIXED_ROUNDS; round++)); do
  declare -A ROUND_P99=()
  for name in "${FIXED_NAMES[@]}"; do
    out=$("$LOADGEN" --url "${FIXED_URL[$name]}" --rate "$RATE" --duration "${fixed_seconds}s" --connections 32)
    FIXED_P50S[$name]+=" $(echo "$out" | awk '{for (i = 1; i < NF; i++) if ($i == "p50_ms") print $(i + 1)}')"
    ROUND_P99[$name]=$(echo "$out" | awk '{for (i = 1; i < NF; i++) if ($i == "p99_ms") print $(i + 1)}')
    FIXED_P99S[$name]+=" ${ROUND_P99[$name]}"
  done
  for name in full full-1t; do
    FIXED_RATIOS[$name]+=" $(ratio "${ROUND_P99[$name]}" "${ROUND_P99[haproxy]}")"
  done
done
for name in "${FIXED_NAMES[@]}"; do
  FIXED_P50[$name]=$(median <<<"${FIXED_P50S[$name]}")
  FIXED_P99[$name]=$(median <<<"${FIXED_P99S[$name]}")
done

# fresh: requests/s when every request opens a new connection (wrk reconnects after
# `Connection: close`; over https that is a full TLS handshake each time): direct to the
# upstream, and the same new plain-TCP connection per request through full, haproxy and the
# warn sidecar (what a proxy that pools its upstream reaches here, wrk's and the kernel's
# connection work included: the ceiling the ratio can reach on this machine). In turns over
# FIXED_ROUNDS rounds, as the fixed-rate rows: each target's req/s is the median of its
# rounds, each ratio to direct the median of the per-round ratios.
FRESH_NAMES=(direct full haproxy sidecar)
[[ -n "$BASELINE_BIN" ]] && FRESH_NAMES+=(baseline)
declare -A FRESH_URL=(
  [direct]="https://127.0.0.1:$UPSTREAM_PORT/api/v6/services/sandbox/ping"
  [full]="http://127.0.0.1:$FULL_PORT/sandbox/ping"
  [haproxy]="http://127.0.0.1:$HAPROXY_PORT/api/v6/services/sandbox/ping"
  [sidecar]="http://127.0.0.1:$SIDECAR_PORT/sandbox/ping"
  [baseline]="http://127.0.0.1:$BASELINE_PORT/sandbox/ping"
)
declare -A FRESH_ALL FRESH_RATIOS FRESH_RPS FRESH_X
for ((round = 1; round <= FIXED_ROUNDS; round++)); do
  declare -A ROUND_RPS=()
  for name in "${FRESH_NAMES[@]}"; do
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${fixed_seconds}s" -H "Connection: close" "${FRESH_URL[$name]}")
    ROUND_RPS[$name]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    FRESH_ALL[$name]+=" ${ROUND_RPS[$name]}"
  done
  for name in "${FRESH_NAMES[@]}"; do
    FRESH_RATIOS[$name]+=" $(ratio "${ROUND_RPS[$name]}" "${ROUND_RPS[direct]}")"
  done
  [[ -n "$BASELINE_BIN" ]] && FRESH_RATIOS[this_vs_baseline]+=" $(ratio "${ROUND_RPS[sidecar]}" "${ROUND_RPS[baseline]}")"
done
for name in "${FRESH_NAMES[@]}"; do
  FRESH_RPS[$name]=$(median <<<"${FRESH_ALL[$name]}")
  FRESH_X[$name]=$(median <<<"${FRESH_RATIOS[$name]}")
done

rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }

echo
echo "wrk -t1 -c$CONNECTIONS -d$DURATION --latency, $(nproc) cores, loopback, TLS upstream (HTTP/1.1 keep-alive)"
printf '%-12s %12s %10s %10s %12s %12s %8s\n' target "req/s" "p50 ms" "p99 ms" "peak RSS" "CPU us/req" "user %"
names=(direct sidecar sidecar-info full full-1t)
[[ -n "$BASELINE_BIN" ]] && names+=(baseline)
names+=(nginx haproxy)
for name in "${names[@]}"; do
  case $name in
    baseline) rss="$(rss_kib "$BASELINE_PID") KiB" ;;
    sidecar) rss="$(rss_kib "$SIDECAR_PID") KiB" ;;
    sidecar-info) rss="$(rss_kib "$INFO_PID") KiB" ;;
    full) rss="$(rss_kib "$FULL_PID") KiB" ;;
    full-1t) rss="$(rss_kib "$FULL1_PID") KiB" ;;
    nginx) rss="$(rss_kib "${nginx_worker:-$NGINX_PROXY_PID}") KiB" ;;
    haproxy) rss="$(rss_kib "$HAPROXY_PID") KiB" ;;
    *) rss="-" ;;
  esac
  printf '%-12s %12s %10s %10s %12s %12s %8s\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" "$rss" "${CPU_US[$name]}" "${USER_PCT[$name]}"
done
echo
echo "CPU/request full/haproxy         $(ratio "${CPU_US[full]}" "${CPU_US[haproxy]}")  (every feature on; target <= 1.0, aim 0.8)"
echo "CPU/request full-1t/haproxy      $(ratio "${CPU_US[full-1t]}" "${CPU_US[haproxy]}")  (every feature on, one worker thread)"
echo "CPU/request sidecar/haproxy      $(ratio "${CPU_US[sidecar]}" "${CPU_US[haproxy]}")  (log.level warn; target <= 1.0, aim 0.8)"
echo "CPU/request sidecar-info/haproxy $(ratio "${CPU_US[sidecar-info]}" "${CPU_US[haproxy]}")  (an access line per request; target <= 1.0)"
echo "CPU/request sidecar/nginx        $(ratio "${CPU_US[sidecar]}" "${CPU_US[nginx]}")"
echo "throughput full/haproxy     $(ratio "${RPS[full]}" "${RPS[haproxy]}")  (target >= 1.0)"
echo "throughput full/nginx       $(ratio "${RPS[full]}" "${RPS[nginx]}")  (target >= 1.2)"
echo "peak RSS full/haproxy       $(ratio "$(rss_kib "$FULL_PID")" "$(rss_kib "$HAPROXY_PID")")  (target <= 2.0)"
echo
echo "fixed rate: $RATE req/s over 32 keep-alive connections, $FIXED_ROUNDS rounds of ${fixed_seconds}s each, in turns (examples/loadgen.rs, open loop)"
printf '%-12s %10s %10s   %s\n' target "p50 ms" "p99 ms" "p99 of each round"
for name in "${FIXED_NAMES[@]}"; do
  printf '%-12s %10s %10s  %s\n' "$name" "${FIXED_P50[$name]}" "${FIXED_P99[$name]}" "${FIXED_P99S[$name]}"
done
echo "p99 at $RATE req/s full/haproxy $(median <<<"${FIXED_RATIOS[full]}")  (target <= 1.0; median of the rounds:${FIXED_RATIOS[full]})"
echo "p99 at $RATE req/s full-1t/haproxy $(median <<<"${FIXED_RATIOS[full-1t]}")  (one worker thread; rounds:${FIXED_RATIOS[full-1t]})"
echo
echo "new connection per request: wrk -t1 -c$CONNECTIONS -d${fixed_seconds}s -H 'Connection: close', $FIXED_ROUNDS rounds in turns (medians)"
echo "direct over fresh TLS ${FRESH_RPS[direct]} req/s, through the full sidecar ${FRESH_RPS[full]} req/s:" \
  "${FRESH_X[full]}x (target >= 3; rounds:${FRESH_RATIOS[full]})"
echo "  the same through haproxy ${FRESH_RPS[haproxy]} req/s (${FRESH_X[haproxy]}x; rounds:${FRESH_RATIOS[haproxy]})," \
  "through the warn sidecar ${FRESH_RPS[sidecar]} req/s (${FRESH_X[sidecar]}x; rounds:${FRESH_RATIOS[sidecar]})"
if [[ -n "$BASELINE_BIN" ]]; then
  echo "  through the baseline build (warn) ${FRESH_RPS[baseline]} req/s (${FRESH_X[baseline]}x);" \
    "this build / baseline $(median <<<"${FRESH_RATIOS[this_vs_baseline]}")"
fi
echo
echo "throughput sidecar/nginx   $(ratio "${RPS[sidecar]}" "${RPS[nginx]}")  (target >= 1.2)"
echo "throughput sidecar/haproxy $(ratio "${RPS[sidecar]}" "${RPS[haproxy]}")  (target >= 1.0)"
echo "p99 sidecar/nginx          $(ratio "${P99[sidecar]}" "${P99[nginx]}")  (lower is better)"
echo "p99 sidecar/haproxy        $(ratio "${P99[sidecar]}" "${P99[haproxy]}")  (target <= 1.0 at a fixed moderate rate; this run is saturating)"
if [[ -n "$BASELINE_BIN" ]]; then
  echo "throughput sidecar/baseline $(ratio "${RPS[sidecar]}" "${RPS[baseline]}")  (this build against BASELINE_BIN)"
fi
