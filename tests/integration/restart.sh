#!/usr/bin/env bash
# restart.sh: restarting a whole group from its disks when only a majority comes back, on real
# squalld processes on 127.0.0.1 (one persistent subgroup). Cases:
#   1. 3 members stream updates and are all killed with SIGKILL. The two with the shortest logs
#      start again: they restart the group without the third (after restart_wait_ms), every
#      version any member reported persisted is in their logs, and they go on. The third then
#      comes back on its own log and joins; if its log went past the restarted history it cuts
#      that suffix. At the end all three logs are equal.
#   2. A single member of those three cannot restart the group: it gives up after
#      connect_timeout_ms, saying it needs 2 of the 3 members of the last view (a SIGSTOP and
#      SIGCONT while it waits changes nothing).
#   3. Member 2 is killed; 0 and 1 go on in a view without it and persist more; then they are
#      killed too. Members 1 and 2 are a majority of the configured group but not of the last
#      view {0, 1}: member 2 knows nothing of what 0 and 1 persisted without it, so they must
#      not restart (they give up, naming member 0). With member 0 back, the group restarts and
#      nothing reported persisted is lost.
#   4. A member that stands by (in no persistent shard: the shard is full) writes its view file
#      all the same, and the group restarts.
#   5. The leader of a restart of 4 members is killed after it sent the first view, while the others
#      still link up in it (in a namespace where iptables keeps 2 and 3 from linking with 1). They
#      do not wait for it (nor would they count a new process of it as the one that sent the
#      view): each stops at once saying so, and started again the three restart the group.
#   6. A member whose data directory takes no writes (its view file cannot be replaced: a full
#      disk, here a directory in the way of the file's replacement) stays out of the restart and
#      says why; the other two restart the group without it instead of failing each restart it
#      would join and then break (chaos seed 121).
SQUALLD=$1
. "$(dirname "$0")/lib.sh"
HB_MS=${SQ_TEST_HEARTBEAT_MS:-500}
LAYOUT='[subgroup.orders]\ndelivery = persistent\nwindow_size = 64\nmax_payload = 512'

configs() { # configs CONNECT_TIMEOUT_MS
  BASE_PORT=$((BASE_PORT + 10))
  make_configs 3 64 512 "heartbeat_timeout_ms = $HB_MS\ndata_dir = $WORK/data\nrestart_wait_ms = 300\nconnect_timeout_ms = $1" "$LAYOUT"
}
wait_view() { # wait_view MEMBER VIEW-REGEX
  for ((t = 0; t < 600; t++)); do
    grep -Eq "^view=$2 " "$WORK/m$1.out" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "member $1 never installed a view matching $2"
}
dump() { "$SQUALLD" --config "$WORK/m$1.cfg" --dump-log --upto "$2" 2>>"$WORK/dump$1.err"; }
field() { echo " $1" | grep -o " $2=[0-9a-fx]*" | cut -d= -f2; }
wait_ok() { # wait_ok MEMBER...: each exits with status 0
  for i in "$@"; do
    local pid; pid=$(eval echo "\$PID_$i")
    wait "$pid" || fail "member $i exited with status $?: $(tail -3 "$WORK/m$i.err")"
  done
}
# best_persisted: the highest version any current member process reported persisted.
best_persisted() {
  local best=0 v
  for f in "$WORK"/m[0-9].out; do
    v=$(grep -o '^persisted version=0x[0-9a-f]*' "$f" | tail -1 | cut -d= -f2)
    [ -n "$v" ] && [ $((v)) -gt $((best)) ] && best=$v
  done
  echo "$best"
}
# holds_all V MEMBER...: each member's log holds version V, and they agree up to it.
holds_all() {
  local v=$1 h0="" l h; shift
  for i in "$@"; do
    l=$(dump "$i" "$v") || fail "member $i: its log does not recover: $(cat "$WORK/dump$i.err")"
    [ "$(field "$l" has_upto)" = 1 ] || fail "member $i lost version $v, which was reported persisted: $l"
    h=$(field "$l" upto_hash)
    [ -z "$h0" ] && h0=$h
    [ "$h" = "$h0" ] || fail "the logs differ up to $v at member $i"
  done
}
logs_equal() { # logs_equal MEMBER...: whole logs are equal
  local l0="" l
  for i in "$@"; do
    l=$(dump "$i" 0xffffffffffffffff)
    [ -z "$l0" ] && l0=$l
    [ "$(field "$l" upto_hash)" = "$(field "$l0" upto_hash)" ] &&
    [ "$(field "$l" records)" = "$(field "$l0" records)" ] || fail "member $i's log differs at the end: '$l0' / '$l'"
  done
  echo "$l0"
}
retire() { for i in "$@"; do for x in out err; do [ -f "$WORK/m$i.$x" ] && mv "$WORK/m$i.$x" "$WORK/m$i.$x.$RANDOM$RANDOM"; done; done; }

