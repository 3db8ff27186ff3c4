#!/usr/bin/env bash
# examples.sh SOURCE_DIR: README shows the client examples exactly as the files that
# tests/integration/install.sh builds and runs (examples/hello_client.c, hello.py, Hello.java).
set -euo pipefail
src=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
python3 - "$src" <<'PY'
import sys
src = sys.argv[1]
readme = open(src + "/README.md").read()
for path, lang in (("examples/hello_client.c", "c"), ("examples/hello.py", "python"),
                   ("examples/Hello.java", "java")):
    body = open(src + "/" + path).read()
    if "```%s\n%s```" % (lang, body) not in readme:
        sys.exit("FAIL: README does not show %s as it is (a ```%s block)" % (path, lang))
print("PASS: README shows examples/hello_client.c, hello.py and Hello.java as they are")
PY
