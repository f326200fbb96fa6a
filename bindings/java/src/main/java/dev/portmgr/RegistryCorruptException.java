package dev.portmgr;

/** The registry file is damaged or of an unknown version (code 7). */
public final class RegistryCorruptException extends PortmgrException {
    private static final long serialVersionUID = 1L;

    RegistryCorruptException(String message) {
        super(7, message, 0);
    }
}
