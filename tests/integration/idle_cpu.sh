#!/usr/bin/env bash
# idle_cpu.sh: an idle group does not burn the CPU. 3 members run with nothing to send; over
# 3 seconds together they may use at most 5% of one core (heartbeats and timers only).
SQUALLD=$1
. "$(dirname "$0")/lib.sh"
make_configs 3
for i in 0 1 2; do start_member "$i"; done
sleep 1.5
for i in 0 1 2; do
  pid=$(eval echo "\$PID_$i")
  kill -0 "$pid" 2>/dev/null || fail "member $i died"
done
ticks() { local t=0; for i in 0 1 2; do pid=$(eval echo "\$PID_$i"); t=$((t + $(awk '{print $14 + $15}' /proc/$pid/stat))); done; echo $t; }
hz=$(getconf CLK_TCK)
t0=$(ticks); sleep 3; t1=$(ticks)
used=$((t1 - t0))
limit=$((hz * 3 * 5 / 100))
echo "idle: 3 members used $used ticks in 3 s (limit $limit, $hz ticks/s)"
[ "$used" -le "$limit" ] || fail "idle members used $used ticks in 3 s, more than $limit"
grep -q "is in view 0" "$WORK/m0.err" || fail "member 0 never joined"
echo "idle_cpu: 1 passed, 0 failed"
