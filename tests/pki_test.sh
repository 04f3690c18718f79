#!/usr/bin/env bash
# End-to-end test of deploy/fedprllm-certs (docs/pki.md) in a fresh temporary directory: key
# custody (a site's key is made where its `request` runs, and `sign` opens no private key but
# ca.key, traced with strace), what `sign` puts into a certificate, refusals (CN not the
# identity, role conflict, overwrites), revocation through the CRL, server-cert and show.
#
#   bash tests/pki_test.sh PATH/TO/fedprllm-certs
#
# Exits 0 only when every check passed; each failed check is printed with "FAIL".
set -euo pipefail

certs_bin="${1:?usage: pki_test.sh PATH/TO/fedprllm-certs}"
certs_bin="$(cd "$(dirname "$certs_bin")" && pwd -P)/$(basename "$certs_bin")"
[[ -x "$certs_bin" ]] || { echo "pki_test: $certs_bin is not executable" >&2; exit 1; }
command -v openssl >/dev/null || { echo "pki_test: openssl not found" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/pki_test.XXXXXX")"
cleanup() { chmod -R u+rwX "$work" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; }
# check DESC CMD...: CMD must succeed.
check() { local d="$1"; shift; if "$@" >"$work/check.log" 2>&1; then pass "$d"; else fail "$d"; sed 's/^/     | /' "$work/check.log"; fi; }
# refused DESC CMD...: CMD must fail (its output stays in $work/check.log for further checks).
refused() { local d="$1"; shift; if "$@" >"$work/check.log" 2>&1; then fail "$d (it succeeded)"; sed 's/^/     | /' "$work/check.log"; else pass "$d"; fi; }
# setup CMD...: a step the rest depends on; stops the test when it fails.
setup() { if ! "$@" >"$work/setup.log" 2>&1; then echo "FAIL setup step: $*"; sed 's/^/     | /' "$work/setup.log"; exit 1; fi; }
# same DESC GOT WANT
same() { if [[ "$2" == "$3" ]]; then pass "$1"; else fail "$1: got '$2', want '$3'"; fi; }
contains() { if [[ "$2" == *"$3"* ]]; then pass "$1"; else fail "$1: '$3' not in: $2"; fi; }
lacks() { if [[ "$2" != *"$3"* ]]; then pass "$1"; else fail "$1: '$3' found in: $2"; fi; }

mode() { stat -c %a "$1"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
keys_in() { (cd "$1" && find . -name '*.key' | sort | paste -sd' ' -); }
pub_of_key() { openssl pkey -in "$1" -pubout; }
pub_of() { openssl "$1" -in "$2" -noout -pubkey; }
x509() { local f="$1"; shift; openssl x509 -in "$f" -noout "$@"; }
ext() { x509 "$1" -ext "$2" | sed -n '2,$p' | sed 's/^ *//' | paste -sd' ' -; }
verify_crl() { openssl verify -crl_check -CRLfile "$work/ca/ca.crl" -CAfile "$work/ca/ca.crt" "$1"; }

# ---- usage and argument errors ----
check "--help prints the usage" bash -c "'$certs_bin' --help | grep -q '^Usage: fedprllm-certs'"
refused "an unknown command is refused" "$certs_bin" frobnicate
contains "  ... naming it" "$(cat check.log)" "frobnicate"
refused "a bad identity is refused" "$certs_bin" request site --identity '../evil'
contains "  ... naming it" "$(cat check.log)" "../evil"
same "  ... and nothing is made" "$(find site -mindepth 1 2>/dev/null | wc -l)" "0"
refused "a bad --days is refused" "$certs_bin" init-ca ca --days 0
contains "  ... naming the option" "$(cat check.log)" "--days"

# ---- init-ca ----
setup "$certs_bin" init-ca ca --cn "Example Federation CA" --days 400
for f in ca.key ca.crt index.txt serial crlnumber ca.crl; do
  check "init-ca made ca/$f" test -f "ca/$f"
done
same "ca.key is mode 0600" "$(mode ca/ca.key)" "600"
same "the CA's CN is --cn" "$(x509 ca/ca.crt -subject -nameopt RFC2253)" "subject=CN=Example Federation CA"
contains "the CA is a CA" "$(ext ca/ca.crt basicConstraints)" "CA:TRUE"
check "ca.crl is signed by the CA" openssl crl -in ca/ca.crl -CAfile ca/ca.crt -noout
lacks "ca.crl starts empty" "$(openssl crl -in ca/ca.crl -noout -text)" "Serial Number"
ca_key_sha="$(sha ca/ca.key)"
refused "init-ca refuses to overwrite a CA" "$certs_bin" init-ca ca
contains "  ... naming the file" "$(cat check.log)" "ca/ca.key"
same "  ... and ca.key is unchanged" "$(sha ca/ca.key)" "$ca_key_sha"

# ---- request, at the site ----
setup "$certs_bin" request site-a --identity site-a
request_out="$(cat setup.log)"
check "request made site-a/site-a.key" test -f site-a/site-a.key
check "request made site-a/site-a.csr" test -f site-a/site-a.csr
same "site-a.key is mode 0600" "$(mode site-a/site-a.key)" "600"
lacks "request does not print the key" "$request_out" "PRIVATE KEY"
lacks "  ... nor any of its base64" "$request_out" "$(sed -n 2p site-a/site-a.key)"
same "the CSR's CN is the identity" "$(openssl req -in site-a/site-a.csr -noout -subject -nameopt RFC2253)" "subject=CN=site-a"
contains "the CSR asks for SAN DNS:identity" "$(openssl req -in site-a/site-a.csr -noout -text)" "DNS:site-a"
same "the CSR carries the site key's public key" "$(pub_of req site-a/site-a.csr)" "$(pub_of_key site-a/site-a.key)"
same "the CA directory holds no key but ca.key" "$(keys_in ca)" "./ca.key"
site_key_sha="$(sha site-a/site-a.key)"
refused "request refuses to replace an existing key" "$certs_bin" request site-a --identity site-a
same "  ... and the key is unchanged" "$(sha site-a/site-a.key)" "$site_key_sha"

# What travels to the CA: the CSR only.
mkdir -p inbox issued
cp site-a/site-a.csr inbox/site-a.csr

# ---- sign: key custody ----
# The site key is made unreadable; sign must not need it. (root ignores file modes, so the
# strace check below is what shows it when this runs as root.)
chmod 000 site-a/site-a.key
sign_cmd=("$certs_bin" sign ca inbox/site-a.csr --identity site-a --days 90 --out issued/site-a.crt)
before="$(date -u +%s)"
have_strace=0
if command -v strace >/dev/null && strace -f -qq -o /dev/null true 2>/dev/null; then have_strace=1; fi
if ((have_strace)); then
  setup strace -f -qq -e trace=open,openat -o "$work/sign.trace" "${sign_cmd[@]}"
else
  echo "SKIP strace checks: strace is missing or ptrace is not allowed here (scripts/install_deps.sh installs strace)"
  setup "${sign_cmd[@]}"
fi
sign_out="$(cat setup.log)"
after="$(date -u +%s)"
chmod 600 site-a/site-a.key

# opened_keys TRACE: every *.key path, or text file holding a PEM private key, that a traced run
# tried to open, resolved to an absolute path.
opened_keys() {
  local p
  sed -n 's/.*open\(at\)\?([^"]*"\([^"]*\)".*/\2/p' "$1" | sort -u | while read -r p; do
    if [[ "$p" == *.key ]] || { [[ -f "$p" && -r "$p" ]] && grep -Iq -- '^-----BEGIN [A-Z ]*PRIVATE KEY-----$' "$p" 2>/dev/null; }; then
      realpath -m "$p"
    fi
  done | sort -u | paste -sd' ' -
}
if ((have_strace)); then
  # The detector must be able to fail: a run that reads the site key is caught.
  strace -f -qq -e trace=open,openat -o "$work/control.trace" openssl pkey -in site-a/site-a.key -noout >/dev/null 2>&1
  contains "the key-open detector sees a process that reads site-a.key" "$(opened_keys "$work/control.trace")" "$work/site-a/site-a.key"
  same "sign opened no private key but CA_DIR/ca.key" "$(opened_keys "$work/sign.trace")" "$work/ca/ca.key"
  lacks "sign opened nothing in the site's directory" "$(sed -n 's/.*open\(at\)\?([^"]*"\([^"]*\)".*/\2/p' "$work/sign.trace" | xargs -r -n1 realpath -m)" "$work/site-a/"
