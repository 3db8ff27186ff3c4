package org.squall;

import java.time.Instant;

/** A value read by {@link SquallClient#get}: its bytes, version and hybrid logical clock time. */
public final class Entry {
    public final String key;
    public final byte[] value;
    public final long version;
    public final long timestampMicros;

    Entry(String key, byte[] value, long version, long timestampMicros) {
        this.key = key;
        this.value = value;
        this.version = version;
        this.timestampMicros = timestampMicros;
    }

    public Instant time() {
        return Micros.instant(timestampMicros);
    }

    @Override
    public String toString() {
        return "Entry(" + key + ", " + value.length + " bytes, version 0x" + Long.toHexString(version) + ")";
    }
}
