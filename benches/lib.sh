# Shared by the benchmark scripts (sourced, not run): the tools they need, a throwaway CA
# and leaf certificate for 127.0.0.1, and the FinCode-shaped transaction the TLS upstream
# serves.

# Installs whichever of the named tools is missing (Debian packages; nginx is nginx-light).
need_tools() {
  local need=() pkgs=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || need+=("$tool"); done
  ((${#need[@]})) || return 0
  for tool in "${need[@]}"; do
    case "$tool" in nginx) pkgs+=(nginx-light) ;; *) pkgs+=("$tool") ;; esac
  done
  echo "installing ${pkgs[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
}

# A CA (ca.pem) and a leaf for IP 127.0.0.1 (leaf.pem, leaf.key) in directory $1.
make_certs() {
  local dir=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench-ca" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/leaf.key" -out "$dir/leaf.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext"
  openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/san.ext" -out "$dir/leaf.pem" 2>/dev/null
  # The tenant key pair FinCode's dashboard would show, for AUTH_MODE=login: the sidecar
  # encrypts the login password to tenant.pub; the upstream never decrypts it.
  openssl genrsa -out "$dir/tenant.key" 2048 2>/dev/null
  openssl rsa -in "$dir/tenant.key" -pubout -out "$dir/tenant.pub" 2>/dev/null
}

# FinCode's login answer for AUTH_MODE=login: a JWT-shaped access token of the usual size
# (header, claims with an exp an hour ahead, signature), a refresh token, and its lifetime.
login_json() {
  local claims
  b64() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
  claims=$(printf '{"sub":"ops@merchant.test","tenant":"bench","roles":["MERCHANT_ADMIN"],"iat":%d,"exp":%d}' \
    "$(date +%s)" "$(($(date +%s) + 3600))" | b64)
  printf '{"status":"SUCCESS","data":{"token":"%s.%s.%s","refresh_token":"%s","expires_in":3600}}' \
    "$(printf '{"alg":"RS256","typ":"JWT"}' | b64)" "$claims" \
    "$(head -c 256 /dev/urandom | b64)" "$(head -c 48 /dev/urandom | b64)"
}

# A 533-byte FinCode-shaped transaction: an id, a reference and a customer code for the
# audit layer to find.
transaction_json() {
  printf '%s' '{"status":"SUCCESS","message":"Transaction retrieved","data":{"id":"TXN-20261130-0000421337",' \
    '"reference":"PCN-ORDER-88231","customer_code":"CUST-000931","amount":125000,"currency":"NGN",' \
    '"status":"SUCCESSFUL","payment_method":"CARD","card":{"first6":"539983","last4":"4412",' \
    '"brand":"MASTERCARD"},"narration":"Order 88231 checkout","fee":1875,"settlement_status":"PENDING",' \
    '"created_at":"2026-11-30T09:15:27Z","updated_at":"2026-11-30T09:15:29Z","channel":"WEB",' \
    '"metadata":{"cart_items":3,"store":"lagos-ikeja","device":"web-desktop"}}}'
}

# A scratch directory in $DIR, and PIDS, every process of which is stopped on exit; the
# directory is removed too unless KEEP is set (to read its files afterwards).
scratch_dir() {
  DIR="$(mktemp -d)"
  PIDS=()
  trap cleanup EXIT
}
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -z "${KEEP:-}" ]]; then rm -rf "$DIR"; fi
}

# Waits until URL $1 answers anything (curl, certificates not checked); exits naming $2 if
# it does not within ${3:-100} tries ${4:-0.1} s apart.
wait_port() {
  for _ in $(seq 1 "${3:-100}"); do
    if curl -sk -o /dev/null "$1"; then return 0; fi
    sleep "${4:-0.1}"
  done
  echo "error: $2 did not start ($1)" >&2
  exit 1
}

