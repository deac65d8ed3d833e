package main

// What the probe sees of each connection the library opens: every net.Conn comes from
// dialer(), which applies the spec's socket options and wraps the connection so that its
// reads, writes, EOF, errors and Close are recorded. The wrapper keeps syscall.Conn, so the
// libraries' own liveness checks (go-redis, go-sql-driver's CheckConnLiveness) still run on
// the real socket. While the pool idles, idleWatch polls the sockets (POLLRDHUP) and reads
// TCP_INFO: nothing is consumed, the library's next call still gets the real error. It polls
// the library's own descriptors, not duplicates: a duplicate would keep a socket the library
// closed open (no FIN would leave), which changes what the lab measures.

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type connLog struct {
	mu             sync.Mutex
	id             int
	localAddr      string
	openedMs       uint64
	lastActivityMs uint64
	written        uint64
	eofMs          *uint64
	errMs          *uint64
	errOutcome     string
	errText        string
	closedMs       *uint64 // the library closed it
	closing        bool    // set before the descriptor is closed: stop watching it
	keepalive      bool
	fd             int
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
	return n, err
}

func (c *observedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.record(n, err, true)
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
	if err == nil {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, syscall.ETIMEDOUT) {
		return // a deadline the library set, not the socket's state
	}
	if errors.Is(err, io.EOF) {
		if l.eofMs == nil {
			l.eofMs = &now
		}
		return
	}
	if l.errMs == nil {
		l.errMs = &now
		l.errOutcome = outcomeOf(err)
		l.errText = err.Error()
	}
}

func (c *observedConn) Close() error {
	now := c.p.now()
	c.log.mu.Lock()
	if c.log.closedMs == nil {
		c.log.closedMs = &now
	}
	c.log.closing = true
	c.log.mu.Unlock()
	return c.Conn.Close()
}

func (l *connLog) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// SyscallConn keeps the libraries' socket checks working through the wrapper.
func (c *observedConn) SyscallConn() (syscall.RawConn, error) { return c.tcp.SyscallConn() }

// outcomeOf maps an error to the contract's outcome by its errno, else its kind.
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
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "error"
}

// dial opens a connection to the spec's target (whatever address the library asks for: the
// lab decides where the app connects), with the spec's keepalive and TCP_USER_TIMEOUT.
func (p *probe) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	d := net.Dialer{Timeout: p.spec.requestTimeout()}
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

type idleEvent struct {
	at  uint64
	fin bool // CLOSE-WAIT: the peer's FIN; else CLOSED: an RST or the kernel gave up
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
	go func() {
		seen := make([]*idleEvent, len(conns))
		defer func() { out <- seen }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var polls []unix.PollFd
			var idx []int
			for i, fd := range fds {
				if fd >= 0 && conns[i].isClosing() {
					fds[i] = -1
					continue
				}
				if fd >= 0 && seen[i] == nil {
					polls = append(polls, unix.PollFd{Fd: int32(fd), Events: unix.POLLRDHUP})
					idx = append(idx, i)
				}
			}
			if len(polls) == 0 {
				<-stop
				return
			}
			n, err := unix.Poll(polls, 20)
			if err != nil || n <= 0 {
				continue
			}
			at := p.now()
			for k, pf := range polls {
				if pf.Revents == 0 || pf.Revents&unix.POLLNVAL != 0 {
					continue
				}
				ev := &idleEvent{at: at, fin: pf.Revents&unix.POLLRDHUP != 0}
				if info, err := unix.GetsockoptTCPInfo(int(pf.Fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
					switch info.State {
					case 8: // TCP_CLOSE_WAIT
						ev.fin = true
					case 7: // TCP_CLOSE
						ev.fin = false
					}
				}
				if conns[idx[k]].isClosing() {
					fds[idx[k]] = -1 // closed by the library meanwhile: not this socket's event
					continue
				}
				seen[idx[k]] = ev
			}
		}
	}()
	return out
}

// peakRSSKiB is VmHWM from /proc/self/status.
func peakRSSKiB() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	var v uint64
	for _, line := range splitLines(string(b)) {
		if len(line) > 6 && line[:6] == "VmHWM:" {
			for _, ch := range line[6:] {
				if ch >= '0' && ch <= '9' {
					v = v*10 + uint64(ch-'0')
				}
			}
		}
	}
	return v
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := range s {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
