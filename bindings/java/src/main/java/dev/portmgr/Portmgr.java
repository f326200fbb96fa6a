package dev.portmgr;

import java.net.ServerSocket;
import java.util.HashMap;
import java.util.Map;

/**
 * One-call helpers over the default registry ({@code $PORTMGR_DIR}, else
 * {@code $XDG_RUNTIME_DIR/portmgr}, else {@code /tmp/portmgr-<uid>}), opened at first use and
 * shared by the JVM. Ports from here are held until {@link #release(int)} or until the JVM
 * exits (any way): no other portmgr user on the host is handed them meanwhile.
 *
 * <pre>{@code
 * ServerSocket server = Portmgr.boundServerSocket();   // listening on a held port
 * int port = Portmgr.freePort();                       // held until Portmgr.release(port)
 * startDatabase(port);
 * Portmgr.release(port);
 * }</pre>
 *
 * <p>Thread-safe.
 */
public final class Portmgr {
    private Portmgr() {}

    private static Registry registry; // guarded by Portmgr.class
    private static final Map<Integer, Lease> HELD = new HashMap<>(); // guarded by Portmgr.class

    /** The default registry of these helpers (and of {@link TestSocketUtils}), opened at
     * first use and never closed. */
    public static synchronized Registry registry() {
        if (registry == null) {
            registry = Registry.open(null);
        }
        return registry;
    }

    /** The library's version, e.g. {@code "0.1.0"}. */
    public static String version() {
        return Registry.version();
    }

    /** Whether {@link #boundServerSocket()} adopts the library's own bound socket (true when
     * the JVM runs with {@code --add-opens java.base/sun.nio.ch=ALL-UNNAMED}) or Java takes
     * the port over from it (false); both are race-free, see {@link Registry#serverSocket}. */
    public static boolean handOverAvailable() {
        return HandOver.available();
    }

    /**
     * One TCP port from the default registry and pool, held until {@link #release(int)} or JVM
     * exit: the shape of the usual "free port" helpers without their race. Bind it soon: the
     * registry records it, but holds no socket (see {@link #boundServerSocket()}).
     */
    public static int freePort() {
        return hold(Request.defaults());
    }

    /**
     * A {@link ServerSocket} listening (backlog 1024) on a held TCP port of the default pool, on
     * the dual-stack wildcard: {@code boundServerSocket(Request.defaults())}.
     */
    public static ServerSocket boundServerSocket() {
        return boundServerSocket(Request.defaults());
    }

    /**
     * A {@link ServerSocket} listening on a held TCP port allocated as {@code request} asks
     * (null: the defaults). The port stays held until {@code
     * Portmgr.release(socket.getLocalPort())} or JVM exit; closing the socket does not release
     * it. Race-free: see {@link Registry#serverSocket}.
     */
    public static ServerSocket boundServerSocket(Request request) {
        BoundServerSocket bound = registry().serverSocket(request);
        synchronized (Portmgr.class) {
            HELD.put(bound.port(), bound.lease());
        }
        return bound.socket();
    }

    /**
     * Releases a port of {@link #freePort()}, {@link #boundServerSocket()} or {@link
     * TestSocketUtils} now. Any other port is released through the default registry as
     * {@link Registry#releasePort(int)} does.
     *
     * @throws NotFoundException when nothing holds the port
     * @throws NotOwnerException when another live process holds it
     */
    public static void release(int port) {
        Lease lease;
        synchronized (Portmgr.class) {
            lease = HELD.remove(port);
        }
        if (lease != null) {
            lease.release();
        } else {
            registry().releasePort(port);
        }
    }

    /** Allocates one port as {@code request} asks and holds it until release or exit. */
    static int hold(Request request) {
        Lease lease = registry().allocate(request);
        synchronized (Portmgr.class) {
            HELD.put(lease.port(), lease);
        }
        return lease.port();
    }
}
