package portmgr_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	portmgr "portmgr/bindings/go"
)

// openTemp opens a registry in a new temp directory, closed at the end of the test.
func openTemp(t *testing.T) (*portmgr.Registry, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "reg")
	reg, err := portmgr.Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg, dir
}

func mustAllocate(t *testing.T, reg *portmgr.Registry, req portmgr.Request) *portmgr.Lease {
	t.Helper()
	l, err := reg.Allocate(req)
	if err != nil {
		t.Fatalf("Allocate(%+v): %v", req, err)
	}
	t.Cleanup(func() { l.Release() })
	return l
}

// wantErr checks that err matches the sentinel, is an *Error of that code with a
// message, and matches no other sentinel.
func wantErr(t *testing.T, what string, err, sentinel error) *portmgr.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, sentinel)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("%s: %v (%T), want %v", what, err, err, sentinel)
	}
	var e *portmgr.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: %T is not a *portmgr.Error", what, err)
	}
	if e.Kind() != sentinel || e.Message == "" || !strings.HasPrefix(err.Error(), "portmgr: ") {
		t.Fatalf("%s: kind %v, message %q, text %q", what, e.Kind(), e.Message, err.Error())
	}
	all := []error{portmgr.ErrInvalidArgument, portmgr.ErrExhausted, portmgr.ErrInUse, portmgr.ErrNotFound,
		portmgr.ErrNotOwner, portmgr.ErrTimeout, portmgr.ErrRegistryCorrupt, portmgr.ErrInsecureDirectory,
		portmgr.ErrOS, portmgr.ErrInternal}
	for _, other := range all {
		if other != sentinel && errors.Is(err, other) {
			t.Fatalf("%s: %v also matches %v", what, err, other)
		}
	}
	return e
}

func TestAllocateOptions(t *testing.T) {
	reg, _ := openTemp(t)

	web := mustAllocate(t, reg, portmgr.Request{Name: "web", Range: portmgr.Range{Start: 61000, End: 61009}})
	if p := web.Port(); p < 61000 || p > 61009 {
		t.Fatalf("port %d outside 61000-61009", p)
	}
	if ps := web.Ports(); len(ps) != 1 || ps[0] != web.Port() {
		t.Fatalf("Ports() = %v, Port() = %d", ps, web.Port())
	}
	if web.ID() == 0 {
		t.Fatal("lease id 0")
	}
	if p, err := reg.Lookup("web"); err != nil || p != web.Port() {
		t.Fatalf("Lookup(web) = %d, %v; want %d", p, err, web.Port())
	}

	// Three consecutive ports free for TCP and UDP, lowest first, with an exclusion.
	block := mustAllocate(t, reg, portmgr.Request{Proto: portmgr.Both, Count: 3, Contiguous: true,
		Strategy: portmgr.Sequential, Range: portmgr.Range{Start: 61010, End: 61019}, Exclude: []int{61010}})
	if got := block.Ports(); fmt.Sprint(got) != "[61011 61012 61013]" {
		t.Fatalf("contiguous sequential block = %v, want [61011 61012 61013]", got)
	}
	// Ports() is a copy.
	block.Ports()[0] = 1
	if block.Port() != 61011 {
		t.Fatalf("Ports() shares the lease's slice")
	}

	// A preferred port, and the Hash strategy: the same name gets the same port again.
	pref := mustAllocate(t, reg, portmgr.Request{Preferred: 61020, Required: true, Proto: portmgr.UDP})
	if pref.Port() != 61020 {
		t.Fatalf("preferred 61020, got %d", pref.Port())
	}
	h1, err := reg.Allocate(portmgr.Request{Name: "hashed", Strategy: portmgr.Hash, Range: portmgr.Range{Start: 61021, End: 61029}})
	if err != nil {
		t.Fatal(err)
	}
	first := h1.Port()
	if err := h1.Release(); err != nil {
		t.Fatal(err)
	}
	h2 := mustAllocate(t, reg, portmgr.Request{Name: "hashed", Strategy: portmgr.Hash, Range: portmgr.Range{Start: 61021, End: 61029}})
	if h2.Port() != first {
		t.Fatalf("hash strategy: %d then %d", first, h2.Port())
	}

	// A TTL lease shows its expiry in the registry's list; Renew changes it.
	ttl := mustAllocate(t, reg, portmgr.Request{TTL: 30 * time.Second, Range: portmgr.Range{Start: 61030, End: 61031}})
	list, err := reg.ListJSON()
	if err != nil || !strings.Contains(list, fmt.Sprintf(`"port":%d`, ttl.Port())) {
		t.Fatalf("ListJSON: %v %s", err, list)
	}
	if err := ttl.Renew(time.Minute); err != nil {
		t.Fatal(err)
	}

	// The kernel strategy: bind(0)'s port (in the ephemeral range), then recorded.
	k := mustAllocate(t, reg, portmgr.Request{Strategy: portmgr.Kernel})
	if k.Port() < 1024 {
		t.Fatalf("kernel strategy gave %d", k.Port())
	}

	// Release is idempotent; the ports stay readable afterwards.
	p := web.Port()
	if err := web.Release(); err != nil {
		t.Fatal(err)
	}
	if err := web.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if web.Port() != p {
		t.Fatal("Port() changed after Release")
	}
	if _, err := reg.Lookup("web"); !errors.Is(err, portmgr.ErrNotFound) {
		t.Fatalf("Lookup after Release: %v", err)
	}
	if portmgr.Version() == "" {
		t.Fatal("empty Version()")
	}
}

