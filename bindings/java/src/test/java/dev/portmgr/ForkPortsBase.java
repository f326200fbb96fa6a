package dev.portmgr;

import static org.junit.jupiter.api.Assertions.*;

import java.io.File;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * One Surefire fork's part of the parallel-forks check (execution "forks", forkCount=4, one
 * class per JVM): take 200 ports with TestSocketUtils from the registry all forks share
 * (PORTMGR_DIR), bind every one, write them to {@code portmgr.forks.dir}, and hold them until
 * every fork has written its file, so the forks hold their ports at the same time.
 * ForkPortsCheckTest (the next execution) asserts 0 duplicates across the files. Ports: the
 * forks' pool, 63000-63999.
 */
abstract class ForkPortsBase {
    static final int PORTS = 200;

    abstract int fork();

    @Test
    void take200PortsAndBindThem() throws Exception {
        Path dir = Path.of(System.getProperty("portmgr.forks.dir"));
        int forks = Integer.getInteger("portmgr.forks.count", 4);
        Files.createDirectories(dir);
        long pid = ProcessHandle.current().pid();
        List<Integer> ports = new ArrayList<>(TestSocketUtils.findAvailableTcpPorts(PORTS));
        List<ServerSocket> bound = new ArrayList<>();
        List<String> failures = new ArrayList<>();
        StringBuilder out = new StringBuilder();
        try {
            for (int p : ports) {
                assertTrue(p >= 63000 && p <= 63999, "port " + p);
                ServerSocket s = new ServerSocket();
                try {
                    s.bind(new InetSocketAddress(p));
                    bound.add(s);
                } catch (IOException e) {
                    s.close();
                    failures.add(p + ": " + e);
                }
                out.append(pid).append(' ').append(p).append('\n');
            }
            Path tmp = dir.resolve("fork-" + fork() + "-" + pid + ".tmp");
            Files.writeString(tmp, out.toString(), StandardCharsets.UTF_8);
            Files.move(tmp, dir.resolve("fork-" + fork() + "-" + pid + ".txt"), StandardCopyOption.ATOMIC_MOVE);
            // Hold everything until every fork has its ports (they overlap in time).
            long deadline = System.nanoTime() + 180_000_000_000L;
            while (count(dir) < forks) {
                assertTrue(System.nanoTime() < deadline, "the other forks never wrote their ports: did they run at once?");
                Thread.sleep(50);
            }
        } finally {
            for (ServerSocket s : bound) {
                s.close();
            }
            ports.forEach(TestSocketUtils::release);
        }
        assertEquals(PORTS, ports.size());
        assertTrue(failures.isEmpty(), "bind failures on held ports: " + failures);
        System.out.println("fork " + fork() + " (pid " + pid + "): " + PORTS + " ports bound, held with " + forks + " forks");
    }

    static long count(Path dir) {
        File[] fs = dir.toFile().listFiles((d, n) -> n.startsWith("fork-") && n.endsWith(".txt"));
        return fs == null ? 0 : fs.length;
    }
}
