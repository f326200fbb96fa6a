package dev.portmgr;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * The take-over (this JVM has no --add-opens, so {@link Registry#serverSocket} takes the port
 * over from the library's bound socket): the port is never unbound. A thread binds every port
 * of the pool with plain binds as fast as it can while sockets are taken over and closed;
 * whenever one of its binds succeeds it asks the registry whether the port is held, and it
 * must never be. A take-over never has to retry. Ports 63600-63615.
 */
class TakeOverTest {
    static final int START = 63600;
    static final int END = 63615;

    @Test
    void aTakenOverPortIsNeverUnbound() throws Exception {
        assertFalse(Portmgr.handOverAvailable(), "this execution runs without --add-opens");
        try (Registry reg = Registry.open(TestDirs.newRegistryDir("takeover"))) {
            AtomicBoolean stop = new AtomicBoolean();
            AtomicInteger wins = new AtomicInteger();
            AtomicInteger attempts = new AtomicInteger();
            List<String> held = new ArrayList<>();
            Thread hammer = new Thread(() -> {
                while (!stop.get()) {
                    for (int p = START; p <= END; p++) {
                        attempts.incrementAndGet();
                        // A plain bind (no SO_REUSEADDR), as any program binding a number does.
                        try (Socket s = new Socket()) {
                            s.bind(new InetSocketAddress("127.0.0.1", p));
                            wins.incrementAndGet();
                            // Bound: no lease may be active on it. None can become active while
                            // this socket is bound (the library binds the port before it hands
                            // it out; a "pending" record is an allocation still probing), so an
                            // active lease seen now was held while the port was unbound.
                            for (String entry : reg.listJson().replace(" ", "").split("\\},\\{")) {
                                if (entry.contains("\"port\":" + p + ",") && !entry.contains("\"state\":\"pending\"")) {
                                    synchronized (held) {
                                        held.add(p + ": " + entry);
                                    }
                                }
                            }
                        } catch (IOException e) {
                            // in use: the expected outcome while a socket holds it
                        }
                    }
                }
            });
            int before = Registry.TAKEOVER_RETRIES.get();
            hammer.start();
            try {
                for (int i = 0; i < 3000; i++) {
                    BoundServerSocket b = reg.serverSocket(Request.builder().range(START, END).host("127.0.0.1").build());
                    try {
                        assertFalse(b.handedOver());
                        ServerSocket s = b.socket();
                        assertEquals(b.port(), s.getLocalPort());
                        if (i % 500 == 0) {
                            try (Socket c = new Socket("127.0.0.1", b.port()); Socket in = s.accept()) {
                                c.getOutputStream().write(i & 0xFF);
                                assertEquals(i & 0xFF, in.getInputStream().read());
                                c.shutdownOutput();
                                assertEquals(-1, in.getInputStream().read());
                            }
                        }
                    } finally {
                        // The lease first, while the socket still holds the port: every moment
                        // of the lease has the port bound.
                        b.lease().release();
                        b.close();
                    }
                }
            } finally {
                stop.set(true);
                hammer.join();
            }
            assertTrue(attempts.get() > 1000, "the hammer ran: " + attempts.get());
            assertTrue(wins.get() > 0, "the hammer binds free ports: " + wins.get());
            synchronized (held) {
                assertEquals(List.of(), held, "bound by another socket while held");
            }
            assertEquals(before, Registry.TAKEOVER_RETRIES.get(), "no take-over lost its port");
        }
    }
}
