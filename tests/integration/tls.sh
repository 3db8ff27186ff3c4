#!/usr/bin/env bash
# tls.sh: TLS on the client and HTTP ports ([tls] in the config), on real squalld processes on
# 127.0.0.1 (tools/squall-local --tls). The test makes its own CA and certificates with openssl
# (and an expired one under faketime). Cases:
#   1. A group of 3 with 3 shards serves over TLS: the CLI with --cacert reads and writes keys
#      of every shard at one member (so members relay to each other over TLS, checking each
#      other's certificates), HTTPS answers with the CA; a plain client, a client that does not
#      trust the CA and plain HTTP are refused, each with a clear reason.
#   2. require_client_cert: a client without a certificate, with an expired one or one from
#      another CA is refused (CLI and HTTPS: 403 SQ_EPERM), with the reason; with a good one it
#      works; members still relay (their own certificates).
#   3. A member whose certificate expired, or names another address, is refused by clients with
#      the reason; [tls] errors in the config (no ca_file, a key that is not the certificate's)
#      stop squalld with status 2 naming the file.
SQUALLD=$1
SQUALL=$2
. "$(dirname "$0")/lib.sh"
squall_local_test
command -v faketime >/dev/null || fail "faketime is not installed (scripts/install-deps installs it)"
BASE=$BASE_PORT
PKI=$WORK/pki

# certdir DIR MEMBERCERT: a directory as squall-local --tls takes it
certdir() {
  mkdir -p "$1"
  cp "$PKI/ca.pem" "$1/ca.pem"
  cp "$PKI/$2.pem" "$1/member.pem"
  cp "$PKI/$2.key" "$1/member.key"
}
pki_ca ca
pki_ca stranger
pki_cert member ca "IP:127.0.0.1"
pki_cert client ca "IP:127.0.0.1"
pki_cert oldclient ca "IP:127.0.0.1" "2020-01-01 00:00:00"
pki_cert outsider stranger "IP:127.0.0.1"
pki_cert oldmember ca "IP:127.0.0.1" "2020-01-01 00:00:00"
pki_cert elsewhere ca "IP:127.0.0.2"
certdir "$WORK/tls" member

CLI() { "$SQUALL" --timeout 3000 "$@"; }
members() { echo "127.0.0.1:$((BASE + 100)),127.0.0.1:$((BASE + 101)),127.0.0.1:$((BASE + 102))"; }
http() { echo "https://127.0.0.1:$((BASE + 200 + $1))"; }

echo "== 1. 3 members, 3 shards, over TLS"
"$LOCAL" up 3 --shards 3 --tls "$WORK/tls" --dir "$DIR" --base-port "$BASE" >"$WORK/up.out" ||
  fail "squall-local up --tls failed: $(cat "$WORK/up.out")"
grep -q "^http: https://" "$WORK/up.out" || fail "squall-local does not show https"
M0="127.0.0.1:$((BASE + 100))"
CLI --cacert "$PKI/ca.pem" --member "$M0" pool create /v volatile >/dev/null || fail "pool create over TLS failed"
for i in $(seq 1 12); do
  CLI --cacert "$PKI/ca.pem" --member "$M0" put "/v/k$i" "v$i" >/dev/null || fail "put /v/k$i over TLS failed"
done
for m in 0 1 2; do
  for i in 1 7 12; do
    [ "$(CLI --cacert "$PKI/ca.pem" --member "127.0.0.1:$((BASE + 100 + m))" get "/v/k$i")" = "v$i" ] ||
      fail "member $m does not read /v/k$i over TLS"
  done
done
[ "$(CLI --cacert "$PKI/ca.pem" --member "$M0" ls /v/ | wc -l)" = 12 ] || fail "ls over TLS does not list 12 keys"
grep -q "TLS with member" "$DIR"/m*.err && fail "a relay's TLS failed: $(grep -h 'TLS with member' "$DIR"/m*.err | head -2)"
echo "ok: 12 keys over 3 shards written and read at every member over TLS"
expect 5 "Or does the member require TLS" CLI --member "$M0" get /v/k1
expect 5 "TLS handshake failed: the member's certificate: (self-signed certificate in certificate chain|unable to get local issuer certificate)" \
  CLI --tls --member "$M0" get /v/k1
expect 5 "TLS handshake failed: the member's certificate" CLI --cacert "$PKI/stranger.pem" --member "$M0" get /v/k1
expect 0 "^v1$" curl -sS --cacert "$PKI/ca.pem" "$(http 1)/v1/kv/v/k1"
expect 0 "^/v/k12 " CLI --cacert "$PKI/ca.pem" --member "$(members)" ls /v/k12
rc=0
curl -sS "http://127.0.0.1:$((BASE + 200))/v1/kv/v/k1" >"$WORK/plain.out" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "plain HTTP was answered on the HTTPS port: $(cat "$WORK/plain.out")"
echo "ok: plain HTTP refused (curl status $rc)"
"$LOCAL" status --dir "$DIR" >"$WORK/status.out" 2>&1 || fail "squall-local status over TLS failed: $(cat "$WORK/status.out")"
grep -q "view 0" "$WORK/status.out" || fail "status over TLS: $(cat "$WORK/status.out")"
echo "ok: squall-local status speaks TLS"

