package main

// What the probe sees of each connection the library opens: every net.Conn comes from
// dialer(), which applies the spec's socket options and wraps the connection so that its
// reads, writes, EOF, errors and Close are recorded. The wrapper keeps syscall.Conn, so the
// libraries' own liveness checks (go-redis, go-sql-driver's CheckConnLiveness) still run on
// the real socket. While the pool idles, idleWatch polls the sockets (POLLRDHUP) and samples
// TCP_INFO (state, keepalive probes outstanding): nothing is consumed, the library's next
// call still gets the real error. It polls the library's own descriptors, not duplicates: a
// duplicate would keep a socket the library closed open (no FIN would leave), which changes
// what the lab measures.
//
// Which socket carried which request is measured, not guessed: every request of the probe
// carries a tag (`idlelab-reuse-3`: in the redis key, the memcached key, a comment of the SQL
// text), and the wrapper notes the tags it sees written; for net/http (TLS hides the bytes)
// httptrace's GotConn names the connection.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TCP states as TCP_INFO reports them (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpCloseWait   = 8
	tcpLastAck     = 9
	tcpClosing     = 11
)

// sockEvent is one failed (or EOF) read or write on a socket, as the library's call got it.
type sockEvent struct {
	at      uint64
	write   bool
	eof     bool   // the read returned EOF: the peer's FIN
	outcome string // for an error: outcomeOf(err)
	text    string
}

// closeInfo is the socket as it was when the library closed it: its TCP state and its pending
// error (SO_ERROR), read just before the descriptor is closed (nothing reads it afterwards).
type closeInfo struct {
	at     uint64
	state  uint8 // 0: not read
	probes uint8
	soErr  syscall.Errno
}

type tagMark struct {
	tag string
	at  uint64
}

type connLog struct {
	mu             sync.Mutex
	id             int
	localAddr      string
	openedMs       uint64
	lastActivityMs uint64
	written        uint64
	events         []sockEvent
	tags           []tagMark
	tail           []byte     // the end of the last write, for a tag split across writes
	closed         *closeInfo // the library closed it
	closing        bool       // set before the descriptor is closed: stop watching it
	keepalive      bool
	fd             int
	gate           *gate
	gateUntil      time.Time
}

// firstEOF is when a read on it first returned EOF, before `before` (0: any time).
func (l *connLog) firstEOF(before uint64) *uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.eof && (before == 0 || e.at < before) {
			at := e.at
			return &at
		}
	}
	return nil
}

// eventsIn returns the socket's events in [from, to] (ms).
func (l *connLog) eventsIn(from, to uint64) []sockEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []sockEvent
	for _, e := range l.events {
		if e.at >= from && e.at <= to {
			out = append(out, e)
		}
	}
	return out
}

func (l *connLog) closeInfo() *closeInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed == nil {
		return nil
	}
	c := *l.closed
	return &c
}

type observedConn struct {
	net.Conn
	tcp *net.TCPConn
	log *connLog
	p   *probe
}

func (c *observedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.record(n, err, false)
	c.log.waitGate() // an answer, or a failure (the library would retry elsewhere), waits
	return n, err
}

func (c *observedConn) Write(b []byte) (int, error) {
	c.scanTags(b) // before the write: a request whose write fails was still carried here
	if isMySQLQuit(b) {
		// go-sql-driver's Close says COM_QUIT before it closes the socket, and the server's
		// FIN answers it: the library's close starts here, not at its Close a moment later.
		c.markClosed()
	}
	n, err := c.Conn.Write(b)
	c.record(n, err, true)
	if err != nil {
		c.log.waitGate()
	}
	return n, err
}

