package dev.portmgr;

import static org.junit.jupiter.api.Assertions.*;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** Runs after the 4 forks (Surefire execution "forks-check"): 4 files of 200 ports from 4
 * distinct JVMs, 800 ports, 0 duplicates. */
class ForkPortsCheckTest {
    @Test
    void noPortWasHandedToTwoForks() throws Exception {
        Path dir = Path.of(System.getProperty("portmgr.forks.dir"));
        int forks = Integer.getInteger("portmgr.forks.count", 4);
        File[] files = dir.toFile().listFiles((d, n) -> n.startsWith("fork-") && n.endsWith(".txt"));
        assertNotNull(files, "no " + dir + ": the forks execution did not run");
        assertEquals(forks, files.length, "one file per fork");
        Map<Integer, String> owner = new HashMap<>();
        Set<String> pids = new HashSet<>();
        int total = 0;
        int dups = 0;
        StringBuilder dupList = new StringBuilder();
        for (File f : files) {
            List<String> lines = Files.readAllLines(f.toPath(), StandardCharsets.UTF_8);
            assertEquals(ForkPortsBase.PORTS, lines.size(), f.getName());
            for (String line : lines) {
                String[] w = line.split(" ");
                pids.add(w[0]);
                total++;
                String prev = owner.putIfAbsent(Integer.parseInt(w[1]), w[0]);
                if (prev != null) {
                    dups++;
                    dupList.append(w[1]).append(" (pids ").append(prev).append(", ").append(w[0]).append(") ");
                }
            }
        }
        assertEquals(forks, pids.size(), "the forks were distinct JVMs");
        System.out.println("forks: " + forks + " JVMs x " + ForkPortsBase.PORTS + " ports = " + total + ", duplicates " + dups);
        assertEquals(0, dups, "ports handed to two forks: " + dupList);
        assertEquals(forks * ForkPortsBase.PORTS, owner.size());
    }
}
