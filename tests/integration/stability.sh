#!/usr/bin/env bash
# stability.sh: a key-value group of 3 real squalld members (tools/squall-local) on 127.0.0.1
# stays whole through the stalls a busy machine has, and a member the group removed comes back
# by itself. Heartbeat timeout T = $SQ_TEST_HEARTBEAT_MS (default 1000 ms). Cases:
#   1. load: a writer and a kv-bench put load run for LOAD_SECONDS (default 30) while CPU hogs
#      and a disk writer with fdatasync run beside them: no view change, no failed operation
#   2. one member stopped (SIGSTOP) for 0.5 T, six times: no view change
#   3. all three members stopped at once for 2 T (a whole-machine stall): no view change
#   4. one member stopped for 3 T: the others remove it; after SIGCONT the same process rejoins
#      as a new incarnation and serves again; a writer runs throughout and every put it had
#      acknowledged reads back at every member
#   5. a 2-member view (the third killed) whose members both stop, one stalled for 3 T and the
#      other alone on its side: both come back by themselves, restarting the group from their
#      disks, and the third joins it with every acknowledged put
# Every member's suspicions are logged with their cause: a failure shows them.
# Usage: stability.sh SQUALLD SQUALL KV_CHECK KV_BENCH
SQUALLD=$1
SQUALL=$2
KV_CHECK=$3
KV_BENCH=$4
trap '' PIPE
. "$(dirname "$0")/lib.sh"
squall_local_test
HB_MS=${SQ_TEST_HEARTBEAT_MS:-1000}
LOAD_SECONDS=${LOAD_SECONDS:-30}
HOGS=()
stop_all() { # the hogs, and members left stopped (SIGSTOP) are let go before they are stopped
  for p in ${HOGS[@]+"${HOGS[@]}"}; do kill -9 "$p" 2>/dev/null; done
  for p in ${HOGS[@]+"${HOGS[@]}"}; do wait "$p" 2>/dev/null; done
  for f in "$DIR"/m*.pid; do [ -f "$f" ] && kill -CONT "$(cat "$f")" 2>/dev/null; done
  stop_local # rm -rf of $WORK takes the disk hog's file too
}
trap stop_all EXIT
# views_installed: how many views the members installed, summed over their logs
views_installed() { cat "$DIR"/m*.err | grep -c "view [0-9]* installed" || true; }
pid_of() { cat "$DIR/m$1.pid"; }
msleep() { sleep "$(awk "BEGIN { print $1 / 1000 }")"; }

"$LOCAL" up 3 --dir "$DIR" --base-port "$BASE_PORT" --heartbeat-ms "$HB_MS" > "$WORK/up.out" 2>&1 ||
  fail "squall-local up: $(cat "$WORK/up.out")"
MEMBERS=$(cat "$DIR/members")
export SQUALL_MEMBERS=$MEMBERS
"$SQUALL" pool create /s persistent > /dev/null || fail "pool create"
"$SQUALL" pool create /v volatile > /dev/null || fail "pool create"
base=$(views_installed)
echo "heartbeat timeout ${HB_MS} ms; views installed at start: $base"

echo "== 1. load for ${LOAD_SECONDS}s beside CPU hogs and a disk writer"
for i in 1 2; do
  ( exec timeout "$((LOAD_SECONDS + 5))" sh -c 'while :; do :; done' ) &
  HOGS+=($!)
done
( exec timeout "$((LOAD_SECONDS + 5))" sh -c "while :; do dd if=/dev/zero of='$WORK/disk-hog' bs=1M count=32 oflag=dsync 2>/dev/null; done" ) &
HOGS+=($!)
"$KV_BENCH" --members "$MEMBERS" --pool /s --ops put --threads 2 --size 1024 \
  --seconds "$LOAD_SECONDS" > "$WORK/bench.out" 2>&1 &
BPID=$!
PIDS+=("$BPID")
"$KV_BENCH" --members "$MEMBERS" --pool /v --ops put --threads 2 --size 256 \
  --seconds "$LOAD_SECONDS" > "$WORK/bench-v.out" 2>&1 &
BVPID=$!
PIDS+=("$BVPID")
wait "$BPID" || fail "kv-bench (persistent) failed: $(cat "$WORK/bench.out")"
reaped "$BPID"
wait "$BVPID" || fail "kv-bench (volatile) failed: $(cat "$WORK/bench-v.out")"
reaped "$BVPID"
for p in "${HOGS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
HOGS=()
for f in bench bench-v; do
  line=$(grep '^case=' "$WORK/$f.out" | head -1)
  [ -n "$line" ] || fail "no result from kv-bench: $(cat "$WORK/$f.out")"
  echo "   $line" | cut -c1-120
  echo " $line" | grep -q " errors=0 " || fail "operations failed under load: $line"
done
[ "$(views_installed)" = "$base" ] || fail "views changed under load: $(grep -h 'installed\|suspect' "$DIR"/m*.err | tail -12)"
echo "   no view change"

echo "== 2. member 1 stopped for 0.5 T, six times"
P1=$(pid_of 1)
for i in 1 2 3 4 5 6; do
  kill -STOP "$P1"; msleep $((HB_MS / 2)); kill -CONT "$P1"; msleep $((HB_MS / 2))
done
sleep 1
[ "$(views_installed)" = "$base" ] || fail "a stall of 0.5 T changed the view: $(grep -h 'installed\|suspect' "$DIR"/m*.err | tail -12)"
echo "   no view change"

