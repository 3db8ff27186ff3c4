# lib.sh: helpers for integration tests that run real squalld processes on 127.0.0.1.
# Every process started goes into PIDS and is killed, by pid, when the test exits.
set -u
PIDS=()
WORK=$(mktemp -d /tmp/squall-it-XXXXXX)
cleanup() {
  # Only processes that are still this shell's unreaped jobs: a pid we already waited for may
  # belong to someone else by now (pid_max can be as low as 32768).
  local live; live=" $(jobs -p | tr '\n' ' ') "
  for p in "${PIDS[@]}"; do [[ $live == *" $p "* ]] && { kill -9 "$p" 2>/dev/null || true; }; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done; exit 1; }

# reaped PID: a process we waited for leaves PIDS, so that the cleanup never kills a process
# that reused its pid (pid_max may be as low as 32768)
reaped() { local p keep=(); for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]}"); }

# A port base unlikely to collide with another test run: from the pid, in 10000..32000,
# below the ephemeral range (32768 and up), where the many short client connections of a test
# leave TIME_WAIT ports that a member could not listen on.
BASE_PORT=$(( 10000 + ($$ * 7) % 22000 ))

# make_configs N [window] [max_payload] [extra [group] lines] [subgroup sections]: writes
# $WORK/m<i>.cfg for ids 0..N-1 (by default one subgroup, main, with the window and max_payload).
# The members authenticate each other with the key $WORK/group.key (made the first time), as an
# operator's would; NO_KEY=1 leaves it out.
make_configs() {
  local n=$1 window=${2:-256} max=${3:-1024} extra=${4:-} subgroups=${5:-} key=
  if [ "${NO_KEY:-0}" != 1 ]; then
    [ -f "$WORK/group.key" ] || "$SQUALLD" --gen-key "$WORK/group.key" >/dev/null ||
      fail "squalld --gen-key $WORK/group.key failed"
    key="key_file = $WORK/group.key\n"
  fi
  for ((i = 0; i < n; i++)); do
    {
      printf '[group]\nprovider = tcp\nlog_level = info\n%b%b\n[self]\nid = %d\n' "$key" "$extra" "$i"
      for ((j = 0; j < n; j++)); do
        printf '[member.%d]\nhost = 127.0.0.1\nport = %d\n' "$j" $((BASE_PORT + j))
      done
      if [ -n "$subgroups" ]; then
        printf '%b\n' "$subgroups"
      else
        printf '[subgroup.main]\nwindow_size = %d\nmax_payload = %d\n' "$window" "$max"
      fi
    } > "$WORK/m$i.cfg"
  done
}

# start_member I ARGS...: starts squalld for member I in the background.
start_member() {
  local i=$1; shift
  "$SQUALLD" --config "$WORK/m$i.cfg" "$@" > "$WORK/m$i.out" 2> "$WORK/m$i.err" &
  PIDS+=($!)
  eval "PID_$i=$!"
}

# squall_local_test: for a test whose members tools/squall-local runs, in DIR ($WORK/local; the
# test may point DIR elsewhere later): LOCAL is the tool, SQUALLD and SQUALL are exported for
# it, the EXIT trap stops the members (squall-local down, then kill -9 of any pid it recorded),
# and fail shows the end of each member's log.
squall_local_test() {
  LOCAL="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tools/squall-local"
  DIR="$WORK/local"
  export SQUALLD SQUALL
  trap stop_local EXIT
  fail() {
    echo "FAIL: $*" >&2
    for f in "$DIR"/m*.err; do [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }; done
    exit 1
  }
}
stop_local() {
  "$LOCAL" down --dir "$DIR" >/dev/null 2>&1 || true
  for f in "$DIR"/m*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
  cleanup
}

# expect STATUS PATTERN CMD...: CMD exits with STATUS and its output (stdout and stderr) matches
# the extended regular expression PATTERN; OUT keeps the output.
expect() {
  local want=$1 pattern=$2 rc=0
  shift 2
  OUT=$("$@" 2>&1) || rc=$?
  [ "$rc" = "$want" ] || fail "'${*:1:6}' exited $rc, expected $want: ${OUT:0:400}"
  grep -Eq -- "$pattern" <<<"$OUT" || fail "'${*:1:6}' said '${OUT:0:400}', expected /$pattern/"
  echo "ok ($rc): ${*:1:6}: $(tail -n 1 <<<"$OUT" | cut -c1-150)"
}

# pki_ca NAME: a self-signed CA in $PKI/NAME.pem, NAME.key (PKI: a directory of the test's).
pki_ca() {
  mkdir -p "$PKI"
  command -v openssl >/dev/null || fail "openssl is not installed (scripts/install-deps installs it)"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$PKI/$1.key" -out "$PKI/$1.pem" -subj "/CN=$1" 2>"$PKI/openssl.err" ||
    fail "openssl: $(cat "$PKI/openssl.err")"
}
# pki_cert NAME CA SAN [faketime]: NAME.pem/NAME.key signed by CA for subjectAltName SAN, valid 1 day
# from now (or from the faketime given).
pki_cert() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PKI/$1.key" \
    -out "$PKI/$1.csr" -subj "/CN=$1" 2>"$PKI/openssl.err" || fail "openssl: $(cat "$PKI/openssl.err")"
  printf 'subjectAltName=%s\n' "$3" >"$PKI/$1.ext"
  local pre=()
  [ -z "${4:-}" ] || pre=(faketime "$4")
  "${pre[@]}" openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$2.pem" -CAkey "$PKI/$2.key" \
    -CAcreateserial -days 1 -extfile "$PKI/$1.ext" -out "$PKI/$1.pem" 2>"$PKI/openssl.err" ||
    fail "openssl: $(cat "$PKI/openssl.err")"
}
