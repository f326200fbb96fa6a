package dev.portmgr;

/** The order in which candidate ports are tried. */
public enum Strategy {
    /** A random order over the range (the default): concurrent callers spread out. */
    RANDOM(0),
    /** The lowest free port of the range. */
    SEQUENTIAL(1),
    /** Start at the FNV-1a hash of the name, then upward: the same name gets the same port
     * run after run while it is free. */
    HASH(2),
    /** Let the kernel choose (bind to port 0, inside the ephemeral range), then record it. */
    KERNEL(3);

    final int value;

    Strategy(int value) {
        this.value = value;
    }
}