func (c *observedConn) record(n int, err error, write bool) {
	now := c.p.now()
	l := c.log
	l.mu.Lock()
	defer l.mu.Unlock()
	if n > 0 {
		l.lastActivityMs = now
		if write {
			l.written += uint64(n)
		}
	}
	if err == nil || l.closing {
		return // after the library's own Close, an error says nothing about the socket
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, syscall.ETIMEDOUT) {
		return // a deadline the library set, not the socket's state
	}
	if errors.Is(err, net.ErrClosed) {
		return // the library closed it meanwhile
	}
	ev := sockEvent{at: now, write: write, text: err.Error()}
	if errors.Is(err, io.EOF) {
		ev.eof = true
	} else {
		ev.outcome = outcomeOf(err)
	}
	if len(l.events) < 64 {
		l.events = append(l.events, ev)
	}
}

// scanTags notes the probe's request tags in bytes written to the socket.
func (c *observedConn) scanTags(b []byte) {
	l := c.log
	l.mu.Lock()
	buf := append(append([]byte(nil), l.tail...), b...)
	if len(buf) > 48 {
		l.tail = append(l.tail[:0], buf[len(buf)-48:]...)
	} else {
		l.tail = append(l.tail[:0], buf...)
	}
	var fresh []string
	for _, t := range findTags(buf) {
		seen := false
		for _, m := range l.tags {
			seen = seen || m.tag == t
		}
		if !seen {
			l.tags = append(l.tags, tagMark{tag: t, at: c.p.now()})
			fresh = append(fresh, t)
		}
	}
	l.mu.Unlock()
	for _, t := range fresh {
		c.p.carried(t, l)
	}
}

// findTags returns the complete tags (`idlelab-<warm|reuse|retry>-<n>` followed by a byte
// that is not a digit) in b.
func findTags(b []byte) []string {
	var out []string
	for {
		i := bytes.Index(b, []byte("idlelab-"))
		if i < 0 {
			return out
		}
		b = b[i+len("idlelab-"):]
		for _, phase := range []string{"warm-", "reuse-", "retry-"} {
			if !bytes.HasPrefix(b, []byte(phase)) {
				continue
			}
			d := len(phase)
			for d < len(b) && b[d] >= '0' && b[d] <= '9' {
				d++
			}
			if d > len(phase) && d < len(b) {
				out = append(out, "idlelab-"+string(b[:d]))
			}
		}
	}
}

// parseTag splits `idlelab-reuse-3` into ("reuse", 3).
func parseTag(tag string) (string, int, bool) {
	rest, ok := bytes.CutPrefix([]byte(tag), []byte("idlelab-"))
	if !ok {
		return "", 0, false
	}
	i := bytes.LastIndexByte(rest, '-')
	if i < 0 {
		return "", 0, false
	}
	k, err := strconv.Atoi(string(rest[i+1:]))
	if err != nil {
		return "", 0, false
	}
	return string(rest[:i]), k, true
}

// isMySQLQuit: a whole MySQL COM_QUIT packet (payload length 1, sequence 0, command 0x01).
func isMySQLQuit(b []byte) bool {
	return len(b) == 5 && b[0] == 1 && b[1] == 0 && b[2] == 0 && b[3] == 0 && b[4] == 0x01
}

func (c *observedConn) Close() error {
	c.markClosed()
	return c.Conn.Close()
}

// markClosed records the library's close (once: its first sign) and stops the watching.
func (c *observedConn) markClosed() {
	now := c.p.now()
	l := c.log
	l.mu.Lock()
	if l.closed == nil {
		ci := &closeInfo{at: now}
		if l.fd >= 0 {
			// The descriptor is still the library's socket: it is closed just below. SO_ERROR
			// is read (and cleared) only now that nothing will read the socket again.
			if info, err := unix.GetsockoptTCPInfo(l.fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				ci.state, ci.probes = info.State, info.Probes
			}
			if v, err := unix.GetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil {
				ci.soErr = syscall.Errno(v)
			}
		}
		l.closed = ci
	}
	l.closing = true
	l.mu.Unlock()
}

func (l *connLog) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// SyscallConn keeps the libraries' socket checks working through the wrapper.
func (c *observedConn) SyscallConn() (syscall.RawConn, error) { return c.tcp.SyscallConn() }

