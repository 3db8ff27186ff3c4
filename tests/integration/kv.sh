#!/usr/bin/env bash
# kv.sh: the key-value store on 3 real squalld members on 127.0.0.1, started by
# tools/squall-local, driven by the squall CLI and kv_check (the client library). Cases:
#   1. pools: create (persistent, volatile, trigger), list, duplicates and bad types refused
#   2. put, conditional put (stale version, must-not-exist), get, history, ls, rm
#   3. a get as of time T returns the value current at T
#   4. bad input: long keys (exit 2, like every bad argument), values over the limit, unknown
#      pools, missing versions, a malformed frame: each a clear error, and the member keeps
#      serving
#   5. 4 clients x 1000 conditional increments of one counter: exactly 4000, 4000 versions, and
#      a watch from version 0 saw every one in order
#   5b. one client shared by a thread of blocking calls, a thread of asynchronous puts and a
#      watch: all answered right, callbacks only on the client's I/O thread, the watch complete;
#      traced puts and gets carry their stage times in order
#   6. watches: a prefix watch from version 0 sees earlier and later updates in version order;
#      a trigger pool keeps nothing but reaches watchers
#   7. kill -9 of a member during a write stream, then its restart: no acknowledged put is lost,
#      and the restarted member holds them all
#   8. every member stops, the group starts again from its logs: pools and persistent data are
#      back, volatile data is gone; then every member is killed, two of them restart the group
#      from their disks, and the third joins it later holding every acknowledged put
SQUALLD=$1
SQUALL=$2
KV_CHECK=$3
trap '' PIPE # a member that closes a connection we write to must not kill the test
. "$(dirname "$0")/lib.sh"
squall_local_test

"$LOCAL" up 3 --dir "$DIR" --base-port "$BASE_PORT" > "$WORK/up.out" 2>&1 ||
  fail "squall-local up: $(cat "$WORK/up.out")"
MEMBERS=$(cat "$DIR/members")
export SQUALL_MEMBERS=$MEMBERS
sq() { "$SQUALL" "$@"; }
# expect_status N CMD...: runs the CLI and checks its exit status.
expect_status() {
  local want=$1; shift
  local out rc=0
  out=$("$SQUALL" "$@" 2>&1) || rc=$?
  [ "$rc" = "$want" ] || fail "squall ${*:1:3} exited $rc, expected $want: ${out:0:300}"
  LAST_OUT=$out
}
field() { echo " $1" | grep -o " $2=[^ ]*" | head -1 | cut -d= -f2; }

echo "== 1. pools"
expect_status 0 pool create /orders persistent
expect_status 0 pool create /cache volatile
expect_status 0 pool create /events trigger
expect_status 4 pool create /orders volatile
expect_status 4 pool create /orders/sub volatile
expect_status 2 pool create /nope durable
echo "$LAST_OUT" | grep -q "neither a store type" || fail "bad store type message: $LAST_OUT"
n=$(sq pool ls | wc -l)
[ "$n" = 3 ] || fail "pool ls shows $n pools"

echo "== 2. put, conditional put, get, history, ls, rm"
v1=$(field "$(sq put /orders/42 '{"qty": 3}')" version)
v2=$(field "$(sq put /orders/42 '{"qty": 4}' --if-version "$v1")" version)
[ -n "$v2" ] || fail "conditional put at the current version failed"
expect_status 4 put /orders/42 '{"qty": 5}' --if-version "$v1"
echo "$LAST_OUT" | grep -q "$v2" || fail "a conflict does not name the current version: $LAST_OUT"
expect_status 4 put /orders/42 x --if-absent
[ "$(sq get /orders/42)" = '{"qty": 4}' ] || fail "get after the failed conditional puts"
[ "$(sq get /orders/42 --version "$v1")" = '{"qty": 3}' ] || fail "get at version $v1"
[ "$(sq history /orders/42 | wc -l)" = 2 ] || fail "history of /orders/42: $(sq history /orders/42)"
sq put /orders/43 a > /dev/null
[ "$(sq ls /orders/ | wc -l)" = 2 ] || fail "ls /orders/: $(sq ls /orders/)"
vr=$(field "$(sq rm /orders/43)" version)
[ -n "$vr" ] || fail "rm gave no version"
expect_status 3 get /orders/43
expect_status 3 rm /orders/43
[ "$(sq ls /orders/ | wc -l)" = 1 ] || fail "ls after rm: $(sq ls /orders/)"
[ "$(sq history /orders/43 | tail -1 | grep -c " removed$")" = 1 ] || fail "history shows no removal"
expect_status 0 put /cache/a 1
expect_status 4 put /cache/a 2 --if-absent
[ "$(sq get /cache/a --stable)" = 1 ] || fail "stable get in a volatile pool"

