package main

// The pure parts of the probe: what a socket's TCP_INFO history says about how it was closed,
// a request's outcome, which warmed connection each request stands for, and why a warmed
// connection did not serve its request. Unit-tested in classify_test.go.

import (
	"fmt"
	"strings"
	"syscall"
)

type closeKind int

const (
	closedUnknown closeKind = iota // an RST or the kernel's timeout: the measurement cannot tell
	closedReset                    // an RST (ECONNRESET)
	closedTimeout                  // the kernel gave up (ETIMEDOUT): keepalive probes unanswered
)

// classifyClosed says how a socket that went CLOSED without a FIN while idle was closed, from
// its TCP_INFO history (one sample per change; the last one CLOSED), following the kernel
// (tcp_keepalive_timer): an idle socket with no data in flight dies of ETIMEDOUT only at a
// keepalive timer tick, one interval after its last probe, when `probes` probes are
// unanswered (or, with TCP_USER_TIMEOUT, when at least one is and the user timeout has
// passed); anything else that closes it is an RST. An RST that answers a probe comes a round
// trip after that probe, not an interval after it.
func classifyClosed(hist []tcpSample, ka *keepaliveSecs, userTimeoutMs *uint64) (closeKind, string) {
	n := len(hist)
	if n == 0 || hist[n-1].state != tcpClose {
		return closedUnknown, "the idle watch has no reading of it CLOSED"
	}
	if n < 2 {
		return closedUnknown, "the idle watch never saw it open: its first reading was already CLOSED"
	}
	closed, open := hist[n-1], hist[n-2]
	if open.unacked > 0 || open.retransmits > 0 || open.backoff > 0 {
		return closedUnknown, fmt.Sprintf("data was in flight just before (%d segments unacknowledged, %d retransmissions): a retransmission timeout and an RST look alike", open.unacked, open.retransmits)
	}
	probes := max(open.probes, closed.probes)
	if ka == nil {
		return closedReset, "keepalive is off and nothing was in flight: the kernel never times out such a socket, only an RST closes it"
	}
	if probes == 0 {
		return closedReset, "no keepalive probe was outstanding and nothing was in flight: the kernel cannot time it out then, only an RST closes it"
	}
	ut := userTimeoutMs != nil && *userTimeoutMs > 0
	if !ut && uint32(probes) < ka.Probes {
		return closedReset, fmt.Sprintf("%d of its %d keepalive probes were unanswered: the kernel gives up only after %d, so an RST closed it", probes, ka.Probes, ka.Probes)
	}
	// When was the last probe sent? Between the last reading with fewer probes outstanding
	// and the first with `probes`.
	j := 0
	for j < n && hist[j].probes < probes {
		j++
	}
	iv := ka.IntervalS * 1000
	closeLo, closeHi := open.to, closed.from
	probeHi := hist[j].from
	dtMin := uint64(0)
	if closeLo > probeHi {
		dtMin = closeLo - probeHi
	}
	dtMax := ^uint64(0) // the probe left before the first reading: no upper bound
	if j > 0 {
		dtMax = closeHi - hist[j-1].to
	}
	tick := fmt.Sprintf("%d unanswered keepalive probe(s)", probes)
	switch {
	case dtMax < iv*8/10:
		return closedReset, fmt.Sprintf("it closed at most %d ms after keepalive probe %d left, before the kernel's next check (%d s after a probe): an RST answered the probe", dtMax, probes, ka.IntervalS)
	case dtMin >= iv*8/10 && dtMin <= iv*13/10+250:
		if ut {
			return closedTimeout, fmt.Sprintf("it closed %d ms after its last keepalive probe, at the kernel's next check, with %s and TCP_USER_TIMEOUT %d ms: ETIMEDOUT", dtMin, tick, *userTimeoutMs)
		}
		return closedTimeout, fmt.Sprintf("it closed %d ms after its last keepalive probe, at the kernel's next check (every %d s), with %s of %d: ETIMEDOUT", dtMin, ka.IntervalS, tick, ka.Probes)
	}
	upper := "unknown"
	if dtMax != ^uint64(0) {
		upper = fmt.Sprint(dtMax)
	}
	return closedUnknown, fmt.Sprintf("%s outstanding, and it closed %d–%s ms after the last one left (the kernel checks %d s after a probe): the readings cannot tell an RST from the kernel's timeout", tick, dtMin, upper, ka.IntervalS)
}