fi
same "the CA directory still holds no key but ca.key" "$(keys_in ca)" "./ca.key"
same "the site key is unchanged" "$(sha site-a/site-a.key)" "$site_key_sha"

# ---- sign: the certificate ----
crt=issued/site-a.crt
check "the signed certificate verifies against ca.crt" openssl verify -CAfile ca/ca.crt "$crt"
check "  ... for TLS client use" openssl verify -purpose sslclient -CAfile ca/ca.crt "$crt"
refused "  ... and not for TLS server use" openssl verify -purpose sslserver -CAfile ca/ca.crt "$crt"
same "its CN is the identity" "$(x509 "$crt" -subject -nameopt RFC2253)" "subject=CN=site-a"
same "its SAN is DNS:identity" "$(ext "$crt" subjectAltName)" "DNS:site-a"
same "its EKU is clientAuth" "$(ext "$crt" extendedKeyUsage)" "TLS Web Client Authentication"
contains "it is not a CA" "$(ext "$crt" basicConstraints)" "CA:FALSE"
same "it certifies the site's own key" "$(pub_of x509 "$crt")" "$(pub_of_key site-a/site-a.key)"
not_after="$(x509 "$crt" -enddate | sed 's/^notAfter=//')"
end="$(date -u -d "$not_after" +%s)"
if ((end >= before + 90 * 86400 - 5 && end <= after + 90 * 86400 + 5)); then pass "it expires --days 90 from now"
else fail "it expires $not_after, not 90 days after $(date -u -d "@$before")"; fi
serial="$(x509 "$crt" -serial | sed 's/^serial=//')"
contains "sign prints the serial" "$sign_out" "$serial"
contains "sign prints notAfter" "$sign_out" "$not_after"
check "the CA database records it as valid" grep -q "^V.*$serial.*/CN=site-a" ca/index.txt
refused "sign refuses to overwrite --out" "$certs_bin" sign ca inbox/site-a.csr --identity site-a --out "$crt"
same "  ... which is unchanged" "$(x509 "$crt" -serial | sed 's/^serial=//')" "$serial"

