package dev.portmgr;

import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * The Java client of the reliability suite's mixed-process concurrency run
 * (tests/reliability/concurrency.rs, beside its Rust, C, Python and Go clients, with the same
 * protocol): 4 threads allocate from START..START+LEN-1 for SECONDS, bind each port as a Java
 * server would (a ServerSocket on the port, or take it bound from Registry.serverSocket),
 * hold it briefly, close, release. Prints
 *
 * <pre>
 * L port alloc_ns release_ns pid     one per held port (System.nanoTime: CLOCK_MONOTONIC on Linux)
 * BINDFAIL port err                  a port it was handed and could not bind
 * ERR message                        an unexpected error
 * SUM allocated released exhausted errors
 * </pre>
 *
 * Usage: ReliabilityWorker REGISTRY_DIR START LEN SECONDS SEED (bindings/java/run.sh writes a
 * launcher script for it).
 */
public final class ReliabilityWorker {
    private ReliabilityWorker() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 5) {
            System.err.println("usage: ReliabilityWorker DIR START LEN SECONDS SEED");
            System.exit(2);
        }
        int start = Integer.parseInt(args[1]);
        int len = Integer.parseInt(args[2]);
        long secs = Long.parseLong(args[3]);
        long seed = Long.parseLong(args[4]);
        Registry reg;
        try {
            reg = Registry.open(Path.of(args[0]));
        } catch (PortmgrException e) {
            System.out.println("ERR open " + e.getMessage() + "\nSUM 0 0 0 1");
            System.exit(1);
            return;
        }
        long deadline = System.nanoTime() + secs * 1_000_000_000L;
        long pid = ProcessHandle.current().pid();
        long[] total = new long[4];
        StringBuilder out = new StringBuilder();
        Thread[] threads = new Thread[4];
        for (int t = 0; t < 4; t++) {
            int g = t;
            threads[t] = new Thread(() -> {
                Random rng = new Random(seed * 131 + g + 1);
                long[] mine = new long[4];
                StringBuilder log = new StringBuilder();
                while (System.nanoTime() < deadline) {
                    Request.Builder b = Request.builder().range(start, start + len - 1);
                    int kind = rng.nextInt(6);
                    switch (kind) {
                        case 0: b.count(2); break;
                        case 1: b.strategy(Strategy.SEQUENTIAL); break;
                        case 2: b.proto(Proto.BOTH); break;
                        case 3: b.name("java" + pid + "-" + g + "-" + rng.nextInt(1000)); break;
                        default: break;
                    }
                    Lease lease;
                    List<AutoCloseable> socks = new ArrayList<>();
                    boolean handedOver = kind > 3 && rng.nextInt(5) == 0;
                    try {
                        if (handedOver) {
                            BoundServerSocket bs = reg.serverSocket(b.build());
                            lease = bs.lease();
                            socks.add(bs.channel());
                        } else {
                            lease = reg.allocate(b.build());
                        }
                    } catch (PortsExhaustedException e) {
                        mine[2]++;
                        sleepNanos(200_000);
                        continue;
                    } catch (PortmgrException e) {
                        mine[3]++;
                        say("ERR " + e.getMessage() + " (Java client)");
                        continue;
                    }
                    long a = System.nanoTime();
                    int[] ports = lease.ports();
                    mine[0] += ports.length;
                    if (!handedOver) {
                        for (int p : ports) {
                            try {
                                ServerSocket s = new ServerSocket();
                                try {
                                    s.bind(new InetSocketAddress(p));
                                    socks.add(s);
                                } catch (java.io.IOException e) {
                                    s.close();
                                    say("BINDFAIL " + p + " " + e + " (Java client)");
                                }
                            } catch (java.io.IOException e) {
                                say("ERR socket " + e + " (Java client)");
                            }
                        }
                    }
                    sleepNanos(rng.nextInt(1500) * 1000L);
                    for (AutoCloseable s : socks) {
                        try {
                            s.close();
                        } catch (Exception e) {
                            say("ERR close " + e + " (Java client)");
                        }
                    }
                    long r = System.nanoTime();
                    for (int p : ports) {
                        log.append("L ").append(p).append(' ').append(a).append(' ').append(r).append(' ').append(pid).append('\n');
                    }
                    try {
                        lease.release();
                    } catch (PortmgrException e) {
                        mine[3]++;
                        say("ERR release " + e.getMessage() + " (Java client)");
                        continue;
                    }
                    mine[1] += ports.length;
                }
                synchronized (total) {
                    out.append(log);
                    for (int i = 0; i < 4; i++) {
                        total[i] += mine[i];
                    }
                }
            });
            threads[t].start();
        }
        for (Thread t : threads) {
            t.join();
        }
        reg.close();
        System.out.print(out);
        System.out.println("SUM " + total[0] + " " + total[1] + " " + total[2] + " " + total[3]);
        System.out.flush();
    }

    private static synchronized void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    private static void sleepNanos(long ns) {
        try {
            Thread.sleep(ns / 1_000_000, (int) (ns % 1_000_000));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