echo "== 3. get as of a time"
sq put /orders/t first > /dev/null
sleep 0.05
T=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
sleep 0.05
sq put /orders/t second > /dev/null
[ "$(sq get /orders/t --at "$T")" = first ] || fail "get --at $T: $(sq get /orders/t --at "$T" 2>&1)"
[ "$(sq get /orders/t)" = second ] || fail "latest value"
expect_status 3 get /orders/t --at 2001-01-01T00:00:00Z
lsT=$(sq ls /orders/ --at "$T" | grep -c '^/orders/t ')
[ "$lsT" = 1 ] || fail "ls --at T does not show /orders/t"

echo "== 4. bad input"
long=$(head -c 1100 /dev/zero | tr '\0' k)
expect_status 2 get "/orders/$long"
echo "$LAST_OUT" | grep -q "1024 bytes" || fail "long key message: $LAST_OUT"
expect_status 3 put /nowhere/1 x
echo "$LAST_OUT" | grep -q "no pool" || fail "unknown pool message: $LAST_OUT"
# values above the slot size take the large-message path, and come back byte for byte
head -c 1100000 /dev/urandom > "$WORK/big"
expect_status 0 put /orders/big - < "$WORK/big"
"$SQUALL" get /orders/big > "$WORK/big.out" || fail "get /orders/big"
cmp -s "$WORK/big" "$WORK/big.out" || fail "a 1.1 MB value came back different"
head -c $((64 * 1024 * 1024 + 1)) /dev/zero > "$WORK/huge"
expect_status 1 put /orders/huge - < "$WORK/huge"
echo "$LAST_OUT" | grep -q "limit" || fail "oversized value message: $LAST_OUT"
rm -f "$WORK/big" "$WORK/big.out" "$WORK/huge"
expect_status 3 get /orders/t --version "$v1"
expect_status 1 get /events/x
expect_status 2 get /orders/42 --version banana
expect_status 2 get /orders/42 --at yesterday
CP0=${MEMBERS%%,*}
# garbage on a client connection: the member says why and closes it, and keeps serving
exec 3<>"/dev/tcp/${CP0%:*}/${CP0#*:}"
printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' >&3
timeout 5 cat <&3 > "$WORK/garbage.out" || true
exec 3<&-
grep -q "bad magic\|impossible frame" "$WORK/garbage.out" || fail "no reason for a malformed frame"
SQUALL_MEMBERS=$CP0 expect_status 0 status

echo "== 5. 4 clients x 1000 conditional increments"
"$KV_CHECK" counter "$MEMBERS" /orders/counter 4 1000 > "$WORK/counter.out" 2>&1 ||
  fail "counter: $(cat "$WORK/counter.out")"
cat "$WORK/counter.out"

echo "== 5b. one client shared by blocking calls, asynchronous puts and a watch; traced calls"
"$KV_CHECK" mixed "$MEMBERS" /orders /cache > "$WORK/mixed.out" 2>&1 ||
  fail "mixed: $(cat "$WORK/mixed.out")"
cat "$WORK/mixed.out"

echo "== 6. watches"
sq put /orders/w/1 one > /dev/null
"$SQUALL" watch /orders/w/ --from 0 --count 4 > "$WORK/watch.out" 2>&1 &
WPID=$!
PIDS+=("$WPID")
"$SQUALL" watch /events/ --count 2 > "$WORK/trigger.out" 2>&1 &
TPID=$!
PIDS+=("$TPID")
sleep 0.5
sq put /orders/w/2 two > /dev/null
sq rm /orders/w/1 > /dev/null
sq put /orders/w/3 three > /dev/null
# a trigger pool keeps nothing, so the watch sees only what comes after it registered: put
# until it shows the first update, then one more
for ((t = 0; t < 100; t++)); do
  sq put /events/e1 hello > /dev/null
  [ -s "$WORK/trigger.out" ] && break
  sleep 0.1
