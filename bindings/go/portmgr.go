// Package portmgr is the Go binding of libportmgr, the host-wide port allocator: one
// shared, crash-safe table per user of who holds which port, used by every process and
// language on the host (Rust, C/C++, Python, shell, Go), so no two holders are ever
// handed the same port, and the ports of a process that dies (even by SIGKILL) are
// free at once. There is no daemon.
//
//	reg, err := portmgr.Open("")  // "" = the default registry ($PORTMGR_DIR, ...)
//	defer reg.Close()
//	lease, err := reg.Allocate(portmgr.Request{Name: "web"})
//	defer lease.Release()
//	addr := fmt.Sprintf("127.0.0.1:%d", lease.Port())
//
// Race-free hand-over: Registry.Listen returns a net.Listener already bound to a held
// port, so no other process can take the port between allocation and use.
//
// Errors are *Error values that match one sentinel per core error kind with errors.Is
// (ErrExhausted, ErrInUse, ...). Nothing in this package panics.
//
// Lifetime: a Lease is held until Release, Keep's detachment ends, or the process exits
// (any way). It is NOT released when it becomes garbage: there is no finalizer, on
// purpose. A port often outlives every Go reference to its lease (it was handed to a
// server, a config file, a child process), and a release at an unpredictable GC time
// would hand it to someone else while it is still in use; the price of a forgotten
// Release is a port held until the process exits, which is also what the Python binding
// does. Release leases when done (defer lease.Release()).
//
// Build: the package links libportmgr through pkg-config (`#cgo pkg-config: portmgr`):
// install it with scripts/install-c.sh --prefix DIR and set PKG_CONFIG_PATH to
// DIR/lib/pkgconfig (and LD_LIBRARY_PATH to DIR/lib, or an rpath in CGO_LDFLAGS).
package portmgr

/*
#cgo pkg-config: portmgr
#include "pm_helpers.h"
*/
import "C"

import (
	"net"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Proto is the set of protocols a port must be free for.
type Proto uint32

// The protocols. The zero value of a Request's Proto means TCP.
const (
	TCP  Proto = C.PORTMGR_PROTO_TCP
	UDP  Proto = C.PORTMGR_PROTO_UDP
	Both Proto = C.PORTMGR_PROTO_BOTH // free for TCP and UDP
)

// Strategy is the order in which candidate ports are tried.
type Strategy uint32

// The strategies. The zero value of a Request's Strategy is Random.
const (
	// Random: a random order over the range (the default): concurrent callers spread out.
	Random Strategy = C.PORTMGR_STRATEGY_RANDOM
	// Sequential: the lowest free port of the range.
	Sequential Strategy = C.PORTMGR_STRATEGY_SEQUENTIAL
	// Hash: start at the FNV-1a hash of the name, then upward: the same name gets the
	// same port run after run while it is free.
	Hash Strategy = C.PORTMGR_STRATEGY_HASH
	// Kernel: let the kernel choose (bind to port 0, inside the ephemeral range), then
	// record that port.
	Kernel Strategy = C.PORTMGR_STRATEGY_KERNEL
)

// Range is an inclusive port range. The zero Range means the default pool (outside the
// kernel's ephemeral range; PORTMGR_RANGE=A-B overrides it).
type Range struct {
	Start, End int
}

// Request says what to allocate. The zero Request asks for one TCP port from the default
// pool, random strategy, held while this process lives. Every zero field means the
// library's default; the library checks the combination (ErrInvalidArgument).
type Request struct {
	Name       string   // a service name: unique among live leases (ErrInUse), see Hash
	Proto      Proto    // TCP (zero value), UDP or Both
	Count      int      // how many ports (0 means 1)
	Contiguous bool     // the ports are consecutive
	Range      Range    // where from (zero: the default pool)
	Strategy   Strategy // Random (zero value), Sequential, Hash or Kernel
	Preferred  int      // try this port first (0: none); with Count > 1 the block starts here
	Required   bool     // with Preferred: fail with ErrInUse instead of falling back
	// TTL: hold the ports this long whether or not this process lives (renew with
	// Lease.Renew); 0 holds them while this process lives. Rounded up to milliseconds.
	TTL     time.Duration
	Exclude []int  // ports never to hand out for this request
	Host    string // probe (and, for Listen, bind) on this address, e.g. "127.0.0.1"; "" is the dual-stack wildcard
	// WatchPID: hold the ports while that process lives instead (0: none).
	WatchPID int
}

// Registry is a handle on one registry directory. It is safe for concurrent use by any
// number of goroutines. Close it when done; leases made through it stay valid.
type Registry struct {
	mu sync.RWMutex
	h  *C.portmgr_registry
}

// Open opens (creating it if needed) the registry in directory dir, or, when dir is "",
// the default registry: $PORTMGR_DIR if set, else $XDG_RUNTIME_DIR/portmgr, else
// /tmp/portmgr-<uid>. The directory is created mode 0700 and checked on every open
// (ErrInsecureDirectory says what to fix).
func Open(dir string) (*Registry, error) {
	var cdir *C.char
	if dir != "" {
		if strings.IndexByte(dir, 0) >= 0 {
			return nil, invalid("`dir` contains a NUL byte")
		}
		cdir = C.CString(dir)
		defer C.free(unsafe.Pointer(cdir))
	}
	var h *C.portmgr_registry
	if err := call(func() C.portmgr_status { return C.portmgr_registry_open(cdir, &h) }); err != nil {
		return nil, err
	}
	return &Registry{h: h}, nil
}

// Close closes the handle; later calls on it return ErrInvalidArgument. Leases allocated
// through it stay held and valid. It always returns nil (it implements io.Closer);
// closing twice is harmless.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.h != nil {
		C.portmgr_registry_close(r.h)
		r.h = nil
	}
	return nil
}

