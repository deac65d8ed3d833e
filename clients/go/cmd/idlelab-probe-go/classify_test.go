package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// samples builds a change-only TCP_INFO history: each step is (from, to, state, probes).
func samples(steps ...[4]uint64) []tcpSample {
	var h []tcpSample
	for _, s := range steps {
		h = append(h, tcpSample{from: s[0], to: s[1], state: uint8(s[2]), probes: uint8(s[3])})
	}
	return h
}

func TestClassifyClosedFollowsTheKernel(t *testing.T) {
	ka := &keepaliveSecs{TimeS: 4, IntervalS: 2, Probes: 3}
	cases := []struct {
		name string
		hist []tcpSample
		ka   *keepaliveSecs
		ut   *uint64
		want closeKind
	}{
		{"keepalive off: only an RST closes an idle socket",
			samples([4]uint64{0, 5000, tcpEstablished, 0}, [4]uint64{5025, 5025, tcpClose, 0}), nil, nil, closedReset},
		{"no probe outstanding",
			samples([4]uint64{0, 5000, tcpEstablished, 0}, [4]uint64{5025, 5025, tcpClose, 0}), ka, nil, closedReset},
		{"fewer unanswered probes than the count",
			samples([4]uint64{0, 4000, tcpEstablished, 0}, [4]uint64{4025, 6000, tcpEstablished, 1}, [4]uint64{6025, 6025, tcpClose, 2}), ka, nil, closedReset},
		{"all probes unanswered, closed one interval after the last: ETIMEDOUT",
			samples([4]uint64{0, 4000, tcpEstablished, 0}, [4]uint64{4025, 6000, tcpEstablished, 1},
				[4]uint64{6025, 8000, tcpEstablished, 2}, [4]uint64{8025, 10000, tcpEstablished, 3}, [4]uint64{10025, 10025, tcpClose, 3}), ka, nil, closedTimeout},
		{"an RST answering the last probe: closed right after it left",
			samples([4]uint64{0, 4000, tcpEstablished, 0}, [4]uint64{4025, 6000, tcpEstablished, 1},
				[4]uint64{6025, 8000, tcpEstablished, 2}, [4]uint64{8025, 8025, tcpClose, 3}), ka, nil, closedReset},
		{"the last probe's departure and the close are too far apart to tell",
			samples([4]uint64{0, 4000, tcpEstablished, 0}, [4]uint64{4025, 6000, tcpEstablished, 1},
				[4]uint64{6025, 8000, tcpEstablished, 2}, [4]uint64{8025, 8500, tcpEstablished, 3}, [4]uint64{12000, 12000, tcpClose, 3}), ka, nil, closedUnknown},
		{"the watch never saw it open",
			samples([4]uint64{5025, 5025, tcpClose, 3}), ka, nil, closedUnknown},
		{"TCP_USER_TIMEOUT: one unanswered probe, closed at the next check",
			samples([4]uint64{0, 4000, tcpEstablished, 0}, [4]uint64{4025, 6000, tcpEstablished, 1}, [4]uint64{6025, 6025, tcpClose, 1}), ka, ptr(uint64(1500)), closedTimeout},
	}
	for _, c := range cases {
		got, why := classifyClosed(c.hist, c.ka, c.ut)
		if got != c.want {
			t.Errorf("%s: got %v (%s), want %v", c.name, got, why, c.want)
		}
		if why == "" {
			t.Errorf("%s: no reason given", c.name)
		}
	}
	// Data in flight: a retransmission timeout is possible, nothing is claimed.
	h := samples([4]uint64{0, 5000, tcpEstablished, 0}, [4]uint64{5025, 5025, tcpClose, 0})
	h[0].unacked = 1
	if got, why := classifyClosed(h, ka, nil); got != closedUnknown || !strings.Contains(why, "in flight") {
		t.Errorf("data in flight: %v %s", got, why)
	}
}

func ptr[T any](v T) *T { return &v }

