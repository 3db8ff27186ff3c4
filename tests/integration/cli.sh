#!/usr/bin/env bash
# cli.sh: what a new user of the squall CLI and tools/squall-local sees when something is off:
# each case checks the exit status and that the message says what is wrong and what to do.
# 3 real squalld members on 127.0.0.1, started by tools/squall-local; every one is stopped at the
# end, by the pids squall-local recorded. Cases:
#   E. the three configs in examples/ (on other ports) serve key-value clients: a persistent and
#      a volatile pool, a put and a get
#   P. paths and bad arguments: each kind of malformed key, prefix or pool path, a pool given as
#      a key, --shards 0 and an unknown store type exit 2 with the exact reason; an unknown pool
#      (watch too) exits 3 naming the pools there are; rm of a missing key names it
#   M. member addresses: a group port instead of a client port, a name that does not resolve and
#      a port nobody listens on each fail at once (exit 5) saying so; a dead member first in the
#      list does not matter
#   T. text output: a watch quotes and escapes values, marks a removal with a bare word (a value
#      "removed" or "deleted" cannot look like one), cuts a 1 MiB value to one short line;
#      history marks removals the same way; get prints the raw bytes; --json carries them all; a
#      watch whose reader went away stops, saying so
#   S. the members say it themselves: a pool given as a key or prefix (SQ_EINVAL), rm of a missing key names it, no "1 pools",
#      "1 keys" or "1 shards"; the client library names an unresolvable host, and fails at once
#      on a group port
#   L. squall-local: the default directory comes from $SQUALL_LOCAL_DIR; after every member
#      stopped, restarting one alone fails at once (not after 30 s) and its last line names a
#      command that works, which then restarts the group
SQUALLD=$1
SQUALL=$2
KV_CHECK=${3:-$(dirname "$SQUALL")/kv_check}
trap '' PIPE
. "$(dirname "$0")/lib.sh"
squall_local_test

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

echo "== P. paths and bad arguments"
expect 0 "created /orders" "$SQUALL" pool create /orders persistent
expect 2 "'orders/1' is not a key: paths start with '/'" "$SQUALL" put orders/1 v
expect 2 "'/orders/' is not a key: a key does not end in '/' \(the keys under it: squall ls /orders/\)" "$SQUALL" put /orders/ v
expect 2 "'/orders//1' is not a key: it has an empty segment \('//'\)" "$SQUALL" put /orders//1 v
expect 2 "'/orders//' is not a prefix: it has an empty segment" "$SQUALL" ls /orders//
expect 2 "'/' is not a prefix inside a pool: ls and watch take one pool's keys" "$SQUALL" ls /
grep -q "is not a key" <<<"$OUT" && fail "ls / calls '/' a key: $OUT"
expect 2 "'/' is not a prefix inside a pool" "$SQUALL" watch / --count 1
long=$(head -c 1100 /dev/zero | tr '\0' k)
expect 2 "is not a key: it is 1108 bytes, and at most 1024 bytes are allowed" "$SQUALL" get "/orders/$long"
expect 2 "'/x/' is not a pool path: a pool path does not end in '/'" "$SQUALL" pool create /x/ volatile
expect 2 "--shards: '0' is not a number of shards \(1 or more; without --shards the pool takes every shard" \
  "$SQUALL" pool create /p2 persistent --shards 0
"$SQUALL" pool ls | grep -q '^/p2 ' && fail "pool create --shards 0 created /p2"
expect 2 "'durable' is neither a store type" "$SQUALL" pool create /nope durable
expect 2 "'/orders' is a pool, not a key: its keys go under it, such as /orders/42" "$SQUALL" put /orders v
expect 2 "'/orders' is a pool, not a key" "$SQUALL" get /orders
expect 2 "'/orders' is a pool: its keys are under '/orders/'" "$SQUALL" ls /orders
expect 2 "'/orders' is a pool: its keys are under '/orders/'" "$SQUALL" watch /orders --count 1
expect 2 '^\{"error":"SQ_EINVAL","message":"invalid argument: .*is a pool, not a key' "$SQUALL" --json get /orders
expect 3 "no pool holds '/nopool/x' \(the pools: /orders; create one with: squall pool create PATH TYPE\)" "$SQUALL" put /nopool/x v
expect 3 "no pool holds '/nopool/' \(the pools: /orders;" "$SQUALL" ls /nopool/
expect 3 "no pool holds '/nopool/' \(the pools: /orders;" "$SQUALL" watch /nopool/ --count 1
expect 3 "no pool holds '/nopool/k'" "$SQUALL" watch /nopool/k --count 1
expect 3 "rm: no such entry: /orders/nokey: no such key" "$SQUALL" rm /orders/nokey
expect 3 "get: no such entry: /orders/nokey: no such key" "$SQUALL" get /orders/nokey