done
sq put /events/e2 world > /dev/null
for ((t = 0; t < 100; t++)); do kill -0 "$WPID" 2>/dev/null || kill -0 "$TPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$WPID" 2>/dev/null && fail "the prefix watch saw only: $(cat "$WORK/watch.out")"
kill -0 "$TPID" 2>/dev/null && fail "the trigger watch saw only: $(cat "$WORK/trigger.out")"
wait "$WPID" || fail "watch exited with $?: $(cat "$WORK/watch.out")"
reaped "$WPID"
wait "$TPID" || fail "trigger watch exited with $?: $(cat "$WORK/trigger.out")"
reaped "$TPID"
keys=$(awk '{print $1}' "$WORK/watch.out" | tr '\n' ' ')
[ "$keys" = "/orders/w/1 /orders/w/2 /orders/w/1 /orders/w/3 " ] || fail "prefix watch saw: $(cat "$WORK/watch.out")"
grep -q " removed$" "$WORK/watch.out" || fail "the watch did not show the removal"
awk '{print $2}' "$WORK/watch.out" | cut -d= -f2 | sort -c || fail "watch not in version order"
[ "$(grep -c '^/events/e[12] ' "$WORK/trigger.out")" = 2 ] || fail "trigger watch: $(cat "$WORK/trigger.out")"
expect_status 1 history /events/e1

echo "== 7. kill -9 of a member during a write stream, with watches through it"
CP1=$(echo "$MEMBERS" | cut -d, -f2)
# one watch only through member 1 (it waits for the restart), one through any member (it moves)
"$SQUALL" --member "$CP1" watch /orders/k/ --from 0 --count 3000 > "$WORK/kw1.out" 2>&1 &
KW1=$!
PIDS+=("$KW1")
"$SQUALL" watch /orders/k/ --from 0 --count 3000 > "$WORK/kw2.out" 2>&1 &
KW2=$!
PIDS+=("$KW2")
"$KV_CHECK" writer "$MEMBERS" /orders/k/ 3000 "$WORK/acked" > "$WORK/writer.out" 2>&1 &
KPID=$!
PIDS+=("$KPID")
for ((t = 0; t < 100; t++)); do
  [ -f "$WORK/acked" ] && [ "$(wc -l < "$WORK/acked")" -ge 500 ] && break
  sleep 0.05