# ---- sign: refusals ----
setup "$certs_bin" request site-b --identity site-b
cp site-b/site-b.csr inbox/
rows_before="$(wc -l <ca/index.txt)"
refused "a CSR whose CN is not --identity is refused" "$certs_bin" sign ca inbox/site-b.csr --identity site-c --out issued/site-c.crt
contains "  ... naming the CSR's CN" "$(cat check.log)" "'site-b'"
contains "  ... and --identity" "$(cat check.log)" "'site-c'"
check "  ... writing no certificate" test ! -e issued/site-c.crt
same "  ... and no database row" "$(wc -l <ca/index.txt)" "$rows_before"
setup "$certs_bin" request srv-req --identity fedprllm.example.org --role server
refused "a server CSR signed as a site is refused" "$certs_bin" sign ca srv-req/fedprllm.example.org.csr --identity fedprllm.example.org --role site --out issued/x.crt
contains "  ... naming the roles" "$(cat check.log)" "server"
refused "a private key passed as the CSR is refused" "$certs_bin" sign ca site-b/site-b.key --identity site-b --out issued/x.crt
refused "a certificate longer-lived than the CA is refused" "$certs_bin" sign ca inbox/site-b.csr --identity site-b --days 500 --out issued/x.crt
contains "  ... naming ca.crt" "$(cat check.log)" "ca.crt"

# ---- sign: operator role with extra SANs ----
setup "$certs_bin" sign ca inbox/site-b.csr --identity site-b --role operator --dns site-b.example.org --ip 10.0.0.7 --out issued/site-b.crt
same "--dns and --ip become SANs" "$(ext issued/site-b.crt subjectAltName)" "DNS:site-b, DNS:site-b.example.org, IP Address:10.0.0.7"
same "an operator gets EKU clientAuth" "$(ext issued/site-b.crt extendedKeyUsage)" "TLS Web Client Authentication"

# ---- show ----
show_out="$("$certs_bin" show issued/site-b.crt)"
contains "show prints the subject" "$show_out" "CN=site-b"
contains "show prints the SANs" "$show_out" "site-b.example.org"
contains "show prints the serial" "$show_out" "$(x509 issued/site-b.crt -serial | sed 's/^serial=//')"
contains "show prints notAfter" "$show_out" "$(x509 issued/site-b.crt -enddate | sed 's/^notAfter=//')"
lacks "show does not warn about a 365-day certificate" "$show_out" "WARNING"
setup "$certs_bin" request site-s --identity site-s
setup "$certs_bin" sign ca site-s/site-s.csr --identity site-s --days 10 --out issued/site-s.crt
contains "show warns about a certificate that expires within 30 days" "$("$certs_bin" show issued/site-s.crt)" "expires within 30 days"

