#!/usr/bin/env bash
# demo_quote.sh SOURCE_DIR: the commands `make demo` prints can be pasted into a shell: its
# quote() (scripts/demo-kv) turns words back into the same words when a shell reads them, and
# every squall command the tour shows goes through it.
set -euo pipefail
src=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
fail() { echo "FAIL: $*" >&2; exit 1; }
eval "$(sed -n '/^quote() {/,/^}/p' "$src/scripts/demo-kv")"
declare -F quote >/dev/null || fail "scripts/demo-kv has no quote()"
words=(put /orders/42 '{"qty": 3}' "it's" '' 'a  b' '$HOME' '`x`' '\n' --if-version 0x1 '*' '-' 'é')
shown=$(quote "${words[@]}")
eval "back=($shown)"
[ "${#back[@]}" = "${#words[@]}" ] || fail "$shown reads back as ${#back[@]} words, not ${#words[@]}"
for i in "${!words[@]}"; do
  [ "${back[$i]}" = "${words[$i]}" ] || fail "word $i '${words[$i]}' reads back as '${back[$i]}' from: $shown"
done
[ "$(quote put /orders/42 '{"qty": 3}')" = "put /orders/42 '{\"qty\": 3}'" ] ||
  fail "quote is not the plain form: $(quote put /orders/42 '{"qty": 3}')"
# every "$ squall ..." line of the tour is printed through quote
if grep -n "printf '\$ squall" "$src/scripts/demo-kv" | grep -v 'quote' >&2; then
  fail "scripts/demo-kv prints a squall command without quote()"
fi
echo "PASS: the demo's commands read back as typed: $shown"
