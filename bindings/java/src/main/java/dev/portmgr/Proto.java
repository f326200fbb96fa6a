package dev.portmgr;

/** The protocols a port must be free for. */
public enum Proto {
    /** TCP (the default). */
    TCP(1),
    /** UDP. */
    UDP(2),
    /** TCP and UDP: the port must be free for both. */
    BOTH(3);

    final int bits;

    Proto(int bits) {
        this.bits = bits;
    }
}
