package org.squall;

/** One key of a list, or one version of a history. */
public final class Item {
    public final String key;
    public final long version;
    public final long timestampMicros;
    public final long size;
    public final boolean deleted;

    Item(String key, long version, long timestampMicros, long size, boolean deleted) {
        this.key = key;
        this.version = version;
        this.timestampMicros = timestampMicros;
        this.size = size;
        this.deleted = deleted;
    }
}
