package dev.portmgr;

import com.sun.jna.IntegerType;
import com.sun.jna.Library;
import com.sun.jna.Native;
import com.sun.jna.NativeLibrary;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.PointerByReference;
import java.nio.charset.StandardCharsets;
import java.util.Map;

/**
 * The C ABI of libportmgr (include/portmgr.h), bound with JNA's direct mapping: one static
 * native method per C function used. Nothing here decides anything: the library checks every
 * argument and combination; this class only declares types.
 *
 * <p>The library keeps its error message per OS thread. A Java platform thread is one OS
 * thread, so {@link #fail} reads the message of a failed call on the thread that made it,
 * right after the call and before any other portmgr call (freeing a request resets it).
 */
final class Lib {
    private Lib() {}

    /** The library's name for JNA: {@code portmgr} (libportmgr.so), found in
     * {@code jna.library.path}, else the system's library path; the system property
     * {@code portmgr.library} may name the file instead. */
    static final String NAME = System.getProperty("portmgr.library", "portmgr");

    static {
        Native.register(Lib.class, NativeLibrary.getInstance(NAME,
                Map.of(Library.OPTION_STRING_ENCODING, StandardCharsets.UTF_8.name())));
    }

    /** C's {@code size_t}. */
    public static final class SizeT extends IntegerType {
        private static final long serialVersionUID = 1L;

        public SizeT() {
            this(0);
        }

        public SizeT(long value) {
            super(Native.SIZE_T_SIZE, value, true);
        }
    }

    static final int OK = 0;
    static final int PROTO_TCP = 1;
    static final int PROTO_UDP = 2;

    static native String portmgr_version();

    static native String portmgr_status_str(int status);

    static native SizeT portmgr_last_error_message(byte[] buf, SizeT len);

    static native int portmgr_last_os_error();

    static native int portmgr_probe(short port, int protocols, byte[] outFree);

    static native int portmgr_registry_open(String dir, PointerByReference out);

    static native void portmgr_registry_close(Pointer reg);

    static native int portmgr_registry_set_lock_timeout(Pointer reg, long timeoutMs);

    static native int portmgr_allocate(Pointer reg, Pointer req, PointerByReference out);

    static native int portmgr_allocate_bound(Pointer reg, Pointer req, PointerByReference out,
            int[] fds, SizeT fdsLen, Pointer outNfds);

    static native int portmgr_release_port(Pointer reg, short port);

    static native int portmgr_release_name(Pointer reg, String name);

    static native int portmgr_release_id(Pointer reg, long id);

    static native int portmgr_lookup_name(Pointer reg, String name, short[] outPort);

    static native int portmgr_registry_list_json(Pointer reg, byte[] buf, SizeT len, Pointer outLen);

    static native int portmgr_registry_stats_json(Pointer reg, byte[] buf, SizeT len, Pointer outLen);

    static native int portmgr_request_new(PointerByReference out);

    static native void portmgr_request_free(Pointer req);

    static native int portmgr_request_set_protocols(Pointer req, int protocols);

    static native int portmgr_request_set_range(Pointer req, short start, short end);

    static native int portmgr_request_exclude(Pointer req, short[] ports, SizeT n);

    static native int portmgr_request_set_strategy(Pointer req, int strategy);

    static native int portmgr_request_set_name(Pointer req, String name);

    static native int portmgr_request_set_count(Pointer req, SizeT count);

    static native int portmgr_request_set_contiguous(Pointer req, byte contiguous);

    static native int portmgr_request_set_ttl_ms(Pointer req, long ttlMs);

    static native int portmgr_request_set_watch_pid(Pointer req, int pid);

    static native int portmgr_request_set_preferred(Pointer req, short port, byte required);

    static native int portmgr_request_set_probe_addr(Pointer req, String addr);

    static native long portmgr_lease_id(Pointer lease);

    static native SizeT portmgr_lease_ports(Pointer lease, short[] ports, SizeT len);

    static native int portmgr_lease_renew(Pointer lease, long ttlMs);

    static native int portmgr_lease_release(Pointer lease);

    static native int portmgr_lease_keep(Pointer lease);

    /** The exception of a failed call: reads this thread's message and errno now. */
    static PortmgrException fail(int status) {
        int n = (int) Math.min(portmgr_last_error_message(null, new SizeT(0)).longValue(), 1 << 20);
        byte[] buf = new byte[n + 1];
        portmgr_last_error_message(buf, new SizeT(buf.length));
        String msg = new String(buf, 0, n, StandardCharsets.UTF_8);
        return PortmgrException.of(status, msg, portmgr_last_os_error());
    }

    /** Throws the exception of {@code status} unless it is OK. */
    static void check(int status) {
        if (status != OK) {
            throw fail(status);
        }
    }

    /** libc, for the descriptors of {@code portmgr_allocate_bound}. */
    static final class C {
        private C() {}

        static {
            Native.register(C.class, NativeLibrary.getInstance("c"));
        }

        static native int close(int fd);

        static native int getsockname(int fd, byte[] addr, int[] addrLen);

        static native int shutdown(int fd, int how);

        static native int setsockopt(int fd, int level, int name, int[] value, int len);

        /** shutdown(2): stop receiving; on a listening socket, stop listening. */
        static final int SHUT_RD = 0;
        /** Linux's SOL_SOCKET and SO_REUSEADDR. */
        static final int SOL_SOCKET = 1;
        static final int SO_REUSEADDR = 2;
    }
}
