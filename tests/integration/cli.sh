#!/usr/bin/env bash
# cli.sh: what a new user of the squall CLI and tools/squall-local sees when something is off:
# each case checks the exit status and that the message says what is wrong and what to do.
# 3 real squalld members on 127.0.0.1, started by tools/squall-local; every one is stopped at the
# end, by the pids squall-local recorded. Cases:
#   E. the three configs in examples/ (on other ports) serve key-value clients: a persistent and
#      a volatile pool, a put and a get
#   L. squall-local: the default directory comes from $SQUALL_LOCAL_DIR; after every member
#      stopped, restarting one alone fails at once (not after 30 s) and its last line names a
#      command that works, which then restarts the group
SQUALLD=$1
SQUALL=$2
trap '' PIPE
. "$(dirname "$0")/lib.sh"
LOCAL="$(cd "$(dirname "$0")/../.." && pwd)/tools/squall-local"
DIR="$WORK/local"
export SQUALLD SQUALL
stop_local() {
  "$LOCAL" down --dir "$DIR" >/dev/null 2>&1 || true
  for f in "$DIR"/m*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
  cleanup
}
trap stop_local EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$DIR"/m*.err; do [ -f "$f" ] && { echo "--- $f"; tail -n 8 "$f"; }; done
  exit 1
}
# expect STATUS PATTERN CMD...: CMD exits with STATUS and its output (stdout and stderr) matches
# the extended regular expression PATTERN; OUT keeps the output.
expect() {
  local want=$1 pattern=$2 rc=0
  shift 2
  OUT=$("$@" 2>&1) || rc=$?
  [ "$rc" = "$want" ] || fail "'${*:1:6}' exited $rc, expected $want: ${OUT:0:400}"
  grep -Eq -- "$pattern" <<<"$OUT" || fail "'${*:1:6}' said '${OUT:0:400}', expected /$pattern/"
  echo "ok ($rc): ${*:1:6}: $(tail -n 1 <<<"$OUT" | cut -c1-150)"
}

echo "== E. examples/member*.cfg run the key-value service"
EXPORT=$((BASE_PORT + 10))
EX_PIDS=()
for i in 0 1 2; do
  subst=()
  for j in 0 1 2; do
    subst+=(-e "s/^port = 740$j /port = $((EXPORT + j)) /" -e "s/^client_port = 750$j /client_port = $((EXPORT + 100 + j)) /")
  done
  sed "${subst[@]}" -e "s|^data_dir = [^ ]*|data_dir = $WORK/exdata|" \
    "$(dirname "$0")/../../examples/member$i.cfg" >"$WORK/ex$i.cfg"
  grep -q "^client_port = $((EXPORT + 100 + i)) " "$WORK/ex$i.cfg" || fail "examples/member$i.cfg has no client_port 750$i"
  "$SQUALLD" --config "$WORK/ex$i.cfg" >"$WORK/ex$i.out" 2>"$WORK/ex$i.err" &
  PIDS+=($!)
  EX_PIDS+=($!)
done
for ((t = 0; t < 300; t++)); do
  [ "$(cat "$WORK"/ex[012].out 2>/dev/null | grep -c '^kv ready')" = 3 ] && break
  sleep 0.1
done
[ "$(cat "$WORK"/ex[012].out | grep -c '^kv ready')" = 3 ] || fail "the examples' members did not serve clients: $(tail -n 3 "$WORK"/ex*.err)"
EXM=127.0.0.1:$((EXPORT + 100)),127.0.0.1:$((EXPORT + 101)),127.0.0.1:$((EXPORT + 102))
expect 0 "created /orders" "$SQUALL" --member "$EXM" pool create /orders persistent
expect 0 "created /cache" "$SQUALL" --member "$EXM" pool create /cache volatile
expect 0 "version=0x1 " "$SQUALL" --member "$EXM" put /orders/1 hello
expect 0 "^hello$" "$SQUALL" --member "$EXM" get --stable /orders/1
expect 0 "^/orders store=persistent" "$SQUALL" --member "$EXM" pool ls
kill -TERM "${EX_PIDS[@]}"
for p in "${EX_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done

"$LOCAL" up 3 --dir "$DIR" --base-port "$BASE_PORT" >"$WORK/up.out" 2>&1 ||
  fail "squall-local up: $(cat "$WORK/up.out")"
MEMBERS=$(cat "$DIR/members")
export SQUALL_MEMBERS=$MEMBERS

echo "== L. squall-local"
SQUALL_LOCAL_DIR="$WORK/elsewhere" expect 1 "no members in $WORK/elsewhere" "$LOCAL" status
for i in 0 1 2; do "$LOCAL" kill "$i" --dir "$DIR" >/dev/null || fail "kill $i"; done
sleep 0.3
start=$SECONDS
expect 1 "no member of .* runs" "$LOCAL" restart 1 --dir "$DIR"
[ $((SECONDS - start)) -lt 20 ] || fail "restart 1 alone took $((SECONDS - start)) s to fail"
advice=$(tail -n 1 <<<"$OUT")
grep -Eq "a restart needs a majority of the last view started together: squall-local restart [0-9 ]+ --dir " <<<"$advice" ||
  fail "the last line of a hopeless restart gives no command: $advice"
[ -f "$DIR/m1.pid" ] && kill -0 "$(cat "$DIR/m1.pid")" 2>/dev/null &&
  fail "a failed restart left member 1 running"
ids=$(sed 's/.*squall-local restart \([0-9 ]*\) --dir .*/\1/' <<<"$advice")
# shellcheck disable=SC2086 # the ids are words
expect 0 "member 1 127.0.0.1" "$LOCAL" restart $ids --dir "$DIR"
for i in 0 1 2; do
  [[ " $ids " == *" $i "* ]] || "$LOCAL" restart "$i" --dir "$DIR" >/dev/null || fail "restart $i"
done
expect 0 "member 2 alive" "$LOCAL" status --dir "$DIR"

"$LOCAL" down --dir "$DIR" >/dev/null || fail "squall-local down"
echo "PASS"
