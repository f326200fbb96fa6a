package dev.portmgr;

/** A wait ran past its deadline: the registry lock, most often (the message names the process holding it; see {@link Registry#setLockTimeout}) (code 6). */
public final class TimedOutException extends PortmgrException {
    private static final long serialVersionUID = 1L;

    TimedOutException(String message) {
        super(6, message, 0);
    }
}
