#!/usr/bin/env bash
# auth.sh: members prove they hold the group key ([group] key_file) before any table memory is
# exposed to them, on real squalld processes on 127.0.0.1 (tools/squall-local, which makes the
# key). Cases:
#   1. A group of 3 with a key serves; the key file is the owner's alone (0600).
#   2. Member 2 is killed. A stranger with member 2's configuration but another key, and one with
#      no key at all, try to join: each is refused by the running members (who log who tried,
#      from where, and why) and exits with status 2 saying why; the group carries on in the same
#      view and serves writes meanwhile.
#   3. A key file others can read, or one that holds no key, is a configuration error (status 2)
#      that names the file and the fix.
#   4. Member 2 with the right key rejoins and reads what was written while it was away.
#   5. squalld --gen-key never overwrites a key.
#   6. A member with a key cannot join a group without one (and says so).
SQUALLD=$1
SQUALL=$2
. "$(dirname "$0")/lib.sh"
squall_local_test
BASE=$BASE_PORT
CLI() { "$SQUALL" --member "127.0.0.1:$((BASE + 100 + $1))" "${@:2}"; }
view_of() { CLI "$1" status 2>/dev/null | head -1 | grep -o 'view [0-9]*' | cut -d' ' -f2; }
members_of() { CLI "$1" status 2>/dev/null | head -1 | grep -o '[0-9] (127' | cut -c1 | tr -d '\n'; }
wait_members() { # wait_members MEMBER WANT
  for ((t = 0; t < 300; t++)); do
    [ "$(members_of "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  fail "member $1 never had members $2 (has '$(members_of "$1")')"
}
# stranger NAME KEYLINE: member 2's configuration with KEYLINE for its key_file line and a
# fresh data directory; runs it and expects it to be refused: status 2 within 60 s.
stranger() {
  local name=$1 keyline=$2 rc=0
  sed -e "s|^key_file = .*|$keyline|" -e "s|^data_dir = .*|data_dir = $WORK/$name-data|" \
    "$DIR/m2.cfg" >"$WORK/$name.cfg"
  timeout 60 "$SQUALLD" --config "$WORK/$name.cfg" >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
  [ "$rc" = 2 ] || fail "$name: exited $rc, expected 2 (refused): $(tail -3 "$WORK/$name.err")"
}

echo "== 1. a group of 3 with a key"
"$LOCAL" up 3 --dir "$DIR" --base-port "$BASE" >/dev/null || fail "squall-local up failed"
[ -f "$DIR/group.key" ] || fail "squall-local made no key"
[ "$(stat -c %a "$DIR/group.key")" = 600 ] || fail "the key file is mode $(stat -c %a "$DIR/group.key"), not 600"
grep -q "^key_file = $DIR/group.key" "$DIR/m0.cfg" || fail "m0.cfg names no key_file"
grep -q "no group key" "$DIR"/m*.err && fail "a member with a key warned that it has none"
CLI 0 pool create /p persistent >/dev/null || fail "pool create failed"
CLI 0 put /p/a one >/dev/null || fail "put failed"
[ "$(CLI 2 get /p/a)" = one ] || fail "member 2 does not read what member 0 wrote"
echo "ok: 3 members with a key serve"

echo "== 2. strangers with the wrong key, or none, are refused; the group carries on"
"$LOCAL" kill 2 --dir "$DIR" >/dev/null
wait_members 0 01
view=$(view_of 0)
"$SQUALLD" --gen-key "$WORK/wrong.key" >/dev/null || fail "--gen-key failed"
cmp -s "$WORK/wrong.key" "$DIR/group.key" && fail "two generated keys are equal"
stranger wrongkey "key_file = $WORK/wrong.key"
grep -q "member 2 cannot start: member [01] refused our connection: authentication failed" \
  "$WORK/wrongkey.err" || fail "the stranger with the wrong key did not say why: $(tail -2 "$WORK/wrongkey.err")"
grep -Eq "refused a connection from 127\.0\.0\.1:[0-9]+ claiming to be member 2: authentication failed" \
  "$DIR/m0.err" "$DIR/m1.err" || fail "no member logged the refused stranger"
echo "ok: the wrong key: $(grep -o 'refused our connection.*' "$WORK/wrongkey.err" | head -1)"
stranger nokey "; no key_file"
grep -q "the group has a key (\[group\] key_file) and the connecting member has none" \
  "$WORK/nokey.err" || fail "the stranger without a key did not say why: $(tail -2 "$WORK/nokey.err")"
grep -q "no group key (\[group\] key_file): members do not authenticate" "$WORK/nokey.err" ||
  fail "a member without a key did not warn at start"
echo "ok: no key: $(grep -o 'refused our connection.*' "$WORK/nokey.err" | head -1)"
CLI 0 put /p/b two >/dev/null || fail "put failed after the strangers"
[ "$(CLI 1 get /p/b)" = two ] || fail "member 1 does not read the write made after the strangers"
[ "$(view_of 0)" = "$view" ] || fail "the strangers changed the view ($view -> $(view_of 0))"
[ "$(members_of 1)" = 01 ] || fail "member 1's view has members $(members_of 1)"
echo "ok: the group stayed in view $view with members 0 and 1, and served"

echo "== 3. key files that do not hold a key, or that others can read"
cp "$DIR/group.key" "$WORK/open.key"
chmod 644 "$WORK/open.key"
stranger openkey "key_file = $WORK/open.key"
grep -q "is accessible by others (mode 644).*chmod 600" "$WORK/openkey.err" ||
  fail "a key file others can read was not refused with the fix: $(cat "$WORK/openkey.err")"
printf 'not a key\n' >"$WORK/bad.key"
chmod 600 "$WORK/bad.key"
stranger badkey "key_file = $WORK/bad.key"
grep -q "key 'key_file' in \[group\]: the group key file $WORK/bad.key does not hold a key" \
  "$WORK/badkey.err" || fail "a file without a key was not refused: $(cat "$WORK/badkey.err")"
echo "ok: $(head -1 "$WORK/openkey.err" | cut -c1-150)"

echo "== 4. member 2 with the right key rejoins"
"$LOCAL" restart 2 --dir "$DIR" >/dev/null || fail "member 2 did not rejoin"
wait_members 0 012
[ "$(CLI 2 get /p/b)" = two ] || fail "member 2 does not read what was written without it"
echo "ok: member 2 is back in view $(view_of 0) and reads /p/b"

echo "== 5. --gen-key never overwrites"
before=$(cat "$DIR/group.key")
rc=0
"$SQUALLD" --gen-key "$DIR/group.key" >"$WORK/gen.out" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "--gen-key over an existing key succeeded"
grep -q "never overwritten" "$WORK/gen.out" || fail "--gen-key did not say why: $(cat "$WORK/gen.out")"
[ "$(cat "$DIR/group.key")" = "$before" ] || fail "--gen-key changed an existing key"
echo "ok: $(cat "$WORK/gen.out")"

echo "== 6. a member with a key and a group without one"
"$LOCAL" down --dir "$DIR" >/dev/null
DIR=$WORK/nokey-group
BASE=$((BASE_PORT + 20))
"$LOCAL" up 3 --no-key --dir "$DIR" --base-port "$BASE" >/dev/null || fail "squall-local up --no-key failed"
grep -q "^key_file" "$DIR/m0.cfg" && fail "--no-key wrote a key_file"
grep -q "no group key" "$DIR/m0.err" || fail "a member without a key did not warn"
"$LOCAL" kill 2 --dir "$DIR" >/dev/null
wait_members 0 01
sed -e "s|^data_dir = .*|data_dir = $WORK/keyed-data\nkey_file = $WORK/wrong.key|" "$DIR/m2.cfg" >"$WORK/keyed.cfg"
rc=0
timeout 60 "$SQUALLD" --config "$WORK/keyed.cfg" >"$WORK/keyed.out" 2>"$WORK/keyed.err" || rc=$?
[ "$rc" = 2 ] || fail "a member with a key joined a group without one (status $rc)"
grep -q "the connecting member has a group key (\[group\] key_file) and the accepting one has none" \
  "$WORK/keyed.err" || fail "the keyed member did not say why: $(tail -2 "$WORK/keyed.err")"
echo "ok: $(grep -o 'refused our connection.*' "$WORK/keyed.err" | head -1)"
echo "PASS"
