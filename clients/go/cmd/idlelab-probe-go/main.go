// Command idlelab-probe-go is the lab's probe for Go client libraries: it speaks the probe
// contract (scenarios/PROBE.md) with the field reports' own libraries and their own pools:
// database/sql + go-sql-driver/mysql, go-redis, gomemcache and net/http. The lab's logic
// (time scale, verdict, evidence) stays in Rust; this program only drives a library.
//
// Usage: idlelab-probe-go [--spec FILE]   (default: the spec on stdin)
//
//	idlelab-probe-go probe-grpc          (a gRPC balance run's channels: grpc_balance.go)
//	idlelab-probe-go serve-grpc …        (a gRPC replica in grpc-go: grpc_replica.go)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// library is one client library behind the contract.
type library interface {
	// setup builds the client with the spec's settings; returns them in the library's words.
	setup(p *probe) ([]string, error)
	// words names the pool in the evidence ("database/sql") and says how the library moves a
	// request to another connection ("database/sql retried the request on").
	words() (pool, moves string)
	// warm leaves `pool` distinct connections warmed in the library's pool.
	warm(ctx context.Context) error
	// reuse sends the reuse phase's requests, one per pooled connection, each through
	// p.send, in the library's own way of holding connections: every connection it hands
	// out stays busy until each request has one, so each pooled connection is taken once.
	// Returns how it held them (a note) and a function that gives them back.
	reuse(reqs []*request) (note string, release func())
	// fresh sends one command, tagged `tag`, through a brand-new client (the retry after a
	// failure).
	fresh(ctx context.Context, tag string) error
	close()
}

type probe struct {
	spec     spec
	start    time.Time
	lib      library
	mu       sync.Mutex
	conns    []*connLog
	carriers map[string][]*connLog // a request's tag → the sockets that carried it, in order
	gates    map[string]*gate      // a phase ("warm", "reuse") → its gate, for the libraries that need one
}

func (p *probe) now() uint64 { return uint64(time.Since(p.start).Milliseconds()) }

func (p *probe) snapshot() []*connLog {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*connLog(nil), p.conns...)
}

// carried notes that the socket `l` carried the request tagged `tag` (its bytes, or net/http's
// GotConn), and lets the request through its phase's gate, if any.
func (p *probe) carried(tag string, l *connLog) {
	phase, k, ok := parseTag(tag)
	if !ok || l == nil {
		return
	}
	p.mu.Lock()
	if list := p.carriers[tag]; len(list) == 0 || list[len(list)-1] != l {
		p.carriers[tag] = append(list, l)
	}
	g := p.gates[phase]
	p.mu.Unlock()
	if g != nil {
		l.mu.Lock()
		l.gate, l.gateUntil = g, time.Now().Add(p.spec.requestTimeout()/2)
		l.mu.Unlock()
		g.arrive(k)
	}
}

// arrived lets a request whose call returned through its gate (it may have failed before any
// socket carried it).
func (p *probe) arrived(tag string) {
	phase, k, ok := parseTag(tag)
	if !ok {
		return
	}
	p.mu.Lock()
	g := p.gates[phase]
	p.mu.Unlock()
	if g != nil {
		g.arrive(k)
	}
}

// armGate makes the next `n` requests of `phase` take distinct connections (see gate).
func (p *probe) armGate(phase string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gates[phase] = newGate(n)
}

func (p *probe) carriersOf(tag string) []*connLog {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*connLog(nil), p.carriers[tag]...)
}

func fail(format string, args ...any) {
	emit("error", fmt.Sprintf(format, args...))
	os.Exit(1)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-grpc" {
		if err := runReplica(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "idlelab-probe-go serve-grpc:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "probe-grpc" {
		if err := runGrpcBalance(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "idlelab-probe-go probe-grpc:", err)
			os.Exit(1)
		}
		return
	}
	specFile := flag.String("spec", "", "read the spec from this file instead of stdin")
	flag.Parse()
	var in io.Reader = os.Stdin
	if *specFile != "" {
		f, err := os.Open(*specFile)
		if err != nil {
			fail("%v", err)
		}
		defer f.Close()
		in = f
	}
	p := newProbe()
	dec := json.NewDecoder(in)
	if err := dec.Decode(&p.spec); err != nil {
		fail("reading the spec: %v", err)
	}
	lib, err := libraryFor(&p.spec)
	if err != nil {
		fail("%v", err)
	}
	obs, err := p.run(lib)
	if err != nil {
		fail("probe failed before the reuse phase: %v", err)
	}
	emit("observations", obs)
}

func newProbe() *probe {
	return &probe{start: time.Now(), carriers: map[string][]*connLog{}, gates: map[string]*gate{}}
}
