package main

// The probe's run: warm each connection, idle, reuse each once through its library, and
// the observations: which connection carried each request, what the socket saw while idle.

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
)

// --- requests -------------------------------------------------------------------------------

// request is one request of the probe: what the library returned, and when.
type request struct {
	k        int
	tag      string // `idlelab-reuse-3`: what names it on the wire
	at       uint64 // ms since the probe started
	start    time.Time
	deadline time.Time
	latency  uint64
	decided  uint64 // when the probe knew the outcome (ms)
	err      error
	timedOut bool   // the request deadline passed with no answer
	late     string // the probe's words when the library had not returned at the deadline
	returned chan struct{}
	retry    *request
}

func newRequest(phase string, k int) *request {
	return &request{k: k, tag: fmt.Sprintf("idlelab-%s-%d", phase, k), returned: make(chan struct{})}
}

func (r *request) failed() bool { return r.err != nil || r.timedOut }

func (r *request) errorText() string {
	if r.err != nil {
		return r.err.Error()
	}
	return r.late
}

// do runs one library call under the request deadline. The call gets a context with that
// deadline (database/sql, go-sql-driver and net/http honour it), and the probe stops waiting at
// it whether or not the library does: a request with no answer by its deadline is `timeout`,
// and the library's own timers are set clearly later (libraryTimeout), so none of them can
// end the wait first.
func (p *probe) do(r *request, fn func(ctx context.Context) error) {
	rt := p.spec.requestTimeout()
	r.start = time.Now()
	r.at = p.now()
	r.deadline = r.start.Add(rt)
	ctx, cancel := context.WithDeadline(context.Background(), r.deadline)
	res := make(chan error, 1)
	go func() {
		defer close(r.returned)
		defer cancel()
		err := fn(ctx)
		p.arrived(r.tag)
		res <- err
	}()
	timer := time.NewTimer(time.Until(r.deadline))
	defer timer.Stop()
	select {
	case err := <-res:
		r.err = err
		r.timedOut = err != nil && !time.Now().Before(r.deadline)
	case <-timer.C:
		r.timedOut = true
		// A library that watches the context returns now: keep its own words.
		grace := time.NewTimer(100 * time.Millisecond)
		select {
		case err := <-res:
			r.err = err
			if err == nil {
				r.late = fmt.Sprintf("the answer came %d ms after the request timeout (%v)", time.Since(r.deadline).Milliseconds(), rt)
			}
		case <-grace.C:
			pool, _ := p.lib.words()
			r.late = fmt.Sprintf("no answer within the request timeout (%v); %s was still waiting", rt, pool)
		}
		grace.Stop()
	}
	r.latency = uint64(time.Since(r.start).Milliseconds())
	r.decided = p.now()
}

// send runs a reuse request and, when it fails, its retry on a fresh client, as an app would.
func (p *probe) send(r *request, fn func(ctx context.Context) error) {
	p.do(r, fn)
	if r.failed() {
		retry := newRequest("retry", r.k)
		p.do(retry, func(ctx context.Context) error { return p.lib.fresh(ctx, retry.tag) })
		r.retry = retry
	}
}

// gated runs fn, a request tagged `tag` of a gated phase, and lets it through the gate when it
// returns (it may have failed before any socket carried it).
func (p *probe) gated(tag string, fn func() error) error {
	err := fn()
	p.arrived(tag)
	return err
}

