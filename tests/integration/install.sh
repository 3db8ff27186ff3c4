#!/usr/bin/env bash
# install.sh BUILD_DIR: squall as others install and use it. `cmake --install` into a fresh
# prefix; the shared library exports only the public API (nm -D) and has its SONAME; the
# examples build against the installed tree alone (examples/hello_client.c with pkg-config, and
# statically with find_package(squall) in examples/cmake); then, on 3 members started by the
# installed squall-local, the C example, the Python example (examples/hello.py) and the Python
# binding's tests (tests/python/test_client.py) run with the installed package, not the source
# tree's, and the Java binding's (java/test/SquallTest.java) with the installed jar; Python and
# Java then speak TLS, with a client certificate, to a member that requires one. The systemd
# unit passes systemd-analyze verify.
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/lib.sh"
P=$WORK/prefix
LOCAL_DIR=$WORK/local
TLS_DIR=$WORK/tlsgroup
stop_group() {
  if [ -x "$P/bin/squall-local" ]; then
    "$P/bin/squall-local" down --dir "$LOCAL_DIR" >/dev/null 2>&1
    "$P/bin/squall-local" down --dir "$TLS_DIR" >/dev/null 2>&1
  fi
  cleanup
}
trap stop_group EXIT

echo "== install into a fresh prefix"
cmake --install "$BUILD" --prefix "$P" > "$WORK/install.log" 2>&1 || fail "cmake --install: $(tail -5 "$WORK/install.log")"
for f in bin/squalld bin/squall bin/squall-local include/squall/client.h include/squall/errors.h \
         lib/libsquall-client.a lib/pkgconfig/squall-client.pc lib/cmake/squall/squallConfig.cmake \
         lib/python3/dist-packages/squall/__init__.py share/java/squall.jar lib/libsquall-jni.so; do
  [ -e "$P/$f" ] || fail "not installed: $f"
done
so=$(readlink -f "$P/lib/libsquall-client.so")
[ -f "$so" ] || fail "no libsquall-client.so"
soname=$(objdump -p "$so" | awk '$1 == "SONAME" {print $2}')
[ "$soname" = libsquall-client.so.0 ] || fail "SONAME is '$soname', want libsquall-client.so.0"
[ -e "$P/lib/libsquall-client.so.0" ] || fail "no libsquall-client.so.0 link"

echo "== only the public API is exported"
syms=$(nm -D --defined-only "$so" | awk '{print $3}')
extra=$(echo "$syms" | grep -Ev '^(sq_client_[a-z_]+|sq_kv_result_free|sq_kv_next_item|sq_strerror|sq_err_name|sq_err_transient)$' || true)
[ -z "$extra" ] || fail "libsquall-client.so exports more than the API: $(echo $extra)"
for f in sq_client_open sq_client_close sq_client_put sq_client_get sq_client_remove \
         sq_client_list sq_client_history sq_client_watch sq_client_watch_shards \
         sq_client_unwatch sq_client_put_async sq_client_get_async sq_kv_result_free sq_strerror; do
  echo "$syms" | grep -qx "$f" || fail "libsquall-client.so does not export $f"
done
# every function the public header declares is exported
for f in $(grep -o 'SQ_API [^(]*(' "$P/include/squall/client.h" "$P/include/squall/errors.h" | grep -o 'sq_[a-z_]*(' | tr -d '('); do
  echo "$syms" | grep -qx "$f" || fail "client.h declares $f, which the library does not export"
done
echo "  $(echo "$syms" | wc -l) symbols, all of the API"

echo "== build the examples against the installed tree only"
export PKG_CONFIG_PATH=$P/lib/pkgconfig
flags=$(pkg-config --cflags --libs squall-client) || fail "pkg-config squall-client"
cc -Wall -Wextra -Werror "$SRC/examples/hello_client.c" $flags -o "$WORK/hello_client" 2> "$WORK/cc.err" ||
  fail "cc hello_client.c $flags: $(cat "$WORK/cc.err")"
cmake -S "$SRC/examples/cmake" -B "$WORK/cm" -DCMAKE_PREFIX_PATH="$P" > "$WORK/cm.log" 2>&1 &&
  cmake --build "$WORK/cm" >> "$WORK/cm.log" 2>&1 || fail "find_package(squall) example: $(tail -15 "$WORK/cm.log")"