// errnoKind is what the kernel's own error on a call says about how the socket closed.
func errnoKind(outcome string) closeKind {
	switch outcome {
	case "reset":
		return closedReset
	case "timed-out":
		return closedTimeout
	}
	return closedUnknown
}

func soErrKind(e syscall.Errno) closeKind {
	switch e {
	case syscall.ECONNRESET:
		return closedReset
	case syscall.ETIMEDOUT:
		return closedTimeout
	}
	return closedUnknown
}

// outcomeFor is a request's outcome: `timeout` when the request deadline passed before an
// answer (and only then); otherwise what the socket that carried the request saw first while
// it ran (`sock`: that socket's events in time order, never another socket's, never an earlier
// phase's): its EOF, or the kernel's error (ECONNRESET, EPIPE, ETIMEDOUT), whatever the
// library's words; else the library's error.
func outcomeFor(libErr error, timedOut bool, sock []sockEvent) string {
	if timedOut {
		return "timeout"
	}
	if libErr == nil {
		return "ok"
	}
	for _, e := range sock {
		switch {
		case e.eof:
			return "eof"
		case e.outcome == "reset" || e.outcome == "broken-pipe" || e.outcome == "timed-out":
			return e.outcome
		}
	}
	return outcomeOf(libErr)
}

// reqCarriers is what was measured of one request of the reuse: the sockets that carried it,
// in order (a warmed connection's row id, or -1 for a socket opened during the reuse), and the
// warmed connections the library closed while it ran.
type reqCarriers struct {
	carriers  []int
	discarded []int
}

// assignRows pairs each of the n warmed connections with exactly one of the n requests:
// a request goes to the warmed connection that carried it to its end; a request that ended on
// a new socket (or on none) stands for a warmed connection that carried no request to its end,
// by preference one it tried first, then one the library closed while it ran, then the
// others in the order the library closed them (closeOrder), then by id. Returns rowReq:
// row w → request.
func assignRows(n int, reqs []reqCarriers, closeOrder []int) []int {
	rowReq := make([]int, n)
	for i := range rowReq {
		rowReq[i] = -1
	}
	done := make([]bool, len(reqs))
	for k, r := range reqs {
		if len(r.carriers) == 0 {
			continue
		}
		if w := r.carriers[len(r.carriers)-1]; w >= 0 && w < n && rowReq[w] < 0 {
			rowReq[w], done[k] = k, true
		}
	}
	take := func(k int, cands []int) bool {
		for _, w := range cands {
			if w >= 0 && w < n && rowReq[w] < 0 {
				rowReq[w], done[k] = k, true
				return true
			}
		}
		return false
	}
	for k, r := range reqs {
		if done[k] {
			continue
		}
		if take(k, r.carriers) || take(k, r.discarded) || take(k, closeOrder) {
			continue
		}
		ids := make([]int, n)
		for i := range ids {
			ids[i] = i
		}
		take(k, ids)
	}
	return rowReq
}

// replacedFacts is what was measured of a warmed connection that did not carry the request
// of its row to its end.
type replacedFacts struct {
	lib       string
	standsFor int    // the request of its row
	wentTo    string // where that request ended: "a new connection (ip:port)", or "" (none)
	// while it idled
	idle     *idleEvent // the idle watch's FIN or CLOSED, with its classification
	idleKind closeKind  // the classification after the kernel's own error, if any was seen
	idleErr  *sockEvent // the library's own read on it failed (or saw EOF) while it idled
	// during the reuse
	triedReq  int        // it carried this request first (-1: none)
	triedErr  *sockEvent // what its socket said then
	triedNext string     // where the library went next
	// the library's close
	closed       *closeInfo
	closedDuring int // the request during which the library closed it (-1: while idle, -2: during the reuse, between requests)
	// the library's move to another connection, in its words ("database/sql retried the
	// request on"), followed by where: "a new one (ip:port)" or "pooled connection 2 (ip:port)"
	retryWords string
}