func TestTheDeadlineAloneMakesATimeout(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	if got := outcomeFor(errors.New("invalid connection"), true, nil); got != "timeout" {
		t.Errorf("the driver's own error after the request deadline: %s", got)
	}
	if got := outcomeFor(nil, true, nil); got != "timeout" {
		t.Errorf("an answer after the deadline: %s", got)
	}
	if got := outcomeFor(os.ErrDeadlineExceeded, false, nil); got != "error" {
		t.Errorf("a library timer that fired before the request deadline is not the request's timeout: %s", got)
	}
	if got := outcomeFor(errors.New("invalid connection"), false, []sockEvent{{outcome: "reset", text: reset.Error()}}); got != "reset" {
		t.Errorf("the carrying socket's ECONNRESET decides: %s", got)
	}
	if got := outcomeFor(io.EOF, false, []sockEvent{{eof: true, text: "EOF"}}); got != "eof" {
		t.Errorf("EOF on the carrying socket: %s", got)
	}
	if got := outcomeFor(errors.New("invalid connection"), false, []sockEvent{{eof: true, text: "EOF"}}); got != "eof" {
		t.Errorf("the library's words over an EOF: %s", got)
	}
	// What the socket saw first decides: an EOF, then an RST answering the request's bytes, is
	// `eof` (the library read the EOF); an RST, then EOF on the next read, is `reset`.
	if got := outcomeFor(io.EOF, false, []sockEvent{{eof: true, text: "EOF"}, {outcome: "reset", text: reset.Error()}}); got != "eof" {
		t.Errorf("EOF first: %s", got)
	}
	if got := outcomeFor(errors.New("redis: Conn is in a bad state: EOF"), false, []sockEvent{{outcome: "reset", text: reset.Error()}, {eof: true, text: "EOF"}}); got != "reset" {
		t.Errorf("ECONNRESET first: %s", got)
	}
	if got := outcomeFor(io.EOF, false, nil); got != "eof" {
		t.Errorf("EOF with no socket event: %s", got)
	}
}

// The probe's deadline ends the wait, whatever the library does; only it makes `timeout`.
func TestDoEndsTheWaitAtTheRequestDeadline(t *testing.T) {
	p := newProbe()
	p.spec = spec{RequestTimeoutMs: 200, Library: "go-redis"}
	p.lib = &goRedis{}
	// A library that ignores the context and waits for its own, later timer (go-redis).
	r := newRequest("reuse", 0)
	p.do(r, func(context.Context) error { time.Sleep(600 * time.Millisecond); return os.ErrDeadlineExceeded })
	if !r.timedOut || r.latency < 200 || r.latency >= 600 {
		t.Fatalf("timed out %v after %d ms", r.timedOut, r.latency)
	}
	if got := attemptOf(r, nil); got.Outcome != "timeout" || !strings.Contains(got.Error, "still waiting") {
		t.Errorf("%+v", got)
	}
	// A library that watches the context and words it its own way (go-sql-driver racing).
	r = newRequest("reuse", 1)
	p.do(r, func(ctx context.Context) error { <-ctx.Done(); return errors.New("invalid connection") })
	if got := attemptOf(r, nil); got.Outcome != "timeout" || got.Error != "invalid connection" {
		t.Errorf("%+v", got)
	}
	// An error before the deadline is the library's.
	r = newRequest("reuse", 2)
	p.do(r, func(context.Context) error { return errors.New("invalid connection") })
	if got := attemptOf(r, nil); got.Outcome != "error" {
		t.Errorf("%+v", got)
	}
}

func TestLibraryTimersOutlastTheRequestDeadline(t *testing.T) {
	for _, rt := range []uint64{300, 2000, 7000} {
		s := spec{Service: "redis", Target: "127.0.0.1:1", Pool: 2, RequestTimeoutMs: rt}
		want := time.Duration(rt)*time.Millisecond + time.Second/2
		p := newProbe()
		p.spec = s
		r := &goRedis{}
		if _, err := r.setup(p); err != nil {
			t.Fatal(err)
		}
		for name, d := range map[string]time.Duration{"ReadTimeout": r.opt.ReadTimeout, "WriteTimeout": r.opt.WriteTimeout, "DialTimeout": r.opt.DialTimeout} {
			if d < want {
				t.Errorf("go-redis %s %v with request timeout %d ms", name, d, rt)
			}
		}
		q := &goSQL{}
		if _, err := q.setup(p); err != nil {
			t.Fatal(err)
		}
		if q.cfg.ReadTimeout < want || q.cfg.WriteTimeout < want || q.cfg.Timeout < want {
			t.Errorf("go-sql-driver %v/%v/%v with request timeout %d ms", q.cfg.ReadTimeout, q.cfg.WriteTimeout, q.cfg.Timeout, rt)
		}
		m := &goMemcache{}
		if _, err := m.setup(p); err != nil {
			t.Fatal(err)
		}
		if m.c.Timeout < want {
			t.Errorf("gomemcache Timeout %v with request timeout %d ms", m.c.Timeout, rt)
		}
		h := &goHTTP{}
		if _, err := h.setup(p); err != nil {
			t.Fatal(err)
		}
		if h.client.Timeout != 0 && h.client.Timeout < want {
			t.Errorf("net/http Client.Timeout %v with request timeout %d ms", h.client.Timeout, rt)
		}
	}
}