// settle waits (at most `limit`) for the library calls still running after their deadline.
func settle(reqs []*request, limit time.Duration) {
	until := time.Now().Add(limit)
	for _, r := range reqs {
		for _, x := range []*request{r, r.retry} {
			if x == nil || x.returned == nil || x.start.IsZero() {
				continue
			}
			t := time.NewTimer(time.Until(until))
			select {
			case <-x.returned:
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// --- the run ---------------------------------------------------------------------------------

func (p *probe) run(lib library) (*observations, error) {
	s := &p.spec
	p.lib = lib
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
	var warmed []*connLog
	for _, c := range p.snapshot() {
		if c.closeInfo() == nil {
			warmed = append(warmed, c)
		}
	}
	if len(warmed) != s.Pool {
		return nil, fmt.Errorf("warm-up left %d open connections, not %d", len(warmed), s.Pool)
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
	reqs := make([]*request, s.Pool)
	for k := range reqs {
		reqs[k] = newRequest("reuse", k)
	}
	held, release := lib.reuse(reqs)
	settle(reqs, s.libraryTimeout()-s.requestTimeout()+time.Second)
	release()
	rows, rowNotes := p.rows(warmed, events, reqs, lastBefore, reuseStarted)
	p.diagnose(os.Stderr, warmed, events)
	notes = append(notes, held)
	notes = append(notes, rowNotes...)
	return &observations{
		Service: s.Service, Target: s.Target, Pool: s.Pool,
		IdleStartedMs: idleStarted, IdleMs: s.IdleMs, ReuseStartedMs: reuseStarted,
		Connections: rows, FinishedMs: p.now(), PeakRSSKiB: peakRSSKiB(), Notes: notes,
	}, nil
}

// attemptOf is a request as the contract's attempt, judged on the socket that carried it.
func attemptOf(r *request, carrier *connLog) attempt {
	a := attempt{AtMs: r.at, LatencyMs: r.latency}
	var evs []sockEvent
	if carrier != nil {
		a.LocalAddr = carrier.localAddr
		evs = carrier.eventsIn(r.at, r.decided)
	}
	a.Outcome = outcomeFor(r.err, r.timedOut, evs)
	if a.Outcome != "ok" {
		a.Error = r.errorText()
	}
	return a
}

func last(l []*connLog) *connLog {
	if len(l) == 0 {
		return nil
	}
	return l[len(l)-1]
}

// rows builds one observation per warmed connection: each paired with the request that reused
// it (assignRows), judged on the socket that carried that request, with what the idle watch
// and the library's calls saw of the warmed socket itself.
func (p *probe) rows(warmed []*connLog, events []*idleEvent, reqs []*request, lastBefore []uint64, reuseStarted uint64) ([]connObservation, []string) {
	n := len(warmed)
	index := make(map[*connLog]int, n)
	for w, l := range warmed {
		index[l] = w
	}
	name := func(l *connLog) string {
		if w, ok := index[l]; ok {
			return fmt.Sprintf("pooled connection %d (%s)", w, l.localAddr)
		}
		return fmt.Sprintf("a new one (%s)", l.localAddr)
	}
	closeAt := make([]*closeInfo, n)
	var closeOrder []int
	for w, l := range warmed {
		if ci := l.closeInfo(); ci != nil {
			closeAt[w] = ci
			closeOrder = append(closeOrder, w)
		}
	}
	sort.SliceStable(closeOrder, func(i, j int) bool { return closeAt[closeOrder[i]].at < closeAt[closeOrder[j]].at })
	rc := make([]reqCarriers, len(reqs))
	carriers := make([][]*connLog, len(reqs))
	during := func(l *connLog, at uint64) int { // the request whose run covers `at`, by preference one l carried
		first := -1
		for k, r := range reqs {
			if at >= r.at && at <= r.decided {
				for _, c := range carriers[k] {
					if c == l {
						return k
					}
				}
				if first < 0 {
					first = k
				}
			}
		}
		return first
	}

	for k, r := range reqs {
		carriers[k] = p.carriersOf(r.tag)
		for _, l := range carriers[k] {
			w, ok := index[l]
			if !ok {
				w = -1
			}
			rc[k].carriers = append(rc[k].carriers, w)
		}
		for _, w := range closeOrder {
			if at := closeAt[w].at; at >= r.at && at <= r.decided {
				rc[k].discarded = append(rc[k].discarded, w)
			}
		}
	}
	rowReq := assignRows(n, rc, closeOrder)

	var notes []string
	finals := map[*connLog]int{}
	for k := range reqs {
		if f := last(carriers[k]); f != nil {
			if j, dup := finals[f]; dup {
				if _, warm := index[f]; warm {
					notes = append(notes, fmt.Sprintf("requests %d and %d of the reuse both ended on %s: the library handed one pooled connection out twice", j, k, name(f)))
				} else {
					notes = append(notes, fmt.Sprintf("requests %d and %d of the reuse both ended on %s, opened during the reuse: the library put it in its pool after one and took it again for the other", j, k, name(f)))
				}
			}
			finals[f] = k
		}
	}
	pool, moves := p.lib.words()
	rows := make([]connObservation, n)
	for w, l := range warmed {
		k := rowReq[w]
		r := reqs[k]
		final := last(carriers[k])
		o := connObservation{
			ID: w, LocalAddr: l.localAddr, OpenedMs: l.openedMs, LastActivityMs: lastBefore[w], Keepalive: l.keepalive,
			Reuse: attemptOf(r, final),
		}
		if r.retry != nil {
			a := attemptOf(r.retry, last(p.carriersOf(r.retry.tag)))
			o.RetryAfterReconnect = &a
			o.Reconnects++
		}
		kind, idleErr, note := p.idleEvidence(&o, l, events[w], reuseStarted)
		if note != "" {
			notes = append(notes, note)
		}
		if final != l {
			f := replacedFacts{lib: pool, retryWords: moves, standsFor: k, idle: events[w], idleKind: kind, idleErr: idleErr,
				triedReq: -1, closed: closeAt[w], closedDuring: -1}
			if final != nil {
				f.wentTo = name(final)
			}
			if ci := closeAt[w]; ci != nil && ci.at >= reuseStarted {
				f.closedDuring = during(l, ci.at)
				if f.closedDuring < 0 {
					f.closedDuring = -2
				}
			}
			for j := range reqs {
				for i, c := range carriers[j] {
					if c == l && i+1 < len(carriers[j]) && f.triedReq < 0 {
						f.triedReq, f.triedNext = j, name(carriers[j][i+1])
						if evs := l.eventsIn(reqs[j].at, reqs[j].decided); len(evs) > 0 {
							e := evs[0]
							f.triedErr = &e
						}
					}
				}
			}
			why := describeReplaced(f)
			o.ReplacedBeforeUse = &why
			o.Reconnects++
		}
		rows[w] = o
	}
	return rows, notes
}

// idleEvidence sets what happened to a warmed socket while it idled: the peer's FIN, an RST,
// the kernel's timeout, each only when it was measured. A socket the idle watch saw CLOSED
// without a FIN is classified by the kernel's own error when a call on it, or its close, read
// one; else by its TCP_INFO history (classifyClosed); when neither tells, by neither.
func (p *probe) idleEvidence(o *connObservation, l *connLog, ev *idleEvent, reuseStarted uint64) (closeKind, *sockEvent, string) {
	if ev != nil && ev.fin {
		at := ev.at
		o.PeerClosedMs = &at
		return closedUnknown, nil, ""
	}
	if ev != nil {
		kind := ev.kind
		// The kernel's own word: a call of the library's on it since it was last seen open.
		for _, e := range l.eventsIn(ev.open, ^uint64(0)) {
			if k := errnoKind(e.outcome); k != closedUnknown {
				kind = k
				break
			}
		}
		if ci := l.closeInfo(); kind == closedUnknown && ci != nil {
			kind = soErrKind(ci.soErr)
		}
		at := ev.at
		switch kind {
		case closedReset:
			o.PeerResetMs = &at
		case closedTimeout:
			o.TimedOutMs = &at
		default:
			return kind, nil, fmt.Sprintf("connection %d: its socket went CLOSED without a FIN at %d ms while it idled; %s, and no call on it returned the kernel's error: neither an RST nor a kernel timeout is claimed, the reuse's own error says what the library saw", o.ID, at, ev.why)
		}
		return kind, nil, ""
	}
	// No FIN or CLOSED reading: a library that reads its idle sockets (net/http) may have seen
	// the FIN or the error itself, and closed the socket before the watch's next reading.
	for _, e := range l.eventsIn(0, reuseStarted-1) {
		at := e.at
		switch {
		case e.eof:
			o.PeerClosedMs = &at
		case e.outcome == "reset":
			o.PeerResetMs = &at
		case e.outcome == "timed-out":
			o.TimedOutMs = &at
		default:
			continue
		}
		return errnoKind(e.outcome), &e, ""
	}
	return closedUnknown, nil, ""
}

// diagnose writes what was recorded of every socket to stderr (the lab keeps it as
// probe.stderr in a failed cell's logs).
func (p *probe) diagnose(w io.Writer, warmed []*connLog, events []*idleEvent) {
	for _, l := range p.snapshot() {
		l.mu.Lock()
		fmt.Fprintf(w, "socket %d %s opened %d ms, last activity %d ms, %d bytes written", l.id, l.localAddr, l.openedMs, l.lastActivityMs, l.written)
		for _, t := range l.tags {
			fmt.Fprintf(w, "; %s at %d ms", t.tag, t.at)
		}
		for _, e := range l.events {
			what := map[bool]string{true: "write", false: "read"}[e.write]
			fmt.Fprintf(w, "; %s at %d ms: %s (%s)", what, e.at, e.text, map[bool]string{true: "eof", false: e.outcome}[e.eof])
		}
		if c := l.closed; c != nil {
			fmt.Fprintf(w, "; closed by the library at %d ms, TCP state %s, SO_ERROR %d", c.at, tcpStateName(c.state), int(c.soErr))
		}
		l.mu.Unlock()
		for i, wl := range warmed {
			if wl == l && events[i] != nil {
				fmt.Fprintf(w, "; idle watch: %+v", *events[i])
			}
		}
		fmt.Fprintln(w)
	}
}
