#!/usr/bin/env bash
# http.sh: the HTTP front end on 3 real squalld members (2 shards per subgroup) started by
# tools/squall-local: every route through http_check.py (python3), then the web console in
# headless Chromium, which must show the group and a key's value and history.
SQUALLD=$1
SQUALL=$2
trap '' PIPE
. "$(dirname "$0")/lib.sh"
squall_local_test
command -v promtool >/dev/null || fail "promtool is missing (Debian prometheus; scripts/install-deps)"
command -v chromium >/dev/null || fail "chromium is missing (scripts/install-deps installs it)"

"$LOCAL" up 3 --shards 2 --dir "$DIR" --base-port "$BASE_PORT" > "$WORK/up.out" 2>&1 ||
  fail "squall-local up: $(cat "$WORK/up.out")"
grep -q "^http: http://127.0.0.1:$((BASE_PORT + 200))/" "$WORK/up.out" ||
  fail "squall-local up did not print the console's URL: $(cat "$WORK/up.out")"
python3 "$(dirname "$0")/http_check.py" "$LOCAL" "$DIR" "$BASE_PORT" || fail "http_check.py"

echo "== 9. the console in headless Chromium"
URL="http://127.0.0.1:$((BASE_PORT + 200))/#key=/orders/42"
# Chromium's profile in the work dir (removed with it); --virtual-time-budget lets the page's
# fetches finish before the DOM is dumped.
timeout 90 chromium --headless --no-sandbox --disable-gpu --user-data-dir="$WORK/chromium" \
  --virtual-time-budget=8000 --dump-dom "$URL" > "$WORK/dom.html" 2> "$WORK/chromium.err" ||
  fail "chromium: $(tail -5 "$WORK/chromium.err")"
dom() { grep -q "$1" "$WORK/dom.html" || fail "the console does not show $2 (dom in $WORK/dom.html)"; }
dom '<span id="who">member 0</span>' "which member it is"
dom '<span id="view">view [0-9]*, 3 members</span>' "the view and its 3 members"
dom '<td>2 (this one)</td>\|<td>0 (this one)</td>' "the members table"
dom 'data-pool="/orders"' "the pools"
dom '<td>persistent</td><td>persistent</td><td>0: ' "the shards"
dom '<div id="keyname" class="mono">/orders/42</div>' "the key opened from the URL"
dom 'version "0x' "the value's version"
dom '<th>version</th><th>time</th><th>size</th>' "the key's history"
echo "http: the console shows the group, pools, shards and a key with its history"
