package dev.portmgr;

/** The registry directory or one of its files is not safe to use (owner, mode, symlink, network file system); the message says how to fix it (code 8). */
public final class InsecureDirectoryException extends PortmgrException {
    private static final long serialVersionUID = 1L;

    InsecureDirectoryException(String message) {
        super(8, message, 0);
    }
}
