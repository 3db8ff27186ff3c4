"""test_client.py: the Python binding (python/squall) against real members, whose client ports
are in $SQUALL_MEMBERS (tests/integration/install.sh starts 3 and runs this with the installed
package on PYTHONPATH). Cases: every call and its result types, errors as exceptions (Conflict
with the current version), times as datetimes, 4 threads racing conditional increments on one
client and on their own (exact final values), a watch as an iterator and with a callback, its
resume from positions with nothing missed or repeated, close with calls and watches open."""
import datetime as dt
import os
import threading
import time
import unittest

import squall

MEMBERS = os.environ["SQUALL_MEMBERS"]
RUN = "%x" % int(time.time() * 1000)  # keys of this run only


def setUpModule():
    global C
    C = squall.Client(MEMBERS, timeout=10)
    for path, store in (("/pyp", "persistent"), ("/pyv", "volatile")):
        try:
            C.create_pool(path, store)
        except squall.Exists:
            pass


def tearDownModule():
    C.close()


class Calls(unittest.TestCase):
    def test_put_get_versions_and_times(self):
        k = "/pyp/%s/a" % RUN
        before = dt.datetime.now(dt.timezone.utc)
        w1 = C.put(k, b"one")
        w2 = C.put(k, "two")  # str goes as UTF-8
        self.assertIsInstance(w1, squall.Written)
        self.assertGreater(w2.version, w1.version)
        self.assertGreaterEqual(w2.timestamp_us, w1.timestamp_us)
        self.assertLess(abs((w1.time - before).total_seconds()), 5)
        e = C.get(k)
        self.assertEqual((e.key, e.value, e.version, e.deleted), (k, b"two", w2.version, False))
        self.assertEqual(e.time, w2.time)
        self.assertEqual(C.get(k, version=w1.version).value, b"one")
        self.assertEqual(C.get(k, at=w1.timestamp_us).value, b"one")
        self.assertEqual(C.get(k, at=w2.time).value, b"two")  # a datetime
        self.assertEqual(C.get(k, stable=True).value, b"two")
        hist = C.history(k)
        self.assertEqual([h.version for h in hist], [w1.version, w2.version])
        self.assertEqual([h.size for h in hist], [3, 3])
        d = C.delete(k, if_version=w2.version)
        self.assertGreater(d.version, w2.version)
        with self.assertRaises(squall.NotFound):
            C.get(k)
        with self.assertRaises(squall.NotFound) as cm:  # removed at that version
            C.get(k, version=d.version)
        self.assertTrue(cm.exception.deleted)
        self.assertEqual(C.get(k, version=w2.version).value, b"two")
        self.assertTrue(C.history(k)[-1].deleted)

    def test_list_and_pools(self):
        base = "/pyp/%s/list/" % RUN
        for i in range(5):
            C.put(base + str(i), b"x" * i)
        t = dt.datetime.now(dt.timezone.utc)
        C.delete(base + "0")
        items = C.list(base)
        self.assertEqual([i.key for i in items], [base + str(i) for i in range(1, 5)])
        self.assertEqual([i.size for i in items], [1, 2, 3, 4])
        self.assertEqual(len(C.list(base, at=t)), 5)
        pools = {p.path: p for p in C.pools()}
        self.assertEqual(pools["/pyp"].store, "persistent")
        self.assertEqual(pools["/pyv"].store, "volatile")
        self.assertGreaterEqual(pools["/pyp"].shards, 1)
        self.assertIn(C.member, range(0, 64))
        st = C.status()
        self.assertIn("view", st)
        self.assertIn("members", st)

    def test_errors(self):
        k = "/pyp/%s/e" % RUN
        w = C.put(k, b"v")
        with self.assertRaises(squall.Conflict) as cm:
            C.put(k, b"w", if_version=w.version + 100)
        self.assertEqual(cm.exception.current_version, w.version)
        self.assertEqual(cm.exception.name, "SQ_ECONFLICT")
        with self.assertRaises(squall.Conflict) as cm:
            C.put(k, b"w", if_absent=True)
        self.assertEqual(cm.exception.current_version, w.version)
        with self.assertRaises(squall.Conflict):
            C.delete(k, if_version=w.version + 1)
        with self.assertRaises(squall.NotFound):
            C.delete("/pyp/%s/never" % RUN)
        with self.assertRaises(KeyError):  # NotFound is a KeyError too
            C.get("/pyp/%s/never" % RUN)
        with self.assertRaises(squall.NoPool):
            C.get("/no-such-pool/x")
        with self.assertRaises(squall.InvalidArgument):
            C.put("no-leading-slash", b"v")
        with self.assertRaises(squall.Exists):
            C.create_pool("/pyp", "persistent")
        with self.assertRaises(TypeError):
            C.put(k, 42)
        with self.assertRaises(TypeError):
            C.get(k, at="yesterday")
        try:
            C.put(k, b"w", if_version=w.version + 100)
        except squall.SquallError as e:  # every error is a SquallError
            self.assertLess(e.code, 0)
            self.assertIn("version", str(e))
        with self.assertRaises(squall.Closed):
            with squall.Client("127.0.0.1:1", timeout=1):
                pass

    def test_closed_client(self):
        c = squall.Client(MEMBERS)
        c.put("/pyv/%s/closed" % RUN, b"v")
        c.close()
        c.close()  # idempotent
        with self.assertRaises(squall.Closed):
            c.get("/pyv/%s/closed" % RUN)