echo "case 1: all 3 killed; the two with the shortest logs restart the group, the third joins later"
configs 20000
for i in 0 1 2; do start_member "$i" --send 50000 --size 300 --rate 10000 --finish --timeout 60; done
for i in 0 1 2; do wait_view "$i" 0; done
sleep 1.5
kill -9 "$PID_0" "$PID_1" "$PID_2"
for p in "$PID_0" "$PID_1" "$PID_2"; do wait "$p" 2>/dev/null; done
PIDS=()
best=$(best_persisted)
[ "$best" != 0 ] || fail "no member reported anything persisted"
order=$(for i in 0 1 2; do echo "$(( $(field "$(dump "$i" 0)" last) )) $i"; done | sort -n | cut -d' ' -f2 | tr '\n' ' ')
read -r a b c <<< "$order"
lasts=$(for i in 0 1 2; do echo -n "$i:$(field "$(dump "$i" 0)" last) "; done)
retire 0 1 2
start_member "$a" --send 30000 --size 300 --rate 10000 --finish --timeout 60
start_member "$b" --send 30000 --size 300 --rate 10000 --finish --timeout 60
wait_view "$a" '[0-9]+'
wait_view "$b" '[0-9]+'
lead=$((a < b ? a : b))
grep -q 'restarting the group from its disks with 2 of 3 members' "$WORK/m$lead.err" ||
  fail "member $lead did not lead a restart of 2 of 3 members"
sleep 0.5
start_member "$c" --send 2000 --size 300 --rate 10000 --finish --timeout 60
wait_ok "$a" "$b" "$c"
grep -q 'received shard 0 of subgroup orders' "$WORK/m$c.err" || fail "member $c did not rejoin"
holds_all "$best" 0 1 2
end=$(logs_equal 0 1 2)
if grep -q 'cut [0-9]* records' "$WORK/m$c.err"; then
  cut=$(grep -o 'cut [0-9]* records (versions [0-9a-fx]* to [0-9a-fx]*)' "$WORK/m$c.err")
else
  cut="nothing to cut"
fi
echo "  logs after the kill (member:last) $lasts; members $a and $b restarted with everything up to $best; member $c joined: $cut; every log now $(field "$end" records) records"

echo "case 2: one member alone cannot restart the group"
retire 0 1 2
configs 2500
start_member 0 --send 10 --finish --timeout 30
sleep 0.5
kill -STOP "$PID_0"; sleep 0.3; kill -CONT "$PID_0" # a pause while it waits is no transport error
wait "$PID_0"; st=$?
[ "$st" = 1 ] || fail "member 0 alone exited with status $st (want 1)"
grep -q 'did not restart within 2500 ms' "$WORK/m0.err" ||
  fail "member 0 did not give up for want of members: $(tail -1 "$WORK/m0.err")"
grep -q 'restarting needs 2 of the 3 members of view' "$WORK/m0.err" ||
  fail "member 0 did not say why it could not restart: $(tail -2 "$WORK/m0.err")"
grep -q '^view=' "$WORK/m0.out" && fail "member 0 alone installed a view"
echo "  $(grep -o 'restarting needs.*' "$WORK/m0.err" | head -1)"
PIDS=()
rm -rf "$WORK/data"

