#!/usr/bin/env bash
# kill_members.sh: real squalld processes on 127.0.0.1 lose members in the middle of a message
# stream and carry on; the survivors must deliver identical sequences (same hash) and install
# the same views. Cases:
#   1. 5 members: kill -9 a follower, then kill -9 the leader;
#   2. 3 members: kill -9 the leader;
#   3. 3 members: SIGSTOP one (a silent hang: only heartbeats tell); after SIGCONT it must find
#      itself outside the group and exit with status 3 (minority) or 4 (removed);
#   4. 3 members: one leaves cleanly on SIGTERM; the others go on at once;
#   5. 3 members: kill -9 one and restart it with --join: it receives the state (the running
#      fingerprint) and ends with the same hash as the others;
#   6. the same, restarted with its original command: it finds the group running and joins.
# Prints how long each view change took, from the kill to the new view at the last survivor.
SQUALLD=$1
. "$(dirname "$0")/lib.sh"
HB_MS=${SQ_TEST_HEARTBEAT_MS:-500} # sanitizer builds run slower: make tsan raises it

now_ms() { date +%s%3N; }

# start_all N: every member sends 20,000 messages of 256 B at 10,000/s, then --finish.
start_all() {
  local n=$1
  make_configs "$n" 64 256 "heartbeat_timeout_ms = $HB_MS"
  for ((i = 0; i < n; i++)); do
    start_member "$i" --send 20000 --size 256 --rate 10000 --finish --timeout 120
  done
  # Faults are injected into a running group: wait until every member is in view 0.
  for ((t = 0; t < 600; t++)); do
    local up=0
    for ((i = 0; i < n; i++)); do grep -q '^view=0 ' "$WORK/m$i.out" 2>/dev/null && up=$((up + 1)); done
    [ "$up" = "$n" ] && return 0
    sleep 0.05
  done
  fail "the group of $n did not form"
}

# view_time KILL_MS VIEW SURVIVORS...: longest time from the kill to VIEW at the survivors.
view_time() {
  local kill=$1 view=$2; shift 2
  local worst=0 t
  for i in "$@"; do
    t=$(grep -o "^view=$view .*installed_at_ms=[0-9]*" "$WORK/m$i.out" | grep -o '[0-9]*$')
    [ -n "$t" ] || fail "member $i never installed view $view"
    [ $((t - kill)) -gt "$worst" ] && worst=$((t - kill))
  done
  echo "$worst"
}

# same_result SURVIVORS...: equal hashes, counts and final views; each exited 0.
same_result() {
  local first="" line
  for i in "$@"; do
    local pid; pid=$(eval echo "\$PID_$i")
    wait "$pid" || fail "survivor $i exited with status $?"
    line=$(grep -o 'delivered=[0-9]* hash=0x[0-9a-f]* view=[0-9]*' "$WORK/m$i.out") ||
      fail "survivor $i printed no result"
    [ -z "$first" ] && first=$line
    [ "$line" = "$first" ] || fail "survivor $i: '$line' differs from '$first'"
    # The same view history at every survivor.
    diff <(grep -o '^view=[0-9]* members=[0-9,]*' "$WORK/m$i.out") \
         <(grep -o '^view=[0-9]* members=[0-9,]*' "$WORK/m$1.out") > /dev/null ||
      fail "survivors $1 and $i installed different views"
  done
  echo "  survivors $*: $first"
}

echo "case 1: 5 members, kill -9 a follower, then the leader"
start_all 5
sleep 0.7
k1=$(now_ms); kill -9 "$PID_4"
sleep 0.6
k2=$(now_ms); kill -9 "$PID_0"
same_result 1 2 3
grep -q '^view=2 members=1,2,3 ' "$WORK/m1.out" || fail "view 2 is not {1,2,3}"
echo "  view change after kill of a follower: $(view_time "$k1" 1 1 2 3) ms; of the leader: $(view_time "$k2" 2 1 2 3) ms"
PIDS=()

