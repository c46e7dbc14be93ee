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