echo "== M. member addresses"
start=$SECONDS
expect 5 "127.0.0.1:$BASE_PORT does not speak squall's client protocol .*is $BASE_PORT a member's group port\? Clients connect to its client_port" \
  "$SQUALL" --member "127.0.0.1:$BASE_PORT" get /orders/x
[ $((SECONDS - start)) -lt 5 ] || fail "a group port took $((SECONDS - start)) s to refuse (the timeout is 10 s)"
expect 5 "cannot reach any member: cannot resolve 'nosuchhost.invalid': " "$SQUALL" --member nosuchhost.invalid:7500 get /orders/x
grep -q "closed or has failed" <<<"$OUT" && fail "a name that does not resolve reads as a failed member: $OUT"
expect 5 "127.0.0.1:$((BASE_PORT + 50)) refuses connections: no member listens there" \
  "$SQUALL" --member "127.0.0.1:$((BASE_PORT + 50))" status
expect 5 '^\{"error":"SQ_ECLOSED","message":"cannot reach any member: .*; cannot resolve' \
  "$SQUALL" --json --member "127.0.0.1:$((BASE_PORT + 50)),nosuchhost.invalid:1" status
expect 0 "version=0x" "$SQUALL" --member "127.0.0.1:$((BASE_PORT + 50)),127.0.0.1:$BASE_PORT,$MEMBERS" put /orders/m x
expect 2 "'127.0.0.1' is not host:port" "$SQUALL" --member 127.0.0.1 status
# status --metrics: the member's Prometheus text, which promtool accepts
"$SQUALL" status --metrics > "$WORK/metrics.txt" || fail "status --metrics"
grep -q '^squall_view_id [0-9]' "$WORK/metrics.txt" || fail "status --metrics: no squall_view_id: $(head -5 "$WORK/metrics.txt")"
if command -v promtool > /dev/null; then
  promtool check metrics < "$WORK/metrics.txt" > "$WORK/promtool.out" 2>&1 ||
    fail "promtool check metrics on status --metrics: $(head -5 "$WORK/promtool.out")"
fi
echo "ok (0): status --metrics: $(grep -c '^squall_' "$WORK/metrics.txt") samples, promtool accepts them"
expect 2 "status: --metrics \(Prometheus' text format\) and --json exclude each other" "$SQUALL" status --metrics --json
expect 2 "metrics" "$SQUALL" get /orders/x --metrics

