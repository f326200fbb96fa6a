package dev.portmgr;

/** The lease belongs to another live process (and is not detached) (code 5). */
public final class NotOwnerException extends PortmgrException {
    private static final long serialVersionUID = 1L;

    NotOwnerException(String message) {
        super(5, message, 0);
    }
}