echo "== 3. every member stopped at once for 2 T"
ALL="$(pid_of 0) $(pid_of 1) $(pid_of 2)"
kill -STOP $ALL; msleep $((HB_MS * 2)); kill -CONT $ALL
sleep 2
[ "$(views_installed)" = "$base" ] || fail "a whole-machine stall of 2 T changed the view: $(grep -h 'installed\|suspect\|stopped' "$DIR"/m*.err | tail -12)"
"$SQUALL" put /s/after-pause yes > /dev/null || fail "no put after the whole-machine stall"
echo "   no view change; the group serves"

echo "== 4. member 2 stopped for 3 T: removed, then back by itself"
"$KV_CHECK" writer "$MEMBERS" /s/w 8000 "$WORK/acked" > "$WORK/writer.out" 2>&1 &
KPID=$!
PIDS+=("$KPID")
sleep 1
P2=$(pid_of 2)
acked_before=$(wc -l < "$WORK/acked")
kill -STOP "$P2"; msleep $((HB_MS * 3))
acked_stalled=$(wc -l < "$WORK/acked")
kill -CONT "$P2"
[ "$acked_stalled" -gt "$acked_before" ] ||
  fail "no put was acknowledged while member 2 was stopped ($acked_before before, $acked_stalled after)"
grep -q "members 0,1, my rank" "$DIR/m0.err" || fail "member 2 was not removed"
# the same process rejoins: a view of 3 members again, and member 2 serves
for ((t = 0; t < 300; t++)); do
  [ "$(grep -c 'members 0,1,2, my rank' "$DIR/m2.err")" -ge 2 ] && break
  sleep 0.1
done
[ "$(grep -c 'members 0,1,2, my rank' "$DIR/m2.err")" -ge 2 ] ||
  fail "member 2 did not rejoin: $(tail -8 "$DIR/m2.err")"
kill -0 "$P2" 2>/dev/null || fail "member 2 exited instead of rejoining"
[ "$(pid_of 2)" = "$P2" ] || fail "member 2 is another process"
grep -q "rejoin" "$DIR/m2.err" || fail "member 2 did not say it rejoins"
wait "$KPID" || fail "writer: $(cat "$WORK/writer.out")"
reaped "$KPID"
acked=$(wc -l < "$WORK/acked")
[ "$acked" = 8000 ] || fail "the writer had $acked puts acknowledged"
echo "   member 2 rejoined (pid $P2); puts acknowledged while it was stopped: $((acked_stalled - acked_before))"
CP2=$(echo "$MEMBERS" | cut -d, -f3)
"$KV_CHECK" verify "$MEMBERS" "$WORK/acked" || fail "acknowledged puts lost"
"$KV_CHECK" verify "$CP2" "$WORK/acked" || fail "the rejoined member misses acknowledged puts"
grep -h "suspects member" "$DIR"/m*.err | head -3 | sed 's/^/   logged: /'
grep -q "suspects member 2.*heartbeat" "$DIR/m0.err" "$DIR/m1.err" ||
  fail "no member logged why it suspected member 2"
echo "== 5. a 2-member view stopped on both sides comes back by itself"
# member 2 is killed (the view is 0,1); member 1 stalls for 3 T: member 0 is left alone, 1 of 2,
# and stops; member 1 resumes to find itself alone too. Both restart the group from their disks
# (they are the whole last view), then member 2 joins.
"$SQUALL" put /s/two-member before > /dev/null || fail "put before the kill"
"$LOCAL" kill 2 --dir "$DIR" > /dev/null || fail "kill 2"
for ((t = 0; t < 100; t++)); do
  [ "$(grep -c 'installed: members 0,1, my rank' "$DIR/m0.err")" -ge 2 ] && break
  sleep 0.1
done
[ "$(grep -c 'installed: members 0,1, my rank' "$DIR/m0.err")" -ge 2 ] || fail "members 0 and 1 did not go on without member 2"
"$SQUALL" put /s/two-member during > /dev/null || fail "put in the 2-member view"
r0=$(grep -c "rejoined the group" "$DIR/m0.err")
r1=$(grep -c "rejoined the group" "$DIR/m1.err")
P1=$(pid_of 1)
kill -STOP "$P1"; msleep $((HB_MS * 3)); kill -CONT "$P1"
for ((t = 0; t < 900; t++)); do
  [ "$(grep -c 'rejoined the group' "$DIR/m0.err")" -gt "$r0" ] &&
    [ "$(grep -c 'rejoined the group' "$DIR/m1.err")" -gt "$r1" ] && break
  sleep 0.1
done
[ "$(grep -c 'rejoined the group' "$DIR/m0.err")" -gt "$r0" ] || fail "member 0 did not come back: $(tail -4 "$DIR/m0.err")"
[ "$(grep -c 'rejoined the group' "$DIR/m1.err")" -gt "$r1" ] || fail "member 1 did not come back: $(tail -4 "$DIR/m1.err")"
grep -q "minority side" "$DIR/m0.err" || fail "member 0 never stopped: the case tested nothing"
echo "   both stopped on their sides and restarted the group together after $((t / 10)) s"
[ "$("$SQUALL" get --stable /s/two-member)" = during ] || fail "the 2-member view's put is lost"
"$LOCAL" restart 2 --dir "$DIR" > "$WORK/restart2.out" 2>&1 || fail "restart 2: $(cat "$WORK/restart2.out")"
CP2=$(echo "$MEMBERS" | cut -d, -f3)
[ "$(SQUALL_MEMBERS=$CP2 "$SQUALL" get --stable /s/two-member)" = during ] ||
  fail "member 2 does not see the 2-member view's put after joining"
"$KV_CHECK" verify "$CP2" "$WORK/acked" || fail "member 2 misses acknowledged puts after joining"
echo "   member 2 joined the restarted group and holds every acknowledged put"
echo "PASS"