echo "case 3: a majority of the configured group that is no majority of the last view waits for it"
retire 0 1 2
configs 20000
for i in 0 1 2; do start_member "$i" --send 50000 --size 300 --rate 10000 --finish --timeout 60; done
for i in 0 1 2; do wait_view "$i" 0; done
sleep 0.8
kill -9 "$PID_2"
wait_view 0 1
before=$(best_persisted)
sleep 1.2
kill -9 "$PID_0" "$PID_1"
for p in "$PID_0" "$PID_1" "$PID_2"; do wait "$p" 2>/dev/null; done
PIDS=()
best=$(best_persisted)
[ $((best)) -gt $((before)) ] || fail "members 0 and 1 persisted nothing without member 2 ($before, $best)"
l2=$(field "$(dump 2 0)" last)
[ $((l2)) -lt $((best)) ] || fail "member 2's log ($l2) reaches $best although it was killed first"
retire 0 1 2
configs 3000
start_member 1 --send 10 --finish --timeout 30
start_member 2 --send 10 --finish --timeout 30
for i in 1 2; do
  pid=$(eval echo "\$PID_$i")
  wait "$pid"; st=$?
  [ "$st" = 1 ] || fail "member $i exited with status $st (want 1): $(tail -2 "$WORK/m$i.err")"
  grep -q '^view=' "$WORK/m$i.out" && fail "members 1 and 2 restarted without member 0"
done
grep -hq 'restarting needs 2 of the 2 members of view 1.*missing: 0' "$WORK/m1.err" "$WORK/m2.err" ||
  fail "no member said it waits for member 0: $(tail -2 "$WORK/m1.err")"
why=$(grep -ho 'restarting needs.*' "$WORK/m1.err" "$WORK/m2.err" | head -1)
PIDS=()
retire 0 1 2
configs 20000
for i in 2 1 0; do start_member "$i" --send 2000 --size 300 --rate 10000 --finish --timeout 60; done
wait_ok 0 1 2
grep -q 'restarting the group from its disks with 3 of 3 members' "$WORK/m0.err" ||
  fail "member 0 did not lead the restart"
holds_all "$best" 0 1 2
end=$(logs_equal 0 1 2)
echo "  without member 0: '$why'; with it: everything up to $best (member 2's log ended at $l2) in every log, $(field "$end" records) records"

echo "case 4: a member in no persistent shard keeps a view file too, and the group restarts"
retire 0 1 2
rm -rf "$WORK/data"
LAYOUT="$LAYOUT\nmax_members = 2\n[subgroup.main]\nwindow_size = 64\nmax_payload = 512"
configs 20000
for i in 0 1 2; do start_member "$i" --subgroup main --send 300 --size 300 --finish --timeout 60; done
wait_ok 0 1 2
for i in 0 1 2; do [ -f "$WORK/data/member-$i/view" ] || fail "member $i wrote no view file"; done
[ -d "$WORK/data/member-2/orders.0" ] && fail "member 2 holds a log although the shard has 2 members"
retire 0 1 2
for i in 0 1 2; do start_member "$i" --subgroup main --send 300 --size 300 --finish --timeout 60; done
wait_ok 0 1 2
grep -q 'restarting the group from its disks with 3 of 3 members' "$WORK/m0.err" ||
  fail "the group with a stand-by member did not restart from its disks"
echo "  the stand-by member (no log) wrote its view file, and the group restarted"

echo "case 5: the leader of a restart dies while the others link up in its first view; they stop at once"
# In a network namespace of its own (its loopback only), where iptables refuses connections to
# member 1's port: members 2 and 3 cannot link with member 1, so every member but the leader
# waits to link up in the first view the leader sent, and the leader is killed meanwhile.
[ "$(id -u)" = 0 ] || fail "case 5 needs root (a network namespace, iptables)"
NS=sqrs$$
ip netns add "$NS" || fail "ip netns add $NS"
trap 'cleanup; ip netns del "$NS" 2>/dev/null' EXIT
ip -n "$NS" link set lo up
retire 0 1 2
rm -rf "$WORK/data"
LAYOUT='[subgroup.orders]\ndelivery = persistent\nwindow_size = 64\nmax_payload = 512'
make_configs 4 64 512 "heartbeat_timeout_ms = $HB_MS\ndata_dir = $WORK/data\nrestart_wait_ms = 300\nconnect_timeout_ms = 20000" "$LAYOUT"
start_ns() { # start_ns I ARGS...: member I in the namespace
  local i=$1; shift
  ip netns exec "$NS" "$SQUALLD" --config "$WORK/m$i.cfg" "$@" > "$WORK/m$i.out" 2> "$WORK/m$i.err" &
  PIDS+=($!)
  eval "PID_$i=$!"
}
for i in 0 1 2 3; do start_ns "$i" --send 300 --size 300 --finish --timeout 60; done
wait_ok 0 1 2 3
PIDS=()
retire 0 1 2 3
ip netns exec "$NS" iptables -A INPUT -p tcp --dport $((BASE_PORT + 1)) -j REJECT --reject-with tcp-reset ||
  fail "iptables in $NS"
