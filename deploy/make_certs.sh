#!/usr/bin/env bash
# Creates the mutual-TLS material of a federation: a CA, a server certificate and one
# client certificate per site (EC P-256, 365 days), plus optionally a "rogue" CA with one
# client certificate that the server must refuse (used by rejection tests).
#
#   make_certs.sh [OUT_DIR] [--server-cn CN] [--days N] [--rogue NAME] [CLIENT...]
#   make_certs.sh certs site-a site-b site-c
#   make_certs.sh /tmp/certs --rogue mallory site-a
#
# OUT_DIR (default ./certs) receives ca.{key,crt}, server.{key,crt}, <client>.{key,crt},
# and rogue/ca.{key,crt}, rogue/<NAME>.{key,crt} with --rogue. The server certificate has
# CN = --server-cn (default localhost) and SAN DNS:localhost, IP:127.0.0.1 (plus the CN).
# Client CNs are the client names; the server takes them as client identities.
# Idempotent: existing keys and certificates that verify against their CA, have not
# expired and carry the requested CN are kept; run it again with more names to add sites.
set -euo pipefail

out_dir=""
server_cn="localhost"
days=365
rogue=""
clients=()

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while (($#)); do
  case "$1" in
    -h|--help) usage 0 ;;
    --server-cn) server_cn="${2:?--server-cn needs a value}"; shift 2 ;;
    --days) days="${2:?--days needs a value}"; shift 2 ;;
    --rogue) rogue="${2:?--rogue needs a NAME}"; shift 2 ;;
    --*) echo "make_certs.sh: unknown option $1" >&2; usage 2 ;;
    *) if [[ -z "$out_dir" ]]; then out_dir="$1"; else clients+=("$1"); fi; shift ;;
  esac
done
out_dir="${out_dir:-./certs}"

valid_name() { [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]]; }
for name in "${clients[@]}" ${rogue:+"$rogue"}; do
  valid_name "$name" || { echo "make_certs.sh: bad client name '$name' (use [A-Za-z0-9._-], max 64)" >&2; exit 2; }
  [[ "$name" != "ca" && "$name" != "server" ]] || { echo "make_certs.sh: '$name' is reserved" >&2; exit 2; }
done
[[ "$days" =~ ^[0-9]+$ && "$days" -ge 1 ]] || { echo "make_certs.sh: --days must be a positive integer" >&2; exit 2; }
command -v openssl >/dev/null || { echo "make_certs.sh: openssl not found" >&2; exit 1; }

umask 077
mkdir -p "$out_dir" && chmod 755 "$out_dir"

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
serial() { echo "0x$(openssl rand -hex 16)"; }

# make_ca DIR CN: DIR/ca.key, DIR/ca.crt (self-signed).
make_ca() {
  local dir="$1" cn="$2"
  mkdir -p "$dir" && chmod 755 "$dir"
  if [[ -s "$dir/ca.key" && -s "$dir/ca.crt" ]] &&
     openssl x509 -in "$dir/ca.crt" -noout -checkend 0 >/dev/null 2>&1; then
    echo "kept    $dir/ca.crt ($cn)"; return
  fi
  new_key "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days "$days" -subj "/CN=$cn" \
    -set_serial "$(serial)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$dir/ca.crt"
  chmod 644 "$dir/ca.crt"
  echo "made    $dir/ca.crt ($cn)"
}

# make_leaf DIR NAME CN EKU SAN: DIR/NAME.key, DIR/NAME.crt signed by DIR/ca.
make_leaf() {
  local dir="$1" name="$2" cn="$3" eku="$4" san="$5"
  local key="$dir/$name.key" crt="$dir/$name.crt"
  if [[ -s "$key" && -s "$crt" ]] &&
     openssl verify -CAfile "$dir/ca.crt" "$crt" >/dev/null 2>&1 &&
     openssl x509 -in "$crt" -noout -checkend 0 >/dev/null 2>&1 &&
     [[ "$(openssl x509 -in "$crt" -noout -subject -nameopt RFC2253)" == "subject=CN=$cn" ]]; then
    echo "kept    $crt (CN=$cn)"; return
  fi
  new_key "$key"
  local csr ext
  csr="$(mktemp)"; ext="$(mktemp)"
  openssl req -new -key "$key" -subj "/CN=$cn" -out "$csr"
  cat > "$ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyAgreement
extendedKeyUsage=$eku
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
  openssl x509 -req -in "$csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial "$(serial)" \
    -sha256 -days "$days" -extfile "$ext" -out "$crt" 2>/dev/null
  rm -f "$csr" "$ext"
  chmod 644 "$crt"
  echo "made    $crt (CN=$cn)"
}

make_ca "$out_dir" "FedPrLLM federation CA"

server_san="DNS:localhost,IP:127.0.0.1"
if [[ "$server_cn" != "localhost" && "$server_cn" != "127.0.0.1" ]]; then
  if [[ "$server_cn" =~ ^[0-9.]+$ ]]; then server_san+=",IP:$server_cn"; else server_san+=",DNS:$server_cn"; fi
fi
make_leaf "$out_dir" server "$server_cn" serverAuth "$server_san"

for name in "${clients[@]}"; do
  make_leaf "$out_dir" "$name" "$name" clientAuth "DNS:$name"
done

if [[ -n "$rogue" ]]; then
  make_ca "$out_dir/rogue" "Rogue CA (not trusted by the federation)"
  make_leaf "$out_dir/rogue" "$rogue" "$rogue" clientAuth "DNS:$rogue"
fi

echo "certificates in $out_dir: trust ca.crt; server uses server.{crt,key}; clients use <name>.{crt,key}"
