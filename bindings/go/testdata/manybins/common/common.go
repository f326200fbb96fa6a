// Package common is the body of every test in the tree: take 4 ports, bind each on
// 127.0.0.1 a moment later (the server starting), hold them briefly, close, and append
// "L port taken_ns closed_ns pid" per port (CLOCK_MONOTONIC) and "BINDFAIL port err" to
// $MANYBINS_OUT. $MANYBINS_MODE: "portmgr" (freeport.GetN) or "bind0" (the common
// bind 127.0.0.1:0, read the port, close pattern).
package common

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"portmgr/bindings/go/freeport"
)

func mono() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

func bind0() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Run runs 25 parallel tests.
func Run(t *testing.T) {
	for i := 0; i < 25; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			one(t)
		})
	}
}

func one(t *testing.T) {
	var ports []int
	if os.Getenv("MANYBINS_MODE") == "bind0" {
		for i := 0; i < 4; i++ {
			ports = append(ports, bind0())
		}
	} else {
		ports = freeport.GetN(t, 4)
	}
	taken := mono()
	time.Sleep(2 * time.Millisecond) // the server starts a moment later
	var b strings.Builder
	var lns []net.Listener
	for _, p := range ports {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			fmt.Fprintf(&b, "BINDFAIL %d %v\n", p, err)
			continue
		}
		lns = append(lns, ln)
	}
	time.Sleep(10 * time.Millisecond)
	for _, ln := range lns {
		ln.Close()
	}
	closed := mono()
	for _, p := range ports {
		fmt.Fprintf(&b, "L %d %d %d %d\n", p, taken, closed, os.Getpid())
	}
	f, err := os.OpenFile(os.Getenv("MANYBINS_OUT"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil { // one write: O_APPEND keeps it whole
		t.Fatal(err)
	}
}