class Race(unittest.TestCase):
    """4 threads each add 1 to a counter N times with conditional puts, retrying on Conflict:
    the final value is 4 N and every success made its own version."""

    N = 150

    def race(self, shared: bool, pool: str):
        key = "%s/%s/counter-%s" % (pool, RUN, "shared" if shared else "own")
        C.put(key, b"0")
        wins = [0] * 4
        errors = []

        def worker(i):
            c = C if shared else squall.Client(MEMBERS)
            try:
                done = 0
                while done < self.N:
                    e = c.get(key, stable=True)
                    try:
                        c.put(key, str(int(e.value) + 1).encode(), if_version=e.version)
                        done += 1
                        wins[i] += 1
                    except squall.Conflict:
                        pass
            except Exception as x:  # reported below
                errors.append(repr(x))
            finally:
                if not shared:
                    c.close()

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertEqual(wins, [self.N] * 4)
        self.assertEqual(int(C.get(key, stable=True).value), 4 * self.N)
        if pool == "/pyp":  # a persistent pool keeps every version
            hist = C.history(key)
            self.assertEqual(len(hist), 4 * self.N + 1)  # the 0 and one per increment
            self.assertEqual([int(C.get(key, version=h.version).value) for h in hist[-3:]],
                             [4 * self.N - 2, 4 * self.N - 1, 4 * self.N])

    def test_one_client_four_threads(self):
        self.race(True, "/pyp")

    def test_four_clients(self):
        self.race(False, "/pyp")

    def test_volatile(self):
        self.race(True, "/pyv")


class Watches(unittest.TestCase):
    def test_iterate_close_and_resume(self):
        base = "/pyp/%s/w/" % RUN
        w = C.watch(base)
        for i in range(10):
            C.put(base + str(i), b"%d" % i)
        got = [w.get(10) for _ in range(10)]
        self.assertNotIn(None, got)
        self.assertEqual([e.key for e in got], [base + str(i) for i in range(10)])
        pos = w.positions
        w.close()
        for i in range(10, 20):  # while no watch runs
            C.put(base + str(i), b"%d" % i)
        with C.watch(base, from_shards=pos) as w2:
            more = [w2.get(10) for _ in range(10)]
            self.assertIsNone(w2.get(0.5))  # nothing repeated after them
        self.assertNotIn(None, more)
        keys = [e.key for e in got + more]
        self.assertEqual(keys, [base + str(i) for i in range(20)])
        by_shard = {}
        for e in got + more:
            self.assertGreater(e.version, by_shard.get(e.shard, 0))  # in order per shard
            by_shard[e.shard] = e.version

    def test_callback_and_iteration_end(self):
        base = "/pyv/%s/cb/" % RUN
        seen = []
        done = threading.Event()

        def on(ev):
            seen.append((ev.key, ev.value, ev.deleted))
            if ev.deleted:
                done.set()

        w = C.watch(base, callback=on)
        C.put(base + "x", b"1")
        C.delete(base + "x")
        self.assertTrue(done.wait(10))
        w.close()
        self.assertEqual(seen, [(base + "x", b"1", False), (base + "x", b"", True)])
        w3 = C.watch(base + "y")
        w3.close()
        self.assertEqual(list(w3), [])  # a closed, drained watch ends its iteration

    def test_close_client_with_watch_open(self):
        c = squall.Client(MEMBERS)
        w = c.watch("/pyv/%s/open/" % RUN)
        c.close()  # ends the watch too
        self.assertEqual(list(w), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
