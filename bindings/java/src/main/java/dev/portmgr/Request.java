package dev.portmgr;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.PointerByReference;
import java.time.Duration;
import java.util.Arrays;

/**
 * What to allocate: an immutable value, made by {@link #builder()}. Every option left unset
 * is the library's default: one TCP port from the default pool (outside the kernel's
 * ephemeral range; {@code PORTMGR_RANGE=A-B} moves it), random strategy, held while this
 * process lives.
 *
 * <pre>{@code
 * Request web = Request.builder().name("web").proto(Proto.TCP).count(1).build();
 * Request block = Request.builder().name("cluster").count(3).contiguous(true)
 *         .proto(Proto.BOTH).strategy(Strategy.HASH).range(20000, 29999).build();
 * }</pre>
 *
 * <p>The builder only records values; the library checks them, and their combination, when
 * the request is used ({@link InvalidArgumentException}). A request may be used any number of
 * times, from any thread, on any registry.
 */
public final class Request {
    private static final Request DEFAULTS = new Builder().build();

    private final String name;
    private final Proto proto;
    private final int count;
    private final boolean contiguous;
    private final int rangeStart;
    private final int rangeEnd;
    private final Strategy strategy;
    private final int preferred;
    private final boolean required;
    private final long ttlMs;
    private final long watchPid;
    private final int[] exclude;
    private final String host;

    private Request(Builder b) {
        name = b.name;
        proto = b.proto;
        count = b.count;
        contiguous = b.contiguous;
        rangeStart = b.rangeStart;
        rangeEnd = b.rangeEnd;
        strategy = b.strategy;
        preferred = b.preferred;
        required = b.required;
        ttlMs = b.ttlMs;
        watchPid = b.watchPid;
        exclude = b.exclude.clone();
        host = b.host;
    }

    /** A new builder with every option at its default. */
    public static Builder builder() {
        return new Builder();
    }

    /** The default request: one TCP port from the default pool. */
    public static Request defaults() {
        return DEFAULTS;
    }

    /** A builder holding this request's options. */
    public Builder toBuilder() {
        Builder b = new Builder();
        b.name = name;
        b.proto = proto;
        b.count = count;
        b.contiguous = contiguous;
        b.rangeStart = rangeStart;
        b.rangeEnd = rangeEnd;
        b.strategy = strategy;
        b.preferred = preferred;
        b.required = required;
        b.ttlMs = ttlMs;
        b.watchPid = watchPid;
        b.exclude = exclude.clone();
        b.host = host;
        return b;
    }

    /** The service name, or null. */
    public String name() {
        return name;
    }

    /** The protocols (null: TCP, the library's default). */
    public Proto proto() {
        return proto;
    }

    /** How many ports (0: the library's default, 1). */
    public int count() {
        return count;
    }

    /** The probe and bind address, or null for the dual-stack wildcard. */
    public String host() {
        return host;
    }

    /** The number of ports a lease of this request has. */
    int portCount() {
        return Math.max(count, 1);
    }

    @Override
    public String toString() {
        return "Request{name=" + name + ", proto=" + proto + ", count=" + count + ", contiguous=" + contiguous
                + ", range=" + (rangeStart == 0 && rangeEnd == 0 ? "pool" : rangeStart + "-" + rangeEnd)
                + ", strategy=" + strategy + ", preferred=" + preferred + (required ? " (required)" : "")
                + ", ttlMs=" + ttlMs + ", watchPid=" + watchPid + ", exclude=" + Arrays.toString(exclude)
                + ", host=" + host + "}";
    }

    /**
     * Builds the library's request; the caller frees it with {@code portmgr_request_free}.
     * A failing setter's message is read before the request is freed.
     */
    Pointer toNative() {
        short[] ex = new short[exclude.length];
        for (int i = 0; i < exclude.length; i++) {
            ex[i] = port16(exclude[i], "exclude");
        }
        if (count < 0) {
            throw PortmgrException.invalid("`count` is negative");
        }
        if (ttlMs < 0) {
            throw PortmgrException.invalid("`ttl` is negative");
        }
        if (watchPid < 0 || watchPid > 0xFFFF_FFFFL) {
            throw PortmgrException.invalid("`watchPid` is not a pid");
        }
        checkString(name, "name");
        checkString(host, "host");
        short start = port16(rangeStart, "range start");
        short end = port16(rangeEnd, "range end");
        short pref = port16(preferred, "preferred");
        PointerByReference out = new PointerByReference();
        Lib.check(Lib.portmgr_request_new(out));
        Pointer req = out.getValue();
        int st = Lib.OK;
        if (proto != null) {
            st = Lib.portmgr_request_set_protocols(req, proto.bits);
        }
        if (st == Lib.OK && (rangeStart != 0 || rangeEnd != 0)) {
            st = Lib.portmgr_request_set_range(req, start, end);
        }
        if (st == Lib.OK && ex.length > 0) {
            st = Lib.portmgr_request_exclude(req, ex, new Lib.SizeT(ex.length));
        }
        if (st == Lib.OK && strategy != null) {
            st = Lib.portmgr_request_set_strategy(req, strategy.value);
        }
        if (st == Lib.OK && name != null) {
            st = Lib.portmgr_request_set_name(req, name);
        }
        if (st == Lib.OK && count != 0) {
            st = Lib.portmgr_request_set_count(req, new Lib.SizeT(count));
        }
        if (st == Lib.OK && contiguous) {
            st = Lib.portmgr_request_set_contiguous(req, (byte) 1);
        }
        if (st == Lib.OK && ttlMs != 0) {
            st = Lib.portmgr_request_set_ttl_ms(req, ttlMs);
        }
        if (st == Lib.OK && watchPid != 0) {
            st = Lib.portmgr_request_set_watch_pid(req, (int) watchPid);
        }
        if (st == Lib.OK && (preferred != 0 || required)) {
            st = Lib.portmgr_request_set_preferred(req, pref, (byte) (required ? 1 : 0));
        }
        if (st == Lib.OK && host != null) {
            st = Lib.portmgr_request_set_probe_addr(req, host);
        }
        if (st != Lib.OK) {
            PortmgrException e = Lib.fail(st);
            Lib.portmgr_request_free(req);
            throw e;
        }
        return req;
    }

