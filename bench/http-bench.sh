#!/usr/bin/env bash
# http-bench.sh: HTTP get and put (keep-alive, 1 client) against the binary protocol in the same
# run, on 3 members started by tools/squall-local, for a persistent and a volatile pool. One
# key=value line per case (build/bench/http-bench). SECONDS_PER_CASE (default 6).
set -euo pipefail
BUILD_DIR=${BUILD_DIR:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$BUILD_DIR/bench/http-bench
[ -x "$BENCH" ] || { echo "http-bench: $BENCH is not built (it needs libcurl: scripts/install-deps --bench)" >&2; exit 1; }
export SQUALLD=$BUILD_DIR/squalld SQUALL=$BUILD_DIR/squall
DIR=$(mktemp -d /tmp/squall-http-bench-XXXXXX)
trap '"$ROOT/tools/squall-local" down --dir "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
base=$(( 10000 + ($$ % 10000) ))
"$ROOT/tools/squall-local" up 3 --dir "$DIR" --base-port "$base" >/dev/null
members=$(cat "$DIR/members")
"$SQUALL" --member "$members" pool create /bench persistent >/dev/null
"$SQUALL" --member "$members" pool create /vbench volatile >/dev/null
for pool in /bench /vbench; do
  echo "# pool $pool ($([ $pool = /bench ] && echo persistent || echo volatile))"
  "$BENCH" --http "http://127.0.0.1:$((base + 200))" --members "${members%%,*}" --pool "$pool" \
    --seconds "${SECONDS_PER_CASE:-6}"
done
