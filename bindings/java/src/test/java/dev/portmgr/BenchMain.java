package dev.portmgr;

import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * The benchmark: Registry.allocate + Lease.close against new ServerSocket(0, 50, 127.0.0.1) +
 * close, in one run, as a ratio. Rounds alternate the two (each round ROUND operations) so both
 * see the same machine; the figure is the median round. Usage: BenchMain [ROUNDS [ROUND]].
 * The registry is a temp directory; ports come from the default pool (no exact port).
 */
public final class BenchMain {
    private BenchMain() {}

    public static void main(String[] args) throws Exception {
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 21;
        int round = args.length > 1 ? Integer.parseInt(args[1]) : 2000;
        Path dir = TestDirs.newRegistryDir("bench");
        InetAddress lo = InetAddress.getLoopbackAddress();
        double[] pm = new double[rounds];
        double[] kern = new double[rounds];
        try (Registry reg = Registry.open(dir)) {
            for (int i = 0; i < 3000; i++) { // warm-up: JIT, JNA, the registry's pages
                reg.allocate().close();
                new ServerSocket(0, 50, lo).close();
            }
            for (int r = 0; r < rounds; r++) {
                long t0 = System.nanoTime();
                for (int i = 0; i < round; i++) {
                    reg.allocate().close();
                }
                long t1 = System.nanoTime();
                for (int i = 0; i < round; i++) {
                    new ServerSocket(0, 50, lo).close();
                }
                long t2 = System.nanoTime();
                pm[r] = (t1 - t0) / (double) round / 1000.0;
                kern[r] = (t2 - t1) / (double) round / 1000.0;
            }
        }
        double p = median(pm);
        double k = median(kern);
        System.out.printf("java %s, libportmgr %s, %d rounds x %d ops%n", System.getProperty("java.version"),
                Registry.version(), rounds, round);
        System.out.printf("allocate+release:            %7.2f us/op (median round; min %.2f)%n", p, Arrays.stream(pm).min().getAsDouble());
        System.out.printf("new ServerSocket(0)+close:   %7.2f us/op (median round; min %.2f)%n", k, Arrays.stream(kern).min().getAsDouble());
        System.out.printf("ratio: %.2fx%n", p / k);
    }

    private static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s[s.length / 2];
    }
}
