// Command portmgr-worker is the Go client of the reliability suite's mixed-process
// concurrency run (tests/reliability/concurrency.rs, beside its Rust, C and Python
// clients, with the same protocol): 4 goroutines allocate from START..START+LEN-1 for
// SECONDS, bind each port as a Go server would (net.Listen on ":port", or take it bound
// from Registry.Listen), hold it briefly, close, release. It prints
//
//	L port alloc_ns release_ns pid     one per held port (CLOCK_MONOTONIC)
//	BINDFAIL port err                  a port it was handed and could not bind
//	ERR message                        an unexpected error
//	SUM allocated released exhausted errors
//
// Usage: portmgr-worker REGISTRY_DIR START LEN SECONDS SEED
package main

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	portmgr "portmgr/bindings/go"
)

func monoNS() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintf(os.Stderr, "usage: %s DIR START LEN SECONDS SEED\n", os.Args[0])
		os.Exit(2)
	}
	arg := func(i int) int {
		v, err := strconv.Atoi(os.Args[i])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return v
	}
	start, length, secs, seed := arg(2), arg(3), arg(4), arg(5)
	reg, err := portmgr.Open(os.Args[1])
	if err != nil {
		fmt.Printf("ERR open %v\nSUM 0 0 0 1\n", err)
		os.Exit(1)
	}
	defer reg.Close()
	rg := portmgr.Range{Start: start, End: start + length - 1}
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	pid := os.Getpid()
	var (
		mu    sync.Mutex
		total [4]int
		out   strings.Builder
		wg    sync.WaitGroup
	)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(seed)*131 + int64(g) + 1))
			var mine [4]int
			var log strings.Builder
			for time.Now().Before(deadline) {
				req := portmgr.Request{Range: rg}
				switch rng.Intn(6) {
				case 0:
					req.Count = 2
				case 1:
					req.Strategy = portmgr.Sequential
				case 2:
					req.Proto = portmgr.Both
				case 3:
					req.Name = fmt.Sprintf("go%d-%d-%d", pid, g, rng.Intn(1000))
				}
				var lease *portmgr.Lease
				var socks []net.Listener
				var err error
				if req.Count == 0 && req.Proto == 0 && rng.Intn(5) == 0 {
					var ln net.Listener
					ln, lease, err = reg.Listen(req)
					if err == nil {
						socks = append(socks, ln)
					}
				} else {
					lease, err = reg.Allocate(req)
				}
				if errors.Is(err, portmgr.ErrExhausted) {
					mine[2]++
					time.Sleep(200 * time.Microsecond)
					continue
				}
				if err != nil {
					mine[3]++
					mu.Lock()
					fmt.Printf("ERR %v (Go client)\n", err)
					mu.Unlock()
					continue
				}
				a := monoNS()
				ports := lease.Ports()
				mine[0] += len(ports)
				if socks == nil {
					for _, p := range ports {
						ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
						if err != nil {
							mu.Lock()
							fmt.Printf("BINDFAIL %d %v (Go client)\n", p, err)
							mu.Unlock()
							continue
						}
						socks = append(socks, ln)
					}
				}
				time.Sleep(time.Duration(rng.Intn(1500)) * time.Microsecond)
				for _, s := range socks {
					s.Close()
				}
				r := monoNS()
				for _, p := range ports {
					fmt.Fprintf(&log, "L %d %d %d %d\n", p, a, r, pid)
				}
				if err := lease.Release(); err != nil {
					mine[3]++
					mu.Lock()
					fmt.Printf("ERR release %v (Go client)\n", err)
					mu.Unlock()
					continue
				}
				mine[1] += len(ports)
			}
			mu.Lock()
			out.WriteString(log.String())
			for i := range total {
				total[i] += mine[i]
			}
			mu.Unlock()
		}(g)
	}
	wg.Wait()
	fmt.Print(out.String())
	fmt.Printf("SUM %d %d %d %d\n", total[0], total[1], total[2], total[3])
}
