package dev.portmgr;

/** A caller passed something that cannot be right: a bad range, count, name or option, a port outside 0-65535, a NUL character in a string, or a closed {@link Registry} (code 1). */
public final class InvalidArgumentException extends PortmgrException {
    private static final long serialVersionUID = 1L;

    InvalidArgumentException(String message) {
        super(1, message, 0);
    }
}