echo "== T. text output"
"$SQUALL" put /orders/d removed >/dev/null && "$SQUALL" rm /orders/d >/dev/null || fail "put and rm /orders/d"
expect 0 '^/orders/d version=0x[0-9a-f]+ timestamp=[^ ]+ size=7 value="removed"$' "$SQUALL" watch /orders/d --from 0 --count 2
[ "$(tail -n 1 <<<"$OUT" | sed 's/.* //')" = removed ] || fail "the removal is not a bare 'removed': $OUT"
grep -Eq '^/orders/d version=0x[0-9a-f]+ timestamp=[^ ]+ removed$' <<<"$OUT" || fail "no removal line: $OUT"
expect 0 ' removed$' "$SQUALL" history /orders/d
printf 'a "q" \\ b\nc\t\001\377' | "$SQUALL" put /orders/esc - >/dev/null || fail "put /orders/esc"
expect 0 '^/orders/esc .* size=14 value="a \\"q\\" \\\\ b\\nc\\t\\x01\\xff"$' "$SQUALL" watch /orders/esc --count 1
head -c 786432 /dev/urandom | base64 -w 0 >"$WORK/big" # 1 MiB of text
"$SQUALL" put /orders/big - <"$WORK/big" >/dev/null || fail "put of 1 MiB"
expect 0 'value="[A-Za-z0-9+/]{120}"\.\.\. \(120 of 1048576 bytes; --json shows all\)$' "$SQUALL" watch /orders/big --count 1
[ "$(wc -l <<<"$OUT")" = 1 ] && [ ${#OUT} -lt 400 ] || fail "a 1 MiB value's watch line is ${#OUT} bytes long"
"$SQUALL" get /orders/big | cmp -s - "$WORK/big" || fail "get does not print the value's raw bytes"
"$SQUALL" --json watch /orders/big --count 1 >"$WORK/big.json" || fail "watch --json of 1 MiB"
grep -o '"value":"[^"]*"' "$WORK/big.json" | sed 's/^"value":"//; s/"$//' | tr -d '\n' |
  cmp -s - "$WORK/big" || fail "watch --json does not carry the whole value"

# a watch whose reader went away (SIGPIPE ignored, as here) stops and says why
( "$SQUALL" watch /orders/pipe/ 2>"$WORK/pipe.err" | head -n 1 >/dev/null
  echo "${PIPESTATUS[0]}" >"$WORK/pipe.rc" ) &
PIPE_PID=$!
PIDS+=("$PIPE_PID")
sleep 0.5
for ((i = 0; i < 50; i++)); do
  "$SQUALL" put "/orders/pipe/$i" x >/dev/null || fail "put /orders/pipe/$i"
  [ -s "$WORK/pipe.rc" ] && break
  sleep 0.1
done
wait "$PIPE_PID"
[ "$(cat "$WORK/pipe.rc" 2>/dev/null)" = 1 ] || fail "a watch into a closed pipe exited $(cat "$WORK/pipe.rc" 2>/dev/null)"
grep -q "squall: watch: writing the output: Broken pipe" "$WORK/pipe.err" ||
  fail "a watch into a closed pipe said: $(cat "$WORK/pipe.err")"
echo "ok: a watch into a closed pipe: $(cat "$WORK/pipe.err")"

{
  echo "== S. members and the client library say it themselves"
  call() { OUT=$("$KV_CHECK" call "$@" 2>&1) || fail "kv_check call $*: $OUT"; echo "ok: kv_check call $*: $OUT"; }
  call "$MEMBERS" put /orders v
  grep -q "^status=SQ_EINVAL .*message='/orders' is a pool, not a key: its keys go under it, such as /orders/42$" <<<"$OUT" ||
    fail "a member on a pool given as a key: $OUT"
  call "$MEMBERS" ls /orders
  grep -q "^status=SQ_EINVAL .*message='/orders' is a pool: its keys are under '/orders/'$" <<<"$OUT" ||
    fail "a member on a pool given as a prefix: $OUT"
  call "$MEMBERS" rm /orders/nokey
  grep -q "^status=SQ_ENOTFOUND .*message=/orders/nokey: no such key$" <<<"$OUT" || fail "rm of a missing key: $OUT"
  "$SQUALL" status >"$WORK/status.out" || fail "status"
  grep -Eq '(^|[^0-9])1 (pools|keys|shards)' "$WORK/status.out" && fail "status says: $(cat "$WORK/status.out")"
  expect 2 "subgroup persistent has 1 shard: a pool on it can use at most that many" \
    "$SQUALL" pool create /p5 persistent --shards 5
  call nosuchhost.invalid:7500 get /orders/x
  grep -q "message=no member answers: cannot resolve 'nosuchhost.invalid': " <<<"$OUT" ||
    fail "the library on a name that does not resolve: $OUT"
  call "127.0.0.1:$BASE_PORT" get /orders/x
  grep -q "^status=SQ_ECLOSED .*message=127.0.0.1:$BASE_PORT does not speak squall's client protocol" <<<"$OUT" ||
    fail "the library on a group port: $OUT"
  ms=$(sed 's/.* ms=\([0-9]*\) .*/\1/' <<<"$OUT")
  [ "$ms" -lt 5000 ] || fail "the library took $ms ms to give up on a group port (the timeout is 10 s)"
}

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