# Starts the TLS upstream alone (one nginx worker serving `upstream_server` on
# $UPSTREAM_PORT, keep-alive without a request limit), added to PIDS.
start_upstream() {
  cat >"$DIR/upstream.conf" <<CONF
daemon off;
worker_processes 1;
pid $DIR/upstream.pid;
error_log $DIR/upstream.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $DIR/body; proxy_temp_path $DIR/proxy;
    fastcgi_temp_path $DIR/fcgi; uwsgi_temp_path $DIR/uwsgi; scgi_temp_path $DIR/scgi;
    keepalive_requests 1000000;
$(upstream_server "$UPSTREAM_PORT")
}
CONF
  nginx -p "$DIR" -c "$DIR/upstream.conf" &
  PIDS+=($!)
}

# The audit trail's secrets, in the environment only (never printed): random unless set.
audit_secrets() {
  export BENCH_AUDIT_SIGNING_KEY="${BENCH_AUDIT_SIGNING_KEY:-$(openssl rand -base64 32)}"
  export BENCH_REDACT_HASH_KEY="${BENCH_REDACT_HASH_KEY:-$(openssl rand -base64 48)}"
}

# The config sections that turn the audit trail on, writing to directory $1 with fsync
# policy ${2:-batch}.
audit_config() {
  cat <<CONF
[redact]
hash_key_env = "BENCH_REDACT_HASH_KEY"
[audit]
enabled = true
dir = "$1"
signing_key_env = "BENCH_AUDIT_SIGNING_KEY"
actor = "bench-app"
fsync = "${2:-batch}"
CONF
}

# The nginx server block of the TLS upstream on port $1 (certificates from make_certs in
# $DIR): FinCode's ping answer, and a FinCode-shaped transaction under
# transactionmanagement (AUDIT_REQUEST=get and create) with ids for the audit layer.
upstream_server() {
  cat <<CONF
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate $DIR/leaf.pem; ssl_certificate_key $DIR/leaf.key;
        location / { default_type application/json; return 200 '{"status":"SUCCESS","data":"pong"}'; }
        location = /api/v6/services/securitymanagement/login {
            default_type application/json;
            return 200 '$(login_json)';
        }
        location /api/v6/services/transactionmanagement/ {
            default_type application/json;
            return 200 '$(transaction_json)';
        }
    }
CONF
}

# The login credentials AUTH_MODE=login reads (the bench's own; nothing checks them).
export BENCH_FINCODE_EMAIL=ops@merchant.test BENCH_FINCODE_PASSWORD=bench-password-not-secret

# The `[auth]` section: static-token mode (the default), or with AUTH_MODE=login FinCode's
# login (the password encrypted to $DIR/tenant.pub, the token from the upstream's login
# answer, renewed ahead of its expiry), the mode config.example.toml recommends.
auth_config() {
  if [[ "${AUTH_MODE:-static}" == login ]]; then
    cat <<CONF
[auth]
mode = "login"
email_env = "BENCH_FINCODE_EMAIL"
password_env = "BENCH_FINCODE_PASSWORD"
public_key_file = "$DIR/tenant.pub"
CONF
  else
    cat <<CONF
[auth]
mode = "static"
token_env = "BENCH_FINCODE_TOKEN"
CONF
  fi
}

# The sidecar's config for these benchmarks: egress on port $1, admin on $2, `log.level`
# ${3:-warn}, [auth] from `auth_config`, against the TLS upstream on $UPSTREAM_PORT. Retries, the
# breaker and load shedding stay on at their defaults. The local rate limit is off: its
# whole point is to cap throughput below what these benchmarks measure.
sidecar_config() {
  cat <<CONF
[listen]
egress = "127.0.0.1:$1"
admin = "127.0.0.1:$2"
[upstream]
base_url = "https://127.0.0.1:$UPSTREAM_PORT/api/v6/services"
ca_file = "$DIR/ca.pem"
$(auth_config)
[log]
level = "${3:-warn}"
[rate_limit]
per_second = 0
routes = {}
CONF
}

# haproxy's config for these benchmarks: one thread, keep-alive both ways, `http-reuse always`
# to the TLS upstream on $UPSTREAM_PORT (its certificate verified against $DIR/ca.pem),
# listening on port $1.
haproxy_config() {
  cat <<CONF
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
    bind 127.0.0.1:$1
    default_backend fincode
backend fincode
    http-reuse always
    server s1 127.0.0.1:$UPSTREAM_PORT ssl verify required ca-file $DIR/ca.pem sni str(127.0.0.1)
CONF
}
