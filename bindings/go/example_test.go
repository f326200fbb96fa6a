package portmgr_test

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	portmgr "portmgr/bindings/go"
)

// Allocate a port for a named service from the default registry, use it, release it.
func ExampleRegistry_Allocate() {
	reg, err := portmgr.Open("") // $PORTMGR_DIR, else $XDG_RUNTIME_DIR/portmgr, else /tmp/portmgr-<uid>
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()

	lease, err := reg.Allocate(portmgr.Request{Name: "web", Range: portmgr.Range{Start: 61000, End: 61009}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lease.Release()
	fmt.Println("web port in range:", lease.Port() >= 61000 && lease.Port() <= 61009)
	// Output: web port in range: true
}

// Three consecutive ports, free for TCP and UDP, the same ones run after run while free.
func ExampleRegistry_Allocate_block() {
	reg, err := portmgr.Open("")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	lease, err := reg.Allocate(portmgr.Request{Name: "cluster", Count: 3, Contiguous: true,
		Proto: portmgr.Both, Strategy: portmgr.Hash, Range: portmgr.Range{Start: 61000, End: 61049}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lease.Release()
	p := lease.Ports()
	fmt.Println(len(p), p[1] == p[0]+1, p[2] == p[0]+2)
	// Output: 3 true true
}

// The race-free hand-over: a listener already bound to a held port, served over HTTP.
func ExampleRegistry_Listen() {
	reg, err := portmgr.Open("")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	ln, lease, err := reg.Listen(portmgr.Request{Name: "api", Host: "127.0.0.1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lease.Release()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello")
	})}
	go srv.Serve(ln) // closes ln when the server is closed
	defer srv.Close()

	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", lease.Port()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status)
	// Output: 200 OK
}

// A port from the default registry and pool, held until ReleasePort or process exit.
func ExampleFreePort() {
	port, err := portmgr.FreePort()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer portmgr.ReleasePort(port)
	fmt.Println(port > 0)
	// Output: true
}

// Errors match one sentinel per kind; *Error has the code and the library's message.
func ExampleErrExhausted() {
	reg, err := portmgr.Open("")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	one := portmgr.Request{Range: portmgr.Range{Start: 61005, End: 61005}}
	lease, err := reg.Allocate(one)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lease.Release()

	_, err = reg.Allocate(one) // the only port of the range is held
	var e *portmgr.Error
	fmt.Println(errors.Is(err, portmgr.ErrExhausted), errors.As(err, &e) && e.Code == portmgr.CodeExhausted)
	// Output: true true
}
