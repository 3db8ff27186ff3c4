#!/usr/bin/env python3
"""http_check.py: the HTTP front end of 3 real members (started by http.sh with squall-local,
2 shards per subgroup), driven with python3's http.client and raw sockets. Cases:
  1. pools: create (201), again (409), bad bodies (400), list
  2. every route and status: put (ETag), get (ETag, Last-Modified, bytes), HEAD (size), 304,
     ?version=, ?at= (RFC 3339 and microseconds), ?stable=1, If-Match (412 with the current
     version), If-None-Match: * (201, then 412), DELETE (with If-Match), 404 after removal, list
     (trailing / and ?list, ?at=), history, status, 405 with Allow, unknown routes and pools
  3. relaying: every member answers for keys of both shards
  4. malformed requests (bad percent-encoding, %00, '..', '//', unknown parameters, bad
     versions and times, a huge header, a garbage request line, bad chunked bodies, a body over
     the limit, announced or chunked): each a 4xx, and the member keeps serving; chunked bodies
     are taken
  5. 4 clients x 500 conditional increments through If-Match: the final value is the number
     of increments that succeeded, and every one of them made a version
  6. SSE: a prefix watch over 2 shards; a reconnect with Last-Event-ID resumes with nothing
     missed or repeated; a reader that does not read is dropped by the member (not buffered
     without limit) and resumes, and its catch-up of ~10 MB (more than the stream's buffer)
     arrives whole; after the member it watched through is killed, a reconnect to another
     member resumes the same way
  7. /metrics passes `promtool check metrics` and counts what was done (this member's own
     requests went to its service in-process)
  8. a member paused with SIGSTOP past the heartbeat timeout: right after SIGCONT, puts and gets
     at its HTTP port succeed (through the other members while it is out of the group), and
     it rejoins
Usage: http_check.py LOCAL DIR BASE_PORT (squall-local, its --dir, its --base-port)."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

LOCAL, DIR, BASE = sys.argv[1], sys.argv[2], int(sys.argv[3])
HTTP = [BASE + 200 + i for i in range(3)]


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def req(port, method, path, body=None, headers=None, timeout=15):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def js(data):
    try:
        return json.loads(data)
    except ValueError:
        fail("not JSON: %r" % data[:200])


def expect(port, method, path, status, body=None, headers=None, error=None):
    st, h, data = req(port, method, path, body, headers)
    check(st == status, "%s %s: status %d, expected %d: %r" % (method, path, st, status, data[:300]))
    if error is not None:
        j = js(data)
        check(j.get("error") == error, "%s %s: error %r, expected %s" % (method, path, j, error))
        check(j.get("message"), "%s %s: no message in %r" % (method, path, j))
    return h, data


def raw(port, payload, timeout=10):
    """Sends raw bytes, returns the status line's code (or 0 when the member closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(payload)
        got = b""
        while b"\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        parts = got.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    finally:
        s.close()


P = HTTP[0]

print("== 1. pools")
expect(P, "POST", "/v1/pools", 201, json.dumps({"path": "/orders", "store": "persistent"}))
expect(P, "POST", "/v1/pools", 201, json.dumps({"path": "/cache", "store": "volatile", "shards": 0}))
expect(P, "POST", "/v1/pools", 409, json.dumps({"path": "/orders", "store": "persistent"}),
       error="SQ_EEXIST")
expect(P, "POST", "/v1/pools", 400, "{not json", error="SQ_EINVAL")
expect(P, "POST", "/v1/pools", 400, json.dumps({"path": "/x"}), error="SQ_EINVAL")
expect(P, "POST", "/v1/pools", 400, json.dumps({"path": "/x", "store": "nosuch"}),
       error="SQ_EINVAL")
_, data = expect(P, "GET", "/v1/pools", 200)
pools = {p["path"]: p for p in js(data)["pools"]}
check(pools.get("/orders", {}).get("store") == "persistent" and pools["/orders"]["shards"] == 2,
      "pool list: %r" % pools)
check(pools.get("/cache", {}).get("store") == "volatile", "pool list: %r" % pools)

