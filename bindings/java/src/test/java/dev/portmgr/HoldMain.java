package dev.portmgr;

import java.nio.file.Path;

/** A child process of ErrorsTest: holds port ARG2 of registry ARG1 until stdin closes. */
public final class HoldMain {
    private HoldMain() {}

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[1]);
        try (Registry reg = Registry.open(Path.of(args[0]));
             Lease l = reg.allocate(Request.builder().range(port, port).build())) {
            System.out.println("HELD " + l.port());
            System.out.flush();
            while (System.in.read() >= 0) {
                // wait for EOF
            }
        }
    }
}