// use runs f with the open handle (shared lock: Close waits for running calls).
func (r *Registry) use(f func(h *C.portmgr_registry) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.h == nil {
		return invalid("the registry is closed")
	}
	return f(r.h)
}

// SetLockTimeout makes later calls on this handle wait at most d (at least 1 ms) for the
// registry lock instead of 10 s; past it they return ErrTimeout naming the holder.
func (r *Registry) SetLockTimeout(d time.Duration) error {
	ms, err := millis(d, "timeout")
	if err != nil {
		return err
	}
	return r.use(func(h *C.portmgr_registry) error {
		return call(func() C.portmgr_status { return C.portmgr_registry_set_lock_timeout(h, ms) })
	})
}

func millis(d time.Duration, what string) (C.uint64_t, error) {
	if d < 0 {
		return 0, invalid("`" + what + "` is negative")
	}
	return C.uint64_t((d + time.Millisecond - 1) / time.Millisecond), nil
}

func port16(p int, what string) (C.uint16_t, error) {
	if p < 0 || p > 65535 {
		return 0, invalid("`" + what + "` is not a port (0-65535)")
	}
	return C.uint16_t(p), nil
}

// cstr converts an optional string argument ("" gives NULL); free the result.
func cstr(s, what string) (*C.char, error) {
	if s == "" {
		return nil, nil
	}
	if strings.IndexByte(s, 0) >= 0 {
		return nil, invalid("`" + what + "` contains a NUL byte")
	}
	return C.CString(s), nil
}

// Lease is a set of held ports. Its methods are safe for concurrent use.
type Lease struct {
	mu    sync.Mutex
	h     *C.portmgr_lease // nil once released or kept
	ports []int
	id    uint64
}

// Port is the (first) port: the lowest of a contiguous block. It stays readable after
// Release.
func (l *Lease) Port() int { return l.ports[0] }

// Ports is every port of the lease, in the lease's order (ascending for a contiguous
// block): a copy.
func (l *Lease) Ports() []int { return append([]int(nil), l.ports...) }

// ID is the lease's id (lease_id in the registry's views): Registry.ReleaseID and
// the command `portmgr release --id` take it. Never 0.
func (l *Lease) ID() uint64 { return l.id }

// Release releases the ports now. It is idempotent: later calls return nil. After an
// error (ErrTimeout waiting for the registry lock) the handle is gone all the same and
// the ports stay held until the process exits.
func (l *Lease) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h == nil {
		return nil
	}
	var msg *C.char
	var osErrno C.int
	st := C.pm_lease_release(l.h, &msg, &osErrno)
	l.h = nil
	if st != C.PORTMGR_OK {
		return newError(st, msg, osErrno)
	}
	return nil
}

// Renew gives the lease a TTL of ttl from now: from then on it lives by its TTL (renew
// it again before it ends), no longer by this process.
func (l *Lease) Renew(ttl time.Duration) error {
	ms, err := millis(ttl, "ttl")
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h == nil {
		return invalid("the lease was released or kept")
	}
	h := l.h
	return call(func() C.portmgr_status { return C.portmgr_lease_renew(h, ms) })
}

// Keep detaches the lease: its ports stay held until this process exits (or its TTL or
// watched process ends), and any process of the user may release them (by port or id).
// Release afterwards does nothing.
func (l *Lease) Keep() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h == nil {
		return invalid("the lease was released or kept")
	}
	h := l.h
	l.h = nil
	return call(func() C.portmgr_status { return C.portmgr_lease_keep(h) })
}

// Allocate allocates ports as req asks. They are recorded in the registry, so no other
// portmgr user on the host (any process, any language) is handed them while the lease
// lives, and probed free; no socket is held: bind them soon, or use Listen.
func (r *Registry) Allocate(req Request) (*Lease, error) {
	l, _, err := r.allocate(&req, false)
	return l, err
}