echo "== 2. client certificates required"
"$LOCAL" down --dir "$DIR" >/dev/null
DIR=$WORK/certs-required
"$LOCAL" up 3 --shards 3 --tls "$WORK/tls" --require-client-cert --dir "$DIR" --base-port "$BASE" >/dev/null ||
  fail "squall-local up --require-client-cert failed"
GOOD=(--cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key")
CLI "${GOOD[@]}" --member "$M0" pool create /v volatile >/dev/null || fail "pool create with a client certificate failed"
for i in $(seq 1 6); do
  CLI "${GOOD[@]}" --member "$M0" put "/v/k$i" "v$i" >/dev/null || fail "put with a client certificate failed"
done
[ "$(CLI "${GOOD[@]}" --member "127.0.0.1:$((BASE + 102))" get /v/k3)" = v3 ] || fail "get with a client certificate failed"
[ "$(CLI "${GOOD[@]}" --member "$M0" ls /v/ | wc -l)" = 6 ] || fail "ls (relayed to every shard) failed"
echo "ok: with a client certificate: 6 keys over 3 shards"
expect 5 "requires a client certificate" CLI --cacert "$PKI/ca.pem" --member "$M0" get /v/k1
expect 5 "certificate expired" CLI --cacert "$PKI/ca.pem" --cert "$PKI/oldclient.pem" --key "$PKI/oldclient.key" --member "$M0" get /v/k1
expect 5 "unknown ca" CLI --cacert "$PKI/ca.pem" --cert "$PKI/outsider.pem" --key "$PKI/outsider.key" --member "$M0" get /v/k1
expect 2 "cert and --key go together" CLI --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --member "$M0" get /v/k1
expect 2 "TLS key .*(not the certificate's|mismatch)" CLI --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/outsider.key" --member "$M0" get /v/k1
grep -Eq "a client's TLS handshake failed: .*(peer did not return a certificate|certificate expired|unknown ca|certificate verify failed)" "$DIR/m0.err" ||
  fail "member 0 did not log the refused handshakes"
n=$(CLI "${GOOD[@]}" --member "$M0" status --metrics | grep '^squall_kv_tls_handshake_failures_total ' | cut -d' ' -f2)
[ "${n:-0}" -ge 3 ] || fail "squall_kv_tls_handshake_failures_total is '$n' after 3 refused clients"
echo "ok: squall_kv_tls_handshake_failures_total $n"
code=$(curl -s -o "$WORK/h.out" -w '%{http_code}' --cacert "$PKI/ca.pem" "$(http 0)/v1/kv/v/k1")
[ "$code" = 403 ] && grep -q '"SQ_EPERM"' "$WORK/h.out" || fail "HTTPS without a client certificate: $code $(cat "$WORK/h.out")"
echo "ok: HTTPS without a client certificate: 403 $(cat "$WORK/h.out" | cut -c1-120)"
code=$(curl -s -o "$WORK/h.out" -w '%{http_code}' --cacert "$PKI/ca.pem" --cert "$PKI/oldclient.pem" --key "$PKI/oldclient.key" "$(http 0)/v1/kv/v/k1")
[ "$code" = 403 ] && grep -qi 'expired' "$WORK/h.out" || fail "HTTPS with an expired client certificate: $code $(cat "$WORK/h.out")"
echo "ok: HTTPS with an expired client certificate: 403 $(cut -c1-120 "$WORK/h.out")"
expect 0 "^v1$" curl -sS --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key" "$(http 2)/v1/kv/v/k1"

echo "== 3. member certificates and [tls] configuration errors"
"$LOCAL" down --dir "$DIR" >/dev/null
certdir "$WORK/tls-old" oldmember
DIR=$WORK/old
BASE=$((BASE_PORT + 20))
"$LOCAL" up 1 --tls "$WORK/tls-old" --dir "$DIR" --base-port "$BASE" >/dev/null || fail "up with an expired member certificate failed"
expect 5 "certificate has expired" CLI --cacert "$PKI/ca.pem" --member "127.0.0.1:$((BASE + 100))" status
"$LOCAL" down --dir "$DIR" >/dev/null
certdir "$WORK/tls-else" elsewhere
DIR=$WORK/else
"$LOCAL" up 1 --tls "$WORK/tls-else" --dir "$DIR" --base-port "$BASE" >/dev/null || fail "up with a certificate for another address failed"
expect 5 "IP address mismatch" CLI --cacert "$PKI/ca.pem" --member "127.0.0.1:$((BASE + 100))" status
"$LOCAL" down --dir "$DIR" >/dev/null
cfg=$DIR/m0.cfg
sed '/^ca_file/d' "$cfg" >"$WORK/noca.cfg"
expect 2 "ca_file is required with cert_file" "$SQUALLD" --config "$WORK/noca.cfg"
sed "s|^key_file = .*member.key|key_file = $PKI/outsider.key|" "$cfg" >"$WORK/badkey.cfg"
grep -q "outsider.key" "$WORK/badkey.cfg" || fail "could not point key_file elsewhere"
expect 2 "key_file .*outsider.key: .*key values mismatch \(it must be the PEM key of cert_file" timeout 30 "$SQUALLD" --config "$WORK/badkey.cfg"
echo "PASS"
