package org.squall;

import java.time.Instant;

/** What a put or delete made: the new version and its time. */
public final class Written {
    public final long version;
    public final long timestampMicros;

    Written(long version, long timestampMicros) {
        this.version = version;
        this.timestampMicros = timestampMicros;
    }

    public Instant time() {
        return Micros.instant(timestampMicros);
    }
}