for i in 0 1 2 3; do start_ns "$i" --send 10 --size 300 --finish --timeout 60; done
for ((t = 0; t < 400; t++)); do
  n=$(grep -l 'takes the first view' "$WORK"/m[123].err 2>/dev/null | wc -l)
  [ "$n" = 3 ] && break
  sleep 0.025
done
[ "$t" -lt 400 ] || fail "members 1, 2 and 3 did not all take member 0's first view"
kill -9 "$PID_0"
wait "$PID_0" 2>/dev/null
t0=$(date +%s%N)
for i in 1 2 3; do
  pid=$(eval echo "\$PID_$i")
  wait "$pid"; st=$?
  [ "$st" = 1 ] || fail "member $i exited with status $st (want 1): $(tail -2 "$WORK/m$i.err")"
  grep -q 'restart did not complete: member 0.*went away' "$WORK/m$i.err" ||
    fail "member $i did not say that member 0 went away: $(tail -2 "$WORK/m$i.err")"
done
waited_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$waited_ms" -lt 5000 ] || fail "members 1, 2 and 3 took $waited_ms ms to give up on the dead leader"
grep -q '^view=' "$WORK"/m[123].out && fail "a member ran in a view whose leader was dead"
why=$(grep -ho 'the restart did not complete: member 0[^;]*' "$WORK/m1.err" | head -1)
PIDS=()
retire 0 1 2 3
ip netns exec "$NS" iptables -F INPUT
for i in 1 2 3; do start_ns "$i" --send 10 --size 300 --finish --timeout 60; done
wait_ok 1 2 3
grep -q 'restarting the group from its disks with 3 of 4 members' "$WORK/m1.err" ||
  fail "members 1, 2 and 3 did not restart the group led by member 1"
echo "  members 1, 2 and 3 stopped within $waited_ms ms of the leader's death ('$why'); started again, they restarted the group"

echo "case 6: a member that cannot write its view file stays out of the restart; the other two restart"
ip netns del "$NS" 2>/dev/null
trap cleanup EXIT
PIDS=()
retire 0 1 2 3
rm -rf "$WORK/data"
LAYOUT='[subgroup.orders]\ndelivery = persistent\nwindow_size = 64\nmax_payload = 512'
configs 20000
for i in 0 1 2; do start_member "$i" --send 300 --size 300 --finish --timeout 60; done
wait_ok 0 1 2
retire 0 1 2
mkdir "$WORK/data/member-2/view.new" # the view file's replacement cannot be written
start_member 2 --send 10 --size 300 --finish --timeout 60
sleep 0.5 # member 2 would be linked with the others by the time they start
for i in 0 1; do start_member "$i" --send 300 --size 300 --finish --timeout 60; done
wait "$PID_2"; st=$?
[ "$st" = 1 ] || fail "member 2 exited with status $st (want 1): $(tail -2 "$WORK/m2.err")"
grep -q 'cannot write the view file.*cannot take part in the group until its data directory takes writes' "$WORK/m2.err" ||
  fail "member 2 did not say it cannot write its view file: $(tail -2 "$WORK/m2.err")"
grep -q '^view=' "$WORK/m2.out" && fail "member 2 took a view although it cannot write its view file"
wait_ok 0 1
grep -q 'restarting the group from its disks with 2 of 3 members' "$WORK/m0.err" ||
  fail "members 0 and 1 did not restart the group without member 2: $(grep -h 'restart' "$WORK/m0.err" | tail -2)"
echo "  member 2: '$(grep -o 'cannot write the view file[^(]*' "$WORK/m2.err" | head -1)'; 0 and 1 restarted the group"
echo "ok"
