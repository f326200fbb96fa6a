package dev.portmgr;

/**
 * A failed portmgr call. Every error of this binding is one of its subclasses, one per error
 * kind of the core, each with the core's stable {@link #code()} (the same in every language:
 * C's {@code portmgr_status}, the CLI's exit codes, Python's exception classes):
 *
 * <table>
 * <caption>The error kinds</caption>
 * <tr><th>code</th><th>class</th><th>when</th></tr>
 * <tr><td>1</td><td>{@link InvalidArgumentException}</td><td>a bad request, a closed registry</td></tr>
 * <tr><td>2</td><td>{@link PortsExhaustedException}</td><td>no free port left in the range</td></tr>
 * <tr><td>3</td><td>{@link InUseException}</td><td>the port (required preferred) or name is held</td></tr>
 * <tr><td>4</td><td>{@link NotFoundException}</td><td>no live lease with that port, name or id</td></tr>
 * <tr><td>5</td><td>{@link NotOwnerException}</td><td>the lease belongs to another live process</td></tr>
 * <tr><td>6</td><td>{@link TimedOutException}</td><td>the registry lock was not had in time</td></tr>
 * <tr><td>7</td><td>{@link RegistryCorruptException}</td><td>the registry file is damaged</td></tr>
 * <tr><td>8</td><td>{@link InsecureDirectoryException}</td><td>the registry directory is unsafe</td></tr>
 * <tr><td>9</td><td>{@link OsErrorException}</td><td>a system call failed ({@link #errno()})</td></tr>
 * <tr><td>10</td><td>{@link InternalErrorException}</td><td>a bug in portmgr: please report it</td></tr>
 * </table>
 *
 * <pre>{@code
 * try (Lease lease = reg.allocate(Request.builder().range(63000, 63009).build())) {
 *     ...
 * } catch (PortsExhaustedException e) {
 *     // e.getMessage(): "no free port in the requested range 63000-63009 ..."
 * }
 * }</pre>
 *
 * <p><b>Unchecked, on purpose.</b> Most failures are either a programming error (a bad
 * request) or an environment one (a full range, an unsafe directory) that the caller cannot
 * repair at the call site; a checked exception would force a {@code catch} around every
 * {@code try}-with-resources (through {@link Lease#close()}), every lambda and every
 * {@code TestSocketUtils} call, which Spring's own {@code TestSocketUtils} does not ask
 * either. Catch the subclass you can handle.
 */
public class PortmgrException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final int code;
    private final int errno;

    PortmgrException(int code, String message, int errno) {
        super(message == null || message.isEmpty() ? describe(code) : message);
        this.code = code;
        this.errno = errno;
    }

    /** The core's stable error code (1 to 10; a newer library may add codes). */
    public int code() {
        return code;
    }

    /** For {@link OsErrorException}: the errno of the failed system call; else 0. */
    public int errno() {
        return errno;
    }

    private static String describe(int code) {
        try {
            return Lib.portmgr_status_str(code);
        } catch (Throwable t) {
            return "portmgr error " + code;
        }
    }

    /** The subclass of {@code code}. */
    static PortmgrException of(int code, String message, int errno) {
        switch (code) {
            case 1: return new InvalidArgumentException(message);
            case 2: return new PortsExhaustedException(message);
            case 3: return new InUseException(message);
            case 4: return new NotFoundException(message);
            case 5: return new NotOwnerException(message);
            case 6: return new TimedOutException(message);
            case 7: return new RegistryCorruptException(message);
            case 8: return new InsecureDirectoryException(message);
            case 9: return new OsErrorException(message, errno);
            case 10: return new InternalErrorException(message);
            default: return new PortmgrException(code, message, errno);
        }
    }

    /** An {@link InvalidArgumentException} found while converting Java values for C. */
    static InvalidArgumentException invalid(String message) {
        return new InvalidArgumentException("invalid argument: " + message);
    }
}
