// Command idlelab-probe-go is the lab's probe for Go client libraries: it speaks the probe
// contract (scenarios/PROBE.md) with the field reports' own libraries and their own pools:
// database/sql + go-sql-driver/mysql, go-redis, gomemcache and net/http. The lab's logic
// (time scale, verdict, evidence) stays in Rust; this program only drives a library.
//
// Usage: idlelab-probe-go [--spec FILE]   (default: the spec on stdin)
package main

import (
	"context"
	"encoding/json"
	"errors"
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
	// warm leaves `pool` distinct connections warmed in the library's pool.
	warm(ctx context.Context) error
	// request sends one command through the pool (the reuse).
	request(ctx context.Context) error
	// fresh sends one command through a brand-new client (the retry after a failure).
	fresh(ctx context.Context) error
	close()
}

type probe struct {
	spec  spec
	start time.Time
	mu    sync.Mutex
	conns []*connLog
}

func (p *probe) now() uint64 { return uint64(time.Since(p.start).Milliseconds()) }

func (p *probe) snapshot() []*connLog {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*connLog(nil), p.conns...)
}

func fail(format string, args ...any) {
	emit("error", fmt.Sprintf(format, args...))
	os.Exit(1)
}

func main() {
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
	p := &probe{start: time.Now()}
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

func libraryFor(s *spec) (library, error) {
	want := map[string]string{"go-redis": "redis", "go-sql-driver": "mysql", "gomemcache": "memcached", "go-net-http": "http"}
	svc, ok := want[s.Library]
	if !ok {
		return nil, fmt.Errorf("idlelab-probe-go has no library %q (it has go-redis, go-sql-driver, gomemcache, go-net-http)", s.Library)
	}
	if svc != s.Service && !(svc == "http" && s.Service == "https") {
		return nil, fmt.Errorf("library %s does not speak %s", s.Library, s.Service)
	}
	if s.HeartbeatMs != nil {
		return nil, fmt.Errorf("%s owns its pool: the probe cannot ping each idle connection (heartbeat)", s.Library)
	}
	switch s.Library {
	case "go-redis":
		return &goRedis{}, nil
	case "go-sql-driver":
		if s.TestOnBorrow {
			return nil, errors.New("database/sql has no test-on-borrow")
		}
		return &goSQL{}, nil
	case "gomemcache":
		return &goMemcache{}, nil
	default:
		return &goHTTP{}, nil
	}
}

func (p *probe) run(lib library) (*observations, error) {
	s := &p.spec
	notes, err := lib.setup(p)
	if err != nil {
		return nil, err
	}
	defer lib.close()

	emitPhase("warm", p.now(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*s.requestTimeout()+5*time.Second)
	err = lib.warm(ctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	warmed := p.snapshot()
	if len(warmed) < s.Pool {
		return nil, fmt.Errorf("warm-up left %d connections, not %d", len(warmed), s.Pool)
	}

	idleStarted := p.now()
	idleMs := s.IdleMs
	emitPhase("idle", idleStarted, &idleMs)
	stop := make(chan struct{})
	watched := p.idleWatch(warmed, stop)
	time.Sleep(time.Duration(s.IdleMs) * time.Millisecond)
	close(stop)
	events := <-watched

	reuseStarted := p.now()
	lastBefore := make([]uint64, len(warmed))
	for i, c := range warmed {
		c.mu.Lock()
		lastBefore[i] = c.lastActivityMs
		c.mu.Unlock()
	}
	emitPhase("reuse", reuseStarted, nil)
	written := func(all []*connLog) []uint64 {
		out := make([]uint64, len(all))
		for i, c := range all {
			c.mu.Lock()
			out[i] = c.written
			c.mu.Unlock()
		}
		return out
	}
	served := make([]bool, len(warmed))
	type pendingWhy struct{ row, conn int }
	var pending []pendingWhy
	var rows []connObservation
	for j := 0; j < s.Pool; j++ {
		before := written(p.snapshot())
		at := p.now()
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
		err := lib.request(ctx)
		cancel()
		latency := uint64(time.Since(t0).Milliseconds())
		all := p.snapshot()
		after := written(all)
		var used []int
		for i := range all {
			if i >= len(before) || after[i] > before[i] {
				used = append(used, i)
			}
		}
		row := -1
		for _, i := range used {
			if i < len(warmed) {
				row = i
				break
			}
		}
		var replaced *string
		var retried bool
		if row < 0 {
			row = j % len(warmed)
			for i := range warmed {
				if !served[i] {
					row = i
					break
				}
			}
			why := "" // filled in after the reuse: the library may close the connection later
			replaced = &why
			pending = append(pending, pendingWhy{row: len(rows), conn: row})
		} else if len(used) > 1 && err == nil {
			// The library wrote to the pooled connection, then (silently) to another one.
			warmed[row].mu.Lock()
			text := warmed[row].errText
			if text == "" && warmed[row].eofMs != nil {
				text = "EOF"
			}
			warmed[row].mu.Unlock()
			if ev := events[row]; text == "" && ev != nil && ev.fin {
				text = fmt.Sprintf("its socket had the peer's FIN since %d ms; the library's check before use rejected it", ev.at)
			} else if text == "" && ev != nil {
				text = fmt.Sprintf("its socket was closed without a FIN at %d ms", ev.at)
			}
			why := fmt.Sprintf("%s wrote to the pooled connection, then retried the request on a new one (%s)", s.Library, text)
			replaced = &why
			retried = true
		}
		served[row] = true
		c := warmed[row]
		reuse := attempt{AtMs: at, LatencyMs: latency, Outcome: "ok"}
		if err != nil {
			reuse.Error = err.Error()
			reuse.Outcome = outcomeOf(err)
			if errors.Is(err, context.DeadlineExceeded) {
				reuse.Outcome = "timeout"
			}
			// The socket's own error wins over the library's wording.
			c.mu.Lock()
			if c.errMs != nil && *c.errMs >= at && c.errOutcome != "" && c.errOutcome != "error" {
				reuse.Outcome = c.errOutcome
			} else if reuse.Outcome == "error" && c.eofMs != nil {
				reuse.Outcome = "eof"
			}
			c.mu.Unlock()
		}
		var retry *attempt
		if err != nil {
			at := p.now()
			t0 := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
			ferr := lib.fresh(ctx)
			cancel()
			a := attempt{AtMs: at, LatencyMs: uint64(time.Since(t0).Milliseconds()), Outcome: "ok"}
			if ferr != nil {
				a.Outcome, a.Error = outcomeOf(ferr), ferr.Error()
			}
			retry = &a
		}
		rows = append(rows, p.row(row, c, lastBefore[row], events[row], reuseStarted, reuse, retry, replaced))
		_ = retried
	}
	for _, pw := range pending {
		why := whyReplaced(warmed[pw.conn], events[pw.conn], s.Library)
		rows[pw.row].ReplacedBeforeUse = &why
	}
	return &observations{
		Service: s.Service, Target: s.Target, Pool: s.Pool,
		IdleStartedMs: idleStarted, IdleMs: s.IdleMs, ReuseStartedMs: reuseStarted,
		Connections: rows, FinishedMs: p.now(), PeakRSSKiB: peakRSSKiB(), Notes: notes,
	}, nil
}

// row builds one connection's observation from its log and the idle watch.
func (p *probe) row(id int, c *connLog, lastBefore uint64, ev *idleEvent, reuseStarted uint64, reuse attempt, retry *attempt, replaced *string) connObservation {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := connObservation{
		ID: id, LocalAddr: c.localAddr, OpenedMs: c.openedMs, Keepalive: c.keepalive,
		Reuse: reuse, RetryAfterReconnect: retry, ReplacedBeforeUse: replaced,
	}
	o.LastActivityMs = lastBefore
	if ev != nil {
		at := ev.at
		switch {
		case ev.fin:
			o.PeerClosedMs = &at
		case c.errOutcome == "timed-out":
			o.TimedOutMs = &at
		default:
			o.PeerResetMs = &at
		}
	} else if c.eofMs != nil && *c.eofMs < reuseStarted {
		v := *c.eofMs
		o.PeerClosedMs = &v
	}
	if replaced != nil {
		o.Reconnects++
	}
	if retry != nil {
		o.Reconnects++
	}
	return o
}

// whyReplaced says why the pool did not hand out a warmed connection, from what was seen.
func whyReplaced(c *connLog, ev *idleEvent, lib string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case ev != nil && ev.fin:
		return fmt.Sprintf("%s's pool did not hand it out: the peer's FIN had arrived at %d ms while it idled", lib, ev.at)
	case ev != nil:
		return fmt.Sprintf("%s's pool did not hand it out: the socket was closed without a FIN (an RST or the kernel) at %d ms", lib, ev.at)
	case c.closedMs != nil:
		return fmt.Sprintf("%s's pool closed it itself at %d ms (configuration: its idle or lifetime limit)", lib, *c.closedMs)
	default:
		return fmt.Sprintf("%s's pool opened a new connection instead; this one saw no FIN, error or close", lib)
	}
}
