package dev.portmgr;

/** An operating-system call failed (code 9); {@link #errno()} says which error. */
public final class OsErrorException extends PortmgrException {
    private static final long serialVersionUID = 1L;

    OsErrorException(String message, int errno) {
        super(9, message, errno);
    }
}
