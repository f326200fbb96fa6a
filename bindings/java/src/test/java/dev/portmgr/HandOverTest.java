package dev.portmgr;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.Socket;
import org.junit.jupiter.api.Test;

/**
 * Run by the Surefire execution "handover", whose JVM has --add-opens
 * java.base/sun.nio.ch=ALL-UNNAMED: the library's bound socket itself is handed over.
 * Ports: the default pool of that execution (63700-63999).
 */
class HandOverTest {
    @Test
    void theLibrarysSocketIsHandedOver() throws IOException {
        assertTrue(Portmgr.handOverAvailable(), "this JVM should have sun.nio.ch opened");
        int before = 0;
        for (int i = 0; i < 50; i++) {
            if (i == 10) {
                before = TestDirs.openFds();
            }
            try (BoundServerSocket b = Portmgr.registry().serverSocket(Request.builder().host(i % 2 == 0 ? "127.0.0.1" : null).build())) {
                assertTrue(b.handedOver());
                ServerSocket s = b.socket();
                assertEquals(b.port(), s.getLocalPort());
                assertEquals(b.port(), ((java.net.InetSocketAddress) b.channel().getLocalAddress()).getPort());
                try (Socket c = new Socket("127.0.0.1", b.port()); Socket in = s.accept()) {
                    c.getOutputStream().write(i);
                    assertEquals(i, in.getInputStream().read());
                c.shutdownOutput(); // the client closes first: TIME_WAIT stays on its side, not on the held port
                assertEquals(-1, in.getInputStream().read());
                }
            }
        }
        assertTrue(TestDirs.openFds() <= before + 2, "descriptors leak");
        ServerSocket s = Portmgr.boundServerSocket();
        assertTrue(s.isBound());
        s.close();
        Portmgr.release(s.getLocalPort());
    }
}