if ldd "$WORK/cm/hello_client_static" | grep -q squall-client; then
  fail "the static example links libsquall-client.so"
fi

echo "== the systemd unit (contrib/systemd/squalld@.service) passes systemd-analyze verify"
command -v systemd-analyze > /dev/null || fail "systemd-analyze is missing (Debian systemd; scripts/install-deps)"
mkdir -p "$WORK/units"
sed "s|/usr/local/bin/squalld|$P/bin/squalld|" "$SRC/contrib/systemd/squalld@.service" > "$WORK/units/squalld@.service"
cp "$WORK/units/squalld@.service" "$WORK/units/squalld@member0.service"
v=$(cd "$WORK/units" && systemd-analyze verify ./squalld@member0.service 2>&1) ||
  fail "systemd-analyze verify: $v"
[ -z "$v" ] || fail "systemd-analyze verify: $v"
grep -q '^Restart=on-failure$' "$SRC/contrib/systemd/squalld@.service" || fail "the unit does not restart on failure"

echo "== a group from the installed squall-local"
"$P/bin/squall-local" up 3 --dir "$LOCAL_DIR" --base-port "$BASE_PORT" > "$WORK/up.out" 2>&1 ||
  fail "squall-local up: $(cat "$WORK/up.out")"
for i in 0 1 2; do
  pid=$(cat "$LOCAL_DIR/m$i.pid")
  [ "$(readlink -f "/proc/$pid/exe")" = "$(readlink -f "$P/bin/squalld")" ] ||
    fail "member $i does not run the installed squalld"
done
M=$(cat "$LOCAL_DIR/members")
"$P/bin/squall" --member "$M" pool create /orders persistent > /dev/null || fail "pool create"

out=$(LD_LIBRARY_PATH=$P/lib "$WORK/hello_client" "$M" /orders/42) || fail "hello_client: $out"
[[ $out =~ ^/orders/42\ =\ two\ at\ version\ [0-9]+$ ]] || fail "hello_client printed: $out"
echo "  C (pkg-config, shared): $out"
out=$("$WORK/cm/hello_client_static" "$M" /orders/43) || fail "hello_client_static: $out"
[[ $out =~ ^/orders/43\ =\ two ]] || fail "hello_client_static printed: $out"
echo "  C (find_package, static): $out"

echo "== Python with the installed package"
unset SQUALL_CLIENT_LIB
export PYTHONPATH=$P/lib/python3/dist-packages
where=$(cd "$WORK" && python3 -c 'import squall; print(squall.__file__, squall._lib._name)') ||
  fail "import squall"
[[ $where == "$P/lib/python3/dist-packages/squall/__init__.py $P/lib/libsquall-client.so.0" ]] ||
  fail "python imported squall from elsewhere: $where"
out=$(cd "$WORK" && python3 "$SRC/examples/hello.py" "$M" 2>&1) || fail "hello.py: $out"
echo "$out" | sed 's/^/  /'
echo "$out" | grep -q '^conflict: the key is at 0x' || fail "hello.py: no conflict line"
echo "$out" | grep -Eq '^/orders/7 \{"qty": 1\} 0x[0-9a-f]+ 20[0-9-]+T' || fail "hello.py: no get line"
echo "$out" | grep -Eq '^watch: /orders/7 0x[0-9a-f]+ removed$' || fail "hello.py: the watch did not see the removal"
(cd "$WORK" && SQUALL_MEMBERS=$M timeout 600 python3 "$SRC/tests/python/test_client.py") \
  > "$WORK/py.out" 2>&1 || fail "tests/python/test_client.py: $(tail -30 "$WORK/py.out")"
echo "  $(tail -1 "$WORK/py.out"): $(grep -c ' ok$' "$WORK/py.out") Python tests passed"
echo "== Java with the installed jar"
out=$(cd "$WORK" && timeout 300 java -cp "$P/share/java/squall.jar:$BUILD/squall-test.jar" SquallTest "$M" 2>&1) ||
  fail "java SquallTest: $out"
