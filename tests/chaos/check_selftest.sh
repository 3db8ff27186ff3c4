#!/usr/bin/env bash
# check_selftest.sh CHAOS_CHECK: chaos_check on small doctored histories: a clean one passes, and
# a stale read, a lost write, a conditional put applied twice, a watch gap, a watch repeating a
# version, a value nobody wrote, a plain get going backwards and a history with no successful
# operation are each reported (exit 1, with the anomaly named).
CHECK=$1
work=$(mktemp -d /tmp/squall-chaos-check-XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# A clean history: worker 0 writes 1 then 2, reads 2; a conditional put on 2's version makes 3;
# a watcher sees 1..3; the log holds them; a fault and its heal with answers after it.
base() {
  cat <<'H'
op 0 0 put /p/a 1 0 1000 2000 ok 0 10 100
op 0 0 put /p/a 2 0 3000 4000 ok 0 11 101
op 0 0 sget /p/a 0 0 5000 6000 ok 2 11 101
op 1 1 get /p/a 0 0 5500 6500 ok 2 11 101
op 0 0 cput /p/a 3 11 7000 8000 ok 0 12 102
op 1 1 cput /p/a 4 11 7500 8500 conflict 0 12 102
op 0 0 sget /p/a 0 0 9000 10000 ok 3 12 102
ev 0 /p/a 10 1 0 100 2100
ev 0 /p/a 11 2 0 101 4100
ev 0 /p/a 12 3 0 102 8100
wend 0 12 1
log /p/a 10 1 0 100
log /p/a 11 2 0 101
log /p/a 12 3 0 102
fault kill-one:1 1500 2500
H
}
run() { # run NAME EXPECTED_STATUS [ANOMALY_TEXT]: checks $work/h
  "$CHECK" --report "$work/r" "$work/h"
  local rc=$?
  [ "$rc" = "$2" ] || { cat "$work/r"; fail "$1: exit $rc, expected $2"; }
  if [ -n "${3:-}" ]; then
    grep -q "ANOMALY.*$3" "$work/r" || { cat "$work/r"; fail "$1: no anomaly \"$3\""; }
  fi
  echo "ok: $1"
}

base > "$work/h"
run "a clean history" 0
grep -q "key /p/a: 6 operations checked.*: linearizable" "$work/r" || { cat "$work/r"; fail "clean: not checked"; }

# a stale read: after 2 was acknowledged, a stable get returns 1
base | sed 's/^op 0 0 sget \/p\/a 0 0 5000 6000 ok 2 11 101/op 0 0 sget \/p\/a 0 0 5000 6000 ok 1 10 100/' > "$work/h"
run "a stale read" 1 "not linearizable"

# a lost write: the log after the restart does not have version 11
base | grep -v '^log /p/a 11' | grep -v '^ev 0 /p/a 11' > "$work/h"
run "a lost write" 1 "acknowledged write lost"

# a conditional put applied twice: both conditional puts on version 11 say ok
base | sed 's/^op 1 1 cput \/p\/a 4 11 7500 8500 conflict 0 12 102/op 1 1 cput \/p\/a 4 11 7500 8500 ok 0 13 103/' > "$work/h"
echo "log /p/a 13 4 0 103" >> "$work/h"
echo "ev 0 /p/a 13 4 0 103 8600" >> "$work/h"
sed -i 's/^wend 0 12 1/wend 0 13 1/' "$work/h"
run "a conditional put applied twice" 1 "not linearizable"

# a watch gap: the watcher never got version 11
base | grep -v '^ev 0 /p/a 11' > "$work/h"
run "a watch gap" 1 "watcher 0 missed /p/a version 11"

# a watch repeating a version
{ base; echo "ev 0 /p/a 12 3 0 102 8200"; } > "$work/h"
run "a watch repeating a version" 1 "watcher 0 got 1 versions twice"

# a value in the log that no client wrote
{ base; echo "log /p/a 20 99 0 120"; } > "$work/h"
run "a value nobody wrote" 1 "holds a value no client wrote"

# a plain get going backwards on one connection
{ base; echo "op 1 1 get /p/a 0 0 9500 9600 ok 1 10 100"; } > "$work/h"
run "a plain get going backwards" 1 "went backwards"

# timestamps going backwards along the versions
base | sed 's/^log \/p\/a 12 3 0 102/log \/p\/a 12 3 0 99/' > "$work/h"
run "time going backwards" 1 "timestamps went backwards"

# nothing succeeded
echo "op 0 0 put /p/a 1 0 1000 2000 unknown 0 0 0" > "$work/h"
echo "log /p/b 1 7 0 1" >> "$work/h"
run "no successful operation" 1 "no operation succeeded"
echo "chaos_check self-test: all cases as expected"
