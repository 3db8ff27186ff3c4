#!/usr/bin/env bash
# limits.sh: the bounds of the client port ([kv] in the config) on a real squalld on 127.0.0.1:
#   1. max_connections: with that many connections open, the next one is closed at once (and
#      logged, at most once a second, and counted); once they close, clients are served again.
#   2. max_connections_per_host: connections from one address (127.0.0.2) beyond it are closed
#      while another address (127.0.0.1) is still served.
#   3. max_frame_bytes: a request longer than it is answered SQ_EMSGSIZE with the bound, before
#      its bytes are buffered; smaller ones go on working.
#   4. bad values stop squalld with status 2 naming the key.
SQUALLD=$1
SQUALL=$2
. "$(dirname "$0")/lib.sh"
squall_local_test
BASE=$BASE_PORT
M="127.0.0.1:$((BASE + 100))"
CLI() { "$SQUALL" --timeout 3000 --member "$M" "$@"; }
restart_with() { # restart_with LINES: member 0 again, with a [kv] section of LINES
  "$LOCAL" kill 0 --dir "$DIR" >/dev/null
  sed -i '/^\[kv\]/,$d' "$DIR/m0.cfg"
  printf '[kv]\n%b' "$1" >>"$DIR/m0.cfg"
  "$LOCAL" restart 0 --dir "$DIR" >"$WORK/restart.out" 2>&1 ||
    fail "member 0 did not restart with [kv] $1: $(cat "$WORK/restart.out")"
}
# hold N SRC: N idle connections from address SRC, kept open until the returned pid is killed;
# it prints "open N" once they are, or "closed I" for the first that the member closed.
hold() {
  python3 - "$1" "$2" "$((BASE + 100))" <<'PY' &
import socket, sys, time
n, src, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), source_address=(src, 0))
    socks.append(s)
time.sleep(0.3)
for i, s in enumerate(socks):
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            print("closed", i, flush=True)
            sys.exit(0)
    except BlockingIOError:
        pass
print("open", n, flush=True)
time.sleep(60)
PY
  HOLD_PID=$!
  PIDS+=("$HOLD_PID")
}
drop_hold() { kill "$HOLD_PID" 2>/dev/null; wait "$HOLD_PID" 2>/dev/null; reaped "$HOLD_PID"; }

"$LOCAL" up 1 --dir "$DIR" --base-port "$BASE" >/dev/null || fail "squall-local up 1 failed"
CLI pool create /v volatile >/dev/null || fail "pool create failed"

echo "== 1. max_connections"
restart_with "max_connections = 3\n"
hold 3 127.0.0.1 >"$WORK/hold.out"
for ((t = 0; t < 50; t++)); do [ -s "$WORK/hold.out" ] && break; sleep 0.1; done
grep -q "^open 3" "$WORK/hold.out" || fail "3 connections were not kept open: $(cat "$WORK/hold.out")"
rc=0
out=$(CLI put /v/a 1 2>&1) || rc=$?
[ "$rc" = 5 ] || fail "a 4th connection was served (status $rc): $out"
grep -q "refused a client connection: 3 client connections are open (\[kv\] max_connections)" "$DIR/m0.err" ||
  fail "the refusal was not logged: $(tail -3 "$DIR/m0.err")"
echo "ok: the 4th connection was closed: $(grep -o 'refused a client connection.*' "$DIR/m0.err" | head -1)"
drop_hold
CLI put /v/a 1 >/dev/null || fail "not served again after the connections closed"
n=$(CLI status --metrics | grep '^squall_kv_connections_refused_total ' | cut -d' ' -f2)
[ "${n:-0}" -ge 1 ] || fail "squall_kv_connections_refused_total is '$n'"
echo "ok: served again; squall_kv_connections_refused_total $n"

echo "== 2. max_connections_per_host"
restart_with "max_connections = 100\nmax_connections_per_host = 2\n"
hold 3 127.0.0.2 >"$WORK/hold2.out"
for ((t = 0; t < 50; t++)); do [ -s "$WORK/hold2.out" ] && break; sleep 0.1; done
grep -q "^closed 2" "$WORK/hold2.out" || fail "the 3rd connection from 127.0.0.2 was not closed: $(cat "$WORK/hold2.out")"
CLI put /v/b 2 >/dev/null || fail "127.0.0.1 was not served while 127.0.0.2 was at its bound"
drop_hold
grep -q "connections are open from that address (\[kv\] max_connections_per_host)" "$DIR/m0.err" ||
  fail "the per-host refusal was not logged"
echo "ok: the 3rd from 127.0.0.2 closed, 127.0.0.1 served"

echo "== 3. max_frame_bytes"
restart_with "max_frame_bytes = 8192\n"
head -c 10000 /dev/zero | tr '\0' x >"$WORK/big"
rc=0
out=$(CLI put /v/big "$(cat "$WORK/big")" 2>&1) || rc=$?
[ "$rc" != 0 ] || fail "a 10000-byte put went through max_frame_bytes = 8192"
grep -q "above this member's \[kv\] max_frame_bytes (8192)" <<<"$out" || fail "the put did not say why: $out"
echo "ok ($rc): $out"
CLI put /v/small "$(head -c 4000 "$WORK/big")" >/dev/null || fail "a 4000-byte put failed"
[ "$(CLI get /v/small | wc -c)" -ge 4000 ] || fail "the 4000-byte value did not read back"
echo "ok: a 4000-byte put still works"

echo "== 4. bad values"
for bad in "max_connections = 0" "max_frame_bytes = 100" "max_output_bytes = 12" "max_connection = 3"; do
  sed -e '/^\[kv\]/,$d' "$DIR/m0.cfg" >"$WORK/bad.cfg"
  printf '[kv]\n%s\n' "$bad" >>"$WORK/bad.cfg"
  rc=0
  out=$("$SQUALLD" --config "$WORK/bad.cfg" 2>&1) || rc=$?
  [ "$rc" = 2 ] || fail "[kv] $bad: status $rc"
  grep -q "in \[kv\]" <<<"$out" || fail "[kv] $bad: $out"
  echo "ok (2): $out"
done
echo "PASS"