func TestAssignRowsTakesEachWarmedConnectionOnce(t *testing.T) {
	check := func(name string, n int, reqs []reqCarriers, order []int, want []int) {
		t.Helper()
		got := assignRows(n, reqs, order)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: rows → requests %v, want %v", name, got, want)
		}
		seen := map[int]bool{}
		for _, k := range got {
			if k < 0 || seen[k] {
				t.Errorf("%s: a request twice or none: %v", name, got)
			}
			seen[k] = true
		}
	}
	// Each request on its own warmed connection, in the pool's order (LIFO).
	check("own", 3, []reqCarriers{{carriers: []int{2}}, {carriers: []int{1}}, {carriers: []int{0}}}, nil, []int{2, 1, 0})
}

func TestAssignRowsPairsReplacementsWithWhatWasMeasured(t *testing.T) {
	got := assignRows(4, []reqCarriers{
		{carriers: []int{-1}, discarded: []int{3, 2}},
		{carriers: []int{-1}, discarded: []int{1, 0}},
		{carriers: []int{-1}},
		{carriers: []int{-1}},
	}, []int{3, 2, 1, 0})
	// row → request: rows 3 and 1 were the first each request rejected; rows 2 and 0 go to
	// the requests that rejected nothing, in the order the library closed them.
	if fmt.Sprint(got) != "[3 1 2 0]" {
		t.Errorf("%v", got)
	}
	// net/http: request 0 tried 3 (reset), retried on 2, which answered; request 3 dialed.
	got = assignRows(4, []reqCarriers{
		{carriers: []int{3, 2}},
		{carriers: []int{1}},
		{carriers: []int{0}},
		{carriers: []int{-1}},
	}, []int{3})
	if fmt.Sprint(got) != "[2 1 0 3]" {
		t.Errorf("retry: %v", got)
	}
	// A request that reached no socket still stands for one warmed connection.
	got = assignRows(2, []reqCarriers{{}, {carriers: []int{0}}}, nil)
	if fmt.Sprint(got) != "[1 0]" {
		t.Errorf("none: %v", got)
	}
}

