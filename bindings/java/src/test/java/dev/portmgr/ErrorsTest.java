package dev.portmgr;

import static org.junit.jupiter.api.Assertions.*;

import com.sun.jna.Library;
import com.sun.jna.Native;
import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** Every error kind that can be provoked (InternalErrorException is a bug: no trigger).
 * Ports: 63100-63199. */
class ErrorsTest {
    Registry reg;
    Path dir;

    interface CLib extends Library {
        CLib INSTANCE = Native.load("c", CLib.class);

        int open(String path, int flags);

        int flock(int fd, int op);

        int close(int fd);
    }

    @BeforeEach
    void open() {
        dir = TestDirs.newRegistryDir("errors");
        reg = Registry.open(dir);
    }

    @AfterEach
    void close() {
        reg.close();
    }

    static Request.Builder in(int start, int end) {
        return Request.builder().range(start, end);
    }

    static <T extends PortmgrException> T check(Class<T> kind, int code, PortmgrException e) {
        assertEquals(kind, e.getClass(), e.toString());
        assertEquals(code, e.code());
        assertFalse(e.getMessage().isEmpty());
        return kind.cast(e);
    }

    @Test
    void invalidArgument() {
        PortmgrException e = assertThrows(PortmgrException.class, () -> reg.allocate(in(63110, 63100).build()));
        check(InvalidArgumentException.class, 1, e);
        assertTrue(e.getMessage().contains("63110"), e.getMessage());
        check(InvalidArgumentException.class, 1, assertThrows(PortmgrException.class, () -> reg.allocate(in(63100, 63100).count(5000).build())));
        check(InvalidArgumentException.class, 1, assertThrows(PortmgrException.class, () -> reg.allocate(in(63100, 63100).name("").build())));
        check(InvalidArgumentException.class, 1, assertThrows(PortmgrException.class, () -> reg.allocate(in(63100, 63100).name("a\0b").build())));
        check(InvalidArgumentException.class, 1, assertThrows(PortmgrException.class, () -> reg.allocate(in(63100, 70000).build())));
        check(InvalidArgumentException.class, 1, assertThrows(PortmgrException.class, () -> reg.allocate(in(63100, 63100).host("not an address").build())));
        check(InvalidArgumentException.class, 1, assertThrows(PortmgrException.class, () -> reg.allocate(in(63100, 63100).count(-1).build())));
        assertTrue(e instanceof RuntimeException, "unchecked");
    }

    @Test
    void exhausted() {
        Lease both = reg.allocate(in(63101, 63102).count(2).build());
        PortmgrException e = assertThrows(PortmgrException.class, () -> reg.allocate(in(63101, 63102).build()));
        check(PortsExhaustedException.class, 2, e);
        assertTrue(e.getMessage().contains("63101-63102"), e.getMessage());
        both.close();
        reg.allocate(in(63101, 63102).build()).close();
    }

    @Test
    void inUse() {
        try (Lease held = reg.allocate(in(63103, 63103).name("taken").build())) {
            check(InUseException.class, 3, assertThrows(PortmgrException.class,
                    () -> reg.allocate(Request.builder().preferred(held.port(), true).build())));
            check(InUseException.class, 3, assertThrows(PortmgrException.class,
                    () -> reg.allocate(in(63104, 63104).name("taken").build())));
            try (Lease other = reg.allocate(in(63104, 63104).preferred(held.port()).build())) {
                assertEquals(63104, other.port(), "not required: falls back to the strategy");
            }
        }
    }

    @Test
    void notFound() {
        Lease l = reg.allocate(in(63105, 63105).build());
        reg.releaseId(l.id());
        check(NotFoundException.class, 4, assertThrows(PortmgrException.class, () -> reg.releaseId(l.id())));
        check(NotFoundException.class, 4, assertThrows(PortmgrException.class, () -> reg.releasePort(63105)));
        check(NotFoundException.class, 4, assertThrows(PortmgrException.class, () -> reg.releaseName("nobody")));
        check(NotFoundException.class, 4, assertThrows(PortmgrException.class, () -> reg.lookup("nobody")));
        l.close();
    }

