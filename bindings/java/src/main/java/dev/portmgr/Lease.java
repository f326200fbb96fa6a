package dev.portmgr;

import com.sun.jna.Pointer;
import java.time.Duration;

/**
 * A set of held ports, from {@link Registry#allocate}. No other portmgr user on the host (any
 * process, any language) is handed them until the lease is released. Close it with
 * try-with-resources:
 *
 * <pre>{@code
 * try (Lease lease = reg.allocate(Request.builder().name("web").build())) {
 *     startServer(lease.port());
 * }   // released here
 * }</pre>
 *
 * <p><b>Lifetime.</b> A lease is held until {@link #close()}/{@link #release()}, or until the
 * JVM exits (any way, {@code kill -9} included). It is <em>not</em> released when it becomes
 * garbage: there is no finalizer or cleaner, on purpose. A port often outlives every Java
 * reference to its lease (it went to a server, a config file, a child process), and a release
 * at an unpredictable GC time would hand it to someone else while in use. A forgotten close
 * costs a port held until the JVM exits, as in the Python and Go bindings.
 *
 * <p>Thread-safe: every method may be called from any thread; {@link #port()}, {@link
 * #ports()} and {@link #id()} stay readable after release. A lease stays valid after its
 * {@link Registry} is closed.
 */
public final class Lease implements AutoCloseable {
    private Pointer handle; // null once released or kept; guarded by this
    private final int[] ports;
    private final long id;

    Lease(Pointer handle, int[] ports, long id) {
        this.handle = handle;
        this.ports = ports;
        this.id = id;
    }

    /** The (first) port: the lowest of a contiguous block. */
    public int port() {
        return ports[0];
    }

    /** Every port of the lease, in the lease's order (ascending for a contiguous block): a
     * copy. */
    public int[] ports() {
        return ports.clone();
    }

    /** The lease's id ({@code lease_id} in the registry's views; {@link
     * Registry#releaseId(long)} and {@code portmgr release --id} take it). Never 0. */
    public long id() {
        return id;
    }

    /** Whether {@link #release()} or {@link #keep()} has been called. */
    public synchronized boolean isReleased() {
        return handle == null;
    }

    /**
     * Releases the ports now. Idempotent: later calls do nothing. After a {@link
     * TimedOutException} (waiting for the registry lock) the handle is gone all the same and
     * the ports stay held until the JVM exits.
     */
    public synchronized void release() {
        if (handle == null) {
            return;
        }
        Pointer h = handle;
        handle = null;
        Lib.check(Lib.portmgr_lease_release(h));
    }

    /** {@link #release()}: closing twice is harmless. */
    @Override
    public void close() {
        release();
    }

    /**
     * Gives the lease a TTL of {@code ttl} from now: from then on it lives by its TTL (renew
     * it again before it ends), no longer by this process.
     *
     * @throws InvalidArgumentException when the lease was released or kept
     * @throws NotFoundException when the lease was released by port, name or id meanwhile
     */
    public synchronized void renew(Duration ttl) {
        if (handle == null) {
            throw PortmgrException.invalid("the lease was released or kept");
        }
        long ms = toMillis(ttl);
        Lib.check(Lib.portmgr_lease_renew(handle, ms));
    }

    private static long toMillis(Duration d) {
        if (d == null || d.isNegative()) {
            throw PortmgrException.invalid("`ttl` is null or negative");
        }
        long ms = d.toMillis();
        return d.minusMillis(ms).isZero() ? ms : ms + 1;
    }

    /**
     * Detaches the lease: its ports stay held until this JVM exits (or its TTL or watched
     * process ends), and any process of the user may release them (by port or id). {@link
     * #close()} afterwards does nothing.
     */
    public synchronized void keep() {
        if (handle == null) {
            throw PortmgrException.invalid("the lease was released or kept");
        }
        Pointer h = handle;
        handle = null;
        Lib.check(Lib.portmgr_lease_keep(h));
    }

    @Override
    public String toString() {
        return "Lease{id=" + id + ", ports=" + java.util.Arrays.toString(ports)
                + (isReleased() ? ", released" : "") + "}";
    }
}
