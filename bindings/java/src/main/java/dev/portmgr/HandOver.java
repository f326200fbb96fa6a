package dev.portmgr;

import java.io.FileDescriptor;
import java.lang.reflect.Constructor;
import java.lang.reflect.Method;
import java.net.ProtocolFamily;
import java.net.StandardProtocolFamily;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.spi.SelectorProvider;

/**
 * Turns a listening descriptor of {@code portmgr_allocate_bound} into a {@link
 * ServerSocketChannel}: the race-free hand-over. Java has no public API for this (only
 * {@code System.inheritedChannel()}, which is descriptor 0, once per JVM), so this uses the
 * JDK's own implementation class, {@code sun.nio.ch.ServerSocketChannelImpl}, through
 * reflection, and only when the JVM was started with
 * {@code --add-opens java.base/sun.nio.ch=ALL-UNNAMED} (or the binding's module): then
 * {@link #available()} is true. Without it nothing here touches JDK internals, and {@link
 * Registry#serverSocket} takes the port over from the library's socket instead.
 */
final class HandOver {
    private HandOver() {}

    private static final Constructor<?> CTOR; // (SelectorProvider, ProtocolFamily, FileDescriptor, boolean): JDK 17+
    private static final Constructor<?> CTOR_OLD; // (SelectorProvider, FileDescriptor, boolean): JDK 11-16
    private static final Method NEW_FD; // sun.nio.ch.IOUtil.newFD(int)

    static {
        Constructor<?> ctor = null;
        Constructor<?> old = null;
        Method newFd = null;
        if (Boolean.parseBoolean(System.getProperty("portmgr.handover", "true"))
                && Object.class.getModule().isOpen("sun.nio.ch", HandOver.class.getModule())) {
            try {
                Class<?> impl = Class.forName("sun.nio.ch.ServerSocketChannelImpl");
                try {
                    ctor = impl.getDeclaredConstructor(SelectorProvider.class, ProtocolFamily.class,
                            FileDescriptor.class, boolean.class);
                    ctor.setAccessible(true);
                } catch (NoSuchMethodException e) {
                    old = impl.getDeclaredConstructor(SelectorProvider.class, FileDescriptor.class, boolean.class);
                    old.setAccessible(true);
                }
                newFd = Class.forName("sun.nio.ch.IOUtil").getDeclaredMethod("newFD", int.class);
                newFd.setAccessible(true);
            } catch (ReflectiveOperationException | RuntimeException e) {
                ctor = null;
                old = null;
                newFd = null;
            }
        }
        CTOR = ctor;
        CTOR_OLD = old;
        NEW_FD = newFd;
    }

    /** Whether listening descriptors can be handed over (see the class comment). */
    static boolean available() {
        return NEW_FD != null && (CTOR != null || CTOR_OLD != null);
    }

    /**
     * The channel of {@code fd}, which then belongs to it (closing the channel closes it).
     * On an exception {@code fd} is still the caller's.
     */
    static ServerSocketChannel wrap(int fd) throws ReflectiveOperationException {
        FileDescriptor fdo = (FileDescriptor) NEW_FD.invoke(null, fd);
        SelectorProvider sp = SelectorProvider.provider();
        if (CTOR != null) {
            return (ServerSocketChannel) CTOR.newInstance(sp, family(fd), fdo, true);
        }
        return (ServerSocketChannel) CTOR_OLD.newInstance(sp, fdo, true);
    }

    /** The address family of a bound socket, from getsockname. */
    private static ProtocolFamily family(int fd) {
        byte[] addr = new byte[128];
        int[] len = {addr.length};
        if (Lib.C.getsockname(fd, addr, len) == 0) {
            short family = ByteBuffer.wrap(addr).order(ByteOrder.nativeOrder()).getShort(0);
            if (family == 2) { // AF_INET
                return StandardProtocolFamily.INET;
            }
        }
        return StandardProtocolFamily.INET6;
    }
}