print("== 2. routes and statuses")
h, data = expect(P, "PUT", "/v1/kv/orders/42", 200, b"hello")
v1 = js(data)["version"]
check(h.get("etag") == '"%s"' % v1, "put ETag %r vs %r" % (h.get("etag"), v1))
t_between = None
time.sleep(0.05)
t_between = time.time()
time.sleep(0.05)
h, data = expect(P, "GET", "/v1/kv/orders/42", 200)
check(data == b"hello" and h["etag"] == '"%s"' % v1 and "last-modified" in h,
      "get: %r %r" % (data, h))
h, _ = expect(P, "HEAD", "/v1/kv/orders/42", 200)
check(h.get("content-length") == "5" and h["etag"] == '"%s"' % v1, "head: %r" % h)
expect(P, "GET", "/v1/kv/orders/42", 304, headers={"If-None-Match": '"%s"' % v1})
expect(P, "GET", "/v1/kv/orders/42", 200, headers={"If-None-Match": '"0x1234567"'})
h, data = expect(P, "PUT", "/v1/kv/orders/42", 412, b"x", headers={"If-Match": '"0x99999"'},
                 error="SQ_ECONFLICT")
check(js(data)["current_version"] == v1 and h.get("etag") == '"%s"' % v1, "412: %r %r" % (data, h))
_, data = expect(P, "PUT", "/v1/kv/orders/42", 200, b"world", headers={"If-Match": '"%s"' % v1})
v2 = js(data)["version"]
check(int(v2, 16) > int(v1, 16), "versions %s then %s" % (v1, v2))
_, data = expect(P, "GET", "/v1/kv/orders/42?version=" + v1, 200)
check(data == b"hello", "?version=: %r" % data)
iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_between)) + (".%06dZ" % (
    int(t_between * 1e6) % 1000000))
_, data = expect(P, "GET", "/v1/kv/orders/42?at=" + iso, 200)
check(data == b"hello", "?at=%s: %r" % (iso, data))
_, data = expect(P, "GET", "/v1/kv/orders/42?at=%d" % int(t_between * 1e6), 200)
check(data == b"hello", "?at=us: %r" % data)
_, data = expect(P, "GET", "/v1/kv/orders/42?stable=1", 200)
check(data == b"world", "?stable=1: %r" % data)
expect(P, "PUT", "/v1/kv/orders/new", 201, b"n", headers={"If-None-Match": "*"})
expect(P, "PUT", "/v1/kv/orders/new", 412, b"n", headers={"If-None-Match": "*"},
       error="SQ_ECONFLICT")
expect(P, "DELETE", "/v1/kv/orders/new", 412, headers={"If-Match": '"0x5"'}, error="SQ_ECONFLICT")
_, data = expect(P, "DELETE", "/v1/kv/orders/new", 200)
check(js(data).get("deleted") is True, "delete: %r" % data)
_, data = expect(P, "GET", "/v1/kv/orders/new", 404, error="SQ_ENOTFOUND")
check("removed_version" in js(data), "404 after removal: %r" % data)
expect(P, "DELETE", "/v1/kv/orders/new", 404, error="SQ_ENOTFOUND")
expect(P, "GET", "/v1/kv/orders/never", 404, error="SQ_ENOTFOUND")
for path in ("/v1/kv/orders/", "/v1/kv/orders?list", "/v1/kv/orders/?list=1"):
    _, data = expect(P, "GET", path, 200)
    keys = [k["key"] for k in js(data)["keys"]]
    check(keys == ["/orders/42"], "%s: %r" % (path, keys))
_, data = expect(P, "GET", "/v1/kv/orders/?at=1000000", 200)
check(js(data)["keys"] == [], "list ?at= long ago: %r" % data)
_, data = expect(P, "GET", "/v1/history/orders/42", 200)
vs = [v["version"] for v in js(data)["versions"]]
check(vs == [v1, v2], "history: %r" % vs)
_, data = expect(P, "GET", "/v1/status", 200)
st = js(data)
check(st["member"] == 0 and len(st["members"]) == 3, "status: %r" % st)
h, _ = expect(P, "POST", "/v1/kv/orders/42", 405, error="SQ_ENOTSUP")
check("PUT" in h.get("allow", ""), "405 Allow: %r" % h)
expect(P, "DELETE", "/v1/status", 405, error="SQ_ENOTSUP")
expect(P, "PUT", "/v1/watch/orders/", 405, error="SQ_ENOTSUP")
expect(P, "GET", "/v2/kv/x", 404, error="SQ_ENOTFOUND")
expect(P, "GET", "/v1/kv/nopool/1", 404, error="SQ_ENOPOOL")
expect(P, "PUT", "/v1/kv/nopool/1", 404, b"x", error="SQ_ENOPOOL")
expect(P, "GET", "/v1/history/cache/none", 404)
_, data = expect(P, "GET", "/", 200)
check(b"squall console" in data, "console page")

