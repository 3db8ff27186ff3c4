#!/usr/bin/env bash
# persist.sh: a persistent subgroup on real squalld processes on 127.0.0.1. Cases:
#   1. 3 members stream updates; all three are killed with SIGKILL mid-stream. Every member's log,
#      recovered from disk, holds every version any member had reported persisted, with the same
#      bytes everywhere, and the logs agree on everything they share.
#   2. All three start again on those logs: the group restarts from them (a new view id after
#      the logged ones, the longest log is the reference, the others catch up), every member
#      replays its log and ends with the same fingerprint, and the logs stay equal.
#   3. In a running group, a member is killed and comes back on an empty disk: it receives the
#      shard's log (and state) from a survivor, and at the end its log equals the others'.
#   4. The same, but it comes back on its own log: it receives only what it missed.
SQUALLD=$1
. "$(dirname "$0")/lib.sh"
HB_MS=${SQ_TEST_HEARTBEAT_MS:-500}
LAYOUT='[subgroup.orders]\ndelivery = persistent\nwindow_size = 64\nmax_payload = 512'

setup() {
  make_configs 3 64 512 "heartbeat_timeout_ms = $HB_MS\ndata_dir = $WORK/data" "$LAYOUT"
}
wait_view0() {
  for ((t = 0; t < 600; t++)); do
    local up=0
    for i in 0 1 2; do grep -q '^view=0 ' "$WORK/m$i.out" 2>/dev/null && up=$((up + 1)); done
    [ "$up" = 3 ] && return 0
    sleep 0.05
  done
  fail "the group did not form"
}
dump() { "$SQUALLD" --config "$WORK/m$1.cfg" --dump-log --upto "$2" 2>>"$WORK/dump$1.err"; }
field() { echo " $1" | grep -o " $2=[0-9a-fx]*" | cut -d= -f2; }
# wait_all: members 0-2 all end with status 0.
wait_all() {
  for i in 0 1 2; do
    local pid; pid=$(eval echo "\$PID_$i")
    wait "$pid" || fail "member $i exited with status $?: $(tail -3 "$WORK/m$i.err")"
  done
}
# logs_equal_at_end: every member's whole log has the same records (sets r to the dump lines).
logs_equal_at_end() {
  r=()
  for i in 0 1 2; do r+=("$(dump "$i" 0xffffffffffffffff)"); done
  for i in 1 2; do
    [ "$(field "${r[$i]}" upto_hash)" = "$(field "${r[0]}" upto_hash)" ] &&
    [ "$(field "${r[$i]}" records)" = "$(field "${r[0]}" records)" ] ||
      fail "member $i's log differs at the end: '${r[0]}' / '${r[$i]}'"
  done
}

echo "case 1: kill -9 all 3 members mid-stream; the recovered logs hold every version reported persisted"
setup
for i in 0 1 2; do start_member "$i" --send 50000 --size 300 --rate 10000 --finish --timeout 60; done
wait_view0
sleep 1.5
kill -9 "$PID_0" "$PID_1" "$PID_2"
for p in "$PID_0" "$PID_1" "$PID_2"; do wait "$p" 2>/dev/null; done
PIDS=()
best=0
for i in 0 1 2; do
  v=$(grep -o '^persisted version=0x[0-9a-f]*' "$WORK/m$i.out" | tail -1 | cut -d= -f2)
  [ -n "$v" ] && [ $((v)) -gt $((best)) ] && best=$v
done
[ "$best" != 0 ] || fail "no member reported anything persisted"
lines=()
for i in 0 1 2; do
  l=$(dump "$i" "$best") || fail "member $i: its log does not recover: $(cat "$WORK/dump$i.err")"
  [ "$(field "$l" has_upto)" = 1 ] || fail "member $i lost version $best, which was reported persisted: $l"
  lines+=("$l")
done
for i in 1 2; do
  [ "$(field "${lines[$i]}" upto_hash)" = "$(field "${lines[0]}" upto_hash)" ] &&
  [ "$(field "${lines[$i]}" upto_records)" = "$(field "${lines[0]}" upto_records)" ] ||
    fail "the logs differ up to $best: '${lines[0]}' / '${lines[$i]}'"
done
# Beyond the frontier the logs may differ in length, never in content: compare up to the shortest.
short=$(for l in "${lines[@]}"; do printf '%d\n' "$(field "$l" last)"; done | sort -n | head -1)
h0=""
for i in 0 1 2; do
  h=$(field "$(dump "$i" "$short")" upto_hash)
  [ -z "$h0" ] && h0=$h
  [ "$h" = "$h0" ] || fail "the logs disagree up to $short, the end of the shortest"
done
echo "  reported persisted up to $best; recovered: $(for l in "${lines[@]}"; do echo -n "[$(field "$l" records) records, last $(field "$l" last)] "; done)"

