package dev.portmgr;

/** No free port is left in the range asked for (code 2). */
public final class PortsExhaustedException extends PortmgrException {
    private static final long serialVersionUID = 1L;

    PortsExhaustedException(String message) {
        super(2, message, 0);
    }
}