// Listen allocates one TCP port as req asks and returns a listener already bound to it
// (listening, backlog 1024): the race-free hand-over, nobody can take the port between
// allocation and use. req.Proto must be TCP (or zero) and req.Count 0 or 1; req.Host
// chooses the address (default: the dual-stack wildcard, which accepts 127.0.0.1 too).
// Closing the listener does not release the lease; releasing the lease does not close
// the listener (the port stays bound, so nobody else can use it meanwhile).
func (r *Registry) Listen(req Request) (net.Listener, *Lease, error) {
	if req.Proto != 0 && req.Proto != TCP {
		return nil, nil, invalid("Listen needs a TCP request (Proto TCP or zero)")
	}
	if req.Count > 1 {
		return nil, nil, invalid("Listen hands over one port: Count must be 0 or 1")
	}
	l, fd, err := r.allocate(&req, true)
	if err != nil {
		return nil, nil, err
	}
	f := os.NewFile(uintptr(fd), "portmgr-listener")
	ln, err := net.FileListener(f) // dups the descriptor (close-on-exec)
	f.Close()
	if err != nil {
		l.Release()
		return nil, nil, &Error{Code: CodeOS, Message: "net.FileListener: " + err.Error()}
	}
	return ln, l, nil
}

func (r *Registry) allocate(req *Request, bound bool) (*Lease, C.int, error) {
	var cr C.pm_req
	cr.proto = C.uint32_t(req.Proto)
	cr.strategy = C.uint32_t(req.Strategy)
	if req.Count < 0 {
		return nil, -1, invalid("`Count` is negative")
	}
	cr.count = C.size_t(req.Count)
	if req.Contiguous {
		cr.contiguous = 1
	}
	if req.Range != (Range{}) {
		s, err := port16(req.Range.Start, "Range.Start")
		if err != nil {
			return nil, -1, err
		}
		e, err := port16(req.Range.End, "Range.End")
		if err != nil {
			return nil, -1, err
		}
		cr.set_range, cr.start, cr.end = 1, s, e
	}
	if req.Preferred != 0 || req.Required {
		p, err := port16(req.Preferred, "Preferred")
		if err != nil {
			return nil, -1, err
		}
		cr.set_preferred, cr.preferred = 1, p
		if req.Required {
			cr.required = 1
		}
	}
	ttl, err := millis(req.TTL, "TTL")
	if err != nil {
		return nil, -1, err
	}
	cr.ttl_ms = ttl
	if req.WatchPID < 0 || req.WatchPID > 1<<32-1 {
		return nil, -1, invalid("`WatchPID` is not a pid")
	}
	cr.watch_pid = C.uint32_t(req.WatchPID)
	var exclude []C.uint16_t
	for _, p := range req.Exclude {
		c, err := port16(p, "Exclude")
		if err != nil {
			return nil, -1, err
		}
		exclude = append(exclude, c)
	}
	var pexclude *C.uint16_t
	if len(exclude) > 0 {
		pexclude = &exclude[0]
	}
	name, err := cstr(req.Name, "Name")
	if err != nil {
		return nil, -1, err
	}
	defer C.free(unsafe.Pointer(name))
	host, err := cstr(req.Host, "Host")
	if err != nil {
		return nil, -1, err
	}
	defer C.free(unsafe.Pointer(host))

	n := req.Count
	if n < 1 {
		n = 1
	}
	ports := make([]C.uint16_t, n)
	var fds *C.int
	var fdbuf [1]C.int
	fdbuf[0] = -1
	if bound {
		fds = &fdbuf[0]
	}
	var (
		h       *C.portmgr_lease
		nfds    C.size_t
		nports  C.size_t
		id      C.uint64_t
		msg     *C.char
		osErrno C.int
	)
	err = r.use(func(reg *C.portmgr_registry) error {
		st := C.pm_allocate(reg, &cr, name, host, pexclude, C.size_t(len(exclude)),
			fds, C.size_t(len(fdbuf)), &nfds, &h, &ports[0], C.size_t(len(ports)), &nports, &id,
			&msg, &osErrno)
		if st != C.PORTMGR_OK {
			return newError(st, msg, osErrno)
		}
		return nil
	})
	if err != nil {
		return nil, -1, err
	}
	if int(nports) > len(ports) { // cannot happen: the lease has the count asked for
		ports = make([]C.uint16_t, nports)
		nports = C.portmgr_lease_ports(h, &ports[0], nports)
	}
	l := &Lease{h: h, id: uint64(id), ports: make([]int, int(nports))}
	for i := range l.ports {
		l.ports[i] = int(ports[i])
	}
	return l, fdbuf[0], nil
}

