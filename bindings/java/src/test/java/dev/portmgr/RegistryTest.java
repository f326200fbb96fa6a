package dev.portmgr;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.Arrays;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The API on a temp registry. Ports: 63000-63099. */
class RegistryTest {
    Registry reg;

    @BeforeEach
    void open() {
        reg = Registry.open(TestDirs.newRegistryDir("api"));
    }

    @AfterEach
    void close() {
        reg.close();
    }

    static Request.Builder in(int start, int end) {
        return Request.builder().range(start, end);
    }

    @Test
    void contractExample() {
        try (Lease lease = reg.allocate(Request.builder().name("web").proto(Proto.TCP).count(1).range(63000, 63009).build())) {
            int port = lease.port();
            int[] ports = lease.ports();
            long id = lease.id();
            assertTrue(port >= 63000 && port <= 63009, "port " + port);
            assertArrayEquals(new int[] {port}, ports);
            assertNotEquals(0, id);
            assertEquals(port, reg.lookup("web"));
            assertTrue(reg.listJson().contains("\"port\":" + port), reg.listJson());
        }
        assertThrows(NotFoundException.class, () -> reg.lookup("web"), "closing the lease released it");
    }

    @Test
    void optionsReachTheLibrary() {
        try (Lease block = reg.allocate(in(63010, 63029).count(3).contiguous(true).proto(Proto.BOTH)
                .strategy(Strategy.SEQUENTIAL).build())) {
            assertArrayEquals(new int[] {63010, 63011, 63012}, block.ports());
            assertEquals(63010, block.port());
        }
        try (Lease pref = reg.allocate(in(63010, 63029).preferred(63020, true).proto(Proto.UDP).build())) {
            assertEquals(63020, pref.port());
        }
        try (Lease ex = reg.allocate(in(63030, 63032).strategy(Strategy.SEQUENTIAL).exclude(63030, 63031).build())) {
            assertEquals(63032, ex.port());
        }
        int hashed;
        try (Lease h = reg.allocate(in(63033, 63049).name("hashed").strategy(Strategy.HASH).build())) {
            hashed = h.port();
        }
        try (Lease h = reg.allocate(in(63033, 63049).name("hashed").strategy(Strategy.HASH).build())) {
            assertEquals(hashed, h.port(), "the same name gets the same port while it is free");
        }
        try (Lease host = reg.allocate(in(63050, 63050).host("127.0.0.1").build())) {
            assertEquals(63050, host.port());
        }
        Lease many = reg.allocate(in(63051, 63059).count(5).build());
        assertEquals(5, Arrays.stream(many.ports()).distinct().count());
        many.close();
    }

    @Test
    void releaseByPortIdNameAndLeaseAfterwards() {
        Lease a = reg.allocate(in(63060, 63060).build());
        reg.releasePort(63060);
        a.close(); // the lease's ports were freed already: a no-op, no error
        Lease b = reg.allocate(in(63060, 63060).build());
        reg.releaseId(b.id());
        assertThrows(NotFoundException.class, () -> reg.releaseId(b.id()));
        Lease c = reg.allocate(in(63060, 63060).name("named").build());
        reg.releaseName("named");
        c.release();
        assertTrue(c.isReleased());
        assertEquals(63060, c.port(), "readable after release");
    }

    @Test
    void renewAndKeep() {
        Lease a = reg.allocate(in(63061, 63061).build());
        a.renew(Duration.ofSeconds(30));
        assertTrue(reg.listJson().contains("\"expires_ms\":"), reg.listJson());
        a.keep();
        assertTrue(a.isReleased());
        a.close(); // nothing: kept
        assertThrows(InUseException.class, () -> reg.allocate(in(63061, 63061).preferred(63061, true).build()),
                "a kept lease stays held");
        reg.releasePort(63061);
        reg.allocate(in(63061, 63061).build()).close();
        assertThrows(InvalidArgumentException.class, () -> a.renew(Duration.ofSeconds(5)));
        assertThrows(InvalidArgumentException.class, a::keep);
    }

    @Test
    void ttlLease() {
        try (Lease t = reg.allocate(in(63062, 63062).ttl(Duration.ofSeconds(5)).build())) {
            assertEquals(63062, t.port());
        }
    }

    @Test
    void closeTwice() {
        Lease l = reg.allocate(in(63063, 63063).build());
        l.close();
        l.close();
        l.release();
        Registry r2 = Registry.open(TestDirs.newRegistryDir("twice"));
        r2.close();
        r2.close();
        assertTrue(r2.isClosed());
        BoundServerSocket b = reg.serverSocket(in(63064, 63064).build());
        b.close();
        b.close();
        assertTrue(b.socket().isClosed());
    }

    @Test
    void closedRegistry() {
        Registry r2 = Registry.open(TestDirs.newRegistryDir("closed"));
        Lease held = r2.allocate(in(63065, 63065).build());
        r2.close();
        InvalidArgumentException e = assertThrows(InvalidArgumentException.class, r2::allocate);
        assertTrue(e.getMessage().contains("closed"), e.getMessage());
        assertEquals(1, e.code());
        assertThrows(InvalidArgumentException.class, () -> r2.releasePort(63065));
        assertThrows(InvalidArgumentException.class, () -> r2.lookup("x"));
        assertThrows(InvalidArgumentException.class, r2::listJson);
        assertThrows(InvalidArgumentException.class, () -> r2.serverSocket(null));
        assertFalse(held.isReleased(), "a lease outlives its registry handle");
        held.close(); // and still releases
        reg.allocate(in(63065, 63065).build()).close();
    }

    @Test
    void serverSocketAcceptsAndReleasesOnClose() throws IOException {
        try (BoundServerSocket b = reg.serverSocket(in(63066, 63069).host("127.0.0.1").build())) {
            ServerSocket s = b.socket();
            assertTrue(s.isBound());
            assertEquals(b.port(), s.getLocalPort());
            assertEquals(Portmgr.handOverAvailable(), b.handedOver());
            try (java.net.Socket c = new java.net.Socket("127.0.0.1", b.port()); java.net.Socket in = s.accept()) {
                c.getOutputStream().write(42);
                assertEquals(42, in.getInputStream().read());
                c.shutdownOutput(); // the client closes first: TIME_WAIT stays on its side, not on the held port
                assertEquals(-1, in.getInputStream().read());
            }
            assertThrows(PortsExhaustedException.class, () -> reg.allocate(in(b.port(), b.port()).build()));
        }
        // Released on close (the port itself may sit in TIME_WAIT after the connection).
        assertEquals("[]", reg.listJson());
        assertThrows(InvalidArgumentException.class, () -> reg.serverSocket(Request.builder().proto(Proto.UDP).build()));
        assertThrows(InvalidArgumentException.class, () -> reg.serverSocket(Request.builder().count(2).build()));
    }

    @Test
    void statsAndVersion() {
        assertTrue(reg.statsJson().contains("\"allocations\""), reg.statsJson());
        assertTrue(Registry.version().matches("\\d+\\.\\d+\\.\\d+.*"), Registry.version());
    }
}