// logOf finds the probe's record of a connection a library hands back (net/http's GotConn).
func logOf(c net.Conn) *connLog {
	switch v := c.(type) {
	case *observedConn:
		return v.log
	case *tls.Conn:
		return logOf(v.NetConn())
	}
	return nil
}

// outcomeOf maps an error to the contract's outcome by its errno, else its kind. A timeout
// of the library's own is `error` here: only the request deadline makes a `timeout`
// (outcomeFor).
func outcomeOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken-pipe"
	case errors.Is(err, syscall.ETIMEDOUT):
		return "timed-out"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "error"
}

// dial opens a connection to the spec's target (whatever address the library asks for: the
// lab decides where the app connects), with the spec's keepalive and TCP_USER_TIMEOUT.
func (p *probe) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	d := net.Dialer{Timeout: p.spec.libraryTimeout()}
	if ka := p.spec.Keepalive; ka != nil {
		d.KeepAliveConfig = net.KeepAliveConfig{
			Enable:   true,
			Idle:     time.Duration(ka.TimeS) * time.Second,
			Interval: time.Duration(ka.IntervalS) * time.Second,
			Count:    int(ka.Probes),
		}
	} else {
		d.KeepAlive = -1 // off: the scenario says `keepalive: off`
	}
	if ut := p.spec.TCPUserTimeoutMs; ut != nil {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(*ut))
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	opened := p.now()
	c, err := d.DialContext(ctx, "tcp", p.spec.Target)
	if err != nil {
		return nil, err
	}
	tcp := c.(*net.TCPConn)
	l := &connLog{localAddr: c.LocalAddr().String(), openedMs: opened, lastActivityMs: opened, fd: -1}
	if raw, err := tcp.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			l.fd = int(fd)
			v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
			l.keepalive = err == nil && v != 0
		})
	}
	p.mu.Lock()
	l.id = len(p.conns)
	p.conns = append(p.conns, l)
	p.mu.Unlock()
	return &observedConn{Conn: c, tcp: tcp, log: l, p: p}, nil
}

// --- holding connections: the gate -----------------------------------------------------

// gate makes `need` concurrent requests take distinct connections from a pool that has no
// checkout API (gomemcache; net/http's idle pool): what a read on a socket that carries one
// of them returns (the answer, or a failure) is handed to the library only once every request
// has a connection (its tag written, or its call returned), so that no connection goes back
// to the pool, and no retry takes another pooled one, before each request has taken its own.
// Only the handing over waits (a few ms): the bytes, or the error, are already in.
type gate struct {
	mu      sync.Mutex
	need    int
	arrived map[int]bool
	open    chan struct{}
}

func newGate(need int) *gate {
	g := &gate{need: need, arrived: map[int]bool{}, open: make(chan struct{})}
	if need <= 0 {
		close(g.open)
	}
	return g
}

func (g *gate) arrive(k int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.arrived[k] || len(g.arrived) >= g.need {
		return
	}
	g.arrived[k] = true
	if len(g.arrived) == g.need {
		close(g.open)
	}
}

func (g *gate) isOpen() bool {
	select {
	case <-g.open:
		return true
	default:
		return false
	}
}

func (l *connLog) waitGate() {
	l.mu.Lock()
	g, until := l.gate, l.gateUntil
	l.mu.Unlock()
	if g == nil || g.isOpen() {
		return
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-g.open:
	case <-t.C:
	}
}

// --- the idle watch -------------------------------------------------------------------------

// tcpSample is one TCP_INFO reading of a socket, kept while it does not change: seen from
// `from` to `to` (ms since the probe started).
type tcpSample struct {
	from, to    uint64
	state       uint8
	probes      uint8 // keepalive probes sent and not answered (icsk_probes_out)
	backoff     uint8
	retransmits uint8
	unacked     uint32
}

func (s tcpSample) same(o tcpSample) bool {
	return s.state == o.state && s.probes == o.probes && s.backoff == o.backoff &&
		s.retransmits == o.retransmits && s.unacked == o.unacked
}

