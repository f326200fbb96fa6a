package portmgr_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	portmgr "portmgr/bindings/go"
)

// child starts this test binary in a role (see childRole); its stdin keeps it alive.
func child(t *testing.T, role string, env ...string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	return cmd, stdin, bufio.NewReader(stdout)
}

// A child process (fork/exec) inherits none of the parent's portmgr descriptors — no
// registry file, no listener — and none of its ports: it cannot release the parent's
// lease (ErrNotOwner: the parent's, and alive), and once the parent releases, the ports
// are free for everyone although the child still lives.
func TestExecChildInheritsNothing(t *testing.T) {
	reg, dir := openTemp(t)
	lease := mustAllocate(t, reg, portmgr.Request{Range: portmgr.Range{Start: 61000, End: 61009}})
	ln, bound, err := reg.Listen(portmgr.Request{Host: "127.0.0.1", Range: portmgr.Range{Start: 61010, End: 61019}})
	if err != nil {
		t.Fatal(err)
	}
	// The listener socket's inode, as /proc/*/fd shows it ("socket:[N]").
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Fstat(int(f.Fd()), &st)
	f.Close()
	sock := fmt.Sprintf("socket:[%d]", st.Ino)

	_, stdin, out := child(t, "fds", "PORTMGR_DIR="+dir, "PORTMGR_GO_TEST_PORT="+strconv.Itoa(lease.Port()))
	got := lines(t, out, "READY")
	nfds := 0
	for _, l := range got {
		if !strings.HasPrefix(l, "FD ") {
			continue
		}
		nfds++
		target := strings.SplitN(l, " ", 3)[2]
		if strings.HasPrefix(target, dir) || strings.Contains(target, "registry.") {
			t.Errorf("the child inherited a registry file: %s", l)
		}
		if target == sock || strings.HasPrefix(target, "socket:") {
			t.Errorf("the child inherited a socket (the listener is %s): %s", sock, l)
		}
	}
	if nfds < 3 {
		t.Fatalf("the child listed no descriptors: %q", got)
	}
	if !contains(got, fmt.Sprintf("RELEASE %d", portmgr.CodeNotOwner)) {
		t.Fatalf("the child releasing the parent's port: want code %d (not owner), got %q", portmgr.CodeNotOwner, got)
	}

	// The parent lets go while the child lives: both ports are free at once.
	ln.Close()
	for _, l := range []*portmgr.Lease{lease, bound} {
		if err := l.Release(); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "released lease, child alive", reg.ReleaseID(l.ID()), portmgr.ErrNotFound)
		again, err := reg.Allocate(portmgr.Request{Preferred: l.Port(), Required: true})
		if err != nil {
			t.Fatalf("port %d not free while the child lives: %v", l.Port(), err)
		}
		again.Release()
	}
	c, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", bound.Port()))
	if err != nil {
		t.Fatalf("the listener's port is still bound while the child lives: %v", err)
	}
	c.Close()
	stdin.Close()
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Three processes take 200 ports each from one registry at the same time, bind every
// one on 127.0.0.1 and hold them all: 600 distinct ports, 0 bind failures; when they
// exit, the registry holds nothing.
func TestParallelProcesses200PortsEach(t *testing.T) {
	const procs, each = 3, 200
	reg, dir := openTemp(t)
	type kid struct {
		stdin io.WriteCloser
		out   *bufio.Reader
		cmd   *exec.Cmd
	}
	var kids []kid
	for i := 0; i < procs; i++ {
		cmd, in, out := child(t, "hold", "PORTMGR_DIR="+dir, "PORTMGR_GO_TEST_COUNT="+strconv.Itoa(each),
			"PORTMGR_GO_TEST_RANGE=61200-61999")
		kids = append(kids, kid{in, out, cmd})
	}
	owner := map[int]int{}
	var dups, bindfails, errs []string
	for i, k := range kids {
		for _, l := range lines(t, k.out, "DONE") {
			f := strings.Fields(l)
			switch f[0] {
			case "PORT":
				p, _ := strconv.Atoi(f[1])
				if o, ok := owner[p]; ok {
					dups = append(dups, fmt.Sprintf("port %d: processes %d and %d", p, o, i))
				}
				owner[p] = i
			case "BINDFAIL":
				bindfails = append(bindfails, l)
			case "DONE":
			default:
				errs = append(errs, l)
			}
		}
	}
	t.Logf("%d processes x %d ports: %d distinct, %d duplicates, %d bind failures", procs, each, len(owner), len(dups), len(bindfails))
	if len(dups) > 0 || len(bindfails) > 0 || len(errs) > 0 {
		t.Fatalf("duplicates %v; bind failures %v; errors %v", dups, bindfails, errs)
	}
	if len(owner) != procs*each {
		t.Fatalf("%d ports held, want %d", len(owner), procs*each)
	}
	for _, k := range kids {
		k.stdin.Close()
		if err := k.cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
	}
	// The children are gone: their ports are free again (the next allocation, or gc,
	// reclaims them).
	all, err := reg.Allocate(portmgr.Request{Range: portmgr.Range{Start: 61200, End: 61999}, Count: procs * each})
	if err != nil {
		t.Fatalf("the children's ports are still held after they exited: %v", err)
	}
	all.Release()
}

