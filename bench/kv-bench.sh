#!/usr/bin/env bash
# kv-bench.sh: the key-value benchmark matrix on three local members: put, get and conditional put
# of 100 B, 4 KiB and 1 MiB values and put and get of 16 MiB values on a persistent and a volatile
# pool, then put throughput with and without 100,000 watched keys. Prints kv-bench's case= lines
# and a case=watch_overhead line.
# Env: BUILD_DIR (default build/ beside bench/), THREADS (4), SECONDS_PER_CASE (3),
# THREADS_LARGE and SECONDS_LARGE for the 1 MiB and 16 MiB cases (default THREADS and SECONDS_PER_CASE),
# WATCH_KEYS (100000). With --trace: instead, the latency anatomy of one client's persistent put,
# volatile put and get (kv-bench --trace: one case=trace line per stage).
set -euo pipefail

prog=kv-bench.sh
mode=matrix
case "${1:-}" in
  "") ;;
  --trace) mode=trace ;; # the latency anatomy of put (persistent, volatile) and get: make bench-trace
  *) echo "usage: $prog [--trace]" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build}
build=$(cd "$build" && pwd) || { echo "$prog: no build directory $build" >&2; exit 1; }
THREADS=${THREADS:-4}
SECONDS_PER_CASE=${SECONDS_PER_CASE:-3}
THREADS_LARGE=${THREADS_LARGE:-$THREADS}
SECONDS_LARGE=${SECONDS_LARGE:-$SECONDS_PER_CASE}
WATCH_KEYS=${WATCH_KEYS:-100000}
# Bounds each kv-bench run, so that a member that stops answering cannot hang the matrix (the
# 100,000 watches are registered one blocking call at a time, hence the room).
CASE_TIMEOUT_S=900

export SQUALLD=$build/squalld SQUALL=$build/squall
bench=$build/bench/kv-bench
local_tool=$root/tools/squall-local
for b in "$SQUALLD" "$SQUALL" "$bench"; do
  [ -x "$b" ] || { echo "$prog: missing $b (build it: make build)" >&2; exit 1; }
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/squall-kv-bench.XXXXXX")
failures=0
finish() {
  local rc=$?
  "$local_tool" down --dir "$dir" >/dev/null 2>&1 || true
  if [ $rc -eq 0 ] && [ $failures -eq 0 ]; then
    rm -rf "$dir"
  else
    # The members' logs stay for a look; their data (GBs after the 1 MiB cases) does not.
    rm -rf "$dir/data"
    echo "$prog: member logs kept in $dir" >&2
  fi
  exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM

# squall-local uses P..P+2 for the group and P+100..P+102 for clients. P comes from our pid, so
# that concurrent runs differ, and moves on while any of those ports is taken.
port_busy() { # port_busy P: some socket uses one of the ports P..P+2, P+100..P+102
  local p
  for p in $1 $(($1 + 1)) $(($1 + 2)) $(($1 + 100)) $(($1 + 101)) $(($1 + 102)); do
    [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] || return 0
  done
  return 1
}
started=0
for attempt in 1 2 3 4 5; do
  base=$((20000 + ($$ * 7919 + attempt * 4099) % 12000)) # 20000..32101: below the ephemeral ports
  if port_busy "$base"; then
    continue
  fi
  # A port taken between the check and the start fails the start: try another.
  if "$local_tool" up 3 --dir "$dir" --base-port "$base" >"$dir/up.out" 2>&1; then
    started=1
    break
  fi
  echo "$prog: members did not start on base port $base:" >&2
  tail -n 5 "$dir/up.out" >&2
  "$local_tool" down --dir "$dir" >/dev/null 2>&1 || true
done
[ $started = 1 ] || { echo "$prog: could not start 3 members" >&2; exit 1; }
members=$(cat "$dir/members")

"$SQUALL" --member "$members" pool create /bp persistent >/dev/null
"$SQUALL" --member "$members" pool create /bv volatile >/dev/null

# Each member that has died since the start, with where its log is.
check_members() { # check_members CASE
  local f id pid
  for f in "$dir"/m*.pid; do
    [ -e "$f" ] || continue
    id=${f##*/m}
    id=${id%.pid}
    pid=$(cat "$f")
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$prog: member $id (pid $pid) is gone after $1 (see $dir/m$id.err)" >&2
      failures=$((failures + 1))
      rm -f "$f"
    fi
  done
}

# run_case ARGS...: one kv-bench run; its result line goes to stdout and into $last_line.
last_line=
run_case() {
  local out rc=0
  out=$(timeout -k 10 "$CASE_TIMEOUT_S" "$bench" --members "$members" "$@") || rc=$?
  [ -z "$out" ] || echo "$out"
  last_line=$out
  if [ $rc -ne 0 ]; then
    echo "$prog: kv-bench $* exited with $rc" >&2
    failures=$((failures + 1))
  fi
  check_members "kv-bench $*"
}

if [ "$mode" = trace ]; then
  # Where the time of one call goes: every call traced, one client, 256-byte values.
  for c in "/bp put" "/bv put" "/bp get"; do
    set -- $c
    run_case --pool "$1" --threads 1 --size 256 --ops "$2" --seconds "$SECONDS_PER_CASE" --trace 1
  done
  [ $failures -eq 0 ] || { echo "$prog: $failures failure(s)" >&2; exit 1; }
  exit 0
fi

for pool in /bp /bv; do
  for size in 100 4096 1048576 16777216; do
    threads=$THREADS
    secs=$SECONDS_PER_CASE
    if [ "$size" -ge 1048576 ]; then
      threads=$THREADS_LARGE
      secs=$SECONDS_LARGE
    fi
    ops="put get cput"
    [ "$size" -lt 16777216 ] || ops="put get" # values over the slots' size: the large-message path
    for op in $ops; do
      run_case --pool "$pool" --threads "$threads" --size "$size" --ops "$op" --seconds "$secs"
    done
  done
done

ops_per_s() { sed -n 's/.* ops_per_s=\([0-9.]*\).*/\1/p' <<<"$1"; }
run_case --pool /bv --threads "$THREADS" --size 100 --ops put --seconds "$SECONDS_PER_CASE" \
  --watch-keys 0
without=$(ops_per_s "$last_line")
run_case --pool /bv --threads "$THREADS" --size 100 --ops put --seconds "$SECONDS_PER_CASE" \
  --watch-keys "$WATCH_KEYS"
with=$(ops_per_s "$last_line")
if [ -n "$without" ] && [ -n "$with" ]; then
  echo "case=watch_overhead pool=volatile op=put size=100 threads=$THREADS" \
    "watch_keys=$WATCH_KEYS ops_per_s_without=$without ops_per_s_with=$with" \
    "ratio=$(awk -v a="$with" -v b="$without" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')"
else
  echo "case=watch_overhead pool=volatile op=put size=100 threads=$THREADS" \
    "watch_keys=$WATCH_KEYS ok=0"
  failures=$((failures + 1))
fi

[ $failures -eq 0 ] || { echo "$prog: $failures failure(s)" >&2; exit 1; }