func TestKeepAndReleaseByPortNameID(t *testing.T) {
	reg, _ := openTemp(t)
	a := mustAllocate(t, reg, portmgr.Request{Range: portmgr.Range{Start: 61032, End: 61032}})
	if err := a.Keep(); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(); err != nil { // nothing left to release through the handle
		t.Fatal(err)
	}
	if err := reg.ReleasePort(61032); err != nil {
		t.Fatalf("ReleasePort of a kept lease: %v", err)
	}
	b := mustAllocate(t, reg, portmgr.Request{Name: "db", Range: portmgr.Range{Start: 61032, End: 61032}})
	if err := reg.ReleaseName("db"); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(); err != nil {
		t.Fatalf("Release after ReleaseName: %v", err)
	}
	c := mustAllocate(t, reg, portmgr.Request{Range: portmgr.Range{Start: 61032, End: 61032}})
	if err := reg.ReleaseID(c.ID()); err != nil {
		t.Fatal(err)
	}
	s, err := reg.StatsJSON()
	if err != nil || !strings.Contains(s, `"held":0`) {
		t.Fatalf("StatsJSON after releasing everything: %v %s", err, s)
	}
}

// Every error kind the tests can provoke (ErrInternal is a bug: it has no trigger),
// each with its sentinel, code and the library's message.
func TestErrorKinds(t *testing.T) {
	reg, dir := openTemp(t)

	t.Run("InvalidArgument", func(t *testing.T) {
		e := wantErr(t, "reversed range", first(reg.Allocate(portmgr.Request{Range: portmgr.Range{Start: 61010, End: 61000}})), portmgr.ErrInvalidArgument)
		if e.Code != portmgr.CodeInvalidArgument || !strings.Contains(e.Message, "61010-61000") {
			t.Fatalf("message %q", e.Message)
		}
		wantErr(t, "port above 65535", first(reg.Allocate(portmgr.Request{Exclude: []int{70000}})), portmgr.ErrInvalidArgument)
		wantErr(t, "negative count", first(reg.Allocate(portmgr.Request{Count: -1})), portmgr.ErrInvalidArgument)
		wantErr(t, "TTL below the minimum", first(reg.Allocate(portmgr.Request{TTL: time.Millisecond})), portmgr.ErrInvalidArgument)
		wantErr(t, "NUL in a name", first(reg.Allocate(portmgr.Request{Name: "a\x00b"})), portmgr.ErrInvalidArgument)
		wantErr(t, "bad strategy", first(reg.Allocate(portmgr.Request{Strategy: 42})), portmgr.ErrInvalidArgument)
		wantErr(t, "UDP Listen", third(reg.Listen(portmgr.Request{Proto: portmgr.UDP})), portmgr.ErrInvalidArgument)
		closed, err := portmgr.Open(filepath.Join(t.TempDir(), "r"))
		if err != nil {
			t.Fatal(err)
		}
		closed.Close()
		closed.Close()
		wantErr(t, "closed registry", first(closed.Allocate(portmgr.Request{})), portmgr.ErrInvalidArgument)
	})

	t.Run("Exhausted", func(t *testing.T) {
		mustAllocate(t, reg, portmgr.Request{Range: portmgr.Range{Start: 61040, End: 61041}, Count: 2})
		e := wantErr(t, "full range", first(reg.Allocate(portmgr.Request{Range: portmgr.Range{Start: 61040, End: 61041}})), portmgr.ErrExhausted)
		if !strings.Contains(e.Message, "61040-61041") {
			t.Fatalf("message %q", e.Message)
		}
	})

	t.Run("InUse", func(t *testing.T) {
		held := mustAllocate(t, reg, portmgr.Request{Name: "taken", Range: portmgr.Range{Start: 61042, End: 61042}})
		wantErr(t, "required preferred port", first(reg.Allocate(portmgr.Request{Preferred: held.Port(), Required: true})), portmgr.ErrInUse)
		wantErr(t, "name", first(reg.Allocate(portmgr.Request{Name: "taken", Range: portmgr.Range{Start: 61043, End: 61043}})), portmgr.ErrInUse)
		// Not required: falls back to the strategy.
		other := mustAllocate(t, reg, portmgr.Request{Preferred: held.Port(), Range: portmgr.Range{Start: 61043, End: 61043}})
		if other.Port() != 61043 {
			t.Fatalf("fallback gave %d", other.Port())
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		l, err := reg.Allocate(portmgr.Request{Range: portmgr.Range{Start: 61044, End: 61044}})
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.ReleaseID(l.ID()); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "release by id twice", reg.ReleaseID(l.ID()), portmgr.ErrNotFound)
		wantErr(t, "release a free port", reg.ReleasePort(61044), portmgr.ErrNotFound)
		wantErr(t, "release an unknown name", reg.ReleaseName("nobody"), portmgr.ErrNotFound)
		if err := l.Release(); err != nil {
			t.Fatalf("Release of a lease released by id: %v", err)
		}
	})

	// ErrNotOwner needs another live process: TestExecChildInheritsNothing.

	t.Run("Timeout", func(t *testing.T) {
		// Hold the registry's lock from another open file description, as another
		// process would.
		f, err := os.Open(filepath.Join(dir, "registry.lock"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		if err := reg.SetLockTimeout(50 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		defer reg.SetLockTimeout(10 * time.Second)
		start := time.Now()
		wantErr(t, "registry lock held", first(reg.Allocate(portmgr.Request{Range: portmgr.Range{Start: 61045, End: 61045}})), portmgr.ErrTimeout)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("the timeout took %v", d)
		}
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		mustAllocate(t, reg, portmgr.Request{Range: portmgr.Range{Start: 61045, End: 61045}})
	})

	t.Run("InsecureDirectory", func(t *testing.T) {
		open := filepath.Join(t.TempDir(), "open")
		if err := os.Mkdir(open, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chmod(open, 0o777)
		e := wantErr(t, "world-writable directory", first(portmgr.Open(open)), portmgr.ErrInsecureDirectory)
		if !strings.Contains(e.Message, "chmod 700") {
			t.Fatalf("message without the fix: %q", e.Message)
		}
		link := filepath.Join(t.TempDir(), "link")
		os.Symlink(dir, link)
		wantErr(t, "symlink", first(portmgr.Open(link)), portmgr.ErrInsecureDirectory)
	})

	t.Run("OS", func(t *testing.T) {
		e := wantErr(t, "registry under a regular file", first(portmgr.Open("/etc/passwd/portmgr")), portmgr.ErrOS)
		if e.Errno != syscall.ENOTDIR || !errors.Is(e, syscall.ENOTDIR) {
			t.Fatalf("errno %v", e.Errno)
		}
		// An address that is not this host's: the probe's bind fails.
		e = wantErr(t, "foreign address", third(reg.Listen(portmgr.Request{Host: "192.0.2.1", Range: portmgr.Range{Start: 61046, End: 61046}})), portmgr.ErrOS)
		if !errors.Is(e, syscall.EADDRNOTAVAIL) {
			t.Fatalf("errno %v", e.Errno)
		}
	})

	t.Run("RegistryCorrupt", func(t *testing.T) {
		reg2, dir2 := openTemp(t)
		mustAllocate(t, reg2, portmgr.Request{Range: portmgr.Range{Start: 61047, End: 61047}})
		f, err := os.OpenFile(filepath.Join(dir2, "registry.db"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("this is not a portmgr registry header"), 0)
		f.Close()
		wantErr(t, "overwritten header, this process attached", first(portmgr.Open(dir2)), portmgr.ErrRegistryCorrupt)
		wantErr(t, "allocate on the overwritten file", first(reg2.Allocate(portmgr.Request{Range: portmgr.Range{Start: 61048, End: 61048}})), portmgr.ErrRegistryCorrupt)
	})
}

func first[T any](_ T, err error) error         { return err }
func third[A, B any](_ A, _ B, err error) error { return err }

// Errors from many goroutines at once carry their own call's message: the message is
// read on the thread that made the call.
func TestErrorMessagesUnderConcurrency(t *testing.T) {
	reg, _ := openTemp(t)
	mustAllocate(t, reg, portmgr.Request{Range: portmgr.Range{Start: 61049, End: 61049}})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if (g+i)%2 == 0 {
					_, err := reg.Allocate(portmgr.Request{Range: portmgr.Range{Start: 61049 - g, End: 61000}})
					var e *portmgr.Error
					if !errors.As(err, &e) || e.Code != portmgr.CodeInvalidArgument || !strings.Contains(e.Message, fmt.Sprintf("%d-61000", 61049-g)) {
						errs <- fmt.Errorf("goroutine %d: %v", g, err)
						return
					}
				} else {
					_, err := reg.Allocate(portmgr.Request{Range: portmgr.Range{Start: 61049, End: 61049}})
					var e *portmgr.Error
					if !errors.As(err, &e) || e.Code != portmgr.CodeExhausted || !strings.Contains(e.Message, "61049") {
						errs <- fmt.Errorf("goroutine %d: %v", g, err)
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Goroutines allocating from one registry never share a port.
func TestGoroutinesNoDuplicates(t *testing.T) {
	reg, _ := openTemp(t)
	var mu sync.Mutex
	seen := map[int]int{}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				l, err := reg.Allocate(portmgr.Request{Range: portmgr.Range{Start: 61000, End: 61039}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[l.Port()]++
				mu.Unlock()
				t.Cleanup(func() { l.Release() })
			}
		}()
	}
	wg.Wait()
	if len(seen) != 40 {
		t.Fatalf("40 allocations gave %d distinct ports: %v", len(seen), seen)
	}
}

func TestListenAcceptsOnLoopback(t *testing.T) {
	reg, _ := openTemp(t)
	ln, lease, err := reg.Listen(portmgr.Request{Name: "echo", Range: portmgr.Range{Start: 61000, End: 61009}})
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	defer ln.Close()
	if got := ln.Addr().(*net.TCPAddr).Port; got != lease.Port() {
		t.Fatalf("listener on %d, lease %d", got, lease.Port())
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", lease.Port()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	// The port is bound: nobody can bind it, and the registry will not hand it out.
	if l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lease.Port())); err == nil {
		l2.Close()
		t.Fatal("a second listener bound the held port")
	}
	wantErr(t, "preferred bound port", first(reg.Allocate(portmgr.Request{Preferred: lease.Port(), Required: true})), portmgr.ErrInUse)

	// Bound on an explicit address.
	ln4, l4, err := reg.Listen(portmgr.Request{Host: "127.0.0.1", Range: portmgr.Range{Start: 61000, End: 61009}})
	if err != nil {
		t.Fatal(err)
	}
	defer l4.Release()
	defer ln4.Close()
	if a := ln4.Addr().(*net.TCPAddr); !a.IP.Equal(net.IPv4(127, 0, 0, 1)) || a.Port != l4.Port() {
		t.Fatalf("listener address %v, lease %d", a, l4.Port())
	}
}

func TestFreePort(t *testing.T) {
	p, err := portmgr.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if p < 61050 || p > 61099 { // PORTMGR_RANGE of TestMain
		t.Fatalf("FreePort() = %d, outside PORTMGR_RANGE 61050-61099", p)
	}
	q, err := portmgr.FreePort()
	if err != nil || q == p {
		t.Fatalf("second FreePort() = %d, %v (first %d)", q, err, p)
	}
	reg, err := portmgr.Open("") // PORTMGR_DIR of TestMain
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	wantErr(t, "FreePort's port is held", first(reg.Allocate(portmgr.Request{Preferred: p, Required: true})), portmgr.ErrInUse)
	for _, port := range []int{p, q} {
		if err := portmgr.ReleasePort(port); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, "ReleasePort twice", portmgr.ReleasePort(p), portmgr.ErrNotFound)
	l := mustAllocate(t, reg, portmgr.Request{Preferred: p, Required: true})
	if l.Port() != p {
		t.Fatalf("released port %d not free again", p)
	}
}