type idleEvent struct {
	at   uint64
	open uint64    // the last reading that saw it open (0: none)
	fin  bool      // CLOSE-WAIT: the peer's FIN; else CLOSED: an RST or the kernel gave up
	kind closeKind // for a CLOSED socket: what its TCP_INFO history says
	why  string
}

// samplePeriod is how often the idle watch reads each socket's TCP_INFO: often enough to see
// every keepalive probe leave (the kernel's interval is ≥ 1 s), cheap for a large pool.
func samplePeriod(n int) time.Duration {
	d := time.Duration(25*((n+63)/64)) * time.Millisecond
	return min(max(d, 25*time.Millisecond), 250*time.Millisecond)
}

// idleWatch watches the warmed sockets until stop is closed, or until the library closes one
// (its descriptor number may then belong to another socket); returns what ended each one's
// quiet.
func (p *probe) idleWatch(conns []*connLog, stop <-chan struct{}) <-chan []*idleEvent {
	out := make(chan []*idleEvent, 1)
	fds := make([]int, len(conns))
	for i, c := range conns {
		fds[i] = c.fd
	}
	period := samplePeriod(len(conns))
	go func() {
		seen := make([]*idleEvent, len(conns))
		hist := make([][]tcpSample, len(conns))
		readable := make([]bool, len(conns)) // data to read, no FIN: sampled, not polled
		defer func() { out <- seen }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var polls []unix.PollFd
			var pollIdx, active []int
			for i, fd := range fds {
				if fd >= 0 && conns[i].isClosing() {
					fds[i] = -1
				}
				if fds[i] < 0 || seen[i] != nil {
					continue
				}
				active = append(active, i)
				if !readable[i] {
					polls = append(polls, unix.PollFd{Fd: int32(fd), Events: unix.POLLRDHUP})
					pollIdx = append(pollIdx, i)
				}
			}
			if len(active) == 0 {
				<-stop
				return
			}
			rdhup := make(map[int]bool)
			if len(polls) > 0 {
				_, _ = unix.Poll(polls, int(period/time.Millisecond))
				for k, pf := range polls {
					switch {
					case pf.Revents&unix.POLLRDHUP != 0:
						rdhup[pollIdx[k]] = true
					case pf.Revents&unix.POLLIN != 0:
						readable[pollIdx[k]] = true
					}
				}
			} else {
				select {
				case <-stop:
					return
				case <-time.After(period):
				}
			}
			at := p.now()
			for _, i := range active {
				info, err := unix.GetsockoptTCPInfo(fds[i], unix.IPPROTO_TCP, unix.TCP_INFO)
				if conns[i].isClosing() {
					fds[i] = -1 // closed by the library meanwhile: not this socket's reading
					continue
				}
				if err != nil {
					continue
				}
				s := tcpSample{from: at, to: at, state: info.State, probes: info.Probes, backoff: info.Backoff,
					retransmits: info.Retransmits, unacked: info.Unacked}
				if h := hist[i]; len(h) > 0 && h[len(h)-1].same(s) {
					h[len(h)-1].to = at
				} else {
					hist[i] = append(hist[i], s)
				}
				var open uint64
				if h := hist[i]; len(h) > 1 {
					open = h[len(h)-2].to
				}
				switch info.State {
				case tcpCloseWait, tcpLastAck, tcpClosing:
					seen[i] = &idleEvent{at: at, open: open, fin: true}
				case tcpClose:
					kind, why := classifyClosed(hist[i], p.spec.Keepalive, p.spec.TCPUserTimeoutMs)
					seen[i] = &idleEvent{at: at, open: open, kind: kind, why: why}
				default:
					if rdhup[i] {
						seen[i] = &idleEvent{at: at, open: open, fin: true}
					}
				}
			}
		}
	}()
	return out
}

// peakRSSKiB is VmHWM from /proc/self/status.
func peakRSSKiB() uint64 { return statusKib("VmHWM") }

// statusKib reads a field of /proc/self/status in KiB (0 where there is none).
func statusKib(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			var n uint64
			fmt.Sscan(strings.TrimSpace(rest), &n)
			return n
		}
	}
	return 0
}
