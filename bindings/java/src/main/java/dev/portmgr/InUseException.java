package dev.portmgr;

/** The port (a required preferred port) or the service name asked for is held by someone else (code 3). */
public final class InUseException extends PortmgrException {
    private static final long serialVersionUID = 1L;

    InUseException(String message) {
        super(3, message, 0);
    }
}
