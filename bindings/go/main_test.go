package portmgr_test

// Ports: the tests of this package use exact ports 61000-61049, the default pool
// 61050-61099 (PORTMGR_RANGE, set below: FreePort, Open(""), the examples, the
// benchmark) and 61200-61999 for the multi-process runs (one test at a time). The
// freeport package uses 61100-61199. All of it lies above the kernel's ephemeral range
// (32768-60999) and nothing else in the repository uses it. Registries: temp
// directories only (PORTMGR_DIR is set before any test runs).

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	portmgr "portmgr/bindings/go"
)

const roleEnv = "PORTMGR_GO_TEST_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(childRole(role))
	}
	dir, err := os.MkdirTemp("", "portmgr-go-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("PORTMGR_DIR", filepath.Join(dir, "registry"))
	os.Setenv("PORTMGR_RANGE", "61050-61099")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// childRole is this test binary re-executed as a child process.
//
//	fds:  print every open descriptor ("FD n target"), then try to release the parent's
//	      port PORTMGR_GO_TEST_PORT ("RELEASE <code>"), then "READY"; exit when stdin closes.
//	hold: allocate PORTMGR_GO_TEST_COUNT ports from PORTMGR_GO_TEST_RANGE one at a time,
//	      bind each on 127.0.0.1 (TCP), print "PORT p" (or "BINDFAIL p err"), then "DONE";
//	      hold everything until stdin closes.
func childRole(role string) int {
	switch role {
	case "fds":
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		for _, e := range ents {
			target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
			fmt.Println("FD", e.Name(), target)
		}
		reg, err := portmgr.Open(os.Getenv("PORTMGR_DIR"))
		if err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		port, _ := strconv.Atoi(os.Getenv("PORTMGR_GO_TEST_PORT"))
		code := 0
		if err := reg.ReleasePort(port); err != nil {
			code = int(err.(*portmgr.Error).Code)
		}
		fmt.Println("RELEASE", code)
	case "hold":
		reg, err := portmgr.Open(os.Getenv("PORTMGR_DIR"))
		if err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		n, _ := strconv.Atoi(os.Getenv("PORTMGR_GO_TEST_COUNT"))
		var rg portmgr.Range
		fmt.Sscanf(os.Getenv("PORTMGR_GO_TEST_RANGE"), "%d-%d", &rg.Start, &rg.End)
		var held []net.Listener
		out := bufio.NewWriter(os.Stdout)
		for i := 0; i < n; i++ {
			l, err := reg.Allocate(portmgr.Request{Range: rg})
			if err != nil {
				fmt.Fprintln(out, "ERR", err)
				continue
			}
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", l.Port()))
			if err != nil {
				fmt.Fprintln(out, "BINDFAIL", l.Port(), err)
				continue
			}
			held = append(held, ln)
			fmt.Fprintln(out, "PORT", l.Port())
		}
		fmt.Fprintln(out, "DONE")
		out.Flush()
		defer func() {
			for _, ln := range held {
				ln.Close()
			}
		}()
	default:
		fmt.Println("ERR unknown role", role)
		return 2
	}
	fmt.Println("READY")
	// Live until the parent closes our stdin.
	bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// lines reads a child's stdout up to (and including) the line starting with last.
func lines(t *testing.T, r *bufio.Reader, last string) []string {
	t.Helper()
	var out []string
	for {
		s, err := r.ReadString('\n')
		s = strings.TrimRight(s, "\n")
		if s != "" {
			out = append(out, s)
		}
		if strings.HasPrefix(s, last) {
			return out
		}
		if err != nil {
			t.Fatalf("child ended before %q: %v; output: %q", last, err, out)
		}
	}
}
