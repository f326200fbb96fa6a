package dev.portmgr;

import static org.junit.jupiter.api.Assertions.*;

import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.Test;

/** 16 threads at once on one Registry. Ports: 63200-63599. */
class ConcurrencyTest {
    @Test
    void sixteenThreadsGetDistinctBindablePorts() throws Exception {
        try (Registry reg = Registry.open(TestDirs.newRegistryDir("threads"))) {
            ExecutorService pool = Executors.newFixedThreadPool(16);
            CountDownLatch go = new CountDownLatch(1);
            List<Future<List<Lease>>> futures = new ArrayList<>();
            for (int t = 0; t < 16; t++) {
                int thread = t;
                futures.add(pool.submit(() -> {
                    go.await();
                    List<Lease> mine = new ArrayList<>();
                    for (int i = 0; i < 20; i++) {
                        Request.Builder b = Request.builder().range(63200, 63599);
                        if (i % 4 == 1) {
                            b.strategy(Strategy.SEQUENTIAL);
                        } else if (i % 4 == 2) {
                            b.name("t" + thread + "-" + i);
                        }
                        mine.add(reg.allocate(b.build()));
                    }
                    // and a held-and-released pair, to mix releases in
                    reg.allocate(Request.builder().range(63200, 63599).build()).close();
                    return mine;
                }));
            }
            go.countDown();
            Set<Integer> seen = new HashSet<>();
            List<Lease> all = new ArrayList<>();
            for (Future<List<Lease>> f : futures) {
                for (Lease l : f.get()) {
                    assertTrue(seen.add(l.port()), "port " + l.port() + " handed out twice");
                    all.add(l);
                }
            }
            pool.shutdown();
            assertEquals(320, seen.size());
            List<ServerSocket> bound = new ArrayList<>();
            try {
                for (int p : seen) {
                    bound.add(new ServerSocket(p)); // every one bindable
                }
            } finally {
                for (ServerSocket s : bound) {
                    s.close();
                }
            }
            // Close from many threads at once, twice each.
            all.parallelStream().forEach(l -> {
                l.close();
                l.close();
            });
            assertTrue(reg.listJson().equals("[]"), reg.listJson());
        }
    }
}