// ReleasePort releases the lease holding port (all of its ports), whoever allocated it:
// allowed when this process holds it, when it was kept or detached (TTL, watched
// process), or when its owner is gone. ErrNotFound when no live lease holds it,
// ErrNotOwner when another live process holds it.
func (r *Registry) ReleasePort(port int) error {
	p, err := port16(port, "port")
	if err != nil {
		return err
	}
	return r.use(func(h *C.portmgr_registry) error {
		return call(func() C.portmgr_status { return C.portmgr_release_port(h, p) })
	})
}

// ReleaseID releases lease id (Lease.ID), as ReleasePort. An unknown or already
// released id is ErrNotFound, never a silent success.
func (r *Registry) ReleaseID(id uint64) error {
	return r.use(func(h *C.portmgr_registry) error {
		return call(func() C.portmgr_status { return C.portmgr_release_id(h, C.uint64_t(id)) })
	})
}

// ReleaseName releases the live lease named name, as ReleasePort.
func (r *Registry) ReleaseName(name string) error {
	if name == "" {
		return invalid("`name` is empty")
	}
	c, err := cstr(name, "name")
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(c))
	return r.use(func(h *C.portmgr_registry) error {
		return call(func() C.portmgr_status { return C.portmgr_release_name(h, c) })
	})
}

// Lookup is the (first) port of the live lease named name, held by any process
// (ErrNotFound when none).
func (r *Registry) Lookup(name string) (int, error) {
	if name == "" {
		return 0, invalid("`name` is empty")
	}
	c, err := cstr(name, "name")
	if err != nil {
		return 0, err
	}
	defer C.free(unsafe.Pointer(c))
	var port C.uint16_t
	err = r.use(func(h *C.portmgr_registry) error {
		return call(func() C.portmgr_status { return C.portmgr_lookup_name(h, c, &port) })
	})
	return int(port), err
}

// ListJSON is every live port of the registry (all processes) as a JSON array (the
// shape of portmgr_registry_list_json: port, protocols, name, lease_id, owner_pid, ...).
func (r *Registry) ListJSON() (string, error) {
	return r.json(func(h *C.portmgr_registry, b *C.char, n C.size_t, out *C.size_t) C.portmgr_status {
		return C.portmgr_registry_list_json(h, b, n, out)
	})
}

// StatsJSON is the registry's figures as a JSON object (pool, held, allocations,
// releases, reclaimed, ...; the shape of portmgr_registry_stats_json).
func (r *Registry) StatsJSON() (string, error) {
	return r.json(func(h *C.portmgr_registry, b *C.char, n C.size_t, out *C.size_t) C.portmgr_status {
		return C.portmgr_registry_stats_json(h, b, n, out)
	})
}

func (r *Registry) json(fill func(*C.portmgr_registry, *C.char, C.size_t, *C.size_t) C.portmgr_status) (string, error) {
	var s string
	err := r.use(func(h *C.portmgr_registry) error {
		size := C.size_t(4096)
		for {
			buf := (*C.char)(C.malloc(size))
			var n C.size_t
			err := call(func() C.portmgr_status { return fill(h, buf, size, &n) })
			if err == nil && n < size {
				s = C.GoStringN(buf, C.int(n))
			}
			C.free(unsafe.Pointer(buf))
			if err != nil || n < size {
				return err
			}
			size = n + 1
		}
	})
	return s, err
}

// Version is the library's version, e.g. "0.1.0".
func Version() string { return C.GoString(C.portmgr_version()) }

// The default registry of FreePort and ReleasePort, opened at first use.
var (
	defMu  sync.Mutex
	defReg *Registry
	held   = map[int]*Lease{} // FreePort's leases by port
)

func defaultRegistry() (*Registry, error) {
	if defReg != nil {
		return defReg, nil
	}
	r, err := Open("")
	if err != nil {
		return nil, err
	}
	defReg = r
	return r, nil
}

// FreePort allocates one TCP port from the default registry and pool, held until
// ReleasePort(port) or until the process exits: the shape of the usual "free port"
// helpers, without their race (no other portmgr user on the host is handed the port
// meanwhile). Bind it soon: the registry records it, but holds no socket.
func FreePort() (int, error) {
	defMu.Lock()
	defer defMu.Unlock()
	reg, err := defaultRegistry()
	if err != nil {
		return 0, err
	}
	l, err := reg.Allocate(Request{})
	if err != nil {
		return 0, err
	}
	held[l.Port()] = l
	return l.Port(), nil
}

// ReleasePort releases a port of FreePort now. Any other port is released through the
// default registry as Registry.ReleasePort does (ErrNotFound when nothing holds it).
func ReleasePort(port int) error {
	defMu.Lock()
	defer defMu.Unlock()
	if l, ok := held[port]; ok {
		delete(held, port)
		return l.Release()
	}
	reg, err := defaultRegistry()
	if err != nil {
		return err
	}
	return reg.ReleasePort(port)
}