// describeReplaced says why a warmed connection did not serve its request, in words, from what
// was measured; it calls it configuration only when the pool closed a socket that was healthy.
func describeReplaced(f replacedFacts) string {
	var parts []string
	seen := false // something was wrong with the socket before the pool let it go
	if ev := f.idle; ev != nil {
		seen = true
		switch {
		case ev.fin:
			parts = append(parts, fmt.Sprintf("the peer's FIN had arrived at %d ms while it idled", ev.at))
		case f.idleKind == closedReset:
			parts = append(parts, fmt.Sprintf("an RST had closed its socket at %d ms while it idled (%s)", ev.at, ev.why))
		case f.idleKind == closedTimeout:
			parts = append(parts, fmt.Sprintf("the kernel had timed it out at %d ms while it idled (%s)", ev.at, ev.why))
		default:
			parts = append(parts, fmt.Sprintf("its socket went CLOSED without a FIN at %d ms while it idled; whether an RST or the kernel's keepalive timeout closed it cannot be told (%s)", ev.at, ev.why))
		}
	} else if e := f.idleErr; e != nil {
		seen = true
		if e.eof {
			parts = append(parts, fmt.Sprintf("%s's read on it saw the peer's FIN (EOF) at %d ms while it idled", f.lib, e.at))
		} else {
			parts = append(parts, fmt.Sprintf("%s's read on it failed at %d ms while it idled: %s", f.lib, e.at, e.text))
		}
	}
	if f.triedReq >= 0 {
		seen = true
		got := "got no answer"
		if e := f.triedErr; e != nil {
			got = "got " + e.text
			if e.eof {
				got = "got EOF (the peer's FIN)"
			}
		}
		next := f.triedNext
		if next == "" {
			next = "another connection"
		}
		parts = append(parts, fmt.Sprintf("%s sent request %d on it first and %s; %s %s", f.lib, f.triedReq, got, f.retryWords, next))
	}
	if c := f.closed; c != nil {
		when := "while it idled"
		switch {
		case f.closedDuring >= 0 && f.closedDuring == f.triedReq:
			when = fmt.Sprintf("during request %d", f.closedDuring)
		case f.closedDuring >= 0:
			when = fmt.Sprintf("at checkout, during request %d", f.closedDuring)
		case f.closedDuring == -2:
			when = "during the reuse"
		}
		switch {
		case seen:
			parts = append(parts, fmt.Sprintf("%s closed it at %d ms (%s)", f.lib, c.at, when))
		case c.state == tcpCloseWait || c.state == tcpLastAck || c.state == tcpClosing:
			parts = append(parts, fmt.Sprintf("%s closed it at %d ms (%s), when its socket had the peer's FIN (TCP state %s)", f.lib, c.at, when, tcpStateName(c.state)))
		case c.state == tcpClose && soErrKind(c.soErr) == closedReset:
			parts = append(parts, fmt.Sprintf("%s closed it at %d ms (%s), when its socket had been reset (ECONNRESET pending)", f.lib, c.at, when))
		case c.state == tcpClose && soErrKind(c.soErr) == closedTimeout:
			parts = append(parts, fmt.Sprintf("%s closed it at %d ms (%s), when the kernel had timed its socket out (ETIMEDOUT pending)", f.lib, c.at, when))
		case c.state == tcpClose:
			parts = append(parts, fmt.Sprintf("%s closed it at %d ms (%s), when its socket was already CLOSED without a FIN (an RST or the kernel's timeout after the idle watch ended; the library's own check had read the error)", f.lib, c.at, when))
		case c.state == tcpEstablished && c.soErr == 0:
			parts = append(parts, fmt.Sprintf("%s's pool closed it itself at %d ms (%s) while its socket was healthy (ESTABLISHED, no FIN, RST or error seen): configuration (its idle or lifetime limit)", f.lib, c.at, when))
		default:
			parts = append(parts, fmt.Sprintf("%s closed it itself at %d ms (%s); its socket's state then: %s, pending error %d", f.lib, c.at, when, tcpStateName(c.state), int(c.soErr)))
		}
	} else if !seen {
		parts = append(parts, fmt.Sprintf("%s's pool did not hand it out; this one saw no FIN, error or close", f.lib))
	}
	switch {
	case f.wentTo == "":
		parts = append(parts, fmt.Sprintf("request %d, which it stands for, reached no connection", f.standsFor))
	case f.triedReq == f.standsFor:
		// said above
	case f.closed != nil && f.closedDuring == f.standsFor:
		parts = append(parts, fmt.Sprintf("then %s %s", f.retryWords, f.wentTo))
	default:
		parts = append(parts, fmt.Sprintf("request %d, which it stands for, went to %s", f.standsFor,
			strings.Replace(f.wentTo, "a new one", "a new connection", 1)))
	}
	return strings.Join(parts, "; ")
}

func tcpStateName(s uint8) string {
	names := map[uint8]string{1: "ESTABLISHED", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
		6: "TIME-WAIT", 7: "CLOSED", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING"}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprintf("unknown (%d)", s)
}
