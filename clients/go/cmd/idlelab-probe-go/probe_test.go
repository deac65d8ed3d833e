package main

// The probe end to end against small local servers: gomemcache against a fake memcached,
// net/http against httptest. What the lab cannot run without its namespaces stays in the
// harness's tests (harness/tests/go_probe_physics.rs).

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMemcached answers `set` with STORED and `get`/`gets` with END (a miss); closeAll closes
// every connection it accepted (a FIN to each client).
func fakeMemcached(t *testing.T) (addr string, closeAll func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				rd := bufio.NewReader(c)
				for {
					line, err := rd.ReadString('\n')
					if err != nil {
						return
					}
					switch {
					case strings.HasPrefix(line, "set "):
						if _, err := rd.ReadString('\n'); err != nil {
							return
						}
						_, _ = io.WriteString(c, "STORED\r\n")
					case strings.HasPrefix(line, "get"):
						_, _ = io.WriteString(c, "END\r\n")
					default:
						_, _ = io.WriteString(c, "ERROR\r\n")
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
}

// idleHook is the probe's stdout in a test: it runs `during` a third into the idle phase.
type idleHook struct {
	idleMs uint64
	during func()
	once   sync.Once
}

func (h *idleHook) Write(b []byte) (int, error) {
	if h.during != nil && strings.Contains(string(b), `"name":"idle"`) {
		h.once.Do(func() {
			go func() {
				time.Sleep(time.Duration(h.idleMs/3) * time.Millisecond)
				h.during()
			}()
		})
	}
	return len(b), nil
}

func runProbe(t *testing.T, s spec, during func()) *observations {
	t.Helper()
	stdout = &idleHook{idleMs: s.IdleMs, during: during}
	t.Cleanup(func() { stdout = os.Stdout })
	p := newProbe()
	p.spec = s
	lib, err := libraryFor(&p.spec)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := p.run(lib)
	if err != nil {
		t.Fatal(err)
	}
	return obs
}

// Every row id once; each row's request carried by a socket of its own.
func checkRows(t *testing.T, obs *observations) {
	t.Helper()
	if len(obs.Connections) != obs.Pool {
		t.Fatalf("%d rows for pool %d", len(obs.Connections), obs.Pool)
	}
	ids := map[int]bool{}
	addrs := map[string]int{}
	for _, c := range obs.Connections {
		if ids[c.ID] || c.ID < 0 || c.ID >= obs.Pool {
			t.Errorf("row id %d twice or out of range: %+v", c.ID, obs.Connections)
		}
		ids[c.ID] = true
		if c.Reuse.LocalAddr == "" {
			t.Errorf("row %d: no local_addr on its reuse: %+v", c.ID, c.Reuse)
		}
		if j, dup := addrs[c.Reuse.LocalAddr]; dup {
			t.Errorf("rows %d and %d reused one socket %s", j, c.ID, c.Reuse.LocalAddr)
		}
		addrs[c.Reuse.LocalAddr] = c.ID
		if c.ReplacedBeforeUse == nil && c.Reuse.LocalAddr != c.LocalAddr {
			t.Errorf("row %d: not replaced, yet its request went on %s, not its own %s", c.ID, c.Reuse.LocalAddr, c.LocalAddr)
		}
		if c.ReplacedBeforeUse != nil && c.Reuse.LocalAddr == c.LocalAddr {
			t.Errorf("row %d: replaced, yet its request went on its own socket", c.ID)
		}
	}
}

func TestGomemcacheReusesEachPooledConnectionOnce(t *testing.T) {
	addr, _ := fakeMemcached(t)
	obs := runProbe(t, spec{Service: "memcached", Library: "gomemcache", Target: addr, Pool: 5, IdleMs: 200, RequestTimeoutMs: 2000}, nil)
	checkRows(t, obs)
	for _, c := range obs.Connections {
		if c.Reuse.Outcome != "ok" || c.ReplacedBeforeUse != nil {
			t.Errorf("row %d: %+v", c.ID, c)
		}
	}
}

func TestGomemcacheEOFIsTheCarryingSocketsEOF(t *testing.T) {
	addr, closeAll := fakeMemcached(t)
	obs := runProbe(t, spec{Service: "memcached", Library: "gomemcache", Target: addr, Pool: 3, IdleMs: 600, RequestTimeoutMs: 2000}, closeAll)
	checkRows(t, obs)
	for _, c := range obs.Connections {
		if c.PeerClosedMs == nil || c.Reuse.Outcome != "eof" || c.Reuse.Error != "EOF" {
			t.Errorf("row %d: the FIN while idle, then EOF on its own socket: %+v", c.ID, c)
		}
		if c.RetryAfterReconnect == nil || c.RetryAfterReconnect.Outcome != "ok" || c.RetryAfterReconnect.LocalAddr == c.LocalAddr {
			t.Errorf("row %d: the retry on a fresh connection: %+v", c.ID, c.RetryAfterReconnect)
		}
	}
}

func httpServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/warm" {
			time.Sleep(50 * time.Millisecond)
			_, _ = io.WriteString(w, "warm\n")
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestNetHTTPReusesEachPooledConnectionOnce(t *testing.T) {
	srv := httpServer(t)
	hour := uint64(3600_000)
	obs := runProbe(t, spec{Service: "http", Library: "go-net-http", Target: srv.Listener.Addr().String(), Pool: 3, IdleMs: 200,
		RequestTimeoutMs: 2000, PoolMaxIdleMs: &hour}, nil)
	checkRows(t, obs)
	for _, c := range obs.Connections {
		if c.Reuse.Outcome != "ok" || c.ReplacedBeforeUse != nil {
			t.Errorf("row %d: %+v", c.ID, c)
		}
	}
}

func TestNetHTTPReplacementsSayWhatWasSeen(t *testing.T) {
	srv := httpServer(t)
	hour := uint64(3600_000)
	obs := runProbe(t, spec{Service: "http", Library: "go-net-http", Target: srv.Listener.Addr().String(), Pool: 3, IdleMs: 600,
		RequestTimeoutMs: 2000, PoolMaxIdleMs: &hour}, srv.CloseClientConnections)
	checkRows(t, obs)
	for _, c := range obs.Connections {
		why := ""
		if c.ReplacedBeforeUse != nil {
			why = *c.ReplacedBeforeUse
		}
		if c.Reuse.Outcome != "ok" || c.PeerClosedMs == nil || !strings.Contains(why, "FIN") || strings.Contains(why, "configuration") {
			t.Errorf("row %d: closed by the server while idle, replaced: %+v (%s)", c.ID, c, why)
		}
	}
	// The Transport's own idle limit closes healthy sockets: that is configuration.
	short := uint64(100)
	obs = runProbe(t, spec{Service: "http", Library: "go-net-http", Target: srv.Listener.Addr().String(), Pool: 3, IdleMs: 600,
		RequestTimeoutMs: 2000, PoolMaxIdleMs: &short}, nil)
	checkRows(t, obs)
	for _, c := range obs.Connections {
		if c.ReplacedBeforeUse == nil || !strings.Contains(*c.ReplacedBeforeUse, "configuration") || c.PeerClosedMs != nil {
			t.Errorf("row %d: IdleConnTimeout closed it: %+v", c.ID, c)
		}
	}
}
