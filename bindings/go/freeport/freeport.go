// Package freeport hands out free ports to tests with the functions of consul's
// sdk/freeport (Take, MustTake, Return, GetN, GetOne), backed by the host-wide portmgr
// registry: switching is a change of import path,
//
//	import "github.com/hashicorp/consul/sdk/freeport"  // before
//	import "portmgr/bindings/go/freeport"               // after
//
// Unlike consul's package there is no fixed block of ports per process and no limit on
// the number of test binaries: every port comes from the one registry that every test
// binary (and every Rust, C, Python or shell user) on the host shares, so `go test ./...`
// running many packages at once never hands one port to two of them. A port is free for
// TCP and UDP (servers such as consul's serf listen on both), comes from the default
// pool outside the kernel's ephemeral range (PORTMGR_RANGE=A-B overrides), and is held
// until Return, the end of the test (GetN, GetOne) or the process's exit, whichever comes
// first: a test binary that crashes or is killed frees its ports at once.
//
// The registry is the default one ($PORTMGR_DIR, else $XDG_RUNTIME_DIR/portmgr, else
// /tmp/portmgr-<uid>). Nothing here panics except MustTake (and the deprecated Get,
// GetT and Free, which call it, as in consul's package).
package freeport

import (
	"fmt"
	"sync"

	portmgr "portmgr/bindings/go"
)

// TestingT is the part of *testing.T that GetN and GetOne use; *testing.T and
// *testing.B implement it. The method set is consul's sdk/freeport TestingT, so helpers
// written against either package accept the same values.
type TestingT interface {
	Cleanup(func())
	Helper()
	Fatalf(format string, args ...interface{})
	Name() string
	FailNow()
	Log(args ...interface{})
}

var (
	mu    sync.Mutex
	reg   *portmgr.Registry
	taken = map[int]*portmgr.Lease{} // the ports this process took and has not returned
)

func registry() (*portmgr.Registry, error) {
	if reg == nil {
		r, err := portmgr.Open("")
		if err != nil {
			return nil, err
		}
		reg = r
	}
	return reg, nil
}

// Take returns n free ports, each free for TCP and UDP on every address, held in the
// registry (so nobody else on the host is handed them) until Return or the process's
// exit. It is safe to call concurrently. The registry records the ports but holds no
// socket: bind them soon. Errors wrap portmgr's (errors.Is(err, portmgr.ErrExhausted)).
func Take(n int) (ports []int, err error) {
	if n <= 0 {
		return nil, fmt.Errorf("freeport: cannot take %d ports", n)
	}
	mu.Lock()
	defer mu.Unlock()
	r, err := registry()
	if err != nil {
		return nil, fmt.Errorf("freeport: %w", err)
	}
	// One lease per port, so that Return of some of them frees exactly those.
	leases := make([]*portmgr.Lease, 0, n)
	for len(leases) < n {
		l, err := r.Allocate(portmgr.Request{Proto: portmgr.Both})
		if err != nil {
			for _, l := range leases {
				l.Release()
			}
			return nil, fmt.Errorf("freeport: taking %d ports: %w", n, err)
		}
		leases = append(leases, l)
	}
	ports = make([]int, n)
	for i, l := range leases {
		ports[i] = l.Port()
		taken[l.Port()] = l
	}
	return ports, nil
}

// MustTake is Take, but panics on an error.
func MustTake(n int) (ports []int) {
	ports, err := Take(n)
	if err != nil {
		panic(err)
	}
	return ports
}

// Return releases ports taken by Take (or MustTake) now. Ports this process did not
// take, or has already returned, are ignored.
func Return(ports []int) {
	if len(ports) == 0 {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range ports {
		if l, ok := taken[p]; ok {
			delete(taken, p)
			l.Release()
		}
	}
}

// GetN returns n free ports, as Take, and returns them to the registry when the test
// ends (t.Cleanup). It fails the test (t.Fatalf) when it cannot take them.
func GetN(t TestingT, n int) []int {
	t.Helper()
	ports, err := Take(n)
	if err != nil {
		t.Fatalf("failed to take %v ports: %v", n, err)
		return nil
	}
	t.Cleanup(func() { Return(ports) })
	return ports
}

// GetOne returns one free port, as GetN(t, 1) (0 when GetN failed and t.Fatalf did not
// stop the caller, as a fake TestingT may).
func GetOne(t TestingT) int {
	t.Helper()
	ports := GetN(t, 1)
	if len(ports) == 0 {
		return 0
	}
	return ports[0]
}

// Get is MustTake, kept for code written against consul's older API.
//
// Deprecated: use Take and Return, or GetN.
func Get(n int) (ports []int) { return MustTake(n) }

// GetT is MustTake, kept for code written against consul's older API.
//
// Deprecated: use GetN, which also returns the ports at the end of the test.
func GetT(t TestingT, n int) (ports []int) { return MustTake(n) }

// Free is MustTake, kept for code written against consul's older API.
//
// Deprecated: use Take and Return.
func Free(n int) (ports []int, err error) { return MustTake(n), nil }