func TestDescribeReplacedSaysWhatWasMeasured(t *testing.T) {
	base := replacedFacts{lib: "go-redis", retryWords: "go-redis checked out", standsFor: 1,
		wentTo: "a new one (198.18.0.1:4000)", triedReq: -1, closedDuring: 1}
	closedAt := func(state uint8, e syscall.Errno) *closeInfo { return &closeInfo{at: 9000, state: state, soErr: e} }
	cases := []struct {
		name        string
		f           func(f *replacedFacts)
		has         []string
		configured  bool
		notContains string
	}{
		{"a FIN while idle", func(f *replacedFacts) {
			f.idle = &idleEvent{at: 7000, fin: true}
			f.closed = closedAt(tcpCloseWait, 0)
		}, []string{"FIN had arrived at 7000 ms", "closed it at 9000 ms"}, false, ""},
		{"an RST while idle (Envoy reset it)", func(f *replacedFacts) {
			f.idle = &idleEvent{at: 7000, kind: closedReset, why: "no keepalive probe was outstanding"}
			f.idleKind = closedReset
			f.closed = closedAt(tcpClose, 0)
		}, []string{"an RST had closed its socket at 7000 ms"}, false, ""},
		{"the kernel's timeout while idle", func(f *replacedFacts) {
			f.idle = &idleEvent{at: 7000, kind: closedTimeout, why: "3 unanswered keepalive probes"}
			f.idleKind = closedTimeout
			f.closed = closedAt(tcpClose, 0)
		}, []string{"the kernel had timed it out at 7000 ms"}, false, "RST"},
		{"closed without a FIN, not known how", func(f *replacedFacts) {
			f.idle = &idleEvent{at: 7000, why: "the readings cannot tell"}
			f.closed = closedAt(tcpClose, 0)
		}, []string{"cannot be told"}, false, ""},
		{"reset after the watch ended, the RST pending at close", func(f *replacedFacts) {
			f.closed = closedAt(tcpClose, syscall.ECONNRESET)
		}, []string{"ECONNRESET pending"}, false, ""},
		{"reset after the watch ended, the error read by the library's check", func(f *replacedFacts) {
			f.closed = closedAt(tcpClose, 0)
		}, []string{"already CLOSED without a FIN"}, false, ""},
		{"the library's own read failed while idle", func(f *replacedFacts) {
			f.idleErr = &sockEvent{at: 6000, outcome: "reset", text: "read tcp 1->2: read: connection reset by peer"}
			f.closed = closedAt(tcpClose, 0)
		}, []string{"connection reset by peer"}, false, ""},
		{"the request went to it first and failed", func(f *replacedFacts) {
			f.lib, f.retryWords = "net/http", "net/http retried the request on"
			f.triedReq, f.triedNext = 1, "a new one (198.18.0.1:4000)"
			f.triedErr = &sockEvent{at: 9000, outcome: "reset", text: "read tcp 1->2: read: connection reset by peer"}
			f.closed = closedAt(tcpClose, 0)
		}, []string{"sent request 1 on it first", "connection reset by peer", "retried the request on a new one"}, false, ""},
		{"the pool closed a healthy socket", func(f *replacedFacts) {
			f.closed = closedAt(tcpEstablished, 0)
		}, []string{"closed it itself", "healthy"}, true, ""},
		{"database/sql's checkout after a FIN", func(f *replacedFacts) {
			f.lib, f.retryWords = "database/sql", "database/sql retried the request on"
			f.idle = &idleEvent{at: 7000, fin: true}
			f.closed = closedAt(tcpCloseWait, 0)
		}, []string{"retried the request on a new one (198.18.0.1:4000)"}, false, ""},
	}
	for _, c := range cases {
		f := base
		c.f(&f)
		got := describeReplaced(f)
		for _, h := range c.has {
			if !strings.Contains(got, h) {
				t.Errorf("%s: %q lacks %q", c.name, got, h)
			}
		}
		if strings.Contains(got, "configuration") != c.configured {
			t.Errorf("%s: configuration claimed %v: %q", c.name, !c.configured, got)
		}
		if c.notContains != "" && strings.Contains(got, c.notContains) {
			t.Errorf("%s: %q says %q", c.name, got, c.notContains)
		}
	}
}

func TestTagsAreFoundInWhatIsWritten(t *testing.T) {
	for in, want := range map[string]string{
		"*2\r\n$3\r\nget\r\n$15\r\nidlelab-reuse-3\r\n":     "[idlelab-reuse-3]",
		"gets idlelab-retry-12\r\n":                         "[idlelab-retry-12]",
		"\x03SELECT 1 /* idlelab-reuse-0 */":                "[idlelab-reuse-0]",
		"set idlelab-warm-1 0 0 8\r\nxxxxxxxx\r\n":          "[idlelab-warm-1]",
		"gets idlelab-reuse-1":                              "[]", // the digits may go on
		"GET idlelab\r\n":                                   "[]",
		"a idlelab-reuse-1 b idlelab-reuse-2 c idlelab-x-3": "[idlelab-reuse-1 idlelab-reuse-2]",
	} {
		if got := fmt.Sprint(findTags([]byte(in))); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
	if ph, k, ok := parseTag("idlelab-reuse-12"); !ok || ph != "reuse" || k != 12 {
		t.Errorf("%s %d %v", ph, k, ok)
	}
}

// go-sql-driver's Close writes COM_QUIT (length 1, sequence 0, command 0x01) before it closes
// the socket; the server's FIN answers it. The probe counts the close from that packet, so the
// answering FIN is not taken for the peer's own close while the connection idled (a race seen
// once in mysql-sidecar-upstream-go::pool-max-idle).
func TestMySQLQuitIsTheLibrarysClose(t *testing.T) {
	if !isMySQLQuit([]byte{1, 0, 0, 0, 1}) {
		t.Fatal("COM_QUIT not recognised")
	}
	for _, b := range [][]byte{
		{1, 0, 0, 0, 3},                     // COM_QUERY of nothing
		{1, 0, 0, 1, 1},                     // sequence 1: not a new command
		{5, 0, 0, 0, 3, 'S', 'E', 'L', 'E'}, // a query
		{1, 0, 0, 0},                        // short
	} {
		if isMySQLQuit(b) {
			t.Errorf("%v taken for COM_QUIT", b)
		}
	}
}