done
"$LOCAL" kill 1 --dir "$DIR" > /dev/null || fail "squall-local kill 1"
sleep 1
"$LOCAL" restart 1 --dir "$DIR" > "$WORK/restart.out" 2>&1 || fail "restart: $(cat "$WORK/restart.out")"
wait "$KPID" || fail "writer: $(cat "$WORK/writer.out")"
reaped "$KPID"
cat "$WORK/writer.out"
"$KV_CHECK" verify "$MEMBERS" "$WORK/acked" || fail "acknowledged puts lost"
# the restarted member answers from its own state
"$KV_CHECK" verify "$CP1" "$WORK/acked" || fail "the restarted member misses acknowledged puts"
# both watches saw each of the 3000 puts once, in version order, across the failure
for w in KW1 KW2; do
  pid=${!w}
  for ((t = 0; t < 200; t++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && fail "watch $w saw $(wc -l < "$WORK/${w,,}.out") of 3000 puts"
  wait "$pid" || fail "watch $w exited with $?: $(tail -3 "$WORK/${w,,}.out")"
  reaped "$pid"
  out="$WORK/${w,,}.out"
  [ "$(awk '{print $1}' "$out" | sort -u | wc -l)" = 3000 ] || fail "watch $w: $(awk '{print $1}' "$out" | sort -u | wc -l) distinct keys"
  awk '{print $2}' "$out" | cut -d= -f2 | while read -r v; do printf '%d\n' "$v"; done |
    sort -c -n -u || fail "watch $w: versions not strictly increasing"
done
echo "   both watches saw all 3000 puts in order"


echo "== 8. the whole group stops and starts again from its logs"
before=$(sq get /orders/counter)
"$LOCAL" down --dir "$DIR" > /dev/null || fail "squall-local down"
"$LOCAL" up 3 --dir "$DIR" --base-port "$BASE_PORT" > "$WORK/up2.out" 2>&1 ||
  fail "second up: $(cat "$WORK/up2.out")"
[ "$(sq pool ls | wc -l)" = 3 ] || fail "pools after the restart: $(sq pool ls)"
[ "$(sq get /orders/counter)" = "$before" ] || fail "the counter after the restart"
"$KV_CHECK" verify "$MEMBERS" "$WORK/acked" || fail "acknowledged puts lost in the restart"
expect_status 3 get /cache/a

echo "== 8b. every member killed; a majority of the last view restarts the group, the last joins"
for i in 0 1 2; do "$LOCAL" kill "$i" --dir "$DIR" > /dev/null || fail "kill $i"; done
sleep 0.3
# members 1 and 2 were in every view to the end (member 0 went first): they restart it
"$LOCAL" restart 1 2 --dir "$DIR" > "$WORK/restart12.out" 2>&1 ||
  fail "restart 1 2: $(cat "$WORK/restart12.out")"
grep -q 'restarting the group from its disks with 2 of 3 members' "$DIR/m1.err" ||
  fail "member 1 did not restart the group with 2 of 3: $(tail -3 "$DIR/m1.err")"
M12=$(echo "$MEMBERS" | cut -d, -f2,3)
[ "$(SQUALL_MEMBERS=$M12 "$SQUALL" get /orders/counter)" = "$before" ] || fail "the counter after the majority restart"
"$KV_CHECK" verify "$M12" "$WORK/acked" || fail "acknowledged puts lost in the majority restart"
SQUALL_MEMBERS=$M12 expect_status 0 put /orders/after-restart yes
"$LOCAL" restart 0 --dir "$DIR" > "$WORK/restart0.out" 2>&1 || fail "restart 0: $(cat "$WORK/restart0.out")"
M0=$(echo "$MEMBERS" | cut -d, -f1)
[ "$(SQUALL_MEMBERS=$M0 "$SQUALL" get --stable /orders/after-restart)" = yes ] ||
  fail "member 0 does not see the put made after the restart"
"$KV_CHECK" verify "$M0" "$WORK/acked" || fail "member 0 lost acknowledged puts"
echo "   members 1 and 2 restarted the group; member 0 joined and holds every acknowledged put"

echo "== 9. a pool of 2 shards: members relay to the key's shard, lists and watches fan out"
"$LOCAL" down --dir "$DIR" > /dev/null || fail "squall-local down"
DIR="$WORK/local2"
"$LOCAL" up 3 --dir "$DIR" --base-port "$((BASE_PORT + 10))" --shards 2 > "$WORK/up3.out" 2>&1 ||
  fail "up with 2 shards: $(cat "$WORK/up3.out")"
MEMBERS=$(cat "$DIR/members")
export SQUALL_MEMBERS=$MEMBERS
expect_status 0 pool create /s volatile
"$SQUALL" watch /s/ --count 40 > "$WORK/watch2.out" 2>&1 &
WPID=$!
PIDS+=("$WPID")
sleep 0.5
for m in ${MEMBERS//,/ }; do   # every member takes puts for keys of both shards
  for ((i = 0; i < 10; i++)); do
    SQUALL_MEMBERS=$m "$SQUALL" put "/s/$m-$i" "v$i" > /dev/null || fail "put via $m"
  done
done
for m in ${MEMBERS//,/ }; do
  n=$(SQUALL_MEMBERS=$m "$SQUALL" ls /s/ | wc -l)
  [ "$n" = 30 ] || fail "ls /s/ via $m lists $n keys"
  SQUALL_MEMBERS=$m "$SQUALL" ls /s/ | awk '{print $1}' | sort -c || fail "ls not sorted"
  [ "$(SQUALL_MEMBERS=$m "$SQUALL" get "/s/${MEMBERS%%,*}-7")" = v7 ] || fail "get via $m"
  SQUALL_MEMBERS=$m expect_status 4 put "/s/${MEMBERS%%,*}-3" x --if-absent
done
"$SQUALL" status | grep -q "shard 1: members" || fail "status shows no second shard"
for ((i = 0; i < 10; i++)); do "$SQUALL" put "/s/extra-$i" x > /dev/null; done
for ((t = 0; t < 100; t++)); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$WPID" 2>/dev/null && fail "the watch over 2 shards saw $(wc -l < "$WORK/watch2.out") of 40 updates"
wait "$WPID" || fail "watch over 2 shards exited with $?"
reaped "$WPID"
echo "PASS"
