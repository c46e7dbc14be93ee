#!/usr/bin/env bash
# Load benchmark: the sidecar against nginx and haproxy, configured alike, in one run.
#
# A TLS upstream (nginx serving a fixed FinCode-shaped JSON over HTTPS) sits behind three
# proxies that take plain HTTP from the client and keep a pool of TLS keep-alive
# connections to the upstream: fincode-sidecar, nginx and haproxy. wrk loads each in turn
# (and the upstream directly) with the same settings, and the script prints requests/s,
# p50/p99 latency, peak RSS, and the sidecar/nginx and sidecar/haproxy ratios.
# Everything binds 127.0.0.1 only and is stopped on exit.
#
#   bash benches/load.sh                 # DURATION=10s CONNECTIONS=32 by default
#   BASELINE_BIN=/path/to/old/fincode-sidecar bash benches/load.sh
#                                        # also an older build, side by side in the same run
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
UPSTREAM_PORT=18443 SIDECAR_PORT=18080 NGINX_PORT=18081 HAPROXY_PORT=18082 ADMIN_PORT=19090
BASELINE_PORT=18083 BASELINE_ADMIN_PORT=19091
BASELINE_BIN="${BASELINE_BIN:-}"

need=()
for tool in wrk nginx haproxy openssl; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  pkgs=()
  for tool in "${need[@]}"; do
    case "$tool" in nginx) pkgs+=(nginx-light) ;; *) pkgs+=("$tool") ;; esac
  done
  echo "installing ${pkgs[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
cargo build --release --quiet
BIN="$PWD/target/release/fincode-sidecar"

DIR="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# --- certificates: a CA and a leaf for 127.0.0.1 ---------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench-ca" \
  -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$DIR/leaf.key" -out "$DIR/leaf.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$DIR/san.ext"
openssl x509 -req -in "$DIR/leaf.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
  -days 2 -extfile "$DIR/san.ext" -out "$DIR/leaf.pem" 2>/dev/null

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
  cat <<CONF
    server {
        listen 127.0.0.1:$UPSTREAM_PORT ssl;
        ssl_certificate $DIR/leaf.pem; ssl_certificate_key $DIR/leaf.key;
        location / { default_type application/json; return 200 '{"status":"SUCCESS","data":"pong"}'; }
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
nginx -p "$DIR" -c "$DIR/proxy.conf" & PIDS+=($!)
NGINX_PROXY_PID=$!

# --- haproxy ----------------------------------------------------------------------------
cat >"$DIR/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend app
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend fincode
backend fincode
    http-reuse always
    server s1 127.0.0.1:$UPSTREAM_PORT ssl verify required ca-file $DIR/ca.pem sni str(127.0.0.1)
CONF
haproxy -f "$DIR/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!)
HAPROXY_PID=$!

# --- the sidecar (static-token mode: credential injection on, as in production) --------
cat >"$DIR/sidecar.toml" <<CONF
[listen]
egress = "127.0.0.1:$SIDECAR_PORT"
admin = "127.0.0.1:$ADMIN_PORT"
[upstream]
base_url = "https://127.0.0.1:$UPSTREAM_PORT/api/v6/services"
ca_file = "$DIR/ca.pem"
[auth]
mode = "static"
token_env = "BENCH_FINCODE_TOKEN"
[log]
level = "warn"
# Retries, the breaker and load shedding stay on at their defaults. The local rate limit
# is off: its whole point is to cap throughput below what this benchmark measures.
[rate_limit]
per_second = 0
routes = {}
CONF
BENCH_FINCODE_TOKEN=bench-token "$BIN" run --config "$DIR/sidecar.toml" >"$DIR/sidecar.log" 2>&1 &
PIDS+=($!)
SIDECAR_PID=$!

# --- optionally, an older build of the sidecar with the same config ------------------------
if [[ -n "$BASELINE_BIN" ]]; then
  sed -e "s/127.0.0.1:$SIDECAR_PORT/127.0.0.1:$BASELINE_PORT/" \
    -e "s/127.0.0.1:$ADMIN_PORT/127.0.0.1:$BASELINE_ADMIN_PORT/" \
    "$DIR/sidecar.toml" >"$DIR/baseline.toml"
  BENCH_FINCODE_TOKEN=bench-token "$BASELINE_BIN" run --config "$DIR/baseline.toml" \
    >"$DIR/baseline.log" 2>&1 &
  PIDS+=($!)
  BASELINE_PID=$!
fi

wait_port() {
  for _ in $(seq 1 100); do
    if curl -sk -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "error: $2 did not start ($1)" >&2
  exit 1
}
wait_port "https://127.0.0.1:$UPSTREAM_PORT/" "upstream nginx"
wait_port "http://127.0.0.1:$NGINX_PORT/" "nginx proxy"
wait_port "http://127.0.0.1:$HAPROXY_PORT/" "haproxy"
wait_port "http://127.0.0.1:$SIDECAR_PORT/sandbox/ping" "fincode-sidecar (see $DIR/sidecar.log)"
if [[ -n "$BASELINE_BIN" ]]; then
  wait_port "http://127.0.0.1:$BASELINE_PORT/sandbox/ping" "baseline sidecar (see $DIR/baseline.log)"
fi

# ms from wrk's "1.23ms" / "456.00us" / "1.02s"
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "nan" }'
}

