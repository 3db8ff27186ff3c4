#!/usr/bin/env bash
# requirements.sh SOURCE_DIR: README.md's "Requirements" says what scripts/install-deps does:
#   1. the package list it quotes is the one install-deps installs (`install-deps --list`);
#   2. the message it quotes is what install-deps prints when run without root with those
#      packages missing (dpkg-query and id are stubbed: nothing is installed or queried).
set -euo pipefail
src=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
work=$(mktemp -d /tmp/squall-docs-XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# block N: the Nth fenced block after the "## Requirements" heading
block() {
  awk -v want="$1" '/^## Requirements/ { sec = 1; next } /^## / { sec = 0 }
    sec && /^```/ { if (inblk) { inblk = 0; if (n == want) exit } else { inblk = 1; n++ } next }
    sec && inblk && n == want { print }' "$src/README.md"
}

want=$("$src/scripts/install-deps" --list)
got=$(block 1)
[ "$got" = "$want" ] || fail "README's package list differs from install-deps --list:
  README:       $got
  install-deps: $want"

# the non-root message, for the packages README's example names as missing
quoted=$(block 2)
missing=$(sed -n 's/^squall needs these packages: //p' <<<"$quoted")
[ -n "$missing" ] || fail "README quotes no 'squall needs these packages:' line"
mkdir "$work/bin"
cat >"$work/bin/dpkg-query" <<STUB
#!/bin/sh
for p in $missing; do [ "\$p" = "\$3" ] && exit 1; done
printf 'install ok installed'
STUB
printf '#!/bin/sh\necho 1000\n' >"$work/bin/id"
chmod +x "$work/bin/dpkg-query" "$work/bin/id"
rc=0
printed=$(PATH="$work/bin:$PATH" "$src/scripts/install-deps" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "install-deps without root exited $rc, README says 1"
[ "$printed" = "$quoted" ] || fail "install-deps without root prints:
$printed
README quotes:
$quoted"
echo "PASS: README quotes install-deps' package list and its message without root"