print("== 3. relaying: every member answers for both shards")
layout = {g["name"]: g["shards"] for g in st["subgroups"]}
check(len(layout["persistent"]) == 2, "2 shards: %r" % layout)
for i, port in enumerate(HTTP):
    for k in range(12):
        expect(port, "PUT", "/v1/kv/orders/r%d" % k, 200, ("m%d-%d" % (i, k)).encode())
    for k in range(12):
        _, data = expect(HTTP[(i + 1) % 3], "GET", "/v1/kv/orders/r%d?stable=1" % k, 200)
        check(data == ("m%d-%d" % (i, k)).encode(), "relayed get r%d: %r" % (k, data))

print("== 4. malformed requests")
for path, err in (("/v1/kv/orders/%zz", "SQ_EINVAL"), ("/v1/kv/orders/a%0", "SQ_EINVAL"),
                  ("/v1/kv/orders/a%00b", "SQ_EINVAL"), ("/v1/kv/orders/../x", "SQ_EINVAL"),
                  ("/v1/kv/orders//x", "SQ_EINVAL"), ("/v1/kv/orders/./x", "SQ_EINVAL"),
                  ("/v1/kv/orders/42?verison=1", "SQ_EINVAL"),
                  ("/v1/kv/orders/42?version=zz", "SQ_EINVAL"),
                  ("/v1/kv/orders/42?version=1&at=1", "SQ_EINVAL"),
                  ("/v1/kv/orders/42?at=yesterday", "SQ_EINVAL"),
                  ("/v1/kv/orders/42?at=2026-12-07T11:00:00", "SQ_EINVAL"),
                  ("/v1/kv/orders/42?stable=maybe", "SQ_EINVAL"), ("/v1/kv/", "SQ_EINVAL"),
                  ("/v1/kv/" + "k" * 1100, "SQ_EINVAL"),
                  ("/v1/watch/orders/?from=x", "SQ_EINVAL")):
    st_, _, data = req(P, "GET", path)
    check(400 <= st_ < 500 and js(data)["error"] == err, "GET %s: %d %r" % (path[:80], st_, data[:200]))
