package portmgr_test

import (
	"net"
	"path/filepath"
	"sort"
	"testing"
	"time"

	portmgr "portmgr/bindings/go"
)

// The cost of a port: Allocate + Release (one TCP port from the pool, its bind probe
// included; PORTMGR_RANGE 61050-61099 of TestMain) against what Go code does without
// portmgr, net.Listen("tcp", "127.0.0.1:0") + Close. BenchmarkRatio runs both in one
// process, interleaved, and reports their ratio (target ≤ 2x); scripts and
// docs/benchmarks.md quote it.

func BenchmarkAllocateRelease(b *testing.B) {
	reg, err := portmgr.Open(filepath.Join(b.TempDir(), "reg"))
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := reg.Allocate(portmgr.Request{})
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListenZeroClose(b *testing.B) {
	for i := 0; i < b.N; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ln.Close()
	}
}

// BenchmarkRatio alternates rounds of 100 of each in one run, so machine noise falls on
// both, and reports the median per-call time of each round ("portmgr-ns/op",
// "listen0-ns/op") and their ratio ("ratio", portmgr / listen0).
func BenchmarkRatio(b *testing.B) {
	reg, err := portmgr.Open(filepath.Join(b.TempDir(), "reg"))
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	const round = 100
	var pm, k []float64
	for done := 0; done < b.N; done += round {
		t0 := time.Now()
		for i := 0; i < round; i++ {
			l, err := reg.Allocate(portmgr.Request{})
			if err != nil {
				b.Fatal(err)
			}
			l.Release()
		}
		t1 := time.Now()
		for i := 0; i < round; i++ {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ln.Close()
		}
		t2 := time.Now()
		pm = append(pm, float64(t1.Sub(t0))/round)
		k = append(k, float64(t2.Sub(t1))/round)
	}
	mp, mk := median(pm), median(k)
	b.ReportMetric(mp, "portmgr-ns/op")
	b.ReportMetric(mk, "listen0-ns/op")
	b.ReportMetric(mp/mk, "ratio")
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}