    static short port16(int port, String what) {
        if (port < 0 || port > 65535) {
            throw PortmgrException.invalid("`" + what + "` " + port + " is not a port (0-65535)");
        }
        return (short) port;
    }

    static void checkString(String s, String what) {
        if (s != null && s.indexOf('\0') >= 0) {
            throw PortmgrException.invalid("`" + what + "` contains a NUL character");
        }
    }

    /** Builds a {@link Request}. Not thread-safe (a builder belongs to one thread); the
     * request it builds is immutable. */
    public static final class Builder {
        private String name;
        private Proto proto;
        private int count;
        private boolean contiguous;
        private int rangeStart;
        private int rangeEnd;
        private Strategy strategy;
        private int preferred;
        private boolean required;
        private long ttlMs;
        private long watchPid;
        private int[] exclude = new int[0];
        private String host;

        private Builder() {}

        /** Name the lease: a service name (1 to 56 bytes of UTF-8, no control characters),
         * unique among the registry's live leases ({@link InUseException} when taken), and
         * the key of {@link Strategy#HASH}. Null: no name. */
        public Builder name(String name) {
            this.name = name;
            return this;
        }

        /** The protocols the ports must be free for (default {@link Proto#TCP}). */
        public Builder proto(Proto proto) {
            this.proto = proto;
            return this;
        }

        /** Take {@code count} ports at once, all or nothing (1 to 4096; default 1). */
        public Builder count(int count) {
            this.count = count;
            return this;
        }

        /** With a count above 1: the ports must be consecutive. */
        public Builder contiguous(boolean contiguous) {
            this.contiguous = contiguous;
            return this;
        }

        /** Draw from the inclusive range {@code start..end} instead of the default pool. */
        public Builder range(int start, int end) {
            this.rangeStart = start;
            this.rangeEnd = end;
            return this;
        }

        /** How candidates are ordered (default {@link Strategy#RANDOM}). */
        public Builder strategy(Strategy strategy) {
            this.strategy = strategy;
            return this;
        }

        /** Try {@code port} first, then fall back to the strategy (0: no preference). */
        public Builder preferred(int port) {
            return preferred(port, false);
        }

        /** Try {@code port} first; when it is taken, fail with {@link InUseException} if
         * {@code required}, else fall back to the strategy. */
        public Builder preferred(int port, boolean required) {
            this.preferred = port;
            this.required = required;
            return this;
        }

        /** Hold the ports for {@code ttl} (at least 1 s; rounded up to milliseconds) whether
         * or not this process lives; renew with {@link Lease#renew}. Null: no TTL. */
        public Builder ttl(Duration ttl) {
            if (ttl == null) {
                this.ttlMs = 0;
            } else if (ttl.isNegative()) {
                this.ttlMs = -1;
            } else {
                long ms = ttl.toMillis();
                this.ttlMs = ttl.minusMillis(ms).isZero() ? ms : ms + 1;
            }
            return this;
        }

        /** Hold the ports while process {@code pid} lives (0: not). */
        public Builder watchPid(long pid) {
            this.watchPid = pid;
            return this;
        }

        /** Never hand out these ports for this request. */
        public Builder exclude(int... ports) {
            this.exclude = ports == null ? new int[0] : ports.clone();
            return this;
        }

        /** Probe (and, for a bound socket, bind) on this IPv4 or IPv6 address, e.g.
         * {@code "127.0.0.1"}; null: the dual-stack wildcard. */
        public Builder host(String host) {
            this.host = host;
            return this;
        }

        /** The request. */
        public Request build() {
            return new Request(this);
        }
    }
}