echo "case 2: 3 members, kill -9 the leader"
BASE_PORT=$((BASE_PORT + 10))
start_all 3
sleep 0.8
k1=$(now_ms); kill -9 "$PID_0"
same_result 1 2
grep -q '^view=1 members=1,2 ' "$WORK/m1.out" || fail "view 1 is not {1,2}"
echo "  view change after kill of the leader: $(view_time "$k1" 1 1 2) ms"
PIDS=()

echo "case 3: 3 members, one hangs (SIGSTOP), heartbeats find it"
BASE_PORT=$((BASE_PORT + 10))
start_all 3
sleep 0.7
k1=$(now_ms); kill -STOP "$PID_2"
same_result 0 1
grep -q '^view=1 members=0,1 ' "$WORK/m0.out" || fail "view 1 is not {0,1}"
echo "  view change after a hang: $(view_time "$k1" 1 0 1) ms (heartbeat_timeout_ms = $HB_MS)"
kill -CONT "$PID_2"
wait "$PID_2"; st=$?
[ "$st" = 3 ] || [ "$st" = 4 ] || fail "the hung member exited $st after it woke, wanted 3 or 4"
grep -q "minority side\|removed it from the group" "$WORK/m2.err" || fail "the hung member did not say why it stopped"
echo "  the hung member woke up and exited with status $st: $(grep -o 'stopped in view.*' "$WORK/m2.err" | head -1)"
PIDS=()

echo "case 4: 3 members, one leaves cleanly (SIGTERM)"
BASE_PORT=$((BASE_PORT + 10))
start_all 3
sleep 0.7
k1=$(now_ms); kill -TERM "$PID_1"
same_result 0 2
grep -q '^view=1 members=0,2 ' "$WORK/m0.out" || fail "view 1 is not {0,2}"
wait "$PID_1" || fail "the member that left exited with status $?"
grep -q "left the group" "$WORK/m1.err" || fail "the member that left did not say so"
echo "  view change after a clean leave: $(view_time "$k1" 1 0 2) ms"
PIDS=()

# rejoin_case N FLAGS: kill -9 member 2 of 3 and restart it with FLAGS (--join, or nothing: a
# restarted member finds the group running and joins by itself).
rejoin_case() {
  local label=$1; shift
  echo "case $label: 3 members, kill -9 one, restart it ${*:-with the same command}: it gets the state and ends equal"
  BASE_PORT=$((BASE_PORT + 10))
  start_all 3
  sleep 0.6
  local k1 j1; k1=$(now_ms); kill -9 "$PID_2"
  for ((t = 0; t < 200; t++)); do grep -q '^view=1 ' "$WORK/m0.out" && break; sleep 0.05; done
  mv "$WORK/m2.out" "$WORK/m2.killed.out"
  j1=$(now_ms)
  start_member 2 "$@" --send 3000 --size 256 --rate 10000 --finish --timeout 120
  same_result 0 1
  wait "$PID_2" || fail "the rejoined member exited with status $?"
  local r0 r2
  r0=$(grep -o 'delivered=[0-9]* hash=0x[0-9a-f]* view=[0-9]*' "$WORK/m0.out")
  r2=$(grep -o 'delivered=[0-9]* hash=0x[0-9a-f]* view=[0-9]*' "$WORK/m2.out")
  [ "$r2" = "$r0" ] || fail "the rejoined member ended with '$r2', the others with '$r0'"
  grep -q '^view=2 members=0,1,2 ' "$WORK/m2.out" || fail "the restarted member did not join in view 2"
  grep -q "received shard 0 of subgroup main: 0 log records and 32 bytes of state" "$WORK/m2.err" || fail "the joiner did not receive the state"
  echo "  rejoined member 2: $r2"
  echo "  view change after the kill: $(view_time "$k1" 1 0 1) ms; from the restart to the view with it: $(view_time "$j1" 2 0 1 2) ms"
  PIDS=()
}
rejoin_case 5 --join
rejoin_case 6
echo "kill_members: 6 passed, 0 failed"
