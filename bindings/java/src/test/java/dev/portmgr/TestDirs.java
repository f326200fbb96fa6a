package dev.portmgr;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;

/** Temp registry directories: every test opens its own, never the user's registry. */
final class TestDirs {
    private TestDirs() {}

    static Path newDir(String prefix) {
        try {
            Path base = Paths.get(System.getProperty("portmgr.test.tmp", System.getProperty("java.io.tmpdir")));
            Files.createDirectories(base);
            return Files.createTempDirectory(base, prefix);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A new registry in its own temp directory (the registry lives in {@code dir/reg}). */
    static Path newRegistryDir(String prefix) {
        return newDir(prefix).resolve("reg");
    }

    /** The number of open descriptors of this JVM. */
    static int openFds() {
        String[] l = Paths.get("/proc/self/fd").toFile().list();
        return l == null ? -1 : l.length;
    }
}