echo "  $out"
mkdir -p "$WORK/jx"
javac -d "$WORK/jx" -cp "$P/share/java/squall.jar" "$SRC/examples/Hello.java" 2> "$WORK/javac.err" ||
  fail "javac Hello.java: $(cat "$WORK/javac.err")"
out=$(cd "$WORK" && timeout 60 java -cp "$P/share/java/squall.jar:$WORK/jx" Hello "$M" 2>&1) || fail "java Hello: $out"
echo "$out" | sed 's/^/  /'
echo "$out" | grep -q '^conflict: the key is at 0x' || fail "Hello.java: no conflict line"
echo "$out" | grep -Eq '^/orders/8 \{"qty": 1\} 20[0-9-]+T' || fail "Hello.java: no get line"
echo "$out" | grep -Eq '^watch: /orders/8 0x[0-9a-f]+ removed$' || fail "Hello.java: the watch did not see the removal"
echo "== TLS from Python and Java, with a client certificate"
PKI=$WORK/pki
pki_ca ca
pki_cert member ca "IP:127.0.0.1"
pki_cert client ca "IP:127.0.0.1"
mkdir -p "$WORK/tls"
cp "$PKI/ca.pem" "$PKI/member.pem" "$PKI/member.key" "$WORK/tls/"
TLS_PORT=$((BASE_PORT + 20))
"$P/bin/squall-local" up 1 --tls "$WORK/tls" --require-client-cert --dir "$TLS_DIR" \
  --base-port "$TLS_PORT" > "$WORK/tlsup.out" 2>&1 || fail "squall-local up --tls: $(cat "$WORK/tlsup.out")"
TM=127.0.0.1:$((TLS_PORT + 100))
out=$(cd "$WORK" && python3 - "$TM" "$PKI" <<'PY' 2>&1
import sys, squall
m, pki = sys.argv[1], sys.argv[2]
c = squall.Client(m, cacert=pki + "/ca.pem", cert=pki + "/client.pem", key=pki + "/client.key")
c.create_pool("/t", "volatile")
c.put("/t/py", b"over tls")
print("python:", c.get("/t/py").value.decode())
c.close()
try:
    squall.Client(m, timeout=3, cacert=pki + "/ca.pem").get("/t/py")
    print("python: a client without a certificate was served")
except squall.SquallError as e:
    print("python: refused:", e)
PY
) || fail "python over TLS: $out"
echo "$out" | sed 's/^/  /'
echo "$out" | grep -q '^python: over tls$' || fail "python over TLS did not read its value"
echo "$out" | grep -q '^python: refused: .*requires a client certificate' || fail "python without a certificate was not refused"
mkdir -p "$WORK/jt"
cat > "$WORK/jt/TlsHello.java" <<'JAVA'
import org.squall.SquallClient;
import org.squall.SquallException;

public class TlsHello {
    public static void main(String[] a) throws Exception {
        try (SquallClient c = new SquallClient(a[0], 10000, a[1] + "/ca.pem", a[1] + "/client.pem",
                                               a[1] + "/client.key")) {
            c.put("/t/java", "from java".getBytes());
            System.out.println("java: " + new String(c.get("/t/py").value));
        }
        try (SquallClient c = new SquallClient(a[0], 3000, a[1] + "/ca.pem", null, null)) {
            c.get("/t/java");
            System.out.println("java: a client without a certificate was served");
        } catch (SquallException e) {
            System.out.println("java: refused: " + e.getMessage());
        }
    }
}
JAVA
javac -d "$WORK/jt" -cp "$P/share/java/squall.jar" "$WORK/jt/TlsHello.java" 2> "$WORK/javac.err" ||
  fail "javac TlsHello.java: $(cat "$WORK/javac.err")"
out=$(cd "$WORK" && timeout 60 java -cp "$P/share/java/squall.jar:$WORK/jt" TlsHello "$TM" "$PKI" 2>&1) ||
  fail "java over TLS: $out"
echo "$out" | sed 's/^/  /'
echo "$out" | grep -q '^java: over tls$' || fail "java over TLS did not read Python's value"
echo "$out" | grep -q '^java: refused: .*requires a client certificate' || fail "java without a certificate was not refused"
[ "$("$P/bin/squall" --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key" --member "$TM" get /t/java)" = "from java" ] ||
  fail "the CLI does not read what Java wrote over TLS"
echo "install: ok"
