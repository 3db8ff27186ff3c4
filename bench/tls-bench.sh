#!/usr/bin/env bash
# tls-bench.sh: what TLS costs on the client port. Two groups of 3 local members run side by
# side, one plain and one with [tls] (a CA and certificates made here with openssl); kv-bench
# runs each case on one, then the other, ROUNDS times, alternating, and prints one line per case:
#   case=tls op=put pool=volatile threads=1 plain_ops_per_s=... tls_ops_per_s=... ratio=...
#        plain_p50_us=... tls_p50_us=...
# (ratio = TLS / plain, each the mean over the rounds). Env: BUILD_DIR (default build/),
# SECONDS_PER_CASE (3), ROUNDS (2), CASES ("put:volatile:1 get:volatile:1 put:persistent:1
# put:volatile:16 get:volatile:16").
set -euo pipefail
prog=tls-bench.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${BUILD_DIR:-$root/build}" && pwd) || { echo "$prog: no build directory" >&2; exit 1; }
SECONDS_PER_CASE=${SECONDS_PER_CASE:-3}
ROUNDS=${ROUNDS:-2}
CASES=${CASES:-"put:volatile:1 get:volatile:1 put:persistent:1 put:volatile:16 get:volatile:16"}
export SQUALLD=$build/squalld SQUALL=$build/squall
bench=$build/bench/kv-bench
local_tool=$root/tools/squall-local
for b in "$SQUALLD" "$SQUALL" "$bench"; do
  [ -x "$b" ] || { echo "$prog: missing $b (build it: make build)" >&2; exit 1; }
done
command -v openssl >/dev/null || { echo "$prog: needs openssl (scripts/install-deps)" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/squall-tls-bench.XXXXXX")
finish() {
  local rc=$?
  "$local_tool" down --dir "$dir/plain" >/dev/null 2>&1 || true
  "$local_tool" down --dir "$dir/tls" >/dev/null 2>&1 || true
  [ $rc -eq 0 ] && rm -rf "$dir" || echo "$prog: logs kept in $dir" >&2
  exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM

pki=$dir/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$pki/ca.key" -out "$pki/ca.pem" -subj /CN=squall-bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$pki/member.key" \
  -out "$pki/member.csr" -subj /CN=member 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$pki/ext"
openssl x509 -req -in "$pki/member.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 2 -extfile "$pki/ext" -out "$pki/member.pem" 2>/dev/null

base=$((20000 + ($$ * 7919) % 11000))
"$local_tool" up 3 --dir "$dir/plain" --base-port "$base" >"$dir/up-plain.out" 2>&1 ||
  { cat "$dir/up-plain.out" >&2; exit 1; }
"$local_tool" up 3 --dir "$dir/tls" --base-port "$((base + 10))" --tls "$pki" >"$dir/up-tls.out" 2>&1 ||
  { cat "$dir/up-tls.out" >&2; exit 1; }
plain=(--members "$(cat "$dir/plain/members")")
tls=(--members "$(cat "$dir/tls/members")" --cacert "$pki/ca.pem")
for pool in volatile persistent; do
  "$SQUALL" --member "$(cat "$dir/plain/members")" pool create "/b$pool" "$pool" >/dev/null
  "$SQUALL" --cacert "$pki/ca.pem" --member "$(cat "$dir/tls/members")" pool create "/b$pool" "$pool" >/dev/null
done

field() { grep -o " $1=[0-9.]*" <<<"$2" | head -1 | cut -d= -f2; }
run() { # run NAME ARGS...: one kv-bench run, its case=kv line
  timeout 300 "$bench" "${@:2}" | grep '^case=kv ' || { echo "$prog: kv-bench failed ($1)" >&2; exit 1; }
}
for c in $CASES; do
  IFS=: read -r op pool threads <<<"$c"
  args=(--pool "/b$pool" --ops "$op" --threads "$threads" --size 256 --seconds "$SECONDS_PER_CASE")
  p_ops=0 t_ops=0 p_p50=0 t_p50=0
  for ((r = 0; r < ROUNDS; r++)); do
    a=$(run plain "${plain[@]}" "${args[@]}")
    b=$(run tls "${tls[@]}" "${args[@]}")
    p_ops=$(awk -v x="$p_ops" -v y="$(field ops_per_s "$a")" 'BEGIN { print x + y }')
    t_ops=$(awk -v x="$t_ops" -v y="$(field ops_per_s "$b")" 'BEGIN { print x + y }')
    p_p50=$(awk -v x="$p_p50" -v y="$(field p50_us "$a")" 'BEGIN { print x + y }')
    t_p50=$(awk -v x="$t_p50" -v y="$(field p50_us "$b")" 'BEGIN { print x + y }')
  done
  awk -v op="$op" -v pool="$pool" -v th="$threads" -v po="$p_ops" -v to="$t_ops" -v pp="$p_p50" \
    -v tp="$t_p50" -v n="$ROUNDS" 'BEGIN {
      printf "case=tls op=%s pool=%s threads=%s plain_ops_per_s=%.0f tls_ops_per_s=%.0f ratio=%.3f plain_p50_us=%.0f tls_p50_us=%.0f\n",
        op, pool, th, po / n, to / n, (po > 0 ? to / po : 0), pp / n, tp / n }'
done
