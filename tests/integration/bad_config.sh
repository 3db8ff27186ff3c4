#!/usr/bin/env bash
# bad_config.sh: squalld refuses bad input with a clear message and a distinct exit status:
# bad files (status 2, naming file:line:key), members whose configs disagree (refused at connect,
# status 2), and a group that cannot form (status 1 after connect_timeout_ms).
SQUALLD=$1
. "$(dirname "$0")/lib.sh"

expect_fail() { # expect_fail STATUS PATTERN CMD...
  local want=$1 pattern=$2; shift 2
  local out status
  out=$("$@" 2>&1); status=$?
  [ "$status" = "$want" ] || fail "'$*' exited $status, wanted $want: $out"
  echo "$out" | grep -q -- "$pattern" || fail "'$*' said '$out', wanted '$pattern'"
  echo "ok: status $status: $(echo "$out" | head -n 1)"
}

expect_fail 2 "requires an argument\|--config FILE is required" "$SQUALLD"
expect_fail 2 "cannot open" "$SQUALLD" --config "$WORK/missing.cfg"
printf '[self]\nid = 0\n[member.0]\nhost = 127.0.0.1\nport = 99999\n' > "$WORK/bad.cfg"
expect_fail 2 "bad.cfg:5: key 'port' in \[member.0\]: '99999' is not a port number" "$SQUALLD" --config "$WORK/bad.cfg"
printf '[self]\nid = 0\n[member.0]\nhost = 127.0.0.1\nport = 7000\n[group]\nwindow = 5\n' > "$WORK/bad2.cfg"
expect_fail 2 "bad2.cfg:7: unknown key 'window' in \[group\]" "$SQUALLD" --config "$WORK/bad2.cfg"
expect_fail 2 "bad value 'many' for --send" "$SQUALLD" --config "$WORK/bad.cfg" --send many

# Two members whose subgroup layouts differ: the accepting member refuses the connection.
make_configs 2 256 1024 "connect_timeout_ms = 3000"
sed -i 's/window_size = 256/window_size = 128/' "$WORK/m1.cfg"
start_member 0
expect_fail 2 "configuration mismatch\|different configuration" "$SQUALLD" --config "$WORK/m1.cfg"
wait "$PID_0"; st=$?
[ "$st" = 2 ] || fail "member 0 exited $st when its peer had another configuration, wanted 2"
grep -q "configuration mismatch\|different configuration" "$WORK/m0.err" || fail "member 0 did not say why it stopped"

# A member alone: the group cannot form, and it says who is missing.
BASE_PORT=$((BASE_PORT + 10))
make_configs 3 256 1024 "connect_timeout_ms = 1000"
expect_fail 1 "did not form within 1000 ms: no connection with member(s) 1, 2" "$SQUALLD" --config "$WORK/m0.cfg"
echo "bad_config: 8 passed, 0 failed"
