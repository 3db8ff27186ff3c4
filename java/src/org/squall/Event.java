package org.squall;

import java.time.Instant;

/** One update seen by a watch; versions count per shard of the pool. */
public final class Event {
    public final String key;
    public final byte[] value;
    public final long version;
    public final long timestampMicros;
    public final boolean deleted;
    public final int shard;

    Event(String key, byte[] value, long version, long timestampMicros, boolean deleted, int shard) {
        this.key = key;
        this.value = value;
        this.version = version;
        this.timestampMicros = timestampMicros;
        this.deleted = deleted;
        this.shard = shard;
    }

    public Instant time() {
        return Micros.instant(timestampMicros);
    }
}
