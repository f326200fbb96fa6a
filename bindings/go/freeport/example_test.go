package freeport_test

import (
	"fmt"
	"net"
	"testing"

	"portmgr/bindings/go/freeport"
)

// Take ports, bind them, give them back.
func ExampleTake() {
	ports, err := freeport.Take(2)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer freeport.Return(ports)
	for _, p := range ports {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			fmt.Println(err)
			return
		}
		ln.Close()
	}
	fmt.Println(len(ports), ports[0] != ports[1])
	// Output: 2 true
}

// In a test: the ports are returned when the test ends.
func ExampleGetN() {
	testCluster := func(t *testing.T) {
		ports := freeport.GetN(t, 3) // e.g. HTTP, RPC and serf (TCP and UDP) of one agent
		_ = fmt.Sprintf("-http-port=%d -server-port=%d -serf-lan-port=%d", ports[0], ports[1], ports[2])
	}
	_ = testCluster
}
