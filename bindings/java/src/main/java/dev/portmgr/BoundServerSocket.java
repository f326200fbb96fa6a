package dev.portmgr;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.nio.channels.ServerSocketChannel;

/**
 * A listening TCP socket on a held port, with its {@link Lease}: from {@link
 * Registry#serverSocket}. The socket is a {@link ServerSocketChannel} (blocking mode; use
 * {@link #channel()} for NIO) and its {@link ServerSocket} adaptor ({@link #socket()}).
 *
 * <pre>{@code
 * try (BoundServerSocket bound = reg.serverSocket(Request.builder().host("127.0.0.1").build())) {
 *     ServerSocket server = bound.socket();      // listening on bound.port()
 *     Socket client = server.accept();
 * }   // socket closed, then the lease released
 * }</pre>
 *
 * <p>{@link #raceFree()} tells how the socket was made: true when the library's own bound
 * socket was handed over (the JVM runs with {@code --add-opens java.base/sun.nio.ch=ALL-UNNAMED}),
 * false when Java bound the port itself while the registry held it (see {@link
 * Registry#serverSocket}). Thread-safe.
 */
public final class BoundServerSocket implements AutoCloseable {
    private final Lease lease;
    private final ServerSocketChannel channel;
    private final boolean handedOver;

    BoundServerSocket(Lease lease, ServerSocketChannel channel, boolean handedOver) {
        this.lease = lease;
        this.channel = channel;
        this.handedOver = handedOver;
    }

    /** The listening socket (the channel's adaptor). */
    public ServerSocket socket() {
        return channel.socket();
    }

    /** The listening channel, in blocking mode. */
    public ServerSocketChannel channel() {
        return channel;
    }

    /** The lease holding the port. */
    public Lease lease() {
        return lease;
    }

    /** The port. */
    public int port() {
        return lease.port();
    }

    /** True when the socket is the library's own, handed over; false when Java took the port
     * over from it (both keep the port bound throughout). */
    public boolean handedOver() {
        return handedOver;
    }

    /** Closes the socket, then releases the lease. Idempotent. */
    @Override
    public void close() {
        try {
            channel.close();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } finally {
            lease.release();
        }
    }
}
