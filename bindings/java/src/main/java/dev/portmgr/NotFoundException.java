package dev.portmgr;

/** No live lease with that port, name or id (code 4). */
public final class NotFoundException extends PortmgrException {
    private static final long serialVersionUID = 1L;

    NotFoundException(String message) {
        super(4, message, 0);
    }
}