expect(P, "GET", "/v1/watch/orders/", 400, headers={"Last-Event-ID": "garbage"}, error="SQ_EINVAL")
expect(P, "PUT", "/v1/kv/orders/42", 400, b"x", headers={"If-Match": "*"}, error="SQ_EINVAL")
expect(P, "PUT", "/v1/kv/orders/42", 400, b"x", headers={"If-Match": "nonsense"}, error="SQ_EINVAL")
code = raw(P, b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
check(code in (0, 400, 413, 414, 431), "huge header: %d" % code)
code = raw(P, b"GARBAGE\r\n\r\n")
check(code in (0, 400, 505), "garbage request line: %d" % code)
code = raw(P, b"PUT /v1/kv/orders/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"zz\r\nabc\r\n0\r\n\r\n")
check(code in (0, 400), "bad chunk size: %d" % code)
code = raw(P, b"PUT /v1/kv/orders/c HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\nab")
check(code in (400, 413), "body over the limit: %d" % code)
# a chunked body (no Content-Length) over the limit: read to its end, then refused
c = http.client.HTTPConnection("127.0.0.1", P, timeout=30)
mib = b"b" * (1 << 20)
c.request("PUT", "/v1/kv/orders/huge", body=iter([mib] * 65), encode_chunked=True)
r = c.getresponse()
data = r.read()
c.close()
check(r.status == 413 and js(data)["error"] == "SQ_EMSGSIZE", "chunked 65 MiB: %d %r" % (r.status, data[:200]))
# a chunked body is taken whole
c = http.client.HTTPConnection("127.0.0.1", P, timeout=10)
c.request("PUT", "/v1/kv/orders/chunked", body=iter([b"part1-", b"part2-", b"part3"]),
          encode_chunked=True)
r = c.getresponse()
r.read()
c.close()
check(r.status == 200, "chunked put: %d" % r.status)
_, data = expect(P, "GET", "/v1/kv/orders/chunked", 200)
check(data == b"part1-part2-part3", "chunked value: %r" % data)
_, data = expect(P, "GET", "/v1/kv/orders/42", 200)
check(data == b"world", "the member still serves: %r" % data)

print("== 5. 4 clients x 500 conditional increments through If-Match")
expect(P, "PUT", "/v1/kv/orders/counter", 200, b"0")
wins = [0] * 4
errors = []


def incrementer(i):
    port = HTTP[i % 3]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    done = 0
    try:
        while done < 500:
            conn.request("GET", "/v1/kv/orders/counter?stable=1")
            r = conn.getresponse()
            val = int(r.read())
            tag = r.getheader("ETag")
            conn.request("PUT", "/v1/kv/orders/counter", body=str(val + 1).encode(),
                         headers={"If-Match": tag})
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                done += 1
                wins[i] += 1
            elif r.status != 412:
                errors.append("client %d: PUT %d" % (i, r.status))
                return
    except Exception as e:  # noqa: BLE001: a failed client fails the case below
        errors.append("client %d: %r" % (i, e))
    finally:
        conn.close()


ts = [threading.Thread(target=incrementer, args=(i,)) for i in range(4)]
t0 = time.time()
for t in ts:
    t.start()
for t in ts:
    t.join()
check(not errors, "incrementers: %r" % errors)
_, data = expect(P, "GET", "/v1/kv/orders/counter?stable=1", 200)
check(int(data) == sum(wins) == 2000, "counter %s after %d successful increments" % (data, sum(wins)))
_, data = expect(HTTP[2], "GET", "/v1/history/orders/counter", 200)
check(js(data)["count"] == 2001, "counter history: %d versions" % js(data)["count"])
print("   2000 increments in %.1f s" % (time.time() - t0))

print("== 6. server-sent events")


class Stream:
    """One SSE connection: events as (id, event, data dict)."""

    def __init__(self, port, path, last_id=None, read=True):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        hdr = "GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n" % path
        if last_id:
            hdr += "Last-Event-ID: %s\r\n" % last_id
        self.s.sendall((hdr + "\r\n").encode())
        self.buf = b""
        self.closed = False
        if read:
            head = self._until(b"\r\n\r\n")
            check(head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head,
                  "SSE response: %r" % head[:300])
            self.chunked = b"chunked" in head.lower()
            self.body = b""

    def _until(self, sep):
        while sep not in self.buf:
            d = self.s.recv(65536)
            if not d:
                self.closed = True
                raise EOFError
            self.buf += d
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _body(self):
        if not self.chunked:
            d, self.buf = self.buf, b""
            if not d:
                d = self.s.recv(65536)
                if not d:
                    self.closed = True
                    raise EOFError
            self.body += d
            return
        line = self._until(b"\r\n")
        n = int(line.strip().split(b";")[0], 16)
        if n == 0:
            self.closed = True
            raise EOFError
        while len(self.buf) < n + 2:
            d = self.s.recv(65536)
            if not d:
                self.closed = True
                raise EOFError
            self.buf += d
        self.body += self.buf[:n]
        self.buf = self.buf[n + 2:]

    def events(self, n, timeout=20, idle=None):
        """Reads up to n events; stops early at the end of the stream, after `timeout`, or
        after `idle` seconds without data."""
        out = []
        end = time.time() + timeout
        self.s.settimeout(idle if idle is not None else timeout)
        while len(out) < n and time.time() < end:
            while b"\n\n" not in self.body:
                try:
                    self._body()
                except (EOFError, ConnectionError, socket.timeout):
                    return out
            block, self.body = self.body.split(b"\n\n", 1)
            ev = {}
            for line in block.decode().split("\n"):
                if line.startswith(":") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                ev[k] = v[1:] if v.startswith(" ") else v
            if "data" in ev:
                out.append((ev["id"], ev["event"], json.loads(ev["data"])))
        return out

    def close(self):
        self.s.close()


# versions count per shard: compare (shard, version) pairs
def pairs(evs):
    return [(e[2]["shard"], e[2]["version"], e[2]["key"]) for e in evs]


_, data = expect(P, "GET", "/v1/status", 200)
top = {g["name"]: int(g["last_version"], 16) for g in js(data)["subgroups"]}
for k in range(40):
    expect(HTTP[k % 3], "PUT", "/v1/kv/orders/w%d" % k, 200, ("w%d" % k).encode())
full = Stream(P, "/v1/watch/orders/")
all_events = full.events(100000, timeout=30, idle=2)
full.close()
mine = [e for e in all_events if e[2]["key"].startswith("/orders/w")]
check(len(mine) == 40, "a watch from the beginning saw %d of the 40 w-keys" % len(mine))
check(len({e[2]["shard"] for e in mine}) == 2, "events from both shards")
check(all(";" in e[0] for e in all_events), "ids carry both shards' positions: %r" % all_events[0][0])
# resume from the middle: exactly the events after it
mid = len(all_events) // 2
s2 = Stream(HTTP[1], "/v1/watch/orders/", last_id=all_events[mid][0])
rest = s2.events(len(all_events) - mid - 1, timeout=15)
s2.close()
check(sorted(pairs(rest)) == sorted(pairs(all_events[mid + 1:])) and
      len(set(pairs(rest))) == len(rest),
      "resume after %s: got %d events, expected %d" % (all_events[mid][0], len(rest),
                                                       len(all_events) - mid - 1))
# a reader that does not read is dropped, then resumes with nothing missed
big = b"z" * 65536
slow = Stream(P, "/v1/watch/orders/big/", read=False)
time.sleep(0.5)
for k in range(200):
    expect(HTTP[k % 3], "PUT", "/v1/kv/orders/big/%d" % k, 200, big)
time.sleep(11)  # the member drops a stream whose full buffer nobody read from for 10 s
slow.s.settimeout(20)
head = slow._until(b"\r\n\r\n")
slow.chunked = b"chunked" in head.lower()
slow.body = b""
got = slow.events(1000, timeout=30)
slow.close()
check(len(got) < 200, "the slow reader was dropped (it got %d of 200 events)" % len(got))
check(len(got) > 0, "the slow reader got some events before the drop")
after = Stream(HTTP[2], "/v1/watch/orders/big/", last_id=got[-1][0])
more = after.events(200 - len(got), timeout=30)
after.close()
keys = [e[2]["key"] for e in got + more]
print("   slow reader: %d events before the drop, %d after the resume" % (len(got), len(more)))
check(len(keys) == 200 and set(keys) == {"/orders/big/%d" % k for k in range(200)},
      "dropped then resumed: %d events, %d distinct" % (len(keys), len(set(keys))))
_, data = expect(P, "GET", "/metrics", 200)
check(b"squall_http_sse_dropped_total 0\n" not in data, "the drop is counted")

# kill the member the stream goes through; resume at another
_, data = expect(P, "GET", "/v1/status", 200)
victim = None
for g in js(data)["subgroups"]:
    if g["name"] == "persistent":
        for sh in g["shards"]:
            if len(sh["members"]) >= 2:
                # not member 0: its metrics are checked below
                victim = [m for m in sh["members"] if m != 0][0]
check(victim is not None, "a shard of 2 members")
vport = HTTP[victim]
other = HTTP[(victim + 1) % 3]
ws = Stream(vport, "/v1/watch/orders/k/")
for k in range(10):
    expect(other, "PUT", "/v1/kv/orders/k/%d" % k, 200, b"before")
before = ws.events(10)
check(len(before) == 10, "10 events before the kill, got %d" % len(before))
subprocess.run([LOCAL, "kill", str(victim), "--dir", DIR], check=True, stdout=subprocess.DEVNULL)
tail = ws.events(5, timeout=3)
ws.close()
check(not tail, "the stream ended with its member")
done = 0
deadline = time.time() + 30
k = 10
while k < 20 and time.time() < deadline:
    st_, _, _ = req(other, "PUT", "/v1/kv/orders/k/%d" % k, b"after")
    if st_ == 200:
        k += 1
    else:
        time.sleep(0.2)
check(k == 20, "writes after the kill")
ws2 = Stream(other, "/v1/watch/orders/k/", last_id=before[-1][0])
after_kill = ws2.events(10, timeout=20)
ws2.close()
ks = [e[2]["key"] for e in before + after_kill]
check(len(ks) == 20 and len(set(ks)) == 20,
      "resumed at another member: %d events, %d distinct" % (len(ks), len(set(ks))))
r = subprocess.run([LOCAL, "restart", str(victim), "--dir", DIR], stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
check(r.returncode == 0, "restart of member %d: %s" % (victim, r.stderr.decode()[-300:]))

print("== 7. metrics")
_, data = expect(P, "GET", "/metrics", 200)
r = subprocess.run(["promtool", "check", "metrics"], input=data, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT)
check(r.returncode == 0, "promtool check metrics: %s" % r.stdout.decode()[:1000])
text = data.decode()


def metric(name):
    for line in text.split("\n"):
        if line.startswith(name + " "):
            return float(line.split()[-1])
    fail("no metric %s" % name)


check(metric('squall_kv_requests_total{op="put",result="ok"}') >= 500, "put count")
check(metric('squall_kv_requests_total{op="put",result="conflict"}') >= 1, "conflict count")
check(metric('squall_kv_request_duration_seconds_count{op="put"}') >= 500, "put latencies")
check(metric("squall_view_members") >= 2 and metric("squall_member_in_group") == 1, "view")
check(metric("squall_log_syncs_total") > 0, "log syncs")
check(metric('squall_http_requests_total{code="2xx"}') > 1000, "http requests")
# the requests to this member's own service went in-process (not over its client port)
check(metric("squall_http_inprocess_requests_total") > 500, "in-process requests")

print("== 8. a member paused past the heartbeat timeout answers through the others, then rejoins")
# a member other than 0 (the metrics above are its) that is never a shard's only member: the
# keys of a shard whose only member is out of the group cannot be served by anyone
_, data = expect(P, "GET", "/v1/status", 200)
alone = {sh["members"][0] for g in js(data)["subgroups"] for sh in g["shards"]
         if len(sh["members"]) == 1}
paused = [m for m in (1, 2) if m not in alone]
check(paused, "a member that is no shard's only member (alone: %r)" % sorted(alone))
paused = paused[0]
vport = HTTP[paused]
with open(os.path.join(DIR, "m%d.pid" % paused)) as f:
    vpid = int(f.read().strip())
expect(vport, "PUT", "/v1/kv/orders/pause/warm", 200, b"x")  # its pooled connection is in use
os.kill(vpid, signal.SIGSTOP)
time.sleep(5)  # squall-local's heartbeat timeout is squalld's default, 3 s
os.kill(vpid, signal.SIGCONT)
t0 = time.time()
for k in range(20):
    st_, _, body = req(vport, "PUT", "/v1/kv/orders/pause/%d" % k, b"v%d" % k, timeout=30)
    check(st_ == 200, "put %d at the paused member: %d %s" % (k, st_, body[:200]))
    st_, _, body = req(vport, "GET", "/v1/kv/orders/pause/%d" % k, timeout=30)
    check(st_ == 200 and body == b"v%d" % k, "get %d at the paused member: %d %s" % (k, st_, body[:200]))
took = time.time() - t0
deadline = time.time() + 60
members = 0
while time.time() < deadline:
    st_, _, body = req(P, "GET", "/v1/status")
    members = len(js(body).get("members", [])) if st_ == 200 else 0
    if members == 3:
        break
    time.sleep(0.5)
check(members == 3, "member %d back in the view after its pause (%d members)" % (paused, members))
print("   20 puts and gets at paused member %d after SIGCONT: %.1f s; it rejoined" % (paused, took))
print("http: all cases passed")
