import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.squall.Entry;
import org.squall.Event;
import org.squall.Item;
import org.squall.SquallClient;
import org.squall.SquallException;
import org.squall.Watch;
import org.squall.Written;

/**
 * SquallTest: the Java binding against real members (their client ports in args[0]), run by
 * tests/integration/install.sh with the installed jar: calls and results, errors as exceptions
 * (Conflict with the current version), 4 threads racing conditional increments with an exact
 * final value, a watch with a Consumer and its resume from positions with nothing missed or
 * repeated. Exits 1 at the first failed check.
 */
public final class SquallTest {
    static int checks;

    static void check(boolean ok, String what) {
        checks++;
        if (!ok) {
            System.err.println("FAIL: " + what);
            System.exit(1);
        }
    }

    static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String s(byte[] v) {
        return new String(v, StandardCharsets.UTF_8);
    }

    interface Call {
        void run() throws SquallException;
    }

    static <T extends SquallException> T expect(Class<T> cls, Call c, String what) {
        try {
            c.run();
        } catch (SquallException e) {
            check(cls.isInstance(e), what + ": " + e.getClass().getName() + " " + e.getMessage());
            return cls.cast(e);
        }
        check(false, what + ": no exception");
        return null;
    }

    public static void main(String[] args) throws Exception {
        String members = args[0];
        String run = Long.toHexString(System.currentTimeMillis());
        try (SquallClient c = new SquallClient(members, 10000)) {
            try {
                c.createPool("/jp", "persistent", 0);
            } catch (SquallException.Exists e) {
                // from an earlier run
            }
            expect(SquallException.Exists.class, () -> c.createPool("/jp", "persistent", 0), "pool again");

            // calls and results
            String k = "/jp/" + run + "/a";
            Written w1 = c.put(k, b("one"));
            Written w2 = c.put(k, b("two"), w1.version);
            check(w2.version > w1.version && w2.timestampMicros >= w1.timestampMicros, "versions grow");
            Entry e = c.get(k);
            check(s(e.value).equals("two") && e.version == w2.version && e.key.equals(k), "get: " + e);
            check(s(c.getAtVersion(k, w1.version).value).equals("one"), "get at a version");
            check(s(c.getAt(k, w1.time()).value).equals("one"), "get at a time");
            check(s(c.getStable(k).value).equals("two"), "stable get");
            check(Math.abs(w1.time().toEpochMilli() - Instant.now().toEpochMilli()) < 10000, "times");
            List<Item> h = c.history(k);
            check(h.size() == 2 && h.get(0).version == w1.version && h.get(1).size == 3, "history");
            check(c.list("/jp/" + run + "/").size() == 1, "list");

            // errors
            SquallException.Conflict cf = expect(SquallException.Conflict.class,
                    () -> c.put(k, b("x"), w1.version), "stale if-version");
            check(cf.currentVersion() == w2.version && cf.name().equals("SQ_ECONFLICT"), "conflict's version");
            expect(SquallException.Conflict.class, () -> c.putIfAbsent(k, b("x")), "if absent");
            Written d = c.delete(k, w2.version);
            check(d.version > w2.version, "delete");
            expect(SquallException.NotFound.class, () -> c.get(k), "get removed");
            SquallException.NotFound nf = expect(SquallException.NotFound.class,
                    () -> c.getAtVersion(k, d.version), "get at the removal");
            check(nf.deleted(), "removed at that version");
            check(s(c.getAtVersion(k, w2.version).value).equals("two"), "before the removal");
            expect(SquallException.NotFound.class, () -> c.delete(k), "delete removed");
            expect(SquallException.NoPool.class, () -> c.get("/no-such-pool/x"), "no pool");
            expect(SquallException.InvalidArgument.class, () -> c.put("no-slash", b("x")), "bad key");
            expect(SquallException.class, () -> new SquallClient("127.0.0.1:1", 1000).close(), "no member");

            // 4 threads race conditional increments on one client: exact final value
            String ctr = "/jp/" + run + "/counter";
            c.put(ctr, b("0"));
            final int n = 150;
            AtomicInteger wins = new AtomicInteger();
            List<String> errors = new ArrayList<>();
            Thread[] ts = new Thread[4];
            for (int i = 0; i < 4; i++) {
                ts[i] = new Thread(() -> {
                    int done = 0;
                    try {
                        while (done < n) {
                            Entry cur = c.getStable(ctr);
                            try {
                                c.put(ctr, b(Integer.toString(Integer.parseInt(s(cur.value)) + 1)), cur.version);
                                done++;
                                wins.incrementAndGet();
                            } catch (SquallException.Conflict x) {
                                // another thread won: read again
                            }
                        }
                    } catch (Exception x) {
                        synchronized (errors) {
                            errors.add(x.toString());
                        }
                    }
                });
                ts[i].start();
            }
            for (Thread t : ts) {
                t.join(120000);
            }
            check(errors.isEmpty(), "race errors: " + errors);
            check(wins.get() == 4 * n, "wins " + wins.get());
            check(Integer.parseInt(s(c.getStable(ctr).value)) == 4 * n, "final count");
            check(c.history(ctr).size() == 4 * n + 1, "one version per increment");

            // a watch with a Consumer; closed, then resumed from its positions
            String base = "/jp/" + run + "/w/";
            LinkedBlockingQueue<Event> q = new LinkedBlockingQueue<>();
            Watch wt = c.watch(base, 0, q::add);
            for (int i = 0; i < 10; i++) {
                c.put(base + i, b(Integer.toString(i)));
            }
            List<String> keys = new ArrayList<>();
            for (int i = 0; i < 10; i++) {
                Event ev = q.poll(10, TimeUnit.SECONDS);
                check(ev != null, "event " + i);
                keys.add(ev.key);
            }
            long[] pos = wt.positions();
            wt.close();
            for (int i = 10; i < 20; i++) {
                c.put(base + i, b(Integer.toString(i)));
            }
            LinkedBlockingQueue<Event> q2 = new LinkedBlockingQueue<>();
            try (Watch w2nd = c.watch(base, pos, q2::add)) {
                for (int i = 10; i < 20; i++) {
                    Event ev = q2.poll(10, TimeUnit.SECONDS);
                    check(ev != null, "resumed event " + i);
                    keys.add(ev.key);
                }
                check(q2.poll(500, TimeUnit.MILLISECONDS) == null, "nothing repeated");
            }
            for (int i = 0; i < 20; i++) {
                check(keys.get(i).equals(base + i), "event order at " + i + ": " + keys);
            }
            c.watch(base, 0, ev -> { }); // left open: close() ends it
        }
        System.out.println("java: " + checks + " checks passed (4 x 150 increments exact, watch resumed)");
    }
}
