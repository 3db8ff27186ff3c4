package org.squall;

/**
 * An error from the group or the client library: {@link #code()} is the negative SQ_E* number
 * of include/squall/errors.h, {@link #name()} its name ("SQ_ECONFLICT"), and the message the
 * member's one-line reason. The subclasses are the errors a program usually tells apart.
 */
public class SquallException extends Exception {
    private static final long serialVersionUID = 1L;
    private final int code;
    private final String name;

    public SquallException(int code, String name, String message) {
        super(name + ": " + message);
        this.code = code;
        this.name = name;
    }

    public int code() {
        return code;
    }

    public String name() {
        return name;
    }

    /** A conditional put or delete found the key at another version. */
    public static final class Conflict extends SquallException {
        private static final long serialVersionUID = 1L;
        private final long currentVersion;

        public Conflict(int code, String name, String message, long currentVersion) {
            super(code, name, message);
            this.currentVersion = currentVersion;
        }

        /** The key's version now (0 when it never existed). */
        public long currentVersion() {
            return currentVersion;
        }
    }

    /** No such key, or the key was removed at the version or time asked for. */
    public static final class NotFound extends SquallException {
        private static final long serialVersionUID = 1L;
        private final boolean deleted;

        public NotFound(int code, String name, String message, boolean deleted) {
            super(code, name, message);
            this.deleted = deleted;
        }

        /** Whether a read at a version or time found the key removed then. */
        public boolean deleted() {
            return deleted;
        }
    }

    /** No pool holds the key. */
    public static final class NoPool extends SquallException {
        private static final long serialVersionUID = 1L;

        public NoPool(int code, String name, String message) {
            super(code, name, message);
        }
    }

    /** The pool exists already. */
    public static final class Exists extends SquallException {
        private static final long serialVersionUID = 1L;

        public Exists(int code, String name, String message) {
            super(code, name, message);
        }
    }

    /** A bad key, path or option, or a value over the pool's limit. */
    public static final class InvalidArgument extends SquallException {
        private static final long serialVersionUID = 1L;

        public InvalidArgument(int code, String name, String message) {
            super(code, name, message);
        }
    }

    /** Not now (no quorum, a view change, a member failed, no answer in time): may succeed later. */
    public static final class Unavailable extends SquallException {
        private static final long serialVersionUID = 1L;

        public Unavailable(int code, String name, String message) {
            super(code, name, message);
        }
    }

    /** The client is closed, or no member of its list speaks the client protocol. */
    public static final class Closed extends SquallException {
        private static final long serialVersionUID = 1L;

        public Closed(int code, String name, String message) {
            super(code, name, message);
        }
    }
}
