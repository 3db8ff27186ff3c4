#!/usr/bin/env bash
# run.sh BUILD_DIR: builds the libFuzzer target fuzz_frame.c (client frames, item lists, ops and
# saved stores) with clang into BUILD_DIR and runs it on a copy of the seed corpus for
# FUZZ_SECONDS (default 10). Fails on any crash or failed property, and when clang or libFuzzer
# is missing: a fuzz test that silently skips would look like a passing one.
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

echo "fuzz: building $out/fuzz_frame"
clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -D_GNU_SOURCE \
  -I"$src/include" -I"$src/src" \
  "$src/tests/fuzz/fuzz_frame.c" "$src/src/kv/wire.c" "$src/src/kv/store.c" "$src/src/error.c" \
  -lxxhash -o "$out/fuzz_frame"

# libFuzzer adds what it finds to the corpus directory: work on a copy, keep the seeds as they are.
rm -rf "$out/corpus" "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-*
cp -r "$src/tests/fuzz/corpus" "$out/corpus"
echo "fuzz: running for ${seconds}s on $(ls "$out/corpus" | wc -l) seeds"
rc=0
"$out/fuzz_frame" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 -artifact_prefix="$out/" "$out/corpus" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "fuzz: FAILED (exit $rc); the input is in $out/ (crash-*, timeout-*, oom-*, leak-*)" >&2
  echo "fuzz: reproduce with: $out/fuzz_frame $out/crash-<hash>" >&2
  exit 1
fi
echo "fuzz: no crash in ${seconds}s"
