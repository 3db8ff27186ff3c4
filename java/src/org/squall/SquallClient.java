package org.squall;

import java.io.File;
import java.net.URISyntaxException;
import java.time.Instant;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.Consumer;

/**
 * A client of squall's key-value store: a connection to any member of a group (the members'
 * client ports, "host:port,host:port,..."), moving to the next member when one fails and
 * retrying with the same request numbers, so that every put is applied once. One client may be
 * used from several threads at once. Over JNI to libsquall-client (libsquall-jni.so, found
 * through the system property squall.jni or the environment's SQUALL_JNI_LIB, else beside the
 * installed jar in PREFIX/lib, else on java.library.path).
 *
 * <pre>
 * try (SquallClient c = new SquallClient("127.0.0.1:7500,127.0.0.1:7501", 10000)) {
 *     Written w = c.put("/orders/42", "one".getBytes());
 *     c.put("/orders/42", "two".getBytes(), w.version);  // Conflict if it moved on
 *     Entry e = c.get("/orders/42");
 * }
 * </pre>
 */
public final class SquallClient implements AutoCloseable {
    static {
        loadNative();
    }

    private long handle;
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private final Set<Watch> watches = new HashSet<>();

    /** Connects to one of {@code members}; each call (retries included) is bounded by timeoutMs. */
    public SquallClient(String members, int timeoutMs) throws SquallException {
        if (members == null || timeoutMs <= 0) {
            throw new IllegalArgumentException("members and a positive timeout are needed");
        }
        handle = open0(members, timeoutMs);
    }

    /**
     * Connects over TLS (members with [tls]): {@code caFile} is the PEM file of the CA that signed
     * the members' certificates (null: the system's trust store); {@code certFile} and {@code
     * keyFile} are this client's certificate and key, for members that require one (both null
     * otherwise). A member whose certificate is not trusted, or does not name the address it is
     * listed as, is not used; the exception says why when none is left.
     */
    public SquallClient(String members, int timeoutMs, String caFile, String certFile,
                        String keyFile) throws SquallException {
        if (members == null || timeoutMs <= 0) {
            throw new IllegalArgumentException("members and a positive timeout are needed");
        }
        if ((certFile == null) != (keyFile == null)) {
            throw new IllegalArgumentException("certFile and keyFile go together");
        }
        handle = openTls0(members, timeoutMs, caFile, certFile, keyFile);
    }

    private long enter() throws SquallException {
        lock.readLock().lock();
        if (handle == 0) {
            lock.readLock().unlock();
            throw new SquallException.Closed(-8, "SQ_ECLOSED", "the client is closed");
        }
        return handle;
    }

    private void leave() {
        lock.readLock().unlock();
    }