# ---- revoke and the CRL ----
check "before revocation site-a passes the CRL check" verify_crl issued/site-a.crt
crlnumber_before="$(openssl crl -in ca/ca.crl -noout -crlnumber)"
setup "$certs_bin" revoke ca issued/site-a.crt --reason keyCompromise
revoke_out="$(cat setup.log)"
contains "revoke prints the serial" "$revoke_out" "$serial"
contains "revoke prints the CRL's next update" "$revoke_out" "$(openssl crl -in ca/ca.crl -noout -nextupdate | sed 's/^nextUpdate=//')"
check "the new CRL is signed by the CA" openssl crl -in ca/ca.crl -CAfile ca/ca.crt -noout
refused "after revocation site-a fails the CRL check" verify_crl issued/site-a.crt
contains "  ... as revoked" "$(cat check.log)" "revoked"
check "  ... while site-b still passes it" verify_crl issued/site-b.crt
check "  ... and site-a still verifies without the CRL" openssl verify -CAfile ca/ca.crt issued/site-a.crt
check "the database marks it revoked" grep -q "^R.*keyCompromise.*$serial" ca/index.txt
serial_s="$(x509 issued/site-s.crt -serial | sed 's/^serial=//')"
setup "$certs_bin" revoke ca "0x$(tr A-F a-f <<<"$serial_s")"
refused "revoke by serial works" verify_crl issued/site-s.crt
check "  ... and keeps site-b" verify_crl issued/site-b.crt
refused "revoking a serial this CA never issued is refused" "$certs_bin" revoke ca 0xABCDEF
contains "  ... naming it" "$(cat check.log)" "ABCDEF"
setup "$certs_bin" init-ca other-ca
setup "$certs_bin" request site-x --identity site-x
setup "$certs_bin" sign other-ca site-x/site-x.csr --identity site-x --out issued/site-x.crt
refused "revoking another CA's certificate is refused" "$certs_bin" revoke ca issued/site-x.crt
refused "a bad --reason is refused" "$certs_bin" revoke ca issued/site-b.crt --reason because
check "  ... leaving site-b valid" verify_crl issued/site-b.crt
list_out="$("$certs_bin" list ca)"
check "list shows site-a revoked" grep -Eq "^revoked +$serial .*/CN=site-a" <<<"$list_out"
check "list shows site-b valid" grep -Eq "^valid .*/CN=site-b" <<<"$list_out"

# ---- gencrl ----
setup "$certs_bin" gencrl ca --crl-days 3
crl_next="$(date -u -d "$(openssl crl -in ca/ca.crl -noout -nextupdate | sed 's/^nextUpdate=//')" +%s)"
if ((crl_next > $(date -u +%s) + 2 * 86400 && crl_next <= $(date -u +%s) + 3 * 86400 + 5)); then pass "gencrl --crl-days 3 sets nextUpdate 3 days out"
else fail "gencrl --crl-days 3 set nextUpdate $(date -u -d "@$crl_next")"; fi
refused "  ... and keeps the revocations" verify_crl issued/site-a.crt
if [[ "$(openssl crl -in ca/ca.crl -noout -crlnumber)" != "$crlnumber_before" ]]; then pass "the CRL number advances"
else fail "the CRL number stayed $crlnumber_before"; fi
contains "show warns about a CRL near its next update" "$("$certs_bin" show ca/ca.crl)" "WARNING"

# ---- server-cert ----
setup "$certs_bin" server-cert ca --dns fedprllm.example.org --dns fedprllm --ip 192.0.2.10 --ip 127.0.0.1 --out-dir server-out
scrt=server-out/server.crt
check "server-cert verifies against ca.crt for TLS server use" openssl verify -purpose sslserver -CAfile ca/ca.crt "$scrt"
same "its CN is the first --dns" "$(x509 "$scrt" -subject -nameopt RFC2253)" "subject=CN=fedprllm.example.org"
same "it has the DNS and IP SANs" "$(ext "$scrt" subjectAltName)" "DNS:fedprllm.example.org, DNS:fedprllm, IP Address:192.0.2.10, IP Address:127.0.0.1"
same "its EKU is serverAuth" "$(ext "$scrt" extendedKeyUsage)" "TLS Web Server Authentication"
same "server.key is mode 0600" "$(mode server-out/server.key)" "600"
same "it certifies server.key" "$(pub_of x509 "$scrt")" "$(pub_of_key server-out/server.key)"
same "the CA directory holds no key but ca.key" "$(keys_in ca)" "./ca.key"
refused "server-cert refuses to overwrite server.key" "$certs_bin" server-cert ca --dns fedprllm.example.org --out-dir server-out

# ---- renewal with the same key ----
setup "$certs_bin" request site-b --identity site-b --reuse-key
same "request --reuse-key keeps the key" "$(pub_of req site-b/site-b.csr)" "$(pub_of_key site-b/site-b.key)"

# ---- an encrypted CA key ----
export FEDPRLLM_CA_PASSPHRASE="correct horse battery staple"
setup "$certs_bin" init-ca enc-ca --encrypt
check "init-ca --encrypt encrypts ca.key" grep -q "ENCRYPTED PRIVATE KEY" enc-ca/ca.key
setup "$certs_bin" sign enc-ca site-b/site-b.csr --identity site-b --out issued/site-b-enc.crt
check "  ... and sign uses it with the passphrase" openssl verify -CAfile enc-ca/ca.crt issued/site-b-enc.crt
FEDPRLLM_CA_PASSPHRASE="wrong" refused "  ... and not with a wrong one" "$certs_bin" sign enc-ca site-b/site-b.csr --identity site-b --out issued/site-b-enc2.crt </dev/null
unset FEDPRLLM_CA_PASSPHRASE

echo "pki_test: $passed passed, $failed failed"
((failed == 0))
