package dev.portmgr;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.net.DatagramSocket;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.ArrayList;
import java.util.List;
import java.util.SortedSet;
import org.junit.jupiter.api.Test;

/**
 * Portmgr's statics and TestSocketUtils, on the default registry: PORTMGR_DIR is a temp
 * directory and PORTMGR_RANGE the default pool's 63700-63999 (set by Surefire). Ports: 63700-63999.
 */
class StaticsTest {
    static final int MIN = 63700;
    static final int MAX = 63999;

    @Test
    void theDefaultRegistryIsTheTestOne() {
        String dir = System.getenv("PORTMGR_DIR");
        assertNotNull(dir, "Surefire sets PORTMGR_DIR: never the user's registry");
        assertTrue(dir.contains("target"), dir);
        assertEquals(MIN + "-" + MAX, System.getenv("PORTMGR_RANGE"));
    }

    static void inPool(int port) {
        assertTrue(port >= MIN && port <= MAX, "port " + port + " outside the pool");
    }

    @Test
    void freePortIsHeldUntilRelease() throws IOException {
        int port = Portmgr.freePort();
        inPool(port);
        assertThrows(PortsExhaustedException.class,
                () -> Portmgr.registry().allocate(Request.builder().range(port, port).build()));
        new ServerSocket(port).close();
        Portmgr.release(port);
        Portmgr.registry().allocate(Request.builder().range(port, port).build()).close();
        assertThrows(NotFoundException.class, () -> Portmgr.release(port));
    }

    @Test
    void boundServerSocketListens() throws IOException {
        ServerSocket s = Portmgr.boundServerSocket();
        int port = s.getLocalPort();
        try {
            inPool(port);
            assertTrue(s.isBound());
            try (Socket c = new Socket("127.0.0.1", port); Socket in = s.accept()) {
                c.getOutputStream().write(7);
                assertEquals(7, in.getInputStream().read());
                c.shutdownOutput(); // the client closes first: TIME_WAIT stays on its side, not on the held port
                assertEquals(-1, in.getInputStream().read());
            }
            assertTrue(Portmgr.registry().listJson().contains("\"port\":" + port));
        } finally {
            s.close();
            Portmgr.release(port);
        }
    }

    @Test
    void findAvailableTcpPortIsBindable() throws IOException {
        for (int i = 0; i < 20; i++) {
            int port = TestSocketUtils.findAvailableTcpPort();
            inPool(port);
            try (ServerSocket s = new ServerSocket()) {
                s.bind(new InetSocketAddress(port));
            }
            TestSocketUtils.release(port);
        }
    }

    @Test
    void rangeHonoured() {
        List<Integer> got = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            int port = TestSocketUtils.findAvailableTcpPort(63900, 63909);
            assertTrue(port >= 63900 && port <= 63909, "port " + port);
            assertFalse(got.contains(port), "held ports are not handed out again");
            got.add(port);
        }
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> TestSocketUtils.findAvailableTcpPort(63900, 63909));
        assertTrue(e.getCause() instanceof PortsExhaustedException, e.toString());
        got.forEach(TestSocketUtils::release);
        assertThrows(IllegalArgumentException.class, () -> TestSocketUtils.findAvailableTcpPort(63909, 63900));
        assertThrows(IllegalArgumentException.class, () -> TestSocketUtils.findAvailableTcpPort(0, 10));
        assertThrows(IllegalArgumentException.class, () -> TestSocketUtils.findAvailableTcpPort(63900, 70000));
    }

    @Test
    void nDistinctPorts() throws IOException {
        SortedSet<Integer> ports = TestSocketUtils.findAvailableTcpPorts(50);
        assertEquals(50, ports.size());
        List<ServerSocket> bound = new ArrayList<>();
        try {
            for (int p : ports) {
                inPool(p);
                bound.add(new ServerSocket(p));
            }
        } finally {
            for (ServerSocket s : bound) {
                s.close();
            }
        }
        ports.forEach(TestSocketUtils::release);
        SortedSet<Integer> r = TestSocketUtils.findAvailableTcpPorts(5, 63910, 63914);
        assertEquals(List.of(63910, 63911, 63912, 63913, 63914), new ArrayList<>(r));
        // all or nothing: none of a failed call stays held
        assertThrows(IllegalStateException.class, () -> TestSocketUtils.findAvailableTcpPorts(3, 63910, 63916));
        r.forEach(TestSocketUtils::release);
        SortedSet<Integer> again = TestSocketUtils.findAvailableTcpPorts(7, 63910, 63916);
        assertEquals(7, again.size(), "the failed call left nothing held");
        again.forEach(TestSocketUtils::release);
        assertThrows(IllegalArgumentException.class, () -> TestSocketUtils.findAvailableTcpPorts(0));
    }

    @Test
    void findAvailableUdpPortIsBindable() throws IOException {
        int port = TestSocketUtils.findAvailableUdpPort();
        inPool(port);
        new DatagramSocket(port).close();
        TestSocketUtils.release(port);
        int p2 = TestSocketUtils.findAvailableUdpPort(63920, 63920);
        assertEquals(63920, p2);
        TestSocketUtils.release(p2);
    }

    /** Nothing leaks a descriptor: allocate/release, bound sockets, errors, many times. */
    @Test
    void noLeakedDescriptors() throws IOException {
        for (int i = 0; i < 20; i++) { // warm up: JNA, the registry, class loading
            Portmgr.release(Portmgr.freePort());
            ServerSocket s = Portmgr.boundServerSocket();
            s.close();
            Portmgr.release(s.getLocalPort());
        }
        int before = TestDirs.openFds();
        for (int i = 0; i < 300; i++) {
            Portmgr.release(Portmgr.freePort());
            ServerSocket s = Portmgr.boundServerSocket();
            s.close();
            Portmgr.release(s.getLocalPort());
            assertThrows(IllegalArgumentException.class, () -> TestSocketUtils.findAvailableTcpPorts(1, 63999, 63990));
            try (Registry r = Registry.open(java.nio.file.Path.of(System.getenv("PORTMGR_DIR")))) {
                r.allocate(Request.builder().range(63990, 63999).build()).close();
                try (BoundServerSocket b = r.serverSocket(Request.builder().range(63990, 63999).build())) {
                    assertTrue(b.socket().isBound());
                }
            }
        }
        int after = TestDirs.openFds();
        assertTrue(after <= before + 2, "descriptors before " + before + ", after " + after);
    }
}
