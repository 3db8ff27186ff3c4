package org.squall;

import java.util.function.Consumer;

/** A running watch (see {@link SquallClient#watch}). Close it to stop it. */
public final class Watch implements AutoCloseable {
    static final int SHARDS = 16; /* SQ_CLIENT_WATCH_SHARDS */
    private final SquallClient client;
    private final Consumer<Event> fn;
    private final long[] next;
    private long id, ptr;
    private boolean closed;

    Watch(SquallClient client, long[] from, Consumer<Event> fn) {
        this.client = client;
        this.fn = fn;
        this.next = java.util.Arrays.copyOf(from, SHARDS);
    }

    synchronized void started(long id, long ptr) {
        this.id = id;
        this.ptr = ptr;
    }

    /* from the native callback, on the client's I/O thread */
    void deliver(String key, byte[] value, long version, long ts, boolean deleted, int shard) {
        synchronized (this) {
            if (shard >= 0 && shard < SHARDS) {
                next[shard] = version + 1;
            }
        }
        fn.accept(new Event(key, value, version, ts, deleted, shard));
    }

    /** Per shard, the version after the last event delivered: resume with these. */
    public synchronized long[] positions() {
        return next.clone();
    }

    /** Stops the watch: no event reaches the consumer once it returns. Not from the consumer
     *  itself (IllegalStateException): close it from another thread. */
    @Override
    public void close() {
        long i, p;
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            i = id;
            p = ptr;
        }
        try {
            client.unwatch(this, i, p);
        } catch (IllegalStateException e) {
            synchronized (this) {
                closed = false; /* from its own consumer: it goes on */
            }
            throw e;
        }
    }
}