    /** Another live process (a child JVM) holds the port. */
    @Test
    void notOwner() throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        ProcessBuilder pb = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                "-Djna.library.path=" + System.getProperty("jna.library.path", ""),
                HoldMain.class.getName(), dir.toString(), "63106");
        pb.redirectError(ProcessBuilder.Redirect.INHERIT);
        Process p = pb.start();
        try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            assertEquals("HELD 63106", r.readLine());
            check(NotOwnerException.class, 5, assertThrows(PortmgrException.class, () -> reg.releasePort(63106)));
            p.getOutputStream().close(); // the child exits...
            assertTrue(p.waitFor(30, TimeUnit.SECONDS));
            assertEquals(0, p.exitValue());
        } finally {
            p.destroyForcibly();
        }
        reg.allocate(in(63106, 63106).build()).close(); // ...and its port is free at once
    }

    /** The registry lock held from another open file description, as another process would. */
    @Test
    void timedOut() {
        int fd = CLib.INSTANCE.open(dir.resolve("registry.lock").toString(), 0);
        assertTrue(fd >= 0);
        try {
            assertEquals(0, CLib.INSTANCE.flock(fd, 2 /* LOCK_EX */));
            reg.setLockTimeout(Duration.ofMillis(50));
            long t0 = System.nanoTime();
            check(TimedOutException.class, 6, assertThrows(PortmgrException.class, () -> reg.allocate(in(63107, 63107).build())));
            assertTrue(System.nanoTime() - t0 < 5_000_000_000L);
            CLib.INSTANCE.flock(fd, 8 /* LOCK_UN */);
            reg.allocate(in(63107, 63107).build()).close();
        } finally {
            CLib.INSTANCE.close(fd);
            reg.setLockTimeout(Duration.ofSeconds(10));
        }
    }

    @Test
    void registryCorrupt() throws Exception {
        Path d2 = TestDirs.newRegistryDir("corrupt");
        try (Registry r2 = Registry.open(d2)) {
            Lease l = r2.allocate(in(63108, 63108).build());
            try (RandomAccessFile f = new RandomAccessFile(d2.resolve("registry.db").toFile(), "rw")) {
                f.write("this is not a portmgr registry header".getBytes(StandardCharsets.US_ASCII));
            }
            check(RegistryCorruptException.class, 7, assertThrows(PortmgrException.class, () -> Registry.open(d2)));
            check(RegistryCorruptException.class, 7, assertThrows(PortmgrException.class, () -> r2.allocate(in(63109, 63109).build())));
            // The lease's handle is freed all the same; the port stays held until exit.
            check(RegistryCorruptException.class, 7, assertThrows(PortmgrException.class, l::close));
            l.close(); // and a second close is a no-op
        }
    }

    @Test
    void insecureDirectory() throws Exception {
        Path open = TestDirs.newDir("insecure").resolve("open");
        Files.createDirectory(open);
        Files.setPosixFilePermissions(open, PosixFilePermissions.fromString("rwxrwxrwx"));
        PortmgrException e = assertThrows(PortmgrException.class, () -> Registry.open(open));
        check(InsecureDirectoryException.class, 8, e);
        assertTrue(e.getMessage().contains("chmod 700"), e.getMessage());
        Path link = TestDirs.newDir("insecure").resolve("link");
        Files.createSymbolicLink(link, dir);
        check(InsecureDirectoryException.class, 8, assertThrows(PortmgrException.class, () -> Registry.open(link)));
    }

    @Test
    void osError() throws Exception {
        File file = TestDirs.newDir("os").resolve("file").toFile();
        assertTrue(file.createNewFile());
        PortmgrException e = assertThrows(PortmgrException.class, () -> Registry.open(file.toPath().resolve("portmgr")));
        check(OsErrorException.class, 9, e);
        assertEquals(20 /* ENOTDIR */, e.errno());
        // An address that is not this host's: the bound allocation's bind fails.
        PortmgrException e2 = assertThrows(PortmgrException.class,
                () -> reg.serverSocket(in(63110, 63110).host("192.0.2.1").build()));
        check(OsErrorException.class, 9, e2);
        assertEquals(99 /* EADDRNOTAVAIL */, e2.errno());
    }

    @Test
    void everyCodeHasItsClass() {
        Class<?>[] kinds = {InvalidArgumentException.class, PortsExhaustedException.class, InUseException.class,
            NotFoundException.class, NotOwnerException.class, TimedOutException.class, RegistryCorruptException.class,
            InsecureDirectoryException.class, OsErrorException.class, InternalErrorException.class};
        for (int code = 1; code <= 10; code++) {
            PortmgrException e = PortmgrException.of(code, "", 0);
            assertEquals(kinds[code - 1], e.getClass());
            assertEquals(code, e.code());
            assertFalse(e.getMessage().isEmpty(), "the library's name of the code stands in for an empty message");
        }
        assertEquals(PortmgrException.class, PortmgrException.of(99, "new kind", 0).getClass());
    }

    /** Each thread's exception carries its own call's message. */
    @Test
    void messagesUnderConcurrency() throws Exception {
        Thread[] ts = new Thread[16];
        Throwable[] bad = new Throwable[1];
        for (int g = 0; g < ts.length; g++) {
            int start = 63199 - g;
            ts[g] = new Thread(() -> {
                for (int i = 0; i < 100; i++) {
                    try {
                        reg.allocate(in(start, 63150).build());
                        throw new AssertionError("no error");
                    } catch (InvalidArgumentException e) {
                        if (!e.getMessage().contains(start + "-63150")) {
                            synchronized (bad) {
                                bad[0] = new AssertionError("thread " + start + " got: " + e.getMessage());
                            }
                            return;
                        }
                    } catch (Throwable t) {
                        synchronized (bad) {
                            bad[0] = t;
                        }
                        return;
                    }
                }
            });
            ts[g].start();
        }
        for (Thread t : ts) {
            t.join();
        }
        if (bad[0] != null) {
            throw new AssertionError(bad[0]);
        }
    }
}
