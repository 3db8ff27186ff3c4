# hello.py: the Python binding (python/squall), run as
#   PYTHONPATH=PREFIX/lib/python3/dist-packages python3 hello.py MEMBERS
import sys
import squall

with squall.Client(sys.argv[1], timeout=5) as c:
    w = c.put("/orders/7", b'{"qty": 1}')
    try:
        c.put("/orders/7", b'{"qty": 2}', if_version=w.version + 1)
    except squall.Conflict as e:
        print("conflict: the key is at", hex(e.current_version))
    e = c.get("/orders/7")
    print(e.key, e.value.decode(), hex(e.version), e.time.isoformat())
    with c.watch("/orders/", from_version=w.version) as updates:
        c.delete("/orders/7")
        for ev in updates:
            print("watch:", ev.key, hex(ev.version), "removed" if ev.deleted else ev.value)
            if ev.deleted:
                break
