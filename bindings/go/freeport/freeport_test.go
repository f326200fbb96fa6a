package freeport_test

// Ports: the default pool of these tests is 61100-61199 (PORTMGR_RANGE), in a temp
// registry (PORTMGR_DIR), both set before any test runs; the portmgr package's tests
// use other ports of 61000-61999.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	portmgr "portmgr/bindings/go"
	"portmgr/bindings/go/freeport"
)

// *testing.T and *testing.B are TestingTs, as with consul's package.
var (
	_ freeport.TestingT = (*testing.T)(nil)
	_ freeport.TestingT = (*testing.B)(nil)
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portmgr-go-freeport-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("PORTMGR_DIR", filepath.Join(dir, "registry"))
	os.Setenv("PORTMGR_RANGE", "61100-61199")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// held says whether the registry holds port: a required preferred allocation of it,
// for TCP and UDP, fails with ErrInUse.
func held(t *testing.T, port int) bool {
	t.Helper()
	reg, err := portmgr.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	l, err := reg.Allocate(portmgr.Request{Preferred: port, Required: true, Proto: portmgr.Both})
	if err == nil {
		l.Release()
		return false
	}
	if !errors.Is(err, portmgr.ErrInUse) {
		t.Fatalf("probing port %d: %v", port, err)
	}
	return true
}

func TestTakeReturn(t *testing.T) {
	ports, err := freeport.Take(3)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < 61100 || p > 61199 || seen[p] {
			t.Fatalf("Take(3) = %v: outside 61100-61199 or repeated", ports)
		}
		seen[p] = true
		if !held(t, p) {
			t.Fatalf("port %d of Take is not held in the registry", p)
		}
	}
	// Return some: exactly those are freed.
	freeport.Return(ports[:1])
	if held(t, ports[0]) || !held(t, ports[1]) || !held(t, ports[2]) {
		t.Fatal("Return(ports[:1]) freed the wrong ports")
	}
	freeport.Return(ports)
	freeport.Return(ports)           // twice: ignored
	freeport.Return([]int{1, 61150}) // not taken here: ignored
	freeport.Return(nil)
	for _, p := range ports {
		if held(t, p) {
			t.Fatalf("port %d still held after Return", p)
		}
	}
	for _, n := range []int{0, -1} {
		if _, err := freeport.Take(n); err == nil {
			t.Fatalf("Take(%d) gave no error", n)
		}
	}
}

func TestGetNAndGetOneReturnAtCleanup(t *testing.T) {
	var got []int
	t.Run("test", func(t *testing.T) {
		got = append(freeport.GetN(t, 4), freeport.GetOne(t))
		for _, p := range got {
			if !held(t, p) {
				t.Fatalf("port %d not held during the test", p)
			}
		}
	})
	if len(got) != 5 {
		t.Fatalf("got %v", got)
	}
	for _, p := range got {
		if held(t, p) {
			t.Fatalf("port %d still held after the test's cleanup", p)
		}
	}
}

// A TestingT that records Fatalf instead of stopping.
type fakeT struct {
	failed   []string
	cleanups []func()
}

func (f *fakeT) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fakeT) Helper()           {}
func (f *fakeT) Fatalf(format string, args ...interface{}) {
	f.failed = append(f.failed, fmt.Sprintf(format, args...))
}
func (f *fakeT) Name() string            { return "fake" }
func (f *fakeT) FailNow()                { f.failed = append(f.failed, "FailNow") }
func (f *fakeT) Log(args ...interface{}) {}

// More ports than the pool has: GetN fails the test with the registry's reason, takes
// nothing (what it had taken is released), and GetOne does not panic.
func TestGetNFailsTheTest(t *testing.T) {
	ft := &fakeT{}
	if ports := freeport.GetN(ft, 101); ports != nil {
		t.Fatalf("GetN(101) from a 100-port pool = %v", ports)
	}
	if len(ft.failed) != 1 || !strings.Contains(ft.failed[0], "no free port") || len(ft.cleanups) != 0 {
		t.Fatalf("Fatalf calls %q, cleanups %d", ft.failed, len(ft.cleanups))
	}
	all, err := freeport.Take(100) // everything was given back
	if err != nil {
		t.Fatalf("the pool is not whole after a failed GetN: %v", err)
	}
	if p := freeport.GetOne(ft); p != 0 {
		t.Fatalf("GetOne from an empty pool = %d", p)
	}
	_, err = freeport.Take(1)
	if !errors.Is(err, portmgr.ErrExhausted) || !strings.HasPrefix(err.Error(), "freeport: ") {
		t.Fatalf("Take from an empty pool: %v", err)
	}
	freeport.Return(all)
}

func TestMustTakePanicsOnlyOnError(t *testing.T) {
	ports := freeport.MustTake(2)
	freeport.Return(ports)
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !errors.Is(err, portmgr.ErrExhausted) {
			t.Fatalf("MustTake(1000) panicked with %v, want an error matching ErrExhausted", r)
		}
	}()
	freeport.MustTake(1000)
}
