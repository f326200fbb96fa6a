package dev.portmgr;

/** A bug inside portmgr (a caught panic). Please report it with the message (code 10). */
public final class InternalErrorException extends PortmgrException {
    private static final long serialVersionUID = 1L;

    InternalErrorException(String message) {
        super(10, message, 0);
    }
}
