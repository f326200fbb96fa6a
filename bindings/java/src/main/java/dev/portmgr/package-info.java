/**
 * portmgr for Java: the host-wide port allocator, over libportmgr's C ABI (through JNA).
 *
 * <p>One shared, crash-safe table per user says who holds which port; every process and
 * language on the host (Rust, C/C++, Python, Go, Java, shell) allocates through it, so no two
 * holders are handed the same port, and the ports of a JVM that exits or is killed are free
 * at once. There is no daemon.
 *
 * <pre>{@code
 * try (Registry reg = Registry.open(null);                       // null = default registry
 *      Lease lease = reg.allocate(Request.builder().name("web").proto(Proto.TCP).count(1).build())) {
 *     int port = lease.port(); int[] ports = lease.ports(); long id = lease.id();
 * }                                                               // released on close
 * ServerSocket s = Portmgr.boundServerSocket();                  // listening on a held port
 * int port = Portmgr.freePort();                                 // held until Portmgr.release(port) or JVM exit
 * int p = TestSocketUtils.findAvailableTcpPort();                // Spring's API, backed by the registry
 * }</pre>
 *
 * <ul>
 * <li>{@link dev.portmgr.Registry}, {@link dev.portmgr.Request}, {@link dev.portmgr.Lease},
 * {@link dev.portmgr.BoundServerSocket}: the API; registries, leases and bound sockets are
 * {@link java.lang.AutoCloseable}, closing twice is harmless.</li>
 * <li>{@link dev.portmgr.Portmgr}: one-call helpers over the default registry.</li>
 * <li>{@link dev.portmgr.TestSocketUtils}: a drop-in for Spring's.</li>
 * <li>{@link dev.portmgr.PortmgrException}: the unchecked errors, one subclass per core error
 * kind.</li>
 * </ul>
 *
 * <p>Every class is thread-safe (a {@link dev.portmgr.Request.Builder} belongs to one thread).
 * No descriptor leaks: the library's are close-on-exec, and every socket handed out is closed
 * by the object that owns it.
 *
 * <p>The library is loaded by JNA as {@code portmgr}: from {@code -Djna.library.path=DIR}
 * (the {@code lib} directory of {@code scripts/install-c.sh --prefix}), else the system's
 * library path; {@code -Dportmgr.library=/path/to/libportmgr.so} names the file.
 */
package dev.portmgr;
