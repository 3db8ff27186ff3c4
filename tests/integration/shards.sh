#!/usr/bin/env bash
# shards.sh: real squalld processes on 127.0.0.1 with a sharded subgroup (kv: 2 shards of at
# least 2 members) next to a whole-group subgroup (all). Cases:
#   1. 4 members stream into kv: each shard orders its own messages (members of a shard end with
#      the same hash, the two shards with different ones), and an ordered call gathers replies
#      from the caller's shard only;
#   2. kill -9 a member of shard 0: the view that follows is inadequate (shard 0 is below its
#      minimum), so the group waits; the member restarts, joins shard 0 again, receives its state
#      from the shard's survivor, and every member of each shard ends equal.
SQUALLD=$1
. "$(dirname "$0")/lib.sh"
HB_MS=${SQ_TEST_HEARTBEAT_MS:-500}
LAYOUT='[subgroup.all]\nwindow_size = 16\nmax_payload = 64\n[subgroup.kv]\nshards = 2\nmin_members = 2\nwindow_size = 64\nmax_payload = 256'

result() { grep '^member=' "$WORK/m$1.out" | grep -o 'delivered=[0-9]* hash=0x[0-9a-f]*'; }

wait_view0() {
  for ((t = 0; t < 600; t++)); do
    local up=0
    for i in 0 1 2 3; do grep -q '^view=0 ' "$WORK/m$i.out" 2>/dev/null && up=$((up + 1)); done
    [ "$up" = 4 ] && return 0
    sleep 0.05
  done
  fail "the group of 4 did not form"
}

echo "case 1: 4 members, subgroup kv in 2 shards: each shard has its own order"
make_configs 4 64 256 "heartbeat_timeout_ms = $HB_MS" "$LAYOUT"
for i in 0 1 2 3; do
  extra=()
  [ "$i" = 0 ] && extra=(--call-at 2000)
  start_member "$i" --subgroup kv --send 5000 --size 200 --rate 20000 --finish --timeout 120 "${extra[@]}"
done
for i in 0 1 2 3; do
  pid=$(eval echo "\$PID_$i")
  wait "$pid" || fail "member $i exited with status $?"
done
# Ranks 0..3 fill shards 0,1,0,1: members 0 and 2 form shard 0, members 1 and 3 shard 1.
for i in 0 2; do grep -q '^view=0 .* shard=0 adequate=1' "$WORK/m$i.out" || fail "member $i is not in shard 0"; done
for i in 1 3; do grep -q '^view=0 .* shard=1 adequate=1' "$WORK/m$i.out" || fail "member $i is not in shard 1"; done
r0=$(result 0); r1=$(result 1); r2=$(result 2); r3=$(result 3)
[ -n "$r0" ] && [ -n "$r1" ] || fail "no results"
[ "$r0" = "$r2" ] || fail "shard 0 disagrees: member 0 '$r0', member 2 '$r2'"
[ "$r1" = "$r3" ] || fail "shard 1 disagrees: member 1 '$r1', member 3 '$r3'"
[ "$r0" != "$r1" ] || fail "the two shards delivered the same sequence: they are not separate"
case "$r0" in delivered=10002\ *) ;; *) fail "shard 0 delivered '$r0', expected 2 x 5000 + 2 DONE" ;; esac
case "$r1" in delivered=10002\ *) ;; *) fail "shard 1 delivered '$r1', expected 2 x 5000 + 2 DONE" ;; esac
call=$(grep '^call at=2000' "$WORK/m0.out") || fail "member 0 made no ordered call"
case "$call" in *"status=SQ_OK replies=2 "*"[0:0:"*"[2:0:"*|*"status=SQ_OK replies=2 "*"[2:0:"*"[0:0:"*) ;;
  *) fail "the ordered call should be answered by shard 0 (members 0 and 2) only: $call" ;; esac
echo "  shard 0: $r0"
echo "  shard 1: $r1"
echo "  ordered call in shard 0: $(echo "$call" | grep -o 'replies=[0-9]*')"
PIDS=()

echo "case 2: kill -9 a member of shard 0: inadequate view, then it rejoins and gets the shard's state"
BASE_PORT=$((BASE_PORT + 10))
make_configs 4 64 256 "heartbeat_timeout_ms = $HB_MS" "$LAYOUT"
for i in 0 1 2 3; do
  start_member "$i" --subgroup kv --send 20000 --size 200 --rate 10000 --finish --timeout 120 --print
done
wait_view0
sleep 0.5
kill -9 "$PID_2"
for ((t = 0; t < 200; t++)); do grep -q '^view=1 ' "$WORK/m0.out" && break; sleep 0.05; done
grep -q '^view=1 members=0,1,3 .*adequate=0' "$WORK/m0.out" || fail "view 1 should be inadequate: $(grep '^view=1' "$WORK/m0.out")"
grep -q 'view 1 is inadequate (shard 0 of subgroup kv has 1 of its 2 minimum members)' "$WORK/m0.err" ||
  fail "member 0 did not say why view 1 is inadequate"
# While inadequate nothing is delivered, in either shard: the counts stand still.
sleep 0.2
a0=$(grep -c '^deliver ' "$WORK/m0.out"); a1=$(grep -c '^deliver ' "$WORK/m1.out")
sleep 0.5
b0=$(grep -c '^deliver ' "$WORK/m0.out"); b1=$(grep -c '^deliver ' "$WORK/m1.out")
[ "$a0" = "$b0" ] && [ "$a1" = "$b1" ] ||
  fail "members delivered during the inadequate view (member 0: $a0 -> $b0, member 1: $a1 -> $b1)"
echo "  inadequate view 1: deliveries stand at $b0 (shard 0) and $b1 (shard 1)"
mv "$WORK/m2.out" "$WORK/m2.killed.out"
start_member 2 --subgroup kv --send 3000 --size 200 --rate 10000 --finish --timeout 120
for i in 0 1 2 3; do
  pid=$(eval echo "\$PID_$i")
  wait "$pid" || fail "member $i exited with status $?"
done
grep -q '^view=2 members=0,1,3,2 .* shard=0 adequate=1' "$WORK/m2.out" || fail "member 2 did not rejoin shard 0 in view 2"
grep -q 'received shard 0 of subgroup kv: 0 log records and 32 bytes of state' "$WORK/m2.err" || fail "member 2 got no state for shard 0"
grep -q 'handed shard 0 of subgroup kv to member 2 in view 2: 0 log records, 32 bytes of state' "$WORK/m0.err" || fail "member 0 did not hand shard 0 over"
grep -q 'handed shard 0 of subgroup all to member 2' "$WORK/m0.err" || fail "nobody handed subgroup all over"
r0=$(result 0); r1=$(result 1); r2=$(result 2); r3=$(result 3)
[ "$r0" = "$r2" ] || fail "shard 0 disagrees after the rejoin: member 0 '$r0', member 2 '$r2'"
[ "$r1" = "$r3" ] || fail "shard 1 disagrees: member 1 '$r1', member 3 '$r3'"
echo "  shard 0 after the rejoin: $r0"
echo "  shard 1: $r1"
echo "ok"
