#!/usr/bin/env bash
# Two builds side by side: CPU per request of each, in alternating rounds on one host.
#
#   bash benches/ab.sh <old fincode-sidecar> <new fincode-sidecar>
#   LEVEL=info AUTH_MODE=login ROUNDS=9 bash benches/ab.sh old new
#   LEVEL=info AUDIT=1 KIND=get bash benches/ab.sh old new
#   CLOSE=1 bash benches/ab.sh old new     # a new connection per request
#
# Both sidecars run at once against the same TLS upstream (nginx, as in load.sh), with the
# same config (`log.level` LEVEL, default warn; AUTH_MODE=login for login mode; AUDIT=1 adds
# the audit trail); each round is `wrk -t1 -c32 -d5s` against one and then the other (the order
# alternates), and a build's CPU per request is the utime + stime of its process over its
# round (from /proc/<pid>/stat) divided by the requests served; with CLOSE=1 wrk sends
# `Connection: close`, so every request comes on a new connection (as load.sh's
# new-connection row does). Prints each round and the
# median of the per-round new/old ratios. Why rounds and not one load.sh run: on this shared
# two-core host, ten-second rows taken one after the other move by 10 % against each other;
# alternating five-second rounds see the same host conditions for both builds.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD=$1 NEW=$2
LEVEL="${LEVEL:-warn}" ROUNDS="${ROUNDS:-9}" KIND="${KIND:-ping}"
UPSTREAM_PORT=19043

# shellcheck source=benches/lib.sh
source benches/lib.sh
need_tools wrk nginx openssl
scratch_dir
make_certs "$DIR"
start_upstream
wait_port "https://127.0.0.1:$UPSTREAM_PORT/" "upstream nginx"

export BENCH_FINCODE_TOKEN=bench-token
audit_secrets
config() {
  sidecar_config "$1" "$2" "$LEVEL"
  if [[ -n "${AUDIT:-}" ]]; then audit_config "$DIR/audit-$1"; fi
}
config 19080 19090 >"$DIR/old.toml"
config 19081 19091 >"$DIR/new.toml"
"$OLD" run --config "$DIR/old.toml" >"$DIR/old.log" 2>&1 & OLD_PID=$!; PIDS+=("$OLD_PID")
"$NEW" run --config "$DIR/new.toml" >"$DIR/new.log" 2>&1 & NEW_PID=$!; PIDS+=("$NEW_PID")
for admin in 19090 19091; do
  wait_port "http://127.0.0.1:$admin/healthz" "a sidecar (see $DIR/*.log)"
  # Logged in (AUTH_MODE=login) before the first round.
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" && break; sleep 0.1; done
done

path=/sandbox/ping
if [[ $KIND == get ]]; then path=/transactionmanagement/transactions/TXN-20261130-0000421337; fi
WRK_ARGS=()
if [[ -n "${CLOSE:-}" ]]; then WRK_ARGS=(-H 'Connection: close'); fi
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# One round against port $1 (process $2): CPU µs per request.
round() {
  local before after out requests
  before=$(cpu_ticks "$2")
  out=$(wrk -t1 -c32 -d5s "${WRK_ARGS[@]}" "http://127.0.0.1:$1$path")
  after=$(cpu_ticks "$2")
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  awk -v c=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.2f", c / hz * 1e6 / n }'
}

# Warm-up: pools filled, caches warm.
wrk -t1 -c32 -d2s "${WRK_ARGS[@]}" "http://127.0.0.1:19080$path" >/dev/null
wrk -t1 -c32 -d2s "${WRK_ARGS[@]}" "http://127.0.0.1:19081$path" >/dev/null
echo "CPU per request, $KIND, log.level $LEVEL${AUTH_MODE:+, auth $AUTH_MODE}${AUDIT:+, audit on}${CLOSE:+, a new connection per request}: old $OLD, new $NEW"
ratios=()
for i in $(seq "$ROUNDS"); do
  if ((i % 2)); then
    old=$(round 19080 "$OLD_PID"); new=$(round 19081 "$NEW_PID")
  else
    new=$(round 19081 "$NEW_PID"); old=$(round 19080 "$OLD_PID")
  fi
  ratio=$(awk -v a="$new" -v b="$old" 'BEGIN { printf "%.3f", a / b }')
  ratios+=("$ratio")
  echo "round $i: old $old µs, new $new µs, new/old $ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '
  { r[NR] = $1; if ($1 < 1) below++ }
  END { printf "median new/old %.3f over %d rounds; below 1 in %d\n", r[int((NR + 1) / 2)], NR, below }'
