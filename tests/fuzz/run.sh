#!/usr/bin/env bash
# run.sh BUILD_DIR: builds the libFuzzer targets fuzz_frame.c (client frames, item lists, ops and
# saved stores), fuzz_http.c (HTTP requests translated into operations) and fuzz_hello.c (the
# members' connection hellos and their group-key handshake) with clang into
# BUILD_DIR and runs each on a copy of its seed corpus for FUZZ_SECONDS (default 10). Fails on
# any crash or failed property, and when clang or libFuzzer is missing: a fuzz test that silently
# skips would look like a passing one.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=$1
seconds=${FUZZ_SECONDS:-10}
mkdir -p "$out"
out=$(cd "$out" && pwd)

missing() {
  echo "fuzz: $1" >&2
  echo "fuzz: install the packages clang and libclang-rt-14-dev (scripts/install-deps installs them)" >&2
  exit 1
}
command -v clang >/dev/null 2>&1 || missing "clang is not installed"
# libFuzzer ships in clang's runtime package, not with clang itself: try a one-line target.
probe='int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);
int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }'
if ! printf '%s\n' "$probe" | clang -fsanitize=fuzzer,address,undefined -x c - \
    -o "$out/libfuzzer-probe" >"$out/libfuzzer-probe.log" 2>&1; then
  cat "$out/libfuzzer-probe.log" >&2
  missing "clang cannot link a libFuzzer target with ASan and UBSan (libFuzzer is missing)"
fi

echo "fuzz: building $out/fuzz_frame, $out/fuzz_http and $out/fuzz_hello"
flags=(-std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
  -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -D_GNU_SOURCE -I"$src/include" -I"$src/src")
clang "${flags[@]}" "$src/tests/fuzz/fuzz_frame.c" "$src/src/kv/wire.c" "$src/src/kv/store.c" \
  "$src/src/error.c" -lxxhash -o "$out/fuzz_frame"
clang "${flags[@]}" "$src/tests/fuzz/fuzz_http.c" "$src/src/server/http_req.c" "$src/src/error.c" -lmicrohttpd \
  -o "$out/fuzz_http"
clang "${flags[@]}" -I"$src/src/transport/fabric" "$src/tests/fuzz/fuzz_hello.c" \
  "$src/src/transport/fabric/fabric_hello.c" "$src/src/transport/fabric/fabric_auth.c" \
  "$src/src/error.c" -lcrypto -o "$out/fuzz_hello"

# libFuzzer adds what it finds to the corpus directory: work on a copy, keep the seeds as they are.
rm -rf "$out"/corpus* "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-*
for target in frame http hello; do
  seeds=$src/tests/fuzz/corpus
  [ "$target" = http ] && seeds=$src/tests/fuzz/corpus_http
  [ "$target" = hello ] && seeds=$src/tests/fuzz/corpus_hello
  cp -r "$seeds" "$out/corpus-$target"
  echo "fuzz: running fuzz_$target for ${seconds}s on $(ls "$out/corpus-$target" | wc -l) seeds"
  rc=0
  "$out/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$out/" "$out/corpus-$target" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "fuzz: fuzz_$target FAILED (exit $rc); the input is in $out/ (crash-*, timeout-*, oom-*, leak-*)" >&2
    echo "fuzz: reproduce with: $out/fuzz_$target $out/crash-<hash>" >&2
    exit 1
  fi
done
echo "fuzz: no crash in ${seconds}s of each target"
