#!/usr/bin/env bash
# large.sh: values far above a slot's size (the large-message path) on 3 real squalld members on
# 127.0.0.1 started by tools/squall-local, driven by the squall CLI. Cases:
#   1. a stream of 64 MiB (and a few 1-9 MiB) puts to a persistent pool from one client while
#      member 2 is killed with SIGKILL and started again: every put the writer saw acknowledged
#      reads back byte-identical from each of the three members (the restarted one got them by
#      its log and the state transfer), and the member's memory stays bounded
#   2. a volatile pool takes a 64 MiB value too; one byte over the limit is refused clearly
# SQ_TEST_LARGE_BYTES sets the size of the large values (default 64 MiB; make tsan, where a 64 MiB
# copy takes seconds, uses less).
SQUALLD=$1
SQUALL=$2
trap '' PIPE
. "$(dirname "$0")/lib.sh"
squall_local_test

BIG=${SQ_TEST_LARGE_BYTES:-67108864}
HB_MS=${SQ_TEST_HEARTBEAT_MS:-2000}
"$LOCAL" up 3 --dir "$DIR" --base-port "$BASE_PORT" --heartbeat-ms "$HB_MS" > "$WORK/up.out" 2>&1 ||
  fail "squall-local up: $(cat "$WORK/up.out")"
MEMBERS=$(cat "$DIR/members")
export SQUALL_MEMBERS=$MEMBERS
CP=()
IFS=, read -r -a CP <<< "$MEMBERS"
"$SQUALL" pool create /big persistent > /dev/null || fail "pool create /big"
"$SQUALL" pool create /vbig volatile > /dev/null || fail "pool create /vbig"

# Values: random bytes, so a misplaced or missing block cannot compare equal.
MiB=$((1024 * 1024))
sizes=("$BIG" $((3 * MiB + 17)) "$BIG" $((9 * MiB)) "$BIG" $((1 * MiB + 4095)) "$BIG")
total_mib=$(( (4 * BIG) / MiB + 13 ))
for i in "${!sizes[@]}"; do
  head -c "${sizes[$i]}" /dev/urandom > "$WORK/v$i" || fail "cannot write test values in $WORK"
done

echo "== 1. $((BIG / MiB)) MiB puts to a persistent pool through a kill -9 and restart of member 2"
# The writer talks to members 0 and 1 only; a put that fails (a view change under it) is tried
# again, and a key is recorded once its put was acknowledged.
(
  for i in "${!sizes[@]}"; do
    for ((try = 0; try < 20; try++)); do
      if "$SQUALL" --member "${CP[0]}" put "/big/k$i" - < "$WORK/v$i" > "$WORK/put$i.out" 2>&1 ||
         "$SQUALL" --member "${CP[1]}" put "/big/k$i" - < "$WORK/v$i" > "$WORK/put$i.out" 2>&1; then
        echo "$i" >> "$WORK/acked"
        break
      fi
      sleep 0.5
    done
  done
) &
WPID=$!
PIDS+=("$WPID")
for ((t = 0; t < 1200; t++)); do
  [ -s "$WORK/acked" ] && break
  sleep 0.1
done
[ -s "$WORK/acked" ] || fail "the first large put was not acknowledged within 120 s: $(cat "$WORK"/put*.out)"
"$LOCAL" kill 2 --dir "$DIR" > /dev/null || fail "squall-local kill 2"
sleep 1
"$LOCAL" restart 2 --dir "$DIR" > "$WORK/restart.out" 2>&1 || fail "restart: $(cat "$WORK/restart.out")"
wait "$WPID" || fail "writer"
reaped "$WPID"
n=$(wc -l < "$WORK/acked")
[ "$n" = "${#sizes[@]}" ] || fail "only $n of ${#sizes[@]} puts were acknowledged: $(cat "$WORK"/put*.out)"
echo "   ${#sizes[@]} puts acknowledged ($total_mib MiB)"

# read_back MEMBER KEY FILE: the member's own state has KEY equal to FILE (it may still be catching
# up after its restart: retried for a while)
read_back() {
  local m=$1 key=$2 file=$3 t
  for ((t = 0; t < 100; t++)); do
    if "$SQUALL" --member "$m" get "$key" > "$WORK/got" 2> "$WORK/got.err" && cmp -s "$file" "$WORK/got"; then
      return 0
    fi
    sleep 0.3
  done
  fail "member $m: $key does not read back byte-identical ($(stat -c %s "$WORK/got") of $(stat -c %s "$file") bytes; $(cat "$WORK/got.err"))"
}
for m in "${CP[@]}"; do
  for i in "${!sizes[@]}"; do read_back "$m" "/big/k$i" "$WORK/v$i"; done
done
echo "   every value reads back byte-identical at all 3 members"
# every member holds the values and its log; its tables add only what large messages used
for f in "$DIR"/m*.pid; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$(cat "$f")/status")
  [ "$rss" -lt $((1200 * 1024)) ] || fail "a member holds $((rss / 1024)) MB after $total_mib MiB of values"
done

echo "== 2. volatile: a large value, and one byte over the limit of 64 MiB"
"$SQUALL" put /vbig/x - < "$WORK/v0" > /dev/null || fail "large volatile put"
for m in "${CP[@]}"; do read_back "$m" /vbig/x "$WORK/v0"; done
head -c $((64 * MiB + 1)) /dev/zero > "$WORK/over"
out=$("$SQUALL" put /vbig/y - < "$WORK/over" 2>&1) && fail "a value over 64 MiB was taken"
echo "$out" | grep -q "limit of 64 MiB" || fail "over-limit message: $out"
rm -f "$WORK"/v[0-9] "$WORK/over" "$WORK/got"
echo "PASS"