declare -A RPS P50 P99
run() {
  local name=$1 url=$2
  wrk -t1 -c"$CONNECTIONS" -d2s "$url" >/dev/null # warm-up: fill the pools
  local out
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
  if echo "$out" | grep -q "Non-2xx"; then
    echo "error: $name answered non-2xx:" >&2; echo "$out" >&2; exit 1
  fi
  RPS[$name]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  P50[$name]=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  P99[$name]=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
}

run direct "https://127.0.0.1:$UPSTREAM_PORT/api/v6/services/sandbox/ping"
run sidecar "http://127.0.0.1:$SIDECAR_PORT/sandbox/ping"
if [[ -n "$BASELINE_BIN" ]]; then
  run baseline "http://127.0.0.1:$BASELINE_PORT/sandbox/ping"
fi
run nginx "http://127.0.0.1:$NGINX_PORT/api/v6/services/sandbox/ping"
run haproxy "http://127.0.0.1:$HAPROXY_PORT/api/v6/services/sandbox/ping"

rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }
# nginx's worker holds the memory; the pid file names the master.
nginx_worker=$(pgrep -P "$(cat "$DIR/proxy.pid")" | head -1 || true)

echo
echo "wrk -t1 -c$CONNECTIONS -d$DURATION --latency, $(nproc) cores, loopback, TLS upstream (HTTP/1.1 keep-alive)"
printf '%-8s %12s %10s %10s %12s\n' target "req/s" "p50 ms" "p99 ms" "peak RSS"
names=(direct sidecar)
[[ -n "$BASELINE_BIN" ]] && names+=(baseline)
names+=(nginx haproxy)
for name in "${names[@]}"; do
  case $name in
    baseline) rss="$(rss_kib "$BASELINE_PID") KiB" ;;
    sidecar) rss="$(rss_kib "$SIDECAR_PID") KiB" ;;
    nginx) rss="$(rss_kib "${nginx_worker:-$NGINX_PROXY_PID}") KiB" ;;
    haproxy) rss="$(rss_kib "$HAPROXY_PID") KiB" ;;
    *) rss="-" ;;
  esac
  printf '%-8s %12s %10s %10s %12s\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" "$rss"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "throughput sidecar/nginx   $(ratio "${RPS[sidecar]}" "${RPS[nginx]}")  (target >= 1.2)"
echo "throughput sidecar/haproxy $(ratio "${RPS[sidecar]}" "${RPS[haproxy]}")  (target >= 1.0)"
echo "p99 sidecar/nginx          $(ratio "${P99[sidecar]}" "${P99[nginx]}")  (lower is better)"
echo "p99 sidecar/haproxy        $(ratio "${P99[sidecar]}" "${P99[haproxy]}")  (target <= 1.0 at a fixed moderate rate; this run is saturating)"
if [[ -n "$BASELINE_BIN" ]]; then
  echo "throughput sidecar/baseline $(ratio "${RPS[sidecar]}" "${RPS[baseline]}")  (this build against BASELINE_BIN)"
fi
