#!/usr/bin/env python3
"""make_corpus.py: writes the seed corpus of fuzz_frame.c into tests/fuzz/corpus/: valid client
frames (src/kv/wire.h), item lists, replicated ops and saved stores (src/kv/store.h, store.c).
The formats are written out here independently of the C code, so a seed that stops decoding
means one side changed. Run it again after a format change and commit the result."""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

MAGIC, PROTO = 0x5153, 1
OP = {"hello": 1, "put": 2, "get": 3, "remove": 4, "list": 5, "history": 6, "watch": 7,
      "unwatch": 8, "pool_create": 9, "pool_list": 10, "status": 11, "event": 12}
F_IF_VERSION, F_IF_ABSENT, F_AT_VERSION, F_AT_TIME, F_STABLE, F_SIZE_ONLY = 1, 2, 4, 8, 16, 32
F_DELETED, F_JSON = 128, 256
E_CONFLICT, E_NOTFOUND = -21, -19


def frame(op, flags=0, status=0, req_id=0, client=0, version=0, time=0, count=0, key=b"",
          s=b"", value=b""):
    body = struct.pack("<HBBIiQQQQIHHI", MAGIC, PROTO, OP[op], flags, status, req_id, client,
                       version, time, count, len(key), len(s), len(value)) + key + s + value
    return struct.pack("<I", len(body)) + body


def item(version, timestamp, size, key, deleted=False):
    return struct.pack("<QQIHBB", version, timestamp, size, len(key), 1 if deleted else 0,
                       0) + key


def kv_op(kind, key=b"", value=b"", flags=0, client=0, req_id=0, expect=0, origin=0, arg=0):
    return struct.pack("<BBHIQQQII", kind, flags, len(key), len(value), client, req_id, expect,
                       origin, arg) + key + value


def saved_store(store_type, last, keys, clients):
    """keys: [(name, value or None, [(version, timestamp, size, deleted)])];
    clients: [(id, last_used, head, [(req, status, version, timestamp)])]."""
    b = struct.pack("<IIQQ", 0x564B5153, (1 << 8) | store_type, last, len(keys))
    for name, value, hist in keys:
        b += struct.pack("<HIIB", len(name), len(hist), len(value or b""), value is not None)
        b += name + (value or b"")
        for version, timestamp, size, deleted in hist:
            b += struct.pack("<QQIB", version, timestamp, size, deleted)
    b += struct.pack("<Q", len(clients))
    for cid, last_used, head, answers in clients:
        b += struct.pack("<QQII", cid, last_used, len(answers), head)
        for req, status, version, timestamp in answers:
            b += struct.pack("<QiQQ", req, status, version, timestamp)
    return b


def main():
    os.makedirs(OUT, exist_ok=True)
    t0 = 1_700_000_000_000_000
    seeds = {
        "frame-hello": frame("hello", req_id=1, client=0x1234),
        "frame-hello-answer": frame("hello", req_id=1, s=b"member=2"),
        "frame-put": frame("put", req_id=2, client=0x1234, key=b"/orders/42", value=b"{\"n\":1}"),
        "frame-put-if-version": frame("put", F_IF_VERSION, req_id=3, client=0x1234,
                                      version=(1 << 32) + 5, key=b"/orders/42", value=b"v2"),
        "frame-put-conflict-answer": frame("put", status=E_CONFLICT, req_id=3,
                                           version=(1 << 32) + 7, time=t0,
                                           s=b"the key is not at the expected version"),
        "frame-get-at-time": frame("get", F_AT_TIME | F_STABLE, req_id=4, client=0x1234,
                                   time=t0, key=b"/orders/42"),
        "frame-get-answer": frame("get", req_id=4, version=(1 << 32) + 5, time=t0, count=2,
                                  value=b"v2"),
        "frame-remove": frame("remove", F_IF_VERSION, req_id=5, version=9, key=b"/a"),
        "frame-pool-create": frame("pool_create", req_id=6, count=4, key=b"/orders",
                                   s=b"persistent"),
        "frame-status-json": frame("status", F_JSON, req_id=7),
        "frame-event-deleted": frame("event", F_DELETED, req_id=8, version=12, time=t0,
                                     key=b"/a/b"),
        "frame-list-answer": frame("list", req_id=9, count=3,
                                   value=item(3, t0, 10, b"/a/1") + item(4, t0 + 1, 0, b"/a/2",
                                                                          True) +
                                   item(5, t0 + 2, 7, b"/a/3")),
        "items-history": item(1, t0, 5, b"/h") + item(2, t0 + 9, 0, b"/h", True) +
        item(3, t0 + 20, 6, b"/h"),
        "items-pools": item(1, 1, 4, b"/orders") + item(2, 0, 2, b"/sessions"),
        "op-put": kv_op(1, b"/orders/42", b"hello", client=0x1234, req_id=2, origin=1),
        "op-put-if-absent": kv_op(1, b"/x", b"", flags=2, client=7, req_id=1),
        "op-remove-if-version": kv_op(2, b"/x", flags=1, client=7, req_id=2, expect=11),
        "op-barrier": kv_op(3, origin=2),
        "op-pool-create": kv_op(4, b"/orders", arg=1 | (1 << 8) | (4 << 16)),
        "store-empty-volatile": saved_store(0, 0, [], []),
        "store-volatile": saved_store(
            0, 12, [(b"/a", b"one", [(10, t0, 3, 0)]), (b"/b", None, [(12, t0 + 5, 0, 1)])],
            [(0x1234, 12, 2, [(1, 0, 10, t0), (2, 0, 12, t0 + 5)])]),
        "store-persistent": saved_store(
            1, 30,
            [(b"/p/1", b"latest", [(10, t0, 2, 0), (20, t0 + 1, 0, 1), (30, t0 + 2, 6, 0)]),
             (b"", b"", [(15, t0, 0, 0)])],
            [(7, 30, 3, [(1, 0, 10, t0), (2, 0, 20, t0 + 1), (3, E_CONFLICT, 20, t0 + 1)]),
             (8, 15, 1, [(9, E_NOTFOUND, 0, 0)])]),
        "store-trigger": saved_store(2, 5, [(b"/t", None, [(5, t0, 100, 0)])],
                                     [(3, 5, 1, [(1, 0, 5, t0)])]),
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
