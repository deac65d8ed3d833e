package main

// grpc-go in a gRPC idle cell: `pool` grpc.ClientConns, each one HTTP/2 connection to the
// target (pick_first over the address the app dials) through the probe's own dialer, with
// grpc-go's keepalive.ClientParameters when the spec has an HTTP/2 keepalive (Time, Timeout,
// PermitWithoutStream). grpc-go owns each connection: when its keepalive or the socket ends
// one while idle, the ClientConn reconnects by itself for the next call.
//
// Which socket carried a call: each ClientConn dials through its own wrapper of the probe's
// dialer, which remembers the socket it opened last; the call is attributed to it.

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

type grpcGo struct {
	p     *probe
	mu    sync.Mutex
	conns []*grpc.ClientConn
	last  []*connLog // the socket each ClientConn opened last
}

func (g *grpcGo) words() (string, string) {
	return "grpc-go", "grpc-go reconnected and sent the call on"
}

// open makes one ClientConn; `slot` ≥ 0 records its sockets in g.last[slot].
func (g *grpcGo) open(slot int) (*grpc.ClientConn, error) {
	s := &g.p.spec
	authority := s.Target
	if s.Authority != nil {
		authority = *s.Authority
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(whoCodec{})),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := g.p.dial(ctx, "tcp", addr)
			if err == nil && slot >= 0 {
				g.mu.Lock()
				g.last[slot] = logOf(c)
				g.mu.Unlock()
			}
			return c, err
		}),
	}
	if ka := s.HTTP2Keepalive; ka != nil {
		opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                time.Duration(ka.IntervalMs) * time.Millisecond,
			Timeout:             time.Duration(ka.TimeoutMs) * time.Millisecond,
			PermitWithoutStream: ka.WhileIdle,
		}))
	}
	return grpc.NewClient("passthrough:///"+s.Target, opts...)
}

func (g *grpcGo) setup(p *probe) ([]string, error) {
	s := &p.spec
	g.p = p
	if s.PoolMaxIdleMs != nil || s.PoolMaxLifetimeMs != nil || s.TestOnBorrow {
		return nil, fmt.Errorf("grpc-go's ClientConn has no pool idle limit, lifetime or test-on-borrow")
	}
	g.last = make([]*connLog, s.Pool)
	for i := 0; i < s.Pool; i++ {
		c, err := g.open(i)
		if err != nil {
			return nil, err
		}
		g.conns = append(g.conns, c)
	}
	notes := []string{
		fmt.Sprintf("grpc-go: %d ClientConns, one HTTP/2 connection each (pick_first over passthrough:///%s)", s.Pool, s.Target),
		deadlineNote(s, "each call's context"),
		keepaliveNote(s),
	}
	if ka := s.HTTP2Keepalive; ka != nil {
		notes = append(notes, fmt.Sprintf("grpc-go keepalive.ClientParameters: Time %d ms, Timeout %d ms, PermitWithoutStream %v (grpc-go raises a Time below 10 s to 10 s)", ka.IntervalMs, ka.TimeoutMs, ka.WhileIdle))
	}
	return notes, nil
}

// call sends Replica.Who on `conn` and attributes it to the socket `slot` has open.
func (g *grpcGo) call(ctx context.Context, conn *grpc.ClientConn, slot int, tag string) error {
	var reply whoReply
	err := conn.Invoke(ctx, whoMethod, &whoRequest{client: tag}, &reply)
	if slot >= 0 {
		g.mu.Lock()
		l := g.last[slot]
		g.mu.Unlock()
		g.p.carried(tag, l)
	}
	if err != nil {
		s := status.Convert(err)
		return fmt.Errorf("gRPC %s: %s", s.Code(), s.Message())
	}
	return nil
}

func (g *grpcGo) warm(ctx context.Context) error {
	for i, c := range g.conns {
		if err := g.call(ctx, c, i, fmt.Sprintf("idlelab-warm-%d", i)); err != nil {
			return err
		}
	}
	return nil
}

// reuse: one call per ClientConn, each on its own connection by construction.
func (g *grpcGo) reuse(reqs []*request) (string, func()) {
	_ = concurrently(len(reqs), func(i int) error {
		r := reqs[i]
		g.p.send(r, func(ctx context.Context) error { return g.call(ctx, g.conns[i], i, r.tag) })
		return nil
	})
	return fmt.Sprintf("reuse: %d calls at once, one per ClientConn", len(reqs)), func() {}
}

func (g *grpcGo) fresh(ctx context.Context, tag string) error {
	c, err := g.open(-1)
	if err != nil {
		return err
	}
	defer c.Close()
	return g.call(ctx, c, -1, tag)
}

func (g *grpcGo) close() {
	for _, c := range g.conns {
		_ = c.Close()
	}
}
