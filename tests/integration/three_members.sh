#!/usr/bin/env bash
# three_members.sh: 3 real squalld processes over loopback (fabric transport, tcp provider)
# deliver 1,000,000 messages of 1 KiB from all three senders, then 50,000 of mixed
# configuration from one sender; every member must print the same hash of its delivered sequence.
SQUALLD=$1
. "$(dirname "$0")/lib.sh"

run_case() {
  local name=$1 total=$2 size=$3; shift 3
  local sends=("$@")
  for i in 0 1 2; do
    start_member "$i" --send "${sends[$i]}" --size "$size" --expect "$total" --timeout 240
  done
  for i in 0 1 2; do
    local pid; pid=$(eval echo "\$PID_$i")
    wait "$pid" || fail "$name: member $i exited with status $?"
  done
  local h0 h
  h0=$(grep -o 'hash=0x[0-9a-f]*' "$WORK/m0.out") || fail "$name: member 0 printed no hash"
  for i in 0 1 2; do
    grep -q "delivered=$total " "$WORK/m$i.out" || fail "$name: member $i did not deliver $total"
    h=$(grep -o 'hash=0x[0-9a-f]*' "$WORK/m$i.out")
    [ "$h" = "$h0" ] || fail "$name: member $i $h differs from member 0 $h0"
    echo "$name: $(cat "$WORK/m$i.out")"
  done
  PIDS=()
}

make_configs 3 256 1024
run_case "all-senders-1KiB" 1000000 1024 333334 333333 333333

# A point-to-point query: member 0 asks member 2 for its fingerprint at the end of a run.
BASE_PORT=$((BASE_PORT + 10))
make_configs 3 64 1024
start_member 0 --send 2000 --size 64 --finish --query 2 --timeout 120
start_member 1 --send 2000 --size 64 --finish --timeout 120
start_member 2 --send 2000 --size 64 --finish --timeout 120
for i in 0 1 2; do wait "$(eval echo "\$PID_$i")" || fail "query case: member $i exited with status $?"; done
answer=$(grep -o 'query member=2 status=SQ_OK reply=.*' "$WORK/m0.out" | sed 's/.*reply=//') ||
  fail "member 0 got no answer from member 2"
mine=$(grep -o 'delivered=[0-9]* hash=0x[0-9a-f]* view=[0-9]*' "$WORK/m2.out")
[ "$answer" = "$mine" ] || fail "member 2 answered '$answer' but its result is '$mine'"
echo "query: member 2 answered member 0: $answer"
PIDS=()

# An ordered call in the middle of a stream: every member answers with its fingerprint at the
# call's place in the total order, so all answers are the same.
BASE_PORT=$((BASE_PORT + 10))
make_configs 3 64 1024
start_member 0 --send 20000 --size 64 --rate 20000 --finish --timeout 120
start_member 1 --send 20000 --size 64 --rate 20000 --finish --call-at 5000 --timeout 120
start_member 2 --send 20000 --size 64 --rate 20000 --finish --timeout 120
for i in 0 1 2; do wait "$(eval echo "\$PID_$i")" || fail "call case: member $i exited with status $?"; done
line=$(grep '^call at=5000 status=SQ_OK replies=3 ' "$WORK/m1.out") || fail "the ordered call did not get 3 replies: $(grep '^call' "$WORK/m1.out")"
distinct=$(echo "$line" | grep -o '\[[0-9]*:0:[^]]*\]' | sed 's/^\[[0-9]*:0://' | sort -u | wc -l)
members=$(echo "$line" | grep -o '\[[0-9]*:0:' | sort -u | wc -l)
[ "$members" = 3 ] || fail "the ordered call was not answered by 3 members: $line"
[ "$distinct" = 1 ] || fail "members answered the ordered call differently: $line"
echo "ordered call: $line"
PIDS=()

BASE_PORT=$((BASE_PORT + 10))
make_configs 3 16 10240
run_case "one-sender-10KiB-window16" 50000 10240 0 50000 0

BASE_PORT=$((BASE_PORT + 10))
make_configs 3 4 64
run_case "two-senders-window4" 30000 8 20000 0 10000
echo "three_members: 5 passed, 0 failed"