echo "case 2: all three start again on those logs: the group goes on from them"
BASE_PORT=$((BASE_PORT + 10))
make_configs 3 64 512 "heartbeat_timeout_ms = $HB_MS\ndata_dir = $WORK/data" "$LAYOUT"
lastview=$(( $(for l in "${lines[@]}"; do printf '%d\n' "$(field "$l" last)"; done | sort -n | tail -1) >> 32 ))
for i in 0 1 2; do start_member "$i" --send 3000 --size 300 --rate 10000 --finish --timeout 60; done
wait_all
first=$(grep -o '^view=[0-9]*' "$WORK/m0.out" | head -1 | cut -d= -f2)
[ "$first" -gt "$lastview" ] || fail "the restarted group's first view $first does not follow the logged view $lastview"
grep -q 'replayed [0-9]* logged updates of subgroup orders' "$WORK/m0.err" || fail "member 0 replayed nothing"
res=()
for i in 0 1 2; do res+=("$(grep '^member=' "$WORK/m$i.out" | grep -o 'hash=0x[0-9a-f]*')"); done
[ "${res[0]}" = "${res[1]}" ] && [ "${res[0]}" = "${res[2]}" ] || fail "after the restart the members differ: ${res[*]}"
r=()
for i in 0 1 2; do r+=("$(dump "$i" "$best")"); done
for i in 0 1 2; do
  [ "$(field "${r[$i]}" has_upto)" = 1 ] || fail "member $i lost $best across the restart"
  [ "$(field "${r[$i]}" records)" = "$(field "${r[0]}" records)" ] &&
  [ "$(field "${r[$i]}" upto_hash)" = "$(field "${r[0]}" upto_hash)" ] ||
    fail "the logs differ after the restart: '${r[0]}' / '${r[$i]}'"
done
newlast=$(field "${r[0]}" last)
[ $(( newlast >> 32 )) -ge "$first" ] || fail "no new updates were logged after the restart"
echo "  restarted in view $first (logs ended in view $lastview); $(grep -o 'replayed [0-9]* logged updates' "$WORK/m0.err" | head -1) at member 0; every log now: $(field "${r[0]}" records) records, last $newlast"
PIDS=()
rm -rf "$WORK/data"

echo "case 3: a member killed and restarted on an empty disk receives the shard's log"
BASE_PORT=$((BASE_PORT + 10))
setup
# 40,000 at 10,000/s: members 0 and 1 are still sending when member 2 is back (about 2 s after
# the kill); had they finished first, they would exit before it rejoined.
for i in 0 1 2; do start_member "$i" --send 40000 --size 300 --rate 10000 --finish --timeout 60; done
wait_view0
sleep 0.8
kill -9 "$PID_2"
for ((t = 0; t < 200; t++)); do grep -q '^view=1 ' "$WORK/m0.out" && break; sleep 0.05; done
rm -rf "$WORK/data/member-2"
mv "$WORK/m2.out" "$WORK/m2.killed.out"
start_member 2 --send 2000 --size 300 --rate 10000 --finish --timeout 60
wait_all
grep -q 'received shard 0 of subgroup orders: [1-9][0-9]* log records' "$WORK/m2.err" ||
  fail "member 2 received no log records"
logs_equal_at_end
echo "  $(grep -o 'received shard 0 of subgroup orders: [0-9]* log records' "$WORK/m2.err"); every log: $(field "${r[0]}" records) records"
PIDS=()
rm -rf "$WORK/data"

echo "case 4: a member killed and restarted on its own log receives only what it missed"
BASE_PORT=$((BASE_PORT + 10))
setup
# 40,000 at 10,000/s: members 0 and 1 are still sending when member 2 is back (about 2 s after
# the kill); had they finished first, they would exit before it rejoined.
for i in 0 1 2; do start_member "$i" --send 40000 --size 300 --rate 10000 --finish --timeout 60; done
wait_view0
sleep 0.8
kill -9 "$PID_2"
for ((t = 0; t < 200; t++)); do grep -q '^view=1 ' "$WORK/m0.out" && break; sleep 0.05; done
had=$(dump 2 0 | grep -o ' records=[0-9]*' | cut -d= -f2)
[ "${had:-0}" -gt 0 ] || fail "member 2 had logged nothing before it was killed"
mv "$WORK/m2.out" "$WORK/m2.killed.out"
mv "$WORK/m2.err" "$WORK/m2.killed.err"
start_member 2 --send 2000 --size 300 --rate 10000 --finish --timeout 60
wait_all
got=$(grep -o 'received shard 0 of subgroup orders: [0-9]* log records' "$WORK/m2.err" | grep -o '[0-9]* log' | cut -d' ' -f1)
[ -n "$got" ] || fail "member 2 did not rejoin with its log"
grep -q "holds $had records up to version" "$WORK/m2.err" || fail "member 2 did not keep its $had records"
logs_equal_at_end
total=$(field "${r[0]}" records)
[ $((had + got)) -le "$total" ] && [ "$got" -lt $((total - had + 1)) ] || fail "member 2 kept $had, received $got, of $total"
echo "  member 2 kept $had records, received $got it had missed; every log: $total records"
echo "ok"