// The many-test-binaries run: testdata/manybins is a module of 8 packages, each
// with 25 parallel tests that take 4 ports with freeport.GetN and bind every one. `go
// test -count=1 -p 8 ./...` runs the 8 test binaries at once, 5 times: 0 bind failures
// and 0 ports handed to two holders at once. The same tree with the bind(0)-then-close
// pattern shows what happens without the registry (reported, not asserted).
func TestManyTestBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the 6 runs of 8 test binaries")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	tree, err := filepath.Abs("testdata/manybins")
	if err != nil {
		t.Fatal(err)
	}
	regDir := filepath.Join(t.TempDir(), "reg")
	run := func(mode string, i int) (holds, dups int, fails []string) {
		out := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d.txt", mode, i))
		cmd := exec.Command(goBin, "test", "-count=1", "-p", "8", "-parallel", "25", "./...")
		cmd.Dir = tree
		cmd.Env = append(os.Environ(), "PORTMGR_DIR="+regDir, "PORTMGR_RANGE=61200-61999",
			"MANYBINS_MODE="+mode, "MANYBINS_OUT="+out)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		start := time.Now()
		runErr := cmd.Run()
		data, _ := os.ReadFile(out)
		type iv struct{ a, r int64 }
		byPort := map[int][]iv{}
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			f := strings.Fields(l)
			if len(f) == 0 {
				continue
			}
			switch f[0] {
			case "L":
				p, _ := strconv.Atoi(f[1])
				a, _ := strconv.ParseInt(f[2], 10, 64)
				r, _ := strconv.ParseInt(f[3], 10, 64)
				byPort[p] = append(byPort[p], iv{a, r})
				holds++
			case "BINDFAIL":
				fails = append(fails, l)
			}
		}
		// Two hold intervals of one port that overlap: handed out twice.
		for _, ivs := range byPort {
			sort.Slice(ivs, func(i, j int) bool { return ivs[i].a < ivs[j].a })
			var maxEnd int64
			for _, x := range ivs {
				if x.a < maxEnd {
					dups++
				}
				if x.r > maxEnd {
					maxEnd = x.r
				}
			}
		}
		t.Logf("%s run %d: %d ports held by 8 binaries x 25 tests in %v: %d handed out twice, %d bind failures",
			mode, i+1, holds, time.Since(start).Round(time.Millisecond), dups, len(fails))
		if mode == "portmgr" && runErr != nil {
			t.Fatalf("go test in %s (%s): %v\n%s", tree, mode, runErr, log.String())
		}
		return holds, dups, fails
	}
	for i := 0; i < 5; i++ {
		holds, dups, fails := run("portmgr", i)
		if holds != 8*25*4 || dups != 0 || len(fails) != 0 {
			t.Fatalf("portmgr run %d: %d holds (want 800), %d handed out twice, bind failures %v", i+1, holds, dups, fails)
		}
	}
	_, dups, fails := run("bind0", 0)
	t.Logf("bind(0)-then-close, same tree: %d ports handed out twice, %d bind failures (reported, not asserted)", dups, len(fails))
	fmt.Printf("manybins: portmgr 5 x 800 ports: 0 handed out twice, 0 bind failures; bind(0)-then-close: %d handed out twice, %d bind failures\n", dups, len(fails))
}
