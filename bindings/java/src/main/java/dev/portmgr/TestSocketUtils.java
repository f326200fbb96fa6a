package dev.portmgr;

import java.util.ArrayList;
import java.util.List;
import java.util.SortedSet;
import java.util.TreeSet;

/**
 * A drop-in for Spring's {@code org.springframework.test.util.TestSocketUtils} (and the old
 * {@code org.springframework.util.SocketUtils}), backed by the shared registry: change the
 * import to {@code dev.portmgr.TestSocketUtils}.
 *
 * <pre>{@code
 * int port = TestSocketUtils.findAvailableTcpPort();     // for a server that cannot bind port 0
 * new DynamoDbLocal("-port", String.valueOf(port)).start();
 * }</pre>
 *
 * <p>Spring's version finds a port that is free <em>now</em> and forgets it, so parallel test
 * JVMs (Surefire forks, Gradle workers, other builds) can be handed the same one. Here every
 * port is recorded in the host's registry and held until {@link #release(int)} (or {@link
 * Portmgr#release(int)}) or until the JVM exits: no other portmgr user on the host, in any
 * language, is handed it meanwhile. Ports come from the default pool (outside the kernel's
 * ephemeral range; {@code PORTMGR_RANGE=A-B} moves it) unless a range is given, are probed
 * bindable on the wildcard address, and are distinct.
 *
 * <p>Errors are Spring's: {@link IllegalArgumentException} for a bad range or count, {@link
 * IllegalStateException} when no port is free (each with the {@link PortmgrException} as its
 * cause). Thread-safe.
 */
public final class TestSocketUtils {
    private TestSocketUtils() {}

    /** The lowest port of the old {@code SocketUtils} ranges (1024). */
    public static final int PORT_RANGE_MIN = 1024;
    /** The highest port (65535). */
    public static final int PORT_RANGE_MAX = 65535;

    /** A TCP port from the default pool, held until {@link #release(int)} or JVM exit. */
    public static int findAvailableTcpPort() {
        return find(Proto.TCP, 0, 0);
    }

    /** A TCP port in {@code minPort..65535}, held. */
    public static int findAvailableTcpPort(int minPort) {
        return findAvailableTcpPort(minPort, PORT_RANGE_MAX);
    }

    /** A TCP port in {@code minPort..maxPort} (inclusive), held. */
    public static int findAvailableTcpPort(int minPort, int maxPort) {
        checkRange(minPort, maxPort);
        return find(Proto.TCP, minPort, maxPort);
    }

    /** {@code n} distinct TCP ports from the default pool, each held (as one lease each, so
     * {@link #release(int)} frees one). */
    public static SortedSet<Integer> findAvailableTcpPorts(int numRequested) {
        return findMany(Proto.TCP, numRequested, 0, 0);
    }

    /** {@code n} distinct TCP ports in {@code minPort..maxPort}, each held. */
    public static SortedSet<Integer> findAvailableTcpPorts(int numRequested, int minPort, int maxPort) {
        checkRange(minPort, maxPort);
        return findMany(Proto.TCP, numRequested, minPort, maxPort);
    }

    /** A UDP port from the default pool, held. */
    public static int findAvailableUdpPort() {
        return find(Proto.UDP, 0, 0);
    }

    /** A UDP port in {@code minPort..65535}, held. */
    public static int findAvailableUdpPort(int minPort) {
        return findAvailableUdpPort(minPort, PORT_RANGE_MAX);
    }

    /** A UDP port in {@code minPort..maxPort}, held. */
    public static int findAvailableUdpPort(int minPort, int maxPort) {
        checkRange(minPort, maxPort);
        return find(Proto.UDP, minPort, maxPort);
    }

    /** {@code n} distinct UDP ports from the default pool, each held. */
    public static SortedSet<Integer> findAvailableUdpPorts(int numRequested) {
        return findMany(Proto.UDP, numRequested, 0, 0);
    }

    /** Releases a port found here now (as {@link Portmgr#release(int)}). */
    public static void release(int port) {
        Portmgr.release(port);
    }

    private static void checkRange(int minPort, int maxPort) {
        if (minPort <= 0 || maxPort < minPort || maxPort > PORT_RANGE_MAX) {
            throw new IllegalArgumentException("'minPort' and 'maxPort' must be 1 <= minPort <= maxPort <= 65535: "
                    + minPort + ", " + maxPort);
        }
    }

    private static Request request(Proto proto, int minPort, int maxPort) {
        Request.Builder b = Request.builder().proto(proto);
        if (minPort != 0) {
            b.range(minPort, maxPort);
        }
        return b.build();
    }

    private static int find(Proto proto, int minPort, int maxPort) {
        try {
            return Portmgr.hold(request(proto, minPort, maxPort));
        } catch (PortmgrException e) {
            throw spring(e, proto, minPort, maxPort);
        }
    }

    private static SortedSet<Integer> findMany(Proto proto, int n, int minPort, int maxPort) {
        if (n <= 0) {
            throw new IllegalArgumentException("'numRequested' must be greater than 0: " + n);
        }
        Request req = request(proto, minPort, maxPort);
        List<Integer> got = new ArrayList<>(n);
        try {
            for (int i = 0; i < n; i++) {
                got.add(Portmgr.hold(req));
            }
        } catch (PortmgrException e) {
            for (int p : got) { // all or nothing
                Portmgr.release(p);
            }
            throw spring(e, proto, minPort, maxPort);
        }
        return new TreeSet<>(got);
    }

    private static RuntimeException spring(PortmgrException e, Proto proto, int minPort, int maxPort) {
        String where = minPort == 0 ? "the default pool" : "range [" + minPort + ", " + maxPort + "]";
        if (e instanceof InvalidArgumentException) {
            return new IllegalArgumentException(e.getMessage(), e);
        }
        return new IllegalStateException("Could not find an available " + proto + " port in " + where + ": "
                + e.getMessage(), e);
    }
}
