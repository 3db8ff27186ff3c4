#!/usr/bin/env bash
# restart-soak.sh ROUNDS [SEED]: whole-group crashes and restarts from a majority, over and over,
# on 3 real members (tools/squall-local) with a client writing all the time. Not part of
# `make test` (about 10 s a round); `make restart-soak ROUNDS=N SEED=S` runs it.
#
# Each round a writer puts to a persistent pool, recording every acknowledged put. Then, at a
# random moment, either
#   A. all three members are killed at once (kill -9), and a random two of them restart the
#      group; or
#   B. one member is killed, the other two go on without it (and keep acknowledging puts), then
#      they are killed too, and those two restart the group: the last view was theirs, so they
#      are the ones that must (the first could not, with either of them).
# Every put acknowledged in every round so far must then read back (a stable get) through the
# two, and, once the third member is back (it joins the running group, cutting any suffix the
# group never persisted), through it alone.
set -u
ROUNDS=${1:-10}
SEED=${2:-$(date +%s)}
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD=${BUILD_DIR:-$ROOT/build}
export SQUALLD=$BUILD/squalld SQUALL=$BUILD/squall
KV_CHECK=$BUILD/kv_check
LOCAL=$ROOT/tools/squall-local
WORK=$(mktemp -d /tmp/squall-soak-XXXXXX)
DIR=$WORK/local
BASE_PORT=$(( 10000 + ($$ * 7) % 22000 ))
WPID=
RANDOM=$SEED

cleanup() {
  [ -n "$WPID" ] && { kill -9 "$WPID" 2>/dev/null; wait "$WPID" 2>/dev/null; }
  "$LOCAL" down --dir "$DIR" > /dev/null 2>&1 || true
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
fail() {
  echo "FAIL (seed $SEED, round $round): $*" >&2
  for i in 0 1 2; do echo "--- member $i"; tail -n 8 "$DIR/m$i.err" 2>/dev/null; done >&2
  KEEP_WORK=1
  exit 1
}
member_pid() { cat "$DIR/m$1.pid"; }
addr() { echo "127.0.0.1:$((BASE_PORT + 100 + $1))"; }

[ -x "$KV_CHECK" ] || { echo "build first (make build): no $KV_CHECK" >&2; exit 2; }
echo "restart soak: $ROUNDS rounds, seed $SEED"
round=0
"$LOCAL" up 3 --dir "$DIR" --base-port "$BASE_PORT" > "$WORK/up.out" 2>&1 || fail "up: $(cat "$WORK/up.out")"
MEMBERS=$(cat "$DIR/members")
SQUALL_MEMBERS=$MEMBERS "$SQUALL" pool create /soak persistent > /dev/null || fail "pool create"
: > "$WORK/acked"
total_start=$SECONDS
for ((round = 1; round <= ROUNDS; round++)); do
  "$KV_CHECK" writer "$MEMBERS" "/soak/r$round/" 1000000 "$WORK/acked.$round" > "$WORK/writer.$round" 2>&1 &
  WPID=$!
  sleep "$((RANDOM % 3)).$((RANDOM % 10))"
  c=$((RANDOM % 3))
  a=$(((c + 1 + RANDOM % 2) % 3))
  b=$((3 - a - c))
  mode=$((RANDOM % 2))
  if [ $mode = 0 ]; then
    kill -9 "$(member_pid 0)" "$(member_pid 1)" "$(member_pid 2)"
    what="all killed at once; $a and $b restart"
  else
    kill -9 "$(member_pid "$c")"
    sleep 1.5 # the others install a view without it and go on
    kill -9 "$(member_pid "$a")" "$(member_pid "$b")"
    what="$c killed, then $a and $b; $a and $b restart"
  fi
  sleep 0.3
  kill -9 "$WPID" 2>/dev/null
  wait "$WPID" 2>/dev/null
  WPID=
  cat "$WORK/acked.$round" >> "$WORK/acked"
  t0=$(date +%s%N)
  "$LOCAL" restart "$a" "$b" --dir "$DIR" > "$WORK/restart.out" 2>&1 ||
    fail "$what: the restart failed: $(cat "$WORK/restart.out")"
  t1=$(date +%s%N)
  grep -q 'restarting the group from its disks with 2 of 3 members' "$DIR/m$a.err" "$DIR/m$b.err" ||
    fail "$what: no restart with 2 of 3 members"
  "$KV_CHECK" verify "$(addr "$a"),$(addr "$b")" "$WORK/acked" > "$WORK/verify.out" 2>&1 ||
    fail "$what: acknowledged puts lost: $(cat "$WORK/verify.out")"
  t2=$(date +%s%N)
  "$LOCAL" restart "$c" --dir "$DIR" > "$WORK/restart.out" 2>&1 ||
    fail "$what: member $c could not come back: $(cat "$WORK/restart.out")"
  t3=$(date +%s%N)
  "$KV_CHECK" verify "$(addr "$c")" "$WORK/acked" > "$WORK/verify3.out" 2>&1 ||
    fail "$what: member $c lacks acknowledged puts: $(cat "$WORK/verify3.out")"
  cut=$(grep -ho 'cut [0-9]* records' "$DIR/m$c.err" | tail -1)
  echo "round=$round mode=$mode acked=$(wc -l < "$WORK/acked.$round") total_acked=$(wc -l < "$WORK/acked") restart_ms=$(((t1 - t0) / 1000000)) rejoin_ms=$(((t3 - t2) / 1000000)) ${cut:+member_$c=\"$cut\"} ($what)"
done
echo "restart soak: $ROUNDS rounds passed in $((SECONDS - total_start)) s, seed $SEED, $(wc -l < "$WORK/acked") acknowledged puts all present"
