package dev.portmgr;

import com.sun.jna.Memory;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.PointerByReference;
import java.io.IOException;
import java.net.BindException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.channels.ServerSocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * A handle on one registry directory: the shared, crash-safe table of who holds which port,
 * used by every process and language of the user on the host (Rust, C/C++, Python, Go, Java,
 * the {@code portmgr} command). There is no daemon: a JVM that exits or is killed frees its
 * ports at once.
 *
 * <pre>{@code
 * try (Registry reg = Registry.open(null);                      // null = the default registry
 *      Lease lease = reg.allocate(Request.builder().name("web").proto(Proto.TCP).count(1).build())) {
 *     int port = lease.port();
 *     startServer(port);                                        // nobody else is handed it
 * }                                                             // released, then closed
 * }</pre>
 *
 * <p>Thread-safe: one registry may be used by any number of threads at once; allocations
 * from many threads and processes never get the same port. {@link #close()} waits for the
 * calls running on it; later calls throw {@link InvalidArgumentException}. Leases made
 * through it stay held and valid after it is closed.
 */
public final class Registry implements AutoCloseable {
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private Pointer handle; // null once closed; guarded by lock

    private Registry(Pointer handle) {
        this.handle = handle;
    }

    /**
     * Opens (creating it if needed) the registry in directory {@code dir}, or, when {@code dir}
     * is null, the default registry: {@code $PORTMGR_DIR} if set, else
     * {@code $XDG_RUNTIME_DIR/portmgr}, else {@code /tmp/portmgr-<uid>}. The directory is
     * created mode 0700 and checked on every open ({@link InsecureDirectoryException} says
     * what to fix).
     */
    public static Registry open(Path dir) {
        String d = dir == null ? null : dir.toString();
        Request.checkString(d, "dir");
        PointerByReference out = new PointerByReference();
        Lib.check(Lib.portmgr_registry_open(d, out));
        return new Registry(out.getValue());
    }

    /** The library's version, e.g. {@code "0.1.0"}. */
    public static String version() {
        return Lib.portmgr_version();
    }

    /** Closes the handle; closing twice is harmless. Leases made through it stay valid. */
    @Override
    public void close() {
        lock.writeLock().lock();
        try {
            if (handle != null) {
                Lib.portmgr_registry_close(handle);
                handle = null;
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    /** Whether {@link #close()} has been called. */
    public boolean isClosed() {
        lock.readLock().lock();
        try {
            return handle == null;
        } finally {
            lock.readLock().unlock();
        }
    }

    /** The open handle, under the read lock (the caller unlocks). */
    private Pointer use() {
        lock.readLock().lock();
        if (handle == null) {
            lock.readLock().unlock();
            throw PortmgrException.invalid("the registry is closed");
        }
        return handle;
    }

    /**
     * Later calls wait at most {@code timeout} (at least 1 ms) for the registry lock instead of
     * 10 s; past it they throw {@link TimedOutException} naming the holder.
     */
    public void setLockTimeout(Duration timeout) {
        if (timeout == null || timeout.isNegative()) {
            throw PortmgrException.invalid("`timeout` is null or negative");
        }
        Pointer h = use();
        try {
            Lib.check(Lib.portmgr_registry_set_lock_timeout(h, timeout.toMillis()));
        } finally {
            lock.readLock().unlock();
        }
    }

    /** One TCP port from the default pool: {@code allocate(Request.defaults())}. */
    public Lease allocate() {
        return allocate(null);
    }

    /**
     * Allocates ports as {@code request} asks (null: the defaults). They are recorded in the
     * registry, so no other portmgr user on the host is handed them while the lease lives, and
     * probed free; no socket is held: bind them soon, or use {@link #serverSocket}.
     *
     * @throws PortsExhaustedException no free port in the range
     * @throws InUseException the name, or a required preferred port, is held
     * @throws InvalidArgumentException a bad request, or this registry is closed
     */
    public Lease allocate(Request request) {
        return allocate(request == null ? Request.defaults() : request, null);
    }

    private Lease allocate(Request request, int[] fds) {
        Pointer req = request.toNative();
        try {
            PointerByReference out = new PointerByReference();
            Pointer h = use();
            int st;
            try {
                st = fds == null
                        ? Lib.portmgr_allocate(h, req, out)
                        : Lib.portmgr_allocate_bound(h, req, out, fds, new Lib.SizeT(fds.length), Pointer.NULL);
                if (st != Lib.OK) {
                    throw Lib.fail(st);
                }
            } finally {
                lock.readLock().unlock();
            }
            Pointer lease = out.getValue();
            int n = request.portCount();
            short[] buf = new short[n];
            int total = (int) Lib.portmgr_lease_ports(lease, buf, new Lib.SizeT(n)).longValue();
            if (total > n) { // cannot happen: a lease has the count asked for
                buf = new short[total];
                Lib.portmgr_lease_ports(lease, buf, new Lib.SizeT(total));
            }
            int[] ports = new int[total];
            for (int i = 0; i < total; i++) {
                ports[i] = buf[i] & 0xFFFF;
            }
            return new Lease(lease, ports, Lib.portmgr_lease_id(lease));
        } finally {
            Lib.portmgr_request_free(req);
        }
    }

    /**
     * Allocates one TCP port as {@code request} asks (null: the defaults; its protocol must be
     * TCP and its count 1) and returns a socket listening on it (backlog 1024), on the request's
     * {@link Request.Builder#host host} or the dual-stack wildcard (which accepts 127.0.0.1
     * too). Closing the result closes the socket, then releases the lease.
     *
     * <p><b>Race-free.</b> The library allocates the port <em>bound</em>
     * ({@code portmgr_allocate_bound}): a socket listening on it before the registry's lock is
     * let go. From then on the port is never unbound. Java has no public way to adopt a socket
     * descriptor, so:
     * <ul>
     * <li>when the JVM runs with {@code --add-opens java.base/sun.nio.ch=ALL-UNNAMED}, that very
     * socket is handed over (the JDK's own channel class, through reflection);
     * {@link BoundServerSocket#handedOver()} is true;</li>
     * <li>otherwise Java <em>takes the port over</em> without letting it go: the library's
     * socket stops listening but stays bound ({@code shutdown(SHUT_RD)} of a listener), allows
     * address reuse, a Java channel with {@code SO_REUSEADDR} binds and listens beside it
     * (Linux allows that while the first is not listening), and only then is the library's
     * socket closed. Nothing can bind the port in between except a program that binds this
     * exact port with {@code SO_REUSEADDR} <em>and</em> listens on it within those
     * microseconds; then Java's bind fails, and the port is released and another allocated
     * (3 tries). Either way the socket you get is bound, listening, and the only one on its
     * port. {@code handedOver()} is false.</li>
     * </ul>
     *
     * @throws InvalidArgumentException a request that is not for one TCP port
     * @throws OsErrorException the socket could not be made or bound
     */
    public BoundServerSocket serverSocket(Request request) {
        Request r = request == null ? Request.defaults() : request;
        if (r.proto() != null && r.proto() != Proto.TCP) {
            throw PortmgrException.invalid("serverSocket needs a TCP request");
        }
        if (r.count() > 1) {
            throw PortmgrException.invalid("serverSocket hands over one port: count must be 0 or 1");
        }
        IOException last = null;
        for (int attempt = 0; attempt < 3; attempt++) {
            int[] fds = {-1};
            Lease lease = allocate(r, fds);
            int fd = fds[0];
            if (HandOver.available()) {
                try {
                    return new BoundServerSocket(lease, HandOver.wrap(fd), true);
                } catch (ReflectiveOperationException | RuntimeException e) {
                    // not this JDK's constructor after all: Java binds, with this lease
                }
            }
            ServerSocketChannel ch = null;
            boolean ok = false;
            try {
                ch = ServerSocketChannel.open();
                ch.setOption(StandardSocketOptions.SO_REUSEADDR, true);
                InetAddress addr = r.host() == null ? null : InetAddress.getByName(r.host());
                InetSocketAddress sa = new InetSocketAddress(addr, lease.port());
                // Stop the library's socket listening, keeping its port bound, and let a
                // second socket bind beside it: the port is never free.
                if (Lib.C.shutdown(fd, Lib.C.SHUT_RD) != 0
                        || Lib.C.setsockopt(fd, Lib.C.SOL_SOCKET, Lib.C.SO_REUSEADDR, new int[] {1}, 4) != 0) {
                    throw new IOException("preparing the library's socket for the take-over: errno " + Native.getLastError());
                }
                ch.bind(sa, 1024);
                Lib.C.close(fd); // Java's socket listens: the library's may go
                fd = -1;
                ok = true;
                return new BoundServerSocket(lease, ch, false);
            } catch (BindException e) {
                // a program bound this port with SO_REUSEADDR and listened in the microseconds
                // of the take-over: another port
                TAKEOVER_RETRIES.incrementAndGet();
                last = e;
            } catch (IOException e) {
                last = e;
                break;
            } finally {
                if (fd >= 0) {
                    Lib.C.close(fd);
                }
                if (!ok) {
                    closeQuietly(ch);
                    lease.release();
                }
            }
        }
        throw new OsErrorException("binding the held port in Java failed: " + last, 0);
    }

    /** How many take-overs failed because another program listened on the port first (a
     * test's witness that nothing else can). */
    static final java.util.concurrent.atomic.AtomicInteger TAKEOVER_RETRIES = new java.util.concurrent.atomic.AtomicInteger();

    private static void closeQuietly(ServerSocketChannel ch) {
        if (ch != null) {
            try {
                ch.close();
            } catch (IOException ignored) {
                // nothing was bound
            }
        }
    }

    /**
     * Releases the lease holding {@code port} (all of its ports), whoever allocated it: allowed
     * when this process holds it, when it was kept or detached (TTL, watched process), or when
     * its owner is gone.
     *
     * @throws NotFoundException no live lease holds the port
     * @throws NotOwnerException another live process holds it
     */
    public void releasePort(int port) {
        short p = Request.port16(port, "port");
        Pointer h = use();
        try {
            Lib.check(Lib.portmgr_release_port(h, p));
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Releases lease {@code id} ({@link Lease#id()}), as {@link #releasePort}. An unknown or
     * released id is {@link NotFoundException}, never a silent success. */
    public void releaseId(long id) {
        Pointer h = use();
        try {
            Lib.check(Lib.portmgr_release_id(h, id));
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Releases the live lease named {@code name}, as {@link #releasePort}. */
    public void releaseName(String name) {
        if (name == null) {
            throw PortmgrException.invalid("`name` is null");
        }
        Request.checkString(name, "name");
        Pointer h = use();
        try {
            Lib.check(Lib.portmgr_release_name(h, name));
        } finally {
            lock.readLock().unlock();
        }
    }

    /** The (first) port of the live lease named {@code name}, held by any process.
     * @throws NotFoundException when none */
    public int lookup(String name) {
        if (name == null) {
            throw PortmgrException.invalid("`name` is null");
        }
        Request.checkString(name, "name");
        short[] port = new short[1];
        Pointer h = use();
        try {
            Lib.check(Lib.portmgr_lookup_name(h, name, port));
        } finally {
            lock.readLock().unlock();
        }
        return port[0] & 0xFFFF;
    }

    /** Every live port of the registry (all processes) as a JSON array: {@code port},
     * {@code protocols}, {@code name}, {@code lease_id}, {@code owner_pid}, ... */
    public String listJson() {
        return json(false);
    }

    /** The registry's figures as a JSON object: {@code pool}, {@code held}, {@code
     * allocations}, {@code releases}, {@code reclaimed}, ... */
    public String statsJson() {
        return json(true);
    }

    private String json(boolean stats) {
        Pointer h = use();
        try {
            int size = 4096;
            Memory outLen = new Memory(Native.SIZE_T_SIZE);
            while (true) {
                byte[] buf = new byte[size];
                int st = stats
                        ? Lib.portmgr_registry_stats_json(h, buf, new Lib.SizeT(size), outLen)
                        : Lib.portmgr_registry_list_json(h, buf, new Lib.SizeT(size), outLen);
                Lib.check(st);
                long n = Native.SIZE_T_SIZE == 8 ? outLen.getLong(0) : outLen.getInt(0) & 0xFFFFFFFFL;
                if (n < size) {
                    return new String(buf, 0, (int) n, StandardCharsets.UTF_8);
                }
                if (n >= Integer.MAX_VALUE) {
                    throw PortmgrException.invalid("the JSON is too large");
                }
                size = (int) n + 1;
            }
        } finally {
            lock.readLock().unlock();
        }
    }

    @Override
    public String toString() {
        return isClosed() ? "Registry{closed}" : "Registry{open}";
    }
}