    /** Ends the watches, waits for the calls in flight and closes the connection. Idempotent. */
    @Override
    public void close() {
        Watch[] open;
        synchronized (watches) {
            open = watches.toArray(new Watch[0]);
        }
        for (Watch w : open) {
            w.close();
        }
        lock.writeLock().lock();
        try {
            if (handle != 0) {
                close0(handle);
                handle = 0;
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    /** Puts {@code value} under {@code key} ("/orders/42"). */
    public Written put(String key, byte[] value) throws SquallException {
        return written(putCall(key, value, 0, 0));
    }

    /** Puts only if the key is still at {@code ifVersion} (0: must not exist): else Conflict. */
    public Written put(String key, byte[] value, long ifVersion) throws SquallException {
        return written(putCall(key, value, 1, ifVersion));
    }

    /** Puts only if the key does not exist (or was removed): else Conflict. */
    public Written putIfAbsent(String key, byte[] value) throws SquallException {
        return written(putCall(key, value, 2, 0));
    }

    private long[] putCall(String key, byte[] value, int mode, long ifVersion) throws SquallException {
        long h = enter();
        try {
            return put0(h, key, value, mode, ifVersion);
        } finally {
            leave();
        }
    }

    private static Written written(long[] vt) {
        return new Written(vt[0], vt[1]);
    }

    /** The key's latest value: NotFound when there is none. */
    public Entry get(String key) throws SquallException {
        return getCall(key, 0, 0, false);
    }

    /** What every replica holds: sees every put completed before it. */
    public Entry getStable(String key) throws SquallException {
        return getCall(key, 0, 0, true);
    }

    /** The latest value at or before {@code version}. */
    public Entry getAtVersion(String key, long version) throws SquallException {
        return getCall(key, 1, version, false);
    }

    /** The value as of time {@code t}. */
    public Entry getAt(String key, Instant t) throws SquallException {
        return getCall(key, 2, Micros.of(t), false);
    }

    private Entry getCall(String key, int mode, long arg, boolean stable) throws SquallException {
        long h = enter();
        try {
            return get0(h, key, mode, arg, stable);
        } finally {
            leave();
        }
    }

    /** Removes {@code key} (a tombstone with its own version): NotFound if it does not exist. */
    public Written delete(String key) throws SquallException {
        return deleteCall(key, false, 0);
    }

    /** Removes only if the key is at {@code ifVersion}: else Conflict. */
    public Written delete(String key, long ifVersion) throws SquallException {
        return deleteCall(key, true, ifVersion);
    }

    private Written deleteCall(String key, boolean ifv, long version) throws SquallException {
        long h = enter();
        try {
            return written(delete0(h, key, ifv, version));
        } finally {
            leave();
        }
    }

    /** The keys under {@code prefix} with their latest version, sorted; removed keys left out. */
    public List<Item> list(String prefix) throws SquallException {
        return itemsCall(0, prefix, false, 0);
    }

    /** The same as of time {@code t}. */
    public List<Item> list(String prefix, Instant t) throws SquallException {
        return itemsCall(0, prefix, true, Micros.of(t));
    }

    /** Every version of {@code key}, oldest first (removals have deleted set). */
    public List<Item> history(String key) throws SquallException {
        return itemsCall(1, key, false, 0);
    }

    private List<Item> itemsCall(int kind, String arg, boolean at, long t) throws SquallException {
        long h = enter();
        try {
            return Arrays.asList(items0(h, kind, arg, at, t));
        } finally {
            leave();
        }
    }

    /** Creates the pool {@code path} ("/orders") on a subgroup of store type {@code store}
     *  ("volatile", "persistent", "trigger") or of that name; shards 0: all. Exists if it does. */
    public void createPool(String path, String store, int shards) throws SquallException {
        long h = enter();
        try {
            createPool0(h, path, store, shards);
        } finally {
            leave();
        }
    }

    /**
     * Every update of {@code target} (a key, or a prefix ending in '/'), in version order per
     * shard, from {@code fromVersion} on (0: from the start the store keeps). {@code fn} runs on
     * the client's I/O thread: keep it short. Close the Watch to stop it.
     */
    public Watch watch(String target, long fromVersion, Consumer<Event> fn) throws SquallException {
        long[] from = new long[Watch.SHARDS];
        Arrays.fill(from, fromVersion);
        return watch(target, from, fn);
    }

    /** The same from per-shard positions (a closed Watch's {@link Watch#positions()}): resumes
     *  it with nothing missed. */
    public Watch watch(String target, long[] fromShards, Consumer<Event> fn) throws SquallException {
        if (fromShards.length > Watch.SHARDS || fn == null) {
            throw new IllegalArgumentException("a consumer, and at most " + Watch.SHARDS + " shards");
        }
        Watch w = new Watch(this, fromShards, fn);
        long h = enter();
        try {
            long[] idPtr = watch0(h, target, Arrays.copyOf(fromShards, Watch.SHARDS), w);
            w.started(idPtr[0], idPtr[1]);
        } finally {
            leave();
        }
        synchronized (watches) {
            watches.add(w);
        }
        return w;
    }

    void unwatch(Watch w, long id, long ptr) {
        lock.readLock().lock();
        try {
            unwatch0(handle, id, ptr); /* handle 0: the client is closed; frees ptr only */
        } finally {
            lock.readLock().unlock();
        }
        synchronized (watches) {
            watches.remove(w);
        }
    }

    // ---- native ----

    private static native long open0(String members, int timeoutMs) throws SquallException;

    private static native long openTls0(String members, int timeoutMs, String caFile,
                                        String certFile, String keyFile) throws SquallException;

    private static native void close0(long h);

    private static native long[] put0(long h, String key, byte[] value, int mode, long ifVersion)
            throws SquallException;

    private static native Entry get0(long h, String key, int mode, long arg, boolean stable)
            throws SquallException;

    private static native long[] delete0(long h, String key, boolean ifVersion, long version)
            throws SquallException;

    private static native Item[] items0(long h, int kind, String arg, boolean at, long timeUs)
            throws SquallException;

    private static native void createPool0(long h, String path, String store, int shards)
            throws SquallException;

    private static native long[] watch0(long h, String target, long[] from, Watch w)
            throws SquallException;

    private static native void unwatch0(long h, long id, long ptr);

    private static void loadNative() {
        String p = System.getProperty("squall.jni");
        if (p == null) {
            p = System.getenv("SQUALL_JNI_LIB");
        }
        if (p == null) {
            try {
                File jar = new File(SquallClient.class.getProtectionDomain().getCodeSource().getLocation().toURI());
                /* PREFIX/share/java/squall.jar -> PREFIX/lib/libsquall-jni.so */
                File lib = new File(jar.getParentFile(), "../../lib/libsquall-jni.so");
                if (lib.exists()) {
                    p = lib.getCanonicalPath();
                }
            } catch (URISyntaxException | java.io.IOException | SecurityException | NullPointerException e) {
                p = null;
            }
        }
        if (p != null) {
            System.load(p);
        } else {
            System.loadLibrary("squall-jni");
        }
    }
}
